"""PDE-G-CNN layers on the roto-translation group M₂ = ℝ² ⋊ S¹ and their ℝ² counterparts.

Smets, Portegies, Bekkers, Duits, "PDE-based group equivariant convolutional neural networks"
(JMIV 2022, arXiv:2001.09046) make every layer a solver of

    ∂ₜW = −c·W − (−Δ_G)^α W + ‖∇W‖^{2α}_{G₁} − ‖∇W‖^{2α}_{G₂}      on M₂,

split into convection (a learned left-invariant shift), diffusion (linear convolution with an
approximate heat kernel) and dilation / erosion (morphological convolutions with analytic kernels).

The modules live here; the conventions, the geometry and the functional operations they use (logarithmic
coordinates, metric, kernels, convolution, rotation, shift) in :mod:`pdeblocks.layers.m2`.
"""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import register_notrace_function  # fx: the data-dependent min-plus op and the checks are leaves

from ._morphology import max_plus_convolution_m2, min_plus_convolution_m2
from .m2 import (
    bspline,
    bspline_rotation_matrix,
    check_alpha,
    check_m2_channels,
    check_m2_input,
    check_odd,
    check_pool_window,
    check_positive,
    check_r2_input,
    fractional_morphological_kernel,
    heat_kernel,
    left_invariant_shift_m2,
    linear_convolution_m2,
    logarithmic_coordinates_m2,
    metric_norm_sq_m2,
    metric_norm_sq_r2,
    morphological_exponent,
    resolve_orientation_kernel_size,
    rotate_m2,
    spatial_max_pool_m2,
    steerable_basis,
    steerable_basis_size,
    translate_bilinear,
)

__all__ = [
    'logarithmic_coordinates_m2', 'metric_norm_sq_m2', 'metric_norm_sq_r2',
    'fractional_morphological_kernel', 'heat_kernel', 'morphological_exponent',
    'linear_convolution_m2', 'min_plus_convolution_m2', 'max_plus_convolution_m2', 'rotate_m2',
    'bspline', 'bspline_rotation_matrix', 'left_invariant_shift_m2', 'translate_bilinear',
    'steerable_basis', 'LiftM2Cartesian', 'LiftM2Steerable', 'ProjectM2', 'SpatialMaxPoolM2', 'LinearM2', 'ConvectionM2', 'DiffusionM2',
    'FractionalDilationM2', 'FractionalErosionM2', 'CDELayerM2', 'CDELayer',
    'ConvectionR2', 'DiffusionR2', 'FractionalDilationR2', 'FractionalErosionR2', 'CDELayerR2',
    'check_m2_input', 'check_m2_channels', 'check_r2_input',
]

register_notrace_function(min_plus_convolution_m2)
register_notrace_function(max_plus_convolution_m2)


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

class _LiftM2(nn.Module):
    """Lifting ℝ² → M₂ by a bank of kernels rotated to every orientation (``rotated_kernels``):

        (f ⋆ K)(p, θ_o) = Σ_{c, q} K_c(R_{θ_o}⁻¹ q) f_c(p + q),

    input [B, in_channels, H, W], output [B, out_channels, Or, H, W] (zero padding, 'same' size)."""

    in_channels: int
    out_channels: int
    orientations: int
    kernel_size: int

    def rotated_kernels(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_r2_input(x, self.in_channels)
        k = self.kernel_size
        weight = self.rotated_kernels().reshape(self.out_channels * self.orientations, self.in_channels, k, k)
        out = F.conv2d(x, weight, padding=k // 2)
        out = out.view(out.shape[0], self.out_channels, self.orientations, out.shape[2], out.shape[3])
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out


class LiftM2Cartesian(_LiftM2):
    """Lifting ℝ² → M₂ by rotated copies of learned B-spline kernels.

        (f ⋆ K)(p, θ_o) = Σ_{c, q} K_c(R_{θ_o}⁻¹ q) f_c(p + q),   K_c(u) = Σ_n w_{c,n} Bₛ(u − n),

    where n runs over the integer k×k grid and Bₛ is the tensor-product B-spline of order s.
    Input [B, in_channels, H, W], output [B, out_channels, Or, H, W] (zero padding, 'same' size).
    """

    def __init__(self, in_channels: int, out_channels: int, orientations: int, kernel_size: int = 5,
                 spline_order: int = 2, bias: bool = False, device=None, dtype=None):
        super().__init__()
        self.in_channels = check_positive('in_channels', in_channels)
        self.out_channels = check_positive('out_channels', out_channels)
        self.orientations = check_positive('orientations', orientations)
        self.kernel_size = check_odd('kernel_size', kernel_size)
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

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, orientations={self.orientations}, "
                f"kernel_size={self.kernel_size}, spline_order={self.spline_order}")


class LiftM2Steerable(_LiftM2):
    """Lifting ℝ² → M₂ with bandlimited (steerable) kernels, rotated analytically instead of resampled:

        (f ⋆ K)(p, θ_o) = Σ_{c, q} K_c(R_{θ_o}⁻¹ q) f_c(p + q),   K_c = Σ_b a_{c,b} ψ_b,

    ψ_b Gaussian rings × circular harmonics cos mφ, sin mφ, m ≤ ``max_frequency``, radially windowed
    to the disc of radius k//2 + ½ (:func:`~pdeblocks.layers.m2.steerable_basis`); K_c(R_θ⁻¹ ·) is the
    same coefficients on the basis evaluated at φ − θ, so every orientation samples one continuous
    kernel exactly (quarter turns permute the grid). ``max_frequency`` defaults to ⌈Or/2⌉ − 1, below the
    orientation grid's Nyquist limit, so the response is a band-limited function of θ.
    """

    def __init__(self, in_channels: int, out_channels: int, orientations: int, kernel_size: int = 5,
                 max_frequency: Optional[int] = None, ring_width: float = 0.6, bias: bool = False,
                 device=None, dtype=None):
        super().__init__()
        self.in_channels = check_positive('in_channels', in_channels)
        self.out_channels = check_positive('out_channels', out_channels)
        self.orientations = check_positive('orientations', orientations)
        self.kernel_size = check_odd('kernel_size', kernel_size)
        if max_frequency is None:
            max_frequency = (orientations - 1) // 2
        self.max_frequency = max_frequency
        self.ring_width = float(ring_width)
        self.basis_size = steerable_basis_size(kernel_size, max_frequency)
        dd = _factory(device, dtype)
        # [Or, nb, k, k]: a constant (not in the state dict), moved and cast with the module
        self.register_buffer('basis', steerable_basis(orientations, kernel_size, max_frequency, ring_width, **dd),
                             persistent=False)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, self.basis_size, **dd))
        self.bias = nn.Parameter(torch.zeros(out_channels, **dd)) if bias else None
        if self.weight.device.type != 'meta':
            # unit-norm basis functions: the kernel's expected norm matches kaiming_uniform on k² taps
            bound = math.sqrt(1.0 / (in_channels * self.basis_size))
            nn.init.uniform_(self.weight, -bound, bound)

    def rotated_kernels(self) -> torch.Tensor:
        """Kernels K_c(R_{θ_o}⁻¹ ·) = Σ_b a_{c,b} ψ_b(R_{θ_o}⁻¹ ·) on the grid, shape [out, Or, in, k, k]."""
        return torch.einsum('obij,cnb->conij', self.basis.to(self.weight.dtype), self.weight)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, orientations={self.orientations}, "
                f"kernel_size={self.kernel_size}, max_frequency={self.max_frequency}, ring_width={self.ring_width}")


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


class SpatialMaxPoolM2(nn.Module):
    """Spatial max pooling on M₂, the same at every orientation and channel:

        (Pf)(c, o, y, x) = max_{(i, j) ∈ N} f(c, o, s·y + i, s·x + j),   s = ``stride``,

    N the s×s window (``window='square'``) or, at s = 2, the round 12-pixel window (``'round'``: the 4×4 window
    around each 2×2 block without its corners; :func:`~pdeblocks.layers.m2.spatial_max_pool_m2`). A flat dilation
    followed by subsampling; it commutes with quarter turns (``rotate_m2``) when H and W are divisible by s.
    Input [B, C, Or, H, W], output [B, C, Or, ⌊H/s⌋, ⌊W/s⌋].
    """

    def __init__(self, stride: int = 2, window: str = 'square'):
        super().__init__()
        self.stride = check_positive('stride', stride)
        check_pool_window(stride, window)
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_m2_channels(x, 0)
        return spatial_max_pool_m2(x, self.stride, self.window)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, window={self.window!r}"


class LinearM2(nn.Module):
    """Channel mixing (Af)(c', g) = Σ_c A[c', c] f(c, g), the same at every g ∈ M₂ (equivariant)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False, device=None, dtype=None):
        super().__init__()
        self.in_channels = check_positive('in_channels', in_channels)
        self.out_channels = check_positive('out_channels', out_channels)
        dd = _factory(device, dtype)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, **dd))
        self.bias = nn.Parameter(torch.zeros(out_channels, **dd)) if bias else None
        if self.weight.device.type != 'meta':
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_m2_channels(x, self.in_channels)
        # a 1×1 conv1d over the (Or, H, W) positions: its output is contiguous (an einsum's is a permuted
        # view that costs two copies and slows the batch norm after it) and fwd + bwd is ~15% faster
        out = F.conv1d(x.reshape(x.shape[0], x.shape[1], -1), self.weight.unsqueeze(-1), self.bias)
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
        self.channels = check_positive('channels', channels)
        self.orientations = check_positive('orientations', orientations)
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
        self.channels = check_positive('channels', channels)
        self.orientations = check_positive('orientations', orientations)
        self.kernel_size = check_odd('kernel_size', kernel_size)
        self.orientation_kernel_size = resolve_orientation_kernel_size(orientation_kernel_size, kernel_size, orientations)
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
        self.alpha = check_alpha(alpha)

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
        self.iterations = check_positive('iterations', iterations)
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
        self.channels = check_positive('channels', channels)
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
        self.channels = check_positive('channels', channels)
        self.kernel_size = check_odd('kernel_size', kernel_size)
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
        self.alpha = check_alpha(alpha)

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
        self.iterations = check_positive('iterations', iterations)
        check_positive('out_channels', out_channels)
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
