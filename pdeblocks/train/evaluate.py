"""Final evaluation of the 1D models (fixed data seed 0, independent of the recipe seed).

Recipes on the signal families (``data='families'``): mean PSNR per family and σ ∈ {0.05, 0.1} on the
validation split (the test split is :mod:`benchmarks.bench_denoise_general`'s, against tuned peers). The others,
on the test split:

Denoisers: mean PSNR per kind and σ ∈ {0.05, 0.1, 0.2} of the noisy input, the model, total-variation
denoising and Perona–Malik diffusion with parameters tuned on the validation split, and (piecewise
constant only) the Bayes limit (the posterior mean under the generator's prior, the least expected MSE
of any denoiser) and the segment-means oracle (told the jumps). Diffusion: mean relative L2 error against the RK4 fine
reference for the model, one FED cycle with as many steps as the model has layers (lagged and
non-lagged), the FED schedule the model starts from (``cycles`` cycles of n/cycles steps), the explicit scheme with that many steps, and the semi-implicit scheme with that many
steps.
"""
import functools
import time
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from ..classical import (
    explicit_steps,
    fed,
    implicit,
    make_flux,
    perona_malik_denoise,
    reference_error,
    relative_error,
    tune_perona_malik,
    tune_tv,
    tv_denoise,
)
from ..data.families import FAMILIES, make_family_signals
from ..data.signals import SIGMAS, bayes_segment_means, make_signals, oracle_segment_means, psnr
from .batches import diffusion_pairs

EVAL_SEED = 0
TEST_LENGTH = 1024


def run_model(model: torch.nn.Module, noisy: np.ndarray, batch: int = 64) -> np.ndarray:
    """Apply a 1D model (:meth:`~pdeblocks.models.denoise1d.Pretrained1D.predict`) to ``[count, L]`` numpy
    signals in eval mode, ``batch`` signals at a time."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float32))[:, None]
    return model.predict(x, chunk_samples=batch * x.shape[-1])[:, 0].numpy()


@functools.cache
def tuned_baselines(kind: str, sigma: float, val_count: int = 32, length: int = TEST_LENGTH) -> Dict[str, float]:
    """TV weight and Perona–Malik (λ, T) maximising mean PSNR on ``val_count`` validation signals."""
    v = make_signals(kind, 'val', val_count, length, sigma, seed=EVAL_SEED)
    w, tv_score = tune_tv(v.noisy, v.clean)
    lam, t, pm_score = tune_perona_malik(v.noisy, v.clean)
    return dict(tv_weight=w, tv_val_psnr=tv_score, pm_contrast=lam, pm_time=t, pm_val_psnr=pm_score)


@functools.cache
def baseline_psnr(kind: str, sigma: float, count: int, length: int = TEST_LENGTH) -> Dict[str, Any]:
    """Test-split PSNR of noisy input, tuned TV, tuned PM, the Bayes limit and the oracle for one (kind, σ)."""
    s = make_signals(kind, 'test', count, length, sigma, seed=EVAL_SEED)
    tuned = tuned_baselines(kind, sigma, length=length)
    f = torch.from_numpy(s.noisy).double()
    row: Dict[str, Any] = dict(noisy=float(psnr(s.noisy, s.clean).mean()),
                               tv=float(psnr(tv_denoise(f, tuned['tv_weight']).numpy(), s.clean).mean()),
                               perona_malik=float(psnr(perona_malik_denoise(f, tuned['pm_contrast'], tuned['pm_time'])
                                                       .numpy(), s.clean).mean()))
    if kind == 'piecewise_constant':
        row['bayes'] = float(psnr(bayes_segment_means(s.noisy, sigma), s.clean).mean())
        row['oracle'] = float(psnr(oracle_segment_means(s.noisy, s.starts), s.clean).mean())
    row['tuned'] = tuned
    return row


def evaluate_denoiser(model: torch.nn.Module, count: int = 64, length: int = TEST_LENGTH,
                      baselines: bool = True) -> Dict[str, Any]:
    table: Dict[str, Any] = {}
    for kind in ('piecewise_constant', 'piecewise_smooth'):
        table[kind] = {}
        for sigma in SIGMAS:
            s = make_signals(kind, 'test', count, length, sigma, seed=EVAL_SEED)
            row: Dict[str, Any] = dict(model=float(psnr(run_model(model, s.noisy), s.clean).mean()))
            if baselines:
                row.update(baseline_psnr(kind, sigma, count, length))
                row['model_minus_tv'] = row['model'] - row['tv']
            table[kind][str(sigma)] = row
    return dict(task='denoise', metric='psnr_db', count=count, length=length, data_seed=EVAL_SEED, table=table)


def evaluate_diffusion(model: torch.nn.Module, recipe, count: int = 64, length: int = TEST_LENGTH) -> Dict[str, Any]:
    kw = recipe.model_kwargs
    n, T, order, cycles = kw['layers'], kw['time'], kw.get('order', 1), kw.get('cycles', 1)
    flux = make_flux(recipe.flux, kw['contrast'])
    f, ref = diffusion_pairs(recipe, count, length, 'test', EVAL_SEED)
    with torch.no_grad():
        u_model = model(f.float()).double()
    errors = {
        'model': relative_error(u_model, ref),
        'fed_cycle': relative_error(fed(f, flux, T, n, order=order, lagged=True), ref),
        'fed_cycle_nonlagged': relative_error(fed(f, flux, T, n, order=order, lagged=False), ref),
        'fed_model_init': relative_error(fed(f, flux, T, n // cycles, cycles, order=order, lagged=False), ref),
        'fed_model_init_lagged': relative_error(fed(f, flux, T, n // cycles, cycles, order=order, lagged=True), ref),
        'explicit_same_steps': relative_error(explicit_steps(f, flux, T, n, order=order), ref),
        'implicit_same_steps': relative_error(implicit(f, flux, T, n, order=order), ref),
    }
    out = {k: dict(mean=float(v.mean()), max=float(v.max())) for k, v in errors.items()}
    lo = f.amin(dim=-1, keepdim=True) - 1e-6
    hi = f.amax(dim=-1, keepdim=True) + 1e-6
    violations = ((u_model < lo) | (u_model > hi)).any(dim=-1).double().mean()
    return dict(task='diffusion', metric='relative_l2_error', count=count, length=length, data_seed=EVAL_SEED,
                layers=n, cycles=cycles, time=T, contrast=kw['contrast'], flux=recipe.flux, order=order,
                errors=out, ratio_model_to_fed=out['model']['mean'] / out['fed_cycle']['mean'],
                reference_error=reference_error(f[:4], flux, T, order),
                max_min_violation_fraction=float(violations))


def standard_comparison(evaluation: Dict[str, Any], standard: torch.nn.Module, recipe_name: str,
                        sigma: str = '0.1') -> Dict[str, Any]:
    """The "half the parameters" check: the standard ResNet's test PSNR next to the symmetric model's
    ``evaluation`` (same test signals), and both parameter counts. ``symmetric_psnr`` /
    ``standard_psnr`` are the piecewise-constant figures at ``sigma``."""
    other = evaluate_denoiser(standard, count=evaluation['count'], length=evaluation['length'], baselines=False)
    table = {kind: {s: row['model'] for s, row in rows.items()} for kind, rows in other['table'].items()}
    return dict(standard_recipe=recipe_name,
                standard_parameters=sum(p.numel() for p in standard.parameters() if p.requires_grad),
                symmetric_parameters=evaluation['parameters'], standard_table=table,
                standard_psnr=table['piecewise_constant'][sigma],
                symmetric_psnr=evaluation['table']['piecewise_constant'][sigma]['model'])


def family_psnr(model: torch.nn.Module, sigmas: Sequence[float] = (0.05, 0.1), count: int = 16, length: int = TEST_LENGTH,
                split: str = 'val', seed: int = EVAL_SEED, families: Sequence[str] = FAMILIES) -> Dict[str, Dict[str, float]]:
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


def evaluate_families(model: torch.nn.Module, count: int = 16) -> Dict[str, Any]:
    """``val_psnr`` ({family: {σ: dB}}, :func:`family_psnr`) and ``val_psnr_mean`` ({σ: mean over the families})."""
    table = family_psnr(model, count=count)
    return dict(val_psnr=table, val_psnr_mean={s: float(np.mean([r[s] for r in table.values()])) for s in ('0.05', '0.1')})


def evaluate_model(model: torch.nn.Module, recipe, count: Optional[int] = None) -> Dict[str, Any]:
    t0 = time.time()
    if recipe.data == 'families':
        res = evaluate_families(model, count=count or 16)
    elif recipe.task == 'denoise':
        res = evaluate_denoiser(model, count=count or 64)
    else:
        res = evaluate_diffusion(model, recipe, count=count or 64)
    res['parameters'] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    res['eval_seconds'] = time.time() - t0
    return res
