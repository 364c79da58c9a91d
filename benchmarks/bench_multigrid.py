"""Multigrid benchmarks: linear cost of a V-cycle, residual reduction per cycle, and Jacobi vs CG vs V-cycle.

    python benchmarks/bench_multigrid.py            # full sizes (~5–10 min on 2 shared cores)
    python benchmarks/bench_multigrid.py --quick    # small sizes, a smoke test

Problem: −Δu = f on the unit interval/square, homogeneous Dirichlet, the n = N − 1 interior points of
a grid with N intervals (h = 1/N), the 3-/5-point stencil, full weighting, linear interpolation,
rediscretised coarse operators, coarsest grid of 3 points per axis solved directly, float64,
random f ~ U[0, 1), u₀ = 0.

Writes a markdown table to benchmarks/results/multigrid.md and the raw numbers to multigrid.json.
"""
import argparse
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from _common import Stopwatch, interleaved, save_results, summary, timed  # noqa: E402

from pdeblocks.ops.multigrid import (  # noqa: E402
    Multigrid,
    StencilOperator,
    conjugate_gradient,
    default_damping,
    jacobi_solve,
    max_levels,
    poisson_stencil,
)

F64 = torch.float64


def problem(dim_sizes: List[int], seed: int = 0):
    """(operator, f) for −Δ on a Dirichlet grid of interior sizes ``dim_sizes`` (h from the first axis)."""
    n = dim_sizes[0]
    op = StencilOperator(poisson_stencil(len(dim_sizes), 1.0 / (n + 1), dtype=F64), 'zeros')
    gen = torch.Generator().manual_seed(seed)
    f = torch.rand([1, 1] + dim_sizes, generator=gen, dtype=F64)
    return op, f


def hierarchy(op, sizes, cycle='V', smoother='jacobi', coarsest=3):
    """All levels down to a coarsest grid of ``coarsest`` (3 or 1) interior points on the shortest axis."""
    levels = max_levels(min(sizes), 'zeros') - (1 if coarsest == 3 else 0)
    return Multigrid(op, sizes, levels, cycle=cycle, smoother=smoother, coarse_solve='direct',
                     coarse_operator='rediscretise')


# ------------------------------------------------------------------------------------------ linear cost
def linear_cost(quick: bool) -> List[Dict]:
    cases = []
    ks = range(8, 13) if quick else range(12, 21)
    for k in ks:
        cases.append(dict(dim=1, sizes=[2 ** k - 1], N=f"2^{k}"))
    shapes = ([(6, 6), (6, 7), (7, 7), (7, 8)] if quick else
              [(8, 8), (8, 9), (9, 9), (9, 10), (10, 10), (10, 11), (11, 11)])
    for a, b in shapes:
        cases.append(dict(dim=2, sizes=[2 ** a - 1, 2 ** b - 1], N=f"{2 ** a}×{2 ** b}"))
    cycles = {}
    for i, c in enumerate(cases):
        op, f = problem(c['sizes'])
        mg = hierarchy(op, c['sizes'])
        u = torch.zeros_like(f)
        mg.cycle(u, f)  # warm-up: allocates the per-level buffers
        cycles[i] = lambda mg=mg, u=u, f=f: mg.cycle(u, f)
        c['levels'] = mg.levels
    # interleaved: every size once per round, N then 2N back to back
    times, _ = interleaved(cycles, 5 if quick else 25)
    for i, c in enumerate(cases):
        c['times'] = times[i]
        c['median_s'] = summary(c['times'])['median']
        c['unknowns'] = math.prod(c['sizes'])
        c['ns_per_unknown'] = 1e9 * c['median_s'] / c['unknowns']
    for prev, c in zip(cases, cases[1:]):
        if prev['dim'] == c['dim']:
            # median over rounds of the ratio of two runs timed back to back (the shared machine's load
            # drifts between rounds, far less between neighbours), and the ratio of the medians
            c['ratio'] = statistics.median(b / a for a, b in zip(prev['times'], c['times']))
            c['ratio_of_medians'] = c['median_s'] / prev['median_s']
    return cases


# ---------------------------------------------------------------------------------------- convergence
TEXTBOOK = {(1, 'V', 'jacobi'): '≤ 0.1 (≈ 0.09, ω = 2/3)', (2, 'V', 'jacobi'): '≤ 0.2 (≈ 0.17, ω = 0.8)',
            (2, 'V', 'red_black'): '≤ 0.1'}


def reduction(dim: int, n: int, cycle: str, smoother: str, coarsest: int = 3, max_cycles: int = 20) -> Dict:
    sizes = [n] * dim
    op, f = problem(sizes)
    mg = hierarchy(op, sizes, cycle, smoother, coarsest)
    u = torch.zeros_like(f)
    norms = [float(f.norm())]
    for _ in range(max_cycles):
        u = mg.cycle(u, f)
        norms.append(float(mg.residual(u, f).norm()))
    # the rounding floor, measured: the plateau the residual stagnates at (median of the last 5 cycles);
    # a cycle counts while its residual stays 10× above it
    floor = statistics.median(norms[-5:])
    above = 0
    while above < max_cycles and norms[above + 1] > 10 * floor:
        above += 1
    rates = [b / a for a, b in zip(norms, norms[1:])]
    counted = rates[:above]
    tail = counted[1:] if len(counted) > 1 else counted  # from the second cycle on
    # None: the floor came with the first cycle (1D red–black Gauss–Seidel is almost a direct solver)
    asymptotic = math.exp(sum(math.log(x) for x in tail) / len(tail)) if tail else None
    # the same cycle on A e = 0 from a random start: no floor, the asymptotic rate over cycles 6–10
    gen = torch.Generator().manual_seed(1)
    e = torch.rand([1, 1] + sizes, generator=gen, dtype=F64)
    zero = torch.zeros_like(e)
    hom = [float(mg.residual(e, zero).norm())]
    for _ in range(10):
        e = mg.cycle(e, zero)
        hom.append(float(mg.residual(e, zero).norm()))
    hom_rate = (hom[10] / hom[5]) ** (1 / 5) if hom[5] > 0 else 0.0  # 0: exact after a few cycles
    return dict(dim=dim, N=n + 1, cycle=cycle, smoother=smoother, damping=default_damping(smoother, dim),
                levels=mg.levels, coarsest=coarsest, cycles_above_floor=len(counted), first=rates[0], asymptotic=asymptotic,
                worst=max(counted) if counted else None, homogeneous=hom_rate, floor_rel=floor / norms[0],
                textbook=TEXTBOOK.get((dim, cycle, smoother), '—'),
                # Jacobi/Richardson (equal here): the two-grid factor on a grid of at most 256 (1D) / 64² points
                two_grid=(two_grid_fourier_factor(dim, min(n + 1, 256 if dim == 1 else 64), default_damping('jacobi', dim))
                          if smoother in ('jacobi', 'richardson') else None))


def two_grid_fourier_factor(dim: int, big_n: int, omega: float, nu1: int = 2, nu2: int = 2) -> float:
    """The textbook reference: spectral radius of the two-grid operator S^ν₂ (I − P A_{2h}⁻¹ R A) S^ν₁ (damped
    Jacobi, full weighting, linear interpolation, Dirichlet −Δ_h) by Fourier analysis. The sine modes with
    frequencies k and N − k per axis span invariant subspaces (2^d modes): A has eigenvalues 4Σs/h² with
    s = sin²(kπh/2) (cos² for N − k), R maps the modes to the coarse one with weights cos², −sin² per axis and
    P back with the same weights, A_{2h} has eigenvalue Σ sin²(kπh)/h²."""
    h = 1.0 / big_n
    worst = 0.0
    for ks in itertools.product(range(1, big_n // 2), repeat=dim):
        s, weight = [], []
        for high in itertools.product((False, True), repeat=dim):
            s.append(sum(math.cos(k * math.pi * h / 2) ** 2 if hi else math.sin(k * math.pi * h / 2) ** 2
                         for k, hi in zip(ks, high)))
            weight.append(math.prod(-math.sin(k * math.pi * h / 2) ** 2 if hi else math.cos(k * math.pi * h / 2) ** 2
                                    for k, hi in zip(ks, high)))
        s_, w_ = np.array(s), np.array(weight)
        a = 4 * s_ / h ** 2
        a_coarse = sum(math.sin(k * math.pi * h) ** 2 for k in ks) / h ** 2
        correction = np.eye(len(s_)) - np.outer(w_, w_ * a) / a_coarse
        smooth = np.diag(1 - omega * 4 * s_ / (2 * dim))
        m = np.linalg.matrix_power(smooth, nu2) @ correction @ np.linalg.matrix_power(smooth, nu1)
        worst = max(worst, float(np.abs(np.linalg.eigvals(m)).max()))
    return worst


def fmt(x, spec='.3f') -> str:
    return '—' if x is None else format(x, spec)


def convergence(quick: bool) -> List[Dict]:
    rows = []
    plan = {
        (1, 'V'): [2 ** 8, 2 ** 12] if quick else [2 ** 8, 2 ** 12, 2 ** 16, 2 ** 20],
        (1, 'W'): [2 ** 8] if quick else [2 ** 8, 2 ** 10, 2 ** 12],  # 1D W: O(N log N) work, 2^L visits
        (2, 'V'): [64, 128] if quick else [64, 256, 1024, 2048],
        (2, 'W'): [64] if quick else [64, 256, 1024],
    }
    for (dim, cycle), sizes in plan.items():
        for smoother in ('jacobi', 'richardson', 'red_black'):
            for big_n in sizes:
                # the textbook rows also with the coarsest grid one point (h = 1/2): a slightly weaker cycle
                for coarsest in ((3, 1) if (smoother == 'jacobi' and cycle == 'V') else (3,)):
                    rows.append(reduction(dim, big_n - 1, cycle, smoother, coarsest))
                    r = rows[-1]
                    print(f"  {dim}D {cycle} {smoother:10s} N={big_n:8d} coarsest {coarsest}: asymptotic "
                          f"{fmt(r['asymptotic'])} over {r['cycles_above_floor']} cycles", flush=True)
    return rows


# ------------------------------------------------------------------------------------------ comparison
def compare(quick: bool) -> List[Dict]:
    rows, tol = [], 1e-8
    cases = [(1, 255), (2, 63), (2, 127)] if quick else [(1, 255), (1, 1023), (2, 63), (2, 127), (2, 255)]
    for dim, n in cases:
        sizes = [n] * dim
        op, f = problem(sizes)
        mg = hierarchy(op, sizes)
        times, last = interleaved(dict(mg=lambda mg=mg, f=f: mg.solve(f, tol=tol, max_cycles=50),
                                       cg=lambda op=op, f=f: conjugate_gradient(op, f, tol=tol, max_iter=100000)), 3)
        for key, solver in (('mg', 'V(2,2)-cycle, damped Jacobi'), ('cg', 'conjugate gradients')):
            hist = last[key][1]
            rows.append(dict(dim=dim, N=n + 1, solver=solver, iterations=len(hist) - 1,
                             seconds=summary(times[key])['median'], rel_residual=hist[-1] / float(f.norm())))
        cap = 20000 if quick else 400000
        (_, iters, rel), seconds = timed(jacobi_solve, op, f, damping=1.0, tol=tol, max_iter=cap, check_every=100)
        rows.append(dict(dim=dim, N=n + 1, solver='Jacobi (ω = 1)', iterations=iters,
                         seconds=seconds, rel_residual=rel, converged=rel <= tol))
        print(f"  compared {dim}D N={n + 1}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------ output
def markdown(cost, conv, comp, meta) -> str:
    first = meta['cost']
    runs = '; '.join(f"{p}: {m['date']}, {m['seconds']:.0f} s, load average {m['load_before']:.1f}→{m['load_after']:.1f}"
                     for p, m in meta.items())
    out = ["# Multigrid benchmarks", "",
           f"{first['machine']} (shared); torch {first['torch']}, {first['threads']} thread(s); float64. Runs: {runs}.",
           "Problem: −Δu = f, homogeneous Dirichlet, n = N − 1 interior points per axis, h = 1/N, 3-/5-point "
           "stencil, full weighting, linear interpolation, rediscretised coarse operators, coarsest grid (3 points "
           "per axis unless stated, i.e. h = 1/4) solved directly, random f, u₀ = 0.", "",
           "## Cost of one V(2,2)-cycle (damped Jacobi), interleaved, median of repeats", "",
           "| dim | grid N | unknowns | levels | time per cycle | ns / unknown | time(2N)/time(N), paired | "
           "ratio of medians |",
           "|---|---|---|---|---|---|---|---|"]
    for c in cost:
        ratio = f"{c['ratio']:.2f}" if 'ratio' in c else '—'
        rom = f"{c['ratio_of_medians']:.2f}" if 'ratio_of_medians' in c else '—'
        out.append(f"| {c['dim']}D | {c['N']} | {c['unknowns']:,} | {c['levels']} | {1e3 * c['median_s']:.2f} ms | "
                   f"{c['ns_per_unknown']:.1f} | {ratio} | {rom} |")
    out += ["", "Target: time(2N)/time(N) ≤ 2.2 (the 2D rows double the number of unknowns: N₁×N₂ → N₁×2N₂ → 2N₁×2N₂). "
            "Paired: median over the interleaved rounds of time(2N)/time(N) measured back to back in the same round. "
            "Cache: L2 2 MiB per core, L3 32 MiB shared; one float64 array of 2^20 values is 8 MiB.",
            "", "## Residual reduction per cycle", "",
            "asymptotic = geometric mean of ‖r_{k+1}‖/‖r_k‖ from the second cycle to the last one that ends 10× "
            "above the float64 rounding floor (the plateau of 20 cycles, relative level in 'floor'); worst = the "
            "largest of those ratios, first cycle included; homogeneous = the same cycle on A e = 0 from a random "
            "e (no floor to reach), rate over cycles 6–10.", "",
            "| dim | cycle | smoother | ω | N | levels | coarsest | floor | cycles above floor | 1st cycle | "
            "asymptotic | worst | homogeneous | two-grid (Fourier) | target |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in conv:
        out.append(f"| {r['dim']}D | {r['cycle']} | {r['smoother']} | {r['damping']:.3g} | {r['N']} | {r['levels']} | "
                   f"{r['coarsest']}{'' if r['dim'] == 1 else '²'} | {r['floor_rel']:.0e} | "
                   f"{r['cycles_above_floor']} | {r['first']:.3f} | {fmt(r['asymptotic'])} | {fmt(r['worst'])} | "
                   f"{r['homogeneous']:.3f} | {fmt(r.get('two_grid'))} | {r['textbook']} |")
    out += ["", "Richardson's ω is relative to B ≥ ‖A‖ (B = 2·diagonal for this stencil, so it equals Jacobi). "
            "two-grid (Fourier): the exact two-grid V(2,2) factor of the same smoother (two grids, exact coarse "
            "solve) from Fourier analysis; a V-cycle over all levels is slightly weaker. 1D red–black "
            "Gauss–Seidel with full weighting and linear interpolation is an exact solver for this problem "
            "(the residual reaches the floor in the first cycle).",
            "", "## Solving to 1e-8 relative residual (one run)", "",
            "| dim | N | solver | iterations | wall time | final relative residual |", "|---|---|---|---|---|---|"]
    for r in comp:
        note = '' if r.get('converged', True) else ' (not converged: iteration cap)'
        out.append(f"| {r['dim']}D | {r['N']} | {r['solver']} | {r['iterations']:,}{note} | {r['seconds']:.3f} s | "
                   f"{r['rel_residual']:.2e} |")
    out += ["", "V-cycle and CG: median of 3 runs; Jacobi: one run, residual checked every 100 iterations. "
            "One V(2,2)-cycle costs about 8–10 stencil applications on the fine grid; a CG or Jacobi iteration one."]
    return '\n'.join(out) + '\n'


PARTS = ('cost', 'convergence', 'comparison')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='small sizes (smoke test)')
    parser.add_argument('--parts', default=','.join(PARTS),
                        help='comma-separated subset of cost,convergence,comparison; the others are kept from the '
                             'last saved run')
    parser.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results'))
    args = parser.parse_args()
    parts = [p for p in args.parts.split(',') if p]
    if any(p not in PARTS for p in parts):
        raise SystemExit(f"--parts must be a subset of {PARTS}, got {args.parts!r}")
    name = 'multigrid_quick' if args.quick else 'multigrid'
    json_path = os.path.join(args.out, name + '.json')
    results: Dict = {}
    if os.path.exists(json_path):
        with open(json_path) as fh:
            results = json.load(fh)
        if not all(isinstance(m, dict) for m in results.get('meta', {}).values()):
            results = {}  # an older layout: start afresh
    runners = dict(cost=linear_cost, convergence=convergence, comparison=compare)
    for part in parts:
        print(f"{part} …", flush=True)
        load = os.getloadavg()[0]
        watch = Stopwatch()
        rows = runners[part](args.quick)
        for row in rows:
            row.pop('times', None)
        results[part] = rows
        results.setdefault('meta', {})[part] = dict(
            machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            torch=torch.__version__, threads=torch.get_num_threads(), seconds=watch(),
            load_before=load, load_after=os.getloadavg()[0], date=time.strftime('%Y-%m-%d %H:%M:%S'))
        if part == 'cost':
            for c in rows:
                print(f"  {c['dim']}D {c['N']:>10s}: {1e3 * c['median_s']:8.2f} ms  ratio "
                      f"{c.get('ratio', float('nan')):.2f}", flush=True)
    missing = [p for p in PARTS if p not in results]
    if missing:
        raise SystemExit(f"no saved results for {missing}: run them once (--parts {','.join(missing)})")
    text = markdown(results['cost'], results['convergence'], results['comparison'], results['meta'])
    print(text)
    save_results(name, text, results, folder=args.out, indent=1)


if __name__ == '__main__':
    main()
