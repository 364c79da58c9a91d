"""How far above tuned TV can any denoiser get? The Bayes limit − TV against the signals' mean segment length.

Usage:  python benchmarks/bench_bayes_gap.py [--count 64] [--val-count 32] [--means 16 32 64 96 128 192 256 512]

For piecewise-constant signals of length 1024 (:func:`pdeblocks.data.make_signals`, data seed 0, the
same minimum segment of 8 samples) with mean segment length m, per σ: TV with its weight tuned on
``--val-count`` validation signals (:func:`pdeblocks.classical.tune_tv`, as for the bundled models),
the Bayes limit (:func:`pdeblocks.data.bayes_segment_means` with the generator's own prior for that m: no
denoiser has a lower expected MSE) and the oracle that knows the jumps, on ``--count`` test signals.

The published models are trained and tested at m = 64 (the generator's default); that row repeats
bench_denoise's TV, Bayes and oracle columns (same signals, same tuning). The other rows say what the
target "≥ 4.5 dB over tuned TV at σ = 0.1" would ask on other data: the Bayes limit − TV is the most any
denoiser can gain, so a row below 4.5 dB makes the target impossible there.

Writes benchmarks/results/bayes_gap.md and .json atomically.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import Stopwatch, save_results  # noqa: E402

from pdeblocks.classical import tune_tv, tv_denoise  # noqa: E402
from pdeblocks.data import SIGMAS, bayes_segment_means, make_signals, oracle_segment_means, psnr  # noqa: E402

LENGTH, MIN_SEGMENT, TARGET_DB = 1024, 8, 4.5


def gap_row(mean_segment: float, sigma: float, count: int, val_count: int) -> dict:
    """TV (tuned), Bayes limit and oracle PSNR on the test split for one (m, σ); per-signal differences."""
    kw = dict(mean_segment=mean_segment, min_segment=MIN_SEGMENT, seed=0)
    val = make_signals('piecewise_constant', 'val', val_count, LENGTH, sigma, **kw)
    weight, _ = tune_tv(val.noisy, val.clean)
    test = make_signals('piecewise_constant', 'test', count, LENGTH, sigma, **kw)
    tv = psnr(tv_denoise(torch.from_numpy(test.noisy).double(), weight).numpy(), test.clean)
    bayes = psnr(bayes_segment_means(test.noisy, sigma, mean_segment, MIN_SEGMENT), test.clean)
    oracle = psnr(oracle_segment_means(test.noisy, test.starts), test.clean)
    gain = bayes - tv
    return dict(mean_segment=mean_segment, sigma=sigma, tv_weight=weight,
                segments=float(np.mean([len(s) for s in test.starts])),
                tv=float(tv.mean()), bayes=float(bayes.mean()), oracle=float(oracle.mean()),
                bayes_minus_tv=float(gain.mean()),
                bayes_minus_tv_ci95=float(1.96 * gain.std(ddof=1) / np.sqrt(count)),
                oracle_minus_tv=float((oracle - tv).mean()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--count', type=int, default=64, help='test signals per (m, σ)')
    ap.add_argument('--val-count', type=int, default=32, help='validation signals for tuning the TV weight')
    ap.add_argument('--means', type=float, nargs='+', default=[16, 32, 64, 96, 128, 192, 256, 512],
                    help=f'mean segment lengths (each > {MIN_SEGMENT})')
    args = ap.parse_args(argv)
    if args.count < 2 or args.val_count < 1:
        ap.error(f"need --count ≥ 2 and --val-count ≥ 1, got {args.count}, {args.val_count}")
    if any(not m > MIN_SEGMENT for m in args.means):
        ap.error(f"every mean segment length must exceed the minimum {MIN_SEGMENT}, got {args.means}")
    watch = Stopwatch()
    rows = []
    for m in args.means:
        for sigma in SIGMAS:
            rows.append(gap_row(m, sigma, args.count, args.val_count))
            r = rows[-1]
            print(f"m={m:g} σ={sigma}: TV {r['tv']:.2f}, Bayes {r['bayes']:.2f} ({r['bayes_minus_tv']:+.2f} dB), "
                  f"oracle {r['oracle']:.2f}", flush=True)
    lines = [f"PSNR (dB) of tuned TV, the Bayes limit and the oracle on piecewise-constant test signals of length "
             f"{LENGTH} (minimum segment {MIN_SEGMENT}), {args.count} per row, TV weight tuned on {args.val_count} "
             f"validation signals; m = mean segment length (the bundled models: m = 64).", '',
             '| m | segments per signal | σ | TV (tuned) | Bayes limit | oracle | Bayes limit − TV (95% interval) '
             '| oracle − TV |', '|---' * 8 + '|']
    for r in rows:
        lines.append(f"| {r['mean_segment']:g} | {r['segments']:.1f} | {r['sigma']} | {r['tv']:.2f} | {r['bayes']:.2f} "
                     f"| {r['oracle']:.2f} | {r['bayes_minus_tv']:+.2f} ± {r['bayes_minus_tv_ci95']:.2f} "
                     f"| {r['oracle_minus_tv']:+.2f} |")
    reach = [r['mean_segment'] for r in rows if r['sigma'] == 0.1 and r['bayes_minus_tv'] >= TARGET_DB]
    where = f"for m ∈ {{{', '.join(f'{m:g}' for m in reach)}}}" if reach else "for none of the m tested"
    lines += ['', f"At σ = 0.1 the Bayes limit is ≥ {TARGET_DB} dB above tuned TV {where}; wherever it is below, "
                  f"no denoiser can gain {TARGET_DB} dB over TV on average.",
              f"({watch():.0f} s)"]
    text = '\n'.join(lines)
    print(text)
    save_results('bayes_gap', text, dict(count=args.count, val_count=args.val_count, length=LENGTH,
                                         min_segment=MIN_SEGMENT, rows=rows))


if __name__ == '__main__':
    main()
