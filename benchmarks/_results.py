"""Moved: results writing lives in :mod:`_common` (with timing and data loading); this re-exports it for
the scripts that still import ``from _results import …``."""
from _common import RESULTS, save_results, write_atomic  # noqa: F401

__all__ = ['RESULTS', 'save_results', 'write_atomic']
