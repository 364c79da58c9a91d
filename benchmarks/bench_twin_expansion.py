"""Does a free twin use steps that grow ‖u‖? Norm growth of the explicit steps on data, and the twin without it.

A certified step u − τKᵀΦ(Ku) (τ ≤ 2/(L‖K‖²), 0 ≤ Φ(s)/s ≤ L) never grows the Euclidean norm of its input; that
is all its certificate says (with a nonmonotone Φ it is not 1-Lipschitz). Its free twin may take any τ. For each
family and σ this script runs both models on ``--count`` validation signals and reports:

- the largest growth ‖step(z)‖/‖z‖ of a single step of the free twin on these signals, per signal;
- ‖z_N‖/‖z_0‖ of the whole stack of steps, for both models (the largest over the signals);
- the PSNR of the certified model, the free twin, and the free twin *retracted*: each of its steps followed by
  z ↦ z·min(1, ‖z_in‖/‖z‖) per signal, so no step grows the norm, at inference, without retraining. What the
  retraction costs is what the free twin gains from the growth it shows on these signals.

Last, the worst growth of the stack that gradient ascent on ‖z_N‖/‖z_0‖ finds (Adam, from random and from the
lifted signals): a certified stack can never pass 1.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_twin_expansion.py --model MODEL --free FREE [--count 32]
[--out NAME]`` (model or run folders of a blind denoiser with ``scheme='explicit'``); writes
``benchmarks/results/<NAME>.md`` and ``.json``.
"""
import argparse
import copy
from typing import Dict, List, Tuple

import numpy as np
import torch
from _common import save_results
from bench_denoise_general import LENGTH, load_model
from torch import nn

from pdeblocks.data import psnr
from pdeblocks.data.families import FAMILIES, make_family_signals
from pdeblocks.layers.symmetric import SymmetricResidual, retract


def per_signal_norm(z: torch.Tensor) -> torch.Tensor:
    return z.flatten(1).norm(dim=1)


class Retracted(nn.Module):
    """``step`` followed by :func:`~pdeblocks.layers.symmetric.retract`: ‖out‖ ≤ ‖z_in‖ whatever the step (what
    ``stability='retracted'`` does inside the block, here around a trained free step)."""

    def __init__(self, step: nn.Module):
        super().__init__()
        self.step = step

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return retract(self.step(z), z)


def steps_of(model: nn.Module) -> nn.ModuleList:
    blocks = getattr(getattr(model, 'net', None), 'blocks', None)
    if not isinstance(blocks, nn.ModuleList) or not all(
            any(isinstance(m, SymmetricResidual) for m in b.modules()) for b in blocks):
        raise SystemExit(f"expected a blind denoiser with scheme='explicit' (model.net.blocks of symmetric steps), "
                         f"got {type(model).__name__} with net {type(getattr(model, 'net', None)).__name__}")
    return blocks


def retracted(model: nn.Module) -> nn.Module:
    out = copy.deepcopy(model)
    blocks = steps_of(out)
    for i, b in enumerate(blocks):
        blocks[i] = Retracted(b)
    return out


@torch.no_grad()
def trajectory(model: nn.Module, noisy: np.ndarray) -> Tuple[np.ndarray, torch.Tensor, np.ndarray, np.ndarray]:
    """(output, z_0, largest single-step growth per signal, ‖z_N‖/‖z_0‖ per signal)."""
    blocks = steps_of(model)
    seen: List[Tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append((i[0], o))) for b in blocks]
    try:
        out = model(torch.from_numpy(noisy).unsqueeze(1)).squeeze(1).numpy()
    finally:
        for h in hooks:
            h.remove()
    growth = torch.stack([per_signal_norm(o) / per_signal_norm(i) for i, o in seen]).amax(0)
    stack = per_signal_norm(seen[-1][1]) / per_signal_norm(seen[0][0])
    return out, seen[0][0], growth.numpy(), stack.numpy()


def worst_growth(model: nn.Module, start: torch.Tensor, iterations: int) -> float:
    """The largest ‖z_N‖/‖z_0‖ gradient ascent finds from ``start`` (Adam on z_0, per signal)."""
    blocks = steps_of(model)
    z = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05 * float(start.abs().mean()))
    best = 0.0
    for _ in range(iterations):
        out = z
        for b in blocks:
            out = b(out)
        ratio = per_signal_norm(out) / per_signal_norm(z)
        best = max(best, float(ratio.detach().max()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', required=True, help='the certified model (model or run folder)')
    p.add_argument('--free', required=True, help='its free-step twin (model or run folder)')
    p.add_argument('--count', type=int, default=32, help='validation signals per family and σ (default: %(default)s)')
    p.add_argument('--sigmas', type=float, nargs='+', default=[0.05, 0.1])
    p.add_argument('--iterations', type=int, default=300, help='gradient-ascent steps (default: %(default)s)')
    p.add_argument('--out', default='twin_expansion')
    a = p.parse_args(argv)
    if a.count < 2:
        p.error(f"--count must be at least 2, got {a.count}")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model, free = load_model(a.model).eval(), load_model(a.free).eval()
    for m in (model, free):
        steps_of(m)
    free_r = retracted(free)
    rows: List[Dict] = []
    starts = []
    for sigma in a.sigmas:
        for fam in FAMILIES:
            s = make_family_signals(fam, 'val', a.count, LENGTH, sigma)
            out_c, z0, _, stack_c = trajectory(model, s.noisy)
            out_f, _, growth_f, stack_f = trajectory(free, s.noisy)
            out_r, _, _, _ = trajectory(free_r, s.noisy)
            starts.append(z0[:2])
            rows.append(dict(family=fam, sigma=sigma, certified=float(psnr(out_c, s.clean).mean()),
                             free=float(psnr(out_f, s.clean).mean()), retracted=float(psnr(out_r, s.clean).mean()),
                             step_growth=float(growth_f.max()), grown=int((growth_f > 1).sum()),
                             stack_certified=float(stack_c.max()), stack_free=float(stack_f.max())))
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    real = torch.cat(starts[:len(FAMILIES)])
    worst = {name: dict(random=worst_growth(m, torch.randn_like(real), a.iterations),
                        signals=worst_growth(m, real, a.iterations)) for name, m in (('certified', model),
                                                                                     ('free', free))}
    print(worst)
    lines = [f"Norm growth of the explicit steps: `{a.model}` (certified) and `{a.free}` (its free twin), {a.count} "
             f"validation signals per family and σ, length {LENGTH}. PSNR in dB (mean); *retracted*: the free twin "
             "with each step's output scaled to at most its input's norm, per signal, at inference; *step growth*: "
             "the largest ‖step(z)‖/‖z‖ of the free twin's steps (and on how many signals a step grew the norm); "
             "*stack*: the largest ‖z_N‖/‖z_0‖.", '',
             "| family | σ | certified | free | free, retracted | retraction costs | free step growth | "
             "stack, certified | stack, free |", '|---|---|---|---|---|---|---|---|---|']
    lines += [f"| {r['family'].replace('_', ' ')} | {r['sigma']} | {r['certified']:.2f} | {r['free']:.2f} | "
              f"{r['retracted']:.2f} | {r['retracted'] - r['free']:+.2f} | {r['step_growth']:.3f} "
              f"({r['grown']} of {a.count}) | {r['stack_certified']:.3f} | {r['stack_free']:.3f} |" for r in rows]
    lines += ['', f"Worst ‖z_N‖/‖z_0‖ found by gradient ascent ({a.iterations} Adam steps on z_0, 2 signals per "
              "family at the first σ, and as many random starts):", '',
              '| model | from random z_0 | from the lifted signals |', '|---|---|---|']
    lines += [f"| {name} | {w['random']:.3f} | {w['signals']:.3f} |" for name, w in worst.items()]
    text = '\n'.join(lines) + '\n'
    print(text)
    save_results(a.out, text, dict(model=a.model, free=a.free, count=a.count, rows=rows, worst=worst))


if __name__ == '__main__':
    main()
