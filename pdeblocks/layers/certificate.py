"""The certificate of a stable block: B ≥ ‖K‖₂, and the step limit 2/(L·B²) it certifies.

One settings object (:class:`Certification`), one module that turns a weight into B
(:class:`NormCertificate`), and one resolver (:func:`resolve_certification`) used by every certified
block: :class:`~pdeblocks.layers.SymmetricResidual` and its FED, FSI and implicit subclasses, the
steps of the multigrid U-net, swapped blocks and the 1D models. It is one module (about 630 lines) because the
rigorous bound, the training contract's estimate and B's gradient share one cache (W₀, B(W₀), κ, ω*, v) whose parts
must change together.

**Rigorous B.** B(W) = N-grid Gram bound × Szegő factor (:func:`pdeblocks.ops.norms.norm_bound`),
cached with a copy of W₀; for the current W the pass uses

    B = B(W₀) + c·Σ_j ‖W_j − W₀_j‖_F   ≥ ‖K_W₀‖ + ‖K_{W−W₀}‖ ≥ ‖K_W‖    (c = 2^{d/2} for reflect, else 1),

which holds whatever changed W (optimizer steps, ``load_state_dict``, ``.data`` edits). The drift
term costs O(weights) and is computed on the weight's device; B(W₀) is recomputed at W when the
weight changed visibly (its version counter) and the drift passes the threshold.

**Which passes are certified** (``Certification.passes``):

* ``'all'`` — strict: every forward pass uses the rigorous B of the weights of that pass. During
  training the weights move a few per cent of B per SGD step, so nearly every step recomputes the
  full bound, which costs O(N^d·C³) per block (``benchmarks/bench_certificate.py``).
* ``'eval'`` — the training contract: passes in training mode (``module.training``) use the
  estimate B̃(W) = κ·σ(W), σ(W) = ‖K̂_W(ω*) v‖ (O(weights + C²), no host synchronisation). After
  every ``calibrate_every`` updates of the weight (its version counter) a warm-started power step
  at every grid frequency and more at the :data:`CANDIDATES` of largest σ re-choose ω* (the largest σ(ω))
  and v (O(N^d·H·C) per step, no Gram products); κ = B(W_r)/σ(W_r) is set at each rigorous bound W_r
  (σ converged there by :data:`START_REFINE` steps at the candidates), so that B̃ equals the rigorous B
  there. Every eval-mode pass, every saved ``state_dict``, TorchScript and
  :func:`pdeblocks.certify` use the rigorous B. B̃ is *not* a bound: training passes are not certified.

**Gradient** (``Certification.gradient``; the value of B is the same in every case):

* ``'sigma_max'``: B·σ/σ.detach() with σ = ‖K̂_W(ω*) v‖ at the *current* maximiser: ω* and v are re-tracked by
  warm-started power steps on every weight update: one at every grid frequency (O(F·H·C)), then
  :data:`TRACKING_REFINE` at the :data:`CANDIDATES` frequencies of largest σ (tracking only those between full
  sweeps was tried: the optimizer grows the others, and the eval step fell 2–10% below the training step's).
  This is Danskin's gradient of sup_ω σ_max(K̂_W(ω)): the optimizer sees which singular value sets τ and can
  flatten K's spectrum instead of shrinking every mode's step (``docs/certified_accuracy.md``: MNIST-1D
  78% → 94–96%). Under the training contract the estimate is then recalibrated at every update, so the
  optimizer cannot grow K at frequencies the estimate does not look at.
* ``'scale'``: the gradient of the scale-equivariant B·‖W‖_F/‖W₀‖_F at W₀ = W: B's exact derivative along W
  (growing ‖K‖ shrinks τ) and none across. O(weights); for wide blocks, where per-update tracking costs more
  than the step can spare. (A σ gradient at a frequency tracked only every ``calibrate_every`` updates is
  exploited: ``benchmarks/bench_contract_gap.py``.)
* ``'none'``; ``'auto'`` (default): ``'sigma_max'`` for H·C·F ≤ :data:`TRACKING_LIMIT`, else ``'scale'``.
"""
import ctypes
import functools
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from timm.models import register_notrace_module
from torch import nn

from .._native import native_library
from ..ops.norms import bound_settings, symbol_gram_bounds, symbol_phases, tap_norm_sum

__all__ = ['CERTIFIED_PASSES', 'GRADIENTS', 'TRACKING_LIMIT', 'Certification', 'NormCertificate', 'resolve_certification']

CERTIFIED_PASSES = ('eval', 'all')
GRADIENTS = ('auto', 'sigma_max', 'scale', 'none')
# 'auto' tracks the maximiser (power steps over [F, H, C] per weight update) up to this many entries: ≤ 64 channels
# at 3×3 (F = 120), ≤ 1 ms per power step on a 2-core CPU (benchmarks/bench_certificate.py)
TRACKING_LIMIT = 1 << 19
# every recalibration makes one power step on the whole grid and the rest at the CANDIDATES frequencies of largest
# σ (recalibrating the whole grid only every 8th time let a frequency outside the candidates grow unseen: after 160
# SGD steps on digit-like data, pde_resnet18's 128-channel B̃ was 3.2× below the rigorous B)
CANDIDATES = 8
# power steps at the candidates when κ is set, so that σ is converged there (at initialisation the top singular
# values of a wide random kernel are close, and 10 steps left σ a few per cent low: κ, and B̃ after it, 3–5% high)
START_REFINE = 30
# σ_max tracking: per weight update one power step on the grid, then TRACKING_REFINE at the CANDIDATES
# frequencies of largest σ (with one step the top singular values, which the σ_max gradient flattens, mix and σ
# lags: the eval step was 0.6–3.2% below the last training step's over 4 seeds; with 2 more, −0.2…+0.8% over 6)
TRACKING_REFINE = 2
# power steps on W with at least this many entries (H·C·taps) multiply in bfloat16 where the CPU does so natively:
# 512 channels at 3×3, 120 grid frequencies: 7.5 against 23 ms per step, 2 threads; at 256 channels no faster
LOW_PRECISION_MIN = 1 << 20
# weights with at least this many entries take σ(W) and ‖W‖² from one pass of a C kernel (CPU float32, no autograd)
# instead of a product and a dot product, which read W twice. The kernel runs in the calling thread: a second thread
# competes with torch's OpenMP workers, which spin after each parallel region. A training pass's B̃ forward + backward
# (scale gradient, 3×3, torch 2 threads): 128 channels 0.34 → 0.29 ms, 256 0.52 → 0.37, 512 1.22 → 1.14 (the same kernel
# on 2 threads: 0.46, 0.57, 1.41); 64 channels equal
FUSED_MIN = 1 << 16
# power steps on W with at most this many H·C entries run in the C kernel (one frequency per vector lane, the symbol
# formed once per block of lanes; its buffer is 2·H·C vectors). One step on the grid and two at the candidates, 2
# threads: 64 channels 3×3 1.83 → 0.81 ms, 128 channels 3.09 → 2.71, 16 channels 3×3×3 27.0 → 4.6, 32 channels 1D 0.36
# → 0.12 (the torch steps' dispatch costs more than their arithmetic)
NATIVE_POWER_MAX = 1 << 14
# legacy keyword arguments of the blocks → Certification fields
LEGACY_SETTINGS = {'grid': 'grid', 'gram_steps': 'gram_steps', 'interp_slack': 'interp_slack',
                   'bound_refresh': 'refresh'}


@dataclass(frozen=True)
class Certification:
    """How a block certifies its step size.

    Args:
        passes: ``'eval'`` (default: training passes use a calibrated estimate, see the module
            docstring) or ``'all'`` (strict: every pass is certified).
        grid: frequency grid N per axis of the full bound (default: the smallest whose Szegő factor
            is ≤ ``interp_slack``).
        gram_steps: Gram iterations per frequency of the full bound (≥ 1).
        interp_slack: the largest Szegő factor 1/cos(π Σ r_a / N) the default grid allows (> 1).
        refresh: strict mode: the drift Σ‖W − W₀‖_F, relative to B(W₀), above which the full bound
            is recomputed (≥ 0; 0 recomputes on every change).
        calibrate_every: training contract: updates of the weight (its version counter: optimizer steps,
            in-place edits) between recalibrations of the estimate (≥ 1).
        calibration_steps: warm-started power steps at every grid frequency per recalibration (≥ 1).
        gradient: the gradient B carries (its value is the same in every case, see the module docstring):
            ``'sigma_max'`` (Danskin's gradient of σ_max at the current maximiser, tracked at every weight
            update), ``'scale'`` (along W only), ``'none'``, or ``'auto'`` (default: ``'sigma_max'`` where
            tracking is cheap, H·C·F ≤ :data:`TRACKING_LIMIT` symbol entries, else ``'scale'``).
            ``True`` / ``False`` are read as ``'auto'`` / ``'none'``.
    """

    passes: str = 'eval'
    grid: Optional[int] = None
    gram_steps: int = 5
    interp_slack: float = 1.1
    refresh: float = 0.02
    calibrate_every: int = 25
    calibration_steps: int = 4
    gradient: Union[str, bool] = 'auto'

    def __post_init__(self):
        if self.passes not in CERTIFIED_PASSES:
            raise ValueError(f"Certification.passes must be one of {CERTIFIED_PASSES}, got {self.passes!r}")
        _check_int('grid', self.grid, 1, optional=True)
        _check_int('gram_steps', self.gram_steps, 1)
        _check_int('calibrate_every', self.calibrate_every, 1)
        _check_int('calibration_steps', self.calibration_steps, 1)
        if not isinstance(self.interp_slack, (int, float)) or not self.interp_slack > 1.0 \
                or not math.isfinite(self.interp_slack):
            raise ValueError(f"Certification.interp_slack must be a finite number > 1, got {self.interp_slack!r}")
        if not isinstance(self.refresh, (int, float)) or not self.refresh >= 0.0 or not math.isfinite(self.refresh):
            raise ValueError(f"Certification.refresh must be a finite number ≥ 0, got {self.refresh!r}")
        if isinstance(self.gradient, bool):
            object.__setattr__(self, 'gradient', 'auto' if self.gradient else 'none')
        if self.gradient not in GRADIENTS:
            raise ValueError(f"Certification.gradient must be one of {GRADIENTS} (or a bool), got {self.gradient!r}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@functools.cache
def _native_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run natively on ``device``: a CPU with bfloat16 instructions (the Linux flags
    ``avx512_bf16``, ``amx_bf16`` or Arm's ``bf16``) whose products torch routes to oneDNN. Elsewhere (other devices,
    emulated bfloat16, other systems) the power steps keep float32."""
    if device.type != 'cpu':
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        with open('/proc/cpuinfo') as f:
            flags = set(f.read().split())
    except (AttributeError, RuntimeError, OSError):
        return False
    return bool(flags & {'avx512_bf16', 'amx_bf16', 'bf16'})


def _apply_and_square(w: torch.Tensor, x: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """(‖x W̃ᵀ‖, ‖W‖²) for W̃ = W as [H, K] and x [2, K], in one pass over W by the C kernel (:mod:`pdeblocks._native`,
    item 7); None where it does not apply: autograd wanted, not a CPU float32 W with ≥ :data:`FUSED_MIN` entries, or no
    compiler."""
    if w.device.type != 'cpu' or w.dtype != torch.float32 or w.numel() < FUSED_MIN \
            or (torch.is_grad_enabled() and w.requires_grad):
        return None
    lib = native_library()
    if lib is None:
        return None
    w2 = w.reshape(w.shape[0], -1).contiguous()
    h, k = w2.shape
    x = x.to(torch.float32).contiguous()
    z = torch.empty(2, h)
    squares = torch.empty(h, dtype=torch.float64)
    lib.symbol_apply_sumsq_f32(w2.data_ptr(), x.data_ptr(), z.data_ptr(), squares.data_ptr(), h, k, 0, h)
    return torch.linalg.vector_norm(z), squares.sum().to(torch.float32)


def _native_power_steps(w: torch.Tensor, vectors: torch.Tensor) -> Optional[ctypes.CDLL]:
    """The C library if it takes :meth:`NormCertificate.calibrate`'s power steps for W [H, C·T] and vectors [F, C]
    (:mod:`pdeblocks._native`, item 7): a CPU float32 W with H·C ≤ :data:`NATIVE_POWER_MAX`, complex64 vectors."""
    if w.device.type != 'cpu' or w.dtype != torch.float32 or vectors.dtype != torch.complex64 \
            or w.shape[0] * vectors.shape[1] > NATIVE_POWER_MAX:
        return None
    return native_library()


class _InnerWithSelf(torch.autograd.Function):
    """s = ⟨W₀, W⟩ at W₀ = W, its value ‖W‖² given (computed with σ in one pass): the gradient W₀, as ``torch.dot``'s."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, square: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w)
        return square.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        w, = ctx.saved_tensors
        return grad * w, None


def _check_int(name: str, value: Any, low: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"Certification.{name} must be an int ≥ {low}{' or None' if optional else ''}, "
                         f"got {value!r}")


def resolve_certification(certification: Union[None, str, Mapping[str, Any], Certification] = None,
                          **legacy: Any) -> Certification:
    """The one resolver: None (defaults), ``'eval'`` / ``'all'``, a dict of fields, or a
    :class:`Certification`; the blocks' legacy keywords (``grid``, ``gram_steps``, ``interp_slack``,
    ``bound_refresh``) override fields when not None. Unknown names are a ValueError listing the valid ones.
    """
    if certification is None:
        settings = Certification()
    elif isinstance(certification, Certification):
        settings = certification
    elif isinstance(certification, str):
        if certification not in CERTIFIED_PASSES:
            raise ValueError(f"certification must be one of {CERTIFIED_PASSES}, a dict or a Certification; "
                             f"got {certification!r}")
        settings = Certification(passes=certification)
    elif isinstance(certification, Mapping):
        valid = [f.name for f in fields(Certification)]
        unknown = sorted(set(certification) - set(valid))
        if unknown:
            raise ValueError(f"unknown certification settings {unknown}; valid: {valid}")
        settings = Certification(**certification)
    else:
        raise ValueError(f"certification must be None, one of {CERTIFIED_PASSES}, a dict or a Certification; "
                         f"got {type(certification).__name__}")
    unknown = sorted(set(legacy) - set(LEGACY_SETTINGS))
    if unknown:
        raise ValueError(f"unknown certification keywords {unknown}; valid: {sorted(LEGACY_SETTINGS)}")
    overrides = {LEGACY_SETTINGS[k]: v for k, v in legacy.items() if v is not None}
    return replace(settings, **overrides) if overrides else settings


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


@register_notrace_module
class NormCertificate(nn.Module):
    """B ≥ ‖K_W‖₂ for every signal size, and the training contract's estimate (see the module docstring).

    ``forward(weight)`` gives the B of this pass: the estimate in a training-mode pass under
    ``passes='eval'``, else the rigorous bound. :meth:`rigorous` always gives the rigorous one.
    Under TorchScript the full bound is recomputed on every call.
    """

    __jit_ignored_attributes__ = ['_w0', '_b0', '_version', '_phase', '_phases', '_v', '_vectors', '_kappa',
                                  '_index', '_sigmas', 'settings']
    __jit_unused_properties__ = ['strict']

    def __init__(self, kernel_size: List[int], boundary: str,
                 certification: Union[None, str, Mapping[str, Any], Certification] = None, **legacy: Any):
        super().__init__()
        settings = resolve_certification(certification, **legacy)
        self.settings = settings
        self.kernel_size = list(kernel_size)
        self.grid, self.factor = bound_settings(self.kernel_size, boundary, settings.grid, settings.interp_slack)
        self.gram_steps = settings.gram_steps
        self.padding_factor = 2.0 ** (len(kernel_size) / 2.0) if boundary == 'reflect' else 1.0
        self.recomputations = 0   # full bounds computed (for benchmarks)
        self.calibrations = 0     # recalibrations of the training contract's estimate (for benchmarks)
        self._seen_version = -1                          # the weight's version at the last training pass
        self.updates_since_calibration = 0               # training passes that saw a changed weight
        self._w0: Optional[torch.Tensor] = None        # W₀ of the cached bound
        self._b0: Optional[torch.Tensor] = None        # B(W₀)
        self._version: Optional[Tuple[int, int]] = None
        self._index: Optional[torch.Tensor] = None     # ω*: flat grid index of the largest σ(ω) (a device tensor)
        self._phases: Optional[torch.Tensor] = None    # e^{−i⟨ω, j⟩} [taps, F] over the grid
        self._phase: Optional[torch.Tensor] = None     # e^{−i⟨ω*, j⟩} over the taps
        self._v: Optional[torch.Tensor] = None         # top right singular vector of K̂(ω*)
        self._vectors: Optional[torch.Tensor] = None   # the power iteration's vectors at every grid frequency
        self._sigmas: Optional[torch.Tensor] = None    # σ(ω) at every grid frequency, as last calibrated
        self._kappa: Optional[torch.Tensor] = None     # κ = B(W_r) / max_ω σ(ω) at the last full bound

    @property
    def strict(self) -> bool:
        return self.settings.passes == 'all'

    def compute(self, weight: torch.Tensor) -> torch.Tensor:
        """The full bound at ``weight`` (no cache): N-grid Gram bound × Szegő factor, floored at 1e-6
        (still ≥ ‖K‖ for a near-zero kernel, and keeps τ = 2/(L B²) finite)."""
        return (symbol_gram_bounds(weight, self.grid, self.gram_steps).amax() * self.factor).clamp_min(1e-6)

    # -- the rigorous bound -------------------------------------------------------------------------
    @torch.jit.unused
    def _recompute(self, weight: torch.Tensor, stored: Optional[torch.Tensor] = None) -> bool:
        """The full bound at ``weight`` (or a ``stored`` B if it is ≥ that), cached with W₀; the estimate's
        factor κ is reset (recalibrated at the next training pass). Returns whether ``stored`` was taken."""
        w = weight.detach()
        b = (symbol_gram_bounds(w, self.grid, self.gram_steps).amax() * self.factor).clamp_min(1e-6)
        accepted = False
        if stored is not None:
            stored = stored.detach().to(device=b.device, dtype=b.dtype).reshape(b.shape)
            accepted = bool(stored >= b)
            b = stored.clone() if accepted else b
        self.recomputations += 1
        self._w0, self._b0 = w.clone(), b
        self._version = (w._version, w.data_ptr())
        self._kappa = None
        return accepted

    @torch.jit.unused
    def _grid_phases(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        p = self._phases
        if p is None or p.dtype != dtype or p.device != device:
            p = self._phases = symbol_phases(self.kernel_size, self.grid, dtype=dtype, device=device)
        return p

    @torch.jit.unused
    def _select(self, index: torch.Tensor) -> None:
        """ω* ← the grid frequency of flat ``index`` (a device tensor: no host synchronisation)."""
        self._index = index.reshape(1)
        self._phase = self._phases.index_select(1, self._index).squeeze(1)
        self._v = self._vectors.index_select(0, self._index).squeeze(0)

    @torch.jit.unused
    def calibrate(self, w: torch.Tensor, steps: int, full: bool = True, refine: int = 0) -> torch.Tensor:
        """Warm-started power iteration on the symbol (O(F·H·C) per step, no Gram products, no host
        synchronisation): ω* = the frequency with the largest σ(ω), v its vector. ``full``: ``steps`` at every grid
        frequency, else at the :data:`CANDIDATES` frequencies with the largest σ at the last calibrations (the
        others keep their σ); then ``refine`` more steps at the CANDIDATES frequencies of largest σ, where the top
        singular values are often close and one step lags behind. σ(ω) = ‖A(ω)x‖ at the last step's unit input x
        (one product less than at its output; a lower bound of σ_max(A(ω)) either way). Returns σ(ω*)."""
        if steps < 1 or refine < 0:
            raise ValueError(f"calibrate needs steps ≥ 1 and refine ≥ 0, got steps={steps}, refine={refine}")
        version = w._version
        w = w.detach()
        w = w if w.dtype in (torch.float32, torch.float64) else w.float()
        phases = self._grid_phases(_complex_dtype(w.dtype), w.device)
        n_freq = phases.shape[1]
        if self._vectors is None or self._vectors.shape != (n_freq, w.shape[1]) \
                or self._vectors.dtype != phases.dtype or self._vectors.device != w.device:
            self._vectors = torch.ones(n_freq, w.shape[1], dtype=phases.dtype, device=w.device)
            self._sigmas = None
            steps = max(steps, 10)
        h, c = w.shape[0], w.shape[1]
        taps = phases.shape[0]
        # A(ω) = Σ_j e^{−i⟨ω, j⟩} W_j is not formed on the grid (a 512-channel 3×3 symbol there is 252 MB), nor is W
        # copied: with W as its [H, C·T] view, per step two real GEMMs, W @ (x ⊗ e^{−i⟨ω, j⟩}) and Wᵀ @ z (narrow
        # weights: the C kernel forms A for 16 frequencies at a time)
        w_flat = w.reshape(h, c * taps).to(phases.real.dtype)
        # the steps only steer ω* and v, so wide float32 weights multiply in bfloat16 (a copy of W; unit roundoff 2⁻⁸,
        # sums in float32): σ(W) at v, κ and every bound stay float32
        low = w_flat.dtype == torch.float32 and h * c * taps >= LOW_PRECISION_MIN and _native_bfloat16(w.device)
        w_mm = w_flat.to(torch.bfloat16) if low else w_flat

        def norms(z: torch.Tensor) -> torch.Tensor:   # per column of a contiguous [rows, F'] complex z
            # squares summed over rows first (contiguous): 10× faster than vector_norm over dims (0, 2), which is
            # 4× faster than a complex vector_norm; the same float32 range (neither rescales)
            r = torch.view_as_real(z).reshape(z.shape[0], -1)
            return (r * r).sum(0).view(-1, 2).sum(1).sqrt()

        def iterate(index: torch.Tensor, count: int) -> torch.Tensor:   # ``count`` steps at ``index``; σ there
            if kernel is not None:   # in place on the copies made below, σ written into self._sigmas
                if kernel.symbol_power_f32(w_flat.data_ptr(), phases.data_ptr(), self._vectors.data_ptr(),
                                           self._sigmas.data_ptr(), index.data_ptr(), h, c, taps, n_freq, count, 0,
                                           index.numel()):
                    raise MemoryError(f"calibrate: no memory for the power steps' symbol ({h}×{c} per lane)")
                return self._sigmas.index_select(0, index)
            p = phases.index_select(1, index)                                                          # [T, F']
            n = p.shape[1]
            x = self._vectors.index_select(0, index).t().contiguous()                                  # [C, F']
            sigma = torch.zeros(n, dtype=w_flat.dtype, device=w.device)
            for _ in range(count):   # x ← Aᴴ(A x), normalised per frequency; σ = ‖A x‖ at the step's unit input
                xp = torch.view_as_real(x[:, None, :] * p[None]).reshape(c * taps, 2 * n).to(w_mm.dtype)  # x ⊗ phase
                z = torch.view_as_complex((w_mm @ xp).to(w_flat.dtype).view(h, n, 2))           # A(ω)x_ω [H, F']
                sigma = norms(z)
                zr = torch.view_as_real(z).reshape(h, 2 * n).to(w_mm.dtype)
                u = torch.view_as_complex((w_mm.t() @ zr).to(w_flat.dtype).view(c, taps, n, 2))
                x = (u * p.conj()[None]).sum(1)                                                 # A(ω)ᴴz_ω [C, F']
                x = x / norms(x).clamp_min(1e-30)
            self._vectors = self._vectors.index_copy(0, index, x.t())
            self._sigmas = sigma if self._sigmas is None else self._sigmas.index_copy(0, index, sigma)
            return sigma

        # the C kernel's steps on narrow weights: no torch op per step (its dispatch costs more than the arithmetic)
        kernel = None if low else _native_power_steps(w_flat, self._vectors)
        full = full or self._sigmas is None
        if kernel is not None:
            w_flat = w_flat.contiguous()
            phases = phases.contiguous()
            # copies, not in place on tensors an anchor may hold
            self._vectors = self._vectors.clone(memory_format=torch.contiguous_format)
            self._sigmas = torch.zeros(n_freq, dtype=torch.float32) if self._sigmas is None \
                else self._sigmas.to(torch.float32, copy=True).contiguous()
        candidates = min(CANDIDATES, n_freq)
        if full:
            index = torch.arange(n_freq, device=w.device)
        else:
            index = self._sigmas.topk(candidates).indices
        sigma = iterate(index, steps)
        if refine and candidates < n_freq:
            index = self._sigmas.topk(candidates).indices
            sigma = iterate(index, refine)
        best = sigma.argmax()
        self._select(index.gather(0, best.reshape(1)))
        self._seen_version = version
        self.updates_since_calibration = 0
        self.calibrations += 1
        return sigma.gather(0, best.reshape(1)).squeeze(0)

    @torch.jit.unused
    def drift(self, weight: torch.Tensor) -> torch.Tensor:
        """c·Σ_j ‖W_j − W₀_j‖_F ≥ ‖K_W − K_W₀‖ (0 when W = W₀), on the weight's device."""
        # 1e-5: rounding of the difference and the norms (float32)
        return tap_norm_sum(weight.detach() - self._w0) * (self.padding_factor * (1.0 + 1e-5))

    @torch.jit.unused
    def _cache_valid(self, w: torch.Tensor) -> bool:
        c = self._w0
        return c is not None and c.shape == w.shape and c.dtype == w.dtype and c.device == w.device

    @torch.jit.unused
    def rigorous(self, weight: torch.Tensor) -> torch.Tensor:
        """B ≥ ‖K_W‖₂ for the current ``weight`` (detached): B(W₀) + drift, B(W₀) recomputed when due.

        Due when the weight changed visibly (version counter or storage) and, in the strict mode,
        the drift exceeds ``refresh``·B(W₀) (in the training contract: any drift, so that eval passes
        use the tight bound). On a CPU the drift is also checked when nothing changed visibly (a
        ``.data`` edit); on a GPU it is not (that would synchronise), and B(W₀) + drift stays rigorous.
        """
        w = weight.detach()
        if w.is_meta:
            return self.compute(w)
        if not self._cache_valid(w):
            self._recompute(w)
            return self._b0
        drift = self.drift(w)
        changed = (w._version, w.data_ptr()) != self._version
        if changed or not w.is_cuda:
            threshold = self.settings.refresh * float(self._b0) if self.strict else 0.0
            if (changed and w.is_cuda and not self.strict) or float(drift) > threshold:
                self._recompute(w)
                return self._b0
            self._version = (w._version, w.data_ptr())
        return self._b0 + drift

    @torch.jit.unused
    def current(self, weight: torch.Tensor) -> Optional[torch.Tensor]:
        """The rigorous B the next eval pass uses if no full computation is due, else None. Changes nothing."""
        w = weight.detach()
        if w.is_meta or not self._cache_valid(w):
            return None
        drift = self.drift(w)
        threshold = self.settings.refresh * float(self._b0) if self.strict else 0.0
        return None if float(drift) > threshold else self._b0 + drift

    # -- the training contract's estimate -------------------------------------------------------------
    @torch.jit.unused
    def _start_estimate(self, weight: torch.Tensor) -> None:
        """κ = B(W)/max_ω σ(ω) at a weight with a full bound: the cached one if W has not visibly changed
        since (e.g. the first training pass after an eval pass), else a new one."""
        w = weight.detach()
        if not self._cache_valid(w) or (w._version, w.data_ptr()) != self._version:
            self._recompute(w)
        self.calibrate(w, self.settings.calibration_steps, refine=START_REFINE)
        sigma = self.sigma(w)   # exactly the σ(W) the estimate uses, so that κ·σ(W) = B(W) here
        self._kappa = (self._b0 / sigma.clamp_min(1e-30)).to(self._b0.dtype)

    @torch.jit.unused
    def _symbol_input(self) -> torch.Tensor:
        """[2, C·taps]: the real and imaginary parts of v ⊗ e^{−i⟨ω*, j⟩}, so that x Wᵀ = K̂_W(ω*) v."""
        return torch.view_as_real((self._v[:, None] * self._phase[None, :]).reshape(-1)).t().contiguous()

    @torch.jit.unused
    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """σ(W) = ‖K̂_W(ω*) v‖ at the tracked ω* and v, differentiable in W: σ_max(K̂_W(ω*)) when v is its top
        right singular vector, and then its gradient is Danskin's gradient of sup_ω σ_max(K̂_W(ω))."""
        w = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()
        # K̂(ω*)v = Σ_j W_j (e^{−i⟨ω*, j⟩} v): one real product [2, C·taps] @ [C·taps, H] (re, im), W read once
        # (as linear(x, W) with x contiguous: a GEMM with two rows, several times faster on CPU than W @ [C·taps, 2]
        # or than a transposed x)
        x = self._symbol_input()
        fused = _apply_and_square(w, x)
        if fused is not None:
            return fused[0]
        return torch.linalg.vector_norm(nn.functional.linear(x.to(w.dtype), w.reshape(w.shape[0], -1)))

    @torch.jit.unused
    def _estimate_with_scale_gradient(self, weight: torch.Tensor) -> torch.Tensor:
        """:meth:`estimate` with :meth:`with_scale_gradient`'s gradient, σ(W) and ‖W‖² = ⟨W₀, W⟩ from one pass over W
        where the C kernel applies (the same values and gradient as the two calls, up to rounding)."""
        w = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()
        fused = _apply_and_square(w.detach(), self._symbol_input())
        if fused is None:
            return self.with_scale_gradient(self.estimate(weight), weight)
        sigma, square = fused
        return self._carry((self._kappa * sigma).clamp_min(1e-6), _InnerWithSelf.apply(w.reshape(-1), square))

    @torch.jit.unused
    def estimate(self, weight: torch.Tensor) -> torch.Tensor:
        """κ·σ(W) with ω*, v and κ from the last calibration, floored at 1e-6: O(weights + C²), a pure function
        of W between calibrations (so checkpointed recomputation repeats it exactly); no gradient (added by
        :meth:`with_gradient`). Not a bound."""
        with torch.no_grad():
            return (self._kappa * self.sigma(weight.detach())).clamp_min(1e-6)

    @staticmethod
    def _carry(value: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``value`` exactly (also where s = 0), with the gradient of value·s/s.detach()."""
        return value * (1.0 + (s - s.detach()) / s.detach().clamp_min(1e-30))

    @staticmethod
    def with_scale_gradient(value: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``value`` with the gradient of the scale-equivariant B(W)·‖W‖_F/‖W₀‖_F at W₀ = W: B is
        positively homogeneous, so this is its exact derivative along W (growing K shrinks τ), and zero
        across; a direction the optimizer cannot exploit to undercut the bound."""
        w = weight if weight.dtype in (torch.float32, torch.float64) else weight.float()
        w = w.reshape(-1)
        # s = ⟨W₀, W⟩ at W₀ = W: s/s.detach() has the gradient W₀/‖W₀‖² = W/‖W‖², that of ‖W‖_F/‖W₀‖_F. One pass
        # over the weight (no separate norm); its backward is one scaling of W₀
        return NormCertificate._carry(value, torch.dot(w.detach(), w))

    @torch.jit.unused
    def tracks_maximiser(self, weight: torch.Tensor) -> bool:
        """Whether B carries the σ_max gradient for this weight (``gradient='sigma_max'``, or ``'auto'`` with
        H·C·F ≤ :data:`TRACKING_LIMIT`), so that ω* and v are tracked at every weight update."""
        g = self.settings.gradient
        if g == 'auto':
            return weight.shape[0] * weight.shape[1] * self.grid ** (weight.dim() - 3) * (self.grid // 2 + 1) \
                <= TRACKING_LIMIT
        return g == 'sigma_max'

    @torch.jit.unused
    def with_gradient(self, value: torch.Tensor, weight: torch.Tensor, track: bool,
                      sigma: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``value`` with the gradient of :class:`Certification`'s ``gradient``: Danskin's σ_max gradient
        value·σ/σ.detach() at the current maximiser (``track``; ω* and v re-tracked if W changed since; ``sigma``:
        σ(W) if the caller has it already), else the scale gradient, or none."""
        if self.settings.gradient == 'none' or not (torch.is_grad_enabled() and weight.requires_grad):
            return value
        if not track:
            return self.with_scale_gradient(value, weight)
        if self._v is None or weight._version != self._seen_version or self._vectors is None \
                or self._vectors.device != weight.device:
            self.calibrate(weight, 1, refine=TRACKING_REFINE)
        return self._carry(value, self.sigma(weight) if sigma is None else sigma)

    @torch.jit.unused
    def _eager(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.is_meta:
            return self.compute(weight)
        with torch.autocast(weight.device.type, enabled=False):
            track = self.tracks_maximiser(weight)
            if self.training and not self.strict:
                if weight._version != self._seen_version:
                    self._seen_version = weight._version
                    self.updates_since_calibration += 1
                if self._kappa is None or not self._cache_valid(weight.detach()):
                    self._start_estimate(weight)
                elif track and self.updates_since_calibration >= 1:
                    self.calibrate(weight, 1, refine=TRACKING_REFINE)   # warm started: the weights moved a little
                elif self.updates_since_calibration >= self.settings.calibrate_every:
                    # one step on the whole grid, the rest at the candidates (512 channels: about 50 ms on one thread)
                    self.calibrate(weight, 1, refine=self.settings.calibration_steps - 1)
                if track and self.settings.gradient != 'none' and torch.is_grad_enabled() and weight.requires_grad:
                    # the estimate κ·σ and Danskin's gradient share one σ(W)
                    s = self.sigma(weight)
                    return self.with_gradient((self._kappa * s.detach()).clamp_min(1e-6), weight, track, s)
                if self.settings.gradient != 'none' and torch.is_grad_enabled() and weight.requires_grad:
                    return self._estimate_with_scale_gradient(weight)
                b = self.estimate(weight)
            else:
                b = self.rigorous(weight)
            return self.with_gradient(b, weight, track)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return self.compute(weight)
        return self._eager(weight)

    # -- state ----------------------------------------------------------------------------------------
    @torch.jit.unused
    def clear(self) -> None:
        """Forget the cache: the next pass computes the full bound."""
        self._w0 = self._b0 = self._version = self._kappa = None
        self._v = self._vectors = self._index = self._sigmas = None

    @torch.jit.unused
    def restore(self, weight: torch.Tensor, value: torch.Tensor) -> bool:
        """Take a stored B for ``weight`` (from a ``state_dict``) if it is certified: B ≥ the full bound
        at ``weight``, hence ≥ ‖K‖; otherwise cache the full bound. Returns whether B was taken."""
        return self._recompute(weight, stored=value)

    @torch.jit.unused
    def anchor(self) -> Optional[Dict[str, torch.Tensor]]:
        """The cache and the estimate's state as tensors (None before the first bound): with
        :meth:`restore_anchor` a training checkpoint resumes with the very bounds an uninterrupted run uses."""
        if self._w0 is None or self._b0 is None or self._vectors is None or self._kappa is None:
            return None
        state = dict(weight=self._w0, value=self._b0, kappa=self._kappa, vectors=torch.view_as_real(self._vectors),
                     vector=torch.view_as_real(self._v), index=self._index.reshape(()),
                     updates=torch.tensor(self.updates_since_calibration), calibrations=torch.tensor(self.calibrations))
        if self._sigmas is not None:
            state['sigmas'] = self._sigmas
        return state

    @torch.jit.unused
    def restore_anchor(self, anchor: Mapping[str, torch.Tensor]) -> bool:
        """Restore :meth:`anchor`'s state; B is checked against the full bound (not trusted)."""
        accepted = self.restore(anchor['weight'], anchor['value'])
        vectors = torch.view_as_complex(anchor['vectors'].contiguous())
        if accepted:
            device = self._b0.device
            self._vectors = vectors.to(device)
            self._grid_phases(vectors.dtype, device)
            self._select(anchor['index'].to(device=device, dtype=torch.long))
            self._kappa = anchor['kappa'].to(device)
            self.updates_since_calibration = int(anchor['updates'])
            if 'calibrations' in anchor:   # anchors from before partial recalibrations lack these two
                self.calibrations = int(anchor['calibrations'])
            self._sigmas = anchor['sigmas'].to(device) if 'sigmas' in anchor else None
            self._seen_version = -1    # the loaded weight's version counter restarts
        return accepted

    def extra_repr(self) -> str:
        s = self.settings
        return (f"passes={s.passes!r}, grid={self.grid}, gram_steps={self.gram_steps}, factor={self.factor:.4f}, "
                f"refresh={s.refresh}, calibrate_every={s.calibrate_every}, gradient={s.gradient}")
