"""Recipes and training loop of the general-purpose blind denoiser (:class:`~pdeblocks.models.blind.BlindDenoiser1D`)
on the signal families of :mod:`pdeblocks.data.families`.

Usage::

    OMP_NUM_THREADS=1 python -m pdeblocks.train.general RECIPE [--out DIR] [--resume] [--steps N]

Same recipe format, learning-rate schedule, loss and atomic checkpoint as :mod:`pdeblocks.train.trainer`
(:func:`~pdeblocks.train.trainer.save_checkpoint`: ``OUT/checkpoint.safetensors`` holds the model's
``state_dict`` — with every block's stored norm bound B — the anchors of the norm-bound caches, so a resumed
run computes the same τ as an uninterrupted one, the Adam state, and the JSON state in the metadata;
``OUT/checkpoint.json`` a readable copy), so ``--resume`` continues where an interrupted run stopped. The data differ: each step draws a fresh batch from
:func:`~pdeblocks.data.families.training_batch` (family uniform per signal, σ log-uniform in
[sigma_min, sigma_max]), a deterministic function of (recipe seed, step). The recipes live here (not
in :mod:`pdeblocks.train.recipes`) because the project trainer draws its batches from
:func:`pdeblocks.data.make_signals`, which knows two kinds only; once it dispatches on
``recipe.kinds`` ⊆ :data:`~pdeblocks.data.families.FAMILIES`, ``pdeblocks train`` can run them and
this loop can go.

Recipes: ``denoiser-1d-general`` (the full run), ``denoiser-1d-general-free`` (its free-step twin),
and ``schemes-<scheme>-<certified|free>`` (the short comparison of ``benchmarks/bench_denoise_schemes.py``:
one budget, 1 thread).
"""
import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .._io import atomic_write_json
from ..data import families
from ..data.families import FAMILIES, make_family_signals
from ..data.signals import psnr
from ..models.blind import BlindDenoiser1D
from .recipes import RECIPES, Recipe, register_recipe
from .trainer import build_model, learning_rate, load_checkpoint, optimization_step, resume_from, save_checkpoint

__all__ = ['train_general', 'register_general', 'family_psnr', 'save_checkpoint', 'load_checkpoint',
           'SCHEME_MODELS', 'SCHEME_BUDGET', 'GENERAL_SIGMAS']

GENERAL_SIGMAS = (0.005, 0.3)

# The scheme comparison: one short recipe and budget for every scheme, each certified and free.
SCHEME_MODELS: Dict[str, Dict[str, Any]] = {
    'explicit': dict(scheme='explicit', blocks=16),
    'fed': dict(scheme='fed', blocks=4, steps=4),
    'implicit': dict(scheme='implicit', blocks=4, steps=4, relative_step=4.0),
    'multigrid': dict(scheme='multigrid', scale=1, channels=12, levels=3, steps=2),
    # added after the first four: the multigrid cycle on the unshuffled grid of the explicit skeleton
    'multigrid-unshuffled': dict(scheme='multigrid', scale=8, channels=32, levels=3, growth=1, steps=2),
    'explicit-scale16': dict(scheme='explicit', scale=16, blocks=16),   # twice the reach per step, half the cost
    # the explicit skeleton followed by full-resolution edge-preserving diffusion (2 FED cycles of 8 steps)
    'explicit-refine': dict(scheme='explicit', blocks=16, refine_cycles=2, refine_steps=8, refine_channels=2),
    # the explicit skeleton followed by the semi-implicit full-resolution tail (exact tridiagonal solves, gated τ)
    'explicit-tail': dict(scheme='explicit', blocks=16, tail_steps=2),
    'explicit-tail-edges': dict(scheme='explicit', blocks=16, tail_steps=2, tail_edges=8),
}
SCHEME_BUDGET = dict(steps=1200, batch_size=16, length=512, lr=3e-3, warmup=50, checkpoint_every=200)


def _general(name: str, model: Dict[str, Any], description: str, published: bool = False,
             loss: str = 'relative_mse', **train: Any) -> Recipe:
    return register_recipe(Recipe(name=name, task='denoise', architecture=BlindDenoiser1D.architecture,
                                  model_kwargs=model, seed=0, kinds=FAMILIES, sigma_min=GENERAL_SIGMAS[0],
                                  sigma_max=GENERAL_SIGMAS[1], loss=loss, published=published,
                                  description=description, **train))


for _scheme, _kwargs in SCHEME_MODELS.items():
    for _stab, _label in (('euclidean', 'certified'), ('none', 'free')):
        _general(f'schemes-{_scheme}-{_label}', dict(_kwargs, stability=_stab),
                 f'scheme comparison: {_scheme}, {_label}, blind on all families, short budget', **SCHEME_BUDGET)


# the loss: every signal's dB counts alike (log), at the short budget
_general('schemes-explicit-refine-log-certified', dict(SCHEME_MODELS['explicit-refine'], stability='euclidean'),
         'scheme comparison: explicit + full-resolution refinement, certified, log relative MSE', loss='log_relative_mse',
         **SCHEME_BUDGET)


def register_general(model: Dict[str, Any], name: str = 'denoiser-1d-general', steps: int = 30000,
                     loss: str = 'relative_mse', published: bool = True, lr: float = 3e-3) -> None:
    """(Re)register recipe ``name`` and its free twin ``name-free`` for ``model`` kwargs."""
    train = dict(steps=steps, batch_size=32, length=512, lr=lr, warmup=100, checkpoint_every=250, loss=loss)
    _general(name, dict(model, stability='euclidean'),
             'general-purpose blind denoiser: certified, all signal families, σ ∈ [0.005, 0.3] of the range',
             published=published, **train)
    _general(f'{name}-free', dict(model, stability='none'),
             f'free-step twin of {name} (same skeleton, τ unconstrained, no guarantee)', **train)


# the choice of benchmarks/bench_denoise_schemes.py (docs/denoiser.md): 16 explicit certified steps, best mean
# validation PSNR at the short budget among the schemes that keep up with TV, certified = free twin within 0.1 dB
# (every constructor argument spelled out, so that a later change of a default cannot change a resumed run);
# revision v2 of denoiser-1d, bundled as denoiser-1d-v2 (trained as runs/denoiser-1d-general-v2)
GENERAL_MODEL = dict(scheme='explicit', scale=8, channels=32, hidden_channels=32, blocks=16, kernel_size=5, knots=16,
                     contrast=1.0, support=4.0, pad=32, interp_slack=1.005)
register_general(GENERAL_MODEL)
# tried and not published: + the full-resolution refinement and the log relative MSE (short budget, same seed:
# +0.17 / +0.08 dB mean, then +0.63 / +0.71 more), 12,000 steps. On the test split +0.06 / +0.16 dB mean over the
# families against the published model, piecewise constant +0.09, but QuadChirp 7 dB lower (docs/denoiser.md)
register_general(dict(GENERAL_MODEL, refine_cycles=2, refine_steps=8, refine_channels=2), 'denoiser-1d-general-refine',
                 steps=12000, loss='log_relative_mse', published=False)


# fine-tuning: recipe → (the saved model it starts from, the data step it starts at: batches its source never saw)
FINE_TUNES: Dict[str, Tuple[str, int]] = {}
# the published model + the semi-implicit full-resolution tail (2 exact tridiagonal steps, τ and λ per signal from a
# learned gate, τ = 0.1 at start: near the identity), fine-tuned from the published weights (docs/denoiser.md)
IMPLICIT_MODEL = dict(GENERAL_MODEL, tail_steps=2)
for _name, _model, _steps in (
        ('denoiser-1d-general-implicit', IMPLICIT_MODEL, 4000),
        ('denoiser-1d-general-implicit-edges', dict(IMPLICIT_MODEL, tail_edges=8), 4000),   # + the edge stop
        # three steps, the edge stop and the input mixed into the first right-hand side
        ('denoiser-1d-general-implicit-mix', dict(IMPLICIT_MODEL, tail_steps=3, tail_edges=8, tail_mix=True), 3000),
        # the cheapest: one step, the input mixed in
        ('denoiser-1d-general-implicit-mix1', dict(IMPLICIT_MODEL, tail_steps=1, tail_mix=True), 3000)):
    register_general(_model, _name, steps=_steps, lr=1e-3, published=False)
    FINE_TUNES[_name] = ('pdeblocks/pretrained/denoiser-1d-v2', 30000)   # revision v2's weights, bundled
    FINE_TUNES[f'{_name}-free'] = ('runs/denoiser-1d-general-free/model', 30000)

# fine-tunes whose source tensors under these prefixes are not copied (a stage rebuilt with other shapes)
RESTART: Dict[str, Tuple[str, ...]] = {}
# fine-tunes that train only some of the model's stages (names of BlindDenoiser1D's children); the others are frozen
# and run in eval mode, so the new stage learns on exactly the output the frozen model gives at inference
TRAINABLE: Dict[str, Tuple[str, ...]] = {}
# the semi-implicit candidate + the variational (IRLS) tail: 3 exact reweighted least-squares solves with the noisy
# input mixed into the data, τ, λ and β per signal from the gate (docs/denoiser.md); only the new stage trains
# started where segmentation pays (β = 0.9, λ = 0.01, τλ² = 1: measured on the candidate's own output, piecewise
# constant +1.9 / +1.6 dB); started at the identity (β = 0.02) the gate stayed there
IRLS_MODEL = dict(IMPLICIT_MODEL, irls_steps=3, irls_tau=1e4, irls_contrast=0.01, irls_mix=0.9)
for _name, _model, _loss in (('denoiser-1d-general-irls', IRLS_MODEL, 'relative_mse'),
                              ('denoiser-1d-general-irls-log', IRLS_MODEL, 'log_relative_mse'),
                              # + the selector: γ from a residual test blends w with the network's output
                              ('denoiser-1d-general-irls-select', dict(IRLS_MODEL, irls_select=0.2), 'relative_mse'),
                              ('denoiser-1d-general-irls-select-log', dict(IRLS_MODEL, irls_select=0.2),
                               'log_relative_mse')):
    register_general(_model, _name, steps=3000, lr=3e-3, loss=_loss, published=False)
    FINE_TUNES[_name] = ('runs/denoiser-1d-general-implicit/model', 34000)
    TRAINABLE[_name] = ('irls',)
# the measured choice (probes of 1,200 steps, validation split): the selector and the log loss (piecewise constant
# +2.7 / +2.0 dB, the other families within 0.15 dB); four IRLS steps and q = 0.75, the gate started where the probes'
# gates went (λ = 0.003, τλ² = 0.1, β = 0.9; fixed parameters of that kind gave 33.7 dB on piecewise constant at σ 0.1)
register_general(dict(IMPLICIT_MODEL, irls_steps=4, irls_tau=1.1e4, irls_contrast=0.003, irls_mix=0.9, irls_select=0.2,
                      irls_exponent=0.75), 'denoiser-1d-general-irls4', steps=3000, lr=3e-3, loss='log_relative_mse',
                 published=False)
FINE_TUNES['denoiser-1d-general-irls4'] = ('runs/denoiser-1d-general-implicit/model', 34000)
TRAINABLE['denoiser-1d-general-irls4'] = ('irls',)
# then everything together (the network may hand the tail sharper jumps), at a tenth of the learning rate, on batches
# neither stage saw
register_general(RECIPES['denoiser-1d-general-irls4'].model_kwargs, 'denoiser-1d-general-irls4-joint', steps=2500,
                 lr=3e-4, loss='log_relative_mse', published=False)
FINE_TUNES['denoiser-1d-general-irls4-joint'] = ('runs/denoiser-1d-general-irls4/model', 37000)
# and longer, from there (every family above its best peer after 2,500 steps; the mean at σ 0.1 still short of +2)
register_general(RECIPES['denoiser-1d-general-irls4'].model_kwargs, 'denoiser-1d-general-irls4-joint-long',
                 steps=6000, lr=3e-4, loss='log_relative_mse', published=False)
FINE_TUNES['denoiser-1d-general-irls4-joint-long'] = ('runs/denoiser-1d-general-irls4-joint/model', 39500)
# the free-step twin of that chain (v3 = -irls4-joint-long), for the twin-gap target: register_general registered each
# '-free' recipe with stability='none' (τ unconstrained in the network's explicit steps); the tails are unconditionally
# stable solves, the same in both twins. Each free stage starts from the previous free stage's run, at the same data
# step and with the same trained stages as its certified twin (-implicit-free starts from denoiser-1d-general-free)
for _name in ('denoiser-1d-general-irls4', 'denoiser-1d-general-irls4-joint', 'denoiser-1d-general-irls4-joint-long'):
    _source, _offset = FINE_TUNES[_name]
    FINE_TUNES[f'{_name}-free'] = (_source.replace('/model', '-free/model'), _offset)
    if _name in TRAINABLE:
        TRAINABLE[f'{_name}-free'] = TRAINABLE[_name]
# six IRLS steps instead of four on the long run's weights, only the tail re-tuned (fixed parameters: +0.26 dB on
# today's piecewise constant at σ 0.1 from 4 to 6 steps)
register_general(dict(RECIPES['denoiser-1d-general-irls4'].model_kwargs, irls_steps=6), 'denoiser-1d-general-irls6-long',
                 steps=1500, lr=1e-3, loss='log_relative_mse', published=False)
FINE_TUNES['denoiser-1d-general-irls6-long'] = ('runs/denoiser-1d-general-irls4-joint-long/model', 45500)
TRAINABLE['denoiser-1d-general-irls6-long'] = ('irls',)
# eight IRLS steps the same way, once the tails' C kernels made a step cost about 0.3 % of the model's time (more steps
# on weights tuned for fewer lose: 4 → 8 on the published weights −0.35 dB on today's piecewise constant at σ 0.1)
register_general(dict(RECIPES['denoiser-1d-general-irls4'].model_kwargs, irls_steps=8), 'denoiser-1d-general-irls8-long',
                 steps=1500, lr=1e-3, loss='log_relative_mse', published=False)
FINE_TUNES['denoiser-1d-general-irls8-long'] = ('runs/denoiser-1d-general-irls4-joint-long/model', 45500)
TRAINABLE['denoiser-1d-general-irls8-long'] = ('irls',)
# measured: −0.05 dB on today's piecewise constant at σ 0.1 against six steps (33.87 / 33.91), validation −0.09 there;
# six steps, then everything together as -irls4-joint did for four (+0.12 dB there on today's piecewise constant)
register_general(dict(RECIPES['denoiser-1d-general-irls4'].model_kwargs, irls_steps=6), 'denoiser-1d-general-irls6-joint',
                 steps=2500, lr=3e-4, loss='log_relative_mse', published=False)
FINE_TUNES['denoiser-1d-general-irls6-joint'] = ('runs/denoiser-1d-general-irls6-long/model', 47000)
# measured: today's piecewise constant at σ 0.1 33.92 (six steps' tail alone: 33.91), validation mean −0.04 dB at σ 0.1;
# the six-step tail alone, 3,000 more steps at a third of the learning rate, on batches it never saw
register_general(dict(RECIPES['denoiser-1d-general-irls4'].model_kwargs, irls_steps=6), 'denoiser-1d-general-irls6-long2',
                 steps=3000, lr=3e-4, loss='log_relative_mse', published=False)
FINE_TUNES['denoiser-1d-general-irls6-long2'] = ('runs/denoiser-1d-general-irls6-long/model', 47000)
TRAINABLE['denoiser-1d-general-irls6-long2'] = ('irls',)
# measured: 33.94 dB; a per-signal oracle over the gate's outputs reaches 34.18 there: the gate is what limits. Its
# features at the lags 1, 2, 4, …, 64 (28 instead of 16): the gate and the selector restart from their initialisation
# (started where segmentation pays, as -irls4), the rest from -irls6-long, only the tail trains
register_general(dict(RECIPES['denoiser-1d-general-irls4'].model_kwargs, irls_steps=6, irls_lag_base=2),
                 'denoiser-1d-general-irls6-lags2', steps=3000, lr=3e-3, loss='log_relative_mse', published=False)
FINE_TUNES['denoiser-1d-general-irls6-lags2'] = ('runs/denoiser-1d-general-irls6-long/model', 47000)
TRAINABLE['denoiser-1d-general-irls6-lags2'] = ('irls',)
RESTART['denoiser-1d-general-irls6-lags2'] = ('irls.gate.', 'irls.selector.')
# measured (validation): piecewise constant +0.12 dB at σ 0.1 over -irls4-joint-long, the mean +0.03; today's piecewise
# constant 33.88. Then 3,000 more tail steps at lr 1e-3 on batches it never saw
register_general(RECIPES['denoiser-1d-general-irls6-lags2'].model_kwargs, 'denoiser-1d-general-irls6-lags2-long',
                 steps=3000, lr=1e-3, loss='log_relative_mse', published=False)
FINE_TUNES['denoiser-1d-general-irls6-lags2-long'] = ('runs/denoiser-1d-general-irls6-lags2/model', 50000)
TRAINABLE['denoiser-1d-general-irls6-lags2-long'] = ('irls',)


def start_from(model: torch.nn.Module, folder: str, restart: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Copy the weights of the saved model in ``folder`` into ``model`` (a fine-tune's start). Every source tensor
    must fit ``model``; the model's tensors the source lacks (a new stage, e.g. the implicit tail) and those whose
    names start with one of ``restart`` (a stage rebuilt with other shapes) keep their initialisation. Returns
    {'source', 'new'}: the folder and the names of the tensors it did not set."""
    from ..hub import load_folder
    source = {k: v for k, v in load_folder(folder).state_dict().items() if not (restart and k.startswith(restart))}
    missing, unexpected = model.load_state_dict(source, strict=False)
    if unexpected:
        raise ValueError(f"{folder} holds tensors the model lacks: {sorted(unexpected)[:8]}")
    return dict(source=str(folder), new=sorted(missing))


def family_psnr(model: torch.nn.Module, sigmas: Sequence[float] = (0.05, 0.1), count: int = 16, length: int = 1024,
                split: str = 'val', seed: int = 0, families: Sequence[str] = FAMILIES) -> Dict[str, Dict[str, float]]:
    """Mean PSNR (dB) of ``model`` per family and σ on ``count`` signals of ``split`` (data seed ``seed``)."""
    model.eval()
    table: Dict[str, Dict[str, float]] = {}
    with torch.no_grad():
        for fam in families:
            table[fam] = {}
            for sigma in sigmas:
                s = make_family_signals(fam, split, count, length, sigma, seed=seed)
                out = model(torch.from_numpy(s.noisy)[:, None])[:, 0].numpy()
                table[fam][str(sigma)] = float(psnr(out, s.clean).mean())
    return table


def train_general(recipe_name: str, out: Optional[str] = None, resume: bool = False, steps: Optional[int] = None,
                  evaluate: bool = True, log_every: int = 50) -> Dict[str, Any]:
    """Train a recipe of this module; checkpoints every ``checkpoint_every`` steps; returns the final metrics
    (``OUT/eval.json``: validation PSNR per family at σ 0.05 and 0.1 when ``evaluate``)."""
    if recipe_name not in RECIPES:
        raise ValueError(f"unknown recipe {recipe_name!r}; valid recipes: {sorted(RECIPES)}")
    recipe = RECIPES[recipe_name]
    total = recipe.steps if steps is None else steps
    outdir = Path(out or f'runs/{recipe.name}')
    outdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe)
    source, data_offset = FINE_TUNES.get(recipe.name, (None, 0))
    started = start_from(model, source, RESTART.get(recipe.name, ())) if source else None
    trainable = TRAINABLE.get(recipe.name)
    frozen = [child for name, child in model.named_children() if trainable and name not in trainable]
    for child in frozen:
        child.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=recipe.lr)
    start, elapsed, loss_ema = resume_from(outdir, model, opt, recipe) if resume else (0, 0.0, None)
    model.train()
    for child in frozen:     # a frozen stage computes what it computes at inference
        child.eval()
    t0 = time.time()
    for step in range(start, total):
        x, y = families.training_batch(recipe.kinds, recipe.batch_size, recipe.length, data_offset + step,
                                       seed=recipe.seed, sigma_range=(recipe.sigma_min, recipe.sigma_max))
        lv = optimization_step(recipe, step, model, opt, x, y)
        loss_ema = lv if loss_ema is None else 0.98 * loss_ema + 0.02 * lv
        done = step + 1
        if done % log_every == 0:
            print(json.dumps(dict(step=done, loss_ema=round(loss_ema, 5), lr=round(learning_rate(recipe, step), 6),
                                  seconds=round(elapsed + time.time() - t0, 1))), flush=True)
        if done % recipe.checkpoint_every == 0 or done == total:
            save_checkpoint(outdir, model, opt, dict(step=done, recipe=recipe.to_dict(), loss=loss_ema,
                                                      elapsed=elapsed + time.time() - t0, world_size=1))
    result: Dict[str, Any] = dict(recipe=recipe.to_dict(), steps=total, train_seconds=elapsed + time.time() - t0,
                                  threads=torch.get_num_threads(), final_loss=loss_ema,
                                  parameters=sum(p.numel() for p in model.parameters()),
                                  trained_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad))
    if started:
        result['fine_tuned_from'] = dict(started, data_offset=data_offset)
    model.eval()
    model.save_pretrained(outdir / 'model')
    if evaluate:
        result['val_psnr'] = family_psnr(model)
        means = {s: float(np.mean([r[s] for r in result['val_psnr'].values()])) for s in ('0.05', '0.1')}
        result['val_psnr_mean'] = means
    atomic_write_json(outdir / 'eval.json', result)
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('recipe')
    p.add_argument('--out', default=None, help='run folder (default runs/RECIPE)')
    p.add_argument('--resume', action='store_true', help='continue from OUT/checkpoint.safetensors')
    p.add_argument('--steps', type=int, default=None, help='stop after this many steps (default: the recipe)')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--no-eval', action='store_true')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = train_general(a.recipe, a.out, a.resume, a.steps, evaluate=not a.no_eval)
    print(json.dumps({k: v for k, v in res.items() if k != 'recipe'}, indent=1))


if __name__ == '__main__':
    main()
