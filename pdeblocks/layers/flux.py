"""Flux activations Φ(s) = g(s²)·s of nonlinear diffusion, with a per-channel contrast λ > 0.

Every flux states the constants the stability theorems need:

* ``sector_bound`` L: 0 ≤ Φ(s)/s = g(s²) ≤ L for all s (Euclidean stability of u − τKᵀΦ(Ku)),
* ``monotone``: whether Φ is non-decreasing (needed for the Lipschitz guarantee),
* ``slope_bound``: sup Φ'(s) when monotone, else ``None``.

All take and ignore ``inplace=`` so they work as a timm ``act_layer``.
"""
import math
from typing import Dict, List, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from timm.models import register_notrace_function
from torch import nn
from torch.autograd.function import once_differentiable

from .._native import native_library, run_ranges, split_ranges


@register_notrace_function
def channel_view(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-channel parameter [C] (or a scalar [1]) against x = [B, C, *spatial]."""
    if p.numel() == 1:
        return p.reshape([1] * x.dim())
    shape: List[int] = [1, p.shape[0]] + [1] * (x.dim() - 2)
    return p.reshape(shape)


@register_notrace_function
def knot_interval(x: torch.Tensor, channels: int, knots: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """For x ∈ [0, K − 1] (knot units) in [B, C, …]: (flat index i + c·(K − 1) of the knot interval
    [i, i + 1] of channel c, as int64; the fraction x − i ∈ [0, 1]).

    The channel offset is added before the one float → int64 conversion (exact: offsets < 2²⁴) in
    float32/float64, which is much cheaper than a broadcast int64 addition."""
    idx = x.floor().clamp(max=knots - 2)
    frac = x - idx
    if channels == 1:
        return idx.long(), frac
    offset = channel_view(torch.arange(channels, device=x.device) * (knots - 1), x)
    if x.dtype == torch.float32 or x.dtype == torch.float64:
        return (idx + offset.to(x.dtype)).long(), frac
    return idx.long() + offset, frac


class FusedFlux(torch.autograd.Function):
    """Φ(s) = g·s with a hand-written backward from g alone: saves (s, g, λ) instead of every
    intermediate of g's formula. ``flux.fused_slopes(g)`` = (Φ'(s), λ·∂Φ/∂λ / s), both functions of g."""

    @staticmethod
    def forward(ctx, s: torch.Tensor, lam: torch.Tensor, flux: 'Flux') -> torch.Tensor:
        g = flux.diffusivity(s * s, lam)
        ctx.save_for_backward(s, g, lam)
        ctx.flux = flux
        return g * s

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        s, g, lam = ctx.saved_tensors
        slope, contrast_term = ctx.flux.fused_slopes(g)
        grad_s = grad * slope if ctx.needs_input_grad[0] else None
        grad_lam = None
        if ctx.needs_input_grad[1]:
            t = grad * contrast_term * s / lam
            dims = [d for d in range(s.dim()) if lam.shape[d] == 1 and s.shape[d] != 1]
            grad_lam = t.sum(dims, keepdim=True) if dims else t
        return grad_s, grad_lam, None


def _rows_forward(fn, pointers: Tuple[int, ...], ints: Tuple[int, ...], ranges, s: torch.Tensor) -> torch.Tensor:
    """Φ(s) by a C flux kernel over row ranges: ``fn(*pointers, out, *ints, r0, r1)``."""
    out = torch.empty_like(s)
    run_ranges(lambda r0, r1: fn(*pointers, out.data_ptr(), *ints, r0, r1), ranges)
    return out


def _rows_backward(fn, pointers: Tuple[int, ...], ints: Tuple[int, ...], ranges, s: torch.Tensor, grad: torch.Tensor,
                   table_shape: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂s, ∂L/∂table in float64) by a C flux kernel over row ranges: ``fn(*pointers, grad, grad_s, partial, *ints,
    r0, r1)``, one float64 partial sum of the table's gradient per range."""
    grad = grad.contiguous()
    grad_s = torch.empty_like(s)
    partial = torch.zeros([len(ranges)] + table_shape, dtype=torch.float64)
    run_ranges(lambda k, r0, r1: fn(*pointers, grad.data_ptr(), grad_s.data_ptr(), partial[k].data_ptr(), *ints, r0, r1),
               [(k, r0, r1) for k, (r0, r1) in enumerate(ranges)])
    return grad_s, partial.sum(0)


# from this many samples of s the rational flux's C kernel splits the rows over torch's threads; below, the calling
# thread alone is faster (a pool dispatch costs about 0.1 ms and competes with torch's spinning OpenMP workers)
RATIONAL_FLUX_THREADED = 1 << 22


def _native_rational_applies(s: torch.Tensor, lam: torch.Tensor) -> bool:
    """The C kernel evaluates a rational flux for CPU float32 / float64 ``s`` of shape [B, C, …] with λ of its dtype,
    one value or one per channel."""
    return (s.device.type == 'cpu' and s.dtype in (torch.float32, torch.float64) and s.dim() >= 2
            and lam.device.type == 'cpu' and lam.dtype == s.dtype and lam.numel() in (1, s.shape[1])
            and s.numel() > 0 and native_library() is not None)


class NativeRationalFlux(torch.autograd.Function):
    """Φ(s) = g·s of Perona–Malik (``kind`` 0) or Charbonnier (1) in one pass of the C kernel
    (:mod:`pdeblocks._native`, item 8), the backward (∂L/∂s and ∂L/∂λ, per-row sums in float64) in one more;
    Perona–Malik's values are its torch expression's bit for bit."""

    @staticmethod
    def _call(name: str, s: torch.Tensor, lam: torch.Tensor, kind: int):
        fn = getattr(native_library(), f"ratflux_{'f32' if s.dtype == torch.float32 else 'f64'}_{name}")
        channels = s.shape[1]
        rows = s.shape[0] * channels
        parts = torch.get_num_threads() if s.numel() >= RATIONAL_FLUX_THREADED else 1
        ints = (channels, 1 if lam.numel() > 1 else 0, s.numel() // rows, kind)
        return fn, ints, split_ranges(rows, parts)

    @staticmethod
    def forward(ctx, s: torch.Tensor, lam: torch.Tensor, kind: int) -> torch.Tensor:
        s = s.contiguous()
        lam = lam.detach().reshape(-1).contiguous()
        fn, ints, ranges = NativeRationalFlux._call('forward', s, lam, kind)
        ctx.save_for_backward(s, lam)
        ctx.kind = kind
        return _rows_forward(fn, (s.data_ptr(), lam.data_ptr()), ints, ranges, s)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        s, lam = ctx.saved_tensors
        fn, ints, ranges = NativeRationalFlux._call('backward', s, lam, ctx.kind)
        grad_s, grad_lam = _rows_backward(fn, (s.data_ptr(), lam.data_ptr()), ints, ranges, s, grad, [lam.numel()])
        shape = [1, lam.numel()] + [1] * (s.dim() - 2) if lam.numel() > 1 else [1] * s.dim()
        return grad_s, grad_lam.to(s.dtype).reshape(shape), None


@register_notrace_function
def fused_flux(s: torch.Tensor, lam: torch.Tensor, flux: nn.Module) -> torch.Tensor:
    """Φ(s) of a fused flux (a leaf for torch.fx): the C kernel where the flux has one (``native_kind``) and it
    applies, else :class:`FusedFlux` when gradients are needed, else the flux's expression."""
    kind = getattr(flux, 'native_kind', None)
    if kind is not None and _native_rational_applies(s, lam):
        return NativeRationalFlux.apply(s, lam, kind)
    if torch.is_grad_enabled():
        return FusedFlux.apply(s, lam, flux)
    return flux.diffusivity(s * s, lam) * s


class Flux(nn.Module):
    """Base class: Φ(s) = g(s²)·s with a trainable contrast λ = softplus(ρ) (per channel or shared).

    A subclass that defines ``fused_slopes(g)`` (Φ' and λ·∂Φ/∂λ / s as functions of g) is evaluated
    through :class:`FusedFlux` when gradients are needed: same values, about half the memory traffic.
    """

    sector_bound: float = 1.0
    monotone: bool = False
    slope_bound: Optional[float] = None
    lipschitz_bound: Optional[float] = 1.0  # sup |Φ'(s)|
    no_weight_decay_params = ('raw_contrast', 'knot_logits')
    __jit_unused_properties__ = ['contrast']

    def __init__(
            self,
            channels: Optional[int] = None,
            contrast: float = 1.0,
            trainable: bool = True,
            inplace: bool = False,
            device=None,
            dtype=None,
    ):
        super().__init__()
        if contrast <= 0:
            raise ValueError(f"contrast λ must be > 0, got {contrast}")
        if channels is not None and channels < 1:
            raise ValueError(f"channels must be ≥ 1 or None, got {channels}")
        n = 1 if channels is None else channels
        # inverse softplus so that λ starts at `contrast`
        raw = contrast + math.log(-math.expm1(-contrast))
        self.raw_contrast = nn.Parameter(
            torch.full((n,), raw, device=device, dtype=dtype), requires_grad=trainable)

    @property
    def contrast(self) -> torch.Tensor:
        """λ = softplus(ρ) > 0."""
        return F.softplus(self.raw_contrast)

    def diffusivity(self, s2: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    fused: bool = False
    native_kind: Optional[int] = None   # the C kernel's number for this flux (pdeblocks._native, item 8)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        lam = channel_view(F.softplus(self.raw_contrast), s).to(s.dtype)
        if not torch.jit.is_scripting():
            return self._eager_forward(s, lam)
        return self.diffusivity(s * s, lam) * s

    @torch.jit.unused
    def _eager_forward(self, s: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        if self.fused and (torch.is_grad_enabled() or self.native_kind is not None):
            return fused_flux(s, lam, self)
        return self.diffusivity(s * s, lam) * s

    def extra_repr(self) -> str:
        return f"channels={self.raw_contrast.numel()}, L={self.sector_bound}, monotone={self.monotone}"


class PeronaMalik(Flux):
    """g(s²) = 1 / (1 + s²/λ²). Forward–backward: Φ decreases for |s| > λ. L = 1."""

    fused = True
    native_kind = 0

    def diffusivity(self, s2: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return 1.0 / (1.0 + s2 / (lam * lam))

    @staticmethod
    def fused_slopes(g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Φ' = g(2g − 1); λ∂Φ/∂λ = 2(1 − g)·g·s."""
        return g * (2.0 * g - 1.0), 2.0 * (1.0 - g) * g


class Charbonnier(Flux):
    """g(s²) = 1 / √(1 + s²/λ²). Monotone, Φ' = (1 + s²/λ²)^{-3/2} ∈ (0, 1]. L = 1."""

    monotone = True
    slope_bound = 1.0

    fused = True
    native_kind = 1

    def diffusivity(self, s2: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(1.0 + s2 / (lam * lam))

    @staticmethod
    def fused_slopes(g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Φ' = g³; λ∂Φ/∂λ = (1 − g²)·g·s."""
        return g * g * g, (1.0 - g * g) * g


class ExpPeronaMalik(Flux):
    """g(s²) = exp(−s²/(2λ²)). Nonmonotone. L = 1."""

    def diffusivity(self, s2: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        return torch.exp(-s2 / (2.0 * lam * lam))


class Weickert(Flux):
    """g(s²) = 1 − exp(−3.31488 / (s/λ)⁸), g(0) = 1. Nonmonotone. L = 1.

    (s/λ)² is clamped to [1e-4, 1e4] before the 4th power: below, g = 1 to float precision;
    above, g ≤ 3.4e-16. This keeps values and gradients finite in float32 and bfloat16.
    Its slope Φ' ranges over about [−2.335, 1] (measured on a 1e-5 grid), so |Φ'| ≤ 2.34.
    """

    lipschitz_bound = 2.34

    def diffusivity(self, s2: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        z = (s2 / (lam * lam)).clamp(1e-4, 1e4)
        return -torch.expm1(-3.31488 / (z * z * z * z))


class ReLUFlux(Flux):
    """Φ(s) = max(s, 0), i.e. g ∈ {0, 1}. Monotone, slope ≤ 1, L = 1. Has no contrast parameter."""

    monotone = True
    slope_bound = 1.0

    def __init__(self, channels: Optional[int] = None, contrast: float = 1.0, trainable: bool = True,
                 inplace: bool = False, device=None, dtype=None):
        nn.Module.__init__(self)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return F.relu(s)

    def extra_repr(self) -> str:
        return "L=1.0, monotone=True"


def knot_interpolation(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """g at x ∈ [0, K − 1] (knot units) through knot ``values`` [n, K] (n = 1, or one row per channel of x):
    v_i + (v_{i+1} − v_i)·(x − i) on interval [i, i + 1]."""
    slopes = torch.diff(values, dim=1)                                           # [n, K − 1]
    idx, frac = knot_interval(x, values.shape[0], values.shape[1])
    return torch.take(values[:, :-1].reshape(-1), idx) + torch.take(slopes.reshape(-1), idx) * frac


def learned_flux_expression(s: torch.Tensor, values: torch.Tensor, spacing: float) -> torch.Tensor:
    """Φ(s) = g(|s̄|/h)·s̄ by torch ops (TorchScript, other devices and dtypes); see :func:`learned_flux`."""
    s_max = spacing * (values.shape[1] - 1)
    clamped = s.clamp(-s_max, s_max)
    return knot_interpolation(clamped.abs() * (1.0 / spacing), values) * clamped


# the C kernel's per-row knot sums hold at most this many knots
NATIVE_FLUX_MAX_KNOTS = 64


def _native_flux_applies(s: torch.Tensor, values: torch.Tensor) -> bool:
    """The C kernel evaluates the learned flux for CPU float32 / float64 ``s`` of shape [B, C, …] and knot values of
    its dtype, one table or one per channel, at most :data:`NATIVE_FLUX_MAX_KNOTS` knots."""
    n, knots = values.shape[0], values.shape[1]
    return (s.device.type == 'cpu' and s.dtype in (torch.float32, torch.float64) and s.dim() >= 2
            and values.device.type == 'cpu' and values.dtype == s.dtype and (n == 1 or n == s.shape[1])
            and knots <= NATIVE_FLUX_MAX_KNOTS and s.numel() > 0 and native_library() is not None)


class NativeLearnedFlux(torch.autograd.Function):
    """Φ(s) of :class:`LearnedFlux` in one pass of the C kernel (:mod:`pdeblocks._native`): bit-identical to the torch
    expression of :meth:`LearnedFlux.forward` (which takes about 13 passes over s); the backward gives ∂L/∂s and
    ∂L/∂values (knot values [n, K], summed in float64) in one more pass."""

    @staticmethod
    def _call(name: str, s: torch.Tensor, values: torch.Tensor, spacing: float):
        lib = native_library()
        n, knots = values.shape[0], values.shape[1]
        channels = s.shape[1]
        rows = s.shape[0] * channels
        inner = s.numel() // rows
        v = values[:, :-1].contiguous()
        d = torch.diff(values, dim=1).contiguous()
        params = torch.tensor([spacing * (knots - 1), 1.0 / spacing], dtype=s.dtype)   # (s_max, 1/h)
        fn = getattr(lib, f"flux_{'f32' if s.dtype == torch.float32 else 'f64'}_{name}")
        stride = knots - 1 if n > 1 else 0
        ranges = split_ranges(rows, torch.get_num_threads())
        return fn, (s.data_ptr(), v.data_ptr(), d.data_ptr(), params.data_ptr()), (channels, stride, inner, knots), \
            ranges, (v, d, params)

    @staticmethod
    def forward(ctx, s: torch.Tensor, values: torch.Tensor, spacing: float) -> torch.Tensor:
        s = s.contiguous()
        values = values.detach()
        fn, ptrs, ints, ranges, keep = NativeLearnedFlux._call('forward', s, values, spacing)
        ctx.save_for_backward(s, values)
        ctx.spacing = spacing
        return _rows_forward(fn, ptrs, ints, ranges, s)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        s, values = ctx.saved_tensors
        fn, ptrs, ints, ranges, keep = NativeLearnedFlux._call('backward', s, values, ctx.spacing)
        grad_s, grad_values = _rows_backward(fn, ptrs, ints, ranges, s, grad, list(values.shape))
        return grad_s, grad_values.to(values.dtype), None


@register_notrace_function
def learned_flux(s: torch.Tensor, values: torch.Tensor, spacing: float) -> torch.Tensor:
    """Φ(s) = g(|s̄|/h)·s̄, s̄ = clamp(s, −s_max, s_max), s_max = (K − 1)h, g piecewise linear through the knot
    ``values`` [n, K] at |s| = j·h (beyond s_max, g(s) = g(s_max)·s_max/|s| makes Φ constant, so clamping first is
    the same function). On CPU in float32 / float64 one pass of the C kernel (:class:`NativeLearnedFlux`), the
    values of :func:`learned_flux_expression` bit for bit; elsewhere that expression."""
    if _native_flux_applies(s, values):
        return NativeLearnedFlux.apply(s, values, spacing)
    return learned_flux_expression(s, values, spacing)


class LearnedFlux(Flux):
    """Free-form trainable flux Φ(s) = g(s²)·s with g ∈ [0, L] by construction.

    g is piecewise linear in |s| with knot values L·sigmoid(a_j) at |s| = j·h, j = 0…K−1,
    h = ``support``·λ₀/(K−1), and g(s) = g(s_max)·s_max/|s| beyond s_max = (K−1)h, so that Φ is
    bounded and continuous. Knots start on the Perona–Malik diffusivity with contrast λ₀. Any g of
    this form satisfies the sector condition 0 ≤ Φ(s)/s ≤ L, including nonmonotone ones.
    Its slope depends on the knots, so no Lipschitz bound is declared.
    """

    lipschitz_bound = None

    def __init__(self, channels: Optional[int] = None, contrast: float = 1.0, trainable: bool = True,
                 inplace: bool = False, device=None, dtype=None, knots: int = 16, support: float = 4.0,
                 sector_bound: float = 1.0):
        nn.Module.__init__(self)
        if contrast <= 0:
            raise ValueError(f"contrast λ must be > 0, got {contrast}")
        if knots < 2:
            raise ValueError(f"knots must be ≥ 2, got {knots}")
        if sector_bound <= 0:
            raise ValueError(f"sector_bound must be > 0, got {sector_bound}")
        self.sector_bound = float(sector_bound)
        self.knots = knots
        self.spacing = support * contrast / (knots - 1)
        n = 1 if channels is None else channels
        s = torch.arange(knots, device=device, dtype=torch.float32) * self.spacing
        g0 = (1.0 / (1.0 + (s / contrast) ** 2)).clamp(1e-4, 1 - 1e-4)
        logits = torch.log(g0) - torch.log1p(-g0)
        if dtype is not None:
            logits = logits.to(dtype)
        self.knot_logits = nn.Parameter(logits.repeat(n, 1), requires_grad=trainable)
        self.num_channels = n

    def knot_values(self, dtype: torch.dtype) -> torch.Tensor:
        """The knot values L·sigmoid(a_j), [n, K]."""
        return self.sector_bound * torch.sigmoid(self.knot_logits).to(dtype)

    def knot_diffusivity(self, x: torch.Tensor) -> torch.Tensor:
        """g at x = |s|/h ∈ [0, K − 1] (knot units): v_i + (v_{i+1} − v_i)·(x − i) on interval [i, i + 1]."""
        return knot_interpolation(x, self.knot_values(x.dtype))

    def diffusivity_values(self, s: torch.Tensor) -> torch.Tensor:
        """g evaluated at |s| (per channel), in [0, L]; beyond s_max, g(s_max)·s_max/|s|."""
        last = float(self.knots - 1)
        x = s.abs() * (1.0 / self.spacing)
        g = self.knot_diffusivity(x.clamp(max=last))
        return torch.where(x > last, g * (last / x.clamp_min(last)), g)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """Φ(s) = g(|s̄|)·s̄ with s̄ = clamp(s, −s_max, s_max) (:func:`learned_flux`)."""
        values = self.knot_values(s.dtype)
        if not torch.jit.is_scripting():
            return learned_flux(s, values, self.spacing)
        return learned_flux_expression(s, values, self.spacing)

    def extra_repr(self) -> str:
        return f"channels={self.knot_logits.shape[0]}, knots={self.knots}, L={self.sector_bound}"


FLUXES: Dict[str, Type[nn.Module]] = {
    'perona_malik': PeronaMalik,
    'charbonnier': Charbonnier,
    'exp_perona_malik': ExpPeronaMalik,
    'weickert': Weickert,
    'relu': ReLUFlux,
    'learned': LearnedFlux,
}


def create_flux(name: str, channels: Optional[int] = None, **kwargs) -> nn.Module:
    """Build a flux by name: one of ``FLUXES``; unknown names raise a ValueError listing them."""
    if name not in FLUXES:
        raise ValueError(f"unknown flux {name!r}; valid names: {sorted(FLUXES)}")
    return FLUXES[name](channels=channels, **kwargs)


def flux_constants(flux: nn.Module):
    """(sector bound L, monotone, slope bound) of a flux module, raising if it declares none."""
    if not hasattr(flux, 'sector_bound'):
        raise ValueError(
            f"{type(flux).__name__} declares no sector_bound; a flux needs sector_bound, monotone and slope_bound")
    return float(flux.sector_bound), bool(getattr(flux, 'monotone', False)), getattr(flux, 'slope_bound', None)
