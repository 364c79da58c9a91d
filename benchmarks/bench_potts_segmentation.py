"""How far an exact segmentation gets on today's piecewise-constant signals (issue 17's 34.0 dB target at σ = 0.1).

The general denoiser's variational tail (``IRLSTail1D``) is a soft Potts segmentation. This script computes the
exact one: the minimiser of ‖w − f‖² + γ·(number of jumps of w), whose value on each segment is the mean of the noisy
samples there, by PELT (exact optimal partitioning; ``ruptures.Pelt(model='l2', min_size=1, jump=1)``), with
γ = κ·σ̂², σ̂ the blind model's own noise estimate (:func:`pdeblocks.ops.noise.noise_sigma`). κ runs over a grid
and every κ is scored on the test signals themselves: the best of the grid is an oracle-tuned segmentation, an
advantage no model has. The same signals (``make_signals('piecewise_constant', 'test', 64, 1024, σ, seed=0)``) give the
published ``denoiser-1d`` and the Bayes limit (the posterior mean under the generator's own prior).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_potts_segmentation.py [--count 64] [--kappas 9 10 11 12 13]``
(about 7 min: PELT takes about 0.5 s per signal); writes ``benchmarks/results/potts_segmentation.md`` and ``.json``.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import save_results  # noqa: E402

from pdeblocks.data.signals import bayes_segment_means, make_signals, psnr  # noqa: E402
from pdeblocks.hub import from_pretrained  # noqa: E402
from pdeblocks.ops.noise import noise_sigma  # noqa: E402
from pdeblocks.train.evaluate import run_model  # noqa: E402


def potts(f: np.ndarray, penalty: float) -> np.ndarray:
    """argmin_w ‖w − f‖² + penalty·#jumps(w) for one signal ``f`` (exact, PELT): the segment means of ``f``."""
    import ruptures
    ends = ruptures.Pelt(model='l2', min_size=1, jump=1).fit(f).predict(pen=penalty)
    w, start = np.empty_like(f), 0
    for end in ends:
        w[start:end] = f[start:end].mean()
        start = end
    return w


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--count', type=int, default=64)
    p.add_argument('--kappas', type=float, nargs='+', default=[9, 10, 11, 12, 13])
    p.add_argument('--sigmas', type=float, nargs='+', default=[0.05, 0.1])
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model = from_pretrained('denoiser-1d')
    rows = []
    for sigma in a.sigmas:
        s = make_signals('piecewise_constant', 'test', a.count, 1024, sigma, seed=0)
        sigma_hat = noise_sigma(torch.from_numpy(s.noisy)[:, None]).flatten().numpy()
        row = dict(sigma=sigma, noisy=float(psnr(s.noisy, s.clean).mean()),
                   model=float(psnr(run_model(model, s.noisy), s.clean).mean()),
                   bayes_limit=float(psnr(bayes_segment_means(s.noisy, sigma), s.clean).mean()), potts={})
        for kappa in a.kappas:
            w = np.stack([potts(f, kappa * sh ** 2) for f, sh in zip(s.noisy, sigma_hat)])
            row['potts'][str(kappa)] = float(psnr(w, s.clean).mean())
            print(f"σ = {sigma}, κ = {kappa:g}: {row['potts'][str(kappa)]:.2f} dB", flush=True)
        rows.append(row)
    head = ' | '.join(f'κ = {k:g}' for k in a.kappas)
    lines = [f"Exact Potts segmentation (PELT, γ = κσ̂²) on today's piecewise-constant test signals ({a.count}, length "
             f"1024), mean PSNR (dB); every κ scored on these signals (oracle tuning):", '',
             f'| σ | noisy | {head} | best κ | denoiser-1d | Bayes limit |',
             '|---|---|' + '---|' * len(a.kappas) + '---|---|---|']
    for r in rows:
        best = max(r['potts'], key=r['potts'].get)
        lines.append(f"| {r['sigma']} | {r['noisy']:.2f} | " + ' | '.join(f"{r['potts'][str(k)]:.2f}" for k in a.kappas)
                     + f" | {float(best):g} | {r['model']:.2f} | {r['bayes_limit']:.2f} |")
    text = '\n'.join(lines) + '\n'
    print(text)
    save_results('potts_segmentation', text, dict(count=a.count, kappas=a.kappas, rows=rows))


if __name__ == '__main__':
    main()
