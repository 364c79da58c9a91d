"""Seeded 1D signals (piecewise constant / smooth with jumps), noise, splits, PSNR, the oracle and the Bayes limit."""
from .signals import (
    GENERATORS,
    KINDS,
    SIGMAS,
    SPLITS,
    SignalSet,
    bayes_segment_means,
    make_signals,
    oracle_segment_means,
    piecewise_constant,
    piecewise_smooth,
    psnr,
    segment_starts,
    signal_rng,
)

__all__ = ['KINDS', 'SIGMAS', 'SPLITS', 'GENERATORS', 'SignalSet', 'bayes_segment_means', 'make_signals', 'oracle_segment_means',
           'piecewise_constant', 'piecewise_smooth', 'psnr', 'segment_starts', 'signal_rng']
