"""Training recipes, their data (batches), trainer (checkpoints, resume, DDP) and evaluation.

The classical baselines live in :mod:`pdeblocks.classical`.
"""
from .recipes import RECIPES, Recipe, get_recipe

__all__ = ['RECIPES', 'Recipe', 'get_recipe']
