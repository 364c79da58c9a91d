"""Training-step time of certified PDE ResNets against timm's ResNets, and the certificate's share.

    python benchmarks/bench_resnet.py [--depth 18] [--size 128] [--batch 32] [--rounds 200] [--strict]

Models (one run, interleaved round by round, real SGD steps: lr 0.1, momentum 0.9, cross-entropy on
random labels; the mean per model over ``--rounds`` steps after two warm-up steps). The default 200 rounds
are eight of the training contract's recalibrations (every ``calibrate_every`` = 25 updates), so the mean includes
them: fewer rounds leave them out and understate the cost.

* ``resnet{depth}`` (timm) — the reference;
* ``pde_resnet{depth}`` with its default certification (the training contract);
* ``pde_resnet{depth}`` with ``stability='none'`` (the blocks without any certificate);
* ``resnet{depth}`` after ``swap_blocks`` with its defaults;
* with ``--strict``: ``pde_resnet{depth}`` with ``certification='all'`` (every pass certified).

The certificate's share is the time inside the models' ``NormCertificate`` calls over the step time,
with the number of full-bound recomputations. Each model's forward + backward FLOPs (torch's
``FlopCounterMode``) relative to the ResNet's, and the step time per FLOP relative to the ResNet's, separate
the architecture's arithmetic from the implementation's efficiency. Writes ``benchmarks/results/resnet_{depth}_{size}.md``
and ``.json``.
"""
import argparse
import copy
import os
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timm  # noqa: E402
from _common import classification_step, save_results  # noqa: E402

import pdeblocks  # noqa: E402
from pdeblocks.layers.certificate import Certification, NormCertificate  # noqa: E402


class CertificateTimer:
    """Wall time inside every NormCertificate of a model, and their full recomputations."""

    def __init__(self, model: torch.nn.Module):
        self.modules = [m for m in model.modules() if isinstance(m, NormCertificate)]
        self.total = 0.0
        self._start = 0.0
        for m in self.modules:
            m.register_forward_pre_hook(self._pre)
            m.register_forward_hook(self._post)

    def _pre(self, module, args):
        self._start = time.perf_counter()

    def _post(self, module, args, out):
        self.total += time.perf_counter() - self._start

    @property
    def recomputations(self) -> int:
        return sum(m.recomputations for m in self.modules)

    @property
    def calibrations(self) -> int:
        return sum(m.calibrations for m in self.modules)


def build(name: str, depth: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == 'resnet':
        return timm.create_model(f'resnet{depth}', num_classes=10)
    if name == 'swapped':
        model, _ = pdeblocks.swap_blocks(timm.create_model(f'resnet{depth}', num_classes=10))
        return model
    kwargs = {'pde': {}, 'pde_free': dict(stability='none'), 'pde_strict': dict(certification='all')}[name]
    return timm.create_model(f'pde_resnet{depth}', num_classes=10, block_kwargs=kwargs)


def step_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Floating-point operations of one forward + backward (torch's FlopCounterMode: convolutions and matrix
    products), on a deep copy so that the timed model and its certificate cache are untouched; the second pass is
    counted, so a certificate's one-off full bound is not (its recurring cost is in the certificate's share)."""
    clone = copy.deepcopy(model)
    clone(x).sum().backward()
    with FlopCounterMode(display=False) as counter:
        clone(x).sum().backward()
    return counter.get_total_flops()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--depth', type=int, default=18, choices=[18, 34])
    p.add_argument('--size', type=int, default=128)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--rounds', type=int, default=8 * Certification().calibrate_every)
    p.add_argument('--strict', action='store_true', help='also time the strict mode (a full bound per step)')
    args = p.parse_args()
    names = ['resnet', 'pde', 'pde_free', 'swapped'] + (['pde_strict'] if args.strict else [])
    models = {n: build(n, args.depth).train() for n in names}
    opts = {n: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for n, m in models.items()}
    timers = {n: CertificateTimer(m) for n, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    flops = {n: step_flops(models[n], x) for n in names}

    def step(n: str) -> float:
        return classification_step(models[n], opts[n], x, y)

    for _ in range(2):
        for n in names:
            step(n)
    start = {n: (timers[n].total, timers[n].recomputations, timers[n].calibrations) for n in names}
    times = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            times[n].append(step(n))
    mean = {n: sum(t) / len(t) for n, t in times.items()}
    share = {n: (timers[n].total - start[n][0]) / sum(times[n]) for n in names}
    recomputed = {n: timers[n].recomputations - start[n][1] for n in names}
    calibrated = {n: timers[n].calibrations - start[n][2] for n in names}
    for n in names:   # the eval certificate after training (what certify() reports)
        models[n].eval()
    verified = {n: pdeblocks.certify(models[n], verify=True).verified for n in names}
    label = {'resnet': f'resnet{args.depth}', 'pde': f'pde_resnet{args.depth} (default: training contract)',
             'pde_free': f"pde_resnet{args.depth}, stability='none'", 'swapped': f'resnet{args.depth} + swap_blocks',
             'pde_strict': f"pde_resnet{args.depth}, certification='all' (strict)"}
    lines = [f"Training step, batch {args.batch}, 3×{args.size}×{args.size}, SGD lr 0.1 momentum 0.9, CPU "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}, timm {timm.__version__}; mean of "
             f"{args.rounds} interleaved steps after 2 warm-up steps", '',
             '| model | mean step (s) | × resnet | FLOPs fwd+bwd × resnet | step time per FLOP × resnet '
             '| certificate share | full recomputations | recalibrations | eval certificate verified |',
             '|---|---:|---:|---:|---:|---:|---:|---:|---|']
    for n in names:
        ratio, flop_ratio = mean[n] / mean['resnet'], flops[n] / flops['resnet']
        lines.append(f"| {label[n]} | {mean[n]:.3f} | {ratio:.2f} | {flop_ratio:.3f} | {ratio / flop_ratio:.2f} | "
                     f"{share[n]:.1%} | {recomputed[n]} in {args.rounds} steps | {calibrated[n]} | {verified[n]} |")
    text = '\n'.join(lines)
    print(text)
    save_results(f'resnet_{args.depth}_{args.size}', text,
                 dict(args=vars(args), threads=torch.get_num_threads(), torch=torch.__version__, step_s=times,
                      mean_s=mean, flops=flops, certificate_share=share, recomputations=recomputed, recalibrations=calibrated,
                      verified=verified), indent=1)


if __name__ == '__main__':
    main()
