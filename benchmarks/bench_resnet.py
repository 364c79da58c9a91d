"""pde_resnet18 against timm's resnet18 in one run: parameters, train-step time, peak memory, bound cost.

    python benchmarks/bench_resnet.py [--rounds 7] [--batch 32] [--size 64]

* parameters: residual stages (blocks and connectors) and whole model;
* time: one training step (forward, backward, SGD step with lr 0.1, momentum 0.9) per model,
  interleaved round by round; the median per model and their ratio;
* peak memory: the rise of the peak resident set size over a few training steps, each model in a
  fresh subprocess (``ru_maxrss``), after one warm-up step;
* the stability bound's share of a pde_resnet18 training step: time inside the blocks'
  ``OperatorNormBound`` calls over the step time, in the same steps; plus the cost of one full
  recomputation of every block's bound (what a step costs when every weight moved by more than the
  refresh threshold).

Writes ``benchmarks/results/resnet.md`` and ``.json``.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import timm  # noqa: E402

import pdeblocks  # noqa: E402,F401
from pdeblocks.layers import OperatorNormBound  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def stage_params(name: str, model: torch.nn.Module) -> int:
    if name == 'resnet18':
        return sum(count(getattr(model, f'layer{i}')) for i in range(1, 5))
    return count(model.stages)


def make(name: str, num_classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=num_classes).train()


def train_step(model, opt, x, y) -> None:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


class BoundTimer:
    """Accumulates wall time spent inside every OperatorNormBound of a model."""

    def __init__(self, model):
        self.total = 0.0
        self._start = {}
        for m in model.modules():
            if isinstance(m, OperatorNormBound):
                m.register_forward_pre_hook(self._pre)
                m.register_forward_hook(self._post)

    def _pre(self, module, args):
        self._start[id(module)] = time.perf_counter()

    def _post(self, module, args, out):
        self.total += time.perf_counter() - self._start.pop(id(module))


def memory_child(name: str, batch: int, size: int, steps: int) -> None:
    model = make(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    train_step(model, opt, x, y)  # warm-up: allocator pools, momentum buffers, cached bounds
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(steps):
        train_step(model, opt, x, y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(peak_mib=peak / 1024, rise_mib=(peak - base) / 1024)))


def measure_memory(name: str, batch: int, size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, '--memory-child', name, '--batch', str(batch),
                          '--size', str(size)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--memory-child', default=None)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.batch, args.size, steps=2)
        return

    names = ['resnet18', 'pde_resnet18']
    models = {n: make(n) for n in names}
    opts = {n: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for n, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    timer = BoundTimer(models['pde_resnet18'])
    for n in names:  # warm-up (first bound computation, allocator)
        train_step(models[n], opts[n], x, y)
    times = {n: [] for n in names}
    bound_share = []
    for _ in range(args.rounds):
        for n in names:
            timer.total = 0.0
            t0 = time.perf_counter()
            train_step(models[n], opts[n], x, y)
            dt = time.perf_counter() - t0
            times[n].append(dt)
            if n == 'pde_resnet18':
                bound_share.append(timer.total / dt)
    bounds = [m for m in models['pde_resnet18'].modules() if isinstance(m, OperatorNormBound)]
    recomputations = sum(b.recomputations for b in bounds)
    steps_taken = args.rounds + 1
    full = []
    for _ in range(3):
        t0 = time.perf_counter()
        blocks = [m for m in models['pde_resnet18'].modules() if hasattr(m, 'bound')]
        for blk in blocks:
            blk.bound.compute(blk.weight)
        full.append(time.perf_counter() - t0)
    per_width = {}
    for blk in [m for m in models['pde_resnet18'].modules() if hasattr(m, 'bound')]:
        t0 = time.perf_counter()
        blk.bound.compute(blk.weight)
        per_width.setdefault(blk.channels, []).append(time.perf_counter() - t0)

    med = {n: statistics.median(times[n]) for n in names}
    mem = {n: measure_memory(n, args.batch, args.size) for n in names}
    ref, ours = make('resnet18', 1000), make('pde_resnet18', 1000)
    rows = [
        ('parameters, residual stages', f"{stage_params('resnet18', ref):,}", f"{stage_params('pde', ours):,}",
         f"{stage_params('pde', ours) / stage_params('resnet18', ref):.3f}"),
        ('parameters, whole model (1000 classes)', f"{count(ref):,}", f"{count(ours):,}",
         f"{count(ours) / count(ref):.3f}"),
        (f'train step, median of {args.rounds} (s)', f"{med['resnet18']:.3f}", f"{med['pde_resnet18']:.3f}",
         f"{med['pde_resnet18'] / med['resnet18']:.2f}"),
        ('peak RSS rise over 2 steps (MiB)', f"{mem['resnet18']['rise_mib']:.0f}",
         f"{mem['pde_resnet18']['rise_mib']:.0f}",
         f"{mem['pde_resnet18']['rise_mib'] / max(mem['resnet18']['rise_mib'], 1e-9):.2f}"),
        ('peak RSS (MiB)', f"{mem['resnet18']['peak_mib']:.0f}", f"{mem['pde_resnet18']['peak_mib']:.0f}",
         f"{mem['pde_resnet18']['peak_mib'] / mem['resnet18']['peak_mib']:.2f}"),
    ]
    table = [f"pde_resnet18 vs resnet18, batch {args.batch}, 3×{args.size}×{args.size}, train mode, CPU "
             f"({torch.get_num_threads()} threads), torch {torch.__version__}, timm {timm.__version__}", '',
             '| | resnet18 | pde_resnet18 | ratio |', '|---|---|---|---|']
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    table += ['', '| stability bound | value |', '|---|---|',
              f"| share of a pde_resnet18 train step (median over steps) | {statistics.median(bound_share):.1%} |",
              f"| full bound recomputations in {steps_taken} steps (8 blocks) | {recomputations} |",
              f"| one full recomputation of all 8 bounds, median of 3 (s) | {statistics.median(full):.2f} |",
              f"| that, as a share of resnet18's step | {statistics.median(full) / med['resnet18']:.0f}× |"]
    table += [f"| full bound of one {w}-channel block (s) | {statistics.median(t):.3f} |"
              for w, t in sorted(per_width.items())]
    text = '\n'.join(table)
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    data = dict(args=vars(args), median_step_s=med, memory=mem, bound_share=bound_share,
                recomputations=recomputations, steps=steps_taken, full_recompute_s=full,
                per_width_s={str(k): v for k, v in per_width.items()},
                params=dict(resnet18=count(ref), pde_resnet18=count(ours),
                            resnet18_stages=stage_params('resnet18', ref), pde_resnet18_stages=stage_params('p', ours)))
    for ext, content in (('md', text + '\n'), ('json', json.dumps(data, indent=1))):
        path = os.path.join(RESULTS, f'resnet.{ext}')
        with open(path + '.tmp', 'w') as f:
            f.write(content)
        os.replace(path + '.tmp', path)


if __name__ == '__main__':
    main()
