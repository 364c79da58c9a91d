"""Ruthotto & Haber's PDE-motivated CNNs (JMIV 2020): parabolic, hyperbolic and Hamiltonian.

Layout (their CIFAR-10 configuration by default: widths 32, 64, 112, 112; 3 units × 3 steps):

* opening: 3×3 convolution (in_chans → w₀) + TV normalisation + ReLU;
* unit i (i = 0, 1, 2): ``steps`` PDE steps at constant width wᵢ (3×3 kernels, each step with its
  own K and :class:`~pdeblocks.layers.hyperbolic.TVNorm`), see :mod:`pdeblocks.layers.hyperbolic`;
* connector after every unit: 1×1 convolution wᵢ → wᵢ₊₁ + TV normalisation + ReLU, then 2×2
  average pooling;
* global average pooling and a linear classifier.

Steps use zero padding (``boundary='zeros'``) and h = 1 (as the authors' code). Parameter counts
for 10 classes: parabolic 502,570, hyperbolic 502,570, Hamiltonian 264,106 — the same as the
authors' MATLAB configurations (K: C×C per step, or two (C/2)×(C/2) for Hamiltonian; a scale and
a bias per channel in every TV normalisation; no convolution biases; classifier with bias).
"""
from typing import Any, Dict, List, Sequence

import torch
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import nn

from ..layers.hyperbolic import TVNorm
from ..layers.registry import create_block
from ._stages import StageModelMixin

__all__ = ['RuthottoHaberNet', 'RHConnector', 'RH_UNITS']

RH_UNITS = ('parabolic', 'hyperbolic', 'hamiltonian')   # the paper's units, by their names in RESIDUAL_BLOCKS
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class RHConnector(nn.Module):
    """1×1 convolution + TVNorm + ReLU, then 2×2 average pooling (changes width and resolution)."""

    def __init__(self, in_chs: int, out_chs: int, device=None, dtype=None):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False, device=device, dtype=dtype)
        self.norm = TVNorm(out_chs, device=device, dtype=dtype)
        self.act = nn.ReLU()
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class RHStage(nn.Module):
    """One unit of PDE steps at constant width followed by its connector."""

    def __init__(self, unit: nn.Module, connector: nn.Module):
        super().__init__()
        self.unit = unit
        self.connector = connector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.connector(self.unit(x))


class RuthottoHaberNet(StageModelMixin, nn.Module):
    """Opening, units of PDE steps with connectors, global pooling, classifier (module docstring).

    Args:
        block: ``'parabolic'``, ``'hyperbolic'`` (leapfrog) or ``'hamiltonian'`` (Verlet).
        widths: w₀ (opening) … w_U (last connector); U = len(widths) − 1 units.
        steps: PDE steps per unit.
        step_size: h of every step.
        reversible: reversible backprop in hyperbolic / Hamiltonian units.
        num_classes, in_chans, global_pool, drop_rate, drop_path_rate: as in timm models.
    """

    def __init__(
            self,
            block: str = 'parabolic',
            widths: Sequence[int] = (32, 64, 112, 112),
            steps: int = 3,
            step_size: float = 1.0,
            reversible: bool = True,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            device=None,
            dtype=None,
    ):
        super().__init__()
        if block not in RH_UNITS:
            raise ValueError(f"block must be one of {sorted(RH_UNITS)}, got {block!r}")
        if len(widths) < 2:
            raise ValueError(f"widths needs the opening width and at least one unit's output, got {tuple(widths)}")
        dd = {'device': device, 'dtype': dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.block = block

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False, **dd),
            TVNorm(widths[0], **dd),
            nn.ReLU(),
        )
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=widths[0], reduction=1, module='stem.2')]
        units = len(widths) - 1
        rates = [drop_path_rate * i / max(units - 1, 1) for i in range(units)]  # (no tensor: meta-device safe)
        extra = {} if block == 'parabolic' else {'reversible': reversible}
        stages = []
        reduction = 1
        for i in range(units):
            unit = create_block(block, widths[i], dim=2, steps=steps, step_size=step_size, boundary='zeros',
                                drop_path=rates[i], **extra, **dd)
            stages.append(RHStage(unit, RHConnector(widths[i], widths[i + 1], **dd)))
            reduction *= 2
            self.feature_info.append(dict(num_chs=widths[i + 1], reduction=reduction, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = widths[-1]
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else [
            (r'^stages\.(\d+)\.unit', None), (r'^stages\.(\d+)\.connector', (0,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)


def _create(variant: str, pretrained: bool = False, **kwargs) -> RuthottoHaberNet:
    return build_model_with_cfg(RuthottoHaberNet, variant, pretrained,
                                feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True), **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    return {
        'url': '', 'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (4, 4), 'crop_pct': 1.0,
        'interpolation': 'bilinear', 'mean': CIFAR10_MEAN, 'std': CIFAR10_STD, 'first_conv': 'stem.0',
        'classifier': 'head.fc', 'license': 'apache-2.0', **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'pde_parabolic_cnn.untrained': _cfg(),
    'pde_hyperbolic_cnn.untrained': _cfg(),
    'pde_hamiltonian_cnn.untrained': _cfg(),
})


@register_model
def pde_parabolic_cnn(pretrained: bool = False, **kwargs) -> RuthottoHaberNet:
    """Ruthotto–Haber parabolic CNN, CIFAR-10 configuration (502,570 parameters for 10 classes)."""
    return _create('pde_parabolic_cnn', pretrained, **dict(dict(block='parabolic'), **kwargs))


@register_model
def pde_hyperbolic_cnn(pretrained: bool = False, **kwargs) -> RuthottoHaberNet:
    """Ruthotto–Haber second-order (leapfrog) CNN, CIFAR-10 configuration, reversible backprop."""
    return _create('pde_hyperbolic_cnn', pretrained, **dict(dict(block='hyperbolic'), **kwargs))


@register_model
def pde_hamiltonian_cnn(pretrained: bool = False, **kwargs) -> RuthottoHaberNet:
    """Ruthotto–Haber Hamiltonian (Verlet) CNN, CIFAR-10 configuration, reversible backprop."""
    return _create('pde_hamiltonian_cnn', pretrained, **dict(dict(block='hamiltonian'), **kwargs))
