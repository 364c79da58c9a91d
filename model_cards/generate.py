"""Regenerate model_cards/<name>/README.md (+ examples.png, flux.png) for every bundled model from its
evaluation JSON (pdeblocks/pretrained/<name>/eval.json, written by `pdeblocks train`).

Usage:  python model_cards/generate.py [NAME ...]

Install the general blind denoiser (a run of ``pdeblocks train denoiser-1d-general``, any
BlindDenoiser1D) as the bundled ``denoiser-1d``, then write every card (the others point to it)::

    python model_cards/generate.py --install runs/denoiser-1d-general-v2 denoiser-1d
    python model_cards/generate.py

For a blind run the install writes eval.json = the run's eval.json plus (:func:`blind_evaluation`, about a
minute on one thread, no training, no tuning)

* ``evaluation``: the project's test split of today's piecewise-constant and piecewise-smooth signals
  (the table of every bundled denoiser): the model's PSNR computed here, the baselines (tuned TV and
  Perona–Malik, Bayes limit, oracle) copied from the bundled model of recipe ``denoiser-1d`` (the same
  signals; its noisy and oracle columns are recomputed here and must agree);
* ``families``: per family and σ of ``benchmarks/results/denoise_general.json`` (``--benchmark``; written by
  ``benchmarks/bench_denoise_general.py``), the tuned peers (TV, Perona–Malik, wavelet BayesShrink) read from
  it, the model's PSNR recomputed here for these weights on the same test signals (BayesShrink is recomputed
  too and must agree, which checks that the signals are the benchmark's), likewise the Laplacian / AR(1)
  rows, the classic test signals and (where the benchmark has them) the oscillating families drawn up to Nyquist,
  and the other bundled denoisers on the same family signals (the card's "which model" table).

Install trained runs first:  python model_cards/generate.py --install RUN_DIR NAME [--install ...] [--standard RUN_DIR]
copies RUN_DIR/model/{config.json,model.safetensors} and RUN_DIR/eval.json into pdeblocks/pretrained/NAME/.
A run trained with ``--no-eval`` is evaluated here first (the same ``evaluate_model`` the trainer calls).
``--standard RUN_DIR``: a standard-ResNet run of the same recipe; its test PSNR is added to eval.json as
the ``comparison`` block (the "half the parameters" check) and its model is kept for
``benchmarks/bench_denoise.py`` in benchmarks/models/<its recipe>/.

Re-evaluate bundled models (after a change to the evaluation or its baselines, weights untouched):
python model_cards/generate.py --reevaluate NAME [NAME ...] recomputes eval.json's ``evaluation`` (and the
``comparison`` block from the kept standard model) with the current ``evaluate_model``, then writes the cards.
"""
import argparse
import importlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pdeblocks._io import atomic_write_json  # noqa: E402
from pdeblocks.cards import write_card  # noqa: E402
from pdeblocks.data.families import NYQUIST, make_family_signals  # noqa: E402
from pdeblocks.data.signals import make_signals, oracle_segment_means, psnr  # noqa: E402
from pdeblocks.hub import BUNDLED_DIR, list_pretrained, load_folder, published_name  # noqa: E402
from pdeblocks.models.blind import BlindDenoiser1D  # noqa: E402
from pdeblocks.train.evaluate import evaluate_denoiser, evaluate_model, run_model, standard_comparison  # noqa: E402
from pdeblocks.train.recipes import get_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STANDARD_MODELS = ROOT / 'benchmarks' / 'models'
BENCHMARK = ROOT / 'benchmarks' / 'results' / 'denoise_general.json'
CARDS = Path(__file__).resolve().parent   # model_cards/<name>/ of this checkout
SPECIALIST_RECIPE = 'denoiser-1d'          # its bundled evaluation holds the baselines of today's test split
BENCH_COUNT = 32                           # bench_denoise_general's --count (its JSON does not record it)
AGREE_DB = 1e-6                            # recomputed columns must equal the stored ones to this


def _bench_module():
    """benchmarks/bench_denoise_general.py as a module (its BayesShrink and classic test signals)."""
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    return importlib.import_module('bench_denoise_general')


def _mean_psnr(out: np.ndarray, clean: np.ndarray) -> float:
    return float(psnr(out, clean).mean())


def _check(what: str, stored: float, recomputed: float) -> None:
    if abs(stored - recomputed) > AGREE_DB:
        raise ValueError(f"{what}: stored {stored:.6f} dB, recomputed {recomputed:.6f} dB; the stored baselines are "
                         f"not of these test signals (regenerate them)")


def todays_evaluation(model: torch.nn.Module) -> Dict[str, Any]:
    """``evaluate_denoiser``'s table for ``model``: its column computed, the baselines of the specialist's
    bundled evaluation (same test signals; noisy and oracle recomputed and checked)."""
    source = published_name(SPECIALIST_RECIPE)
    base = json.loads((BUNDLED_DIR / source / 'eval.json').read_text())['evaluation']
    own = evaluate_denoiser(model, count=base['count'], length=base['length'], baselines=False)
    for kind, rows in own['table'].items():
        for sigma, row in rows.items():
            ref = base['table'][kind][sigma]
            s = make_signals(kind, 'test', base['count'], base['length'], float(sigma), seed=base['data_seed'])
            _check(f'{kind} σ = {sigma} noisy', ref['noisy'], _mean_psnr(s.noisy, s.clean))
            if 'oracle' in ref:
                _check(f'{kind} σ = {sigma} oracle', ref['oracle'],
                       _mean_psnr(oracle_segment_means(s.noisy, s.starts), s.clean))
            row.update({k: v for k, v in ref.items() if k not in ('model', 'model_minus_tv')})
            row['model_minus_tv'] = row['model'] - row['tv']
    own['parameters'] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    own['baselines_from'] = source
    return own


def family_evaluation(model: torch.nn.Module, bench: Dict[str, Any], bench_path: str, name: str) -> Dict[str, Any]:
    """Per family and σ (and per classic test signal): the benchmark's tuned peers, this model's PSNR on the same
    signals, the benchmark's BayesShrink recomputed as the check that they are the same signals."""
    bm = _bench_module()
    peers = list(bm.PEERS)
    bench_model = next(iter(bench['parameters']))           # the benchmark's own model column
    others = {n: load_folder(BUNDLED_DIR / n) for n in list_pretrained()
              if n != name and json.loads((BUNDLED_DIR / n / 'eval.json').read_text())['recipe']['task']
              == 'denoise'}
    table: Dict[str, Dict[str, Any]] = {}
    drift: List[float] = []
    for r in bench['families']:
        fam, sigma = r['family'], r['sigma']
        s = make_family_signals(fam, 'test', BENCH_COUNT, bm.LENGTH, sigma)
        _check(f'{fam} σ = {sigma} BayesShrink', r['psnr']['bayes_shrink'],
               _mean_psnr(bm.bayes_shrink(s.noisy, r['tuned']['bayes_shrink'][0]), s.clean))
        row = {k: r['psnr'][k] for k in ['noisy'] + peers}
        out = run_model(model, s.noisy)
        row['model'] = _mean_psnr(out, s.clean)
        row['best_peer'] = max(row[k] for k in peers)
        row['model_first32'] = _mean_psnr(out[:, :bm.EDGE], s.clean[:, :bm.EDGE])
        row['model_last32'] = _mean_psnr(out[:, -bm.EDGE:], s.clean[:, -bm.EDGE:])
        row['tuned'] = r['tuned']
        row['others'] = {n: _mean_psnr(run_model(m, s.noisy), s.clean) for n, m in others.items()}
        noise_rows = {}
        for noise, stored in r.get('other_noise', {}).items():
            t = make_family_signals(fam, 'test', BENCH_COUNT, bm.LENGTH, sigma, noise=noise)
            noise_rows[noise] = dict({k: stored[k] for k in ['noisy'] + peers},
                                     model=_mean_psnr(run_model(model, t.noisy), t.clean))
        row['other_noise'] = noise_rows
        if bench_model in r['psnr']:
            drift.append(abs(r['psnr'][bench_model] - row['model']))
        table.setdefault(fam, {})[str(sigma)] = row
    classics: Dict[str, Dict[str, Any]] = {}
    for r in bench.get('classics', []):
        name, sigma = r['signal'], r['sigma']
        noisy, clean = bm.classic_noisy(name, sigma, 2, 8)
        _check(f'{name} σ = {sigma} BayesShrink', r['psnr']['bayes_shrink'],
               _mean_psnr(bm.bayes_shrink(noisy, r['tuned']['bayes_shrink'][0]), clean))
        row = {k: r['psnr'][k] for k in ['noisy'] + peers}
        row['model'] = _mean_psnr(run_model(model, noisy), clean)
        row['best_peer'] = max(row[k] for k in peers)
        classics.setdefault(name, {})[str(sigma)] = row
    nyquist: Dict[str, Dict[str, Any]] = {}
    for r in bench.get('nyquist', []):           # the oscillating families drawn up to Nyquist
        fam = r['family'].replace(' (to Nyquist)', '')
        s = make_family_signals(fam, 'test', BENCH_COUNT, bm.LENGTH, r['sigma'], max_frequency=NYQUIST)
        _check(f"{r['family']} σ = {r['sigma']} BayesShrink", r['psnr']['bayes_shrink'],
               _mean_psnr(bm.bayes_shrink(s.noisy, r['tuned']['bayes_shrink'][0]), s.clean))
        row = {k: r['psnr'][k] for k in ['noisy'] + peers}
        row['model'] = _mean_psnr(run_model(model, s.noisy), s.clean)
        row['best_peer'] = max(row[k] for k in peers)
        nyquist.setdefault(fam, {})[str(r['sigma'])] = row
    return dict(source=bench_path, benchmark_model=dict(name=bench_model, folder=bench.get('models', {}).get('model'),
                                                        same_weights=bool(drift) and max(drift) < 0.01),
                count=BENCH_COUNT, length=bm.LENGTH, edge=bm.EDGE, peers=peers, table=table, classics=classics,
                draws=8, **({'nyquist': nyquist} if nyquist else {}))


def blind_evaluation(model: BlindDenoiser1D, result: Dict[str, Any], bench_path: Path, name: str) -> Dict[str, Any]:
    """The run's eval.json plus ``evaluation`` (today's test split) and ``families`` (module docstring)."""
    if not bench_path.is_file():
        raise ValueError(f"no benchmark results at {bench_path}: run benchmarks/bench_denoise_general.py first "
                         f"(or pass --benchmark)")
    bench = json.loads(bench_path.read_text())
    try:
        rel = str(bench_path.resolve().relative_to(ROOT))
    except ValueError:
        rel = str(bench_path)
    return dict(result, evaluation=todays_evaluation(model), families=family_evaluation(model, bench, rel, name))


def evaluated(run: Path) -> dict:
    """RUN/eval.json with its ``evaluation`` (computed and written back when the run skipped it)."""
    result = json.loads((run / 'eval.json').read_text())
    if 'evaluation' not in result:
        model = load_folder(run / 'model')
        result['evaluation'] = evaluate_model(model, get_recipe(result['recipe']['name']))
        atomic_write_json(run / 'eval.json', result)
    return result


def install(run_dir: str, name: str, standard_dir: str = None, benchmark: Path = BENCHMARK) -> None:
    """Copy RUN/model/{config.json, model.safetensors} into pdeblocks/pretrained/NAME/ with its eval.json (a
    blind run: :func:`blind_evaluation`); a ``revisions.json`` already there is kept."""
    run = Path(run_dir)
    model = load_folder(run / 'model')  # must load strictly
    if isinstance(model, BlindDenoiser1D):
        if standard_dir:
            raise ValueError("--standard applies to Denoiser1D runs, not to a blind run")
        model.eval()
        result = blind_evaluation(model, json.loads((run / 'eval.json').read_text()), Path(benchmark), name)
    else:
        result = evaluated(run)
    if standard_dir:
        std = Path(standard_dir)
        std_result = json.loads((std / 'eval.json').read_text())
        result['comparison'] = standard_comparison(result['evaluation'], load_folder(std / 'model'),
                                                   std_result['recipe']['name'])
        keep = STANDARD_MODELS / std_result['recipe']['name']
        keep.mkdir(parents=True, exist_ok=True)
        for src in (std / 'model' / 'config.json', std / 'model' / 'model.safetensors', std / 'eval.json'):
            shutil.copy2(src, keep / src.name)
    dest = BUNDLED_DIR / name
    dest.mkdir(parents=True, exist_ok=True)
    for src in (run / 'model' / 'config.json', run / 'model' / 'model.safetensors'):
        shutil.copy2(src, dest / src.name)
    atomic_write_json(dest / 'eval.json', result)
    print(f"installed {run} as {dest}")


def reevaluate(name: str, benchmark: Path = BENCHMARK) -> None:
    """Recompute the bundled model's ``evaluation`` (and ``comparison``, or for a blind model ``families``) in its
    eval.json; training fields kept."""
    dest = BUNDLED_DIR / name
    result = json.loads((dest / 'eval.json').read_text())
    model = load_folder(dest)
    if isinstance(model, BlindDenoiser1D):
        kept = {k: v for k, v in result.items() if k not in ('evaluation', 'families')}
        atomic_write_json(dest / 'eval.json', blind_evaluation(model, kept, Path(benchmark), name))
        print(f"re-evaluated {dest}")
        return
    result['evaluation'] = evaluate_model(model, get_recipe(result['recipe']['name']))
    if 'comparison' in result:
        std_recipe = result['comparison']['standard_recipe']
        result['comparison'] = standard_comparison(result['evaluation'], load_folder(STANDARD_MODELS / std_recipe),
                                                   std_recipe)
    atomic_write_json(dest / 'eval.json', result)
    print(f"re-evaluated {dest}")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('names', nargs='*', help='bundled models whose cards to write (default: all)')
    p.add_argument('--install', nargs=2, action='append', metavar=('RUN_DIR', 'NAME'),
                   help='install a trained run first (repeatable: one process shares the baseline evaluations)')
    p.add_argument('--standard', metavar='RUN_DIR', help="with --install: the standard-ResNet comparison run "
                   "(for the installed run named 'denoiser-1d-piecewise-constant')")
    p.add_argument('--reevaluate', nargs='+', default=[], metavar='NAME',
                   help='recompute the evaluation of these bundled models (one process shares the baselines)')
    p.add_argument('--benchmark', default=str(BENCHMARK), help='with --install of a blind run: the results of '
                   'benchmarks/bench_denoise_general.py (default: %(default)s)')
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    names = a.names
    for name in a.reevaluate:
        reevaluate(name, Path(a.benchmark))
    for run_dir, name in a.install or []:
        install(run_dir, name, a.standard if name == 'denoiser-1d-piecewise-constant' else None, Path(a.benchmark))
    names = names or [name for _, name in a.install or []] + a.reevaluate
    for name in names or list_pretrained():
        print('wrote', write_card(name, CARDS / name) / 'README.md')


if __name__ == '__main__':
    main(sys.argv[1:])
