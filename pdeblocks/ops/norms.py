"""Rigorous upper bounds and measured lower bounds for the operator norm ‖K‖₂ of a convolution.

The step size of a stable block is τ ≤ 2/(L‖K‖²), so it needs a bound B ≥ ‖K‖₂ that is

* **rigorous** — never below the true norm, for any weights and any signal size, and
* **tight** — a bound B = r·‖K‖ shrinks τ by r².

:func:`norm_bound` combines two facts (see the README's "Norm bounds" section):

1. *Symbol sup.* For ``'neumann'`` (valid), ``'zeros'`` and ``'circular'`` convolutions on any
   signal size, ‖K‖₂ ≤ M = sup_ω σ_max(K̂(ω)), where K̂(ω) = Σ_j K_j e^{-i⟨ω, j⟩} is the
   H×C matrix symbol (valid and zero-padded convolutions are compressions of a circular one, and
   a circular one on n samples is block-diagonalised by the DFT on an n-grid).
2. *Off-grid sup (Bernstein–Szegő).* With r_a = (k_a - 1)/2 the half-width of the kernel on axis
   a, every real trigonometric polynomial p of degree r with |p| ≤ M satisfies
   p'² + r²p² ≤ r²M². Applied to p(ω) = Re(uᴴ e^{i⟨ω,c⟩}K̂(ω) v) for the top singular pair at the
   maximiser and walked axis by axis to the nearest point of an N-grid, this gives
   ``max_grid σ_max(K̂) ≥ M · cos(π Σ_a r_a / N)``, hence M ≤ max_grid σ_max / cos(π Σ r_a / N).
3. *Gram iteration* (Delattre, Barthélemy, Allauzen 2023) bounds σ_max at each grid frequency:
   with G₀ = K̂ᴴK̂ and G_{s+1} = G_s², σ_max² ≤ ‖G_t‖_F^{1/2^t}, decreasing to σ_max² as t grows
   (slack at most rank^{1/2^{t+1}}).

``'reflect'`` (mirror padding) is a valid convolution after the padding operator P, and
‖P‖ = √2 per axis when every sample is mirrored at most once (n ≥ k + 1), so the bound is
M·2^{d/2}. The symbol sup alone is *not* a bound there (the true norm exceeds it by 5–20%).

Cost: one FFT of the kernel and ``gram_steps`` batched products of min(H, C)² complex matrices at
each of ``N^(d-1)·(N/2+1)`` frequencies, i.e. O(N^d · min(H,C)^3 · gram_steps). This is cheap for
1D kernels and for up to ~128 channels in 2D, and dominates everything else for wide 2D layers
(see ``benchmarks/bench_norm_bounds.py``).
"""
import math
from typing import List, Optional, Tuple

import torch

from .conv import check_boundary, conv, conv_adjoint


def _half_widths(kernel_size: List[int]) -> List[float]:
    return [(k - 1) / 2.0 for k in kernel_size]


def default_grid(kernel_size: List[int], interp_slack: float = 1.1) -> int:
    """Smallest grid N whose Bernstein–Szegő factor 1/cos(π Σ r_a / N) is at most ``interp_slack``."""
    if interp_slack <= 1.0:
        raise ValueError(f"interp_slack must be > 1, got {interp_slack}")
    total = sum(_half_widths(kernel_size))
    if total == 0:
        return 1  # a 1×1 kernel has a constant symbol
    n = math.ceil(math.pi * total / math.acos(1.0 / interp_slack))
    return max(n, max(kernel_size))


def interpolation_factor(kernel_size: List[int], grid: int) -> float:
    """1/cos(π Σ_a r_a / N): how far the symbol sup can exceed its maximum on an N-grid."""
    angle = math.pi * sum(_half_widths(kernel_size)) / grid
    if angle >= math.pi / 2:
        raise ValueError(
            f"grid {grid} is too coarse for kernel size {tuple(kernel_size)}: need grid > "
            f"{2 * sum(_half_widths(kernel_size)):g}")
    return 1.0 / math.cos(angle)


def frobenius_norm(matrices: torch.Tensor) -> torch.Tensor:
    """‖A‖_F of each matrix in a batch ``[..., m, n]``; a complex batch through its real view: the same
    value as ``torch.linalg.matrix_norm`` up to rounding, without its slow complex reduction on a CPU."""
    if matrices.is_complex():
        return torch.linalg.vector_norm(torch.view_as_real(matrices), dim=(-3, -2, -1))
    return torch.linalg.vector_norm(matrices, dim=(-2, -1))


def gram_spectral_bound(matrices: torch.Tensor, gram_steps: int) -> torch.Tensor:
    """Upper bound on σ_max of each matrix in a batch ``[..., m, n]`` by Gram iteration.

    G₀ = AᴴA (or AAᴴ, the smaller), G_{s+1} = G_s² rescaled by its Frobenius norm, with the scale
    carried in log form: σ_max(A)² ≤ ‖G₀^{2^t}‖_F^{1/2^t}. Never below the true value.
    """
    a = matrices
    if a.shape[-1] <= a.shape[-2]:
        g = a.transpose(-2, -1).conj() @ a
    else:
        g = a @ a.transpose(-2, -1).conj()
    log_scale = torch.zeros(g.shape[:-2], dtype=g.real.dtype, device=g.device)
    for _ in range(gram_steps):
        c = frobenius_norm(g).clamp_min(1e-30)
        g = g / c.unsqueeze(-1).unsqueeze(-1)
        log_scale = 2.0 * (log_scale + c.log())
        g = g @ g
    log_lambda = (log_scale + frobenius_norm(g).clamp_min(1e-30).log()) / float(2 ** gram_steps)
    return (0.5 * log_lambda).exp()


def symbol_gram_bounds(weight: torch.Tensor, grid: int, gram_steps: int) -> torch.Tensor:
    """The Gram-iteration bound on σ_max(K̂(ω)) at every frequency of the N-grid, flattened in the order
    of ``torch.fft.rfftn(·, s=[N]*d)`` (the last axis halved by conjugate symmetry), times a float
    rounding margin. Without gradient, in float32 (float64 for float64 weights); TorchScript-compatible.
    """
    with torch.no_grad():
        w = weight.detach()
        if w.dtype == torch.float64:
            margin = 1.0 + 1e-9
        else:
            w = w.float()
            margin = 1.0 + 1e-3  # well above the relative rounding error of the FFT and Gram products
        dims = list(range(2, w.dim()))
        symbol = torch.fft.rfftn(w, s=[grid] * len(dims), dim=dims)
        symbol = symbol.flatten(2).permute(2, 0, 1)  # [frequencies, H, C]
        return gram_spectral_bound(symbol, gram_steps) * margin


def symbol_norm_sup(weight: torch.Tensor, grid: int, gram_steps: int) -> torch.Tensor:
    """max over an N-grid of the Gram-iteration bound on σ_max(K̂(ω)) (:func:`symbol_gram_bounds`).

    Multiply by :func:`interpolation_factor` to bound the sup over all ω (and so ‖K‖₂).
    """
    return symbol_gram_bounds(weight, grid, gram_steps).amax()


def symbol_phases(kernel_size: List[int], grid: int, dtype: torch.dtype = torch.complex64,
                  device: Optional[torch.device] = None) -> torch.Tensor:
    """e^{−i⟨ω, j⟩} ``[Π k_a, F]`` over the kernel taps j (flattened) and the F frequencies ω of the N-grid
    in the flat order of :func:`symbol_gram_bounds` (the last axis halved by the real FFT), so that
    K̂(ω_f) = ``(weight.flatten(2) @ phases)[..., f]``."""
    sizes = [grid] * (len(kernel_size) - 1) + [grid // 2 + 1]
    freq = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in sizes], indexing='ij'),
                       dim=-1).reshape(-1, len(sizes))                                          # [F, d]
    taps = torch.stack(torch.meshgrid(*[torch.arange(k, dtype=torch.float64) for k in kernel_size],
                                      indexing='ij'), dim=-1).reshape(-1, len(kernel_size))     # [T, d]
    angle = (2.0 * math.pi / grid) * (taps @ freq.t())
    return torch.polar(torch.ones_like(angle), -angle).to(dtype=dtype, device=device)


def tap_norm_sum(weight: torch.Tensor) -> torch.Tensor:
    """Σ_j ‖W_j‖_F over the kernel taps: a cheap (O(weights)) but loose bound on the symbol sup.

    sup_ω ‖Σ_j W_j e^{-i⟨ω,j⟩}‖₂ ≤ Σ_j ‖W_j‖₂ ≤ Σ_j ‖W_j‖_F. Used to bound ‖K_W − K_W₀‖ for a small
    change of weights (see :class:`pdeblocks.layers.symmetric.OperatorNormBound`).
    """
    with torch.no_grad():
        w = weight.detach()
        w = w if w.dtype == torch.float64 else w.float()
        return w.flatten(2).norm(dim=(0, 1)).sum()


def norm_bound(
        weight: torch.Tensor,
        boundary: str = 'neumann',
        grid: Optional[int] = None,
        gram_steps: int = 5,
        interp_slack: float = 1.1,
) -> torch.Tensor:
    """Rigorous upper bound on ‖K‖₂ for the convolution of ``weight`` with ``boundary``, any size.

    Args:
        weight: ``[H, C, k_1, ..., k_d]``.
        boundary: ``'neumann'``, ``'zeros'``, ``'circular'`` or ``'reflect'``.
        grid: frequency grid N per axis; default: the smallest with Szegő factor ≤ ``interp_slack``.
        gram_steps: Gram iterations per frequency (slack ≤ min(H, C)^{1/2^{t+1}}, far less in practice).

    Returns a 0-dim tensor in float32 (float64 for float64 weights), detached from autograd.
    """
    if weight.dim() < 3:
        raise ValueError(f"expected a weight [H, C, k_1, ..., k_d], got shape {list(weight.shape)}")
    if gram_steps < 1:
        raise ValueError(f"gram_steps must be ≥ 1, got {gram_steps}")
    n, factor = bound_settings(list(weight.shape[2:]), boundary, grid, interp_slack)
    return symbol_norm_sup(weight, n, gram_steps) * factor


def bound_settings(kernel_size: List[int], boundary: str, grid: Optional[int] = None,
                   interp_slack: float = 1.1) -> Tuple[int, float]:
    """(grid N, factor) such that ‖K‖₂ ≤ factor · :func:`symbol_norm_sup` (weight, N, ·) for ``boundary``.

    The factor is the Szegő factor 1/cos(π Σ r_a / N), times 2^{d/2} for ``'reflect'`` (‖P‖ of the
    mirror padding, each sample mirrored at most once per axis).
    """
    check_boundary(boundary)
    n = default_grid(kernel_size, interp_slack) if grid is None else int(grid)
    if n < max(kernel_size):
        raise ValueError(f"grid {n} is smaller than the kernel {tuple(kernel_size)}")
    factor = interpolation_factor(kernel_size, n)
    if boundary == 'reflect':
        factor *= 2.0 ** (len(kernel_size) / 2.0)
    return n, factor


def power_iteration_norm(
        weight: torch.Tensor,
        boundary: str,
        size: List[int],
        iters: int = 500,
        tol: float = 1e-10,
        seed: int = 0,
        init: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Lower bound on ‖K‖₂ on signals of ``size`` by power iteration on KᵀK (float64).

    Converges to the true norm; useful to measure how tight :func:`norm_bound` is, never as the
    bound itself (any finite number of steps underestimates). ``init``: a start vector
    ``[1, C, *size]`` (e.g. :func:`symbol_plane_wave`), random if None.
    """
    w = weight.detach().double()
    if init is None:
        gen = torch.Generator(device='cpu').manual_seed(seed)
        u = torch.randn([1, w.shape[1]] + list(size), generator=gen, dtype=torch.float64).to(w.device)
    else:
        u = init.detach().double().to(w.device)
    u = u / u.norm()
    estimate = torch.zeros((), dtype=torch.float64, device=w.device)
    with torch.no_grad():
        for _ in range(iters):
            v = conv_adjoint(conv(u, w, boundary), w, boundary)
            new = v.norm().sqrt()
            u = v / v.norm().clamp_min(1e-300)
            if abs(float(new) - float(estimate)) <= tol * float(new):
                estimate = new
                break
            estimate = new
    return estimate


def symbol_plane_wave(weight: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Start vector for :func:`power_iteration_norm`: Re(v e^{i⟨ω*, x⟩}) for the frequency ω* of the
    ``size`` grid and the right singular vector v where σ_max(K̂) is largest (float64)."""
    w = weight.detach().double()
    dims = list(range(2, w.dim()))
    symbol = torch.fft.fftn(w, s=list(size), dim=dims).flatten(2).permute(2, 0, 1)  # [freq, H, C]
    _, sv, vh = torch.linalg.svd(symbol)
    best = int(sv[:, 0].argmax())
    v = vh[best, 0].conj()  # right singular vector, [C]
    index = list(torch.unravel_index(torch.tensor(best), tuple(size)))
    phase = torch.zeros(size, dtype=torch.float64)
    for a, n in enumerate(size):
        coord = torch.arange(n, dtype=torch.float64).reshape([-1 if b == a else 1 for b in range(len(size))])
        phase = phase + 2 * math.pi * float(index[a]) * coord / n
    wave = torch.exp(1j * phase)  # conv is a correlation: K̂ uses e^{-iωj}, inputs e^{+iωx}
    return (v.reshape([-1] + [1] * len(size)) * wave).real.unsqueeze(0)
