"""Seeded signal families for a general-purpose 1D denoiser: what people actually denoise.

Every clean signal is a deterministic function of ``(family, split, index, length, seed)``: its random
generator is seeded with ``SeedSequence([seed, SPLITS[split], FAMILY_STREAM + family id, index])``
(the ids of :mod:`pdeblocks.data.signals` are 0 and 1, these start at ``FAMILY_STREAM``), so the
splits never share a stream and any single signal can be regenerated on its own. Each clean signal
is then mapped affinely onto [0, 1] (min 0, max 1): its range is 1, so the noise level σ is a
fraction of the signal's range, and PSNR with peak 1 is the usual range-PSNR.

Families (parameters drawn per signal from wide ranges; lengths and widths in samples):

* ``piecewise_constant`` — jumps from a renewal process, mean segment length log-uniform in
  [12, 400] (min 4) — sparse to dense jumps; one uniform level per segment.
* ``piecewise_smooth`` — the same segmentation (mean 32–400); per segment a random quadratic plus a
  sinusoid of 0.2–2 periods; jumps at the boundaries.
* ``peaks`` — 1 to ~length/16 isolated peaks (Gaussian or Lorentzian, width log-uniform in
  [0.4, 40], a third of them spikes of width < 1.5; height log-uniform over two decades) on a flat
  baseline or a drifting one (a slow cubic plus a slow sinusoid): spectra, chromatograms.
* ``oscillations`` — 1–3 components, each a sinusoid, a linear chirp or an exponential chirp with
  frequencies log-uniform in [1/length, 0.15] cycles/sample (``max_frequency``: 0.15 in the benchmark's
  splits, up to Nyquist for training), under a constant, Gaussian, decaying or slowly modulated
  amplitude envelope.
* ``smooth_trend`` — a Chebyshev series of degree ≤ 6 with decaying coefficients, plus up to three
  smooth sigmoid steps of width 10–200, plus a few random low-frequency cosines.
* ``sums`` — a weighted sum of two or three draws from the other families.

Noise (:func:`add_noise`): ``'gaussian'`` (white, the training noise), and for information
``'laplace'`` (white Laplacian, same σ) and ``'ar1'`` (coloured: AR(1) with ρ = 0.5 scaled to
standard deviation σ). ``noisy = clean + σ·ε`` is not clipped.
"""
import math
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

from .signals import MAX_LENGTH, MIN_LENGTH, SignalSet, segment_starts, stream_rng

FAMILIES = ('piecewise_constant', 'piecewise_smooth', 'peaks', 'oscillations', 'smooth_trend', 'sums')
FAMILY_STREAM = 1000          # first family id in the SeedSequence (signals.py uses 0, 1)
NOISES = ('gaussian', 'laplace', 'ar1')
AR1_RHO = 0.5                 # correlation of neighbouring samples of the coloured test noise
SIGMA_RANGE = (0.005, 0.3)    # training noise levels, fractions of the signal's range
MAX_FREQUENCY = 0.15          # highest oscillation frequency, cycles per sample
NYQUIST = 0.5                 # the highest frequency of a sampled signal, cycles per sample


def family_rng(family: str, split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of one signal: SeedSequence([seed, split id, FAMILY_STREAM + family id, index])."""
    return stream_rng('family', family, FAMILIES, split, index, seed, FAMILY_STREAM)


def log_uniform(rng: np.random.Generator, low: float, high: float, size=None):
    """exp(U(log low, log high)): scale-free draws (as many small as large values per decade)."""
    return np.exp(rng.uniform(math.log(low), math.log(high), size=size))


def unit_range(u: np.ndarray) -> np.ndarray:
    """(u − min u)/(max u − min u): the affine map onto [0, 1]; a constant maps to 0.5."""
    lo, hi = float(u.min()), float(u.max())
    return np.full_like(u, 0.5) if hi - lo <= 1e-12 * max(1.0, abs(hi)) else (u - lo) / (hi - lo)


def _segments(length: int, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    min_segment = min(4, max(1, length // 4))
    mean = max(float(log_uniform(rng, low, high)), min_segment + 1.0)
    return segment_starts(length, rng, mean_segment=mean, min_segment=min_segment)


def piecewise_constant(length: int, rng: np.random.Generator) -> np.ndarray:
    """One uniform level per segment; mean segment length log-uniform in [12, 400] samples."""
    starts = _segments(length, rng, 12.0, 400.0)
    seg = np.searchsorted(starts, np.arange(length), side='right') - 1
    return rng.uniform(0.0, 1.0, size=len(starts))[seg]


def piecewise_smooth(length: int, rng: np.random.Generator) -> np.ndarray:
    """Per segment (mean length 32–400): a + b·x + c·x² + d·sin(2π·p·x + φ), x ∈ [0, 1] on the segment."""
    starts = _segments(length, rng, 32.0, 400.0)
    bounds = np.append(starts, length)
    out = np.empty(length)
    for a, b in zip(bounds[:-1], bounds[1:]):
        x = np.arange(b - a) / max(b - a - 1, 1)
        c0, c1, c2 = rng.uniform(0.0, 1.0), rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5)
        amp, periods, phase = rng.uniform(0.0, 0.3), rng.uniform(0.2, 2.0), rng.uniform(0.0, 2 * math.pi)
        out[a:b] = c0 + c1 * x + c2 * x * x + amp * np.sin(2 * math.pi * periods * x + phase)
    return out


def _baseline(length: int, rng: np.random.Generator) -> np.ndarray:
    """A slow drift: cubic in x ∈ [−1, 1] plus a sinusoid of ≤ 1.5 periods (or flat, a third of the time)."""
    if rng.uniform() < 1 / 3:
        return np.zeros(length)
    x = np.linspace(-1.0, 1.0, length)
    poly = np.polynomial.chebyshev.chebval(x, rng.normal(0.0, 1.0, 4) / np.arange(1, 5))
    return poly + rng.uniform(0, 1) * np.sin(2 * math.pi * rng.uniform(0.1, 1.5) * (x + 1) / 2
                                              + rng.uniform(0, 2 * math.pi))


def peaks(length: int, rng: np.random.Generator) -> np.ndarray:
    """Isolated Gaussian/Lorentzian peaks and spikes (width 0.4–40 samples) on a flat or drifting baseline."""
    count = int(log_uniform(rng, 1.0, max(2.0, length / 16.0)))   # 1 … length/16, mostly few (log-uniform)
    t = np.arange(length, dtype=np.float64)
    centres = rng.uniform(0, length - 1, count)
    widths = np.where(rng.uniform(size=count) < 1 / 3, rng.uniform(0.4, 1.5, count), log_uniform(rng, 0.4, 40.0, count))
    heights = log_uniform(rng, 0.01, 1.0, count)
    lorentz = rng.uniform(size=count) < 0.3
    z = (t[None, :] - centres[:, None]) / widths[:, None]
    shapes = np.where(lorentz[:, None], 1.0 / (1.0 + z * z), np.exp(-0.5 * z * z))
    signal = (heights[:, None] * shapes).sum(0)
    drift = _baseline(length, rng)
    return signal + rng.uniform(0.0, 0.5) * signal.max() * unit_range(drift) if drift.any() else signal


def _envelope(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    kind = int(rng.integers(4))
    if kind == 0:
        return np.ones_like(x)
    if kind == 1:
        return np.exp(-0.5 * ((x - rng.uniform(0.2, 0.8)) / rng.uniform(0.1, 0.5)) ** 2)
    if kind == 2:
        return np.exp(-rng.uniform(0.5, 5.0) * (x if rng.uniform() < 0.5 else 1.0 - x))
    return 1.0 + rng.uniform(0.2, 0.9) * np.sin(2 * math.pi * rng.uniform(0.3, 2.0) * x + rng.uniform(0, 2 * math.pi))


def oscillations(length: int, rng: np.random.Generator, max_frequency: float = MAX_FREQUENCY) -> np.ndarray:
    """1–3 sinusoids or chirps (linear or exponential sweep), f ∈ [1/length, ``max_frequency``] cycles/sample,
    log-uniform, with envelopes."""
    t = np.arange(length, dtype=np.float64)
    x = t / max(length - 1, 1)
    lo_f = min(1.0 / length, max_frequency / 2)
    out = np.zeros(length)
    for _ in range(int(rng.integers(1, 4))):
        f0, f1 = log_uniform(rng, lo_f, max_frequency, 2)
        kind = int(rng.integers(3))
        if kind == 0:      # sinusoid
            phase = 2 * math.pi * f0 * t
        elif kind == 1:    # linear chirp f(t) = f0 + (f1 − f0)·t/length
            phase = 2 * math.pi * (f0 * t + (f1 - f0) * t * t / (2 * length))
        else:              # exponential chirp f(t) = f0·(f1/f0)^(t/length)
            k = math.log(f1 / f0) / length
            phase = 2 * math.pi * f0 * (np.expm1(k * t) / k if abs(k) > 1e-12 else t)
        out += log_uniform(rng, 0.1, 1.0) * _envelope(x, rng) * np.sin(phase + rng.uniform(0, 2 * math.pi))
    return out


def smooth_trend(length: int, rng: np.random.Generator) -> np.ndarray:
    """Chebyshev series (degree ≤ 6, coefficients ~ 1/(k+1)²) + ≤ 3 sigmoid steps (width 10–200) + slow cosines."""
    x = np.linspace(-1.0, 1.0, length)
    degree = int(rng.integers(1, 7))
    out = np.polynomial.chebyshev.chebval(x, rng.normal(0.0, 1.0, degree + 1) / np.arange(1, degree + 2) ** 2)
    t = np.arange(length, dtype=np.float64)
    for _ in range(int(rng.integers(0, 4))):
        out += rng.normal(0.0, 0.5) * 0.5 * (1 + np.tanh((t - rng.uniform(0, length)) / log_uniform(rng, 10.0, 200.0)))
    for _ in range(int(rng.integers(0, 4))):
        out += rng.normal(0.0, 0.2) * np.cos(2 * math.pi * rng.uniform(0.2, 3.0) * (x + 1) / 2 + rng.uniform(0, 2 * math.pi))
    return out


def sums(length: int, rng: np.random.Generator, max_frequency: float = MAX_FREQUENCY) -> np.ndarray:
    """w₁·u₁ + w₂·u₂ (+ w₃·u₃), each uᵢ a unit-range draw from another family, wᵢ log-uniform in [0.1, 1]."""
    out = np.zeros(length)
    for _ in range(int(rng.integers(2, 4))):
        name = FAMILIES[int(rng.integers(len(FAMILIES) - 1))]
        out += log_uniform(rng, 0.1, 1.0) * unit_range(draw(name, length, rng, max_frequency))
    return out


def draw(family: str, length: int, rng: np.random.Generator, max_frequency: float = MAX_FREQUENCY) -> np.ndarray:
    """One clean signal of ``family`` from ``rng`` (before the map onto [0, 1]); ``max_frequency``: the highest
    oscillation frequency, for the families that have oscillations (``oscillations``, ``sums``)."""
    if family in ('oscillations', 'sums'):
        return GENERATORS[family](length, rng, max_frequency)
    return GENERATORS[family](length, rng)


def check_max_frequency(max_frequency: float) -> None:
    """``max_frequency`` must lie in (0, 0.5] cycles per sample (0.5: Nyquist)."""
    if not 0.0 < max_frequency <= NYQUIST:
        raise ValueError(f"max_frequency must be in (0, {NYQUIST}] cycles per sample ({NYQUIST}: Nyquist), got "
                         f"{max_frequency}")


GENERATORS: Dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    'piecewise_constant': piecewise_constant, 'piecewise_smooth': piecewise_smooth, 'peaks': peaks,
    'oscillations': oscillations, 'smooth_trend': smooth_trend, 'sums': sums}


def add_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator, noise: str = 'gaussian') -> np.ndarray:
    """clean + σ·ε with ε of unit variance: white Gaussian, white Laplacian (scale 1/√2), or AR(1)
    ε_t = ρ ε_{t−1} + √(1 − ρ²) ξ_t (ρ = ``AR1_RHO``, stationary start, ξ white Gaussian)."""
    n = clean.shape[-1]
    if noise == 'gaussian':
        eps = rng.standard_normal(n)
    elif noise == 'laplace':
        eps = rng.laplace(0.0, 1.0 / math.sqrt(2.0), n)
    elif noise == 'ar1':
        xi = rng.standard_normal(n)
        eps = np.empty(n)
        eps[0] = xi[0]
        c = math.sqrt(1.0 - AR1_RHO ** 2)
        for i in range(1, n):
            eps[i] = AR1_RHO * eps[i - 1] + c * xi[i]
    else:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    return clean + sigma * eps


def make_family_signals(family: str, split: str, count: int, length: int, sigma, seed: int = 0, offset: int = 0,
                        noise: str = 'gaussian', max_frequency: float = MAX_FREQUENCY) -> SignalSet:
    """``count`` clean/noisy signals of ``family`` (indices ``offset … offset+count−1`` of ``split``), each
    clean signal on [0, 1]; ``sigma``: one level or one per signal. The noise is drawn from the signal's own
    generator after the clean signal, so the clean signal depends on neither σ nor the noise type.
    ``max_frequency``: the oscillations' highest frequency (:func:`draw`); the benchmark's families keep
    :data:`MAX_FREQUENCY`; another value keeps every random draw and maps the frequency draws onto its range."""
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ValueError(f"length must be in [{MIN_LENGTH}, {MAX_LENGTH}], got {length}")
    if count < 1:
        raise ValueError(f"count must be ≥ 1, got {count}")
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
    check_max_frequency(max_frequency)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (count,)).copy()
    if np.any(sig < 0) or not np.all(np.isfinite(sig)):
        raise ValueError(f"sigma must be finite and ≥ 0, got {sigma}")
    clean = np.empty((count, length))
    noisy = np.empty((count, length))
    for i in range(count):
        rng = family_rng(family, split, offset + i, seed)
        clean[i] = unit_range(draw(family, length, rng, max_frequency))
        noisy[i] = add_noise(clean[i], sig[i], rng, noise)
    return SignalSet(clean.astype(np.float32), noisy.astype(np.float32), sig, [np.zeros(0, np.int64)] * count,
                     family, split)


def training_batch(families: Sequence[str], batch_size: int, length: int, step: int, seed: int = 0,
                   sigma_range: Tuple[float, float] = SIGMA_RANGE, rank: int = 0, world: int = 1,
                   max_frequency: float = MAX_FREQUENCY) -> Tuple[torch.Tensor, torch.Tensor]:
    """(noisy, clean) ``[B, 1, length]`` float32 for one training step: per signal a family drawn uniformly
    from ``families`` and σ log-uniform in ``sigma_range``, from SeedSequence([seed, 7, step, rank]); signal
    index ``(step·world + rank)·B + i`` of the train split, so a run is a function of (seed, step) alone."""
    unknown = [f for f in families if f not in FAMILIES]
    if not families or unknown:
        raise ValueError(f"families must be a non-empty subset of {FAMILIES}, got {list(families)}")
    lo, hi = sigma_range
    if not 0 < lo <= hi:
        raise ValueError(f"sigma_range must satisfy 0 < low ≤ high, got {sigma_range}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7, step, rank]))
    picks = rng.integers(len(families), size=batch_size)
    sigmas = log_uniform(rng, lo, hi, batch_size)
    base = (step * world + rank) * batch_size
    noisy: List[np.ndarray] = []
    clean: List[np.ndarray] = []
    for i in range(batch_size):
        s = make_family_signals(families[picks[i]], 'train', 1, length, sigmas[i], seed=seed, offset=base + i,
                                max_frequency=max_frequency)
        noisy.append(s.noisy[0])
        clean.append(s.clean[0])
    return torch.from_numpy(np.stack(noisy))[:, None], torch.from_numpy(np.stack(clean))[:, None]
