"""Moved: the reference solvers of 1D nonlinear diffusion live in :mod:`pdeblocks.classical`.

This module re-exports them under their old names, so ``from pdeblocks.data.reference import fed``
and ``pdeblocks.data.reference.fine_reference`` keep working; new code imports :mod:`pdeblocks.classical`.
"""
from ..classical import (  # noqa: F401  (re-exports)
    FluxFn,
    diffusion_operator,
    explicit,
    explicit_steps,
    fed,
    fine_reference,
    implicit,
    make_flux,
    reference_error,
    relative_error,
    rhs,
    rk4,
    stable_step,
)

__all__ = ['FluxFn', 'diffusion_operator', 'explicit', 'explicit_steps', 'fed', 'fine_reference', 'implicit',
           'make_flux', 'reference_error', 'relative_error', 'rhs', 'rk4', 'stable_step']
