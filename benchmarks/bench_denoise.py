"""Denoising benchmark: PSNR table per σ and throughput of denoiser-1d vs tuned total-variation denoising.

Usage:  python benchmarks/bench_denoise.py [--count 64] [--throughput-signals 1000] [--repeats 3]

PSNR: piecewise-constant test signals of length 1024 (data seed 0), mean PSNR (dB) per σ for the noisy
input, TV (weight tuned on the validation split), Perona–Malik (λ, T tuned on the validation split),
the standard (non-symmetric) ResNet with 2× block parameters trained with the same recipe
(benchmarks/models/denoiser-1d-standard), denoiser-1d, denoiser-1d-multigrid (if bundled) and the
oracle that knows the jump positions.

Throughput: N signals of length 4096 at σ = 0.1, model vs TV with the tuned weight, in one run,
interleaved (model, TV, model, TV, …), median of the repeats, same torch thread count for both. TV is
run in float32 in chunks of 50 signals (each chunk stops at its own duality-gap test), its fastest
configuration here; its PSNR is checked against the float64 solve used in the table.

Writes benchmarks/results/denoise.md and .json atomically.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pdeblocks.data import SIGMAS, make_signals, oracle_segment_means, psnr  # noqa: E402
from pdeblocks.hub import from_pretrained, list_pretrained, load_folder  # noqa: E402
from pdeblocks.train.baselines import perona_malik_denoise, tv_denoise  # noqa: E402
from pdeblocks.train.evaluate import run_model, tuned_baselines  # noqa: E402

STANDARD = ROOT / 'benchmarks' / 'models' / 'denoiser-1d-standard'


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f'.tmp{os.getpid()}')
    tmp.write_text(text)
    os.replace(tmp, path)


def tuned(sigma: float):
    """TV / PM parameters tuned on the validation split: the ones recorded by the bundled model's evaluation
    (pdeblocks/pretrained/denoiser-1d/eval.json) when present, else tuned now (same function)."""
    path = ROOT / 'pdeblocks' / 'pretrained' / 'denoiser-1d' / 'eval.json'
    if path.is_file():
        table = json.loads(path.read_text())['evaluation']['table']['piecewise_constant']
        if str(sigma) in table:
            return table[str(sigma)]['tuned']
    return tuned_baselines('piecewise_constant', sigma)


def psnr_table(models, count: int):
    rows = []
    for sigma in SIGMAS:
        s = make_signals('piecewise_constant', 'test', count, 1024, sigma, seed=0)
        t = tuned(sigma)
        f = torch.from_numpy(s.noisy).double()
        row = {'sigma': sigma, 'noisy': psnr(s.noisy, s.clean).mean(),
               'tv': psnr(tv_denoise(f, t['tv_weight']).numpy(), s.clean).mean(),
               'perona_malik': psnr(perona_malik_denoise(f, t['pm_contrast'], t['pm_time']).numpy(), s.clean).mean()}
        for name, m in models.items():
            row[name] = psnr(run_model(m, s.noisy), s.clean).mean()
        row['oracle'] = psnr(oracle_segment_means(s.noisy, s.starts), s.clean).mean()
        row['tuned'] = t
        rows.append({k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()})
    return rows


def tv_chunked(f: torch.Tensor, w: float, chunk: int = 50) -> torch.Tensor:
    return torch.cat([tv_denoise(f[i:i + chunk], w) for i in range(0, len(f), chunk)])


def throughput(model, n: int, repeats: int):
    s = make_signals('piecewise_constant', 'test', n, 4096, 0.1, seed=0, offset=10_000)
    w = tuned(0.1)['tv_weight']
    x = torch.from_numpy(s.noisy)
    times = {'model': [], 'tv': []}
    outs = {}
    with torch.no_grad():
        model(x[:4, None])  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            outs['model'] = torch.cat([model(x[i:i + 100, None])[:, 0] for i in range(0, n, 100)])
            times['model'].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            outs['tv'] = tv_chunked(x, w)
            times['tv'].append(time.perf_counter() - t0)
    tv64 = tv_chunked(x[:50].double(), w)
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(signals=n, length=4096, sigma=0.1, threads=torch.get_num_threads(), repeats=repeats,
                model_seconds=med['model'], tv_seconds=med['tv'], speedup=med['tv'] / med['model'],
                all_times=times, model_psnr=float(psnr(outs['model'].numpy(), s.clean).mean()),
                tv_psnr=float(psnr(outs['tv'].numpy(), s.clean).mean()),
                tv_float32_vs_float64_psnr_gap_first50=float(abs(psnr(outs['tv'][:50].numpy(), s.clean[:50]).mean()
                                                                 - psnr(tv64.numpy(), s.clean[:50]).mean())))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('--count', type=int, default=64)
    p.add_argument('--throughput-signals', type=int, default=1000)
    p.add_argument('--repeats', type=int, default=3)
    a = p.parse_args(argv)
    models = {}
    if STANDARD.is_dir():
        models['standard_resnet_2x'] = load_folder(STANDARD)
    models['denoiser-1d'] = from_pretrained('denoiser-1d')
    if 'denoiser-1d-multigrid' in list_pretrained():
        models['denoiser-1d-multigrid'] = from_pretrained('denoiser-1d-multigrid')
    params = {k: sum(q.numel() for q in m.parameters() if q.requires_grad) for k, m in models.items()}
    rows = psnr_table(models, a.count)
    tp = throughput(models['denoiser-1d'], a.throughput_signals, a.repeats)
    cols = ['noisy', 'tv', 'perona_malik'] + list(models) + ['oracle']
    head = {'noisy': 'noisy', 'tv': 'TV (tuned)', 'perona_malik': 'Perona–Malik (tuned)', 'oracle': 'oracle'}
    lines = [f"PSNR (dB), piecewise-constant test signals, length 1024, {a.count} per σ; parameters: "
             + ', '.join(f'{k} {v:,}' for k, v in params.items()), '',
             '| σ | ' + ' | '.join(head.get(c, c) for c in cols) + ' | denoiser-1d − TV | oracle − denoiser-1d |',
             '|---' * (len(cols) + 3) + '|']
    for r in rows:
        lines.append(f"| {r['sigma']} | " + ' | '.join(f'{r[c]:.2f}' for c in cols)
                     + f" | {r['denoiser-1d'] - r['tv']:+.2f} | {r['oracle'] - r['denoiser-1d']:.2f} |")
    lines += ['', f"Throughput: {tp['signals']} signals of length 4096, σ = 0.1, {tp['threads']} thread(s), median of "
              f"{tp['repeats']} interleaved repeats", '',
              '| method | seconds | PSNR (dB) |', '|---|---|---|',
              f"| denoiser-1d | {tp['model_seconds']:.2f} | {tp['model_psnr']:.2f} |",
              f"| TV (tuned, float32, duality gap ≤ 1e-7/sample) | {tp['tv_seconds']:.2f} | {tp['tv_psnr']:.2f} |",
              '', f"Speed-up denoiser-1d vs TV: **{tp['speedup']:.1f}×** (TV float32 vs float64 PSNR gap on 50 "
              f"signals: {tp['tv_float32_vs_float64_psnr_gap_first50']:.4f} dB)"]
    text = '\n'.join(lines) + '\n'
    print(text)
    out = ROOT / 'benchmarks' / 'results'
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / 'denoise.md', text)
    atomic_write(out / 'denoise.json', json.dumps(dict(psnr=rows, parameters=params, throughput=tp), indent=2))


if __name__ == '__main__':
    main()
