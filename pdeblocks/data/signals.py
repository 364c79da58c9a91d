"""Seeded 1D test signals for denoising and diffusion: piecewise constant and piecewise smooth.

Every signal is a deterministic function of ``(kind, split, index, length, seed)``: the random
generator is seeded with ``SeedSequence([seed, SPLITS[split], index])``, so train / validation /
test never share a generator stream and any single signal can be regenerated on its own.

* piecewise constant: jump positions from a renewal process with segment lengths
  ``min_segment + Geometric(1/(mean_segment − min_segment))``; one value per segment, uniform in
  [0, 1] (so a jump height is the difference of two uniforms).
* piecewise smooth: the same segmentation; on each segment a random offset plus a random-phase
  sinusoid plus a linear ramp, clipped to [0, 1]; jumps at the segment boundaries.

Noise: additive white Gaussian, ``noisy = clean + σ·ε``; the noisy signal is *not* clipped.
"""
import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch

SPLITS = {'train': 0, 'val': 1, 'test': 2}
KINDS = ('piecewise_constant', 'piecewise_smooth')
SIGMAS = (0.05, 0.1, 0.2)
MIN_LENGTH, MAX_LENGTH = 16, 1 << 16


def stream_rng(what: str, name: str, names: Sequence[str], split: str, index: int, seed: int = 0,
               first_stream: int = 0) -> np.random.Generator:
    """The generator of signal ``index`` of ``split`` in the stream of ``name`` (one of ``names``, a ``what``):
    SeedSequence([seed, split id, first_stream + names.index(name), index]). ValueErrors name what was wrong."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if name not in names:
        raise ValueError(f"{what} must be one of {names}, got {name!r}")
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be ≥ 0, got index={index}, seed={seed}")
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], first_stream + names.index(name), index]))


def signal_rng(kind: str, split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of one signal: SeedSequence([seed, split id, kind id, index])."""
    return stream_rng('kind', kind, KINDS, split, index, seed)


def segment_starts(length: int, rng: np.random.Generator, mean_segment: float = 64.0,
                   min_segment: int = 8) -> np.ndarray:
    """Start indices of the segments (first is 0): a renewal process with lengths ≥ ``min_segment``."""
    if not min_segment >= 1 or not mean_segment > min_segment:
        raise ValueError(f"need 1 ≤ min_segment < mean_segment, got {min_segment}, {mean_segment}")
    starts = [0]
    p = 1.0 / (mean_segment - min_segment + 1.0)
    while True:
        nxt = starts[-1] + min_segment + int(rng.geometric(p)) - 1
        if nxt > length - min_segment:
            break
        starts.append(nxt)
    return np.asarray(starts, dtype=np.int64)


def piecewise_constant(length: int, rng: np.random.Generator, mean_segment: float = 64.0,
                       min_segment: int = 8):
    """(signal, segment starts): one uniform [0, 1] value per segment."""
    starts = segment_starts(length, rng, mean_segment, min_segment)
    values = rng.uniform(0.0, 1.0, size=len(starts))
    seg = np.searchsorted(starts, np.arange(length), side='right') - 1
    return values[seg], starts


def piecewise_smooth(length: int, rng: np.random.Generator, mean_segment: float = 64.0,
                     min_segment: int = 8):
    """(signal, segment starts): offset + sinusoid + ramp per segment, clipped to [0, 1]."""
    starts = segment_starts(length, rng, mean_segment, min_segment)
    bounds = np.append(starts, length)
    out = np.empty(length)
    for a, b in zip(bounds[:-1], bounds[1:]):
        x = np.arange(b - a) / max(b - a - 1, 1)  # 0…1 on the segment
        offset = rng.uniform(0.2, 0.8)
        amp = rng.uniform(0.0, 0.2)
        freq = rng.uniform(0.5, 2.0)
        phase = rng.uniform(0.0, 2 * np.pi)
        slope = rng.uniform(-0.3, 0.3)
        out[a:b] = offset + amp * np.sin(2 * np.pi * freq * x + phase) + slope * (x - 0.5)
    return np.clip(out, 0.0, 1.0), starts


GENERATORS = {'piecewise_constant': piecewise_constant, 'piecewise_smooth': piecewise_smooth}


@dataclass
class SignalSet:
    """A batch of clean/noisy signals (float32 ``[count, length]``) and each signal's segment starts."""

    clean: np.ndarray
    noisy: np.ndarray
    sigma: np.ndarray  # [count] noise level of each signal
    starts: List[np.ndarray]
    kind: str
    split: str


def make_signals(kind: str, split: str, count: int, length: int, sigma, seed: int = 0,
                 offset: int = 0, mean_segment: float = 64.0, min_segment: int = 8) -> SignalSet:
    """``count`` signals of ``length`` samples, indices ``offset … offset+count−1`` of the split.

    ``sigma``: one noise level or a sequence of ``count`` levels (the noise draws come from the
    same per-signal generator, after the clean signal, so the clean signal does not depend on σ).
    """
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ValueError(f"length must be in [{MIN_LENGTH}, {MAX_LENGTH}], got {length}")
    if count < 1:
        raise ValueError(f"count must be ≥ 1, got {count}")
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (count,)).copy()
    if np.any(sig < 0) or not np.all(np.isfinite(sig)):
        raise ValueError(f"sigma must be finite and ≥ 0, got {sigma}")
    gen = GENERATORS[kind] if kind in GENERATORS else None
    clean = np.empty((count, length))
    noisy = np.empty((count, length))
    starts = []
    for i in range(count):
        rng = signal_rng(kind, split, offset + i, seed)
        u, st = gen(length, rng, mean_segment, min_segment)
        clean[i] = u
        noisy[i] = u + sig[i] * rng.standard_normal(length)
        starts.append(st)
    return SignalSet(clean.astype(np.float32), noisy.astype(np.float32), sig, starts, kind, split)


def oracle_segment_means(noisy: np.ndarray, starts: Sequence[np.ndarray]) -> np.ndarray:
    """The oracle that knows the jump positions: the mean of the noisy data on each segment.

    For piecewise-constant signals this is the best unbiased estimate (MSE σ²·segments/length).
    """
    noisy = np.asarray(noisy, dtype=np.float64)
    out = np.empty_like(noisy)
    for i, st in enumerate(starts):
        bounds = np.append(st, noisy.shape[-1])
        for a, b in zip(bounds[:-1], bounds[1:]):
            out[i, a:b] = noisy[i, a:b].mean()
    return out


def _truncated_normal_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """E[Z | a < Z < b] for Z ~ N(0, 1), accurate in both tails.

    (φ(a) − φ(b))/(Φ(b) − Φ(a)), reflected (Z → −Z) so that |lo| ≥ |hi|, then divided by φ(hi):
        (exp((hi² − lo²)/2) − 1) / (M(hi) − M(lo)·exp((hi² − lo²)/2)),  M(x) = Φ(x)/φ(x) = √(π/2)·erfcx(−x/√2),
    which has no exponential of a large argument (the plain quotient loses every digit once a and b are
    both far in one tail).
    """
    flip = a + b > 0
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    decay = (hi - lo) * (hi + lo) / 2          # (hi² − lo²)/2 ≤ 0
    half_pi = math.sqrt(math.pi / 2)
    mills = half_pi * torch.special.erfcx(-hi / math.sqrt(2)) \
        - half_pi * torch.special.erfcx(-lo / math.sqrt(2)) * torch.exp(decay)
    mean = torch.expm1(decay) / mills
    return torch.where(flip, -mean, mean)


def _segment_evidence(S1: torch.Tensor, S2: torch.Tensor, s: torch.Tensor, e: torch.Tensor,
                      sigma: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """log Λ(s, e) and μ(s, e) of the segments [s, e) of every signal (``S1``, ``S2``: prefix sums).

    Λ(s, e) = ∫₀¹ Π_{s≤i<e} N(f_i; c, σ²) dc, without the factor (2πσ²)^(−n/2) that every
    segmentation shares: with n = e − s, mean f̄ and SS = Σ(f_i − f̄)²,
        log Λ = −SS/(2σ²) + ½·log(2πσ²/n) + log(Φ(b) − Φ(a)),  a = −f̄√n/σ,  b = (1 − f̄)√n/σ,
    and μ = E[c | f_s…f_{e−1}] = f̄ + (σ/√n)·E[Z | a < Z < b] (a normal truncated to [0, 1]).
    """
    n = (e - s).to(S1.dtype)
    mean = (S1[:, e] - S1[:, s]) / n
    ss = (S2[:, e] - S2[:, s] - n * mean ** 2).clamp_min(0.0)
    r = n.sqrt() / sigma
    a, b = -mean * r, (1.0 - mean) * r
    # log(Φ(b) − Φ(a)) without cancellation: through the upper tails where a > 0.
    upper = a > 0
    hi = torch.where(upper, torch.special.log_ndtr(-a), torch.special.log_ndtr(b))
    lo = torch.where(upper, torch.special.log_ndtr(-b), torch.special.log_ndtr(a))
    log_mass = hi + torch.log1p(-torch.exp((lo - hi).clamp_max(0.0)))
    log_evidence = -ss / (2 * sigma ** 2) + 0.5 * torch.log(2 * math.pi * sigma ** 2 / n) + log_mass
    return log_evidence, (mean + _truncated_normal_mean(a, b) / r).clamp(0.0, 1.0)


def bayes_segment_means(noisy, sigma, mean_segment: float = 64.0, min_segment: int = 8) -> np.ndarray:
    """The posterior mean E[u | f] under this module's own prior: the least mean-squared error of all.

    No denoiser has a lower expected MSE on :func:`piecewise_constant` signals with white noise of
    known σ; unlike :func:`oracle_segment_means` it does not know the jumps, so this is the physical
    limit of the denoising task. The prior is the generator's: segment lengths m + Geometric(p) − 1
    with p = 1/(mean_segment − m + 1) and the last segment whatever is left (≥ m), levels i.i.d.
    uniform in [0, 1]. The sum over all segmentations runs forward–backward over the segment
    boundaries, O(n²) per signal: with π(s, e) the prior of a segment [s, e) and Λ, μ from
    :func:`_segment_evidence`,
        α(e) = Σ_s α(s)·π(s, e)·Λ(s, e),   β(s) = Σ_e π(s, e)·Λ(s, e)·β(e),   Z = α(n) = β(0),
        E[u_t | f] = Σ_{s ≤ t < e} α(s)·π(s, e)·Λ(s, e)·β(e)·μ(s, e) / Z.
    A non-final segment has π = p(1 − p)^(len − m) and must end by n − m; the final one, starting at
    s, has π = P(next length > n − s − m) = (1 − p)^max(n − s − 2m + 1, 0).

    ``noisy``: ``[count, n]`` (or ``[n]``); ``sigma``: the noise level, one or one per signal.
    Returns float64 estimates of ``noisy``'s shape.
    """
    f = np.asarray(noisy, dtype=np.float64)
    squeeze = f.ndim == 1
    f = f[None] if squeeze else f
    if f.ndim != 2 or f.size == 0:
        raise ValueError(f"noisy must be [n] or [count, n], got shape {np.shape(noisy)}")
    count, n = f.shape
    if not np.all(np.isfinite(f)):
        raise ValueError("noisy contains NaN or Inf")
    if not isinstance(min_segment, (int, np.integer)):
        raise ValueError(f"min_segment must be an int, got {min_segment!r}")
    if not 1 <= min_segment <= n or not mean_segment > min_segment:
        raise ValueError(f"need 1 ≤ min_segment ≤ n and mean_segment > min_segment, got min_segment="
                         f"{min_segment}, mean_segment={mean_segment}, n={n}")
    sig = np.asarray(sigma, dtype=np.float64)
    if sig.size not in (1, count):
        raise ValueError(f"sigma must be one value or one per signal ({count}), got shape {sig.shape}")
    sig = np.broadcast_to(sig.reshape(-1), (count,))
    if not np.all(np.isfinite(sig) & (sig > 0)):
        raise ValueError(f"sigma must be finite and > 0, got {sigma}")
    m = int(min_segment)
    p = 1.0 / (mean_segment - m + 1.0)
    log_p, log_q = math.log(p), math.log1p(-p)
    x = torch.from_numpy(f)
    zero = x.new_zeros(count, 1)
    S1, S2 = torch.cat([zero, x.cumsum(1)], 1), torch.cat([zero, (x * x).cumsum(1)], 1)
    sd = torch.tensor(sig)[:, None]
    idx = torch.arange(n + 1)

    def log_weight(s: torch.Tensor, e: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """log(π(s, e)·Λ(s, e)) and μ(s, e) for the segments [s, e)."""
        final = (n - s - 2 * m + 1).clamp_min(0).to(x.dtype) * log_q
        log_prior = torch.where(e == n, final, log_p + (e - s - m).to(x.dtype) * log_q)
        log_evidence, mu = _segment_evidence(S1, S2, s, e, sd)
        return log_evidence + log_prior, mu

    # Each pass recomputes its segment terms: O(count·n) memory instead of O(count·n²).
    ends = list(range(m, n - m + 1)) + [n]   # where a segment can end
    alpha = x.new_full((count, n + 1), -math.inf)
    alpha[:, 0] = 0.0
    for e in ends:
        s = idx[: e - m + 1]
        alpha[:, e] = torch.logsumexp(alpha[:, s] + log_weight(s, torch.full_like(s, e))[0], 1)
    beta = x.new_full((count, n + 1), -math.inf)
    beta[:, n] = 0.0
    for s0 in range(n - m, -1, -1):
        e = torch.cat([idx[s0 + m: n - m + 1], idx[n:]])
        beta[:, s0] = torch.logsumexp(log_weight(torch.full_like(e, s0), e)[0] + beta[:, e], 1)
    log_z = alpha[:, n:]
    level_jumps = x.new_zeros(count, n + 1)   # posterior-weighted levels entering (+) / leaving (−) at each index
    for e in ends:
        s = idx[: e - m + 1]
        lw, mu = log_weight(s, torch.full_like(s, e))
        weighted = torch.exp(alpha[:, s] + lw + beta[:, e:e + 1] - log_z) * mu
        level_jumps[:, : e - m + 1] += weighted
        level_jumps[:, e] -= weighted.sum(1)
    out = level_jumps.cumsum(1)[:, :n].clamp(0.0, 1.0).numpy()   # a mean of levels in [0, 1]: the clamp removes rounding only
    return out[0] if squeeze else out


def psnr(estimate, clean, peak: float = 1.0):
    """Per-signal PSNR in dB, 10·log10(peak² / mean((estimate − clean)²)); inputs ``[..., length]``."""
    e = np.asarray(estimate, dtype=np.float64)
    c = np.asarray(clean, dtype=np.float64)
    mse = np.mean((e - c) ** 2, axis=-1)
    return 10.0 * np.log10(peak ** 2 / np.maximum(mse, 1e-20))
