"""Plain-CNN scale check for the denoiser-1d target (issue: "a plain 10-layer CNN with 130k parameters,
trained for 6 minutes on this CPU, already reaches +4.2 dB over tuned TV").

Trains, for a fixed wall-clock budget each, two plain 10-layer CNNs of ~130k parameters (3-tap
convolutions, ReLU, no normalisation, residual output f − CNN(f)) on the data of the ``denoiser-1d``
recipe (blind σ ∈ [0.04, 0.25], its loss, its batches), then reports PSNR on the test split
(piecewise-constant, length 1024, 64 signals per σ) against tuned TV and the oracle:

- ``plain``: dilation 1 everywhere, receptive field R = 21 samples.
- ``dilated``: dilations 1, 2, 4, 8, 16, 1, 2, 4, 8, 1, R = 95, the same parameters.

A network that sees R samples cannot beat the mean of R samples in a flat region, MSE σ²/R, i.e.
PSNR ≤ 10·log10(R/σ²) there (33.2 dB for R = 21 at σ = 0.1); jumps only lower it. The bound is
printed beside each result.

Run: ``python benchmarks/bench_plain_cnn.py [--minutes 6] [--threads 2]``; writes
``benchmarks/results/plain_cnn.md`` and ``.json``.
"""
import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Dict, List

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import Stopwatch, save_results  # noqa: E402

from pdeblocks.data import SIGMAS, make_signals, psnr  # noqa: E402
from pdeblocks.train.batches import denoise_batch  # noqa: E402
from pdeblocks.train.evaluate import EVAL_SEED, TEST_LENGTH, baseline_psnr  # noqa: E402
from pdeblocks.train.recipes import get_recipe  # noqa: E402
from pdeblocks.train.trainer import optimization_step  # noqa: E402

WIDTH = 74                       # 10 layers of 3-tap convolutions: 132,535 parameters
DILATIONS = {'plain': [1] * 10, 'dilated': [1, 2, 4, 8, 16, 1, 2, 4, 8, 1]}


class PlainCNN(nn.Module):
    """f − CNN(f), CNN = 10 convolutions (1 → W → … → W → 1, 3 taps, zero padding) with ReLU between."""

    def __init__(self, dilations: List[int], width: int = WIDTH):
        super().__init__()
        chans = [1] + [width] * (len(dilations) - 1) + [1]
        layers: List[nn.Module] = []
        for i, d in enumerate(dilations):
            layers.append(nn.Conv1d(chans[i], chans[i + 1], 3, padding=d, dilation=d))
            if i < len(dilations) - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.receptive_field = 1 + 2 * sum(dilations)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f - self.net(f)


def train_for(model: nn.Module, seconds: float) -> Dict[str, float]:
    """The denoiser-1d recipe's batches, loss and lr schedule (stretched to the steps that fit), Adam."""
    recipe = get_recipe('denoiser-1d')
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    # the cosine schedule needs a step count: estimated from the first 20 steps (still in the warm-up)
    watch, step, schedule = Stopwatch(), 0, recipe
    while True:
        elapsed = watch()
        if elapsed >= seconds:
            break
        if step == 20:
            schedule = dataclasses.replace(recipe, steps=int(seconds / (elapsed / 20)))
        x, y = denoise_batch(recipe, step, 0, 1)
        loss = optimization_step(schedule, step, model, opt, x, y)   # schedule: the recipe with the fitted length
        step += 1
    return dict(steps=step, seconds=watch(), final_loss=loss)


@torch.no_grad()
def psnr_on_test_split(model: nn.Module, sigma: float, count: int = 64) -> float:
    s = make_signals('piecewise_constant', 'test', count, TEST_LENGTH, sigma, seed=EVAL_SEED)
    out = torch.cat([model(torch.from_numpy(s.noisy[i:i + 16]).float()[:, None])[:, 0]
                     for i in range(0, count, 16)])
    return float(psnr(out.double().numpy(), s.clean).mean())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--minutes', type=float, default=6.0, help='training budget per network (default 6)')
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    a = p.parse_args(argv)
    if a.minutes <= 0:
        p.error(f"--minutes must be > 0, got {a.minutes}")
    torch.set_num_threads(a.threads)
    rows = []
    for name, dil in DILATIONS.items():
        torch.manual_seed(0)
        model = PlainCNN(dil)
        params = sum(q.numel() for q in model.parameters())
        run = train_for(model, 60.0 * a.minutes)
        model.eval()
        row = dict(model=name, params=params, receptive_field=model.receptive_field, **run)
        for sigma in SIGMAS:
            base = baseline_psnr('piecewise_constant', sigma, 64)
            row[str(sigma)] = dict(model=psnr_on_test_split(model, sigma), tv=base['tv'], oracle=base['oracle'],
                                   flat_region_bound=10 * math.log10(model.receptive_field / sigma ** 2))
        rows.append(row)
        print(f"{name}: {params:,} params, {run['steps']} steps in {run['seconds']:.0f} s, σ = 0.1: "
              f"{row['0.1']['model']:.2f} dB (TV {row['0.1']['tv']:.2f})", flush=True)
    lines = [f"# Plain 10-layer CNNs, {a.minutes:g} min of training each ({a.threads} threads), denoiser-1d recipe data",
             "", "PSNR (dB) on 64 piecewise-constant test signals of length 1024.", "",
             "| model | params | receptive field | steps | σ | CNN | tuned TV | CNN − TV | bound 10·log10(R/σ²) | oracle |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        for sigma in SIGMAS:
            c = r[str(sigma)]
            lines.append(f"| {r['model']} | {r['params']:,} | {r['receptive_field']} | {r['steps']} | {sigma} | "
                         f"{c['model']:.2f} | {c['tv']:.2f} | {c['model'] - c['tv']:+.2f} | "
                         f"{c['flat_region_bound']:.2f} | {c['oracle']:.2f} |")
    text = '\n'.join(lines) + '\n'
    print(text)
    save_results('plain_cnn', text, dict(minutes=a.minutes, threads=a.threads, rows=rows))


if __name__ == '__main__':
    main()
