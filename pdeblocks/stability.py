"""``certify(model)``: what every PDE block in a module tree guarantees, and what their chain does.

A block takes part by implementing ``stability_certificate() -> Certificate`` (the one certificate
type, below), and, if its certificate rests on a norm bound, ``verify_certificate() -> bool``, which
recomputes the bound from scratch and confirms the one in use.

For a chain f_n ∘ … ∘ f_1 of certified blocks the factors multiply: ‖f(u)‖ ≤ Π c_i ‖u‖ and
Lip(f) ≤ Π Lip(f_i). A single uncertified factor (None) makes the composed one unknown. The
composed numbers hold for the blocks applied one after another; layers between them that are not
certified (normalisation, pooling, the head) are not covered.
"""
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from torch import nn

__all__ = ['BlockCertificate', 'Certificate', 'StabilityReport', 'certify']

# which passes a certificate covers: every pass, eval-mode passes only (the training contract), none
CERTIFIED_PASS_KINDS = ('all', 'eval', 'none')


@dataclass(frozen=True)
class Certificate:
    """What one block guarantees, with the numbers it rests on.

    Attributes:
        mode: the block's stability mode or scheme (e.g. ``'euclidean'``, ``'fed-lagged'``).
        step_size: τ (for composite blocks the smallest step).
        norm_bound: B ≥ ‖K‖₂ behind τ, or None.
        sector_bound: L with 0 ≤ Φ(s)/s ≤ L, or None.
        norm_factor: c in ‖f(u)‖ ≤ c‖u‖, or None.
        lipschitz: c in ‖f(u) − f(v)‖ ≤ c‖u − v‖, or None.
        guarantee: the statement, as a sentence.
        passes: which forward passes it covers: ``'all'``, ``'eval'`` (eval-mode passes: the training
            contract) or ``'none'``.
    """

    mode: str
    step_size: float
    norm_bound: Optional[float]
    sector_bound: Optional[float]
    norm_factor: Optional[float]
    lipschitz: Optional[float]
    guarantee: str
    passes: str = 'all'

    def __post_init__(self):
        if self.passes not in CERTIFIED_PASS_KINDS:
            raise ValueError(f"Certificate.passes must be one of {CERTIFIED_PASS_KINDS}, got {self.passes!r}")


@dataclass(frozen=True)
class BlockCertificate(Certificate):
    """A block's :class:`Certificate` with its place in the model; ``verified`` is set by ``verify=True``."""

    path: str = field(default='', kw_only=True)
    block: str = field(default='', kw_only=True)
    verified: Optional[bool] = field(default=None, kw_only=True)


def _product(values: List[Optional[float]]) -> Optional[float]:
    if any(v is None for v in values):
        return None
    return math.prod(values) if values else 1.0


@dataclass
class StabilityReport:
    """Per-block certificates in module order, and the factors of their composition."""

    blocks: List[BlockCertificate] = field(default_factory=list)

    @property
    def composed_norm_factor(self) -> Optional[float]:
        return _product([b.norm_factor for b in self.blocks])

    @property
    def composed_lipschitz(self) -> Optional[float]:
        return _product([b.lipschitz for b in self.blocks])

    @property
    def verified(self) -> Optional[bool]:
        """Whether every block's certificate was confirmed by ``certify(model, verify=True)`` (None: not asked)."""
        flags = [b.verified for b in self.blocks if b.verified is not None]
        return None if not flags else all(flags)

    def to_dict(self) -> Dict[str, Any]:
        return dict(blocks=[vars(b) for b in self.blocks], composed_norm_factor=self.composed_norm_factor,
                    composed_lipschitz=self.composed_lipschitz)

    def __len__(self) -> int:
        return len(self.blocks)

    def __str__(self) -> str:
        def fmt(v: Optional[float]) -> str:
            return '—' if v is None else f"{v:.4g}"

        header = ['block', 'type', 'mode', 'τ', '‖K‖ bound', 'L', '‖f(u)‖/‖u‖ ≤', 'Lipschitz ≤', 'passes',
                  'guarantee']
        rows = [[b.path, b.block, b.mode, fmt(b.step_size), fmt(b.norm_bound), fmt(b.sector_bound),
                 fmt(b.norm_factor), fmt(b.lipschitz), b.passes, b.guarantee] for b in self.blocks]
        if any(b.verified is not None for b in self.blocks):
            header.append('verified')
            for r, b in zip(rows, self.blocks):
                r.append('—' if b.verified is None else ('yes' if b.verified else 'NO'))
        if not rows:
            return 'no certified PDE blocks found'
        widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
        line = lambda r: '  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        out = [line(header), line(['-' * w for w in widths])] + [line(r) for r in rows]
        out.append(f"chain of {len(rows)} certified blocks: ‖f(u)‖ ≤ {fmt(self.composed_norm_factor)}·‖u‖, "
                   f"Lipschitz ≤ {fmt(self.composed_lipschitz)}")
        return '\n'.join(out)


def certify(model: nn.Module, verify: bool = False) -> StabilityReport:
    """Collect the :class:`Certificate` of every module that has one (outermost first; a certified
    module's own children are not listed again).

    Each is the certificate the block uses in eval-mode passes (rigorous in every certification mode).
    ``verify=True`` recomputes every norm bound from scratch (the full bound at the current weights,
    for the block and all its certified sub-blocks) and confirms the one in use: ``verified`` per block
    and on the report.
    """
    report = StabilityReport()
    skip: List[str] = []
    for path, module in model.named_modules():
        if any(path.startswith(p + '.') for p in skip):
            continue
        certificate = getattr(module, 'stability_certificate', None)
        if not callable(certificate):
            continue
        c = certificate()
        if not isinstance(c, Certificate):
            raise TypeError(f"{type(module).__name__}.stability_certificate() must return a "
                            f"pdeblocks.stability.Certificate, got {type(c).__name__}")
        verified: Optional[bool] = None
        if verify:
            checks = [m.verify_certificate() for m in module.modules() if callable(getattr(m, 'verify_certificate', None))]
            checks = [c for c in checks if c is not None]    # None: nothing to verify (a free step)
            verified = all(checks) if checks else None
        report.blocks.append(BlockCertificate(**asdict(c), path=path or '(root)', block=type(module).__name__,
                                              verified=verified))
        skip.append(path)
    return report
