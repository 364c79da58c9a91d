"""Seeded 1D signals (piecewise constant / smooth with jumps), noise, splits, PSNR and the oracle."""
from .signals import (
    GENERATORS,
    KINDS,
    SIGMAS,
    SPLITS,
    SignalSet,
    make_signals,
    oracle_segment_means,
    piecewise_constant,
    piecewise_smooth,
    psnr,
    segment_starts,
    signal_rng,
)

__all__ = ['KINDS', 'SIGMAS', 'SPLITS', 'GENERATORS', 'SignalSet', 'make_signals', 'oracle_segment_means',
           'piecewise_constant', 'piecewise_smooth', 'psnr', 'segment_starts', 'signal_rng']
