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
seed 0), certified − free, parameters, training seconds, and seconds for 200 signals of length 4096
(σ = 0.1, piecewise constant) relative to tuned TV on the same signals, timed interleaved.

Writes benchmarks/results/denoise_schemes.md and .json.
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

from _results import save_results  # noqa: E402

from pdeblocks.data.signals import make_signals  # noqa: E402
from pdeblocks.hub import load_folder  # noqa: E402
from pdeblocks.classical import tv_denoise  # noqa: E402
from pdeblocks.train.general import SCHEME_BUDGET, SCHEME_MODELS, family_psnr, train_general  # noqa: E402

RUNS = ROOT / 'runs' / 'schemes'
LABELS = ('certified', 'free')


def timing(models, n: int = 200, repeats: int = 3) -> dict:
    """Seconds for ``n`` piecewise-constant signals of length 4096 (σ = 0.1) per model and for TV (duality gap
    ≤ 1e-4 per sample, chunks of 50), interleaved, median of ``repeats``. TV's weight: the one tuned at σ = 0.1
    on this data, recorded in pdeblocks/pretrained/denoiser-1d/eval.json."""
    table = json.loads((ROOT / 'pdeblocks' / 'pretrained' / 'denoiser-1d' / 'eval.json').read_text())
    tv_weight = table['evaluation']['table']['piecewise_constant']['0.1']['tuned']['tv_weight']
    x = torch.from_numpy(make_signals('piecewise_constant', 'test', n, 4096, 0.1, seed=0, offset=10_000).noisy)[:, None]
    times = {k: [] for k in list(models) + ['tv']}
    with torch.no_grad():
        for m in models.values():
            m.eval()
            m(x[:4])
        for _ in range(repeats):
            for k, m in models.items():
                t0 = time.perf_counter()
                torch.cat([m(x[i:i + 32]) for i in range(0, n, 32)])
                times[k].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            torch.cat([tv_denoise(x[i:i + 50, 0], tv_weight, tol=1e-4) for i in range(0, n, 50)])
            times['tv'].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(seconds=med, speed_vs_tv={k: med['tv'] / med[k] for k in models}, signals=n)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('--train', nargs='*', default=None, metavar='SCHEME', help='train these schemes (default: all)')
    p.add_argument('--report', action='store_true')
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
                train_general(name, str(out), resume=True)
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
             f"{SCHEME_BUDGET['length']}, 1 thread); speed: 200 signals × 4096 vs TV (gap 1e-4), interleaved", '']
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
    save_results('denoise_schemes', text, dict(rows={f'{s}-{lb}': r for (s, lb), r in rows.items()}, timing=tp,
                                               budget=SCHEME_BUDGET, models=SCHEME_MODELS))


if __name__ == '__main__':
    main()
