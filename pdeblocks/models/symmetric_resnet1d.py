"""Symmetric ResNets for signals ``[B, C, L]``: classifiers whose residual blocks are explicit diffusion steps.

Layout (Alt et al. 2022, in 1D):

* stem: a lifting convolution ``in_chans → widths[0]`` (kernel ``stem_kernel``, with bias);
* stages of residual PDE blocks u ↦ u − τKᵀΦ(Ku) at constant width (``block='symmetric'`` by default,
  any name of :data:`pdeblocks.layers.RESIDUAL_BLOCKS` or a constructor ``(channels, dim=1, **kw)``), each
  followed by a certified per-channel gain x ↦ a⊙x (``between='scale'``, :class:`ChannelScale`): a chain of
  dissipative steps cannot amplify, the gains can, with the composed factor Π max|a_c| that ``certify`` reports;
* connectors between stages where width or length changes: average pooling by ``stride``, then
  1×1 convolution + BatchNorm + ReLU (outside the certified blocks, as in :class:`~pdeblocks.models.PDEResNet`);
* a head: global pooling (``'avg'``, ``'max'``) or ``'flatten'`` (position-aware: needs the fixed input
  length of the variant), then a linear classifier.

The models follow timm's API (``forward_features``, ``forward_head``, ``reset_classifier``,
``forward_intermediates``, ``num_classes``, ``in_chans``, ``feature_info``, ``default_cfg``) but are *not*
registered with timm (timm's model zoo and its test suite are for images): they live in their own registry,
:func:`create_model_1d` / :func:`list_models_1d`. ``pdeblocks.certify(model)`` lists every block's guarantee.
"""
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from timm.models import checkpoint_seq, register_notrace_function
from torch import nn

from ..layers.registry import create_block
from ..stability import Certificate
from ._stages import Connector, StageModelMixin

__all__ = ['SymmetricResNet1d', 'ChannelScale', 'Connector1d', 'Stage1d', 'MODELS_1D', 'create_model_1d', 'list_models_1d',
           'register_model_1d', 'check_signal_batch']

POOL_TYPES = ('avg', 'max', 'flatten', '')


@register_notrace_function
def check_signal_batch(x: torch.Tensor, in_chans: int, length: int) -> torch.Tensor:
    """Raise a ValueError naming the expected ``[B, C, L]`` and what came; ``length`` 0 means any length."""
    if x.dim() != 3:
        raise ValueError(f"expected a signal batch [B, C, L] with C = {in_chans}, got a {x.dim()}D tensor of "
                         f"shape {list(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"expected a signal batch [B, C, L] with C = {in_chans} channels, got shape {list(x.shape)}")
    if length > 0 and x.shape[2] != length:
        raise ValueError(f"expected a signal batch [B, C, L] with L = {length} (the flatten head is built for it), "
                         f"got shape {list(x.shape)}")
    return x


class Connector1d(Connector):
    """:class:`~pdeblocks.models._stages.Connector` for signals ``[B, C, L]`` (AvgPool1d → 1×1 conv → BN → ReLU)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 2, device=None, dtype=None):
        super().__init__(in_chs, out_chs, stride, dim=1, device=device, dtype=dtype)


BETWEEN = ('', 'batchnorm', 'scale')


class ChannelScale(nn.Module):
    """x ↦ a ⊙ x with a trainable gain a_c per channel (no bias, no batch statistics), initialised to 1.

    Certified: ‖a ⊙ x‖ ≤ max_c |a_c|·‖x‖ and Lip = max_c |a_c|, exactly, so ``pdeblocks.certify`` composes it
    with the diffusion blocks. Between non-expansive blocks it lets the network re-amplify the channels that
    carry information, which a chain of dissipative steps cannot do by itself.
    """

    def __init__(self, channels: int, device=None, dtype=None):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(channels, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain.reshape([1, -1] + [1] * (x.dim() - 2))

    @torch.jit.unused
    def stability_certificate(self) -> Certificate:
        """‖f(u)‖ ≤ c‖u‖ and ‖f(u) − f(v)‖ ≤ c‖u − v‖ with c = max|a_c|, in every pass (read by ``certify``)."""
        c = float(self.gain.detach().abs().max())
        return Certificate(mode='scale', step_size=float('nan'), norm_bound=c, sector_bound=None, norm_factor=c,
                           lipschitz=c, guarantee=f'‖f(u)‖ ≤ {c:.4g}‖u‖ (linear, per-channel gain)', passes='all')


class Stage1d(nn.Module):
    """A connector (when width or length changes) followed by ``depth`` residual PDE blocks of dim 1, each followed
    by ``between``: nothing (``''``), a BatchNorm (``'batchnorm'``) or a :class:`ChannelScale` (``'scale'``)."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, stride: int = 1,
                 block: Union[str, Callable[..., nn.Module]] = 'symmetric',
                 block_kwargs: Optional[Dict[str, Any]] = None, between: str = 'scale', device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.grad_checkpointing = False
        self.connector = Connector1d(in_chs, out_chs, stride, **dd) if (in_chs != out_chs or stride != 1) \
            else nn.Identity()
        kwargs = dict(block_kwargs or {})
        kwargs.setdefault('boundary', 'zeros')
        make = (lambda c, **kw: create_block(block, c, **kw)) if isinstance(block, str) else block
        kwargs.update({k: v for k, v in dd.items() if v is not None})  # a custom constructor may take neither
        if between not in BETWEEN:
            raise ValueError(f"between must be one of {BETWEEN}, got {between!r}")
        layers: List[nn.Module] = []
        for _ in range(depth):
            layers.append(make(out_chs, dim=1, **kwargs))
            if between == 'batchnorm':  # outside the certified block: its guarantee holds, the chain's is not composed
                layers.append(nn.BatchNorm1d(out_chs, **dd))
            elif between == 'scale':    # certified: certify() composes its factor max|a_c|
                layers.append(ChannelScale(out_chs, **dd))
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.connector(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class Head1d(nn.Module):
    """Global pooling over L (``'avg'``/``'max'``) or flattening (``'flatten'``), dropout, linear classifier;
    ``''`` (with ``num_classes=0``) passes the features ``[B, C, L]`` through."""

    def __init__(self, channels: int, num_classes: int, pool_type: str = 'avg', length: int = 0,
                 drop_rate: float = 0.0, device=None, dtype=None):
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {pool_type!r}")
        if pool_type == 'flatten' and length < 1:
            raise ValueError(f"global_pool='flatten' needs the fixed input length (input_length ≥ 1), got {length}")
        if pool_type == '' and num_classes > 0:
            raise ValueError(f"global_pool='' (no pooling) leaves [B, C, L] features: it needs num_classes=0, "
                             f"got {num_classes}")
        self.pool_type = pool_type
        self.num_features = channels * length if pool_type == 'flatten' else channels
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes, device=device, dtype=dtype) if num_classes > 0 \
            else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool_type == 'avg':
            x = x.mean(dim=2)
        elif self.pool_type == 'max':
            x = x.amax(dim=2)
        elif self.pool_type == 'flatten':
            x = x.flatten(1)
        else:  # '': no pooling, the features [B, C, L] pass through (num_classes is 0)
            return x
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


class SymmetricResNet1d(StageModelMixin, nn.Module):
    """Symmetric ResNet for 1D signals ``[B, in_chans, L]`` (see the module docstring).

    Args:
        layers: PDE blocks per stage.
        widths: channels per stage (the first is the stem's output).
        num_classes, in_chans, drop_rate: as in timm.
        global_pool: ``'avg'``, ``'max'`` or ``'flatten'`` (the latter needs ``input_length``).
        input_length: the fixed signal length L (0: any length; required by ``'flatten'``).
        stem_kernel: taps of the lifting convolution.
        block: residual block name or constructor ``(channels, dim=1, **kwargs)``.
        block_kwargs: passed to every block (``flux``, ``stability``, ``kernel_size``, …; boundary defaults
            to ``'zeros'``).
        between: after every block ``'scale'`` (default: :class:`ChannelScale`, certified with factor max|a_c|,
            composed by ``certify``; on MNIST-1D it lifts the certified net by 2.7–15 points, see
            docs/certified_accuracy.md), ``''`` (nothing: the chain of blocks alone, ‖f(u)‖ ≤ ‖u‖) or
            ``'batchnorm'`` (outside the blocks: each block keeps its certificate; in eval mode a norm is the affine
            map x ↦ a⊙x + b, which ``certify`` does not compose).
    """

    def __init__(
            self,
            layers: Sequence[int] = (6,),
            widths: Sequence[int] = (32,),
            num_classes: int = 10,
            in_chans: int = 1,
            global_pool: str = 'avg',
            input_length: int = 0,
            stem_kernel: int = 5,
            block: Union[str, Callable[..., nn.Module]] = 'symmetric',
            block_kwargs: Optional[Dict[str, Any]] = None,
            between: str = 'scale',
            drop_rate: float = 0.0,
            device=None,
            dtype=None,
    ):
        super().__init__()
        if len(layers) != len(widths) or not layers:
            raise ValueError(f"layers and widths need one entry per stage (≥ 1), got {list(layers)} and {list(widths)}")
        if stem_kernel < 1 or stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be odd and ≥ 1, got {stem_kernel}")
        if input_length < 0:
            raise ValueError(f"input_length must be ≥ 0 (0: any length), got {input_length}")
        dd = {'device': device, 'dtype': dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.stem = nn.Conv1d(in_chans, widths[0], stem_kernel, padding=stem_kernel // 2, **dd)
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=widths[0], reduction=1, module='stem')]
        stages = []
        prev, reduction = widths[0], 1
        for i, (depth, width) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            reduction *= stride
            stages.append(Stage1d(prev, width, depth, stride, block, block_kwargs, between, **dd))
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f'stages.{i}'))
            prev = width
        self.stages = nn.Sequential(*stages)
        self.reduction = reduction
        self.input_length = input_length
        self.final_length = -(-input_length // reduction) if input_length > 0 else 0  # ceil_mode pooling
        self.final_width = prev
        self.head = Head1d(prev, num_classes, global_pool, self.final_length, drop_rate, **dd)
        self.num_features = self.head_hidden_size = self.head.num_features
        self.default_cfg = {}
        self.pretrained_cfg = self.default_cfg

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)' if coarse else [
            (r'^stages\.(\d+)\.connector', (0,)), (r'^stages\.(\d+)\.blocks\.(\d+)', None)])

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """Step parameters θ, flux contrasts, learned-flux knots and channel gains are not decayed, and whatever a
        module declares in ``no_weight_decay_params``."""
        declared = {f'{path}.{name}' if path else name for path, module in self.named_modules()
                    for name in getattr(module, 'no_weight_decay_params', ())
                    if isinstance(getattr(module, name, None), nn.Parameter)}
        return declared | {n for n, _ in self.named_parameters()
                           if n.endswith(('step_param', 'raw_contrast', 'knot_logits', 'gain'))}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            s.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new classifier for ``num_classes`` (0: identity), optionally with a new pooling."""
        self.num_classes = num_classes
        pool = self.head.pool_type if global_pool is None else global_pool
        dd = dict(device=self.stem.weight.device, dtype=self.stem.weight.dtype)
        self.head = Head1d(self.final_width, num_classes, pool, self.final_length, self.drop_rate, **dd)
        self.num_features = self.head_hidden_size = self.head.num_features

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        take = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        self.final_width = self.feature_info[len(self.stages)]['num_chs']
        return take

    def _expected_length(self) -> int:
        return self.input_length if self.head.pool_type == 'flatten' else 0

    feature_fmt = 'NCL'

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """forward_intermediates' input: ``[B, in_chans, L]``, any L (a ValueError naming what came)."""
        return check_signal_batch(x, self.in_chans, 0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = check_signal_batch(x, self.in_chans, self._expected_length())
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # defined here, not inherited: torch.fx keeps check_signal_batch a leaf only when it is a global of
        # the module that defines the traced forward
        return self.forward_head(self.forward_features(x))


# ---- the registry of 1D variants (kept apart from timm's image registry) ----

MODELS_1D: Dict[str, Callable[..., SymmetricResNet1d]] = {}
_CFGS_1D: Dict[str, Dict[str, Any]] = {}


def register_model_1d(fn: Callable[..., SymmetricResNet1d]) -> Callable[..., SymmetricResNet1d]:
    """Register a 1D model constructor under its function name (duplicates are an error)."""
    if fn.__name__ in MODELS_1D:
        raise ValueError(f"a 1D model named {fn.__name__!r} is already registered")
    MODELS_1D[fn.__name__] = fn
    return fn


def list_models_1d(pattern: str = '*') -> List[str]:
    """Names of the registered 1D models matching the shell-style ``pattern``, sorted."""
    import fnmatch
    return sorted(n for n in MODELS_1D if fnmatch.fnmatch(n, pattern))


def create_model_1d(name: str, **kwargs) -> SymmetricResNet1d:
    """Build a registered 1D model; unknown names raise a ValueError listing the valid ones.

    kwargs override the variant's arguments (``num_classes``, ``in_chans``, ``block_kwargs``, …).
    """
    if name not in MODELS_1D:
        raise ValueError(f"unknown 1D model {name!r}; valid names: {list_models_1d()}")
    return MODELS_1D[name](**kwargs)


def _build(name: str, defaults: Dict[str, Any], kwargs: Dict[str, Any], cfg: Dict[str, Any]) -> SymmetricResNet1d:
    args = dict(defaults)
    block_kwargs = dict(args.pop('block_kwargs', {}))
    block_kwargs.update(kwargs.pop('block_kwargs', None) or {})
    args.update(kwargs)
    model = SymmetricResNet1d(block_kwargs=block_kwargs, **args)
    length = model.input_length or cfg.get('input_size', (0, 0))[1]
    model.default_cfg = dict(architecture=name, num_classes=model.num_classes, input_size=(model.in_chans, length),
                             first_conv='stem', classifier='head.fc', mean=(0.0,), std=(1.0,), url='',
                             license='apache-2.0', block_kwargs=dict(block_kwargs), **cfg)
    model.pretrained_cfg = model.default_cfg
    return model


# MNIST-1D layout of issue 20: 1×5 lift to 32 channels, 6 blocks of 3 taps at length 40, flatten head.
_MNIST1D = dict(layers=(6,), widths=(32,), num_classes=10, in_chans=1, global_pool='flatten', input_length=40)


@register_model_1d
def symresnet1d_mnist1d(**kwargs) -> SymmetricResNet1d:
    """Certified (Euclidean, Perona–Malik) symmetric ResNet for MNIST-1D: 32 channels, 6 blocks, flatten head."""
    return _build('symresnet1d_mnist1d', _MNIST1D, kwargs, dict(dataset='mnist1d'))


@register_model_1d
def symresnet1d_mnist1d_free(**kwargs) -> SymmetricResNet1d:
    """The free-step twin of :func:`symresnet1d_mnist1d` (``stability='none'``: no guarantee, for comparison)."""
    return _build('symresnet1d_mnist1d_free', dict(_MNIST1D, block_kwargs=dict(stability='none')), kwargs,
                  dict(dataset='mnist1d'))


@register_model_1d
def symresnet1d_tiny(**kwargs) -> SymmetricResNet1d:
    """Two stages (16, 32) × (1, 1), average pooling: any length ≥ 2, for tests."""
    return _build('symresnet1d_tiny', dict(layers=(1, 1), widths=(16, 32)), kwargs, {})


@register_model_1d
def symresnet1d_small(**kwargs) -> SymmetricResNet1d:
    """Three stages (32, 64, 128) × (2, 2, 2), connectors halve the length, average pooling."""
    return _build('symresnet1d_small', dict(layers=(2, 2, 2), widths=(32, 64, 128)), kwargs, {})
