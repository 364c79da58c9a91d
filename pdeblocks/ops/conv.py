"""Convolution operators K and their exact adjoints Kᵀ for 1D, 2D and 3D signals.

A weight of shape ``[H, C, k_1, ..., k_d]`` defines a linear map K from C-channel to H-channel
signals. The boundary condition decides how K treats the signal's ends:

========== ================================================= =======================================
boundary   K u                                               Kᵀ v
========== ================================================= =======================================
neumann    valid convolution, output n - k + 1               full transposed convolution, output n
zeros      zero padding (Dirichlet), output n                transposed convolution, same padding
circular   periodic padding, output n                        full transposed conv, pads folded back
reflect    mirror padding (no edge repeat), output n         full transposed conv, mirrors folded back
========== ================================================= =======================================

``neumann`` is the finite-difference discretisation with zero boundary flux: with the forward
difference stencil ``[-1, 1]`` K is the (n-1)×n matrix D, and KᵀΦ(Ku) vanishes across the ends.

Every Kᵀ here is the true adjoint, ⟨Ku, v⟩ = ⟨u, Kᵀv⟩, for every boundary, which the tests check
in float64. All functions are TorchScript-scriptable; shape checks live in :func:`check_signal`.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F

BOUNDARIES = ('neumann', 'zeros', 'circular', 'reflect')


def check_boundary(boundary: str) -> str:
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    return boundary


def check_kernel_size(kernel_size: List[int], boundary: str) -> List[int]:
    """Validate kernel sizes for a boundary: padded boundaries need odd (centred) kernels.

    ``'neumann'`` (a valid convolution) also accepts even sizes, since the forward difference
    ``[-1, 1]`` of the finite-difference scheme has two taps.
    """
    check_boundary(boundary)
    for k in kernel_size:
        if k < 1:
            raise ValueError(f"kernel size must be positive, got {tuple(kernel_size)}")
        if boundary != 'neumann' and k % 2 == 0:
            raise ValueError(
                f"boundary {boundary!r} needs an odd kernel size (a centred stencil), got {tuple(kernel_size)}; "
                f"even sizes are only valid with boundary='neumann'")
    return kernel_size


def min_signal_size(kernel_size: int, boundary: str) -> int:
    """Smallest signal length a kernel of this size accepts for the boundary.

    neumann: n ≥ k (at least one difference). reflect: n ≥ k + 1, so that each sample is mirrored
    at most once per axis (this is what makes the reflect bound of :mod:`pdeblocks.ops.norms`
    valid). zeros and circular: n ≥ (k - 1) / 2 padding samples, at least 1.
    """
    if boundary == 'neumann':
        return kernel_size
    if boundary == 'reflect':
        return kernel_size + 1
    return max(1, (kernel_size - 1) // 2)


def check_signal(u: torch.Tensor, weight: torch.Tensor, boundary: str) -> torch.Tensor:
    """Raise a ValueError naming what was expected if ``u`` cannot be fed to K; return ``u``."""
    dim = weight.dim() - 2
    if u.dim() != dim + 2:
        raise ValueError(
            f"expected a {dim + 2}D tensor [batch, channels, {dim} spatial dims] for a {dim}D operator, "
            f"got shape {list(u.shape)}")
    if u.shape[1] != weight.shape[1]:
        raise ValueError(f"expected {weight.shape[1]} input channels, got {u.shape[1]} (shape {list(u.shape)})")
    if not (u.is_floating_point() or u.is_complex()):
        raise ValueError(f"expected a floating point tensor, got dtype {u.dtype}")
    if u.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch, got shape {list(u.shape)}")
    for i in range(dim):
        k = weight.shape[2 + i]
        n = u.shape[2 + i]
        need = min_signal_size(k, boundary)
        if n < need:
            raise ValueError(
                f"spatial size {n} (axis {2 + i}) is too small for kernel size {k} with boundary "
                f"'{boundary}': need at least {need}")
    return u


def _conv(u: torch.Tensor, weight: torch.Tensor, padding: List[int], bias: Optional[torch.Tensor] = None,
          stride: int = 1) -> torch.Tensor:
    dim = weight.dim() - 2
    if dim == 1:
        return F.conv1d(u, weight, bias, stride, padding)
    if dim == 2:
        return F.conv2d(u, weight, bias, stride, padding)
    if dim == 3:
        return F.conv3d(u, weight, bias, stride, padding)
    raise ValueError(f"expected a 1D, 2D or 3D kernel, got weight shape {list(weight.shape)}")


def _conv_transpose(v: torch.Tensor, weight: torch.Tensor, padding: List[int]) -> torch.Tensor:
    dim = weight.dim() - 2
    if weight.shape[1] < 8:
        # Kᵀv as a convolution with the flipped kernel, the same sums: with < 8 output channels its forward is
        # 2–15× faster on CPU than conv_transpose's slow path (its fwd+bwd 1.1–1.3× slower in the cases measured);
        # one rule in every mode, so that training, eval and reversible recomputation evaluate Kᵀ identically
        full = [weight.shape[2 + i] - 1 - padding[i] for i in range(dim)]
        return _conv(v, weight.flip(list(range(2, dim + 2))).transpose(0, 1), full)
    if dim == 1:
        return F.conv_transpose1d(v, weight, None, 1, padding)
    if dim == 2:
        return F.conv_transpose2d(v, weight, None, 1, padding)
    if dim == 3:
        return F.conv_transpose3d(v, weight, None, 1, padding)
    raise ValueError(f"expected a 1D, 2D or 3D kernel, got weight shape {list(weight.shape)}")


def _half_widths(weight: torch.Tensor) -> List[int]:
    return [(k - 1) // 2 for k in weight.shape[2:]]


def _pad_spec(half: List[int]) -> List[int]:
    # F.pad wants (last_left, last_right, ..., first_left, first_right)
    spec: List[int] = []
    for p in half[::-1]:
        spec += [p, p]
    return spec


def _fold_pad(x: torch.Tensor, half: List[int], mode: str) -> torch.Tensor:
    """Adjoint of circular or reflect padding by ``half[i]`` samples on each side of axis i."""
    for i, p in enumerate(half):
        if p == 0:
            continue
        ax = 2 + i
        m = x.shape[ax] - 2 * p
        left = x.narrow(ax, 0, p)
        right = x.narrow(ax, m + p, p)
        core = x.narrow(ax, p, m).clone()
        if mode == 'circular':
            # padded[j] = u[(j - p) mod m]
            core.narrow(ax, m - p, p).add_(left)
            core.narrow(ax, 0, p).add_(right)
        else:
            # reflect: left pad holds u[p], ..., u[1]; right pad holds u[m-2], ..., u[m-1-p]
            core.narrow(ax, 1, p).add_(left.flip([ax]))
            core.narrow(ax, m - 1 - p, p).add_(right.flip([ax]))
        x = core
    return x


def conv(u: torch.Tensor, weight: torch.Tensor, boundary: str = 'neumann', bias: Optional[torch.Tensor] = None
         ) -> torch.Tensor:
    """K u (+ b): convolution (cross-correlation, as ``torch.nn.Conv``) with the given boundary; ``bias`` [H], one
    per output channel, is added in the same call (one pass over the output fewer than adding it after)."""
    if boundary == 'neumann':
        return _conv(u, weight, [0] * (weight.dim() - 2), bias)
    half = _half_widths(weight)
    if boundary == 'zeros':
        return _conv(u, weight, half, bias)
    if boundary == 'circular' or boundary == 'reflect':
        return _conv(F.pad(u, _pad_spec(half), mode=boundary), weight, [0] * len(half), bias)
    raise ValueError("boundary must be one of ('neumann', 'zeros', 'circular', 'reflect'), got '" + boundary + "'")


def conv_adjoint(v: torch.Tensor, weight: torch.Tensor, boundary: str = 'neumann') -> torch.Tensor:
    """Kᵀ v, the exact adjoint of :func:`conv` for the same weight and boundary.

    The output has the spatial size of K's input, which every boundary determines from ``v``.
    """
    if boundary == 'neumann':
        return _conv_transpose(v, weight, [0] * (weight.dim() - 2))
    half = _half_widths(weight)
    if boundary == 'zeros':
        return _conv_transpose(v, weight, half)
    if boundary == 'circular' or boundary == 'reflect':
        return _fold_pad(_conv_transpose(v, weight, [0] * len(half)), half, boundary)
    raise ValueError("boundary must be one of ('neumann', 'zeros', 'circular', 'reflect'), got '" + boundary + "'")
