"""The posterior mean of a piecewise-constant signal: Bayesian segmentation by a sum over all segmentations, O(n·W).

The model (a product-partition prior; Fearnhead's exact change-point recursions): x = u + σε with ε white Gaussian
noise and u constant on segments; the boundaries form a Bernoulli(h) process (segment lengths geometric with mean 1/h,
at most W samples), the segments' levels are i.i.d. and flat over an interval of length R. With the factor
(2πσ²)^(−n/2) that every segmentation shares left out, a segment [s, e) of length L has the weight

    φ(s, e) = √(2πσ²/L)/R · exp(−SS(s, e)/(2σ²)) · (1 − h)^(L−1) · (h if e < n),

SS(s, e) the squared deviations of x_s … x_{e−1} from their mean μ(s, e), the posterior mean of the segment's level
(a flat prior). Forward and backward over the boundaries,

    α(e) = Σ_s α(s)φ(s, e),  α(0) = 1;   β(s) = Σ_e φ(s, e)β(e),  β(n) = 1;   Z = α(n),
    E[u_t | x] = Σ_{s ≤ t < e} α(s)φ(s, e)β(e)/Z · μ(s, e),    P(a segment starts at s | x) = α(s)β(s)/Z,

a convex combination of segment means, so min x ≤ E[u | x] ≤ max x and ‖E[u | x]‖₂ ≤ ‖x‖₂ for any data and any h,
σ, R. Sums run over segments of at most ``max_length`` samples; the C kernel also drops, per end e, the oldest starts
whose term falls below ``prune`` × the sum (the same window in both passes: the exact posterior of that restricted
prior; on a signal with jumps the window follows the current segment instead of running over all W). Without the
kernel the torch recursion in logarithms gives the same values to about 1e−12 (it keeps the whole window). Rows whose
range exceeds 10⁶σ come back unchanged (every boundary certain): the posterior mean is the data there to within 10⁻⁶
of the range, and the prefix sums of the recursion would lose the digits its weights need.

:func:`pdeblocks.data.bayes_segment_means` is the same recursion under the piecewise-constant generator's own prior
(minimum segment length, levels uniform in [0, 1]): the Bayes limit of that task, O(n²), a reference. This one knows
nothing of a generator: it is the blind denoiser's segmentation (:class:`~pdeblocks.layers.tails.BayesSegmentTail1D`).
"""
import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch

from .._native import native_library, run_ranges, split_ranges

__all__ = ['SegmentPosterior', 'segment_posterior', 'segment_posterior_mean']


class SegmentPosterior(NamedTuple):
    """``mean`` [..., n]: E[u | x]; ``boundary`` [..., n − 1]: P(a segment starts at sample s | x), s = 1 … n − 1."""

    mean: torch.Tensor
    boundary: torch.Tensor


def segment_posterior_mean(x: torch.Tensor, sigma: Union[float, torch.Tensor] = 1.0, hazard: float = 1 / 32,
                           max_length: int = 256, level_range: Optional[torch.Tensor] = None,
                           prune: float = 1e-15, degree: int = 0,
                           degree_prior: Optional[Sequence[float]] = None) -> torch.Tensor:
    """E[u | x] of :func:`segment_posterior` (without the boundary probabilities).

    ``degree`` D > 0: u is piecewise polynomial instead, each segment a polynomial of degree d ∈ {0, …, D} (prior
    π_d = ``degree_prior[d]``, normalised, 1/(D + 1) each by default; at least d + 1 samples) with its values flat
    over R per coefficient: in the segment's own basis z = (e − 1 − t)/L ∈ [0, 1) the coefficients have density
    R^(−(d+1)), and a segment has the weight

        φ_d(s, e) = π_d·(2π)^((d+1)/2)·det(G_L)^(−½)·R^(−(d+1))·exp(−RSS_d(s, e)/(2σ²))·(1 − h)^(L−1)·(h if e < n),

    G_L = Σ_z (1, z, …, z^d)ᵀ(1, z, …, z^d), RSS_d the least-squares residual; E[u_t | x] sums the fitted pieces.
    The same forward–backward recursion (D = 0 is the default's prior exactly). E[u | x] is a convex combination of
    orthogonal projections of x onto piecewise polynomials, so ‖E[u | x]‖₂ ≤ ‖x‖₂ (enforced against rounding) and
    E[u | x + b] = E[u | x] + b; a fitted piece may overshoot [min x, max x]. The C kernel (scalar moments, vector
    exps) takes 6–9× the default's time for D = 2: 10–18 s per 1000 × 4096 samples on one thread against 1.3–2.3 s
    (docs/denoiser.md); without it a torch recursion gives the same values to about 1e−5 σ.
    """
    if isinstance(degree, bool) or degree not in (0, 1, 2):
        raise ValueError(f"degree must be 0, 1 or 2, got {degree!r}")
    try:
        prior = [1.0] * (degree + 1) if degree_prior is None else [float(p) for p in degree_prior]
    except (TypeError, ValueError):
        prior = []
    if len(prior) != degree + 1 or not all(math.isfinite(p) and p > 0 for p in prior):
        raise ValueError(f"degree_prior must hold {degree + 1} finite numbers > 0 (one per degree 0 … {degree}), "
                         f"got {degree_prior!r}")
    log_prior = [math.log(p / sum(prior)) for p in prior]
    return _posterior(x, sigma, hazard, max_length, level_range, prune, False, degree, log_prior).mean


def segment_posterior(x: torch.Tensor, sigma: Union[float, torch.Tensor] = 1.0, hazard: float = 1 / 32,
                      max_length: int = 256, level_range: Optional[torch.Tensor] = None,
                      prune: float = 1e-15) -> SegmentPosterior:
    """E[u | x] and the boundaries' posterior probabilities under the module's prior for each row of ``x`` [..., n]
    (float64 on x's device, computed on the CPU; no autograd: constants for it).

    ``sigma``: the noise level, one or one per row (``[...]`` or ``[..., 1]``); ``hazard``: h, the prior probability
    of a boundary between two samples; ``max_length``: W; ``level_range``: R per row (default max x − min x, at least
    σ); ``prune``: the relative weight below which the C kernel drops a segment start (0: never). ValueErrors name
    what was expected and what came.
    """
    return _posterior(x, sigma, hazard, max_length, level_range, prune, True)


def _posterior(x, sigma, hazard: float, max_length: int, level_range, prune: float, boundaries: bool,
               degree: int = 0, log_prior: Sequence[float] = (0.0,)) -> SegmentPosterior:
    if not isinstance(x, torch.Tensor) or x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must be a tensor [..., n] with n ≥ 1, got {getattr(x, 'shape', type(x).__name__)}")
    if not 0.0 < hazard < 1.0:
        raise ValueError(f"hazard must be in (0, 1), got {hazard}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be an int ≥ 1, got {max_length!r}")
    if not 0.0 <= prune < 1e-3:
        raise ValueError(f"prune must be in [0, 1e-3), got {prune}")
    shape, n = x.shape, x.shape[-1]
    f = x.detach().to('cpu', torch.float64).reshape(-1, n).contiguous()
    rows = f.shape[0]
    if not bool(torch.isfinite(f).all()):
        raise ValueError("x contains NaN or Inf; expected finite values")
    sd = torch.as_tensor(sigma, dtype=torch.float64).detach().cpu().flatten()
    if sd.numel() not in (1, rows) or not bool(torch.isfinite(sd).all() and (sd > 0).all()):
        raise ValueError(f"sigma must be finite and > 0, one value or one per row ({rows}); got shape "
                         f"{tuple(sd.shape)}, min {float(sd.min()) if sd.numel() else 'none'}")
    sd = sd.expand(rows).contiguous()
    data_span = f.amax(1) - f.amin(1) if rows else f.new_zeros(0)
    if level_range is None:
        span = data_span
    else:
        span = torch.as_tensor(level_range, dtype=torch.float64).detach().cpu().flatten()
        if span.numel() not in (1, rows) or not bool(torch.isfinite(span).all() and (span > 0).all()):
            raise ValueError(f"level_range must be finite and > 0, one value or one per row ({rows}); got shape "
                             f"{tuple(span.shape)}")
        span = span.expand(rows)
    span = torch.maximum(span, sd)
    c0 = 0.5 * torch.log(2 * math.pi * sd ** 2) - torch.log(span)
    w = min(max_length, n)
    # beyond 120 dB (data range > 1e6 σ) the posterior mean is the data to within 1e−6 of its range, and the prefix
    # sums' differences lose the digits the weights need: such rows are returned as they came, every boundary certain
    exact = data_span > 1e6 * sd
    if degree > 0:
        out, bnd = f.clone(), None
        todo = (~exact).nonzero().flatten()
        if len(todo):
            out[todo] = _poly_recursion(f[todo], sd[todo], span[todo], hazard, w, prune, degree, log_prior)
    elif not bool(exact.any()):
        out, bnd = _recursion(f, sd, c0, hazard, w, prune, boundaries)
    else:
        out, bnd = f.clone(), f.new_ones(rows, n - 1) if boundaries else None
        todo = (~exact).nonzero().flatten()
        if len(todo):
            m, b = _recursion(f[todo].contiguous(), sd[todo].contiguous(), c0[todo].contiguous(), hazard, w, prune,
                              boundaries)
            out[todo] = m
            if boundaries:
                bnd[todo] = b
    bnd = bnd.reshape(shape[:-1] + (n - 1,)) if boundaries else f.new_empty(0)
    return SegmentPosterior(out.reshape(shape).to(x.device), bnd.to(x.device))


def _recursion(f: torch.Tensor, sd: torch.Tensor, c0: torch.Tensor, hazard: float, w: int, prune: float,
               boundaries: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(mean, boundary probabilities or None) of the rows of ``f`` [rows, n]: the C kernel, else the torch path."""
    lib = native_library()
    if lib is None:
        mean, bnd = _posterior_torch(f, sd, c0, hazard, w)
        return mean, bnd if boundaries else None
    rows, n = f.shape
    out = torch.empty_like(f)
    bnd = f.new_empty(rows, n - 1) if boundaries else None
    rowp = torch.stack([0.5 / sd ** 2, c0], 1).contiguous()
    prm = torch.tensor([math.log(hazard), math.log1p(-hazard), prune], dtype=torch.float64)
    status = run_ranges(lambda r0, r1: lib.segment_posterior_mean(
        f.data_ptr(), rowp.data_ptr(), prm.data_ptr(), out.data_ptr(), None if bnd is None else bnd.data_ptr(),
        n, w, r0, r1), split_ranges(rows, torch.get_num_threads()))
    if any(status):
        raise MemoryError(f"segment_posterior: no memory for a work buffer of {n} samples")
    return out, bnd


def _poly_recursion(f: torch.Tensor, sd: torch.Tensor, span: torch.Tensor, hazard: float, w: int, prune: float,
                    degree: int, log_prior: Sequence[float]) -> torch.Tensor:
    """E[u | x] with polynomial pieces of degree ≤ ``degree`` (:func:`segment_posterior_mean`) for the rows of ``f``
    [rows, n], in units of σ inside: the C kernel (:mod:`pdeblocks._native`, item 10), else the torch recursion."""
    rows, n = f.shape
    x = (f / sd[:, None]).contiguous()
    log_range = torch.log(torch.clamp(span / sd, min=1.0)).contiguous()
    lib = native_library()
    if lib is None:
        out = torch.stack([_poly_torch(x[r], float(log_range[r]), hazard, w, degree, log_prior) for r in range(rows)])
    else:
        out = torch.empty_like(x)
        prm = torch.tensor([math.log(hazard), math.log1p(-hazard), prune, *log_prior, *[-math.inf] * (2 - degree)],
                           dtype=torch.float64)
        status = run_ranges(lambda r0, r1: lib.segment_poly_posterior(
            x.data_ptr(), log_range.data_ptr(), prm.data_ptr(), out.data_ptr(), n, w, degree, r0, r1),
            split_ranges(rows, torch.get_num_threads()))
        if any(status):
            raise MemoryError(f"segment_posterior_mean: no memory for the work buffers of {n} samples")
    out = out * sd[:, None]
    # ‖E[u | x]‖ ≤ ‖x‖ holds exactly; the difference arrays round at about 1e−5 σ, which must not break it
    norm_in, norm_out = f.norm(dim=1, keepdim=True), out.norm(dim=1, keepdim=True)
    return out * torch.where(norm_out > norm_in, norm_in / norm_out, torch.ones_like(norm_out))


def _poly_torch(x: torch.Tensor, log_range: float, hazard: float, w: int, degree: int, log_prior: Sequence[float]
                ) -> torch.Tensor:
    """One row of :func:`_poly_recursion` without the C kernel, every window whole (no pruning): moments from prefix
    sums in y = (t − (n − 1)/2)/n, flat prior density R^(−p)·(L/n)^(d(d+1)/2) in that basis (the same evidence as the
    segment's own basis), solves of the normal equations per segment, O(n·W·D³) memory n·W. In that basis the Gram
    determinant of a short quadratic piece underflows on rows far beyond 10⁴ samples; such pieces are dropped there
    (the C kernel's own basis has no such limit)."""
    n = x.shape[0]
    t = (torch.arange(n, dtype=x.dtype) - (n - 1) / 2) / n
    zero = x.new_zeros(1)
    tpow = [torch.cat([zero, (t ** k).cumsum(0)]) for k in range(2 * degree + 1)]
    xpow = [torch.cat([zero, (t ** k * x).cumsum(0)]) for k in range(degree + 1)]
    xx = torch.cat([zero, (x * x).cumsum(0)])
    end = torch.arange(1, n + 1)[:, None]
    length = torch.arange(1, w + 1)[None, :]
    valid = end - length >= 0
    start = torch.where(valid, end - length, torch.zeros_like(end - length))
    lf = (length * torch.ones_like(end)).to(x.dtype)
    base = (lf - 1) * math.log1p(-hazard) + torch.where(end < n, math.log(hazard), 0.0).to(x.dtype)
    moments = [a[end] - a[start] for a in tpow]
    rhs = [a[end] - a[start] for a in xpow]
    sxx = xx[end] - xx[start]
    terms, coefficients = [], []
    for d in range(degree + 1):
        p = d + 1
        gram = torch.stack([torch.stack([moments[i + j] for j in range(p)], -1) for i in range(p)], -2)
        b = torch.stack(rhs[:p], -1)
        ok = valid & (lf >= p)
        eye = torch.eye(p, dtype=x.dtype)
        gram = torch.where(ok[..., None, None], gram, eye)
        sign, logdet = torch.linalg.slogdet(gram)
        ok = ok & (sign > 0) & (logdet > -60)
        beta = torch.linalg.solve(torch.where(ok[..., None, None], gram, eye), b[..., None])[..., 0]
        rss = (sxx - (beta * b).sum(-1)).clamp_min(0.0)
        log_density = -p * log_range + d * (d + 1) / 2 * torch.log((lf / n).clamp_min(1e-12))
        term = 0.5 * p * math.log(2 * math.pi) - 0.5 * logdet + log_density - 0.5 * rss + log_prior[d]
        terms.append(torch.where(ok, term + base, -math.inf))
        coefficients.append(torch.where(ok[..., None], beta, 0.0))
    log_phi = torch.logsumexp(torch.stack(terms), 0)
    alpha = x.new_full((n + 1,), -math.inf)
    alpha[0] = 0.0
    for e in range(1, n + 1):
        k = torch.arange(1, min(w, e) + 1)
        alpha[e] = torch.logsumexp(alpha[e - k] + log_phi[e - 1, k - 1], 0)
    beta_ = x.new_full((n + 1,), -math.inf)
    beta_[n] = 0.0
    for s0 in range(n - 1, -1, -1):
        k = torch.arange(1, min(w, n - s0) + 1)
        beta_[s0] = torch.logsumexp(log_phi[s0 + k - 1, k - 1] + beta_[s0 + k], 0)
    acc = x.new_zeros(degree + 1, n + 1)
    ends = end.expand_as(lf).reshape(-1)
    for term, coef in zip(terms, coefficients):
        weight = torch.exp(torch.where(valid, alpha[start] + term + beta_[end] - alpha[n], -math.inf))
        for k in range(coef.shape[-1]):
            acc[k].index_add_(0, start.reshape(-1), (weight * coef[..., k]).reshape(-1))
            acc[k].index_add_(0, ends, -(weight * coef[..., k]).reshape(-1))
    sums = acc.cumsum(1)[:, :n]
    return sum(sums[k] * t ** k for k in range(degree + 1))


def _posterior_torch(f: torch.Tensor, sd: torch.Tensor, c0: torch.Tensor, hazard: float, w: int
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The recursion of the module docstring in logarithms, vectorised over rows, every window whole: (mean,
    boundary probabilities α(s)β(s)/Z)."""
    rows, n = f.shape
    zero = f.new_zeros(rows, 1)
    s1, s2 = torch.cat([zero, f.cumsum(1)], 1), torch.cat([zero, (f * f).cumsum(1)], 1)
    a, c0 = (0.5 / sd ** 2)[:, None], c0[:, None]
    log_h, log_q = math.log(hazard), math.log1p(-hazard)

    def log_weight(s: torch.Tensor, e: torch.Tensor):
        length = (e - s).to(f.dtype)
        d1 = s1[:, e] - s1[:, s]
        ss = (s2[:, e] - s2[:, s] - d1 * d1 / length).clamp_min(0.0)
        lw = -a * ss - 0.5 * torch.log(length) + (length - 1) * log_q + c0 + log_h * (e < n).to(f.dtype)
        return lw, d1 / length

    idx = torch.arange(n + 1)
    alpha = f.new_full((rows, n + 1), -math.inf)
    alpha[:, 0] = 0.0
    for e in range(1, n + 1):
        s = idx[max(0, e - w):e]
        alpha[:, e] = torch.logsumexp(alpha[:, s] + log_weight(s, torch.full_like(s, e))[0], 1)
    beta = f.new_full((rows, n + 1), -math.inf)
    beta[:, n] = 0.0
    jumps = f.new_zeros(rows, n + 1)
    log_z = alpha[:, n:]
    for s0 in range(n - 1, -1, -1):
        e = idx[s0 + 1:min(n, s0 + w) + 1]
        lw, mu = log_weight(torch.full_like(e, s0), e)
        beta[:, s0] = torch.logsumexp(lw + beta[:, e], 1)
        p = torch.exp(alpha[:, s0:s0 + 1] + lw + beta[:, e] - log_z) * mu
        jumps[:, s0] += p.sum(1)
        jumps[:, e] -= p
    out = jumps.cumsum(1)[:, :n]
    boundary = torch.exp(alpha[:, 1:n] + beta[:, 1:n] - log_z).clamp(0.0, 1.0)
    return torch.minimum(torch.maximum(out, f.amin(1, keepdim=True)), f.amax(1, keepdim=True)), boundary
