"""Exact symmetric tridiagonal solves, batched and differentiable: the implicit 1D diffusion step in O(n).

A symmetric tridiagonal M ∈ ℝⁿˣⁿ is given by its diagonal ``diag`` [..., n] and its off-diagonal ``off``
[..., n − 1] (M_{i,i+1} = M_{i+1,i} = off_i). :func:`solve_tridiagonal` returns x = M⁻¹ d: on CPU in float32 /
float64 by the Thomas algorithm in C (:func:`thomas`, one pass down and one up per row), elsewhere by **cyclic
reduction**: at each level the odd-indexed equations (0-based) eliminate their even neighbours,

    α_i = −a_i / b_{i−1},  γ_i = −c_i / b_{i+1},
    a'_i = α_i a_{i−1},  b'_i = b_i + α_i c_{i−1} + γ_i a_{i+1},  c'_i = γ_i c_{i+1},
    d'_i = d_i + α_i d_{i−1} + γ_i d_{i+1}

(a the sub-, c the super-diagonal), which halves the system; after ⌈log₂ n⌉ levels one unknown is left, and the
even unknowns follow back up, x_i = (d_i − a_i x_{i−1} − c_i x_{i+1}) / b_i. Every level is a handful of sliced
tensor operations over the whole batch (no Python loop over the samples), O(n) work in all. A level of odd length
m keeps (m − 1)/2 equations; an even one is first extended by the identity row x_m = 0 (decoupled: c_{m−1} = 0).
Cyclic reduction is Gaussian elimination on the odd–even permuted system PMPᵀ without pivoting, so it is
backward stable for symmetric positive definite (and for diagonally dominant) M, the case of
:func:`implicit_diffusion_step`.

Gradient (:class:`TridiagonalSolve`): with x = M⁻¹d and the incoming gradient x̄, one more solve with the same
symmetric matrix, λ = M⁻ᵀx̄ = M⁻¹x̄, gives

    d̄ = λ,   diag̅_i = −λ_i x_i,   off̅_i = −(λ_i x_{i+1} + λ_{i+1} x_i),

the symmetric parts of −λxᵀ (∂M/∂off_i touches both off-diagonal entries).

The implicit (lagged-diffusivity) diffusion step on a 1D signal, with D the (n − 1) × n forward difference
((Du)_i = u_{i+1} − u_i, no flux across the ends) and edge diffusivities w ≥ 0,

    (I + τ Dᵀ diag(w) D) u⁺ = u,    i.e. diag_i = 1 + τ(w_{i−1} + w_i) (w_{−1} = w_{n−1} = 0),  off_i = −τ w_i,

is stable for every τ ≥ 0 (:func:`implicit_diffusion_step`): M = I + τDᵀWD is symmetric with eigenvalues ≥ 1, so
‖u⁺‖₂ ≤ ‖u‖₂; M is an M-matrix (off-diagonal ≤ 0, M1 = 1), so M⁻¹ ≥ 0 entrywise with rows summing to 1: every u⁺_i
is a convex combination of the u_j, min u ≤ u⁺ ≤ max u (the discrete max–min principle; Weickert's semi-implicit
scheme), and the mean is kept (1ᵀM = 1ᵀ). In floating point these hold to about eps·(1 + 4τ max w) (the condition
number of M): once τ·w·eps approaches 1 the identity drowns in the diagonal's rounding (a dense LU fares no better),
so callers bound τ·w (:class:`~pdeblocks.layers.tails.ImplicitTail1D`: τ ≤ 10⁶, w ≤ 1, in float64).
"""
from typing import List, Optional, Tuple

import torch

from .._native import native_library, run_ranges, split_ranges

__all__ = ['solve_tridiagonal', 'TridiagonalSolve', 'diffusion_system', 'implicit_diffusion_step',
           'cyclic_reduction', 'thomas']


def _check(diag: torch.Tensor, off: torch.Tensor, rhs: torch.Tensor) -> None:
    """ValueErrors for shapes that do not describe M x = d with M symmetric tridiagonal."""
    for name, t in (('diag', diag), ('off', off), ('rhs', rhs)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 1:
            raise ValueError(f"{name} must have a last axis of samples, got a 0-d tensor")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    n = diag.shape[-1]
    if n < 1:
        raise ValueError(f"expected at least one unknown, got diag of shape {tuple(diag.shape)}")
    if rhs.shape != diag.shape:
        raise ValueError(f"rhs must have diag's shape {tuple(diag.shape)}, got {tuple(rhs.shape)}")
    expected = tuple(diag.shape[:-1]) + (n - 1,)
    if tuple(off.shape) != expected:
        raise ValueError(f"off (the off-diagonal) must have shape {expected} for diag of shape "
                         f"{tuple(diag.shape)}, got {tuple(off.shape)}")


def cyclic_reduction(diag: torch.Tensor, off: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """x = M⁻¹ rhs for symmetric tridiagonal M (``diag`` [..., n], ``off`` [..., n − 1]) by cyclic reduction
    (module docstring); plain tensor operations, differentiable by autograd (:func:`solve_tridiagonal` has the
    cheaper adjoint gradient). No checks.

    The reduced systems are Schur complements of a symmetric M, so symmetric too: only the diagonal b and the
    super-diagonal c are carried (a_i = c_{i−1}). With e = even and o = odd rows (0-based), α_j = −c^e_j / b^e_j,
    γ_j = −c^o_j / b^e_{j+1}: b'_j = b^o_j + α_j c^e_j + γ_j c^o_j, c'_j = γ_j c^e_{j+1},
    d'_j = d^o_j + α_j d^e_j + γ_j d^e_{j+1}; back up, x^e_j = (d^e_j − c^o_{j−1} x^o_{j−1} − c^e_j x^o_j) / b^e_j.
    """
    b, c, d = diag, off, rhs           # c_i = M_{i,i+1}, i < m − 1
    levels: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]] = []
    while b.shape[-1] > 1:
        m = b.shape[-1]
        if m % 2 == 0:                 # the identity row x_m = 0 (decoupled) makes the length odd
            b = torch.cat([b, torch.ones_like(b[..., :1])], -1)
            c = torch.cat([c, torch.zeros_like(c[..., :1])], -1)
            d = torch.cat([d, torch.zeros_like(d[..., :1])], -1)
        inv_be = 1.0 / b[..., 0::2]
        ce, co = c[..., 0::2], c[..., 1::2]                 # p and p − 1 entries (c has m − 1, m odd)
        de = d[..., 0::2]
        alpha = -ce * inv_be[..., :-1]
        gamma = -co * inv_be[..., 1:]
        levels.append((inv_be, ce, co, de, m))
        b = b[..., 1::2] + alpha * ce + gamma * co
        c = gamma[..., :-1] * ce[..., 1:]
        d = d[..., 1::2] + alpha * de[..., :-1] + gamma * de[..., 1:]
    x = d / b
    for inv_be, ce, co, de, m in reversed(levels):
        # x^e_j = (d^e_j − c^o_{j−1} x^o_{j−1} − c^e_j x^o_j) / b^e_j, the missing neighbours at both ends zero
        left = torch.cat([torch.zeros_like(x[..., :1]), co * x], -1)
        right = torch.cat([ce * x, torch.zeros_like(x[..., :1])], -1)
        even = (de - left - right) * inv_be
        # interleave: even_0, odd_0, even_1, …, odd_{p−2}, even_{p−1}; then drop the padding row
        x = torch.cat([torch.stack([even[..., :-1], x], -1).flatten(-2), even[..., -1:]], -1)[..., :m]
    return x


def thomas(diag: torch.Tensor, off: torch.Tensor, rhs: torch.Tensor) -> Optional[torch.Tensor]:
    """x = M⁻¹ rhs by the Thomas algorithm (Gaussian elimination in natural order, O(n) per row, no pivoting: stable
    for symmetric positive definite or diagonally dominant M) in the C kernel of :mod:`pdeblocks._native`,
    rows split over torch's threads; None where it does not apply (not CPU float32 / float64, or no compiler). It
    equals :func:`cyclic_reduction` up to rounding (another elimination order). A row is a chain of dependent
    divisions, so the kernel runs one row per vector lane (8 in float64 with AVX-512), the same operations per row:
    32 × 4160 float64, one thread, 0.20 ms against 0.94 ms row by row (2.6 ms by cyclic reduction).
    No checks."""
    lib = native_library()
    if (lib is None or rhs.device.type != 'cpu' or rhs.dtype not in (torch.float32, torch.float64)
            or diag.dtype != rhs.dtype or off.dtype != rhs.dtype):
        return None
    n = rhs.shape[-1]
    shape = torch.broadcast_shapes(diag.shape, rhs.shape)
    b = diag.expand(shape).contiguous()
    e = off.expand(shape[:-1] + (n - 1,)).contiguous()
    d = rhs.expand(shape).contiguous()
    x = torch.empty(shape, dtype=rhs.dtype)
    rows = x.numel() // n if n else 0
    if rows == 0:
        return x
    fn = lib.tridiagonal_f32_solve if rhs.dtype == torch.float32 else lib.tridiagonal_f64_solve
    codes = run_ranges(lambda r0, r1: fn(b.data_ptr(), e.data_ptr(), None, d.data_ptr(), x.data_ptr(), n, r0, r1),
                        split_ranges(rows, torch.get_num_threads()))
    if any(codes):
        raise MemoryError(f"the tridiagonal solve could not allocate its scratch rows of {n} samples")
    return x


def _native_diffusion_step(u: torch.Tensor, weights: torch.Tensor, tau: torch.Tensor) -> Optional[torch.Tensor]:
    """(I + τ Dᵀ diag(w) D)⁻¹ u by the C kernel's Thomas solve with the matrix built on the fly from w and τ (the
    operations of :func:`diffusion_system`, so the values of ``solve_tridiagonal(*diffusion_system(w, τ), u)`` bit
    for bit, without the diagonal, the off-diagonal and the broadcast copies); None where the kernel does not apply
    (as :func:`thomas`). No gradient, no checks: ``weights`` [..., n − 1] and ``tau`` [..., 1] of u's dtype."""
    lib = native_library()
    if lib is None or u.device.type != 'cpu' or u.dtype not in (torch.float32, torch.float64) or \
            torch.broadcast_shapes(tau.shape, u.shape[:-1] + (1,)) != u.shape[:-1] + (1,):
        return None
    n = u.shape[-1]
    d = u.contiguous()
    w = weights.expand(u.shape[:-1] + (n - 1,)).contiguous()
    t = tau.expand(u.shape[:-1] + (1,)).contiguous()
    x = torch.empty(u.shape, dtype=u.dtype)
    rows = x.numel() // n
    if rows == 0:
        return x
    fn = lib.tridiagonal_f32_solve if u.dtype == torch.float32 else lib.tridiagonal_f64_solve
    codes = run_ranges(lambda r0, r1: fn(None, w.data_ptr(), t.data_ptr(), d.data_ptr(), x.data_ptr(), n, r0, r1),
                        split_ranges(rows, torch.get_num_threads()))
    if any(codes):
        raise MemoryError(f"the tridiagonal solve could not allocate its scratch rows of {n} samples")
    return x


def _solve(diag: torch.Tensor, off: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """The C kernel's Thomas solve where it applies, else cyclic reduction."""
    x = thomas(diag, off, rhs)
    return cyclic_reduction(diag, off, rhs) if x is None else x


class TridiagonalSolve(torch.autograd.Function):
    """x = M⁻¹d for symmetric tridiagonal M; backward by one more solve with M (module docstring)."""

    @staticmethod
    def forward(ctx, diag: torch.Tensor, off: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        x = _solve(diag, off, rhs)
        ctx.save_for_backward(diag, off, x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        diag, off, x = ctx.saved_tensors
        lam = _solve(diag, off, grad.contiguous())     # M symmetric: Mᵀλ = x̄ is the same solve
        g_diag = -lam * x if ctx.needs_input_grad[0] else None
        g_off = -(lam[..., :-1] * x[..., 1:] + lam[..., 1:] * x[..., :-1]) if ctx.needs_input_grad[1] else None
        return g_diag, g_off, lam if ctx.needs_input_grad[2] else None


def solve_tridiagonal(diag: torch.Tensor, off: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """x = M⁻¹ rhs, M symmetric tridiagonal with diagonal ``diag`` [..., n] and off-diagonal ``off`` [..., n − 1],
    ``rhs`` [..., n]; exact (cyclic reduction, module docstring), batched over the leading axes, differentiable in
    all three (the adjoint is one more solve). M must be nonsingular; the solve is stable for symmetric positive
    definite or diagonally dominant M. Wrong shapes are a ValueError naming the expected and the given shape."""
    _check(diag, off, rhs)
    if diag.dtype != rhs.dtype or off.dtype != rhs.dtype:
        raise ValueError(f"diag, off and rhs must share one dtype, got {diag.dtype}, {off.dtype}, {rhs.dtype}")
    return TridiagonalSolve.apply(diag, off, rhs)


def diffusion_system(weights: torch.Tensor, tau: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(diag, off) of M = I + τ Dᵀ diag(w) D for edge weights ``weights`` w [..., n − 1] and ``tau`` τ broadcastable
    to [..., 1]: diag_i = 1 + τ(w_{i−1} + w_i) (w_{−1} = w_{n−1} = 0), off_i = −τ w_i."""
    tw = tau * weights
    zero = tw.new_zeros(tw.shape[:-1] + (1,))
    return 1.0 + torch.cat([zero, tw], -1) + torch.cat([tw, zero], -1), -tw


def implicit_diffusion_step(u: torch.Tensor, weights: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """u⁺ = (I + τ Dᵀ diag(w) D)⁻¹ u: one semi-implicit (lagged-diffusivity) step of ∂ₜu = −Dᵀ(w ⊙ Du), exactly.

    ``u`` [..., n] (n ≥ 1), ``weights`` w [..., n − 1] (the diffusivity on the edges between samples, w ≥ 0: the
    caller's g(Du) ≥ 0), ``tau`` τ ≥ 0 broadcastable to [..., 1] (a number, or one per signal). For w, τ ≥ 0:
    ‖u⁺‖₂ ≤ ‖u‖₂, min u ≤ u⁺ ≤ max u and mean(u⁺) = mean(u), for every τ (module docstring); τ = 0 gives u.
    Wrong shapes are a ValueError naming the expected and the given shape.
    """
    if not isinstance(u, torch.Tensor) or u.dim() < 1 or u.shape[-1] < 1:
        raise ValueError(f"u must be a tensor [..., n] with n ≥ 1, got {getattr(u, 'shape', type(u).__name__)}")
    expected = tuple(u.shape[:-1]) + (u.shape[-1] - 1,)
    if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != expected:
        raise ValueError(f"weights (one per edge between neighbouring samples) must have shape {expected} for u of "
                         f"shape {tuple(u.shape)}, got {tuple(getattr(weights, 'shape', ()))}")
    tau = torch.as_tensor(tau, dtype=u.dtype, device=u.device)
    if tau.dim() > 0 and tau.shape[-1] != 1:
        raise ValueError(f"tau must be a number or broadcast as [..., 1] (one per signal), got shape {tuple(tau.shape)}")
    weights = weights.to(u.dtype)
    if not (torch.is_grad_enabled() and (u.requires_grad or weights.requires_grad or tau.requires_grad)):
        x = _native_diffusion_step(u, weights, tau)    # the same values, no matrix built (inference)
        if x is not None:
            return x
    diag, off = diffusion_system(weights, tau)
    return solve_tridiagonal(diag, off, u)
