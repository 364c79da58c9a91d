"""What the certificate costs the blind denoiser's network, and where: the certified steps against free steps
that give up one half of the certificate at a time.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/bench_certificate_cost.py [--scheme explicit] [--seeds 0 1 2] [--variants ...]

The network is one of the scheme comparison's explicit ones (``schemes-SCHEME-*``, default ``explicit``: 16 steps
u − τKᵀΦ(Ku) on the 8× unshuffled grid; ``explicit-scale4`` on the 4× grid; :data:`pdeblocks.train.general.SCHEME_MODELS`),
trained at its short budget
(:data:`~pdeblocks.train.general.SCHEME_BUDGET`, 1 thread) with each seed. Variants, by what τ of each step may be:

* ``certified``: 0 ≤ τ ≤ 2/(L·B²), τ = sigmoid(θ)·2/(L·B²) (the published parameterisation);
* ``certified-raw``: the same interval, τ = min(max(θ, 0), 2/(L·B²)) with θ started where the free step starts
  (so a difference from ``certified`` would be the parameterisation's, not the certificate's);
* ``certified-repeat``: ``certified`` with each of the last four steps taken twice (weights shared: twice the
  diffusion time there, no parameters);
* ``growth``: −limit/2 ≤ τ ≤ limit, raw τ as ``certified-raw`` (a negative step grows ‖u‖ at most by
  1 + |τ|·L·B² ≤ 2: a certificate of bounded growth instead of nonexpansiveness);
* ``nonnegative``: τ ≥ 0, no upper limit (steps may overshoot: expansive on K's highest frequencies);
* ``free``: any τ (negative τ is backward diffusion: expansive everywhere);
* ``retracted``: any τ, each step's output scaled to at most its input's norm, per signal
  (``stability='retracted'``, :func:`~pdeblocks.layers.symmetric.retract`): ‖step(u)‖ ≤ ‖u‖, the certificate's
  own promise, kept by a rescaling per signal instead of a step-size limit.

So ``free − nonnegative`` is what negative steps are worth and ``nonnegative − certified`` what steps beyond the
limit are worth. The table: mean validation PSNR over the families at σ = 0.05 and 0.1 per variant (mean and range
over the seeds), then per family; each step's τ over its limit for each seed. Runs go to
``runs/certificate_cost/SCHEME/`` (a finished one is only read); writes ``benchmarks/results/certificate_cost.md`` and
``.json`` (``certificate_cost_SCHEME`` for another scheme).
"""
import argparse
import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import save_results, write_atomic  # noqa: E402

from pdeblocks.layers.symmetric import _TYPICAL_NORM_SQ, SymmetricResidual  # noqa: E402
from pdeblocks.models.blind import RepeatedStep  # noqa: E402
from pdeblocks.train.batches import denoise_batch  # noqa: E402
from pdeblocks.train.evaluate import family_psnr  # noqa: E402
from pdeblocks.train.general import SCHEME_BUDGET, SCHEME_MODELS  # noqa: E402
from pdeblocks.train.recipes import get_recipe  # noqa: E402
from pdeblocks.train.trainer import build_model, optimization_step  # noqa: E402

RUNS = ROOT / 'runs' / 'certificate_cost'
VARIANTS = ('certified', 'certified-raw', 'certified-repeat', 'growth', 'nonnegative', 'free', 'retracted')
SIGMAS = ('0.05', '0.1')
REPEATED = 4     # certified-repeat: the last four steps taken twice


def _raw_step(block: SymmetricResidual) -> torch.Tensor:
    return torch.minimum(block.step_param.clamp_min(0.0), block.step_limit().to(block.step_param.dtype))


def _growth_step(block: SymmetricResidual) -> torch.Tensor:
    limit = block.step_limit().to(block.step_param.dtype)
    return torch.maximum(torch.minimum(block.step_param, limit), -0.5 * limit)


def _nonnegative_step(block: SymmetricResidual) -> torch.Tensor:
    return block.step_param.clamp_min(0.0)


def build(scheme: str, variant: str, seed: int) -> nn.Module:
    """The variant's network (the recipe's model, its steps re-parameterised per instance)."""
    certified = variant.startswith('certified') or variant == 'growth'
    recipe = dataclasses.replace(get_recipe(f"schemes-{scheme}-{'certified' if certified else 'free'}"), seed=seed)
    if variant == 'retracted':
        recipe = dataclasses.replace(recipe, model_kwargs=dict(recipe.model_kwargs, stability='retracted'))
    torch.manual_seed(seed)
    model = build_model(recipe)
    for block in (m for m in model.modules() if isinstance(m, SymmetricResidual)):
        if variant in ('certified-raw', 'growth'):
            with torch.no_grad():   # where the free step starts: half the limit at the typical ‖K‖² = 4
                block.step_param.fill_(0.5 * 2.0 / (block.step_constant * _TYPICAL_NORM_SQ))
            block.step_size = types.MethodType(_raw_step if variant == 'certified-raw' else _growth_step, block)
        elif variant == 'nonnegative':
            block.step_size = types.MethodType(_nonnegative_step, block)
    if variant == 'certified-repeat':
        blocks = model.net.blocks
        for i in range(len(blocks) - REPEATED, len(blocks)):
            blocks[i] = RepeatedStep(blocks[i], 2)
    return model


def steps_over_limit(model: nn.Module) -> list:
    """τ over 2/(L·B²) per step, rigorous B; for the raw-τ variants θ itself, before their clamp (a value outside the
    variant's interval is a step it cuts to that interval)."""
    out = []
    with torch.no_grad():
        for block in (m for m in model.modules() if isinstance(m, SymmetricResidual)):
            b = block.bound.rigorous(block.weight)
            limit = float(block.step_limit(b))
            raw = block.free_step or 'step_size' in vars(block)   # θ is τ itself
            tau = float(block.step_param) if raw else float(block.step_fraction() * limit)
            out.append(tau / limit)
    return out


def run(scheme: str, variant: str, seed: int) -> dict:
    """Train (or read) one variant at one seed: validation PSNR per family and σ, τ/limit per step."""
    path = RUNS / scheme / f'{variant}-seed{seed}.json'
    if path.is_file():
        return json.loads(path.read_text())
    model = build(scheme, variant, seed)
    recipe = dataclasses.replace(get_recipe(f'schemes-{scheme}-free'), seed=seed)   # data and schedule: as certified's
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    model.train()
    for step in range(recipe.steps):
        x, y = denoise_batch(recipe, step, 0, 1)
        optimization_step(recipe, step, model, opt, x, y)
    model.eval()
    result = dict(variant=variant, seed=seed, val_psnr=family_psnr(model), step_over_limit=steps_over_limit(model))
    write_atomic(path, json.dumps(result, indent=1))
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--scheme', default='explicit', choices=[s for s, m in SCHEME_MODELS.items() if m['scheme'] == 'explicit'])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    results = {v: [run(a.scheme, v, s) for s in a.seeds] for v in a.variants}
    fams = list(results[a.variants[0]][0]['val_psnr'])

    def mean(r: dict, sigma: str) -> float:
        return float(np.mean([r['val_psnr'][f][sigma] for f in fams]))

    lines = [f"What the certificate costs: validation PSNR (dB), mean over the families (16 signals per family and σ, "
             f"length 1024), the scheme comparison's `{a.scheme}` network at its budget ({SCHEME_BUDGET['steps']} steps × "
             f"{SCHEME_BUDGET['batch_size']} signals, 1 thread), seeds {a.seeds}: mean [lowest, highest]", '',
             '| variant | τ may be | σ = 0.05 | σ = 0.1 | − certified, σ = 0.05 / 0.1 |', '|---|---|---|---|---|']
    allowed = {'certified': '[0, limit]', 'certified-raw': '[0, limit], raw τ', 'certified-repeat':
               '[0, limit], last 4 steps twice', 'growth': '[−limit/2, limit], raw τ', 'nonnegative': '[0, ∞)',
               'free': '(−∞, ∞)', 'retracted': '(−∞, ∞), each step rescaled to ‖out‖ ≤ ‖in‖'}
    base = {s: np.mean([mean(r, s) for r in results['certified']]) for s in SIGMAS} if 'certified' in results else None
    for v, rs in results.items():
        cells = []
        for s in SIGMAS:
            m = [mean(r, s) for r in rs]
            cells.append(f"{np.mean(m):.2f} [{min(m):.2f}, {max(m):.2f}]")
        diff = ' / '.join(f"{np.mean([mean(r, s) for r in rs]) - base[s]:+.2f}" for s in SIGMAS) if base else ''
        lines.append(f"| {v} | {allowed[v]} | {cells[0]} | {cells[1]} | {diff} |")
    for s in SIGMAS:
        lines += ['', f'Per family, σ = {s}, mean over the seeds:', '', '| variant | ' + ' | '.join(fams) + ' |',
                  '|---' * (len(fams) + 1) + '|']
        for v, rs in results.items():
            lines.append(f'| {v} | ' + ' | '.join(f"{np.mean([r['val_psnr'][f][s] for r in rs]):.2f}" for f in fams)
                         + ' |')
    lines += ['', 'τ over its limit 2/(L·B²) per step (rigorous B):', '']
    for v, rs in results.items():
        for r in rs:
            lines.append(f"- {v}, seed {r['seed']}: " + ' '.join(f'{x:.2f}' for x in r['step_over_limit']))
    text = '\n'.join(lines) + '\n'
    print(text)
    stem = 'certificate_cost' if a.scheme == 'explicit' else f"certificate_cost_{a.scheme.replace('-', '_')}"
    save_results(stem, text, dict(scheme=a.scheme, results=results, seeds=a.seeds, budget=SCHEME_BUDGET))


if __name__ == '__main__':
    main()
