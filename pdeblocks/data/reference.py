"""Reference solvers of 1D nonlinear diffusion ∂ₜu = −Dᵀ Φ(D u), homogeneous Neumann boundaries.

D is the m-th forward difference (m = 1: Perona–Malik type, second order; m = 2: fourth order),
built from :func:`pdeblocks.ops.stencils.difference_stencil` and applied with
:func:`pdeblocks.ops.conv.conv` (``boundary='neumann'``: D is the (n−m)×n matrix, zero flux
across the ends). Signals are ``[batch, length]`` or ``[batch, 1, length]`` tensors; solvers work
in the tensor's dtype (use float64 for references).

Schemes, all stopping exactly at time T:

* :func:`explicit` — u ← u − τ DᵀΦ(Du) with τ = T / ⌈T / τ_stable⌉, τ_stable = 2/(L‖D‖²)·safety
  with ‖D‖² ≤ 4ᵐ (Euclidean stability; for m = 1 and τ ≤ 1/(2L) also the max–min principle).
* :func:`explicit_steps` — exactly n explicit steps τ = T/n (stable or not: the comparison with
  the same number of operator applications).
* :func:`fed` — M cycles of fast explicit diffusion with n steps each (step sizes from
  :func:`pdeblocks.ops.schedules.fed_step_sizes`), the flux re-evaluated at every step.
* :func:`implicit` — lagged semi-implicit (I + τ Dᵀ G(u^k) D) u^{k+1} = u^k, G = diag g((Du^k)²),
  a banded solve per signal (unconditionally stable for g ≥ 0).
* :func:`fine_reference` — classical RK4 with a small step (default τ = 0.02); its own error is
  estimated by :func:`reference_error` as ‖u_τ − u_{τ/2}‖/‖u_{τ/2}‖ · 16/15 (Richardson, order 4),
  which is below 1e-8 for the settings used by pdeblocks (see tests/test_data.py).
"""
import math
from typing import Callable, Optional

import numpy as np
import torch

from ..layers.flux import create_flux
from ..ops.conv import conv, conv_adjoint
from ..ops.schedules import fed_step_sizes, fed_tau_max
from ..ops.stencils import difference_stencil

FluxFn = Callable[[torch.Tensor], torch.Tensor]


def make_flux(name: str = 'perona_malik', contrast: float = 0.1) -> FluxFn:
    """A fixed (non-trainable) flux Φ from :mod:`pdeblocks.layers.flux` with contrast λ, float64-safe."""
    module = create_flux(name, None, contrast=contrast)
    module.requires_grad_(False)
    module.double()

    def flux(s: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(s.double()).to(s.dtype)
    flux.sector_bound = float(module.sector_bound)  # type: ignore[attr-defined]
    flux.diffusivity = lambda s2: module.diffusivity(s2.double(), module.contrast.double()).to(s2.dtype)  # type: ignore[attr-defined]
    return flux


def _as3d(u: torch.Tensor) -> torch.Tensor:
    if u.dim() == 2:
        return u[:, None, :]
    if u.dim() == 3 and u.shape[1] == 1:
        return u
    raise ValueError(f"expected signals [batch, length] or [batch, 1, length], got shape {list(u.shape)}")


def diffusion_operator(order: int = 1, dtype=torch.float64) -> torch.Tensor:
    """Weight of D = m-th forward difference, ``[1, 1, m + 1]``."""
    return difference_stencil(order, dim=1, channels=1, dtype=dtype)


def rhs(u: torch.Tensor, flux: FluxFn, order: int = 1) -> torch.Tensor:
    """−Dᵀ Φ(D u) for u ``[B, 1, n]``."""
    w = diffusion_operator(order, u.dtype).to(u.device)
    return -conv_adjoint(flux(conv(u, w, 'neumann')), w, 'neumann')


def stable_step(flux: FluxFn, order: int = 1, safety: float = 1.0) -> float:
    """τ_stable = safety · 2 / (L · 4ᵐ), the Euclidean-stability limit (‖D‖² ≤ 4ᵐ)."""
    return safety * 2.0 / (getattr(flux, 'sector_bound', 1.0) * 4.0 ** order)


def _restore(u3: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return u3[:, 0, :] if like.dim() == 2 else u3


def explicit_steps(f: torch.Tensor, flux: FluxFn, time: float, steps: int, order: int = 1) -> torch.Tensor:
    """Exactly ``steps`` explicit steps of size T/steps (no stability check)."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    u = _as3d(f)
    tau = time / steps
    for _ in range(steps):
        u = u + tau * rhs(u, flux, order)
    return _restore(u, f)


def explicit(f: torch.Tensor, flux: FluxFn, time: float, order: int = 1, safety: float = 0.5) -> torch.Tensor:
    """Explicit scheme with the largest step ≤ safety·τ_stable that lands on T (safety 0.5 → τ ≤ 1/(2L) for m = 1)."""
    steps = max(1, math.ceil(time / stable_step(flux, order, safety) - 1e-12))
    return explicit_steps(f, flux, time, steps, order)


def fed(f: torch.Tensor, flux: FluxFn, time: float, steps: int, cycles: int = 1, order: int = 1,
        lagged: bool = True) -> torch.Tensor:
    """``cycles`` FED cycles of ``steps`` steps reaching T: τ_max = 3T/(M (n² + n)) per cycle.

    ``lagged=True`` (Grewenig et al.'s scheme for nonlinear problems): the diffusivity
    G = g((Du)²) is frozen at the start of each cycle, so every cycle applies a fixed linear
    operator DᵀGD with ‖DᵀGD‖ ≤ 4ᵐL and is stable. ``lagged=False`` re-evaluates Φ at every step
    (same number of flux evaluations as an n-layer network, but single steps beyond the stability
    limit then act on a nonlinear operator and the cycle can be far off).
    """
    if cycles < 1:
        raise ValueError(f"cycles must be ≥ 1, got {cycles}")
    taus = fed_step_sizes(steps, fed_tau_max(time, steps, cycles))
    u = _as3d(f)
    w = diffusion_operator(order, u.dtype).to(u.device)
    for _ in range(cycles):
        if lagged:
            du = conv(u, w, 'neumann')
            g = flux(du) / torch.where(du == 0, torch.ones_like(du), du)
            g = torch.where(du == 0, flux.diffusivity(torch.zeros_like(du)), g) if hasattr(flux, 'diffusivity') else g
            for tau in taus:
                u = u - tau * conv_adjoint(g * conv(u, w, 'neumann'), w, 'neumann')
        else:
            for tau in taus:
                u = u + tau * rhs(u, flux, order)
    return _restore(u, f)


def implicit(f: torch.Tensor, flux: FluxFn, time: float, steps: int, order: int = 1) -> torch.Tensor:
    """Lagged semi-implicit scheme, ``steps`` steps of T/steps; banded solves with SciPy."""
    from scipy.linalg import solve_banded
    if not hasattr(flux, 'diffusivity'):
        raise ValueError("implicit() needs a flux with a diffusivity g (use make_flux)")
    u3 = _as3d(f).double()
    tau = time / steps
    w = diffusion_operator(order)[0, 0].numpy()  # m + 1 taps
    u = u3[:, 0, :].cpu().numpy().copy()
    n = u.shape[-1]
    m = order
    # D as a dense band: (Du)_i = Σ_j w_j u_{i+j}, i = 0…n−m−1
    for _ in range(steps):
        du = np.stack([sum(w[j] * u[b, j:n - m + j] for j in range(m + 1)) for b in range(len(u))])
        g = flux.diffusivity(torch.from_numpy(du * du)).numpy()
        for b in range(len(u)):
            # A = I + τ Dᵀ diag(g) D, bandwidth m
            ab = np.zeros((2 * m + 1, n))
            ab[m] = 1.0
            for j in range(m + 1):
                for k in range(m + 1):
                    # A[i+j, i+k] += τ g_i w_j w_k; banded storage ab[m + row − col, col]
                    ab[m + j - k, k:k + n - m] += tau * g[b] * w[j] * w[k]
            u[b] = solve_banded((m, m), ab, u[b])
    out = torch.from_numpy(u).to(dtype=f.dtype, device=f.device)[:, None, :]
    return _restore(out, f)


def rk4(f: torch.Tensor, flux: FluxFn, time: float, tau: float = 0.02, order: int = 1) -> torch.Tensor:
    """Classical Runge–Kutta 4 with steps ≤ τ landing on T."""
    steps = max(1, math.ceil(time / tau - 1e-12))
    h = time / steps
    u = _as3d(f)
    for _ in range(steps):
        k1 = rhs(u, flux, order)
        k2 = rhs(u + 0.5 * h * k1, flux, order)
        k3 = rhs(u + 0.5 * h * k2, flux, order)
        k4 = rhs(u + h * k3, flux, order)
        u = u + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    return _restore(u, f)


def fine_reference(f: torch.Tensor, flux: FluxFn, time: float, order: int = 1, tau: Optional[float] = None) -> torch.Tensor:
    """The reference solution: RK4 in float64 with τ = 0.02/4^{m−1} (see :func:`reference_error`)."""
    step = tau if tau is not None else 0.02 / 4.0 ** (order - 1)
    return rk4(f.double(), flux, time, step, order).to(f.dtype)


def reference_error(f: torch.Tensor, flux: FluxFn, time: float, order: int = 1, tau: Optional[float] = None) -> float:
    """Estimated relative L2 error of :func:`fine_reference`: Richardson with step halving (RK4, p = 4)."""
    step = tau if tau is not None else 0.02 / 4.0 ** (order - 1)
    a = rk4(f.double(), flux, time, step, order)
    b = rk4(f.double(), flux, time, step / 2, order)
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)) * 16.0 / 15.0


def relative_error(u: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-signal ‖u − ref‖₂ / ‖ref‖₂ over the last axis (any leading shape)."""
    u = u.double().reshape(u.shape[0], -1)
    ref = ref.double().reshape(ref.shape[0], -1)
    return torch.linalg.vector_norm(u - ref, dim=1) / torch.linalg.vector_norm(ref, dim=1).clamp_min(1e-300)
