"""PDE-ResNet: a ResNet whose residual blocks are explicit steps of a nonlinear diffusion.

Layout (as timm's ResNet, each BasicBlock replaced by one symmetric block, Alt et al. 2022):

* stem: 7×7 stride-2 convolution + BatchNorm + ReLU, 3×3 stride-2 max pooling;
* stages of residual PDE blocks u ↦ u − τKᵀΦ(Ku) at constant width (``block='symmetric'`` by
  default; any name of :data:`pdeblocks.layers.RESIDUAL_BLOCKS`);
* connectors between stages, where width and resolution change: 2×2 average pooling, then 1×1
  convolution + BatchNorm + ReLU (Ruthotto & Haber's connector; pooling first is the same linear
  map at a quarter of the cost);
* where a stage halves the resolution and the block takes a stride (the explicit step), its first
  block is a *strided entry step* before the connector, as resnet18's first BasicBlock of the stage
  and as ``swap_blocks`` makes of it: u ↦ u − τK_sᵀΦ(K_s u) at the incoming width C_in, with
  K_s = every second output of a 3×3 convolution C_in → C_out ([C_out, C_in, 3, 3], the cost of
  resnet18's strided conv1) and K_sᵀ its exact adjoint. ‖K_s‖ ≤ ‖K‖, so the step is certified as
  any other. Without it each stage ran two full-width blocks (1.10× resnet18's FLOPs).
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

from ..layers.registry import RESIDUAL_BLOCKS, create_block, takes_stride
from ._stages import Connector, StageModelMixin

__all__ = ['PDEResNet', 'PDEStage', 'Connector']


class PDEStage(nn.Module):
    """``depth`` residual PDE blocks at width ``out_chs``, after a change of width or resolution.

    The change is, in order: ``entry``, a strided step at the incoming width (one of the ``depth``
    blocks; see the module docstring), when ``strided_entry`` and ``stride > 1``, else nothing; then
    ``connector`` (pooling, 1×1 convolution, BN, ReLU) when the width or the resolution changes;
    then ``blocks``, the remaining steps at width ``out_chs``.

    Args:
        strided_entry: whether a stage with ``stride > 1`` starts with the strided entry step. None:
            where the block takes a stride (:func:`pdeblocks.layers.registry.takes_stride`).
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            depth: int,
            stride: int = 1,
            block: str = 'symmetric',
            drop_path_rates: Optional[Sequence[float]] = None,
            block_kwargs: Optional[Dict[str, Any]] = None,
            strided_entry: Optional[bool] = None,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if strided_entry not in (None, True, False):
            raise ValueError(f"strided_entry must be None, True or False, got {strided_entry!r}")
        if strided_entry is None:
            strided_entry = takes_stride(block)
        elif strided_entry and not takes_stride(block):
            raise ValueError(f"strided_entry=True needs a block that takes a stride; {block!r} does not "
                             f"(blocks that do: {sorted(n for n in RESIDUAL_BLOCKS if takes_stride(n))})")
        self.grad_checkpointing = False
        rates = list(drop_path_rates) if drop_path_rates is not None else [0.0] * depth
        kwargs = dict(block_kwargs or {})
        kwargs.setdefault('boundary', 'zeros')
        entry = bool(strided_entry) and stride > 1 and depth > 0
        self.entry = create_block(block, in_chs, dim=2, drop_path=rates[0],
                                  **dict(kwargs, hidden_channels=out_chs, stride=stride), **dd) \
            if entry else nn.Identity()
        self.connector = Connector(in_chs, out_chs, stride, **dd) if (in_chs != out_chs or stride != 1) \
            else nn.Identity()
        first = 1 if entry else 0
        self.blocks = nn.Sequential(*[
            create_block(block, out_chs, dim=2, drop_path=rates[i], **kwargs, **dd) for i in range(first, depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.connector(self.entry(x))
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
        strided_entry: whether each stage that halves the resolution starts with a strided entry step
            (:class:`PDEStage`); None (default): where the block takes a stride.
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
            strided_entry: Optional[bool] = None,
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
            stages.append(PDEStage(prev, width, depth, stride, block, rates[start:start + depth], block_kwargs,
                                   strided_entry, **dd))
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
                (r'^stages\.(\d+)\.(?:entry|connector)', (0,)),
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
