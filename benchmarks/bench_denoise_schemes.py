"""Which certified scheme for the general blind denoiser: each scheme against its free-step twin, one budget.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_denoise_schemes.py --train [SCHEME ...]   (train, 1 thread)
    OMP_NUM_THREADS=1 python benchmarks/bench_denoise_schemes.py --report                (table only)

Every scheme of :data:`pdeblocks.train.general.SCHEME_MODELS` (explicit symmetric steps, FED cycles,
lagged implicit steps, multigrid V-cycle), certified (``stability='euclidean'``) and as its free-step twin
(``'none'``), wrapped in :class:`pdeblocks.models.blind.BlindDenoiser1D` and trained with the same short
recipe (``SCHEME_BUDGET``: 1200 steps of 16 signals of length 512 from all families, σ log-uniform in
[0.005, 0.3], seed 0, relative MSE, 1 thread) into ``runs/schemes/<recipe>/`` (resumable). The table:
mean validation PSNR per family at σ = 0.05 and 0.1 (16 signals per family and σ, length 1024, data
seed 0), certified − free, parameters, training seconds, and speed: 200 signals of length 4096
(σ = 0.1, piecewise constant), tuned TV's time over the model's, interleaved, TV stopped as in
bench_denoise, the bundled denoiser-1d timed alongside (0.97× TV there).

Writes benchmarks/results/denoise_schemes.md and .json (``--out NAME``: NAME.md and .json); the table has a row for
every scheme trained into ``runs/schemes/``.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import save_results  # noqa: E402
from bench_denoise_general import tv_chunked, tv_stop  # noqa: E402

from pdeblocks.data.signals import make_signals  # noqa: E402
from pdeblocks.hub import from_pretrained, load_folder  # noqa: E402
from pdeblocks.train.general import SCHEME_BUDGET, SCHEME_MODELS  # noqa: E402
from pdeblocks.train.trainer import train  # noqa: E402

RUNS = ROOT / 'runs' / 'schemes'
LABELS = ('certified', 'free')


def timing(models, n: int = 200, repeats: int = 3) -> dict:
    """Seconds for ``n`` piecewise-constant signals of length 4096 (σ = 0.1) per model, the bundled denoiser-1d
    (the reference: 0.97× TV in benchmarks/results/denoise.md) and TV, interleaved, median of ``repeats``; TV with
    the weight tuned at σ = 0.1 (pdeblocks/pretrained/denoiser-1d-piecewise-constant/eval.json) and bench_denoise's stop (the
    loosest duality gap within 0.01 dB of the exact solve, :func:`bench_denoise_general.tv_stop`)."""
    table = json.loads((ROOT / 'pdeblocks' / 'pretrained' / 'denoiser-1d-piecewise-constant' / 'eval.json').read_text())
    tv_weight = table['evaluation']['table']['piecewise_constant']['0.1']['tuned']['tv_weight']
    s = make_signals('piecewise_constant', 'test', n, 4096, 0.1, seed=0, offset=10_000)
    x = torch.from_numpy(s.noisy)[:, None]
    tol = tv_stop(x[:, 0], s.clean, tv_weight)
    models = dict(models, **{'denoiser-1d (bundled)': from_pretrained('denoiser-1d-piecewise-constant')})
    times = {k: [] for k in list(models) + ['tv']}
    with torch.no_grad():
        for m in models.values():
            m.eval()
            m(x[:4])
        for _ in range(repeats):
            for k, m in models.items():
                t0 = time.perf_counter()
                m.predict(x)
                times[k].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tv_chunked(x[:, 0], tv_weight, tol)
            times['tv'].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(seconds=med, speed_vs_tv={k: med['tv'] / med[k] for k in models}, signals=n, tv_tolerance=tol)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('--train', nargs='*', default=None, metavar='SCHEME', help='train these schemes (default: all)')
    p.add_argument('--report', action='store_true')
    p.add_argument('--out', default='denoise_schemes', help='results name (benchmarks/results/OUT.md and .json)')
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if a.train is not None:
        for scheme in a.train or list(SCHEME_MODELS):
            for label in LABELS:
                name = f'schemes-{scheme}-{label}'
                out = RUNS / name
                if (out / 'eval.json').is_file():
                    continue
                print('training', name, flush=True)
                train(name, str(out), resume=True, log_every=50)
    if not a.report:
        return
    rows, models = {}, {}
    for scheme in SCHEME_MODELS:
        for label in LABELS:
            run = RUNS / f'schemes-{scheme}-{label}'
            if (run / 'eval.json').is_file():
                rows[(scheme, label)] = json.loads((run / 'eval.json').read_text())
                models[f'{scheme}-{label}'] = load_folder(run / 'model')
    tp = timing(models)
    fams = list(next(iter(rows.values()))['val_psnr'])
    lines = [f"Scheme comparison: validation PSNR (dB), 16 signals per family and σ, length 1024; one budget "
             f"({SCHEME_BUDGET['steps']} steps × {SCHEME_BUDGET['batch_size']} signals of length "
             f"{SCHEME_BUDGET['length']}, 1 thread); speed: 200 signals × 4096, TV's time / the model's, interleaved (TV stop "
             f"{tp['tv_tolerance']:g}/sample; the bundled denoiser-1d: {tp['speed_vs_tv']['denoiser-1d (bundled)']:.2f}×)", '']
    for sigma in ('0.05', '0.1'):
        lines += [f'σ = {sigma}:', '', '| scheme | ' + ' | '.join(fams) + ' | mean | params | train s | speed vs TV |',
                  '|---' * (len(fams) + 5) + '|']
        for (scheme, label), r in rows.items():
            vals = [r['val_psnr'][f][sigma] for f in fams]
            name = f'{scheme}-{label}'
            lines.append(f"| {name} | " + ' | '.join(f'{v:.2f}' for v in vals) + f" | {np.mean(vals):.2f} | "
                         f"{r['parameters']:,} | {r['train_seconds']:.0f} | {tp['speed_vs_tv'][name]:.2f}× |")
        lines += ['', 'certified − free (dB):', '', '| scheme | ' + ' | '.join(fams) + ' | mean | worst |',
                  '|---' * (len(fams) + 3) + '|']
        for scheme in SCHEME_MODELS:
            if (scheme, 'certified') in rows and (scheme, 'free') in rows:
                d = [rows[(scheme, 'certified')]['val_psnr'][f][sigma] - rows[(scheme, 'free')]['val_psnr'][f][sigma]
                     for f in fams]
                lines.append(f"| {scheme} | " + ' | '.join(f'{v:+.2f}' for v in d) + f" | {np.mean(d):+.2f} | "
                             f"{min(d):+.2f} |")
        lines.append('')
    text = '\n'.join(lines) + '\n'
    print(text)
    save_results(a.out, text, dict(rows={f'{s}-{lb}': r for (s, lb), r in rows.items()}, timing=tp,
                                               budget=SCHEME_BUDGET, models=SCHEME_MODELS))


if __name__ == '__main__':
    main()
