"""1D Perona–Malik diffusion with the scheme blocks: operator applications, error and wall time.

∂ₜu = −Dᵀ Φ(D u), D the forward difference (``difference_stencil(1)``, boundary ``'neumann'``:
the (n−1)×n matrix, zero flux across the ends), Φ(s) = s/(1 + s²/λ²), λ ∈ {0.05, 0.2}; no
training. Signals: 16 seeded clean test signals of length 256 in [0, 1] from :mod:`pdeblocks.data`
(8 piecewise constant, 8 piecewise smooth).

Reference: the explicit scheme at 1/50 of the stable step (τ = 0.01), float64.

Schemes (all float64, K fixed to D, reaching T exactly):

* explicit: u ← u − τ DᵀΦ(Du), τ = T/⌈T/0.5⌉ (0.5 = 2/(L‖D‖²), the Euclidean-stability limit);
* FED n: :class:`pdeblocks.layers.FEDCycle`, M = ⌈T / cycle time⌉ cycles of n lagged steps,
  τ_max = 3T/(M(n² + n)) ≤ 2/(L B²) (B the block's rigorous bound of ‖D‖);
* FSI n: :class:`pdeblocks.layers.FSIBlock` with the same cycles, lagged diffusivity, and the
  per-step form (``diffusivity='per_step'``, Φ re-evaluated every step; no guarantee);
* implicit: :class:`pdeblocks.layers.ImplicitBlock`, lagged semi-implicit steps of τ = T/⌊T/(m·limit)⌋
  ≥ m × the explicit limit for m = 100 and 10 (τ = T when T < m·limit; the table gives the actual
  multiple), Chebyshev recurrence to relative residual ≤ 1e-6.

"Applications" counts operator applications in units of one K plus one Kᵀ: an explicit or FSI
per-step step is 1, a lagged cycle of n steps is n + ½ (one more K for the diffusivity), an
implicit step is (its iterations + 1) + ½ (the initial residual and the diffusivity).
Error: relative L2 error ‖u − u_ref‖/‖u_ref‖ per signal, mean and max over the 16 signals.
Wall time: median of 5 interleaved repeats (all signals as one batch, 1 thread).

Run: ``PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_schemes.py``; writes
``benchmarks/results/bench_schemes.md`` and ``.json``.
"""
import math
import os
import sys
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import interleaved, save_results, summary  # noqa: E402

from pdeblocks.classical import relative_error  # noqa: E402
from pdeblocks.data import make_signals  # noqa: E402
from pdeblocks.layers.fed import FEDCycle, FSIBlock  # noqa: E402
from pdeblocks.layers.flux import create_flux  # noqa: E402
from pdeblocks.layers.implicit import ImplicitBlock  # noqa: E402
from pdeblocks.ops.conv import conv, conv_adjoint  # noqa: E402
from pdeblocks.ops.schedules import fed_cycle_time, fed_tau_max  # noqa: E402
from pdeblocks.ops.stencils import difference_stencil  # noqa: E402

LAMBDAS = (0.05, 0.2)
TIMES = (12.0, 100.0)
CYCLE_LENGTHS = (4, 8, 16)
EXPLICIT_LIMIT = 0.5  # 2/(L‖D‖²), L = 1, ‖D‖² ≤ 4
REFERENCE_FRACTION = 50
REPEATS = 5
# tight settings of the rigorous bound for the 2-tap stencil: B = 2·(1 + 1e-4), τ limit 0.49990
BOUND = dict(grid=None, interp_slack=1.0001)
DTYPE = torch.float64


def signals() -> torch.Tensor:
    pc = make_signals('piecewise_constant', 'test', 8, 256, 0.0, seed=3).clean
    ps = make_signals('piecewise_smooth', 'test', 8, 256, 0.0, seed=3).clean
    return torch.cat([torch.from_numpy(pc), torch.from_numpy(ps)]).to(DTYPE)[:, None, :]


def explicit(u: torch.Tensor, lam: float, time_: float, tau: float) -> torch.Tensor:
    """u ← u − τ DᵀΦ(Du) with τ' = T/⌈T/τ⌉ (the scheme and the reference)."""
    weight = difference_stencil(1, dtype=DTYPE)
    flux = create_flux('perona_malik', None, contrast=lam).to(DTYPE).requires_grad_(False)
    steps = math.ceil(time_ / tau - 1e-9)
    step = time_ / steps
    with torch.no_grad():
        for _ in range(steps):
            u = u - step * conv_adjoint(flux(conv(u, weight, 'neumann')), weight, 'neumann')
    return u


def block_kwargs(lam: float) -> Dict:
    return dict(kernel_size=2, dim=1, boundary='neumann', weight=difference_stencil(1, dtype=DTYPE),
                trainable_weight=False, contrast=lam, dtype=DTYPE, **BOUND)


def make_cycle_block(cls, n: int, lam: float, time_: float, **extra):
    probe = cls(1, steps=n, **block_kwargs(lam), **extra)
    limit = float(2.0 / (probe.sector_bound * probe.norm_bound() ** 2))
    cycles = math.ceil(time_ / fed_cycle_time(n, limit) - 1e-9)
    tau_max = fed_tau_max(time_, n, cycles)
    block = cls(1, steps=n, cycles=cycles, step_init=tau_max / limit, **block_kwargs(lam), **extra)
    block.requires_grad_(False)
    reached = cycles * block.cycle_time()
    assert abs(reached - time_) < 1e-6 * time_, (reached, time_)
    return block, cycles


def implicit_runner(lam: float, time_: float, multiple: float):
    probe = ImplicitBlock(1, **block_kwargs(lam), tol=1e-6, max_iterations=2000)
    limit = float(2.0 / (probe.sector_bound * probe.norm_bound() ** 2))
    steps = max(1, math.floor(time_ / (multiple * limit) + 1e-9))  # τ ≥ multiple × limit unless τ = T
    tau = time_ / steps
    block = ImplicitBlock(1, **block_kwargs(lam), relative_step=tau / limit, tol=1e-6, max_iterations=2000)
    block.requires_grad_(False)
    stats = dict(iterations=0, residual=0.0, tau=tau, steps=steps, multiple=tau / limit)

    def run(u: torch.Tensor) -> torch.Tensor:
        stats['iterations'] = 0
        stats['residual'] = 0.0
        with torch.no_grad():
            for _ in range(steps):
                u = block(u)
                stats['iterations'] += block.last_iterations
                stats['residual'] = max(stats['residual'], block.last_residual)
        return u
    return run, stats


def single_cycle_table() -> str:
    """One FED cycle of n = 8 steps to T = 11.99 (τ_max just below the limit 0.5): the block (diffusivity
    lagged, computed once) against the same cycle with Φ re-evaluated at every step
    (:func:`pdeblocks.classical.fed` with ``lagged=False``), clean and noisy (σ = 0.1) signals."""
    from pdeblocks.classical import fed, make_flux
    n, time_ = 8, 11.99
    lines = ['| λ | signals | FED n=8, one cycle, lagged (block) | per-step Φ | ',
             '|---|---|---|---|']
    for lam in LAMBDAS:
        for sigma in (0.0, 0.1):
            pc = make_signals('piecewise_constant', 'test', 8, 256, sigma, seed=3).noisy
            ps = make_signals('piecewise_smooth', 'test', 8, 256, sigma, seed=3).noisy
            u0 = torch.cat([torch.from_numpy(pc), torch.from_numpy(ps)]).to(DTYPE)[:, None, :]
            ref = explicit(u0, lam, time_, EXPLICIT_LIMIT / REFERENCE_FRACTION)
            block, cycles = make_cycle_block(FEDCycle, n, lam, time_)
            assert cycles == 1
            with torch.no_grad():
                lagged = relative_error(block(u0), ref)
            per_step = relative_error(fed(u0, make_flux('perona_malik', lam), time_, n, 1, lagged=False), ref)
            lines.append(f"| {lam} | {'clean' if sigma == 0 else 'noisy σ=0.1'} | {100 * float(lagged.mean()):.2f}% "
                         f"(max {100 * float(lagged.max()):.2f}%) | {100 * float(per_step.mean()):.2f}% "
                         f"(max {100 * float(per_step.max()):.2f}%) |")
    return '\n'.join(lines)


def main() -> None:
    torch.set_num_threads(1)
    u0 = signals()
    rows: List[Dict] = []
    for lam in LAMBDAS:
        for time_ in TIMES:
            ref = explicit(u0, lam, time_, EXPLICIT_LIMIT / REFERENCE_FRACTION)
            runs: List[Dict] = []
            steps = math.ceil(time_ / EXPLICIT_LIMIT - 1e-9)
            runs.append(dict(scheme='explicit (τ = 0.5)', applications=float(steps),
                             fn=lambda lam=lam, time_=time_: explicit(u0, lam, time_, EXPLICIT_LIMIT)))
            for n in CYCLE_LENGTHS:
                fed, cycles = make_cycle_block(FEDCycle, n, lam, time_)
                runs.append(dict(scheme=f'FED n={n} (M={cycles}, lagged)', applications=cycles * (n + 0.5),
                                 fn=lambda b=fed: b(u0)))
            for n in CYCLE_LENGTHS:
                fsi, cycles = make_cycle_block(FSIBlock, n, lam, time_)
                runs.append(dict(scheme=f'FSI n={n} (M={cycles}, lagged)', applications=cycles * (n + 0.5),
                                 fn=lambda b=fsi: b(u0)))
            for n in CYCLE_LENGTHS:
                fsi, cycles = make_cycle_block(FSIBlock, n, lam, time_, diffusivity='per_step')
                runs.append(dict(scheme=f'FSI n={n} (M={cycles}, per step)', applications=float(cycles * n),
                                 fn=lambda b=fsi: b(u0)))
            for multiple in (100.0, 10.0):
                run, stats = implicit_runner(lam, time_, multiple)
                runs.append(dict(scheme=f'implicit τ={stats["tau"]:.4g} ({stats["multiple"]:.3g}× limit, '
                                        f'{stats["steps"]} steps)',
                                 fn=lambda run=run: run(u0), stats=stats))
            with torch.no_grad():
                outputs = [r['fn']() for r in runs]
                times, _ = interleaved({i: r['fn'] for i, r in enumerate(runs)}, REPEATS)
            for r, out, ts in zip(runs, outputs, times.values()):
                err = relative_error(out, ref)
                row = dict(lam=lam, T=time_, scheme=r['scheme'], error_mean=float(err.mean()),
                           error_max=float(err.max()), wall_ms=1e3 * summary(ts)['median'],
                           norm_ratio_max=float((out.flatten(1).norm(dim=1) / u0.flatten(1).norm(dim=1)).max()))
                if 'stats' in r:
                    st = r['stats']
                    row['applications'] = st['iterations'] + 1.5 * st['steps']
                    row['residual'] = st['residual']
                else:
                    row['applications'] = r['applications']
                rows.append(row)
    explicit_apps = {(r['lam'], r['T']): r['applications'] for r in rows if r['scheme'].startswith('explicit')}
    for r in rows:
        r['fewer_than_explicit'] = explicit_apps[(r['lam'], r['T'])] / r['applications']

    lines = ['| λ | T | scheme | applications | × fewer than explicit | rel. L2 error mean | max | wall ms | '
             'max ‖u‖/‖u⁰‖ | residual |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['lam']} | {r['T']:g} | {r['scheme']} | {r['applications']:g} | "
                     f"{r['fewer_than_explicit']:.2f} | {100 * r['error_mean']:.3f}% | {100 * r['error_max']:.3f}% | "
                     f"{r['wall_ms']:.1f} | {r['norm_ratio_max']:.6f} | "
                     f"{'' if 'residual' not in r else format(r['residual'], '.2e')} |")
    table = '\n'.join(lines) + '\n\n' + single_cycle_table()
    header = (f"1D Perona–Malik, 16 signals × 256 samples in [0, 1], D = forward difference (Neumann), "
              f"reference: explicit τ = {EXPLICIT_LIMIT / REFERENCE_FRACTION}; torch {torch.__version__}, 1 thread, "
              f"float64, median of {REPEATS}.\n\n")
    print(header + table)
    save_results('bench_schemes', header + table, rows, indent=1)


if __name__ == '__main__':
    main()
