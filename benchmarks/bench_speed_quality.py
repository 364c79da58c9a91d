"""Speed against quality: smaller stable denoisers of denoiser-1d's family, and how fast they are next to TV.

Usage:  python benchmarks/bench_speed_quality.py [--steps 16000] [--throughput-signals 1000] [--repeats 3]
                                                  [--threads 1] [--retrain]

The throughput target ("denoiser-1d ≥ 10× faster than tuned TV") and the PSNR target pull apart: this
script measures how far. Each variant is :class:`~pdeblocks.models.denoise1d.Denoiser1D` (the same symmetric
steps u − τKᵀΦ(Ku) with learned nonmonotone fluxes and the same Euclidean-stability bound) with fewer
operations per sample: a coarser unshuffle, fewer channels or fewer steps. Every variant is trained with
denoiser-1d's own recipe (seed, schedule, data, loss), only ``model_kwargs`` changed (``--steps`` shortens
every run alike); the bundled denoiser-1d is the first row. Trained runs are kept in
``runs/bench_speed_quality/<variant>`` and reused when their recorded recipe is this one (unless ``--retrain``).

Per variant: parameters, multiply-adds per sample (``torch.utils.flop_counter``), PSNR at σ = 0.1 on the
64 piecewise-constant test signals of length 1024 (bench_denoise's table) and minus tuned TV, and the
throughput on 1000 signals of length 4096 timed with bench_denoise's :func:`throughput` (all variants and TV
in one run, interleaved, median of the repeats, TV at its tuned stop).

Writes benchmarks/results/speed_quality.md and .json atomically.
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import Stopwatch, save_results  # noqa: E402
from bench_denoise import forward_flops, throughput, tuned  # noqa: E402

from pdeblocks.cards import read_eval  # noqa: E402
from pdeblocks.classical import tv_denoise  # noqa: E402
from pdeblocks.data import make_signals, psnr  # noqa: E402
from pdeblocks.hub import from_pretrained, load_folder, published_name  # noqa: E402
from pdeblocks.train.evaluate import run_model  # noqa: E402
from pdeblocks.train.recipes import RECIPES, register_recipe  # noqa: E402
from pdeblocks.train.trainer import train  # noqa: E402

RUNS = ROOT / 'runs' / 'bench_speed_quality'
PUBLISHED = 'denoiser-1d'
# name: the model_kwargs that differ from denoiser-1d's (scale 8, channels 32, hidden 32, blocks 8, kernel 5)
VARIANTS = {
    'scale8-c32-b4': dict(blocks=4),
    'scale16-c32-b4': dict(scale=16, blocks=4),
    'scale8-c16-b4': dict(channels=16, hidden_channels=16, blocks=4),
    'scale16-c16-b4': dict(scale=16, channels=16, hidden_channels=16, blocks=4),
    'scale32-c32-b2': dict(scale=32, blocks=2),
}


def variant_recipe(name: str, changes: dict, steps: int):
    """denoiser-1d's recipe with ``changes`` to its model arguments (registered for this process only)."""
    base = RECIPES[PUBLISHED]
    return register_recipe(dataclasses.replace(base, name=f'speed-{name}', model_kwargs={**base.model_kwargs, **changes},
                                               steps=steps,
                                               description=f'bench_speed_quality variant {name}'))


def multiply_adds_per_sample(model, length: int = 4096) -> float:
    """Multiply-adds per sample of one forward pass: :func:`forward_flops` / 2 / length."""
    return forward_flops(model, length)[0] / 2 / length


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=RECIPES[PUBLISHED].steps, help='training steps per variant')
    ap.add_argument('--throughput-signals', type=int, default=1000)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--threads', type=int, default=1, help='torch threads for timing (training uses the default)')
    ap.add_argument('--retrain', action='store_true', help='train every variant again even if a run of this recipe exists')
    a = ap.parse_args(argv)
    if a.steps < 1 or a.throughput_signals < 1 or a.repeats < 1:
        ap.error(f"need --steps, --throughput-signals and --repeats ≥ 1, got {a.steps}, {a.throughput_signals}, "
                 f"{a.repeats}")
    models = {PUBLISHED: from_pretrained(published_name(PUBLISHED))}
    train_seconds = {PUBLISHED: read_eval(published_name(PUBLISHED))['train_seconds']}
    for name, changes in VARIANTS.items():
        recipe = variant_recipe(name, changes, a.steps)
        folder = RUNS / name
        done = folder / 'eval.json'
        if a.retrain or not done.is_file() or json.loads(done.read_text())['recipe'] != recipe.to_dict():
            train(recipe.name, out=str(folder), evaluate=False)
        train_seconds[name] = json.loads(done.read_text())['train_seconds']
        models[name] = load_folder(folder / 'model')
    torch.set_num_threads(a.threads)
    s = make_signals('piecewise_constant', 'test', 64, 1024, 0.1, seed=0)
    tv = float(psnr(tv_denoise(torch.from_numpy(s.noisy).double(), tuned(0.1)['tv_weight']).numpy(), s.clean).mean())
    rows = {k: dict(parameters=sum(p.numel() for p in m.parameters() if p.requires_grad),
                    multiply_adds=multiply_adds_per_sample(m), psnr=float(psnr(run_model(m, s.noisy), s.clean).mean()),
                    config=m.config(), train_seconds=train_seconds[k])
            for k, m in models.items()}
    watch = Stopwatch()
    tp = throughput(models, a.throughput_signals, a.repeats)
    lines = [f"Smaller stable denoisers (denoiser-1d's recipe, {a.steps} steps each) against tuned TV. PSNR: σ = 0.1, "
             f"64 piecewise-constant test signals of length 1024 (TV {tv:.2f} dB). Throughput: "
             f"{tp['signals']} signals of length 4096, {tp['threads']} thread(s), median of {tp['repeats']} interleaved "
             f"repeats, TV at duality gap ≤ {tp['tv_tolerance']:g}/sample: {tp['seconds']['tv']:.2f} s "
             f"({watch():.0f} s for the timing).", '',
             '| model | scale | channels | blocks | parameters | multiply-adds / sample | training (min) | PSNR (dB) '
             '| − TV | seconds | speed-up vs TV |', '|---' * 11 + '|']
    for k, r in rows.items():
        c = r['config']
        lines.append(f"| {k} | {c['scale']} | {c['channels']} | {c['blocks']} | {r['parameters']:,} "
                     f"| {r['multiply_adds']:,.0f} | {r['train_seconds'] / 60:.1f} | {r['psnr']:.2f} | {r['psnr'] - tv:+.2f} | {tp['seconds'][k]:.2f} "
                     f"| {tp['speedup'][k]:.2f}× |")
    best = max(rows, key=lambda k: tp['speedup'][k])
    lines += ['', f"Fastest: {best}, {tp['speedup'][best]:.2f}× TV at {rows[best]['psnr'] - tv:+.2f} dB over TV."]
    text = '\n'.join(lines)
    print(text)
    save_results('speed_quality', text, dict(steps=a.steps, tv_psnr=tv, rows=rows, throughput=tp,
                                             variants=VARIANTS))


if __name__ == '__main__':
    main()
