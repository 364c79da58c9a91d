"""Finite-difference stencils as convolution weights, for fixed or initial K.

The m-th order forward difference (Δᵐu)_i = Σ_j (−1)^{m−j} C(m, j) u_{i+j} has m + 1 taps; with
``boundary='neumann'`` (a valid convolution) the 1D first difference is exactly the (n−1)×n matrix D
of the finite-difference scheme ∂ₜu = −Dᵀ Φ(D u), and m = 2 gives fourth-order diffusion.
"""
import math
from typing import List

import torch


def forward_difference(order: int) -> List[float]:
    """Coefficients of the m-th forward difference: (−1)^{m−j} C(m, j), j = 0…m."""
    if order < 0:
        raise ValueError(f"difference order must be ≥ 0, got {order}")
    return [float((-1) ** (order - j) * math.comb(order, j)) for j in range(order + 1)]


def difference_stencil(order: int = 1, dim: int = 1, channels: int = 1, spacing: float = 1.0,
                       centred: bool = False, dtype=None, device=None) -> torch.Tensor:
    """Weight ``[dim·channels, channels, k, ..., k]`` of the m-th forward difference along each axis.

    Output channel ``a·channels + c`` is Δᵐ along spatial axis ``a`` of input channel ``c``, divided
    by hᵐ (``spacing`` h). k = m + 1; with ``centred=True`` an even k gets one leading zero tap so
    the stencil is odd-sized (as the padded boundaries need).
    """
    if dim not in (1, 2, 3):
        raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
    if channels < 1:
        raise ValueError(f"channels must be ≥ 1, got {channels}")
    if spacing <= 0:
        raise ValueError(f"spacing must be > 0, got {spacing}")
    taps = forward_difference(order)
    if centred and len(taps) % 2 == 0:
        taps = [0.0] + taps
    k = len(taps)
    line = torch.tensor(taps, dtype=torch.float64) / spacing ** order
    weight = torch.zeros([dim * channels, channels] + [k] * dim, dtype=torch.float64)
    centre = (k - 1) // 2
    for a in range(dim):
        for c in range(channels):
            index: List[object] = [a * channels + c, c] + [centre] * dim
            index[2 + a] = slice(None)
            weight[tuple(index)] = line
    return weight.to(dtype=dtype or torch.get_default_dtype(), device=device)


def first_difference(u: torch.Tensor) -> torch.Tensor:
    """D u along the last axis, (Du)_i = u_{i+1} − u_i: the (n−1)×n forward difference.

    Equal to ``conv(u, difference_stencil(1), 'neumann')`` for ``[B, 1, n]`` signals (bit for bit), for
    any leading shape. Slices instead of a convolution: D then Dᵀ in float64 on one CPU thread took
    3.5× less time than ``conv1d`` for 32 signals of length 256 and 16× less for 512 (``conv1d`` wins
    only for a single short signal); the iterative baselines apply it tens of thousands of times.
    """
    return u[..., 1:] - u[..., :-1]


def first_difference_adjoint(p: torch.Tensor) -> torch.Tensor:
    """Dᵀ p for :func:`first_difference`: (Dᵀp)_i = p_{i−1} − p_i with p_{−1} = p_{n−1} = 0 (zero flux).

    Equal to ``conv_adjoint(p, difference_stencil(1), 'neumann')`` for ``[B, 1, n − 1]`` inputs.
    """
    z = p.new_zeros(p.shape[:-1] + (1,))
    return torch.cat([z, p], -1) - torch.cat([p, z], -1)
