"""Grid transfer operators of multigrid: restriction R (a stride-2 convolution) and prolongation P = c·Rᵀ.

R is a strided convolution, (R u)_i = Σ_j W_j u_{s·i + j} (cross-correlation, as ``torch.nn.Conv``,
stride s = 2), with the boundaries of :mod:`pdeblocks.ops.conv`:

========== ======================================= ===========================================
boundary   R u (n fine samples)                    coarse grid
========== ======================================= ===========================================
neumann    valid strided conv, ⌊(n − k)/2⌋ + 1      centres at fine 1, 3, … (vertex-centred
                                                   Dirichlet grid: n = 2m + 1 → m interior points)
zeros      zero padding, ⌊(n − 1)/2⌋ + 1             centres at fine 0, 2, …
circular   periodic padding, n/2 (n even)          centres at fine 0, 2, …
reflect    mirror padding, ⌊(n − 1)/2⌋ + 1           centres at fine 0, 2, …
========== ======================================= ===========================================

Rᵀ (:func:`strided_conv_adjoint`) is the exact adjoint, ⟨R u, v⟩ = ⟨u, Rᵀ v⟩: a transposed strided
convolution whose output padding restores the fine size (which the coarse size alone does not fix,
since n = 2m and 2m + 1 restrict to the same m), with the padding folded back for circular/reflect.

Full weighting is W = w ⊗ … ⊗ w with w = [1, 2, 1]/4 per axis; P = 2^d·Rᵀ is then linear
(bilinear) interpolation: each coarse value is copied to its fine point and halved onto the
neighbours. Sharing one weight for R and P (P = c·Rᵀ) is the Galerkin-consistent choice that makes
R A P symmetric whenever A is, and is what the U-net's transposed up-path does.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F

from .conv import _conv, _fold_pad, _half_widths, _pad_spec, check_boundary

__all__ = ['FULL_WEIGHTING_1D', 'check_restriction_input', 'coarse_size', 'full_weighting', 'interpolation_scale',
           'prolong', 'restrict', 'strided_conv', 'strided_conv_adjoint']

FULL_WEIGHTING_1D = (0.25, 0.5, 0.25)


def full_weighting(dim: int, channels: int = 1, dtype=None, device=None) -> torch.Tensor:
    """Weight ``[C, C, 3, …, 3]`` of full weighting, w ⊗ … ⊗ w with w = [1, 2, 1]/4, per channel.

    Channels are restricted independently (the channel matrix is the identity at every tap).
    """
    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
    if channels < 1:
        raise ValueError(f"channels must be ≥ 1, got {channels}")
    line = torch.tensor(FULL_WEIGHTING_1D, dtype=torch.float64)
    kernel = line
    for _ in range(dim - 1):
        kernel = kernel.unsqueeze(-1) * line
    weight = torch.zeros([channels, channels] + [3] * dim, dtype=torch.float64)
    for c in range(channels):
        weight[c, c] = kernel
    return weight.to(dtype=dtype or torch.get_default_dtype(), device=device)


def interpolation_scale(dim: int, stride: int = 2) -> float:
    """c in P = c·Rᵀ that makes P = c·Rᵀ interpolate when R is full weighting: c = stride^d."""
    return float(stride ** dim)


def coarse_size(n: int, kernel_size: int, boundary: str, stride: int = 2) -> int:
    """Length of R u for a fine length n (see the module table)."""
    if boundary == 'neumann':
        return (n - kernel_size) // stride + 1
    half = (kernel_size - 1) // 2
    return (n + 2 * half - kernel_size) // stride + 1


def check_restriction_input(u: torch.Tensor, weight: torch.Tensor, boundary: str, stride: int = 2) -> torch.Tensor:
    """Raise a ValueError naming what was expected if ``u`` cannot be restricted by ``weight``."""
    check_boundary(boundary)
    dim = weight.dim() - 2
    if stride < 1:
        raise ValueError(f"stride must be ≥ 1, got {stride}")
    if u.dim() != dim + 2:
        raise ValueError(f"expected a {dim + 2}D tensor [batch, channels, {dim} spatial dims], got shape {list(u.shape)}")
    if u.shape[1] != weight.shape[1]:
        raise ValueError(f"expected {weight.shape[1]} input channels, got {u.shape[1]} (shape {list(u.shape)})")
    for i in range(dim):
        k = weight.shape[2 + i]
        n = u.shape[2 + i]
        if boundary != 'neumann' and k % 2 == 0:
            raise ValueError(f"boundary {boundary!r} needs an odd kernel size, got {k}")
        need = k if boundary == 'neumann' else (k if boundary == 'reflect' else 1)
        if n < need:
            raise ValueError(f"spatial size {n} (axis {2 + i}) is too small to restrict with kernel size {k} "
                             f"and boundary {boundary!r}: need at least {need}")
        if boundary == 'circular' and n % stride != 0:
            raise ValueError(f"boundary 'circular' needs spatial sizes divisible by the stride {stride}, "
                             f"got {n} (axis {2 + i})")
    return u


def _strided_transpose(v: torch.Tensor, weight: torch.Tensor, stride: int, padding: List[int],
                       output_padding: List[int]) -> torch.Tensor:
    dim = weight.dim() - 2
    if dim == 1:
        return F.conv_transpose1d(v, weight, None, stride, padding, output_padding)
    if dim == 2:
        return F.conv_transpose2d(v, weight, None, stride, padding, output_padding)
    if dim == 3:
        return F.conv_transpose3d(v, weight, None, stride, padding, output_padding)
    raise ValueError(f"expected a 1D, 2D or 3D kernel, got weight shape {list(weight.shape)}")


def strided_conv(u: torch.Tensor, weight: torch.Tensor, boundary: str = 'neumann', stride: int = 2,
                 bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """R u (+ b): strided convolution (cross-correlation) with the given boundary; see the module table. ``bias`` as
    in :func:`~pdeblocks.ops.conv.conv`."""
    dim = weight.dim() - 2
    if boundary == 'neumann':
        return _conv(u, weight, [0] * dim, bias, stride)
    half = _half_widths(weight)
    if boundary == 'zeros':
        return _conv(u, weight, half, bias, stride)
    if boundary == 'circular' or boundary == 'reflect':
        return _conv(F.pad(u, _pad_spec(half), mode=boundary), weight, [0] * dim, bias, stride)
    raise ValueError("boundary must be one of ('neumann', 'zeros', 'circular', 'reflect'), got '" + boundary + "'")


def strided_conv_adjoint(v: torch.Tensor, weight: torch.Tensor, size: List[int], boundary: str = 'neumann',
                         stride: int = 2) -> torch.Tensor:
    """Rᵀ v, the exact adjoint of :func:`strided_conv`; ``size`` is the fine spatial size of R's input.

    ``v`` must have the coarse size that R produces from ``size`` (checked: ValueError otherwise).
    """
    dim = weight.dim() - 2
    if len(size) != dim:
        raise ValueError(f"size needs {dim} entries for a {dim}D kernel, got {list(size)}")
    half = _half_widths(weight) if boundary != 'neumann' else [0] * dim
    padded: List[int] = []
    output_padding: List[int] = []
    for i in range(dim):
        k = weight.shape[2 + i]
        m = coarse_size(size[i], k, boundary, stride)
        if v.shape[2 + i] != m:
            raise ValueError(f"coarse size {v.shape[2 + i]} (axis {2 + i}) does not match the fine size {size[i]}: "
                             f"R maps {size[i]} samples to {m}")
        n = size[i] + 2 * half[i]
        padded.append(n)
        output_padding.append(n - ((m - 1) * stride + k))
    if boundary == 'neumann':
        return _strided_transpose(v, weight, stride, [0] * dim, output_padding)
    if boundary == 'zeros':
        return _strided_transpose(v, weight, stride, half, output_padding)
    if boundary == 'circular' or boundary == 'reflect':
        return _fold_pad(_strided_transpose(v, weight, stride, [0] * dim, output_padding), half, boundary)
    raise ValueError("boundary must be one of ('neumann', 'zeros', 'circular', 'reflect'), got '" + boundary + "'")


def restrict(u: torch.Tensor, weight: torch.Tensor, boundary: str = 'neumann', stride: int = 2) -> torch.Tensor:
    """Restriction R u to the coarse grid (a validated :func:`strided_conv`)."""
    check_restriction_input(u, weight, boundary, stride)
    return strided_conv(u, weight, boundary, stride)


def prolong(v: torch.Tensor, weight: torch.Tensor, size: List[int], boundary: str = 'neumann',
            scale: float = 2.0, stride: int = 2) -> torch.Tensor:
    """Prolongation P v = c·Rᵀ v to a fine grid of spatial ``size`` (c = ``scale``; 2^d interpolates
    for full weighting, see :func:`interpolation_scale`)."""
    return scale * strided_conv_adjoint(v, weight, size, boundary, stride)
