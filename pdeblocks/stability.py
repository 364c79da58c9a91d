"""``certify(model)``: what every PDE block in a module tree guarantees, and what their chain does.

A block takes part by implementing ``stability_certificate() -> dict`` with the keys ``mode``,
``step_size``, ``norm_bound``, ``sector_bound``, ``norm_factor`` (c in ‖f(u)‖ ≤ c‖u‖, or None),
``lipschitz`` (c in ‖f(u) − f(v)‖ ≤ c‖u − v‖, or None) and ``guarantee`` (a sentence).

For a chain f_n ∘ … ∘ f_1 of certified blocks the factors multiply: ‖f(u)‖ ≤ Π c_i ‖u‖ and
Lip(f) ≤ Π Lip(f_i). A single uncertified factor (None) makes the composed one unknown. The
composed numbers hold for the blocks applied one after another; layers between them that are not
certified (normalisation, pooling, the head) are not covered.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from torch import nn

__all__ = ['BlockCertificate', 'StabilityReport', 'certify']


@dataclass
class BlockCertificate:
    path: str
    block: str
    mode: str
    step_size: float
    norm_bound: Optional[float]
    sector_bound: Optional[float]
    norm_factor: Optional[float]
    lipschitz: Optional[float]
    guarantee: str


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

    def to_dict(self) -> Dict[str, Any]:
        return dict(blocks=[vars(b) for b in self.blocks], composed_norm_factor=self.composed_norm_factor,
                    composed_lipschitz=self.composed_lipschitz)

    def __len__(self) -> int:
        return len(self.blocks)

    def __str__(self) -> str:
        def fmt(v: Optional[float]) -> str:
            return '—' if v is None else f"{v:.4g}"

        header = ['block', 'type', 'mode', 'τ', '‖K‖ bound', 'L', '‖f(u)‖/‖u‖ ≤', 'Lipschitz ≤', 'guarantee']
        rows = [[b.path, b.block, b.mode, fmt(b.step_size), fmt(b.norm_bound), fmt(b.sector_bound),
                 fmt(b.norm_factor), fmt(b.lipschitz), b.guarantee] for b in self.blocks]
        if not rows:
            return 'no certified PDE blocks found'
        widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
        line = lambda r: '  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        out = [line(header), line(['-' * w for w in widths])] + [line(r) for r in rows]
        out.append(f"chain of {len(rows)} certified blocks: ‖f(u)‖ ≤ {fmt(self.composed_norm_factor)}·‖u‖, "
                   f"Lipschitz ≤ {fmt(self.composed_lipschitz)}")
        return '\n'.join(out)


def certify(model: nn.Module) -> StabilityReport:
    """Collect ``stability_certificate()`` of every module that has one (outermost first; a
    certified module's own children are not listed again)."""
    report = StabilityReport()
    skip: List[str] = []
    for path, module in model.named_modules():
        if any(path.startswith(p + '.') for p in skip):
            continue
        certificate = getattr(module, 'stability_certificate', None)
        if callable(certificate):
            c = certificate()
            report.blocks.append(BlockCertificate(
                path=path or '(root)', block=type(module).__name__, mode=c['mode'], step_size=c['step_size'],
                norm_bound=c.get('norm_bound'), sector_bound=c.get('sector_bound'),
                norm_factor=c.get('norm_factor'), lipschitz=c.get('lipschitz'), guarantee=c['guarantee']))
            skip.append(path)
    return report
