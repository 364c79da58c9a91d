"""From-scratch training with one recipe: certified PDE-ResNets against timm ResNets.

    python benchmarks/bench_digits_scratch.py [--epochs 15] [--size 32] [--batch 64] [--seeds 0]
    python benchmarks/bench_digits_scratch.py --models resnet_tiny_budget,pde_resnet_tiny,pde_resnet_tiny_free,resnet_tiny \
        --augment --epochs 30 --seeds 0,1,2 --stem digits_tiny_augmented

scikit-learn's digits (bundled), upsampled to ``--size``² and repeated to 3 channels, split 80/20 by a
fixed permutation. With ``--augment`` every training batch is freshly rotated (uniform ±30°) and translated
(uniform ±15% of the image), and the test set is ``--test-views`` such transforms of each test image (fixed
seed). Every model: timm's SGD (lr 0.1, momentum 0.9, weight decay 5e-4 except the parameters a model exempts,
``no_weight_decay``), cosine decay per step, batch ``--batch``, the same batches in the same order; steps
interleaved across the models so that they share the machine's load.

Models (``--models``): ``resnet18``, ``pde_resnet18``, ``swapped`` (resnet18 after ``swap_blocks``),
``pde_resnet_tiny`` (widths 16–64, one certified block per stage), ``pde_resnet_tiny_scale`` (the same with
the scale gradient of B instead of the default σ_max one), ``pde_resnet_tiny_free`` (its free-step twin), ``resnet_tiny`` (timm's ResNet with BasicBlocks at the same widths: twice the convolutions) and
``resnet_tiny_budget`` (the same ResNet narrowed to pde_resnet_tiny's parameter count).

Reported per model: test accuracy (eval mode; mean ± std over ``--seeds``), parameters, mean step time and
its ratio to the first model, full-bound recomputations per epoch, the certificate's share of the step time,
the largest relative difference between a block's step size in its last training pass and in eval (the
training contract's gap), and whether ``certify(model, verify=True)`` confirms every eval certificate. Writes
``benchmarks/results/<stem>.md`` and ``.json``.
"""
import argparse
import math
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import timm  # noqa: E402
from _common import classification_step, digits, save_results  # noqa: E402
from bench_resnet import CertificateTimer  # noqa: E402
from timm.models.resnet import BasicBlock, ResNet  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402

import pdeblocks  # noqa: E402
from pdeblocks.layers import SymmetricResidual  # noqa: E402


def build(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if name == 'swapped':
        model, _ = pdeblocks.swap_blocks(timm.create_model('resnet18', num_classes=10))
        return model
    if name in ('resnet_tiny', 'resnet_tiny_budget'):
        channels = (16, 32, 48, 64) if name == 'resnet_tiny' else (11, 23, 34, 45)
        return ResNet(BasicBlock, [1, 1, 1, 1], channels=channels, stem_width=16, num_classes=10)
    if name == 'pde_resnet_tiny_free':
        return timm.create_model('pde_resnet_tiny', num_classes=10, block_kwargs=dict(stability='none'))
    if name == 'pde_resnet_tiny_scale':
        return timm.create_model('pde_resnet_tiny', num_classes=10,
                                 block_kwargs=dict(certification=dict(gradient='scale')))
    return timm.create_model(name, num_classes=10)


def rotate_translate(x: torch.Tensor, gen: torch.Generator, degrees: float = 30.0, shift: float = 0.15) -> torch.Tensor:
    """Each image rotated by a uniform angle in ±``degrees`` and shifted by a uniform ±``shift`` of its size
    (bilinear, zeros outside; the background is −1 after normalisation, so pad with it)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(degrees)
    t = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 * shift)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1.0, grid, align_corners=False) - 1.0


def step_sizes(model: torch.nn.Module) -> list:
    with torch.no_grad():
        return [float(m.step_size()) for m in model.modules() if isinstance(m, SymmetricResidual)]


def train_and_test(names, args, seed, images, labels, train, test_x, test_y) -> dict:
    models = {n: build(n, seed).train() for n in names}
    opts = {n: create_optimizer_v2(m, 'sgd', lr=0.1, weight_decay=5e-4, momentum=0.9) for n, m in models.items()}
    timers = {n: CertificateTimer(m) for n, m in models.items()}
    steps_per_epoch = math.ceil(len(train) / args.batch)
    total = steps_per_epoch * args.epochs
    times = {n: [] for n in names}
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(args.epochs):
        order = train[torch.randperm(len(train), generator=gen)]
        for i in range(steps_per_epoch):
            idx = order[i * args.batch:(i + 1) * args.batch]
            x = rotate_translate(images[idx], gen) if args.augment else images[idx]
            lr = 0.05 * (1 + math.cos(math.pi * step / total))
            for n in names:
                for group in opts[n].param_groups:
                    group['lr'] = lr
                times[n].append(classification_step(models[n], opts[n], x, labels[idx]))
            step += 1
    data = {}
    for n in names:
        model = models[n]
        tau_train = step_sizes(model)
        model.eval()
        tau_eval = step_sizes(model)
        gap = max((abs(e / t - 1.0) for e, t in zip(tau_eval, tau_train)), default=0.0)
        with torch.no_grad():
            pred = torch.cat([model(test_x[j:j + 256]).argmax(1) for j in range(0, len(test_y), 256)])
        report = pdeblocks.certify(model, verify=True)
        data[n] = dict(accuracy=float((pred == test_y).float().mean()), mean_step_s=sum(times[n]) / len(times[n]),
                       recomputations=timers[n].recomputations, certificate_s=timers[n].total, train_s=sum(times[n]),
                       tau_gap=gap, tau_eval=tau_eval, verified=report.verified if len(report) else None, blocks=len(report),
                       params=sum(p.numel() for p in model.parameters()))
    return data


def verified(flags) -> str:
    flags = list(flags)
    return '—' if None in flags else str(all(flags))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--models', default='resnet18,pde_resnet18,swapped')
    p.add_argument('--epochs', type=int, default=15)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--seeds', default='0')
    p.add_argument('--augment', action='store_true')
    p.add_argument('--test-views', type=int, default=5)
    p.add_argument('--stem', default='digits_scratch')
    args = p.parse_args()
    names, seeds = args.models.split(','), [int(s) for s in args.seeds.split(',')]
    images, labels = digits()
    images = F.interpolate(images, size=args.size, mode='bilinear', align_corners=False).repeat(1, 3, 1, 1)
    images = (images - 0.5) / 0.5
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    split = int(0.8 * len(labels))
    train, test = perm[:split], perm[split:]
    test_x, test_y = images[test], labels[test]
    if args.augment:
        views = torch.Generator().manual_seed(12345)
        test_x = torch.cat([rotate_translate(test_x, views) for _ in range(args.test_views)])
        test_y = test_y.repeat(args.test_views)
    runs = [train_and_test(names, args, seed, images, labels, train, test_x, test_y) for seed in seeds]
    ref = statistics.mean(r[names[0]]['mean_step_s'] for r in runs)
    rows = []
    for n in names:
        accs = [r[n]['accuracy'] * 100 for r in runs]
        step = statistics.mean(r[n]['mean_step_s'] for r in runs)
        share = statistics.mean(r[n]['certificate_s'] / r[n]['train_s'] for r in runs)
        rows.append(f"| {n} | {runs[0][n]['params']:,} | {statistics.mean(accs):.1f} ± "
                    f"{statistics.stdev(accs) if len(accs) > 1 else 0.0:.1f} | {', '.join(f'{a:.1f}' for a in accs)} | "
                    f"{step:.3f} | {step / ref:.2f} | "
                    f"{statistics.mean(r[n]['recomputations'] for r in runs) / args.epochs:.1f} | {share:.1%} | "
                    f"{max(r[n]['tau_gap'] for r in runs):.2%} | {verified(r[n]['verified'] for r in runs)} |")
    aug = (f", training batches rotated ±30° and shifted ±15%, test {args.test_views} such views per image"
           if args.augment else '')
    text = '\n'.join([
        f"From scratch on scikit-learn digits at {args.size}×{args.size} (1,437 train / 360 test images{aug}), "
        f"{args.epochs} epochs, batch {args.batch}, SGD lr 0.1 cosine, momentum 0.9, wd 5e-4, seeds {seeds}; CPU "
        f"{torch.get_num_threads()} threads, steps interleaved across models", '',
        f'| model | parameters | test accuracy (mean ± std) | per seed | mean step (s) | × {names[0]} | '
        'full bounds / epoch | certificate share | max |τ_eval/τ_train − 1| | eval certificate verified |',
        '|---|---:|---:|---|---:|---:|---:|---:|---:|---|'] + rows)
    print(text)
    save_results(args.stem, text, dict(args=vars(args), threads=torch.get_num_threads(), runs=runs), indent=1)


if __name__ == '__main__':
    main()
