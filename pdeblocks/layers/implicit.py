"""The implicit (semi-implicit) diffusion step as a recurrent block, stable for every τ > 0.

One step of ∂ₜu = −Kᵀ Φ(K u) with the lagged diffusivity G = g(K u⁰) = Φ(K u⁰)/(K u⁰) ∈ [0, L]:

    (I + τ Kᵀ G K) u = u⁰,

solved by a recurrence with shared weights that feeds the input u⁰ into every iteration (Alt et
al.'s recurrent network). M = I + τ A, A = KᵀGK, has its spectrum in [1, 1 + τ L B²] (B ≥ ‖K‖₂
the rigorous bound), so the recurrence needs no knowledge of the data:

* ``solver='chebyshev'`` (default): Chebyshev semi-iteration on [1, 1 + τLB²] — the FSI-type
  momentum recurrence x_{k+1} = x_k + d_k, r_{k+1} = r_k − M d_k,
  d_{k+1} = ρ_{k+1}ρ_k d_k + (2ρ_{k+1}/δ) r_{k+1} (centre θ = (1 + κ)/2, half-width δ = (κ − 1)/2,
  ρ₀ = δ/θ, ρ_{k+1} = 1/(2θ/δ − ρ_k), d₀ = r₀/θ); error reduction ≈ ((√κ − 1)/(√κ + 1))^k,
  κ = 1 + τLB² (about 120 iterations to 1e-6 at τ = 100× the explicit limit).
* ``solver='richardson'``: the damped fixed point x ← (1 − ω)x + ω(u⁰ − τ A x), ω = 2/(2 + τLB²),
  error reduction ((κ − 1)/(κ + 1))^k.

Both start at x₀ = u⁰, so every iterate is x_k = [M⁻¹ + q_k(M)(I − M⁻¹)] u⁰ with |q_k| ≤ 1 on
[1, κ]; on each eigenvalue μ ≥ 1 the factor is ≤ 1/μ + (1 − 1/μ) = 1. Hence ‖x_k‖ ≤ ‖u⁰‖ after
*any* number of iterations, for every τ > 0, any weights and any flux with 0 ≤ Φ(s)/s ≤ L.

``outer_iterations = m > 1`` re-lags G at the latest solution (lagged-diffusivity fixed point for
the fully implicit u = u⁰ − τKᵀΦ(Ku)); each outer solve again starts at u⁰, so the bound holds.

Stopping: when max over the batch of ‖r‖/‖u⁰‖ ≤ ``tol`` (r = u⁰ − M x, the recurrence's
residual, checked each iteration; equal to the recomputed one up to rounding) or after
``max_iterations``. The residual reached is stored in ``last_residual`` (``last_iterations``:
iterations used, summed over outer iterations); if it exceeds ``tol`` the block warns once.

Gradients (``gradient=``):

* ``'unrolled'``: autograd through the iterations. Exact derivative of what was computed; memory
  grows with the number of iterations (every iterate's K x and G ⊙ K x are saved).
* ``'implicit'``: the solve runs without a graph; backward solves the adjoint system
  Mᵀ v = ∂ℓ/∂u (M is symmetric, so the same solver) and back-propagates v through one application
  of u⁰ − τKᵀG(u⁰)K u (including the dependence of G on u⁰). The adjoint solve uses the same
  ``tol`` and ``max_iterations``. Memory of one iteration; exact for the solution of the system,
  so the gradient error is of the order of the residuals of the forward and adjoint solves
  (tested against a dense solve to 1e-6). Only with ``outer_iterations=1``; not under TorchScript
  (scripted modules use the unrolled path).
"""
import math
import warnings
from typing import Any, Tuple

import torch
from timm.models import register_notrace_module
from torch import nn

from ..ops.conv import conv, conv_adjoint
from ..stability import Certificate
from .fed import LaggedDiffusion
from .registry import register_block
from .symmetric import check_input

__all__ = ['ImplicitBlock', 'IMPLICIT_SOLVERS', 'IMPLICIT_GRADIENTS']

IMPLICIT_SOLVERS = ('chebyshev', 'richardson')
IMPLICIT_GRADIENTS = ('unrolled', 'implicit')


def _inverse_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


@register_notrace_module
class ImplicitBlock(LaggedDiffusion):
    """u⁰ ↦ u solving (I + τ Kᵀ G(u⁰) K) u = u⁰ by a stable recurrence (see the module docstring).

    Args (besides those of :class:`~pdeblocks.layers.fed.LaggedDiffusion`, i.e. of
    :class:`~pdeblocks.layers.symmetric.SymmetricResidual` bias-free with ``stability='euclidean'``
    constants, except ``step_init``; keywords only):
        relative_step: initial τ as a multiple of the explicit limit 2/(L B²); any value > 0.
            τ = softplus(θ)·2/(L B²) stays positive under training.
        trainable_step: whether θ is trained.
        tol: relative residual ‖r‖/‖u⁰‖ to stop at (> 0).
        max_iterations: iteration cap per solve (≥ 1).
        solver: ``'chebyshev'`` or ``'richardson'``.
        gradient: ``'unrolled'`` or ``'implicit'``.
        outer_iterations: number of lagged-diffusivity re-linearisations (≥ 1).
    """

    __jit_ignored_attributes__ = ['last_residual', 'last_iterations', '_warned']

    def __init__(self, *args: Any, relative_step: float = 4.0, trainable_step: bool = True, tol: float = 1e-4,
                 max_iterations: int = 50, solver: str = 'chebyshev', gradient: str = 'unrolled',
                 outer_iterations: int = 1, **kwargs: Any):
        if not relative_step > 0 or not math.isfinite(relative_step):
            raise ValueError(f"relative_step (τ / explicit limit) must be a finite number > 0, got {relative_step}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"max_iterations must be an int ≥ 1, got {max_iterations!r}")
        if not isinstance(outer_iterations, int) or outer_iterations < 1:
            raise ValueError(f"outer_iterations must be an int ≥ 1, got {outer_iterations!r}")
        if solver not in IMPLICIT_SOLVERS:
            raise ValueError(f"solver must be one of {IMPLICIT_SOLVERS}, got {solver!r}")
        if gradient not in IMPLICIT_GRADIENTS:
            raise ValueError(f"gradient must be one of {IMPLICIT_GRADIENTS}, got {gradient!r}")
        if gradient == 'implicit' and outer_iterations != 1:
            raise ValueError(f"gradient='implicit' differentiates the lagged linear system and needs "
                             f"outer_iterations=1, got {outer_iterations}")
        if 'step_init' in kwargs:
            raise TypeError("ImplicitBlock takes relative_step (τ as a multiple of the explicit limit), not step_init")
        super().__init__(*args, **kwargs)
        device, dtype = self.weight.device, self.weight.dtype
        # τ = softplus(θ)·limit (unbounded above: every τ > 0 is stable here)
        self.step_param = nn.Parameter(torch.tensor(_inverse_softplus(relative_step), device=device, dtype=dtype),
                                       requires_grad=trainable_step)
        self.tol = float(tol)
        self.max_iterations = max_iterations
        self.solver = solver
        self.gradient = gradient
        self.outer_iterations = outer_iterations
        self.last_residual: float = float('nan')
        self.last_iterations: int = 0
        self._warned = False

    def step_fraction(self) -> torch.Tensor:
        """τ / explicit limit = softplus(θ) > 0 (unbounded: every τ > 0 is stable here)."""
        return nn.functional.softplus(self.step_param)

    @torch.jit.unused
    def set_step_fraction(self, fraction: float) -> None:
        """Set θ so that τ = ``fraction`` × the explicit limit (any fraction > 0)."""
        with torch.no_grad():
            self.step_param.fill_(_inverse_softplus(max(float(fraction), 1e-12)))

    def spectrum_top(self) -> torch.Tensor:
        """κ = 1 + τ L B² = 1 + 2·softplus(θ) ≥ λ_max(I + τ KᵀGK)."""
        return 1.0 + 2.0 * self.step_fraction()

    def system(self, x: torch.Tensor, g: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """M x = x + τ Kᵀ(G ⊙ K x)."""
        return x + tau * conv_adjoint(g * conv(x, self.weight, self.boundary), self.weight, self.boundary)

    def relative_residual(self, r: torch.Tensor, rhs_norm: torch.Tensor) -> torch.Tensor:
        """max over the batch of ‖r_b‖/‖u⁰_b‖."""
        return (torch.linalg.vector_norm(r.flatten(1), dim=1) / rhs_norm).amax()

    def solve(self, rhs: torch.Tensor, g: torch.Tensor, tau: torch.Tensor) -> Tuple[torch.Tensor, int, torch.Tensor]:
        """x ≈ M⁻¹ rhs from x₀ = rhs; stops on ``tol`` or ``max_iterations`` (no check on meta tensors).

        Returns (x, iterations, max_b ‖r_b‖/‖rhs_b‖ of the recurrence's residual r = rhs − M x).
        """
        top = self.spectrum_top().to(rhs.dtype)
        rhs_norm = torch.linalg.vector_norm(rhs.flatten(1), dim=1).clamp_min(1e-30)
        check = not rhs.is_meta
        x = rhs
        r = rhs - self.system(x, g, tau)
        iterations = 0
        residual = self.relative_residual(r, rhs_norm)
        if self.solver == 'chebyshev':
            centre = (top + 1.0) / 2.0
            half_width = (top - 1.0) / 2.0
            sigma = centre / half_width.clamp_min(1e-30)
            rho = 1.0 / sigma
            d = r / centre
            for _ in range(self.max_iterations):
                x = x + d
                r = r - self.system(d, g, tau)
                iterations += 1
                residual = self.relative_residual(r, rhs_norm)
                if check and float(residual.detach()) <= self.tol:
                    break
                rho_next = 1.0 / (2.0 * sigma - rho)
                d = (rho_next * rho) * d + (2.0 * rho_next / half_width.clamp_min(1e-30)) * r
                rho = rho_next
        else:
            omega = 2.0 / (1.0 + top)
            for _ in range(self.max_iterations):
                x = x + omega * r
                r = rhs - self.system(x, g, tau)
                iterations += 1
                residual = self.relative_residual(r, rhs_norm)
                if check and float(residual.detach()) <= self.tol:
                    break
        return x, iterations, residual

    def solve_lagged(self, u0: torch.Tensor, tau: torch.Tensor) -> Tuple[torch.Tensor, int, torch.Tensor]:
        """Outer lagged-diffusivity iterations; returns (u, total iterations, residual of the last solve)."""
        g = self.diffusivity_at(u0)
        u, iterations, residual = self.solve(u0, g, tau)
        for _ in range(self.outer_iterations - 1):
            g = self.diffusivity_at(u)
            u, more, residual = self.solve(u0, g, tau)
            iterations += more
        return u, iterations, residual

    @torch.jit.unused
    def record(self, residual: torch.Tensor, iterations: int, tau: torch.Tensor) -> None:
        """Store the residual reached and the iterations used; warn once if the residual misses ``tol``."""
        if residual.is_meta:
            return
        value = float(residual)
        self.last_residual = value
        self.last_iterations = iterations
        if not value <= self.tol and not self._warned:
            self._warned = True
            warnings.warn(f"ImplicitBlock: solve stopped at relative residual {value:.3g} > tol {self.tol:.3g} "
                          f"after {iterations} iterations (max_iterations={self.max_iterations}, "
                          f"κ ≤ {float(self.spectrum_top()):.4g}); raise max_iterations or tol "
                          f"(warned once per block)", RuntimeWarning, stacklevel=3)

    @torch.jit.unused
    def implicit_solution(self, u0: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """Solve without a graph; gradients by the adjoint solve Mᵀv = ∂ℓ/∂u (M symmetric)."""
        with torch.no_grad():
            u_star, iterations, residual = self.solve_lagged(u0, tau)
        self.record(residual, iterations, tau)
        # one differentiable application of the fixed-point map f(u) = u⁰ − τ Kᵀ G(u⁰) K u at u*
        g = self.diffusivity_at(u0)
        z = u0 - tau * conv_adjoint(g * conv(u_star, self.weight, self.boundary), self.weight, self.boundary)
        if not z.requires_grad:
            return u_star
        g_detached = g.detach()
        tau_detached = tau.detach()

        def adjoint(grad: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                v, _, _ = self.solve(grad, g_detached, tau_detached)
            return v

        z.register_hook(adjoint)
        return u_star + (z - z.detach())

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u0 = check_input(u, self.weight, self.boundary)
        tau = self.step_size().to(u0.dtype)
        if not torch.jit.is_scripting() and self.gradient == 'implicit' and torch.is_grad_enabled():
            out = self.implicit_solution(u0, tau)
        else:
            out, iterations, residual = self.solve_lagged(u0, tau)
            if not torch.jit.is_scripting():
                self.record(residual.detach(), iterations, tau.detach())
        return u0 + self.drop_path(out - u0)

    @torch.jit.unused
    def stability_certificate(self) -> Certificate:
        relative = float(self.step_fraction())   # τ·L·B²/2 at the certified τ, B
        return self.lagged_certificate('implicit-lagged', f'‖f(u)‖ ≤ ‖u‖ for every τ > 0 and every iterate '
                                                          f'({self.solver}, ≤ {self.max_iterations} iterations, '
                                                          f'tol {self.tol:g}; τ = {relative:.3g}× explicit limit)')

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", solver={self.solver!r}, gradient={self.gradient!r}, tol={self.tol:g}, "
                f"max_iterations={self.max_iterations}, outer_iterations={self.outer_iterations}")


register_block('implicit', ImplicitBlock)
