"""MNIST-1D: does the stability certificate cost accuracy? (issue 20)

MNIST-1D is generated offline by the ``mnist1d`` package with its standard arguments
(``make_dataset(get_dataset_args())``: 4,000 training and 1,000 test signals of length 40; published: CNN 94%,
GRU 91%, human expert 96%). One recipe for every model: AdamW (lr 3e-3, weight decay 0.01 on the weight
matrices only), cosine schedule per step, batch 100, cross-entropy, ``--epochs`` epochs, one thread.

Models (the layout of the issue: 1×5 lift to 32 channels, 6 blocks of 3 taps at length 40, flatten head):

* ``plain``: 4 convolutions (1×5 lift, three 32→32 3-tap), ReLU, flatten, linear (22,314 parameters);
* ``free``: ``symresnet1d_mnist1d_free``, symmetric blocks with a free step (``stability='none'``);
* ``certified``: ``symresnet1d_mnist1d`` without gains, the library default (Euclidean, Perona–Malik,
  τ = σ(θ)·2/(L·B²)). The committed tables ran on the library at d952c0c, where B carries no gradient; from
  cad507a on B carries a radial gradient (a 30-epoch screen of it: ``mnist1d_levers.md``, ``lib_cert@cad507a``);
* ``certified_grad``: the same blocks with the gradient of the bound: τ = σ(θ)·2/(L·B(K)²) where B(K) is the
  library's rigorous bound (Gram iteration on the symbol × Szegő factor) recomputed from the current weight in
  autograd every step (the prototype :class:`mnist1d_levers.LeverBlock`; same theorem, same parameters);
* ``certified_scale`` / ``free_scale``: ``symresnet1d_mnist1d`` and its free twin as the library builds them (certified
  gains between the blocks; since 1f4163f B carries the σ_max gradient, ``Certification.gradient='auto'``), and
  ``certified_scale_lam01`` the same with contrast λ₀ = 0.1 (the library's numbers: ``--stem mnist1d_library``);
* further variants of :mod:`mnist1d_levers` by name (``--models``).

Reports test accuracy mean ± std over ``--seeds``, parameters, seconds per epoch (and the ratio to ``plain``,
models interleaved seed by seed), and after training the step sizes τ, the fraction τ·L·B²/2 of the scalar
limit (> 1 only for the free step) and ρ = mean σ²/B² over the modes of K (see ``mnist1d_levers.mode_fraction``).

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_mnist1d.py [--epochs 60] [--seeds 0,1,2] [--models ...]
[--stem mnist1d] [--fresh]``; writes ``benchmarks/results/<stem>.md`` and ``.json`` after every run. Runs already in
``<stem>.json`` with the same epochs, lr and threads are kept and not repeated (``--fresh`` starts over).
"""
import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, save_results  # noqa: E402
from mnist1d_levers import VARIANTS, LeverBlock, PlainCNN, mnist1d_data, step_stats, train  # noqa: E402

import pdeblocks  # noqa: E402
from pdeblocks.models.symmetric_resnet1d import SymmetricResNet1d, create_model_1d  # noqa: E402


def lever_block(**kw) -> Callable[..., nn.Module]:
    """A constructor (channels, dim=1, boundary='zeros') → LeverBlock for SymmetricResNet1d's ``block``."""
    def make(channels: int, dim: int = 1, boundary: str = 'zeros', **extra) -> nn.Module:
        if dim != 1 or boundary != 'zeros':
            raise ValueError(f"LeverBlock is 1D with zero padding; got dim={dim}, boundary={boundary!r}")
        return LeverBlock(channels, **kw, **extra)
    return make


def mnist1d_family(between: str = '', **kw) -> SymmetricResNet1d:
    return SymmetricResNet1d(layers=(6,), widths=(32,), global_pool='flatten', input_length=40,
                             block=lever_block(**kw), between=between)


MODELS: Dict[str, Callable[[], nn.Module]] = {
    'plain': PlainCNN,
    'free': lambda: create_model_1d('symresnet1d_mnist1d_free', between=''),
    'certified': lambda: create_model_1d('symresnet1d_mnist1d', between=''),
    'certified_grad': lambda: mnist1d_family(),
    'certified_grad_surrogate': lambda: mnist1d_family(grad_bound='surrogate'),
    'certified_grad_lam01': lambda: mnist1d_family(grad_bound='surrogate', contrast=0.1),
    'free_lam01': lambda: create_model_1d('symresnet1d_mnist1d_free', between='', block_kwargs=dict(contrast=0.1)),
    'free_bn': lambda: create_model_1d('symresnet1d_mnist1d_free', between='batchnorm'),
    'certified_bn': lambda: create_model_1d('symresnet1d_mnist1d', between='batchnorm'),
    'certified_grad_bn': lambda: mnist1d_family(between='batchnorm', grad_bound='surrogate'),
    'free_scale': lambda: create_model_1d('symresnet1d_mnist1d_free', between='scale'),
    'certified_scale': lambda: create_model_1d('symresnet1d_mnist1d', between='scale'),
    'certified_scale_lam01': lambda: create_model_1d('symresnet1d_mnist1d', block_kwargs=dict(contrast=0.1)),
    'certified_grad_scale': lambda: mnist1d_family(between='scale', grad_bound='surrogate'),
    'lipschitz_grad_charbonnier_bias': lambda: mnist1d_family(flux='charbonnier', bias=True),
}
for _name, _build in VARIANTS.items():
    MODELS.setdefault(_name, (lambda b: lambda: b(6))(_build))


def fmt_range(values: List[float], digits: int = 3) -> str:
    if not values:
        return '—'
    low, high = f"{min(values):.{digits}g}", f"{max(values):.{digits}g}"
    return low if low == high else f"{low}–{high}"


def write_tables(a: argparse.Namespace, names: List[str], runs: Dict[str, List[dict]]) -> None:
    """The table of the runs so far (rewritten after every run, so an interrupted run leaves the finished ones;
    the seeds of each row are listed in its "per seed" column)."""
    runs = {n: rs for n, rs in runs.items() if rs}
    names = [n for n in names if n in runs]
    done = sorted({r['seed'] for rs in runs.values() for r in rs})
    plain_time = statistics.mean(r['s_per_epoch'] for r in runs['plain']) if 'plain' in runs else None
    lines = [f"MNIST-1D (mnist1d standard arguments, 4000/1000, length 40), {a.epochs} epochs, AdamW lr {a.lr}, "
             f"cosine, batch 100, seeds {done}, {a.threads} thread(s)", '',
             '| model | guarantee | parameters | test accuracy (mean ± std) | per seed | train acc | s/epoch '
             '| × plain | τ after training | τ·L·B²/2 | ρ | chain ‖f(u)‖/‖u‖ ≤ |',
             '|---|---|---:|---:|---|---:|---:|---:|---|---|---|---|']
    summary = {}
    for name in names:
        rs = runs[name]
        accs = [r['acc'] * 100 for r in rs]
        per_seed = ', '.join(f"{v:.1f} (s{r['seed']})" for v, r in zip(accs, rs))
        mean = statistics.mean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        t = statistics.mean(r['s_per_epoch'] for r in rs)
        taus = [v for r in rs for v in r['tau']]
        fracs = [v for r in rs for v in r['frac']]
        rhos = [v for r in rs for v in r['rho']]
        chain = [r['composed_norm_factor'] for r in rs]
        chain_text = '—' if None in chain else fmt_range(chain)
        modes = '/'.join(rs[0]['modes']) or '—'
        summary[name] = dict(mean=mean, std=std, params=rs[0]['params'], s_per_epoch=t, runs=rs)
        ratio = f"{t / plain_time:.2f}" if plain_time else '—'
        lines.append(f"| {name} | {modes} | {rs[0]['params']:,} | {mean:.1f} ± {std:.1f} | "
                     f"{per_seed} | {statistics.mean(r['train_acc'] for r in rs) * 100:.1f} "
                     f"| {t:.2f} | {ratio} | {fmt_range(taus)} | {fmt_range(fracs)} | {fmt_range(rhos, 2)} | {chain_text} |")
    lines += ['', 'τ: step size per block (per-channel variants: the mean over channels); τ·L·B²/2: the fraction of '
              'the scalar stable limit 2/(L·B²) (B ≥ ‖K‖ the rigorous bound), above 1 only without a guarantee; '
              'ρ = mean σ²/B² over the modes of K (1 = flat spectrum); chain: the factor certify() composes over the '
              'blocks and certified gains (— where a factor is unknown: free steps; BatchNorm is not certified and '
              'not listed, so there the chain covers the blocks alone).',
              f'Command: OMP_NUM_THREADS={a.threads} python benchmarks/bench_mnist1d.py --models {a.models} '
              f'--epochs {a.epochs} --seeds {a.seeds} --stem {a.stem}']
    text = '\n'.join(lines)
    print(text)
    save_results(a.stem, text, dict(epochs=a.epochs, seeds=done, lr=a.lr, threads=a.threads, models=summary))


def previous_runs(a: argparse.Namespace) -> Dict[str, List[dict]]:
    """The runs of results/<stem>.json if it was written with the same epochs, lr and threads (else none)."""
    path = RESULTS / f'{a.stem}.json'
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if (old.get('epochs'), old.get('lr'), old.get('threads')) != (a.epochs, a.lr, a.threads):
        return {}
    return {name: m['runs'] for name, m in old.get('models', {}).items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', default='plain,free,certified,certified_grad')
    p.add_argument('--epochs', type=int, default=60)
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--stem', default='mnist1d')
    p.add_argument('--fresh', action='store_true',
                   help='ignore the runs already in results/<stem>.json (default: keep those of the same recipe)')
    a = p.parse_args(argv)
    names = a.models.split(',')
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; valid: {sorted(MODELS)}")
    seeds = [int(s) for s in a.seeds.split(',')]
    torch.set_num_threads(a.threads)
    data = mnist1d_data()
    runs: Dict[str, List[dict]] = {n: [] for n in names}
    if not a.fresh:
        for name, rs in previous_runs(a).items():
            if name in runs:
                runs[name] = [r for r in rs if r['seed'] in seeds]
    for seed in seeds:          # models interleaved seed by seed, so CPU contention spreads over all of them
        for name in names:
            if any(r['seed'] == seed for r in runs[name]):
                continue        # done by an earlier (interrupted) invocation with the same recipe
            torch.manual_seed(seed)
            model = MODELS[name]()
            params = sum(q.numel() for q in model.parameters() if q.requires_grad)
            acc, train_acc, per_epoch = train(model, data, a.epochs, seed, lr=a.lr)
            report = pdeblocks.certify(model)
            st = step_stats(model)
            row = dict(seed=seed, params=params, acc=acc, train_acc=train_acc, s_per_epoch=per_epoch,
                       tau=[s['tau'] for s in st], frac=[s['frac'] for s in st], rho=[s['rho'] for s in st],
                       modes=sorted({b.mode for b in report.blocks}),
                       composed_norm_factor=report.composed_norm_factor,
                       composed_lipschitz=report.composed_lipschitz)
            runs[name].append(row)
            runs[name].sort(key=lambda r: r['seed'])
            print(f"{name:34s} seed {seed}: {acc * 100:.1f}% (train {train_acc * 100:.1f}%), {per_epoch:.2f} s/epoch",
                  flush=True)
            write_tables(a, names, runs)
    if not any(runs.values()):
        raise ValueError(f"no runs for models {names} and seeds {seeds}")
    write_tables(a, names, runs)   # all were done before: the table of those
    return 0


if __name__ == '__main__':
    sys.exit(main())
