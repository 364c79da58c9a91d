"""PDE-ResNet: a ResNet whose residual blocks are explicit steps of a nonlinear diffusion.

Layout (as timm's ResNet, each BasicBlock replaced by one symmetric block, Alt et al. 2022):

* stem: 7×7 stride-2 convolution + BatchNorm + ReLU, 3×3 stride-2 max pooling;
* stages of residual PDE blocks u ↦ u − τKᵀΦ(Ku) at constant width (``block='symmetric'`` by
  default; any name of :data:`pdeblocks.layers.RESIDUAL_BLOCKS`);
* connectors between stages, where width and resolution change: 2×2 average pooling, then 1×1
  convolution + BatchNorm + ReLU (Ruthotto & Haber's connector; pooling first is the same linear
  map at a quarter of the cost);
* global pooling and a linear classifier.

The PDE steps use zero padding (``boundary='zeros'``) like the convolutions they replace, so any
input size works down to 1×1 features.
"""
from typing import Any, Dict, List, Optional, Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead
from timm.models import (
    build_model_with_cfg,
    checkpoint_seq,
    generate_default_cfgs,
    register_model,
    register_model_deprecations,
)
from torch import nn

from ..layers.registry import create_block
from ._stages import Connector, StageModelMixin

__all__ = ['PDEResNet', 'PDEStage', 'Connector']


class PDEStage(nn.Module):
    """A connector (when width or resolution changes) followed by ``depth`` residual PDE blocks."""

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            depth: int,
            stride: int = 1,
            block: str = 'symmetric',
            drop_path_rates: Optional[Sequence[float]] = None,
            block_kwargs: Optional[Dict[str, Any]] = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.grad_checkpointing = False
        self.connector = Connector(in_chs, out_chs, stride, **dd) if (in_chs != out_chs or stride != 1) \
            else nn.Identity()
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.0] * depth
        kwargs = dict(block_kwargs or {})
        kwargs.setdefault('boundary', 'zeros')
        self.blocks = nn.Sequential(*[
            create_block(block, out_chs, dim=2, drop_path=rates[i], **kwargs, **dd) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.connector(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class PDEResNet(StageModelMixin, nn.Module):
    """ResNet of residual PDE blocks (see the module docstring).

    Args:
        layers: number of PDE blocks per stage.
        widths: channels per stage.
        num_classes, in_chans, global_pool, drop_rate: as in timm's ResNet.
        stem_width: channels of the stem convolution.
        block: residual block name in :data:`pdeblocks.layers.RESIDUAL_BLOCKS`.
        block_kwargs: extra arguments for every block (e.g. ``flux``, ``stability``, ``kernel_size``).
        drop_path_rate: stochastic depth, linearly increasing over blocks.
    """

    def __init__(
            self,
            layers: Sequence[int] = (2, 2, 2, 2),
            widths: Sequence[int] = (64, 128, 256, 512),
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = 'avg',
            stem_width: int = 64,
            block: str = 'symmetric',
            block_kwargs: Optional[Dict[str, Any]] = None,
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            device=None,
            dtype=None,
    ):
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers and widths need one entry per stage, got {len(layers)} and {len(widths)}")
        dd = {'device': device, 'dtype': dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False, **dd),
            nn.BatchNorm2d(stem_width, **dd),
            nn.ReLU(inplace=True),
        )
        self.stem_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=stem_width, reduction=2, module='stem.2')]

        total = sum(layers)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages = []
        prev, reduction, start = stem_width, 4, 0
        for i, (depth, width) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            stages.append(PDEStage(prev, width, depth, stride, block, rates[start:start + depth], block_kwargs, **dd))
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f'stages.{i}'))
            prev, start = width, start + depth
        self.stages = nn.Sequential(*stages)

        self.num_features = self.head_hidden_size = prev
        self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.connector', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            s.grad_checkpointing = enable

    def after_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem_pool(x)

    def run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return stage(x)  # each PDEStage checkpoints its own blocks

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem_pool(self.stem(x)))


def _create_pde_resnet(variant: str, pretrained: bool = False, **kwargs) -> PDEResNet:
    return build_model_with_cfg(
        PDEResNet, variant, pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3, 4), flatten_sequential=True),
        **kwargs,
    )


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bilinear', 'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0', 'classifier': 'head.fc', 'license': 'apache-2.0', **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'pde_resnet18.untrained': _cfg(),
    'pde_resnet34.untrained': _cfg(),
    'pde_resnet_tiny.untrained': _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
})


@register_model
def pde_resnet18(pretrained: bool = False, **kwargs) -> PDEResNet:
    """resnet18's stages (64, 128, 256, 512) × (2, 2, 2, 2), one symmetric block per BasicBlock."""
    return _create_pde_resnet('pde_resnet18', pretrained, **dict(dict(layers=(2, 2, 2, 2)), **kwargs))


@register_model
def pde_resnet34(pretrained: bool = False, **kwargs) -> PDEResNet:
    """resnet34's stages (64, 128, 256, 512) × (3, 4, 6, 3)."""
    return _create_pde_resnet('pde_resnet34', pretrained, **dict(dict(layers=(3, 4, 6, 3)), **kwargs))


@register_model
def pde_resnet_tiny(pretrained: bool = False, **kwargs) -> PDEResNet:
    """A tiny PDE-ResNet for tests: widths (16, 32, 48, 64), one block per stage."""
    args = dict(layers=(1, 1, 1, 1), widths=(16, 32, 48, 64), stem_width=16)
    return _create_pde_resnet('pde_resnet_tiny', pretrained, **dict(args, **kwargs))


# renamed models: timm maps the old name to the current one, with a warning
DEPRECATED_MODELS = {'pde_resnet': 'pde_resnet18'}
register_model_deprecations(__name__, DEPRECATED_MODELS)
