"""Denoising benchmark: PSNR table per σ and throughput of the 1D denoisers vs tuned total-variation denoising.

Usage:  python benchmarks/bench_denoise.py [--count 64] [--throughput-signals 1000] [--repeats 3] [--threads 1] [--compile]
        python benchmarks/bench_denoise.py --psnr-only --count 512   (PSNR table only, denoise_psnr_512.md)

PSNR: piecewise-constant test signals of length 1024 (data seed 0), mean PSNR (dB) per σ for the noisy
input, TV (weight tuned on the validation split), Perona–Malik (λ, T tuned on the validation split),
the standard (non-symmetric) ResNet with 2× block parameters trained with the same recipe
(benchmarks/models/denoiser-1d-standard), denoiser-1d with free step sizes (the same symmetric network
without the stability bound, ``stability='none'``, recipe denoiser-1d-free, benchmarks/models/denoiser-1d-free:
it separates the symmetric form from the cost of the guarantee), denoiser-1d, denoiser-1d-multigrid (if bundled), the
Bayes limit (:func:`pdeblocks.data.bayes_segment_means`, the posterior mean under the generator's own
prior: no denoiser has a lower expected MSE on these signals) and the oracle that knows the jump
positions (a bound no denoiser can reach, since it is told the jumps). For the Bayes limit − TV the
95% interval of the mean of the per-signal differences is given, and the PSNR of the mean MSE
(10·log10(1/mean MSE) over all signals, the quantity the Bayes limit bounds exactly) next to the
mean of per-signal PSNRs.

Throughput: N signals of length 4096 at σ = 0.1, each bundled denoiser vs TV with the tuned weight, in one
run, interleaved (models, TV, models, TV, …), median of the repeats, same torch thread count for all,
eager PyTorch for all (no compilation); plus where denoiser-1d's time goes (torch profiler). TV is
run in float32 in chunks of 50 signals (each chunk stops at its own duality-gap test), with the
loosest stop that keeps its PSNR within 0.01 dB of the float64 solve at a gap of 1e-7 per sample
(TV tuned for speed at its accuracy); the 1e-7 solve is timed too, for reference. Ceiling: denoiser-1d's
convolution FLOPs at this core's measured float32 matrix-product rate, the least time a direct implementation
of its convolutions could take here, hence the largest speed-up over TV it could reach. ``--compile`` adds denoiser-1d under
``torch.compile`` (inductor fuses the flux evaluation into one loop; compiled during the warm-up, not timed;
TV's solver loop stops on a data-dependent test and stays eager).

Writes benchmarks/results/denoise.md and .json atomically (``--psnr-only``: denoise_psnr_<count>.md/.json).
"""
import argparse
import copy
import inspect
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import interleaved, save_results, summary, timed  # noqa: E402

from pdeblocks.classical import perona_malik_denoise, tv_denoise  # noqa: E402
from pdeblocks.data import SIGMAS, bayes_segment_means, make_signals, oracle_segment_means, psnr  # noqa: E402
from pdeblocks.hub import from_pretrained, list_pretrained, load_folder  # noqa: E402
from pdeblocks.models.denoise1d import Pretrained1D  # noqa: E402
from pdeblocks.train.evaluate import run_model, tuned_baselines  # noqa: E402

STANDARD = ROOT / 'benchmarks' / 'models' / 'denoiser-1d-standard'
FREE_STEP = ROOT / 'benchmarks' / 'models' / 'denoiser-1d-free'


def tuned(sigma: float):
    """TV / PM parameters tuned on the validation split: the ones recorded by the bundled model's evaluation
    (pdeblocks/pretrained/denoiser-1d-piecewise-constant/eval.json) when present, else tuned now (same function)."""
    path = ROOT / 'pdeblocks' / 'pretrained' / 'denoiser-1d-piecewise-constant' / 'eval.json'
    if path.is_file():
        table = json.loads(path.read_text())['evaluation']['table']['piecewise_constant']
        if str(sigma) in table:
            return table[str(sigma)]['tuned']
    return tuned_baselines('piecewise_constant', sigma)


def psnr_table(models, count: int):
    rows = []
    for sigma in SIGMAS:
        s = make_signals('piecewise_constant', 'test', count, 1024, sigma, seed=0)
        t = tuned(sigma)
        f = torch.from_numpy(s.noisy).double()
        out = {'noisy': s.noisy, 'tv': tv_denoise(f, t['tv_weight']).numpy(),
               'perona_malik': perona_malik_denoise(f, t['pm_contrast'], t['pm_time']).numpy()}
        out.update({name: run_model(m, s.noisy) for name, m in models.items()})
        out['bayes'] = bayes_segment_means(s.noisy, sigma)
        out['oracle'] = oracle_segment_means(s.noisy, s.starts)
        per_signal = {k: psnr(v, s.clean) for k, v in out.items()}
        gain = per_signal['bayes'] - per_signal['tv']
        rows.append({'sigma': sigma, **{k: float(v.mean()) for k, v in per_signal.items()},
                     'bayes_minus_tv_ci95': float(1.96 * gain.std(ddof=1) / np.sqrt(len(gain))),
                     'psnr_of_mean_mse': {k: float(psnr(np.ravel(v), np.ravel(s.clean))) for k, v in out.items()},
                     'tuned': t})
    return rows


def psnr_lines(rows, models, params, count: int):
    cols = ['noisy', 'tv', 'perona_malik'] + list(models) + ['bayes', 'oracle']
    head = {'noisy': 'noisy', 'tv': 'TV (tuned)', 'perona_malik': 'Perona–Malik (tuned)',
            'bayes': 'Bayes limit', 'oracle': 'oracle (knows the jumps)'}
    lines = [f"PSNR (dB), piecewise-constant test signals, length 1024, {count} per σ; parameters: "
             + ', '.join(f'{k} {v:,}' for k, v in params.items()), '',
             '| σ | ' + ' | '.join(head.get(c, c) for c in cols)
             + ' | denoiser-1d − TV | Bayes limit − TV (95% interval) | Bayes limit − denoiser-1d |',
             '|---' * (len(cols) + 4) + '|']
    for r in rows:
        lines.append(f"| {r['sigma']} | " + ' | '.join(f'{r[c]:.2f}' for c in cols)
                     + f" | {r['denoiser-1d'] - r['tv']:+.2f} | {r['bayes'] - r['tv']:+.2f} ± "
                       f"{r['bayes_minus_tv_ci95']:.2f} | {r['bayes'] - r['denoiser-1d']:.2f} |")
    lines += ['', 'PSNR of the mean MSE over the same signals (dB), the quantity the Bayes limit bounds exactly:', '',
              '| σ | ' + ' | '.join(head.get(c, c) for c in cols) + ' |', '|---' * (len(cols) + 1) + '|']
    for r in rows:
        lines.append(f"| {r['sigma']} | " + ' | '.join(f"{r['psnr_of_mean_mse'][c]:.2f}" for c in cols) + ' |')
    return lines


COMPILED = 'denoiser-1d (torch.compile)'
TV_TOLERANCES = (1e-4, 1e-5, 1e-6, 1e-7)   # duality-gap stops per sample, loosest first
TV_PSNR_SLACK = 0.01                         # dB: the timed TV must match the exact solve this closely


def tv_chunked(f: torch.Tensor, w: float, tol: float = 1e-7, chunk: int = 50) -> torch.Tensor:
    return torch.cat([tv_denoise(f[i:i + chunk], w, tol=tol) for i in range(0, len(f), chunk)])


def throughput(models, n: int, repeats: int):
    """Seconds for ``n`` signals of length 4096 per model and for TV, interleaved, median of ``repeats``.

    TV is timed at the loosest duality-gap stop in :data:`TV_TOLERANCES` whose PSNR on the first 50
    signals is within :data:`TV_PSNR_SLACK` dB of the float64 solve at 1e-7 (TV tuned for speed at
    its accuracy), and, for reference, at 1e-7."""
    s = make_signals('piecewise_constant', 'test', n, 4096, 0.1, seed=0, offset=10_000)
    w = tuned(0.1)['tv_weight']
    x = torch.from_numpy(s.noisy)
    exact = float(psnr(tv_chunked(x[:50].double(), w).numpy(), s.clean[:50]).mean())
    tol_psnr = {tol: float(psnr(tv_chunked(x[:50], w, tol).numpy(), s.clean[:50]).mean()) for tol in TV_TOLERANCES}
    tv_tol = next((t for t in TV_TOLERANCES if abs(tol_psnr[t] - exact) <= TV_PSNR_SLACK), TV_TOLERANCES[-1])
    tvs = {'tv': tv_tol, 'tv_1e-7': 1e-7}
    with torch.no_grad():
        chunk = max(1, inspect.signature(Pretrained1D.predict).parameters['chunk_samples'].default // x.shape[-1])
        # every chunk shape predict() will use (compiles, if compiled)
        warm_up = {name: timed(m.eval().predict, x[:n % chunk + chunk, None])[1] for name, m in models.items()}
        candidates = {name: (lambda m=m: m.predict(x[:, None])[:, 0]) for name, m in models.items()}
        candidates.update({name: (lambda tol=tol: tv_chunked(x, w, tol)) for name, tol in tvs.items()})
        times, outs = interleaved(candidates, repeats)
    med = {k: summary(v)['median'] for k, v in times.items()}
    return dict(signals=n, length=4096, sigma=0.1, threads=torch.get_num_threads(), repeats=repeats,
                seconds=med, warm_up_seconds=warm_up, speedup={k: med['tv'] / med[k] for k in models},
                speedup_vs_tv_1e7={k: med['tv_1e-7'] / med[k] for k in models}, all_times=times,
                psnr={k: float(psnr(v.numpy(), s.clean).mean()) for k, v in outs.items()},
                tv_tolerance=tv_tol, tv_psnr_by_tolerance_first50=tol_psnr, tv_exact_psnr_first50=exact)


def time_split(model, n: int = 100) -> dict:
    """Where denoiser-1d's inference time goes (torch profiler, ``n`` signals of length 4096): the share of
    convolutions (K, Kᵀ, lift, projection) vs everything else (flux evaluation, residual updates, reshapes)."""
    from torch.profiler import profile
    x = torch.from_numpy(make_signals('piecewise_constant', 'test', n, 4096, 0.1, seed=0, offset=10_000).noisy)
    with torch.no_grad():
        model(x[:4, None])
        with profile() as prof:
            model(x[:, None])
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if 'conv' in e.key)
    return dict(signals=n, conv_share=conv / total, other_share=1 - conv / total)


def dense_rate(size: int = 2048, repeats: int = 5) -> float:
    """This core's float32 dense arithmetic rate in FLOP/s: best of ``repeats`` size² matrix products
    (sgemm, 2·size³ FLOP each) at the current torch thread count. Tuned sgemm runs near the core's peak,
    so a direct convolution is not expected to run faster."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times, _ = interleaved({'sgemm': lambda: a @ b}, repeats)
    return 2 * size ** 3 / summary(times['sgemm'])['min']


def forward_flops(model, length: int):
    """(FLOPs, FLOPs per operator) of ``model`` on one signal of ``length`` samples (``torch.utils.flop_counter``,
    after a warm-up so that the cached norm bounds are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode
    x = torch.zeros(1, 1, length)
    with torch.no_grad():
        model(x)
        with FlopCounterMode(display=False) as counter:
            model(x)
    return counter.get_total_flops(), {str(k): v for k, v in counter.get_flop_counts()['Global'].items()}


def compute_ceiling(model, tp: dict) -> dict:
    """How fast ``model``'s convolutions could possibly run on the throughput signals here: their
    FLOPs (:func:`forward_flops`) times the number of signals, at :func:`dense_rate`; hence the
    largest speed-up over TV a direct implementation could reach here, and the rate 10× would need."""
    per_signal, per_op = forward_flops(model, tp['length'])
    flops = per_signal * tp['signals']
    rate = dense_rate()
    floor = flops / rate
    return dict(flops=flops, flop_counts={k: v * tp['signals'] for k, v in per_op.items()},
                dense_rate=rate, seconds_at_dense_rate=floor, max_speedup=tp['seconds']['tv'] / floor,
                rate_needed_for_10x=flops / (tp['seconds']['tv'] / 10))


def step_ratios(model, length: int = 512) -> list:
    """τ·L·‖K‖²/2 of every symmetric step of ``model``: 1 is the Euclidean-stability limit τ = 2/(L‖K‖²).
    ‖K‖ by float64 power iteration on ``length`` samples (the true norm, not the bound B the step uses)."""
    from pdeblocks.layers.symmetric import SymmetricResidual
    from pdeblocks.ops.norms import power_iteration_norm
    ratios = []
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SymmetricResidual):
                norm = float(power_iteration_norm(m.weight.detach().double(), m.boundary, [length] * m.dim))
                ratios.append(float(m.step_size()) * float(m.step_constant) * norm ** 2 / 2)
    return ratios


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('--count', type=int, default=64)
    p.add_argument('--throughput-signals', type=int, default=1000)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=1, help='torch threads for every method (default 1)')
    p.add_argument('--psnr-only', action='store_true', help='the PSNR table only, no throughput')
    p.add_argument('--compile', action='store_true',
                   help='also time denoiser-1d under torch.compile (inductor; needs a C++ compiler)')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    models = {}
    if STANDARD.is_dir():
        models['standard_resnet_2x'] = load_folder(STANDARD)
    if FREE_STEP.is_dir():
        models['symmetric_free_step'] = load_folder(FREE_STEP)
    models['denoiser-1d'] = from_pretrained('denoiser-1d-piecewise-constant')
    if 'denoiser-1d-multigrid' in list_pretrained():
        models['denoiser-1d-multigrid'] = from_pretrained('denoiser-1d-multigrid')
    params = {k: sum(q.numel() for q in m.parameters() if q.requires_grad) for k, m in models.items()}
    rows = psnr_table(models, a.count)
    lines = psnr_lines(rows, models, params, a.count)
    steps = {k: step_ratios(m) for k, m in models.items()}
    lines += ['', 'Step sizes against the Euclidean-stability limit, τ·L·‖K‖²/2 per symmetric step (1 = the limit '
              'τ = 2/(L‖K‖²); ‖K‖ by power iteration):', '', '| model | steps | min | max |', '|---|---|---|---|']
    lines += [f"| {k} | {len(v)} | {min(v):.3f} | {max(v):.3f} |" for k, v in steps.items() if v]
    if a.psnr_only:
        text = '\n'.join(lines) + '\n'
        print(text)
        save_results(f'denoise_psnr_{a.count}', text, dict(psnr=rows, parameters=params, step_ratios=steps))
        return
    timed = {k: m for k, m in models.items() if k not in ('standard_resnet_2x', 'symmetric_free_step')}
    if a.compile:
        timed[COMPILED] = copy.deepcopy(models['denoiser-1d'])
        timed[COMPILED].compile()
    tp = throughput(timed, a.throughput_signals, a.repeats)
    split = time_split(models['denoiser-1d'])
    ceiling = compute_ceiling(models['denoiser-1d'], tp)
    lines += ['', f"Throughput: {tp['signals']} signals of length 4096, σ = 0.1, {tp['threads']} thread(s), median of "
              f"{tp['repeats']} interleaved repeats", '',
              '| method | seconds | speed-up vs TV | PSNR (dB) |', '|---|---|---|---|']
    for k in timed:
        lines.append(f"| {k} | {tp['seconds'][k]:.2f} | {tp['speedup'][k]:.2f}× | {tp['psnr'][k]:.2f} |")
    lines += [f"| TV (tuned, float32, duality gap ≤ {tp['tv_tolerance']:g}/sample) | {tp['seconds']['tv']:.2f} | 1.00× | "
              f"{tp['psnr']['tv']:.2f} |",
              f"| TV at duality gap ≤ 1e-7/sample (reference) | {tp['seconds']['tv_1e-7']:.2f} | "
              f"{tp['seconds']['tv'] / tp['seconds']['tv_1e-7']:.2f}× | {tp['psnr']['tv_1e-7']:.2f} |",
              '', f"TV's stop: the loosest duality gap per sample in {list(TV_TOLERANCES)} whose PSNR on the first 50 "
              f"signals is within {TV_PSNR_SLACK} dB of the float64 solve at 1e-7 ({tp['tv_exact_psnr_first50']:.3f} dB; "
              + ', '.join(f"{t:g}: {v:.3f}" for t, v in tp['tv_psnr_by_tolerance_first50'].items()) + ").",
              '', f"Speed-up denoiser-1d vs TV: **{tp['speedup']['denoiser-1d']:.2f}×** "
              f"({tp['speedup_vs_tv_1e7']['denoiser-1d']:.1f}× against TV solved to 1e-7). denoiser-1d inference time "
              f"(profiler, {split['signals']} signals): {100 * split['conv_share']:.0f}% convolutions, "
              f"{100 * split['other_share']:.0f}% flux evaluation, residual updates and reshapes.",
              '', f"Ceiling: denoiser-1d does {ceiling['flops'] / 1e9:.1f} GFLOP on these signals (torch.utils.flop_counter: "
              + ', '.join(f"{k} {v / 1e9:.1f}" for k, v in ceiling['flop_counts'].items())
              + f"); this core's float32 matrix product runs at {ceiling['dense_rate'] / 1e9:.0f} GFLOP/s "
              f"({tp['threads']} thread(s)), so at that rate denoiser-1d's convolutions alone take "
              f"{ceiling['seconds_at_dense_rate']:.2f} s: at most {ceiling['max_speedup']:.1f}× TV, whatever the rest "
              f"costs. 10× would need {ceiling['rate_needed_for_10x'] / 1e9:.0f} GFLOP/s "
              f"({ceiling['rate_needed_for_10x'] / ceiling['dense_rate']:.1f}× the matrix-product rate), or a "
              f"convolution algorithm doing that many times fewer operations."]
    if COMPILED in timed:
        lines += ['', f"{COMPILED}: the same weights under inductor (compiled during the warm-up, "
                  f"{tp['warm_up_seconds'][COMPILED]:.0f} s, not timed): {tp['seconds'][COMPILED]:.2f} s, "
                  f"{tp['seconds']['denoiser-1d'] / tp['seconds'][COMPILED]:.2f}× eager."]
    text = '\n'.join(lines) + '\n'
    print(text)
    save_results('denoise', text, dict(psnr=rows, parameters=params, step_ratios=steps, throughput=tp,
                                       time_split=split, ceiling=ceiling))


if __name__ == '__main__':
    main()
