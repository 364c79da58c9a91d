"""The functional half of the PDE-G-CNN layers (:mod:`pdeblocks.layers.gcnn`): argument and input checks,
geometry of the roto-translation group M₂ = ℝ² ⋊ S¹, its kernels, linear convolution, rotations and the
left-invariant shift.

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
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch.autograd.function import once_differentiable

from .._native import native_library, run_ranges, split_ranges

__all__ = [
    'logarithmic_coordinates_m2', 'metric_norm_sq_m2', 'metric_norm_sq_r2', 'fractional_morphological_kernel',
    'heat_kernel', 'morphological_exponent', 'linear_convolution_m2', 'rotate_m2', 'bspline',
    'bspline_rotation_matrix', 'steerable_frequencies', 'steerable_basis_size', 'steerable_basis',
    'left_invariant_shift_m2', 'POOL_WINDOWS', 'check_pool_window', 'spatial_max_pool_m2', 'translate_bilinear',
    'check_m2_input', 'check_m2_channels', 'check_r2_input', 'check_odd', 'check_positive', 'check_alpha',
    'resolve_orientation_kernel_size',
]

# ---------------------------------------------------------------------------------------------
# argument and input checks
# ---------------------------------------------------------------------------------------------

def check_odd(name: str, size: int) -> int:
    """``size`` if it is a positive odd int (a centred kernel), else a ValueError naming ``name``."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1 or size % 2 == 0:
        raise ValueError(f"{name} must be a positive odd int (a centred kernel), got {size!r}")
    return size


def check_positive(name: str, value: int) -> int:
    """``value`` if it is an int ≥ 1, else a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_alpha(alpha: float) -> float:
    """The fractional order α as a float if α ∈ [0.55, 1], else a ValueError."""
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.55 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be a number in [0.55, 1] (fractional order of the PDE), got {alpha!r}")
    return float(alpha)


def resolve_orientation_kernel_size(orientation_kernel_size: Optional[int], kernel_size: int, orientations: int) -> int:
    """Default kθ = the largest odd size ≤ min(kernel_size, Or); validate a given one."""
    if orientation_kernel_size is None:
        k = min(kernel_size, orientations)
        return k if k % 2 == 1 else k - 1
    check_odd('orientation_kernel_size', orientation_kernel_size)
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


# constant geometry (offsets in logarithmic coordinates, B-spline rotation matrices, cos / sin of the
# orientations) depends only on sizes, device and dtype: computed once, then reused by every forward
_GEOMETRY_CACHE: dict = {}


def _cached(build, *args):
    """``build(*args)`` once per (build, args) (outside autograd and inference mode: plain constant tensors)."""
    key = (build.__name__,) + args
    hit = _GEOMETRY_CACHE.get(key)
    if hit is None:
        with torch.inference_mode(False), torch.no_grad():
            hit = build(*args)
        _GEOMETRY_CACHE[key] = hit
    return hit


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


def _m2_offsets_sq(orientations: int, kernel_size: int, orientation_kernel_size: int,
                   device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(c₁², c₂², c₃²) of :func:`_m2_offsets`, stacked: [3, Or, kθ, k, k]."""
    c1, c2, c3 = _m2_offsets(orientations, kernel_size, orientation_kernel_size, device, dtype)
    return torch.stack([c1 ** 2, c2 ** 2, c3 ** 2])


@register_notrace_function
def metric_norm_sq_m2(metric: torch.Tensor, orientations: int, kernel_size: int,
                      orientation_kernel_size: int) -> torch.Tensor:
    """ρ̃²(g⁻¹h) = w₁c₁² + w₂c₂² + w₃c₃² with w = |metric|, ``metric`` of shape [C, 3].

    Returns [C, Or, kθ, k, k] (see :func:`_m2_offsets` for the offset layout), in metric's dtype.
    """
    gd = _geometry_dtype(metric.dtype)
    if not torch.jit.is_scripting():
        sq = _cached(_m2_offsets_sq, orientations, kernel_size, orientation_kernel_size, metric.device, gd)
    else:
        sq = _m2_offsets_sq(orientations, kernel_size, orientation_kernel_size, metric.device, gd)
    w = metric.abs().to(gd).view(-1, 3, 1, 1, 1, 1)
    rho2 = w[:, 0] * sq[0] + w[:, 1] * sq[1] + w[:, 2] * sq[2]
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
    A constant: computed once per (sizes, order, device, dtype).
    """
    dev, gd = reference.device, _geometry_dtype(reference.dtype)
    if not torch.jit.is_scripting():
        return _cached(_bspline_rotation_matrix, orientations, kernel_size, order, dev, gd)
    return _bspline_rotation_matrix(orientations, kernel_size, order, dev, gd)


def _bspline_rotation_matrix(orientations: int, kernel_size: int, order: int, dev: torch.device,
                             gd: torch.dtype) -> torch.Tensor:
    k, r = kernel_size, kernel_size // 2
    grid = torch.arange(k, device=dev, dtype=gd) - r
    py, px = grid.view(k, 1).expand(k, k).reshape(-1), grid.view(1, k).expand(k, k).reshape(-1)
    theta = torch.arange(orientations, device=dev, dtype=gd) * (2 * math.pi / orientations)
    c, s = torch.cos(theta).view(-1, 1), torch.sin(theta).view(-1, 1)
    ux = c * px + s * py  # R_θ⁻¹ p, [Or, k²]
    uy = -s * px + c * py
    bx = bspline(ux.unsqueeze(-1) - px.view(1, 1, -1), order)
    by = bspline(uy.unsqueeze(-1) - py.view(1, 1, -1), order)
    return bx * by


def steerable_frequencies(kernel_size: int, max_frequency: int) -> Tuple[Tuple[int, int], ...]:
    """The (ring j, angular frequency m) pairs of :func:`steerable_basis`: rings j = 0 … k//2, and on
    ring j the frequencies m = 0 … min(max_frequency, 2j) (ring 0: m = 0 only; a ring of radius j
    carries about 2πj samples, so m ≤ 2j stays below its sampling limit)."""
    check_odd('kernel_size', kernel_size)
    if not isinstance(max_frequency, int) or isinstance(max_frequency, bool) or max_frequency < 0:
        raise ValueError(f"max_frequency must be an int >= 0, got {max_frequency!r}")
    return tuple((j, m) for j in range(kernel_size // 2 + 1) for m in range(min(max_frequency, 2 * j) + 1))


def steerable_basis_size(kernel_size: int, max_frequency: int) -> int:
    """Number of real basis functions: one per (j, 0), two (cos, sin) per (j, m > 0)."""
    return sum(1 if m == 0 else 2 for _, m in steerable_frequencies(kernel_size, max_frequency))


def steerable_basis(orientations: int, kernel_size: int, max_frequency: int, ring_width: float = 0.6,
                    device=None, dtype=None) -> torch.Tensor:
    """Bandlimited (steerable) kernel basis rotated analytically to every orientation θ_o = 2πo/Or:

        ψ_{j,m}^{c}(p) = G_j(r) w(r) cos(m φ),   ψ_{j,m}^{s}(p) = G_j(r) w(r) sin(m φ),   p = r(cos φ, sin φ),
        G_j(r) = exp(−(r − j)² / (2σ²)),   w(r) = 1 for r ≤ R,  ½(1 + cos 2π(r − R)) for R < r < R + ½,  0 beyond,

    R = k//2, σ = ``ring_width``, (j, m) from :func:`steerable_frequencies`; the angular part is 0 at
    p = 0 for m > 0. A kernel K = Σ a_b ψ_b rotated by θ is K(R_θ⁻¹ p) = Σ a_b ψ_b(R_θ⁻¹ p): the
    radial part is unchanged and cos m(φ − θ) = cos mθ cos mφ + sin mθ sin mφ, so rotation is a phase
    shift of each (cos, sin) coefficient pair — evaluated here in closed form, with no resampling. The
    support lies in the disc of radius R + ½, which every rotation maps into the k×k stencil.

    Returns [Or, nb, k, k], every basis function scaled to unit ℓ² norm on the grid (computed in float64).
    """
    check_positive('orientations', orientations)
    if not ring_width > 0:
        raise ValueError(f"ring_width must be > 0, got {ring_width!r}")
    return _steerable_basis(orientations, kernel_size, max_frequency, float(ring_width)).to(device=device, dtype=dtype)


def _steerable_basis(orientations: int, kernel_size: int, max_frequency: int, ring_width: float) -> torch.Tensor:
    pairs = steerable_frequencies(kernel_size, max_frequency)
    k, R = kernel_size, kernel_size // 2
    # computed in float64, then cast: cos mθ at quarter turns is within 1e-16 of 0 / ±1
    grid = torch.arange(k, dtype=torch.float64) - R
    y, x = grid.view(k, 1).expand(k, k), grid.view(1, k).expand(k, k)
    r = torch.sqrt(x ** 2 + y ** 2)
    phi = torch.atan2(y, x)
    window = torch.where(r <= R, torch.ones_like(r),
                         torch.where(r < R + 0.5, 0.5 * (1 + torch.cos(2 * math.pi * (r - R))), torch.zeros_like(r)))
    theta = torch.arange(orientations, dtype=torch.float64).view(-1, 1, 1) * (2 * math.pi / orientations)
    centre = (r == 0)
    functions = []
    for j, m in pairs:
        radial = torch.exp(-(r - j) ** 2 / (2 * ring_width ** 2)) * window
        if m == 0:
            functions.append(radial.expand(orientations, k, k))
            continue
        radial = torch.where(centre, torch.zeros_like(r), radial)
        functions.append(radial * torch.cos(m * (phi - theta)))  # cos m(φ − θ_o)
        functions.append(radial * torch.sin(m * (phi - theta)))
    basis = torch.stack(functions, dim=1)  # [Or, nb, k, k]
    norm = basis[0].flatten(1).norm(dim=1).view(1, -1, 1, 1)  # rotation keeps the norm up to sampling
    return basis / norm


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
        if any(run_ranges(lambda q0, q1: fwd(*ptrs, C, Or, H, W, q0, q1), split_ranges(B * C, torch.get_num_threads()))):
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
        gx = torch.empty_like(x)  # every (b, c) block is zeroed and written by the kernel
        ranges = split_ranges(B * C, torch.get_num_threads())
        partial = torch.zeros(len(ranges), C + 2 * C * Or, dtype=torch.float64)  # per range: a, sx, sy sums
        bwd = lib.shift_f32_backward if x.dtype == torch.float32 else lib.shift_f64_backward
        ptrs = (x.data_ptr(), g.data_ptr(), gx.data_ptr(), n.data_ptr(), a.data_ptr(), sx.data_ptr(), sy.data_ptr())

        def blocks(r: int) -> int:
            row = partial[r]
            return bwd(*ptrs, row.data_ptr(), row[C:].data_ptr(), row[C + C * Or:].data_ptr(), C, Or, H, W, *ranges[r])

        if any(run_ranges(blocks, [(r,) for r in range(len(ranges))])):
            raise MemoryError('left_invariant_shift_m2: the C kernel could not allocate its buffers')
        total = partial.sum(0)
        ga = total[:C].to(a.dtype)
        gsx = total[C:C + C * Or].view(C, Or).to(sx.dtype)
        gsy = total[C + C * Or:].view(C, Or).to(sy.dtype)
        return gx, None, ga, gsx, gsy


class _NativeMaxPool(torch.autograd.Function):
    """C evaluation of max pooling with stride 2 over the last two dims of [P, H, W] planes (``kernel``: ``'pool2'``,
    the 2×2 window, the values and winners of ``F.max_pool2d(x, 2, 2)``; ``'poolround'``, the round 12-pixel window
    of :func:`spatial_max_pool_m2`): the winner stored as one byte, the gradient added at the winner."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: str) -> torch.Tensor:
        lib = native_library()
        P, H, W = x.shape
        x = x.contiguous()
        out = torch.empty(P, H // 2, W // 2, dtype=x.dtype)
        idx = torch.empty(P, H // 2, W // 2, dtype=torch.int8)
        fwd = getattr(lib, f"{kernel}_{'f32' if x.dtype == torch.float32 else 'f64'}_forward")
        ptrs = (x.data_ptr(), out.data_ptr(), idx.data_ptr())
        if any(run_ranges(lambda p0, p1: fwd(*ptrs, H, W, p0, p1), split_ranges(P, torch.get_num_threads()))):
            raise MemoryError(f'spatial_max_pool_m2: the C {kernel} kernel could not allocate its buffer')
        ctx.save_for_backward(idx)
        ctx.size, ctx.kernel = (H, W), kernel
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        lib = native_library()
        (idx,) = ctx.saved_tensors
        H, W = ctx.size
        P = idx.shape[0]
        g = grad_out.contiguous()
        gx = torch.empty(P, H, W, dtype=g.dtype)  # zeroed by the kernel
        bwd = getattr(lib, f"{ctx.kernel}_{'f32' if g.dtype == torch.float32 else 'f64'}_backward")
        ptrs = (g.data_ptr(), idx.data_ptr(), gx.data_ptr())
        run_ranges(lambda p0, p1: bwd(*ptrs, H, W, p0, p1), split_ranges(P, torch.get_num_threads()))
        return gx, None


POOL_WINDOWS = ('square', 'round')


def check_pool_window(stride: int, window: str) -> None:
    """ValueError unless ``window`` is one of :data:`POOL_WINDOWS` and, for ``'round'``, ``stride`` is 2 (scriptable:
    no conversions in the messages)."""
    if window != 'square' and window != 'round':
        raise ValueError("window must be 'square' or 'round', got '" + window + "'")
    if window == 'round' and stride != 2:
        raise ValueError(f"the round window pools with stride 2, got stride {stride}")


@register_notrace_function
def spatial_max_pool_m2(x: torch.Tensor, stride: int = 2, window: str = 'square') -> torch.Tensor:
    """(Pf)(c, o, y, x) = max_{(i, j) ∈ N} f(c, o, s·y + i, s·x + j) on [B, C, Or, H, W] (output [B, C, Or, ⌊H/s⌋,
    ⌊W/s⌋]), s = ``stride``, with the window N of ``window``:

    * ``'square'``: 0 ≤ i, j < s, the values and gradients of ``F.max_pool2d(·, s, s)`` on every (c, o) plane
      (the gradient goes to the first maximum of a window in row-major order);
    * ``'round'`` (s = 2 only): the 4×4 window −1 ≤ i, j ≤ 2 around each 2×2 block without its four corners
      (12 pixels, the union of the centred 4×2 and 2×4 windows; pixels outside the image never win): nearly
      isotropic, so rotations other than quarter turns change what it measures less than the square window does.

    Both are symmetric about the block's centre, so they commute with quarter turns (``rotate_m2``) for even H, W.
    For s = 2 on CPU in float32 / float64 one C kernel (:mod:`pdeblocks._native`), else ``max_pool2d``."""
    B, C, Or, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    check_pool_window(stride, window)
    if H < stride or W < stride:
        raise ValueError(f"spatial max pooling with stride {stride} needs H, W >= {stride}, got shape {list(x.shape)}")
    if not torch.jit.is_scripting():
        if (stride == 2 and x.device.type == 'cpu' and x.dtype in (torch.float32, torch.float64)
                and native_library() is not None):
            out = _NativeMaxPool.apply(x.reshape(B * C * Or, H, W), 'pool2' if window == 'square' else 'poolround')
            return out.view(B, C, Or, H // 2, W // 2)
    y = x.reshape(B, C * Or, H, W)
    if window == 'round':
        out = torch.maximum(F.max_pool2d(y, (4, 2), 2, (1, 0)), F.max_pool2d(y, (2, 4), 2, (0, 1)))
    else:
        out = F.max_pool2d(y, stride, stride)
    return out.view(B, C, Or, out.shape[2], out.shape[3])


def _orientation_cos_sin(orientations: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[[cos θ_o], [sin θ_o]] of θ_o = 2πo/Or, shape [2, 1, Or]."""
    theta = torch.arange(orientations, device=device, dtype=dtype) * (2 * math.pi / orientations)
    return torch.stack([torch.cos(theta), torch.sin(theta)]).view(2, 1, orientations)


@register_notrace_function
def left_invariant_shift_m2(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(f ∘ R_{g₀})(p, θ) = f(p + R_θ(x₀, y₀), θ + θ₀) per channel, g₀ = ``shift[c]`` = (x₀, y₀, θ₀).

    Trilinear: linear and periodic in θ, bilinear in (x, y), zero outside the image. x: [B, C, Or, H, W].
    On CPU in float32 / float64 one fused C kernel (see :mod:`pdeblocks._native`), else index_select + lerp +
    grid_sample; the same values up to rounding.
    """
    B, C, Or, H, W = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    # θ: f(θ_o + θ₀) = (1 − a) f(o + n) + a f(o + n + 1), s = θ₀·Or/2π = n + a
    s = shift[:, 2] * (Or / (2 * math.pi))
    n = torch.floor(s)
    # (x, y): per (c, o) shift R_{θ_o}(x₀, y₀)
    gd = _geometry_dtype(x.dtype)
    if not torch.jit.is_scripting():
        cos_sin = _cached(_orientation_cos_sin, Or, x.device, gd)
    else:
        cos_sin = _orientation_cos_sin(Or, x.device, gd)
    cos_o, sin_o = cos_sin[0], cos_sin[1]
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
