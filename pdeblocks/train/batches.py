"""The data of a recipe, step by step: denoising batches and diffusion pairs, deterministic per seed.

Shared by the trainer (training data) and the evaluation (test pairs), so neither imports the other's module.
"""
from typing import Tuple

import numpy as np
import torch

from ..classical import fine_reference, make_flux
from ..data import families
from ..data.signals import make_signals
from .recipes import Recipe


def denoise_batch(recipe: Recipe, step: int, rank: int, world: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(noisy, clean) ``[B, 1, length]`` for this step and rank, deterministic: the recipe's data at step
    ``data_offset + step``."""
    b = recipe.batch_size
    step = recipe.data_offset + step
    if recipe.data == 'families':
        return families.training_batch(recipe.kinds, b, recipe.length, step, seed=recipe.seed,
                                       sigma_range=(recipe.sigma_min, recipe.sigma_max), rank=rank, world=world,
                                       max_frequency=recipe.max_frequency)
    rng = np.random.default_rng(np.random.SeedSequence([recipe.seed, 7, step, rank]))
    sigma = np.exp(rng.uniform(np.log(recipe.sigma_min), np.log(recipe.sigma_max), size=b))
    kind = recipe.kinds[step % len(recipe.kinds)]
    s = make_signals(kind, 'train', b, recipe.length, sigma, seed=recipe.seed, offset=(step * world + rank) * b)
    return torch.from_numpy(s.noisy)[:, None], torch.from_numpy(s.clean)[:, None]


def diffusion_pairs(recipe: Recipe, count: int, length: int, split: str, seed: int):
    """(noisy input, fine reference at T) ``[count, 1, length]`` float64, half of each kind."""
    kw = recipe.model_kwargs
    flux = make_flux(recipe.flux, kw.get('contrast', 0.1))
    xs = []
    per_kind = [count // len(recipe.kinds) + (i < count % len(recipe.kinds)) for i in range(len(recipe.kinds))]
    for kind, c in zip(recipe.kinds, per_kind):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 11, len(xs)]))
        sigma = rng.uniform(recipe.sigma_min, recipe.sigma_max, size=c)
        xs.append(make_signals(kind, split, c, length, sigma, seed=seed).noisy)
    f = torch.from_numpy(np.concatenate(xs)).double()[:, None]
    ref = fine_reference(f, flux, kw.get('time', 10.0), kw.get('order', 1))
    return f, ref
