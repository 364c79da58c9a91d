"""Training recipes, their data (batches), trainer (checkpoints, resume, DDP) and evaluation.

The classical baselines live in :mod:`pdeblocks.classical`; the general denoiser's recipes in
:mod:`pdeblocks.train.general` (registered on import, like the others).
"""
from . import general  # noqa: F401  (registers the general denoiser's recipes)
from .recipes import RECIPES, Recipe, get_recipe

__all__ = ['RECIPES', 'Recipe', 'get_recipe']
