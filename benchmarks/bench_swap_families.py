"""What ``swap_blocks(model, 'symmetric')`` does to each supported model family at its usual size.

For each family, built from random weights in a standard configuration (never downloaded): how many
blocks were swapped and skipped, the parameter count before and after and their ratio, and whether the
swapped model gives the same output shape on one input (eval mode, no gradient; the wide layers use the
cheap rigorous bound settings ``interp_slack=2.0, gram_steps=1``, which change the step size, never the
parameter count). Forward/backward, ``state_dict`` round trips and ``torch.compile`` are checked by
``tests/test_swap.py``; this script is the parameter report.

Families whose package is missing (the ``swap`` extra: segmentation-models-pytorch, monai, diffusers)
are listed as skipped.

Run: ``python benchmarks/bench_swap_families.py``; writes ``benchmarks/results/swap_families.md`` and
``.json`` atomically.
"""
import importlib.util
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import save_results, timed  # noqa: E402

from pdeblocks import swap_blocks  # noqa: E402

CHEAP = dict(interp_slack=2.0, gram_steps=1)

# builds (model, one input, call); the call maps (model, x) to the output tensor
Builder = Callable[[], Tuple[nn.Module, torch.Tensor, Callable[[nn.Module, torch.Tensor], torch.Tensor]]]


def plain(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m(x)


def diffusers_sample(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m(x, 10).sample


def timm_model(name: str) -> Builder:
    def build():
        import timm
        return timm.create_model(name, num_classes=10), torch.randn(1, 3, 64, 64), plain
    return build


def torchvision_model(name: str) -> Builder:
    def build():
        import torchvision
        return getattr(torchvision.models, name)(num_classes=10), torch.randn(1, 3, 64, 64), plain
    return build


def smp_unet():
    import segmentation_models_pytorch as smp
    return smp.Unet('resnet34', encoder_weights=None, classes=2), torch.randn(1, 3, 64, 64), plain


def monai_unet():
    from monai.networks.nets import UNet
    model = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(16, 32, 64, 128, 256),
                 strides=(2, 2, 2, 2), num_res_units=2)
    return model, torch.randn(1, 1, 64, 64), plain


def diffusers_unet2d():
    import diffusers
    return diffusers.UNet2DModel(sample_size=32), torch.randn(1, 3, 32, 32), diffusers_sample


def diffusers_unet1d():
    import diffusers
    model = diffusers.UNet1DModel(block_out_channels=(32, 32, 64), extra_in_channels=16, time_embedding_dim=16,
                                  sample_size=256,
                                  in_channels=2, out_channels=2, flip_sin_to_cos=True,
                                  use_timestep_embedding=False, time_embedding_type='fourier')
    return model, torch.randn(1, 2, 256), diffusers_sample


# (family, package, builder, include= for swap_blocks)
FAMILIES: List[Tuple[str, str, Builder, Optional[str]]] = [
    ('timm resnet18', 'timm', timm_model('resnet18'), None),
    ('timm resnet34', 'timm', timm_model('resnet34'), None),
    ('timm resnet50', 'timm', timm_model('resnet50'), None),
    ('timm resnet50d', 'timm', timm_model('resnet50d'), None),
    ('timm resnext50_32x4d', 'timm', timm_model('resnext50_32x4d'), None),
    ('timm seresnet50', 'timm', timm_model('seresnet50'), None),
    ('torchvision resnet18', 'torchvision', torchvision_model('resnet18'), None),
    ('torchvision resnet50', 'torchvision', torchvision_model('resnet50'), None),
    ('smp Unet (resnet34 encoder), decoder only', 'segmentation_models_pytorch', smp_unet, 'decoder'),
    ('smp Unet (resnet34 encoder), whole model', 'segmentation_models_pytorch', smp_unet, None),
    ('MONAI UNet 2D, num_res_units=2', 'monai', monai_unet, None),
    ('diffusers UNet2DModel (defaults)', 'diffusers', diffusers_unet2d, None),
    ('diffusers UNet1DModel (dance diffusion layout)', 'diffusers', diffusers_unet1d, None),
]


def measure(family: str, build: Builder, include: Optional[str]) -> Dict:
    torch.manual_seed(0)
    model, x, call = build()
    model.eval()
    (swapped, report), swap_seconds = timed(swap_blocks, model, include=include, **CHEAP)
    with torch.no_grad():
        before, after = call(model, x), call(swapped, x)
    return dict(family=family, swapped=len(report.swapped), skipped=len(report.skipped),
                skip_reasons=sorted({s.reason for s in report.skipped}),
                old_classes=sorted({r.old_class for r in report.swapped}),
                params_before=report.params_before, params_after=report.params_after,
                ratio=report.params_after / report.params_before,
                input=list(x.shape), same_shape=tuple(before.shape) == tuple(after.shape),
                finite=bool(torch.isfinite(after).all()), swap_seconds=swap_seconds)


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for family, package, build, include in FAMILIES:
        if importlib.util.find_spec(package) is None:
            rows.append(dict(family=family, missing=package))
            print(f"{family}: skipped ({package} is not installed)", flush=True)
            continue
        row = measure(family, build, include)
        rows.append(row)
        print(f"{family}: {row['swapped']} swapped, {row['params_before']:,} → {row['params_after']:,} "
              f"({row['ratio']:.3f}), same shape {row['same_shape']}", flush=True)
    lines = ["swap_blocks(model, 'symmetric', init='auto', interp_slack=2.0, gram_steps=1), random weights, "
             f"eval mode, 1 thread; torch {torch.__version__}", '',
             '| family | blocks swapped (classes) | skipped | parameters before | after | after / before | '
             'input | same output shape | output finite |',
             '|---|---|---:|---:|---:|---:|---|---|---|']
    for r in rows:
        if 'missing' in r:
            lines.append(f"| {r['family']} | not run: {r['missing']} is not installed | | | | | | | |")
            continue
        lines.append(f"| {r['family']} | {r['swapped']} ({', '.join(r['old_classes'])}) | {r['skipped']} | "
                     f"{r['params_before']:,} | {r['params_after']:,} | {r['ratio']:.3f} | "
                     f"{'×'.join(map(str, r['input']))} | {'yes' if r['same_shape'] else 'NO'} | "
                     f"{'yes' if r['finite'] else 'NO'} |")
    text = '\n'.join(lines) + '\n'
    print(text)
    save_results('swap_families', text, rows)


if __name__ == '__main__':
    main()
