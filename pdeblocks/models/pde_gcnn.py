"""PDE-G-CNN classifiers (Smets, Portegies, Bekkers, Duits, JMIV 2022, arXiv:2001.09046) as timm models.

    image ─ lift (B-spline or steerable) [─ max pool] + BN ─▶ CDE layer × depth ─▶ ProjectM2 (max over θ)
          ─▶ pool ─▶ linear

Every stage before the head is roto-translation equivariant (exactly for 90° turns when the
orientation count is divisible by 4); max over θ followed by global pooling makes the logits
invariant. There is no ReLU: dilations and erosions are the nonlinearities. Feature maps keep the
input's size except after the max pools with stride 2 that ``downsample`` asks for (2×2 or the round
12-pixel window, ``pool_window``; ``pde_gcnn_steerable``: one round pool, after the lift).
"""
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model

from pdeblocks.layers.gcnn import CDELayerM2, LiftM2Cartesian, LiftM2Steerable, ProjectM2, SpatialMaxPoolM2

from ._stages import StageModelMixin

__all__ = ['PDEGCNN', 'PDEGCNNSegmentation']


LIFTS = ('bspline', 'steerable')


def check_downsample(downsample: Sequence[int], depth: int) -> Tuple[int, ...]:
    """The sorted, distinct stage indices (0: the lift, pooled before the stem's BN; i = 1 … depth: the
    input of CDE layer i) that are max-pooled 2×2 over space, or a ValueError."""
    if isinstance(downsample, (str, bytes)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= depth for i in downsample):
        raise ValueError(f"downsample must be stage indices in 0..{depth} (0: the lift's output, i: the input of "
                         f"CDE layer i is max-pooled 2x2), got {downsample!r}")
    return tuple(sorted(set(downsample)))


def m2_trunk(in_chans: int, channels: int, orientations: int, depth: int, kernel_size: int,
             orientation_kernel_size: Optional[int], lift_kernel_size: int, iterations: int, alpha: float,
             lift: str = 'bspline', downsample: Sequence[int] = (), lift_max_frequency: Optional[int] = None,
             pool_window: str = 'square', device=None, dtype=None) -> Tuple[nn.Sequential, nn.Sequential]:
    """(stem, layers): the lift ℝ² → M₂ with BatchNorm, then ``depth`` CDE layers on M₂ at ``channels``.

    ``lift``: 'bspline' (:class:`LiftM2Cartesian`, B-spline kernels resampled per orientation) or
    'steerable' (:class:`LiftM2Steerable`, bandlimited kernels rotated analytically, angular frequencies
    ≤ ``lift_max_frequency``, default ⌈Or/2⌉ − 1). Layer i ∈
    ``downsample`` (1-based) is ``Sequential(SpatialMaxPoolM2(2), CDELayerM2)``: its input is max-pooled with stride 2
    over ``pool_window`` ('square': 2×2; 'round': the 12-pixel window of :func:`~pdeblocks.layers.m2.spatial_max_pool_m2`).
    """
    if lift not in LIFTS:
        raise ValueError(f"lift must be one of {LIFTS}, got {lift!r}")
    if lift != 'steerable' and lift_max_frequency is not None:
        raise ValueError(f"lift_max_frequency applies to lift='steerable' only, got lift={lift!r}")
    downsample = check_downsample(downsample, depth)
    dd = {'device': device, 'dtype': dtype}
    stem = nn.Sequential()
    if lift == 'bspline':
        stem.add_module('lift', LiftM2Cartesian(in_chans, channels, orientations, lift_kernel_size, **dd))
    else:
        stem.add_module('lift', LiftM2Steerable(in_chans, channels, orientations, lift_kernel_size, lift_max_frequency,
                                                **dd))
    if 0 in downsample:  # pooled before the norm: the BN runs on a quarter of the positions
        stem.add_module('pool', SpatialMaxPoolM2(2, pool_window))
    stem.add_module('norm', nn.BatchNorm3d(channels, **dd))
    layers = []
    for i in range(1, depth + 1):
        layer = CDELayerM2(channels, channels, orientations, kernel_size, orientation_kernel_size, iterations, alpha,
                           **dd)
        layers.append(nn.Sequential(SpatialMaxPoolM2(2, pool_window), layer) if i in downsample else layer)
    return stem, nn.Sequential(*layers)


class PDEGCNN(StageModelMixin, nn.Module):
    """Lift → CDE layers on M₂ → projection to ℝ² → classifier head.

    Args:
        num_classes: classes of the head (0: no classifier, ``forward`` returns pooled features).
        in_chans: image channels (3 like every timm model; 1 for grey-scale digits).
        channels: channels of every M₂ layer.
        orientations: orientation count Or (divisible by 4 for exact 90° equivariance).
        depth: number of CDE layers.
        kernel_size: spatial size of the M₂ kernels (odd).
        orientation_kernel_size: θ size of the M₂ kernels (odd, ≤ Or); default min(kernel_size, Or).
        lift_kernel_size: spatial size of the lifting kernels (odd).
        lift: 'bspline' (B-spline kernels resampled per orientation) or 'steerable' (bandlimited
            circular-harmonic kernels rotated analytically, :class:`~pdeblocks.layers.gcnn.LiftM2Steerable`).
        lift_max_frequency: highest angular frequency of the steerable lift (default ⌈Or/2⌉ − 1).
        downsample: stages max-pooled 2×2 over space: 0 the lift's output (before the stem's BN), i ≥ 1
            the input of CDE layer i (each halves H and W from there on; exact quarter-turn invariance
            needs the input size divisible by 2^len(downsample)).
        pool_window: the window of those max pools: 'square' (2×2) or 'round' (the 4×4 window without its corners,
            nearly isotropic; :func:`~pdeblocks.layers.m2.spatial_max_pool_m2`).
        alpha: fractional order α ∈ [0.55, 1] of dilation and erosion.
        iterations: repetitions of convection, dilation, erosion in each CDE layer.
        projection: 'max' or 'sum' over orientations.
        global_pool: timm pooling type of the head ('avg', 'max', '' = none, ...).
        drop_rate: dropout before the classifier.

    The timm API comes from :class:`~pdeblocks.models._stages.StageModelMixin`: feature 0 is the lift, feature
    i ≥ 1 the i-th CDE layer, each projected to ℝ² (``[B, C, H, W]``).
    """

    stages_attr = 'layers'

    def __init__(
            self,
            num_classes: int = 10,
            in_chans: int = 3,
            channels: int = 16,
            orientations: int = 8,
            depth: int = 4,
            kernel_size: int = 5,
            orientation_kernel_size: Optional[int] = None,
            lift_kernel_size: int = 5,
            lift: str = 'bspline',
            downsample: Sequence[int] = (),
            lift_max_frequency: Optional[int] = None,
            pool_window: str = 'square',
            alpha: float = 0.65,
            iterations: int = 1,
            projection: str = 'max',
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an int >= 2 (feature levels: stem + depth layers), got {depth!r}")
        dd = {'device': device, 'dtype': dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.orientations = orientations
        self.grad_checkpointing = False
        self.stem, self.layers = m2_trunk(in_chans, channels, orientations, depth, kernel_size, orientation_kernel_size,
                                          lift_kernel_size, iterations, alpha, lift, downsample, lift_max_frequency,
                                          pool_window, **dd)
        self.project = ProjectM2(projection)
        self.num_features = self.head_hidden_size = channels
        pooled = check_downsample(downsample, depth)
        self.feature_info = [dict(num_chs=channels, reduction=2 ** sum(j == 0 for j in pooled), module='stem')]
        self.feature_info += [dict(num_chs=channels, reduction=2 ** sum(j <= i + 1 for j in pooled), module=f'layers.{i}')
                              for i in range(depth)]
        self.head = ClassifierHead(channels, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^layers\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # metric weights and shifts are geometric quantities, not filter weights
        return {n for n, _ in self.named_parameters() if n.endswith('.metric') or n.endswith('.shift')}

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x)   # M₂ features → ℝ² (max or sum over θ)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, H, W] → projected M₂ features [B, channels, H, W]."""
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.layers, x)
        else:
            x = self.layers(x)
        return self.project(x)


class PDEGCNNSegmentation(nn.Module):
    """Dense PDE-G-CNN (the paper's vessel-segmentation layout): per-pixel logits, same size as the input.

        image ─ LiftM2Cartesian + BN ─▶ CDE layer × depth ─▶ ProjectM2 (max over θ) ─▶ 1×1 conv ─▶ logits

    Equivariant to roto-translations (exactly for 90° turns with Or divisible by 4): rotating the image
    rotates the logits. Arguments as in :class:`PDEGCNN`; ``out_chans`` logit channels.
    """

    def __init__(self, in_chans: int = 3, out_chans: int = 1, channels: int = 8, orientations: int = 8,
                 depth: int = 6, kernel_size: int = 5, orientation_kernel_size: Optional[int] = None,
                 lift_kernel_size: int = 5, alpha: float = 0.65, iterations: int = 1, device=None, dtype=None):
        super().__init__()
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        dd = {'device': device, 'dtype': dtype}
        self.stem, self.layers = m2_trunk(in_chans, channels, orientations, depth, kernel_size, orientation_kernel_size,
                                          lift_kernel_size, iterations, alpha, **dd)
        self.project = ProjectM2('max')
        self.head = nn.Conv2d(channels, out_chans, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, H, W] → logits [B, out_chans, H, W]."""
        return self.head(self.project(self.layers(self.stem(x))))


def _create_pde_gcnn(variant: str, pretrained: bool = False, **kwargs) -> PDEGCNN:
    # one feature level per stage: the stem and each CDE layer
    feature_cfg = dict(feature_cls='getter')
    if kwargs.get('features_only', False):
        feature_cfg['out_indices'] = kwargs.pop('out_indices', tuple(range(kwargs.get('depth', 4) + 1)))
    return build_model_with_cfg(PDEGCNN, variant, pretrained, feature_cfg=feature_cfg, **kwargs)


def _cfg(url: str = '', **kwargs) -> Dict[str, Any]:
    return {
        'url': url,
        'num_classes': 10, 'input_size': (3, 28, 28), 'pool_size': (28, 28),
        'crop_pct': 1.0, 'interpolation': 'bilinear',
        'mean': (0.5, 0.5, 0.5), 'std': (0.5, 0.5, 0.5),
        'first_conv': 'stem.lift', 'classifier': 'head.fc',
        'license': 'apache-2.0',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'pde_gcnn.untrained': _cfg(),
    'pde_gcnn_small.untrained': _cfg(),
    'pde_gcnn_steerable.untrained': _cfg(pool_size=(14, 14)),
})


@register_model
def pde_gcnn(pretrained: bool = False, **kwargs) -> PDEGCNN:
    """PDE-G-CNN: 16 channels, 8 orientations, 4 CDE layers with 5×5×5 kernels (2,330 parameters)."""
    model_args = dict(channels=16, orientations=8, depth=4, kernel_size=5)
    return _create_pde_gcnn('pde_gcnn', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def pde_gcnn_small(pretrained: bool = False, **kwargs) -> PDEGCNN:
    """Small PDE-G-CNN: 8 channels, 8 orientations, 3 CDE layers with 3×3×3 kernels (762 parameters)."""
    model_args = dict(channels=8, orientations=8, depth=3, kernel_size=3, orientation_kernel_size=3)
    return _create_pde_gcnn('pde_gcnn_small', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def pde_gcnn_steerable(pretrained: bool = False, **kwargs) -> PDEGCNN:
    """PDE-G-CNN built for rotations off the 90° grid: 16 channels, 8 orientations, a bandlimited lift
    (7×7, circular harmonics m ≤ 1, rotated analytically), max pooling of the lift's output with stride 2 over
    the round 12-pixel window (the 4×4 window around each 2×2 block without its corners), 3 CDE layers with
    5×5×5 quadratic (α = 1) kernels at half resolution (1,658 parameters with in_chans=1, num_classes=10).
    ``pool_window='square'`` (the 2×2 pool, the default until round 5) is ~5 points less accurate off the grid
    at the same cost; ``depth=4, lift_kernel_size=5`` (2,042 parameters) is ~25% slower; ``kernel_size=3`` is
    faster and less accurate (docs/gcnn.md)."""
    model_args = dict(channels=16, orientations=8, depth=3, kernel_size=5, lift='steerable', lift_max_frequency=1,
                      lift_kernel_size=7, downsample=(0,), alpha=1.0, pool_window='round')
    return _create_pde_gcnn('pde_gcnn_steerable', pretrained=pretrained, **dict(model_args, **kwargs))
