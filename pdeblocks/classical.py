"""Classical solvers, in one place: reference schemes of 1D nonlinear diffusion and the tuned denoisers.

**Nonlinear diffusion** ∂ₜu = −Dᵀ Φ(D u), homogeneous Neumann boundaries. D is the m-th forward
difference (m = 1: Perona–Malik type, second order; m = 2: fourth order), built from
:func:`pdeblocks.ops.stencils.difference_stencil` and applied with :func:`pdeblocks.ops.conv.conv`
(``boundary='neumann'``: D is the (n−m)×n matrix, zero flux across the ends). Signals are
``[batch, length]`` or ``[batch, 1, length]`` tensors; solvers work in the tensor's dtype (use float64
for references). Schemes, all stopping exactly at time T:

* :func:`explicit` — u ← u − τ DᵀΦ(Du) with τ = T / ⌈T / τ_stable⌉, τ_stable = 2/(L‖D‖²)·safety
  with ‖D‖² ≤ 4ᵐ (Euclidean stability; for m = 1 and τ ≤ 1/(2L) also the max–min principle).
* :func:`explicit_steps` — exactly n explicit steps τ = T/n (stable or not: the comparison with
  the same number of operator applications).
* :func:`fed` — M cycles of fast explicit diffusion with n steps each (step sizes from
  :func:`pdeblocks.ops.schedules.fed_step_sizes`, τ_max from :func:`~pdeblocks.ops.schedules.fed_tau_max`).
* :func:`implicit` — lagged semi-implicit (I + τ Dᵀ G(u^k) D) u^{k+1} = u^k, G = diag g((Du^k)²),
  a banded solve per signal (unconditionally stable for g ≥ 0).
* :func:`fine_reference` — classical RK4 with a small step (default τ = 0.02); its own error is
  estimated by :func:`reference_error` as ‖u_τ − u_{τ/2}‖/‖u_{τ/2}‖ · 16/15 (Richardson, order 4),
  which is below 1e-8 for the settings used by pdeblocks (see tests/test_data.py).

**Denoising baselines** of signals ``[..., n]``, each tuned on the validation split (D the first
difference :func:`~pdeblocks.ops.stencils.first_difference`):

* :func:`tv_denoise` — total-variation denoising min_u ½‖u − f‖² + w‖Du‖₁, solved by accelerated
  projected gradient (FISTA) on the dual: u = f − Dᵀp, |p_i| ≤ w. The iteration stops per batch when
  every signal's duality gap P(u) − P*(p) ≤ ``tol``·n; since P is 1-strongly convex,
  ‖u − u*‖² ≤ 2·gap, so the MSE of the returned u is within 2·tol of the exact minimiser's
  neighbourhood (default tol = 1e-7: far below the test MSEs of ~1e-4).
* :func:`perona_malik_denoise` — explicit Perona–Malik diffusion (τ = 1/4) with contrast λ and
  stopping time T; :func:`perona_malik_path` yields every step.
* :func:`tune_tv`, :func:`tune_perona_malik` — grid search of w, resp. (λ, T), maximising mean
  PSNR on validation signals. The oracle and the Bayes posterior mean live with the data model
  (:func:`pdeblocks.data.oracle_segment_means`, :func:`pdeblocks.data.bayes_segment_means`).
"""
import math
import warnings
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from .data.signals import psnr
from .layers.flux import create_flux
from .ops.conv import conv, conv_adjoint
from .ops.schedules import fed_step_sizes, fed_tau_max
from .ops.stencils import difference_stencil, first_difference, first_difference_adjoint

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



def tv_denoise(f, weight, tol: float = 1e-7, max_iter: int = 20000, check_every: int = 25) -> torch.Tensor:
    """Exact-to-``tol`` 1D TV denoising of every row of ``f`` ([..., n]) with weight(s) ``weight``.

    ``weight`` is a float or a tensor broadcastable to f's leading shape + (1,).
    Returns a tensor in f's dtype (computed in float64 for the gap test when f is float64,
    otherwise in float32).
    """
    f = torch.as_tensor(f)
    if f.shape[-1] < 2:
        raise ValueError(f"TV denoising needs signals of length ≥ 2, got shape {list(f.shape)}")
    x = f.to(torch.float64) if f.dtype == torch.float64 else f.float()
    w = torch.as_tensor(weight, dtype=x.dtype)
    if w.dim() == 0:
        w = w.reshape([1] * x.dim())
    n = x.shape[-1]
    p = torch.zeros(x.shape[:-1] + (n - 1,), dtype=x.dtype)
    q = p.clone()
    t = 1.0
    step = 0.25  # 1/‖D‖², ‖D‖² < 4
    u = x
    for it in range(1, max_iter + 1):
        p_new = torch.maximum(torch.minimum(q + step * first_difference(x - first_difference_adjoint(q)), w), -w)
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        q = p_new + ((t - 1.0) / t_new) * (p_new - p)
        p, t = p_new, t_new
        if it % check_every == 0 or it == max_iter:
            u = x - first_difference_adjoint(p)
            primal = 0.5 * ((u - x) ** 2).sum(-1) + (w[..., 0] if w.dim() == x.dim() else w) * first_difference(u).abs().sum(-1)
            dual = 0.5 * (x * x).sum(-1) - 0.5 * (u * u).sum(-1)
            if bool(((primal - dual) <= tol * n).all()):
                break
    u = x - first_difference_adjoint(p)
    return u.to(f.dtype)


def perona_malik_path(f, contrast: float, tau: float, steps: int) -> Iterator[Tuple[float, torch.Tensor]]:
    """Yield (k·τ, u_k) after each explicit Perona–Malik step u ← u − τ Dᵀ Φ(Du), Φ(s) = s / (1 + s²/λ²).

    D the forward difference along the last axis (:func:`~pdeblocks.ops.stencils.first_difference`),
    computed in float64; one pass serves every stopping time (the tuning follows it).
    """
    u = torch.as_tensor(f).double()
    for k in range(1, steps + 1):
        s = first_difference(u)
        u = u - tau * first_difference_adjoint(s / (1.0 + (s / contrast) ** 2))
        yield k * tau, u


def perona_malik_denoise(f, contrast: float, time: float, tau: float = 0.25) -> torch.Tensor:
    """Explicit Perona–Malik diffusion (:func:`perona_malik_path`) stopped at round(T/τ) steps, in f's dtype."""
    f = torch.as_tensor(f)
    u = f.double()
    for _, u_k in perona_malik_path(u, contrast, tau, max(0, round(time / tau))):
        u = u_k
    return u.to(f.dtype)


def tune_tv(noisy: np.ndarray, clean: np.ndarray, weights: Sequence[float] = None) -> Tuple[float, float]:
    """(best weight, its mean validation PSNR), golden-section refined after a log grid."""
    if weights is None:
        weights = np.geomspace(0.01, 1.0, 13)
    scores = {float(w): float(psnr(tv_denoise(torch.from_numpy(noisy).double(), w).numpy(), clean).mean())
              for w in weights}
    best = max(scores, key=scores.get)
    # refine on a finer log grid around the best
    for w in best * np.geomspace(0.75, 1.33, 7):
        scores[float(w)] = float(psnr(tv_denoise(torch.from_numpy(noisy).double(), w).numpy(), clean).mean())
    best = max(scores, key=scores.get)
    return best, scores[best]


PM_CONTRASTS = tuple(float(c) for c in np.geomspace(0.001, 0.4, 19))   # λ grid of :func:`tune_perona_malik`
PM_MAX_TIME = 20000.0                                                  # cap of each λ's path


def tune_perona_malik(noisy: np.ndarray, clean: np.ndarray, contrasts: Sequence[float] = PM_CONTRASTS,
                      max_time: float = PM_MAX_TIME, tau: float = 0.25, patience: float = 2.0,
                      min_time: float = 25.0) -> Tuple[float, float, float]:
    """(best λ, best T, mean validation PSNR) over a λ grid and the stopping times k·τ of each λ's path.

    Each path is followed until t ≥ patience·T_peak (and t ≥ ``min_time``), T_peak the time of the
    path's best PSNR so far (scored after each of the first 100 steps, then about every 1% of the time
    run, and at the last step): PSNR(T) rises while the noise is diffused away and falls once the edges
    go, and the smaller λ, the later its peak (on the piecewise-constant data at σ = 0.1 the best λ is
    0.0038 with T ≈ 3,400), so no fixed time window fits every λ. ``max_time`` caps each path; a best T
    at the cap, or a best λ at either end of the grid, is warned about (the optimum may lie outside).
    """
    contrasts = [float(c) for c in contrasts]
    if not contrasts or not all(c > 0 and math.isfinite(c) for c in contrasts):
        raise ValueError(f"contrasts must be a non-empty list of finite λ > 0, got {contrasts}")
    if not (tau > 0 and max_time >= tau and patience >= 1 and min_time >= 0):
        raise ValueError(f"need τ > 0, max_time ≥ τ, patience ≥ 1 and min_time ≥ 0; got τ={tau}, "
                         f"max_time={max_time}, patience={patience}, min_time={min_time}")
    best = (None, None, -np.inf)
    f = torch.from_numpy(noisy).double()
    steps = int(max_time / tau)
    for lam in contrasts:
        peak_t, peak = 0.0, -np.inf                     # this λ's best so far
        for k, (t, u) in enumerate(perona_malik_path(f, lam, tau, steps), 1):
            if k > 100 and k % (k // 100) and k < steps:
                continue
            score = float(psnr(u.numpy(), clean).mean())
            if score > peak:
                peak_t, peak = t, score
            elif t >= max(min_time, patience * peak_t):
                break
        if peak > best[2]:
            best = (lam, peak_t, peak)
    if best[1] is not None and best[1] > (steps - 0.5) * tau:
        warnings.warn(f"Perona–Malik tuning: the best stopping time is the cap max_time = {max_time:g} "
                      f"(λ = {best[0]:.3g}); a longer run may do better", stacklevel=2)
    if len(contrasts) > 1 and best[0] in (min(contrasts), max(contrasts)):
        warnings.warn(f"Perona–Malik tuning: the best λ = {best[0]:.3g} is at the end of the grid "
                      f"[{min(contrasts):.3g}, {max(contrasts):.3g}]; the optimum may lie outside", stacklevel=2)
    return best


def tuned_parameters(val_sets: Dict[float, Tuple[np.ndarray, np.ndarray]]) -> Dict[str, Dict[float, tuple]]:
    """Tune TV and PM per σ: ``{σ: (noisy, clean)}`` → ``{'tv': {σ: (w, psnr)}, 'pm': {σ: (λ, T, psnr)}}``."""
    return {'tv': {s: tune_tv(n, c) for s, (n, c) in val_sets.items()},
            'pm': {s: tune_perona_malik(n, c) for s, (n, c) in val_sets.items()}}
