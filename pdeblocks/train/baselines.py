"""Deprecated: the classical denoising baselines moved to :mod:`pdeblocks.classical`.

Importing this module warns (DeprecationWarning) and re-exports them under their old names.
"""
import warnings

from ..classical import (  # noqa: F401  (re-exports)
    PM_CONTRASTS,
    PM_MAX_TIME,
    perona_malik_denoise,
    perona_malik_path,
    tune_perona_malik,
    tune_tv,
    tuned_parameters,
    tv_denoise,
)

warnings.warn("pdeblocks.train.baselines is deprecated; import from pdeblocks.classical", DeprecationWarning,
              stacklevel=2)

__all__ = ['PM_CONTRASTS', 'PM_MAX_TIME', 'perona_malik_denoise', 'perona_malik_path', 'tune_perona_malik',
           'tune_tv', 'tuned_parameters', 'tv_denoise']
