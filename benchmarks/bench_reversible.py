"""Activation memory and time of reversible vs plain-autograd hyperbolic / Hamiltonian stacks.

Stacks: :class:`pdeblocks.layers.HyperbolicBlock` (leapfrog) and
:class:`pdeblocks.layers.HamiltonianBlock` (Verlet) with depth 8 and 64 (steps), 32 channels,
batch 4 × 32 × 32, float32, h = 0.1, zero padding; one training step = forward, loss = mean(out²),
backward.

Activation memory, two measurements of the same training step:

1. **saved tensors** — every tensor autograd keeps for backward passes through
   ``torch.autograd.graph.saved_tensors_hooks``; we sum the bytes of the distinct storages
   (several saved views of one storage count once) that are not parameters. This is exactly the
   activation memory autograd holds between forward and backward. The reversible steps
   (:class:`~pdeblocks.layers.hyperbolic.ReversibleStep`) save nothing through autograd: they keep
   only the final two states (aliases of the stack's outputs, one input-sized tensor each) in a
   shared object, so this column reads 0 for them and the profiler peak is the measure to compare.
2. **profiler peak** — ``torch.profiler`` with ``profile_memory=True`` records the CPU bytes
   allocated minus freed by every op (its *self* usage, children excluded) and by allocations
   outside ops; their running sum in start-time order is the live memory of the step and its
   maximum the peak (allocations and frees inside one op are netted, so short-lived temporaries
   within a single op are not seen). Parameter gradients are allocated (zeroed) before the step,
   so the peak excludes parameters and their gradients: it is the peak of activations and
   temporaries.

Time: median of 9 interleaved repeats (reversible, plain, reversible, …) of the whole training step.

Run: ``PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_reversible.py``; writes
``benchmarks/results/bench_reversible.md`` and ``.json``.
"""
import os
import sys
from typing import Dict, List

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import interleaved, save_results, summary  # noqa: E402

from pdeblocks.layers.hyperbolic import HamiltonianBlock, HyperbolicBlock  # noqa: E402

DEPTHS = (8, 64)
SHAPE = (4, 32, 32, 32)  # batch 4 at the width and resolution of the first Ruthotto–Haber CIFAR unit
REPEATS = 9


def make(kind: str, depth: int, reversible: bool) -> nn.Module:
    torch.manual_seed(0)
    cls = HyperbolicBlock if kind == 'hyperbolic' else HamiltonianBlock
    return cls(SHAPE[1], dim=2, steps=depth, step_size=0.1, boundary='zeros', reversible=reversible)


def training_step(block: nn.Module, x: torch.Tensor) -> None:
    out = block(x)
    out.square().mean().backward()


def saved_tensor_bytes(block: nn.Module, x: torch.Tensor) -> int:
    """Bytes of distinct non-parameter storages saved for backward during the forward pass."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in block.parameters()}
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_ptrs:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = block(x)
    out.square().mean().backward()
    block.zero_grad(set_to_none=True)
    return sum(seen.values())


def profiler_peak_bytes(block: nn.Module, x: torch.Tensor) -> int:
    """Peak live bytes allocated during one training step; parameter gradients already allocated.

    ``.grad`` of every parameter exists (zeroed) before the step, so backward accumulates in place
    and the peak excludes parameters and their gradients.
    """
    for p in block.parameters():
        p.grad = torch.zeros_like(p)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        training_step(block, x)
    # self (exclusive) allocation minus free of every op and of the '[memory]' records outside ops
    events = [(e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage != 0]
    events.sort(key=lambda e: e[0])
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    block.zero_grad(set_to_none=True)
    return peak


def ratio(small: float, large: float) -> str:
    """'large/small ×' with both values, or 'none saved' when both are 0."""
    if small == 0:
        return 'none saved (0 → 0)' if large == 0 else f'0 → {large:.3f} MiB'
    return f'{large / small:.2f}× ({small:.3f} → {large:.3f} MiB)'


def main() -> None:
    torch.set_num_threads(1)
    x = torch.randn(SHAPE)
    rows: List[Dict] = []
    for kind in ('hyperbolic', 'hamiltonian'):
        for depth in DEPTHS:
            blocks = {rev: make(kind, depth, rev) for rev in (True, False)}
            # same weights, so the same computation
            blocks[True].load_state_dict(blocks[False].state_dict())
            for b in blocks.values():
                training_step(b, x)  # warm-up
                b.zero_grad(set_to_none=True)
            steps = {rev: (lambda b=blocks[rev]: training_step(b, x)) for rev in (True, False)}
            times, _ = interleaved(steps, REPEATS, after=lambda rev, b=blocks: b[rev].zero_grad(set_to_none=True))
            for rev in (True, False):
                rows.append(dict(block=kind, depth=depth, mode='reversible' if rev else 'plain autograd',
                                 saved_MiB=saved_tensor_bytes(blocks[rev], x) / 2 ** 20,
                                 peak_MiB=profiler_peak_bytes(blocks[rev], x) / 2 ** 20,
                                 step_ms=1e3 * summary(times[rev])['median']))
    key = {(r['block'], r['depth'], r['mode']): r for r in rows}
    lines = ['| block | mode | depth | saved activations MiB | profiler peak MiB | step ms | '
             'time vs plain |', '|---|---|---|---|---|---|---|']
    for r in rows:
        plain = key[(r['block'], r['depth'], 'plain autograd')]
        lines.append(f"| {r['block']} | {r['mode']} | {r['depth']} | {r['saved_MiB']:.3f} | {r['peak_MiB']:.3f} | "
                     f"{r['step_ms']:.1f} | {r['step_ms'] / plain['step_ms']:.2f}× |")
    growth = ['', '| block | mode | saved growth 8 → 64 | peak growth 8 → 64 |', '|---|---|---|---|']
    for kind in ('hyperbolic', 'hamiltonian'):
        for mode in ('reversible', 'plain autograd'):
            a, b = key[(kind, DEPTHS[0], mode)], key[(kind, DEPTHS[1], mode)]
            growth.append(f"| {kind} | {mode} | {ratio(a['saved_MiB'], b['saved_MiB'])} | "
                          f"{ratio(a['peak_MiB'], b['peak_MiB'])} |")
    header = (f"Training step (forward + backward) of one stack, input {list(SHAPE)} float32, h = 0.1; "
              f"torch {torch.__version__}, 1 thread, median of {REPEATS} interleaved repeats.\n\n")
    text = header + '\n'.join(lines + growth)
    print(text)
    save_results('bench_reversible', text, rows, indent=1)


if __name__ == '__main__':
    main()
