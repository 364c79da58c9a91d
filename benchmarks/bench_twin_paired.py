"""The certificate's cost with its error bar: a certified blind denoiser against its free-step twin, paired per signal.

``bench_denoise_general.py`` compares the twins on 32 test signals per family and σ, where one family's mean has a
standard error of about 0.06 dB. This script takes ``--count`` test signals per family and σ (the first 32 are the
bench's), denoises each with both models (:func:`bench_denoise_general.run_model`) and reports the mean of the paired
differences certified − free with its standard error, and the same over the first 32 signals.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_twin_paired.py --model MODEL --free FREE [--count 256] [--out NAME]``
(MODEL and FREE: model folders or run folders); writes ``benchmarks/results/<NAME>.md`` and ``.json``.
"""
import argparse
from typing import List

import numpy as np
import torch
from _common import save_results
from bench_denoise_general import LENGTH, load_model, run_model

from pdeblocks.data import psnr
from pdeblocks.data.families import FAMILIES, make_family_signals

BENCH_COUNT = 32    # bench_denoise_general's --count


def paired_rows(model, free, count: int, sigmas: List[float]) -> List[dict]:
    rows = []
    for sigma in sigmas:
        for fam in FAMILIES:
            s = make_family_signals(fam, 'test', count, LENGTH, sigma)
            diff = psnr(run_model(model, s.noisy), s.clean) - psnr(run_model(free, s.noisy), s.clean)
            rows.append(dict(family=fam, sigma=sigma, count=count, mean=float(diff.mean()),
                             stderr=float(diff.std(ddof=1) / np.sqrt(count)),
                             first=float(diff[:BENCH_COUNT].mean()), free_better=int((diff < 0).sum())))
            print(fam, sigma, {k: round(v, 3) for k, v in rows[-1].items() if isinstance(v, float)}, flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', required=True, help='the certified model (model or run folder)')
    p.add_argument('--free', required=True, help='its free-step twin (model or run folder)')
    p.add_argument('--count', type=int, default=256, help='test signals per family and σ (default: %(default)s)')
    p.add_argument('--sigmas', type=float, nargs='+', default=[0.05, 0.1])
    p.add_argument('--out', default='twin_paired')
    a = p.parse_args(argv)
    if a.count < BENCH_COUNT:
        p.error(f"--count must be at least {BENCH_COUNT} (the bench's signals come first), got {a.count}")
    torch.set_num_threads(1)
    model, free = load_model(a.model).eval(), load_model(a.free).eval()
    rows = paired_rows(model, free, a.count, a.sigmas)
    lines = [f"Certified − free twin, paired per signal: `{a.model}` − `{a.free}`, {a.count} test signals per family "
             f"and σ, length {LENGTH} (PSNR difference in dB, mean ± standard error; the first {BENCH_COUNT} are "
             f"`bench_denoise_general.py`'s signals).", '',
             f"| family | σ | certified − free | first {BENCH_COUNT} | free better on |", '|---|---|---|---|---|']
    lines += [f"| {r['family'].replace('_', ' ')} | {r['sigma']} | {r['mean']:+.3f} ± {r['stderr']:.3f} | "
              f"{r['first']:+.3f} | {r['free_better']} of {r['count']} |" for r in rows]
    text = '\n'.join(lines) + '\n'
    print(text)
    save_results(a.out, text, dict(model=a.model, free=a.free, count=a.count, rows=rows))


if __name__ == '__main__':
    main()
