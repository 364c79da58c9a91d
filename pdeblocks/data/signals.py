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
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

SPLITS = {'train': 0, 'val': 1, 'test': 2}
KINDS = ('piecewise_constant', 'piecewise_smooth')
SIGMAS = (0.05, 0.1, 0.2)
MIN_LENGTH, MAX_LENGTH = 16, 1 << 16


def signal_rng(kind: str, split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of one signal: SeedSequence([seed, split id, kind id, index])."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be ≥ 0, got index={index}, seed={seed}")
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], KINDS.index(kind), index]))


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


def psnr(estimate, clean, peak: float = 1.0):
    """Per-signal PSNR in dB, 10·log10(peak² / mean((estimate − clean)²)); inputs ``[..., length]``."""
    e = np.asarray(estimate, dtype=np.float64)
    c = np.asarray(clean, dtype=np.float64)
    mse = np.mean((e - c) ** 2, axis=-1)
    return 10.0 * np.log10(peak ** 2 / np.maximum(mse, 1e-20))
