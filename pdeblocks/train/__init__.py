"""Training recipes, trainer (checkpoints, resume, DDP), evaluation and classical baselines."""
from .recipes import RECIPES, Recipe, get_recipe

__all__ = ['RECIPES', 'Recipe', 'get_recipe']
