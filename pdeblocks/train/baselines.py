"""Classical denoising baselines, each tuned on the validation split.

* :func:`tv_denoise` — total-variation denoising min_u ½‖u − f‖² + w‖Du‖₁ (D the forward difference),
  solved by accelerated projected gradient (FISTA) on the dual: u = f − Dᵀp, |p_i| ≤ w. The
  iteration stops per batch when every signal's duality gap P(u) − P*(p) ≤ ``tol``·n; since P is
  1-strongly convex, ‖u − u*‖² ≤ 2·gap, so the MSE of the returned u is within 2·tol of the exact
  minimiser's neighbourhood (default tol = 1e-7: far below the test MSEs of ~1e-4).
* :func:`perona_malik_denoise` — explicit Perona–Malik diffusion (τ = 1/4) with contrast λ and
  stopping time T.
* :func:`tune_tv`, :func:`tune_perona_malik` — grid search of w, resp. (λ, T), maximising mean
  PSNR on validation signals. The oracle lives in :func:`pdeblocks.data.oracle_segment_means`.
"""
import math
import warnings
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from ..data.signals import psnr


def _diff(u: torch.Tensor) -> torch.Tensor:
    return u[..., 1:] - u[..., :-1]


def _diff_adjoint(p: torch.Tensor) -> torch.Tensor:
    """Dᵀp for the (n−1)×n forward difference: (Dᵀp)_i = p_{i−1} − p_i (zero outside)."""
    z = p.new_zeros(p.shape[:-1] + (1,))
    return torch.cat([z, p], -1) - torch.cat([p, z], -1)


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
        p_new = torch.maximum(torch.minimum(q + step * _diff(x - _diff_adjoint(q)), w), -w)
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        q = p_new + ((t - 1.0) / t_new) * (p_new - p)
        p, t = p_new, t_new
        if it % check_every == 0 or it == max_iter:
            u = x - _diff_adjoint(p)
            primal = 0.5 * ((u - x) ** 2).sum(-1) + (w[..., 0] if w.dim() == x.dim() else w) * _diff(u).abs().sum(-1)
            dual = 0.5 * (x * x).sum(-1) - 0.5 * (u * u).sum(-1)
            if bool(((primal - dual) <= tol * n).all()):
                break
    u = x - _diff_adjoint(p)
    return u.to(f.dtype)


def perona_malik_denoise(f, contrast: float, time: float, tau: float = 0.25) -> torch.Tensor:
    """Explicit Perona–Malik diffusion u ← u + τ Dᵀ... with g = 1/(1 + s²/λ²), stopping at ``time``."""
    u = torch.as_tensor(f).double()
    steps = max(0, round(time / tau))
    for _ in range(steps):
        s = _diff(u)
        u = u - tau * _diff_adjoint(s / (1.0 + (s / contrast) ** 2))
    return u.to(torch.as_tensor(f).dtype)


def perona_malik_path(f, contrast: float, tau: float, steps: int):
    """Yield (time, u) after each explicit PM step (for tuning the stopping time in one pass)."""
    u = torch.as_tensor(f).double()
    for k in range(1, steps + 1):
        s = _diff(u)
        u = u - tau * _diff_adjoint(s / (1.0 + (s / contrast) ** 2))
        yield k * tau, u


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
