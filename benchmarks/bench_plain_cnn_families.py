"""What an unconstrained plain CNN reaches on the general denoiser's signal families (issue 17's σ = 0.1 targets).

The general denoiser (``denoiser-1d``, v3) misses two targets at σ = 0.1: the mean over the families of
(model − best tuned peer) ≥ +2 dB (v3: +1.72) and today's piecewise constant ≥ 34.0 dB (v3: 33.80), and its
free-step twin misses them too (+1.78, 33.74). This script asks whether a network of another kind, without any
certificate, gets there under the same parameter limit (≤ 150k) and a comparable training budget: a blind, scale-free
plain CNN, D(f) = c + σ̂·(u − N(u)), u = (f − c)/σ̂, with c the median and σ̂ the blind model's own noise estimate
(:func:`pdeblocks.ops.noise.noise_sigma`); N = 13 dilated 3-tap convolutions (dilations 1 … 32 twice, then 1;
width 64, ReLU between, receptive field 255 samples; 136,321 parameters), reflect padding by half the field.

Training: the general recipes' data (:func:`pdeblocks.data.families.training_batch`: every family, σ log-uniform in
[0.005, 0.3], 32 signals of 512 samples per step, seed 0), the log relative MSE, Adam with the trainer's warm-up and
cosine schedule (:func:`pdeblocks.train.trainer.optimization_step`), one thread. Evaluation: the protocol of
``bench_denoise_general.py`` (its functions; test split, 32 signals per family and σ, peers tuned on validation
signals, cached in ``denoise_general_tuned.json``; today's piecewise constant on 64 signals), against v3 and its free
twin from ``denoise_general_v3_free.json``.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_plain_cnn_families.py [--steps 8000] [--lr 1e-3]``; writes
``benchmarks/results/plain_cnn_families.md`` and ``.json``, the weights to ``runs/plain-cnn-families/`` (safetensors).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

from _common import RESULTS, save_results  # noqa: E402
from bench_denoise_general import PEERS, family_rows, todays_piecewise_constant  # noqa: E402
from bench_plain_cnn import PlainCNN  # noqa: E402

from pdeblocks.data.families import FAMILIES, SIGMA_RANGE, training_batch  # noqa: E402
from pdeblocks.ops.noise import median_last, noise_sigma  # noqa: E402
from pdeblocks.train.recipes import Recipe  # noqa: E402
from pdeblocks.train.trainer import learning_rate, optimization_step  # noqa: E402

DILATIONS = (1, 2, 4, 8, 16, 32, 1, 2, 4, 8, 16, 32, 1)
WIDTH = 64
SIGMAS = (0.05, 0.1)


class PlainBlindCNN(PlainCNN):
    """D(f) = c + σ̂·(u − N(u)), u = (f − c)/σ̂ (see the module docstring); f unchanged where σ̂ = 0. N is
    ``bench_plain_cnn.py``'s plain CNN with the dilations and width above."""

    def __init__(self, dilations=DILATIONS, width: int = WIDTH):
        super().__init__(list(dilations), width)
        self.pad = (self.receptive_field - 1) // 2

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        sigma = noise_sigma(f)
        centre = median_last(f)
        scale = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
        p = min(self.pad, f.shape[-1] - 1)
        x = F.pad((f - centre) / scale, (p, p), mode='reflect')
        v = super().forward(x)[..., p:p + f.shape[-1]]
        return torch.where(sigma > 0, centre + scale * v, f)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=8000)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--count', type=int, default=32)
    p.add_argument('--out', default=str(ROOT / 'runs' / 'plain-cnn-families'))
    a = p.parse_args(argv)
    recipe = Recipe(name='plain-cnn-families', task='denoise', architecture='plain_blind_cnn', seed=0, steps=a.steps,
                    batch_size=32, length=512, lr=a.lr, warmup=100, kinds=FAMILIES, sigma_min=SIGMA_RANGE[0],
                    sigma_max=SIGMA_RANGE[1], loss='log_relative_mse')
    torch.manual_seed(recipe.seed)
    model = PlainBlindCNN()
    params = sum(q.numel() for q in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    model.train()
    t0, ema = time.time(), None
    for step in range(recipe.steps):
        x, y = training_batch(FAMILIES, recipe.batch_size, recipe.length, step, seed=recipe.seed,
                              sigma_range=(recipe.sigma_min, recipe.sigma_max))
        lv = optimization_step(recipe, step, model, opt, x, y)
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if (step + 1) % 250 == 0:
            print(json.dumps(dict(step=step + 1, loss_ema=round(ema, 5), lr=round(learning_rate(recipe, step), 6),
                                  seconds=round(time.time() - t0, 1))), flush=True)
    seconds = time.time() - t0
    model.eval()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / 'model.safetensors'))

    name = 'plain CNN'
    rows = family_rows({name: model}, SIGMAS, a.count)
    todays = todays_piecewise_constant({name: model}, SIGMAS)
    v3 = json.loads((RESULTS / 'denoise_general_v3_free.json').read_text())
    v3_rows = {(r['family'], r['sigma']): r for r in v3['families']}
    lines = [f"Plain blind CNN ({params:,} parameters, receptive field {1 + 2 * sum(DILATIONS)}), {recipe.steps} steps "
             f"× 32 signals of 512, log relative MSE, lr {recipe.lr}, {seconds / 60:.0f} min on "
             f"{torch.get_num_threads()} thread(s); test split, {a.count} signals per family and σ", '',
             '| family | σ | best tuned peer | plain CNN | − best peer | v3 − best peer | v3 free twin − best peer |',
             '|---|---|---:|---:|---:|---:|---:|']
    margins = {s: {'plain': [], 'v3': [], 'free': []} for s in SIGMAS}
    for r in rows:
        ref = v3_rows[(r['family'], r['sigma'])]
        best = max(r['psnr'][q] for q in PEERS)
        got = {'plain': r['psnr'][name] - best, 'v3': ref['psnr']['denoiser-1d'] - ref['best_peer'],
               'free': ref['psnr']['denoiser-1d (free twin)'] - ref['best_peer']}
        for k, v in got.items():
            margins[r['sigma']][k].append(v)
        lines.append(f"| {r['family']} | {r['sigma']} | {best:.2f} | {r['psnr'][name]:.2f} | {got['plain']:+.2f} | "
                     f"{got['v3']:+.2f} | {got['free']:+.2f} |")
    for s in SIGMAS:
        m = {k: float(np.mean(v)) for k, v in margins[s].items()}
        lines.append(f"| **mean** | {s} | | | **{m['plain']:+.2f}** | {m['v3']:+.2f} | {m['free']:+.2f} |")
    lines += ['', "Today's piecewise constant (64 test signals; target 34.0 dB at σ = 0.1):", '',
              '| σ | plain CNN | v3 | tuned PM | Bayes limit |', '|---|---:|---:|---:|---:|']
    v3_today = {r['sigma']: r['psnr'] for r in v3['todays_piecewise_constant']}
    for r in todays:
        lines.append(f"| {r['sigma']} | {r['psnr'][name]:.2f} | {v3_today[r['sigma']]['denoiser-1d']:.2f} | "
                     f"{r['psnr']['perona_malik']:.2f} | {r['psnr']['bayes_limit']:.2f} |")
    text = '\n'.join(lines)
    print(text)
    save_results('plain_cnn_families', text, dict(args=vars(a), parameters=params, train_seconds=seconds,
                                                  families=rows, todays_piecewise_constant=todays))


if __name__ == '__main__':
    main()
