"""PDE-G-CNN layers on the roto-translation group M₂ = ℝ² ⋊ S¹ and their ℝ² counterparts.

Smets, Portegies, Bekkers, Duits, "PDE-based group equivariant convolutional neural networks"
(JMIV 2022, arXiv:2001.09046) make every layer a solver of

    ∂ₜW = −c·W − (−Δ_G)^α W + ‖∇W‖^{2α}_{G₁} − ‖∇W‖^{2α}_{G₂}      on M₂,

split into convection (a learned left-invariant shift), diffusion (linear convolution with an
approximate heat kernel) and dilation / erosion (morphological convolutions with analytic kernels).

Conventions. M₂ feature maps are ``[B, C, Or, H, W]``: orientation θ_o = 2πo/Or, x along W
(columns), y along H (rows); ℝ² maps are ``[B, C, H, W]``. Rotations act on (x, y) by
R_θ = [[cos θ, −sin θ], [sin θ, cos θ]]. The group product is
(p, θ)·(p', θ') = (p + R_θ p', θ + θ'). A kernel on M₂ is evaluated at g⁻¹h, so for output
orientation θ_o the spatial offset Δp is rotated by R_{θ_o}⁻¹ before the metric is applied: every
layer is then left invariant, i.e. equivariant to roto-translations. With Or divisible by 4,
``torch.rot90`` of the image equals a rotation of M₂ maps by :func:`rotate_m2` exactly.

Logarithmic coordinates of q = (x, y, θ), θ ∈ (−π, π]:
    c₁ = ( x cos(θ/2) + y sin(θ/2)) / sinc(θ/2),
    c₂ = (−x sin(θ/2) + y cos(θ/2)) / sinc(θ/2),   c₃ = θ,
and the (left-invariant, diagonal) metric estimate ρ̃²(q) = w₁c₁² + w₂c₂² + w₃c₃².
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # fx: the data-dependent min-plus op and the input checks are leaf functions
    from timm.layers import register_notrace_function
except ImportError:  # pragma: no cover - timm is a dependency, keep the layers usable without it
    def register_notrace_function(fn):
        return fn

from torch.autograd.function import once_differentiable

from ._morphology import _run_ranges, _split, max_plus_convolution_m2, min_plus_convolution_m2
from ._native import native_library

__all__ = [
    'logarithmic_coordinates_m2', 'metric_norm_sq_m2', 'metric_norm_sq_r2',
    'fractional_morphological_kernel', 'heat_kernel', 'morphological_exponent',
    'linear_convolution_m2', 'min_plus_convolution_m2', 'max_plus_convolution_m2', 'rotate_m2',
    'bspline', 'bspline_rotation_matrix', 'left_invariant_shift_m2', 'translate_bilinear', 'LiftM2Cartesian', 'ProjectM2', 'LinearM2', 'ConvectionM2', 'DiffusionM2',
    'FractionalDilationM2', 'FractionalErosionM2', 'CDELayerM2', 'CDELayer',
    'ConvectionR2', 'DiffusionR2', 'FractionalDilationR2', 'FractionalErosionR2', 'CDELayerR2',
    'check_m2_input', 'check_m2_channels', 'check_r2_input',
]

register_notrace_function(min_plus_convolution_m2)
register_notrace_function(max_plus_convolution_m2)


# ---------------------------------------------------------------------------------------------
# argument and input checks
# ---------------------------------------------------------------------------------------------

def _check_odd(name: str, size: int) -> int:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % 2 == 0:
        raise ValueError(f"{name} must be a positive odd int (a centred kernel), got {size!r}")
    return size


def _check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_alpha(alpha: float) -> float:
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.55 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a number in [0.55, 1] (fractional order of the PDE), got {alpha!r}")
    return float(alpha)


def _orientation_kernel_size(orientation_kernel_size: Optional[int], kernel_size: int, orientations: int) -> int:
    """Default kθ = the largest odd size ≤ min(kernel_size, Or); validate a given one."""
    if orientation_kernel_size is None:
        k = min(kernel_size, orientations)
        return k if k % 2 == 1 else k - 1
    _check_odd('orientation_kernel_size', orientation_kernel_size)
    if orientation_kernel_size > orientations:
        raise ValueError(
            f"orientation_kernel_size must be <= orientations ({orientations}), got {orientation_kernel_size}")
    return orientation_kernel_size


@register_notrace_function
def check_m2_input(x: torch.Tensor, channels: int, orientations: int) -> torch.Tensor:
    """Return ``x`` if it is ``[B, channels, orientations, H, W]``, else raise ValueError."""
    if x.dim() != 5:
        raise ValueError(f"expected M2 feature maps [B, C, Or, H, W] (5 dims), got {x.dim()} dims, shape {list(x.shape)}")
    if x.shape[1] != channels or x.shape[2] != orientations:
        raise ValueError(
            f"expected [B, C={channels}, Or={orientations}, H, W], got shape {list(x.shape)}")
    return x


@register_notrace_function
def check_m2_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Return ``x`` if it is ``[B, channels, Or, H, W]`` for any Or, else raise ValueError."""
    if x.dim() != 5:
        raise ValueError(f"expected M2 feature maps [B, C, Or, H, W] (5 dims), got {x.dim()} dims, shape {list(x.shape)}")
    if channels > 0 and x.shape[1] != channels:
        raise ValueError(f"expected [B, C={channels}, Or, H, W], got shape {list(x.shape)}")
    return x


@register_notrace_function
def check_r2_input(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Return ``x`` if it is ``[B, channels, H, W]``, else raise ValueError."""
    if x.dim() != 4:
        raise ValueError(f"expected R2 feature maps [B, C, H, W] (4 dims), got {x.dim()} dims, shape {list(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"expected [B, C={channels}, H, W], got shape {list(x.shape)}")
    return x


# ---------------------------------------------------------------------------------------------
# geometry: logarithmic coordinates, metric, kernels
# ---------------------------------------------------------------------------------------------

def logarithmic_coordinates_m2(
        x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logarithmic coordinates (c₁, c₂, c₃) of q = (x, y, θ) ∈ M₂, θ ∈ (−π, π]:

        c₁ = (x cos(θ/2) + y sin(θ/2)) / sinc(θ/2),  c₂ = (−x sin(θ/2) + y cos(θ/2)) / sinc(θ/2),  c₃ = θ,

    with the unnormalised sinc(t) = sin(t)/t (torch.sinc is sin(πt)/(πt)).
    """
    half = theta / 2
    s = torch.sinc(half / math.pi)
    c1 = (x * torch.cos(half) + y * torch.sin(half)) / s
    c2 = (-x * torch.sin(half) + y * torch.cos(half)) / s
    return c1, c2, theta


def _geometry_dtype(dtype: torch.dtype) -> torch.dtype:
    """Kernel geometry is computed in float64 for float64 layers and in float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _m2_offsets(orientations: int, kernel_size: int, orientation_kernel_size: int,
                device: torch.device, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logarithmic coordinates of g⁻¹h for every output orientation o and offset (d, i, j).

    h = g·… sits at (Δθ, Δy, Δx) = (d − kθ//2, i − k//2, j − k//2)·(2π/Or, 1, 1) from g = (p, θ_o),
    so g⁻¹h = (R_{θ_o}⁻¹ Δp, Δθ). Returns c₁, c₂, c₃ of shape [Or, kθ, k, k] in ``dtype``.
    """
    r, rt = kernel_size // 2, orientation_kernel_size // 2
    step = 2 * math.pi / orientations
    theta_o = torch.arange(orientations, device=device, dtype=dtype).view(-1, 1, 1, 1) * step
    d_theta = (torch.arange(orientation_kernel_size, device=device, dtype=dtype) - rt).view(1, -1, 1, 1) * step
    dy = (torch.arange(kernel_size, device=device, dtype=dtype) - r).view(1, 1, -1, 1)
    dx = (torch.arange(kernel_size, device=device, dtype=dtype) - r).view(1, 1, 1, -1)
    cos_o, sin_o = torch.cos(theta_o), torch.sin(theta_o)
    local_x = cos_o * dx + sin_o * dy  # R_{θ_o}⁻¹ Δp
    local_y = -sin_o * dx + cos_o * dy
    shape = [orientations, orientation_kernel_size, kernel_size, kernel_size]
    return logarithmic_coordinates_m2(local_x.expand(shape), local_y.expand(shape), d_theta.expand(shape))


@register_notrace_function
def metric_norm_sq_m2(metric: torch.Tensor, orientations: int, kernel_size: int,
                      orientation_kernel_size: int) -> torch.Tensor:
    """ρ̃²(g⁻¹h) = w₁c₁² + w₂c₂² + w₃c₃² with w = |metric|, ``metric`` of shape [C, 3].

    Returns [C, Or, kθ, k, k] (see :func:`_m2_offsets` for the offset layout), in metric's dtype.
    """
    gd = _geometry_dtype(metric.dtype)
    c1, c2, c3 = _m2_offsets(orientations, kernel_size, orientation_kernel_size, metric.device, gd)
    w = metric.abs().to(gd).view(-1, 3, 1, 1, 1, 1)
    rho2 = w[:, 0] * c1 ** 2 + w[:, 1] * c2 ** 2 + w[:, 2] * c3 ** 2
    return rho2.to(metric.dtype)


@register_notrace_function
def metric_norm_sq_r2(metric: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """ρ²(Δp) = w₁Δx² + w₂Δy² with w = |metric|, ``metric`` of shape [C, 2]; returns [C, 1, 1, k, k]."""
    r = kernel_size // 2
    gd = _geometry_dtype(metric.dtype)
    dy = (torch.arange(kernel_size, device=metric.device, dtype=gd) - r).view(-1, 1)
    dx = (torch.arange(kernel_size, device=metric.device, dtype=gd) - r).view(1, -1)
    w = metric.abs().to(gd).view(-1, 2, 1, 1)
    rho2 = w[:, 0] * dx ** 2 + w[:, 1] * dy ** 2
    return rho2.view(-1, 1, 1, kernel_size, kernel_size).to(metric.dtype)


def morphological_exponent(alpha: float) -> float:
    """β = 2α / (2α − 1), the exponent of the fractional dilation / erosion kernel."""
    return 2 * alpha / (2 * alpha - 1)


def fractional_morphological_kernel(rho2: torch.Tensor, alpha: float) -> torch.Tensor:
    """k = (1/β) ρ̃^β = (1/β) (ρ̃²)^{β/2} with β = 2α/(2α−1)."""
    beta = morphological_exponent(alpha)
    return rho2.pow(beta / 2) / beta


def heat_kernel(rho2: torch.Tensor) -> torch.Tensor:
    """Approximate heat kernel exp(−ρ̃²), normalised to sum 1 over its last three dims."""
    k = torch.exp(-rho2)
    return k / k.sum(dim=(-3, -2, -1), keepdim=True)


@register_notrace_function
def linear_convolution_m2(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(k * f)(c, o, y, x) = Σ_{d,i,j} f(c, o + d − rθ, y + i − r, x + j − r) · kernel[c, o, d, i, j].

    Periodic in θ, zero outside the image. ``x``: [B, C, Or, H, W]; ``kernel``: [C, Or, kθ, kh, kw].
    Implemented as the θ-neighbourhood gathered into channels followed by a grouped conv2d.
    """
    C, Or, kt, kh, kw = kernel.shape[0], kernel.shape[1], kernel.shape[2], kernel.shape[3], kernel.shape[4]
    B, H, W = x.shape[0], x.shape[3], x.shape[4]
    rt = kt // 2
    if rt > 0:
        x = torch.cat([x[:, :, Or - rt:], x, x[:, :, :rt]], dim=2)
    x = x.unfold(2, kt, 1)  # [B, C, Or, H, W, kθ]
    x = x.permute(0, 1, 2, 5, 3, 4).reshape(B, C * Or * kt, H, W)
    out = F.conv2d(x, kernel.reshape(C * Or, kt, kh, kw).to(x.dtype), padding=(kh // 2, kw // 2), groups=C * Or)
    return out.view(B, C, Or, H, W)


def rotate_m2(x: torch.Tensor, quarter_turns: int = 1) -> torch.Tensor:
    """Left action of a rotation by ``quarter_turns``·90° on M₂ maps [..., Or, H, W].

    (L_R f)(p, θ) = f(R⁻¹p, θ − 90°·quarter_turns): ``torch.rot90`` on (H, W) plus a cyclic shift of
    the orientation axis by Or·quarter_turns/4. Requires Or divisible by 4 (by 2 for half turns).
    """
    if x.dim() < 3:
        raise ValueError(f"expected [..., Or, H, W] (at least 3 dims), got shape {list(x.shape)}")
    turns = quarter_turns % 4
    Or = x.shape[-3]
    if (turns * Or) % 4 != 0:
        need = 'divisible by 4' if turns % 2 == 1 else 'even'
        raise ValueError(f"rotating by {quarter_turns} quarter turns needs an orientation count {need}, got Or={Or}")
    # torch.rot90 turns from H towards W, which is R_{−90°} in (x, y) = (column, row) coordinates
    x = torch.rot90(x, -turns, dims=(-2, -1))
    return torch.roll(x, shifts=turns * Or // 4, dims=-3)


def bspline(t: torch.Tensor, order: int) -> torch.Tensor:
    """Centred cardinal B-spline Bₙ(t) of order n ∈ {0, 1, 2, 3} (Bₙ = Bₙ₋₁ * B₀, B₀ = 1 on [−½, ½))."""
    a = t.abs()
    zero = torch.zeros_like(a)
    if order == 0:
        return torch.where((t >= -0.5) & (t < 0.5), torch.ones_like(a), zero)
    if order == 1:
        return torch.clamp(1 - a, min=0.0)
    if order == 2:
        return torch.where(a < 0.5, 0.75 - a ** 2, torch.where(a < 1.5, 0.5 * (1.5 - a) ** 2, zero))
    if order == 3:
        return torch.where(a < 1, 2.0 / 3.0 - a ** 2 + a ** 3 / 2, torch.where(a < 2, (2 - a) ** 3 / 6, zero))
    raise ValueError(f"B-spline order must be 0, 1, 2 or 3, got {order}")


@register_notrace_function
def translate_bilinear(x: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor) -> torch.Tensor:
    """out[b, n, y, x] = f[b, n](x + shift_x[n], y + shift_y[n]), bilinear, zero outside the image.

    ``x``: [B, N, H, W]; shifts in pixels, shape [N]. One grid_sample with the N maps as its batch.
    """
    N, H, W = x.shape[1], x.shape[2], x.shape[3]
    gd = _geometry_dtype(x.dtype)
    gx = torch.linspace(-1.0, 1.0, W, device=x.device, dtype=gd).view(1, 1, W).expand(N, H, W)
    gy = torch.linspace(-1.0, 1.0, H, device=x.device, dtype=gd).view(1, H, 1).expand(N, H, W)
    # align_corners=True: pixel u ↦ −1 + 2u/(n − 1)
    sx = (shift_x.to(gd) * (2.0 / max(W - 1, 1))).view(N, 1, 1)
    sy = (shift_y.to(gd) * (2.0 / max(H - 1, 1))).view(N, 1, 1)
    grid = torch.stack([gx + sx, gy + sy], dim=-1).to(x.dtype)
    out = F.grid_sample(x.transpose(0, 1), grid, mode='bilinear', padding_mode='zeros', align_corners=True)
    return out.transpose(0, 1)


@register_notrace_function
def bspline_rotation_matrix(reference: torch.Tensor, orientations: int, kernel_size: int, order: int) -> torch.Tensor:
    """A[o, p, n] = Bₛ(R_{θ_o}⁻¹p − n), θ_o = 2πo/Or, for grid points p, n of the k×k grid (row-major).

    Maps spline coefficients w (flattened k×k) to the kernel rotated by θ_o: K_o = A[o] w.
    Shape [Or, k², k²], on ``reference``'s device; float64 if it is float64, else float32.
    """
    k, r = kernel_size, kernel_size // 2
    dev, gd = reference.device, _geometry_dtype(reference.dtype)
    grid = torch.arange(k, device=dev, dtype=gd) - r
    py, px = grid.view(k, 1).expand(k, k).reshape(-1), grid.view(1, k).expand(k, k).reshape(-1)
    theta = torch.arange(orientations, device=dev, dtype=gd) * (2 * math.pi / orientations)
    c, s = torch.cos(theta).view(-1, 1), torch.sin(theta).view(-1, 1)
    ux = c * px + s * py  # R_θ⁻¹ p, [Or, k²]
    uy = -s * px + c * py
    bx = bspline(ux.unsqueeze(-1) - px.view(1, 1, -1), order)
    by = bspline(uy.unsqueeze(-1) - py.view(1, 1, -1), order)
    return bx * by


class _LeftInvariantShiftM2(torch.autograd.Function):
    """C evaluation of :func:`left_invariant_shift_m2` given θ's integer step ``n`` [C] (long), its
    fraction ``a`` [C] and the per-(c, o) pixel shifts ``sx``, ``sy`` [C, Or]; gradients for x, a, sx, sy."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, n: torch.Tensor, a: torch.Tensor, sx: torch.Tensor,
                sy: torch.Tensor) -> torch.Tensor:
        lib = native_library()
        B, C, Or, H, W = x.shape
        x = x.contiguous()
        n, a, sx, sy = n.contiguous(), a.to(x.dtype).contiguous(), sx.to(x.dtype).contiguous(), sy.to(x.dtype).contiguous()
        out = torch.empty(x.shape, dtype=x.dtype)
        fwd = lib.shift_f32_forward if x.dtype == torch.float32 else lib.shift_f64_forward
        ptrs = (x.data_ptr(), out.data_ptr(), n.data_ptr(), a.data_ptr(), sx.data_ptr(), sy.data_ptr())
        if any(_run_ranges(lambda q0, q1: fwd(*ptrs, C, Or, H, W, q0, q1), _split(B * C, torch.get_num_threads()))):
            raise MemoryError('left_invariant_shift_m2: the C kernel could not allocate its buffer')
        ctx.save_for_backward(x, n, a, sx, sy)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        lib = native_library()
        x, n, a, sx, sy = ctx.saved_tensors
        B, C, Or, H, W = x.shape
        g = grad_out.contiguous().to(x.dtype)
        gx = torch.zeros_like(x)
        ranges = _split(B * C, torch.get_num_threads())
        partial = torch.zeros(len(ranges), C + 2 * C * Or, dtype=torch.float64)  # per range: a, sx, sy sums
        bwd = lib.shift_f32_backward if x.dtype == torch.float32 else lib.shift_f64_backward
        ptrs = (x.data_ptr(), g.data_ptr(), gx.data_ptr(), n.data_ptr(), a.data_ptr(), sx.data_ptr(), sy.data_ptr())

        def blocks(r: int) -> int:
            row = partial[r]
            return bwd(*ptrs, row.data_ptr(), row[C:].data_ptr(), row[C + C * Or:].data_ptr(), C, Or, H, W, *ranges[r])

        if any(_run_ranges(blocks, [(r,) for r in range(len(ranges))])):
            raise MemoryError('left_invariant_shift_m2: the C kernel could not allocate its buffers')
        total = partial.sum(0)
        ga = total[:C].to(a.dtype)
        gsx = total[C:C + C * Or].view(C, Or).to(sx.dtype)
        gsy = total[C + C * Or:].view(C, Or).to(sy.dtype)
        return gx, None, ga, gsx, gsy


@register_notrace_function
def left_invariant_shift_m2(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(f ∘ R_{g₀})(p, θ) = f(p + R_θ(x₀, y₀), θ + θ₀) per channel, g₀ = ``shift[c]`` = (x₀, y₀, θ₀).

    Trilinear: linear and periodic in θ, bilinear in (x, y), zero outside the image. x: [B, C, Or, H, W].
    On CPU in float32 / float64 one fused C kernel (see :mod:`._native`), else index_select + lerp +
    grid_sample; the same values up to rounding.
    """
    B, C, Or, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    # θ: f(θ_o + θ₀) = (1 − a) f(o + n) + a f(o + n + 1), s = θ₀·Or/2π = n + a
    s = shift[:, 2] * (Or / (2 * math.pi))
    n = torch.floor(s)
    # (x, y): per (c, o) shift R_{θ_o}(x₀, y₀)
    gd = _geometry_dtype(x.dtype)
    theta = torch.arange(Or, device=x.device, dtype=gd) * (2 * math.pi / Or)
    cos_o, sin_o = torch.cos(theta).view(1, Or), torch.sin(theta).view(1, Or)
    x0 = shift[:, 0].to(gd).view(C, 1)
    y0 = shift[:, 1].to(gd).view(C, 1)
    sx = cos_o * x0 - sin_o * y0
    sy = sin_o * x0 + cos_o * y0
    if not torch.jit.is_scripting():
        if x.device.type == 'cpu' and x.dtype in (torch.float32, torch.float64) and native_library() is not None:
            return _LeftInvariantShiftM2.apply(x, n.long(), s - n, sx, sy)
    a = (s - n).to(x.dtype).view(1, C, 1, 1, 1)
    o = torch.arange(Or, device=x.device).view(1, Or)
    i0 = torch.remainder(o + n.long().view(C, 1), Or)
    i1 = torch.remainder(i0 + 1, Or)
    # planes (c, i) of the [B, C·Or, H, W] view: index_select (its backward is one index_add)
    planes = x.reshape(B, C * Or, H, W)
    base = torch.arange(C, device=x.device).view(C, 1) * Or
    f0 = planes.index_select(1, (base + i0).reshape(-1)).view(B, C, Or, H, W)
    f1 = planes.index_select(1, (base + i1).reshape(-1)).view(B, C, Or, H, W)
    x = torch.lerp(f0, f1, a)
    out = translate_bilinear(x.reshape(B, C * Or, H, W), sx.reshape(C * Or), sy.reshape(C * Or))
    return out.reshape(B, C, Or, H, W)


def _factory(device, dtype) -> dict:
    return {'device': device, 'dtype': dtype}


def _metric_parameter(channels: int, dims: int, device, dtype) -> nn.Parameter:
    """Per-channel metric weights w (used as |w|), initialised uniformly in [0.5, 1.5]."""
    p = nn.Parameter(torch.empty(channels, dims, device=device, dtype=dtype))
    if p.device.type != 'meta':
        nn.init.uniform_(p, 0.5, 1.5)
    return p


# ---------------------------------------------------------------------------------------------
# lifting and projection
# ---------------------------------------------------------------------------------------------

class LiftM2Cartesian(nn.Module):
    """Lifting ℝ² → M₂ by rotated copies of learned B-spline kernels.

        (f ⋆ K)(p, θ_o) = Σ_{c, q} K_c(R_{θ_o}⁻¹ q) f_c(p + q),   K_c(u) = Σ_n w_{c,n} Bₛ(u − n),

    where n runs over the integer k×k grid and Bₛ is the tensor-product B-spline of order s.
    Input [B, in_channels, H, W], output [B, out_channels, Or, H, W] (zero padding, 'same' size).
    """

    def __init__(self, in_channels: int, out_channels: int, orientations: int, kernel_size: int = 5,
                 spline_order: int = 2, bias: bool = False, device=None, dtype=None):
        super().__init__()
        self.in_channels = _check_positive('in_channels', in_channels)
        self.out_channels = _check_positive('out_channels', out_channels)
        self.orientations = _check_positive('orientations', orientations)
        self.kernel_size = _check_odd('kernel_size', kernel_size)
        if spline_order not in (0, 1, 2, 3):
            raise ValueError(f"spline_order must be 0, 1, 2 or 3, got {spline_order!r}")
        self.spline_order = spline_order
        dd = _factory(device, dtype)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, **dd))
        self.bias = nn.Parameter(torch.zeros(out_channels, **dd)) if bias else None
        if self.weight.device.type != 'meta':
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def interpolation_matrix(self) -> torch.Tensor:
        """A[o, p, n] = Bₛ(R_{θ_o}⁻¹p − n) over grid points p, n (each k² of them); shape [Or, k², k²]."""
        return bspline_rotation_matrix(self.weight, self.orientations, self.kernel_size, self.spline_order)

    def rotated_kernels(self) -> torch.Tensor:
        """Kernels K_c(R_{θ_o}⁻¹ ·) on the grid, shape [out, Or, in, k, k]."""
        k = self.kernel_size
        A = self.interpolation_matrix().to(self.weight.dtype)
        w = self.weight.reshape(self.out_channels, self.in_channels, k * k)
        return torch.einsum('opn,cin->coip', A, w).reshape(self.out_channels, self.orientations, self.in_channels, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_r2_input(x, self.in_channels)
        k = self.kernel_size
        weight = self.rotated_kernels().reshape(self.out_channels * self.orientations, self.in_channels, k, k)
        out = F.conv2d(x, weight, padding=k // 2)
        out = out.view(out.shape[0], self.out_channels, self.orientations, out.shape[2], out.shape[3])
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, orientations={self.orientations}, "
                f"kernel_size={self.kernel_size}, spline_order={self.spline_order}")


class ProjectM2(nn.Module):
    """Projection M₂ → ℝ²: (Pf)(p) = max_θ f(p, θ) (``mode='max'``) or Σ_θ f(p, θ) (``mode='sum'``)."""

    def __init__(self, mode: str = 'max'):
        super().__init__()
        if mode not in ('max', 'sum'):
            raise ValueError(f"mode must be 'max' or 'sum', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_m2_channels(x, 0)
        if self.mode == 'max':
            return x.amax(dim=2)
        return x.sum(dim=2)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class LinearM2(nn.Module):
    """Channel mixing (Af)(c', g) = Σ_c A[c', c] f(c, g), the same at every g ∈ M₂ (equivariant)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False, device=None, dtype=None):
        super().__init__()
        self.in_channels = _check_positive('in_channels', in_channels)
        self.out_channels = _check_positive('out_channels', out_channels)
        dd = _factory(device, dtype)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, **dd))
        self.bias = nn.Parameter(torch.zeros(out_channels, **dd)) if bias else None
        if self.weight.device.type != 'meta':
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_m2_channels(x, self.in_channels)
        # one GEMM over all (b, Or, H, W) positions (a 1×1×1 conv3d, or a batched matmul per b, is slower on CPU)
        out = torch.einsum('dc,bcn->bdn', self.weight, x.reshape(x.shape[0], x.shape[1], -1))
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1)
        return out.view(x.shape[0], self.out_channels, x.shape[2], x.shape[3], x.shape[4])

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, bias={self.bias is not None}"


# ---------------------------------------------------------------------------------------------
# the PDE units on M₂
# ---------------------------------------------------------------------------------------------

class ConvectionM2(nn.Module):
    """Convection ∂ₜW = −c·W for one unit of time: a per-channel left-invariant shift g₀ = (x₀, y₀, θ₀),

        (f ∘ R_{g₀})(p, θ) = f((p, θ)·g₀) = f(p + R_θ(x₀, y₀), θ + θ₀),

    resampled with trilinear interpolation (linear and periodic in θ, bilinear in (x, y), zero outside).
    ``shift`` holds (x₀, y₀) in pixels and θ₀ in radians, shape [C, 3].
    """

    def __init__(self, channels: int, orientations: int, device=None, dtype=None):
        super().__init__()
        self.channels = _check_positive('channels', channels)
        self.orientations = _check_positive('orientations', orientations)
        self.shift = nn.Parameter(torch.empty(channels, 3, device=device, dtype=dtype))
        if self.shift.device.type != 'meta':
            with torch.no_grad():
                self.shift[:, :2].uniform_(-1.0, 1.0)
                self.shift[:, 2].uniform_(-math.pi / orientations, math.pi / orientations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_m2_input(x, self.channels, self.orientations)
        return left_invariant_shift_m2(x, self.shift)

    def extra_repr(self) -> str:
        return f"{self.channels}, orientations={self.orientations}"


class _MetricKernelM2(nn.Module):
    """Shared parts of the metric-kernel units: per-channel metric w ∈ ℝ³ and the ρ̃² grid."""

    def __init__(self, channels: int, orientations: int, kernel_size: int, orientation_kernel_size: Optional[int],
                 device=None, dtype=None):
        super().__init__()
        self.channels = _check_positive('channels', channels)
        self.orientations = _check_positive('orientations', orientations)
        self.kernel_size = _check_odd('kernel_size', kernel_size)
        self.orientation_kernel_size = _orientation_kernel_size(orientation_kernel_size, kernel_size, orientations)
        self.metric = _metric_parameter(channels, 3, device, dtype)

    def rho2(self) -> torch.Tensor:
        """ρ̃²(g⁻¹h) on the kernel grid, [C, Or, kθ, k, k]."""
        return metric_norm_sq_m2(self.metric, self.orientations, self.kernel_size, self.orientation_kernel_size)

    def extra_repr(self) -> str:
        return (f"{self.channels}, orientations={self.orientations}, kernel_size={self.kernel_size}, "
                f"orientation_kernel_size={self.orientation_kernel_size}")


class DiffusionM2(_MetricKernelM2):
    """Diffusion ∂ₜW = Δ_G W: linear convolution with the approximate heat kernel

        (k * f)(g) = Σ_h k(g⁻¹h) f(h),   k = exp(−ρ̃²) / Σ exp(−ρ̃²),   ρ̃² = w₁c₁² + w₂c₂² + w₃c₃².
    """

    def __init__(self, channels: int, orientations: int, kernel_size: int = 5,
                 orientation_kernel_size: Optional[int] = None, device=None, dtype=None):
        super().__init__(channels, orientations, kernel_size, orientation_kernel_size, device=device, dtype=dtype)

    def kernel(self) -> torch.Tensor:
        return heat_kernel(self.rho2())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_m2_input(x, self.channels, self.orientations)
        return linear_convolution_m2(x, self.kernel())


class FractionalErosionM2(_MetricKernelM2):
    """Erosion ∂ₜW = −‖∇W‖^{2α}_G: morphological convolution with the fractional kernel

        (k □ f)(g) = min_h f(h) + k(h⁻¹g),   k = (1/β) ρ̃^β,   β = 2α/(2α − 1),   α ∈ [0.55, 1].
    """

    def __init__(self, channels: int, orientations: int, kernel_size: int = 5,
                 orientation_kernel_size: Optional[int] = None, alpha: float = 0.65, device=None, dtype=None):
        super().__init__(channels, orientations, kernel_size, orientation_kernel_size, device=device, dtype=dtype)
        self.alpha = _check_alpha(alpha)

    def kernel(self) -> torch.Tensor:
        return fractional_morphological_kernel(self.rho2(), self.alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_m2_input(x, self.channels, self.orientations)
        return min_plus_convolution_m2(x, self.kernel())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha={self.alpha}"


class FractionalDilationM2(FractionalErosionM2):
    """Dilation ∂ₜW = +‖∇W‖^{2α}_G: max_h f(h) − k(h⁻¹g) = −(k □ −f)(g), k = (1/β) ρ̃^β, β = 2α/(2α − 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_m2_input(x, self.channels, self.orientations)
        return max_plus_convolution_m2(x, self.kernel())


class CDELayerM2(nn.Module):
    """One PDE layer: (erosion ∘ dilation ∘ convection)^iterations, then channel mixing and batch norm.

        W ← BN(A · (ε ∘ δ ∘ 𝒞)ⁿ W),   ε = k₂ □ ·,  δ = −(k₁ □ −·),  𝒞 = shift by g₀,

    approximating ∂ₜW = −c·W + ‖∇W‖^{2α}_{G₁} − ‖∇W‖^{2α}_{G₂} (the same units repeated n times,
    i.e. n time steps of one learned PDE). Input [B, in, Or, H, W], output [B, out, Or, H, W].
    """

    def __init__(self, in_channels: int, out_channels: int, orientations: int, kernel_size: int = 5,
                 orientation_kernel_size: Optional[int] = None, iterations: int = 1, alpha: float = 0.65,
                 norm: bool = True, device=None, dtype=None):
        super().__init__()
        self.iterations = _check_positive('iterations', iterations)
        dd = _factory(device, dtype)
        self.convection = ConvectionM2(in_channels, orientations, **dd)
        self.dilation = FractionalDilationM2(in_channels, orientations, kernel_size, orientation_kernel_size, alpha, **dd)
        self.erosion = FractionalErosionM2(in_channels, orientations, kernel_size, orientation_kernel_size, alpha, **dd)
        self.linear = LinearM2(in_channels, out_channels, **dd)
        self.norm = nn.BatchNorm3d(out_channels, **dd) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.iterations):
            x = self.erosion(self.dilation(self.convection(x)))
        return self.norm(self.linear(x))


CDELayer = CDELayerM2


# ---------------------------------------------------------------------------------------------
# ℝ² counterparts ([B, C, H, W]), the same operators with a single orientation
# ---------------------------------------------------------------------------------------------

class ConvectionR2(nn.Module):
    """Convection on ℝ²: per-channel shift (f ∘ τ)(p) = f(p + p₀), bilinear, zero outside. ``shift``: [C, 2] (x₀, y₀)."""

    def __init__(self, channels: int, device=None, dtype=None):
        super().__init__()
        self.channels = _check_positive('channels', channels)
        self.shift = nn.Parameter(torch.empty(channels, 2, device=device, dtype=dtype))
        if self.shift.device.type != 'meta':
            nn.init.uniform_(self.shift, -1.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_r2_input(x, self.channels)
        return translate_bilinear(x, self.shift[:, 0], self.shift[:, 1])

    def extra_repr(self) -> str:
        return f"{self.channels}"


class _MetricKernelR2(nn.Module):
    """Per-channel diagonal metric ρ² = w₁Δx² + w₂Δy² on a k×k grid."""

    def __init__(self, channels: int, kernel_size: int, device=None, dtype=None):
        super().__init__()
        self.channels = _check_positive('channels', channels)
        self.kernel_size = _check_odd('kernel_size', kernel_size)
        self.metric = _metric_parameter(channels, 2, device, dtype)

    def rho2(self) -> torch.Tensor:
        """ρ² on the kernel grid, [C, 1, 1, k, k] (the M₂ layout with a single orientation)."""
        return metric_norm_sq_r2(self.metric, self.kernel_size)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"


class DiffusionR2(_MetricKernelR2):
    """Diffusion on ℝ²: (k * f)(p) = Σ_q k(q) f(p + q), k = exp(−ρ²)/Σ exp(−ρ²)."""

    def __init__(self, channels: int, kernel_size: int = 5, device=None, dtype=None):
        super().__init__(channels, kernel_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_r2_input(x, self.channels)
        k = heat_kernel(self.rho2()).reshape(self.channels, 1, self.kernel_size, self.kernel_size)
        return F.conv2d(x, k.to(x.dtype), padding=self.kernel_size // 2, groups=self.channels)


class FractionalErosionR2(_MetricKernelR2):
    """Erosion on ℝ²: (k □ f)(p) = min_q f(p + q) + k(q), k = (1/β) ρ^β, β = 2α/(2α − 1)."""

    def __init__(self, channels: int, kernel_size: int = 5, alpha: float = 0.65, device=None, dtype=None):
        super().__init__(channels, kernel_size, device=device, dtype=dtype)
        self.alpha = _check_alpha(alpha)

    def kernel(self) -> torch.Tensor:
        return fractional_morphological_kernel(self.rho2(), self.alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_r2_input(x, self.channels)
        return min_plus_convolution_m2(x.unsqueeze(2), self.kernel()).squeeze(2)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha={self.alpha}"


class FractionalDilationR2(FractionalErosionR2):
    """Dilation on ℝ²: max_q f(p + q) − k(q) = −(k □ −f)(p), k = (1/β) ρ^β."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_r2_input(x, self.channels)
        return max_plus_convolution_m2(x.unsqueeze(2), self.kernel()).squeeze(2)


class CDELayerR2(nn.Module):
    """ℝ² PDE layer: BN(A · (ε ∘ δ ∘ 𝒞)ⁿ f) with A a 1×1 convolution; [B, in, H, W] → [B, out, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, iterations: int = 1,
                 alpha: float = 0.65, norm: bool = True, device=None, dtype=None):
        super().__init__()
        self.iterations = _check_positive('iterations', iterations)
        _check_positive('out_channels', out_channels)
        dd = _factory(device, dtype)
        self.convection = ConvectionR2(in_channels, **dd)
        self.dilation = FractionalDilationR2(in_channels, kernel_size, alpha, **dd)
        self.erosion = FractionalErosionR2(in_channels, kernel_size, alpha, **dd)
        self.linear = nn.Conv2d(in_channels, out_channels, 1, bias=False, **dd)
        self.norm = nn.BatchNorm2d(out_channels, **dd) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.iterations):
            x = self.erosion(self.dilation(self.convection(x)))
        return self.norm(self.linear(x))
