"""From-scratch training with one recipe: pde_resnet18 against resnet18 and the swapped resnet18.

    python benchmarks/bench_digits_scratch.py [--epochs 15] [--size 32] [--batch 64] [--seed 0]

scikit-learn's digits (bundled), upsampled to ``--size``² and repeated to 3 channels, split 80/20 by a
fixed permutation. Every model: timm's SGD (lr 0.1, momentum 0.9, weight decay 5e-4 except the
parameters a model exempts, ``no_weight_decay``), cosine decay per step, batch ``--batch``, the same
batches in the same order; steps interleaved across the models so that they share the machine's load.

Reported per model: test accuracy (eval mode), mean step time and its ratio to resnet18, full-bound
recomputations per epoch, the certificate's share of the step time, the largest relative difference
between a block's step size in its last training pass and in eval (the training contract's gap), and
whether ``certify(model, verify=True)`` confirms every eval certificate. Writes
``benchmarks/results/digits_scratch.md`` and ``.json``.
"""
import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timm  # noqa: E402
from _common import classification_step, digits, save_results  # noqa: E402
from bench_resnet import CertificateTimer  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402

import pdeblocks  # noqa: E402
from pdeblocks.layers import SymmetricResidual  # noqa: E402


def build(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == 'resnet18':
        return timm.create_model('resnet18', num_classes=10)
    if name == 'swapped':
        model, _ = pdeblocks.swap_blocks(timm.create_model('resnet18', num_classes=10))
        return model
    return timm.create_model('pde_resnet18', num_classes=10)


def step_sizes(model: torch.nn.Module) -> list:
    with torch.no_grad():
        return [float(m.step_size()) for m in model.modules() if isinstance(m, SymmetricResidual)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--epochs', type=int, default=15)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args()
    images, labels = digits()
    images = F.interpolate(images, size=args.size, mode='bilinear', align_corners=False).repeat(1, 3, 1, 1)
    images = (images - 0.5) / 0.5
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    split = int(0.8 * len(labels))
    train, test = perm[:split], perm[split:]
    names = ['resnet18', 'pde_resnet18', 'swapped']
    models = {n: build(n, args.seed).train() for n in names}
    opts = {n: create_optimizer_v2(m, 'sgd', lr=0.1, weight_decay=5e-4, momentum=0.9) for n, m in models.items()}
    timers = {n: CertificateTimer(m) for n, m in models.items()}
    steps_per_epoch = math.ceil(len(train) / args.batch)
    total = steps_per_epoch * args.epochs
    times = {n: [] for n in names}
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    for _ in range(args.epochs):
        order = train[torch.randperm(len(train), generator=gen)]
        for i in range(steps_per_epoch):
            idx = order[i * args.batch:(i + 1) * args.batch]
            lr = 0.05 * (1 + math.cos(math.pi * step / total))
            for n in names:
                for group in opts[n].param_groups:
                    group['lr'] = lr
                times[n].append(classification_step(models[n], opts[n], images[idx], labels[idx]))
            step += 1
    rows, data = [], {}
    for n in names:
        model = models[n]
        tau_train = step_sizes(model)
        model.eval()
        tau_eval = step_sizes(model)
        gap = max((abs(e / t - 1.0) for e, t in zip(tau_eval, tau_train)), default=0.0)
        with torch.no_grad():
            pred = torch.cat([model(images[test[j:j + 256]]).argmax(1) for j in range(0, len(test), 256)])
        acc = float((pred == labels[test]).float().mean())
        report = pdeblocks.certify(model, verify=True)
        mean = sum(times[n]) / len(times[n])
        data[n] = dict(accuracy=acc, mean_step_s=mean, recomputations=timers[n].recomputations,
                       certificate_s=timers[n].total, train_s=sum(times[n]), tau_gap=gap, tau_eval=tau_eval,
                       verified=report.verified, blocks=len(report))
    ref = data['resnet18']['mean_step_s']
    for n in names:
        d = data[n]
        rows.append(f"| {n} | {d['accuracy']:.2%} | {d['mean_step_s']:.3f} | {d['mean_step_s'] / ref:.2f} | "
                    f"{d['recomputations'] / args.epochs:.1f} | {d['certificate_s'] / d['train_s']:.1%} | "
                    f"{d['tau_gap']:.2%} | {d['verified']} |")
    text = '\n'.join([
        f"From scratch on scikit-learn digits at {args.size}×{args.size} (1,437 train / 360 test), {args.epochs} "
        f"epochs, batch {args.batch}, SGD lr 0.1 cosine, momentum 0.9, wd 5e-4, seed {args.seed}; CPU "
        f"{torch.get_num_threads()} threads, steps interleaved across models", '',
        '| model | test accuracy | mean step (s) | × resnet18 | full bounds / epoch | certificate share | '
        'max |τ_eval/τ_train − 1| | eval certificate verified |',
        '|---|---:|---:|---:|---:|---:|---:|---|'] + rows)
    print(text)
    save_results('digits_scratch', text, dict(args=vars(args), threads=torch.get_num_threads(), models=data), indent=1)


if __name__ == '__main__':
    main()
