"""pde_resnet18 against timm's resnet18 in one run: parameters, train-step time, peak memory, bound cost.

    python benchmarks/bench_resnet.py [--rounds 7] [--batch 32] [--size 64]

* parameters: residual stages (blocks and connectors) and whole model;
* time: one training step (forward, backward, SGD step with lr 0.1, momentum 0.9) per model,
  interleaved round by round; the median per model and their ratio;
* peak memory: the peak resident set size during two training steps after one warm-up step, and its
  rise over the resident set before them, each model in a fresh subprocess (Linux VmHWM);
* the stability bound's share of a pde_resnet18 training step: time inside the blocks'
  ``OperatorNormBound`` calls over the step time, in the same steps; plus the cost of one full
  recomputation of every block's bound (what a step costs when every weight moved by more than the
  refresh threshold).

Writes ``benchmarks/results/resnet.md`` and ``.json``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timm  # noqa: E402
from _results import RESULTS, save_results  # noqa: E402

import pdeblocks  # noqa: E402,F401
from pdeblocks.layers import OperatorNormBound  # noqa: E402


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


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def memory_child(name: str, batch: int, size: int, steps: int) -> None:
    """Peak RSS over training steps, after a warm-up step, in a fresh process (Linux VmHWM, reset
    through /proc/self/clear_refs: ru_maxrss would carry the parent's peak across fork/exec)."""
    model = make(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    train_step(model, opt, x, y)  # warm-up: allocator pools, momentum buffers, cached bounds
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak-RSS high-water mark
    base = _status_kib('VmRSS')
    for _ in range(steps):
        train_step(model, opt, x, y)
    peak = _status_kib('VmHWM')
    print(json.dumps(dict(peak_mib=peak / 1024, rise_mib=(peak - base) / 1024)))


def measure_memory(name: str, batch: int, size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, '--memory-child', name, '--batch', str(batch),
                          '--size', str(size)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(data: dict) -> str:
    """The markdown table of a run (``data`` as saved in resnet.json)."""
    a, med, mem, par = data['args'], data['median_step_s'], data['memory'], data['params']
    rows = [
        ('parameters, residual stages', f"{par['resnet18_stages']:,}", f"{par['pde_resnet18_stages']:,}",
         f"{par['pde_resnet18_stages'] / par['resnet18_stages']:.3f}"),
        ('parameters, whole model (1000 classes)', f"{par['resnet18']:,}", f"{par['pde_resnet18']:,}",
         f"{par['pde_resnet18'] / par['resnet18']:.3f}"),
        (f"train step, median of {a['rounds']} (s)", f"{med['resnet18']:.3f}", f"{med['pde_resnet18']:.3f}",
         f"{med['pde_resnet18'] / med['resnet18']:.2f}"),
        ('peak RSS rise during 2 steps (MiB)', f"{mem['resnet18']['rise_mib']:.0f}",
         f"{mem['pde_resnet18']['rise_mib']:.0f}",
         f"{mem['pde_resnet18']['rise_mib'] / max(mem['resnet18']['rise_mib'], 1e-9):.2f}"),
        ('peak RSS (MiB)', f"{mem['resnet18']['peak_mib']:.0f}", f"{mem['pde_resnet18']['peak_mib']:.0f}",
         f"{mem['pde_resnet18']['peak_mib'] / mem['resnet18']['peak_mib']:.2f}"),
    ]
    table = [f"pde_resnet18 vs resnet18, batch {a['batch']}, 3×{a['size']}×{a['size']}, train mode, SGD lr 0.1, "
             f"CPU ({data['threads']} threads), torch {data['torch']}, timm {data['timm']}", '',
             '| | resnet18 | pde_resnet18 | ratio |', '|---|---|---|---|']
    table += [f"| {x} | {y} | {z} | {w} |" for x, y, z, w in rows]
    full = statistics.median(data['full_recompute_s'])
    table += ['', '| stability bound | value |', '|---|---|',
              f"| share of a pde_resnet18 train step (median over steps) | {statistics.median(data['bound_share']):.1%} |",
              f"| full bound recomputations in {data['steps']} steps (8 blocks) | {data['recomputations']} |",
              f"| one full recomputation of all 8 bounds, median of 3 (s) | {full:.2f} |",
              f"| that, relative to resnet18's whole step | {full / med['resnet18']:.0f}× |"]
    table += [f"| full bound of one {w}-channel block (s) | {statistics.median(t):.3f} |"
              for w, t in sorted(data['per_width_s'].items(), key=lambda kv: int(kv[0]))]
    return '\n'.join(table)


def write(data: dict) -> None:
    text = render(data)
    print(text)
    save_results('resnet', text, data, indent=1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--rounds', type=int, default=7)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--memory-only', action='store_true',
                   help='re-measure only the memory rows of the saved run (benchmarks/results/resnet.json)')
    p.add_argument('--memory-child', default=None)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.batch, args.size, steps=2)
        return
    names = ['resnet18', 'pde_resnet18']
    if args.memory_only:
        with open(os.path.join(RESULTS, 'resnet.json')) as f:
            data = json.load(f)
        a = data['args']
        data['memory'] = {n: measure_memory(n, a['batch'], a['size']) for n in names}
        write(data)
        return

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
    blocks = [m for m in models['pde_resnet18'].modules() if hasattr(m, 'bound')]
    recomputations = sum(b.bound.recomputations for b in blocks)
    full = []
    for _ in range(3):
        t0 = time.perf_counter()
        for blk in blocks:
            blk.bound.compute(blk.weight)
        full.append(time.perf_counter() - t0)
    per_width = {}
    for blk in blocks:
        t0 = time.perf_counter()
        blk.bound.compute(blk.weight)
        per_width.setdefault(str(blk.channels), []).append(time.perf_counter() - t0)
    ref, ours = make('resnet18', 1000), make('pde_resnet18', 1000)
    write(dict(
        args=dict(rounds=args.rounds, batch=args.batch, size=args.size), threads=torch.get_num_threads(),
        torch=torch.__version__, timm=timm.__version__,
        median_step_s={n: statistics.median(times[n]) for n in names}, step_s=times,
        memory={n: measure_memory(n, args.batch, args.size) for n in names},
        bound_share=bound_share, recomputations=recomputations, steps=args.rounds + 1, full_recompute_s=full,
        per_width_s=per_width,
        params=dict(resnet18=count(ref), pde_resnet18=count(ours), resnet18_stages=stage_params('resnet18', ref),
                    pde_resnet18_stages=stage_params('pde_resnet18', ours))))


if __name__ == '__main__':
    main()
