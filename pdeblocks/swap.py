"""Swap pdeblocks' residual PDE blocks into models written by other people.

``swap_blocks(model, 'symmetric')`` walks a model, finds the residual blocks it has a *rule* for
(timm and torchvision ResNet ``BasicBlock``/``Bottleneck``, segmentation_models_pytorch U-net decoder
blocks, MONAI ``ResidualUnit``, diffusers ``ResnetBlock2D``/``ResConvBlock``/``ResidualTemporalBlock1D``)
and replaces each by

    x ↦ post( step( connector(x) + shift(temb) ) ) / output_scale,

where ``connector`` is the block's own shortcut / downsample path (identity when it had none), so
resolution and channel changes happen exactly as before, and ``step`` is a registered residual PDE
block (:mod:`pdeblocks.layers.registry`) at constant width, e.g. u − τ Kᵀ Φ(K u). ``shift`` is the
block's time-embedding projection for diffusion U-nets (a per-channel source term), ``post`` the
activation the original applied after its residual sum (ReLU in ResNets), ``output_scale`` diffusers'
``output_scale_factor``. At a stage entry a ResNet ``BasicBlock`` runs the step first, at the input width and
resolution, x ↦ post(connector(step(x))): its strided 1×1 downsample reads one pixel in four and
would hide the rest of the input from a step placed after it. The stability certificate of the step
(``<path>.step``) covers the map u ↦ step(u); ``post`` = ReLU is 1-Lipschitz with ‖ReLU(u)‖ ≤ ‖u‖, so
it keeps both guarantees.

Initialisation (``init='auto'``): K is taken from the replaced block's first convolution W₁ when its
shape fits (``[H, C, k..]`` at the step's width, taken at stride 1), with the following BatchNorm's
scale γ/√(σ²+ε) folded in, i.e. K u equals the original's pre-activation W₁'u up to the dropped bias.
Where W₁ does not fit (U-net and diffusion blocks whose first convolution changes the width) K is the
adjoint kernel of the last convolution W₂' (taps flipped, channels swapped), so that Kᵀ = W₂' is the
branch's output map. For a timm/torchvision ``Bottleneck`` K is the composite 3×3 map conv2∘bn1∘conv1
restricted to its H strongest output channels. The step keeps the block's default start (half the
stable limit). Where no shape fits, or the convolution is zero (a zero-initialised last BatchNorm),
K is random (``init='random'`` always is); the report says which for every block.

Such a K does not make the step reproduce the replaced block (u − τKᵀΦ(Ku) has no second weight and
no bias): in a pretrained resnet18 swapped whole, the logits lose the pretrained function. The
optional ``calibration=`` data of :func:`swap_blocks` fits each new step to the replaced block's output
(block-wise feature distillation, no labels, see :func:`calibrate_swaps`).

Rules are small functions ``rule(module, spec) -> nn.Module`` (or ``(module, init_note)``) registered
per class with :func:`register_swap`; class names are stored as strings, so optional packages are never imported
here. A rule raises :class:`CannotSwap` to decline (the report lists the reason).
"""
import copy
import fnmatch
import inspect
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .layers.certificate import NormCertificate
from .layers.registry import RESIDUAL_BLOCKS
from .layers.symmetric import SymmetricResidual

__all__ = ['swap_blocks', 'register_swap', 'SWAP_RULES', 'SwapReport', 'SwapRecord', 'SkipRecord',
           'CalibrationRecord', 'SwapSpec', 'CannotSwap', 'SwappedResidual', 'SwappedUnetDecoderBlock',
           'calibrate_swaps', 'load_block_modules']

Rule = Callable[[nn.Module, 'SwapSpec'], Union[nn.Module, Tuple[nn.Module, str]]]
SWAP_RULES: Dict[str, Rule] = {}


class CannotSwap(Exception):
    """Raised by a rule that declines a module; the message is reported as the reason."""


def class_key(cls: type) -> str:
    """``'package.module.QualName'`` of a class: the key rules are registered under."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_swap(block_class: Union[type, str], rule: Rule) -> Rule:
    """Register ``rule(module, spec) -> nn.Module`` for modules whose class is exactly ``block_class``.

    ``block_class`` is a class or its dotted name (``'timm.models.resnet.BasicBlock'``), the latter
    so that rules for optional packages need no import. Subclasses are not matched (their forward may
    differ); register them explicitly. Registering again for the same class replaces the rule.
    """
    if isinstance(block_class, type):
        key = class_key(block_class)
    elif isinstance(block_class, str) and '.' in block_class:
        key = block_class
    else:
        raise ValueError(f"block_class must be a class or a dotted class name 'package.module.Class', "
                         f"got {block_class!r}")
    if not callable(rule):
        raise ValueError(f"rule must be callable as rule(module, spec) -> nn.Module, got {rule!r}")
    SWAP_RULES[key] = rule
    return rule


# --------------------------------------------------------------------------------------------- report

@dataclass
class CalibrationRecord:
    """Block-wise fit of one swapped module: relative error e = ‖new(x) − old(x)‖ / ‖old(x)‖ over the
    calibration data before and after ``steps`` Adam steps (``note`` says why a block was not fitted)."""

    steps: int
    error_before: float
    error_after: float
    note: str = ''


@dataclass
class SwapRecord:
    path: str
    old_class: str
    new_class: str
    params_before: int
    params_after: int
    init: str
    calibration: Optional[CalibrationRecord] = None


@dataclass
class SkipRecord:
    path: str
    old_class: str
    reason: str


@dataclass
class SwapReport:
    """What :func:`swap_blocks` did: every swapped path, what could not be swapped and why."""

    block: str
    swapped: List[SwapRecord] = field(default_factory=list)
    skipped: List[SkipRecord] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    calibration_samples: int = 0       # inputs in the calibration data (0: no calibration)
    calibration_seconds: float = 0.0   # wall time of the block-wise fit, captures included

    @property
    def changed(self) -> bool:
        return bool(self.swapped)

    @property
    def step_paths(self) -> List[str]:
        """Module paths of the PDE steps, the modules carrying ``stability_certificate()``."""
        return [f"{r.path}.step" if r.path else 'step' for r in self.swapped]

    def __str__(self) -> str:
        lines = [f"swap_blocks(block={self.block!r}): {len(self.swapped)} swapped, {len(self.skipped)} skipped"]
        if not self.swapped:
            lines.append("nothing swapped: the model is returned unchanged"
                         + ("" if self.skipped else " (no module with a swap rule was found; "
                            f"rules exist for {len(SWAP_RULES)} classes, see pdeblocks.swap.SWAP_RULES)"))
        if self.swapped:
            w = max(len(r.path or '(root)') for r in self.swapped)
            lines.append(f"  {'path':<{w}}  {'old → new':<40} {'params':>21}  init")
            for r in self.swapped:
                change = f"{r.old_class} → {r.new_class}"
                c = r.calibration
                fit = '' if c is None else (f"; calibrated: error {c.error_before:.3g} → {c.error_after:.3g} "
                                            f"({c.steps} steps{', ' + c.note if c.note else ''})")
                lines.append(f"  {r.path or '(root)':<{w}}  {change:<40} {r.params_before:>9,} → {r.params_after:>9,}  "
                             f"{r.init}{fit}")
        for s in self.skipped:
            lines.append(f"  not swapped: {s.path} ({s.old_class}): {s.reason}")
        if self.params_before:
            drop = 1.0 - self.params_after / self.params_before
            change = f"{drop:.1%} fewer" if drop >= 0 else f"{-drop:.1%} more"
            lines.append(f"  parameters: {self.params_before:,} → {self.params_after:,} ({change})")
        if self.calibration_samples:
            lines.append(f"  calibration: {self.calibration_samples:,} inputs, {self.calibration_seconds:.1f} s "
                         f"(relative error of each swapped block's output against the replaced block's)")
        return '\n'.join(lines)


# ------------------------------------------------------------------------------ swapped module forms

class SwappedResidual(nn.Module):
    """x ↦ post(step(connector(x) + shift(temb))) / output_scale — a residual block whose branch is a
    PDE step at constant width; with ``step_first=True``, x ↦ post(connector(step(x + shift(temb)))).

    ``connector``: the original shortcut / downsample path (identity if it had none). ``time_proj``:
    optional map temb ↦ per-channel shift (diffusion U-nets), added to the step's input. ``post``:
    the activation the original applied after its residual sum. ``step_first``: run the step at the
    block's input width and resolution, before a connector that changes them (so that a strided 1×1
    connector, which reads one pixel in s², subsamples the step's output instead of the raw input).
    Only the step carries a stability certificate; the connector is the user's layer and is not covered.
    """

    def __init__(self, step: nn.Module, connector: Optional[nn.Module] = None,
                 post: Optional[nn.Module] = None, time_proj: Optional[nn.Module] = None,
                 output_scale: float = 1.0, step_first: bool = False):
        super().__init__()
        self.connector = connector if connector is not None else nn.Identity()
        self.time_proj = time_proj
        self.step = step
        self.post = post if post is not None else nn.Identity()
        self.output_scale = float(output_scale)
        self.step_first = bool(step_first)

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        u = x if self.step_first else self.connector(x)
        if self.time_proj is not None and temb is not None:
            shift = self.time_proj(temb)
            u = u + shift.reshape(list(shift.shape) + [1] * (u.dim() - shift.dim()))
        u = self.step(u)
        if self.step_first:
            u = self.connector(u)
        u = self.post(u)
        if self.output_scale != 1.0:
            u = u / self.output_scale
        return u

    def extra_repr(self) -> str:
        return 'step_first=True' if self.step_first else ''


class SwappedUnetDecoderBlock(nn.Module):
    """segmentation_models_pytorch U-net decoder block with its second conv replaced by a PDE step.

    upsample → concatenate skip → attention1 → conv1 (channel connector, unchanged) → step → ReLU →
    attention2; same call signature as ``UnetDecoderBlock``.
    """

    def __init__(self, connector: nn.Module, step: nn.Module, attention1: nn.Module,
                 attention2: nn.Module, interpolation_mode: str, post: Optional[nn.Module] = None):
        super().__init__()
        self.interpolation_mode = interpolation_mode
        self.attention1 = attention1
        self.connector = connector
        self.step = step
        self.post = post if post is not None else nn.Identity()
        self.attention2 = attention2

    def forward(self, feature_map: torch.Tensor, target_height: int, target_width: int,
                skip_connection: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = F.interpolate(feature_map, size=(target_height, target_width), mode=self.interpolation_mode)
        if skip_connection is not None:
            x = torch.cat([x, skip_connection], dim=1)
            x = self.attention1(x)
        x = self.post(self.step(self.connector(x)))
        return self.attention2(x)


# --------------------------------------------------------------------------------- building a step

def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Detached, in float32 (half precision is raised to it) or float64 (kept)."""
    return t.detach().to(torch.promote_types(t.dtype, torch.float32))


def norm_scale(norm: Optional[nn.Module], channels: int) -> Optional[torch.Tensor]:
    """Per-channel factor a following norm applies to a conv's output: γ/√(σ²+ε) for BatchNorm with
    running stats; None for data-dependent norms (GroupNorm, InstanceNorm), which are not folded."""
    if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_var is not None:
        scale = torch.rsqrt(at_least_float32(norm.running_var) + norm.eps)
        if norm.weight is not None:
            scale = scale * at_least_float32(norm.weight)
        if scale.numel() == channels:
            return scale
    return None


def folded_kernel(conv: nn.Module, norm: Optional[nn.Module] = None) -> torch.Tensor:
    """conv.weight (float32, or float64 for a float64 conv) with the following BatchNorm's scale folded
    into its output channels."""
    w = at_least_float32(conv.weight).clone()
    scale = norm_scale(norm, w.shape[0])
    if scale is not None:
        w = w * scale.reshape([-1] + [1] * (w.dim() - 1))
    return w


def adjoint_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Kernel of the adjoint of a zero-padded 'same' convolution: W'[i, o, j] = W[o, i, −j] (channels
    swapped, taps flipped), so that K = conv(W') has Kᵀ = conv(W) exactly."""
    return weight.transpose(0, 1).flip(list(range(2, weight.dim()))).contiguous()


def dense_weight(conv: nn.Conv2d) -> torch.Tensor:
    """Weight of a grouped conv expanded to the equivalent dense ``[out, in, k..]`` (block diagonal)."""
    w = at_least_float32(conv.weight)
    g = conv.groups
    if g == 1:
        return w.clone()
    out_g, in_g = w.shape[0] // g, w.shape[1]
    dense = w.new_zeros([w.shape[0], in_g * g] + list(w.shape[2:]))
    for i in range(g):
        dense[i * out_g:(i + 1) * out_g, i * in_g:(i + 1) * in_g] = w[i * out_g:(i + 1) * out_g]
    return dense


def module_dtype_device(module: nn.Module) -> Tuple[Optional[torch.dtype], Optional[torch.device]]:
    for p in module.parameters():
        return p.dtype, p.device
    for b in module.buffers():
        return b.dtype, b.device
    return None, None


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_kernel_size(conv: nn.Module) -> List[int]:
    ks = conv.kernel_size
    return [ks] if isinstance(ks, int) else list(ks)


def check_plain_conv(conv: nn.Module, what: str) -> None:
    """Decline convolutions the PDE step cannot stand in for (dilated, even or non-'same' padded)."""
    dil = conv.dilation if isinstance(conv.dilation, (tuple, list)) else (conv.dilation,)
    if any(d != 1 for d in dil):
        raise CannotSwap(f"{what} is dilated ({tuple(dil)}); the PDE step has no dilation")
    ks = conv_kernel_size(conv)
    if any(k % 2 == 0 for k in ks):
        raise CannotSwap(f"{what} has an even kernel {tuple(ks)}; a zero-padded step needs an odd (centred) stencil")
    pad = conv.padding
    if pad != 'same' and list(pad if isinstance(pad, (tuple, list)) else [pad] * len(ks)) != [k // 2 for k in ks]:
        raise CannotSwap(f"{what} has padding {pad}, not the size-preserving {tuple(k // 2 for k in ks)}")


def relu_flux_hint(act: Optional[nn.Module]) -> Optional[str]:
    """'relu' when the original nonlinearity is a ReLU (the closest flux); else the block's default."""
    return 'relu' if isinstance(act, nn.ReLU) else None


@dataclass
class SwapSpec:
    """What the user asked for; rules build their PDE step with :meth:`make_step`."""

    block: Union[str, Callable[..., nn.Module]]
    init: str
    block_kwargs: Dict[str, Any]

    @property
    def constructor(self) -> Callable[..., nn.Module]:
        return RESIDUAL_BLOCKS[self.block] if isinstance(self.block, str) else self.block

    def accepted(self) -> Optional[set]:
        """Keyword names the constructor takes (None = any, it has ``**kwargs``)."""
        try:
            params = inspect.signature(self.constructor).parameters.values()
        except (TypeError, ValueError):
            return None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return {p.name for p in params}

    def make_step(self, channels: int, dim: int, *, kernel_size: List[int],
                  hidden_channels: Optional[int] = None, weight: Optional[torch.Tensor] = None,
                  weight_source: str = '', flux: Optional[str] = None, drop_path: Optional[nn.Module] = None,
                  like: Optional[nn.Module] = None) -> Tuple[nn.Module, str]:
        """Build ``constructor(channels, dim=dim, **kw)`` with the swap defaults under the user's kwargs.

        Defaults: ``boundary='zeros'`` (size-preserving, like the replaced padded convs), the replaced
        kernel size and hidden width, the flux hint, and with ``init='auto'`` the given initial K.
        Defaults the constructor does not take are dropped; the user's
        ``block_kwargs`` always win. Returns the module (dtype/device/mode of ``like``) and an init note.
        """
        dtype, device = module_dtype_device(like) if like is not None else (None, None)
        square = all(k == kernel_size[0] for k in kernel_size)   # int where square: blocks may take only int
        defaults: Dict[str, Any] = dict(boundary='zeros', kernel_size=kernel_size[0] if square else list(kernel_size))
        if hidden_channels is not None:
            defaults['hidden_channels'] = hidden_channels
        if flux is not None:
            defaults['flux'] = flux
        if drop_path is not None and not isinstance(drop_path, nn.Identity):
            defaults['drop_path'] = drop_path
        user = self.block_kwargs
        note = 'random'
        if self.init == 'auto' and weight is not None and 'weight' not in user:
            ks = user.get('kernel_size', kernel_size)
            ks = [ks] * dim if isinstance(ks, int) else list(ks)
            hidden = user.get('hidden_channels', hidden_channels) or channels
            finite_nonzero = bool(torch.isfinite(weight).all()) and float(weight.abs().max()) > 0.0
            if not finite_nonzero:    # e.g. a zero-initialised last BatchNorm: a zero K is a dead step
                note = f'random ({weight_source} is zero or not finite)'
            elif list(weight.shape) == [hidden, channels] + ks:
                defaults['weight'] = weight
                note = f'auto: {weight_source}'
            else:
                note = f'random (block_kwargs changed K to {[hidden, channels] + ks})'
        elif self.init == 'auto':
            note = 'random (no convolution of matching shape)' if 'weight' not in user else 'weight from block_kwargs'
        if device is not None:
            defaults['device'] = device
        if dtype is not None:
            defaults['dtype'] = dtype
        accepted = self.accepted()
        if accepted is not None:
            dropped = [k for k in defaults if k not in accepted]
            if 'weight' in dropped:
                note = 'random (block takes no weight=)'
            defaults = {k: v for k, v in defaults.items() if k in accepted}
        kwargs = {**defaults, **user}
        try:
            step = self.constructor(channels, dim=dim, **kwargs)
        except TypeError as err:
            raise ValueError(f"block {self.block!r} rejected the keyword arguments {sorted(kwargs)}: {err}") from err
        if dtype is not None:
            step = step.to(device=device, dtype=dtype)
        if like is not None:
            step.train(like.training)
        return step, note


# ---------------------------------------------------------------------------------------- the rules

def resnet_basic_rule(block: nn.Module, spec: SwapSpec) -> Tuple[nn.Module, str]:
    """timm / torchvision ``BasicBlock``: relu(shortcut(x) + bn2 conv2 relu bn1 conv1 x) ↦
    relu(step(x)) inside a stage, relu(downsample(step(x))) at a stage entry.

    K = bn1·conv1 taken at stride 1, i.e. K u is the original's pre-activation W₁'u (up to the
    dropped bias): [C, C, 3, 3] inside a stage, [C_out, C_in, 3, 3] at a stage entry, where the step
    runs at the input width C_in with H = C_out hidden channels *before* the downsample connector.
    That order matters: the usual downsample is a 1×1 convolution with stride 2, which reads one
    input pixel in four, so a step placed after it would never see 3/4 of the block's input (the
    replaced strided 3×3 conv1 saw all of it); before it, K's 3×3 stencil carries the neighbours'
    information into the pixels the connector keeps."""
    conv1, conv2 = block.conv1, block.conv2
    check_plain_conv(conv1, 'conv1')
    check_plain_conv(conv2, 'conv2')
    if conv1.groups != 1 or conv2.groups != 1:
        raise CannotSwap("grouped convolutions in a BasicBlock are not supported")
    channels_in, channels = conv1.in_channels, conv2.out_channels
    downsample = getattr(block, 'downsample', None)
    step_first = downsample is not None and (channels_in != channels or tuple(conv1.stride) != (1, 1))
    if not step_first and channels_in != channels:
        raise CannotSwap(f"conv1 changes the width ({channels_in} → {channels}) but the block has no downsample")
    weight = folded_kernel(conv1, getattr(block, 'bn1', None))
    post = getattr(block, 'act2', None) or getattr(block, 'relu', None)
    step, note = spec.make_step(channels_in, 2, kernel_size=conv_kernel_size(conv1),
                                hidden_channels=conv1.out_channels if step_first else None, weight=weight,
                                weight_source='conv1·bn1 at stride 1' if step_first else 'conv1·bn1',
                                flux=relu_flux_hint(post), drop_path=getattr(block, 'drop_path', None),
                                like=block)
    post_act = nn.ReLU() if isinstance(post, nn.ReLU) else (copy.deepcopy(post) if post is not None else None)
    return SwappedResidual(step, connector=downsample, post=post_act, step_first=step_first), note


def bottleneck_hidden(original_conv_params: int, channels: int, kernel_numel: int) -> int:
    """H such that K [H, C, 3, 3] has half the parameters of the replaced convolutions (the ratio of
    the BasicBlock swap), rounded to a multiple of 8 when ≥ 8."""
    h = original_conv_params / (2.0 * channels * kernel_numel)
    return max(1, int(round(h / 8.0)) * 8) if h >= 8 else max(1, int(round(h)))


def resnet_bottleneck_rule(block: nn.Module, spec: SwapSpec) -> Tuple[nn.Module, str]:
    """timm / torchvision ``Bottleneck``: relu(shortcut(x) + 1×1 ∘ 3×3 ∘ 1×1 (x)) ↦ relu(step(x)) inside a
    stage, relu(downsample(step(x))) at a stage entry (the step at the input width and resolution,
    before the connector, for the reason given in :func:`resnet_basic_rule`). K is 3×3 with
    H = :func:`bottleneck_hidden` channels. ``init='auto'``: the composite K₀ = bn2·conv2 ∘ bn1·conv1
    taken at stride 1 ([width, C_in, 3, 3]), keeping its H output channels of largest norm."""
    conv1, conv2, conv3 = block.conv1, block.conv2, block.conv3
    for name, c in (('conv1', conv1), ('conv2', conv2), ('conv3', conv3)):
        check_plain_conv(c, name)
    channels_in, channels = conv1.in_channels, conv3.out_channels
    downsample = getattr(block, 'downsample', None)
    aa = getattr(block, 'aa', None)   # timm's anti-aliased downsampling after conv2
    strided = any(s != 1 for c in (conv1, conv2, conv3) for s in c.stride) \
        or (aa is not None and not isinstance(aa, nn.Identity))
    step_first = downsample is not None and (channels_in != channels or strided)
    if not step_first and channels_in != channels:
        raise CannotSwap(f"the block changes the width ({channels_in} → {channels}) but has no downsample")
    ks = conv_kernel_size(conv2)
    orig = sum(c.weight.numel() for c in (conv1, conv2, conv3))
    hidden = bottleneck_hidden(orig, channels_in, math.prod(ks))
    weight = None
    if conv1.kernel_size == (1, 1) and conv1.groups == 1:
        w1 = folded_kernel(conv1, block.bn1)[:, :, 0, 0]                        # [m, C_in]
        w2 = dense_weight(conv2)                                                # [width, m, 3, 3]
        s2 = norm_scale(block.bn2, w2.shape[0])
        if s2 is not None:
            w2 = w2 * s2.reshape(-1, 1, 1, 1)
        composite = torch.einsum('hmab,mc->hcab', w2, w1)                       # [width, C_in, 3, 3]
        keep = composite.flatten(1).norm(dim=1).argsort(descending=True)[:hidden]
        weight = composite[keep.sort().values]
        if weight.shape[0] != hidden:
            weight = None
    post = getattr(block, 'act3', None) or getattr(block, 'relu', None)
    source = f'top-{hidden} rows of bn2·conv2∘bn1·conv1' + (' at stride 1' if step_first else '')
    step, note = spec.make_step(channels_in, 2, kernel_size=ks, hidden_channels=hidden, weight=weight,
                                weight_source=source, flux=relu_flux_hint(post),
                                drop_path=getattr(block, 'drop_path', None), like=block)
    post_act = nn.ReLU() if isinstance(post, nn.ReLU) else (copy.deepcopy(post) if post is not None else None)
    return SwappedResidual(step, connector=downsample, post=post_act, step_first=step_first), note


def smp_unet_decoder_rule(block: nn.Module, spec: SwapSpec) -> Tuple[nn.Module, str]:
    """segmentation_models_pytorch ``UnetDecoderBlock``: conv1 (in+skip → out) stays as the channel
    connector; conv2 (out → out, conv-norm-ReLU) becomes ReLU(step); K from conv2·norm."""
    conv2, norm2 = block.conv2[0], block.conv2[1]
    check_plain_conv(conv2, 'conv2')
    channels = conv2.out_channels
    weight = folded_kernel(conv2, norm2) if conv2.in_channels == channels and conv2.groups == 1 else None
    act = block.conv2[2] if len(block.conv2) > 2 else None
    step, note = spec.make_step(channels, 2, kernel_size=conv_kernel_size(conv2), weight=weight,
                                weight_source='conv2·norm', flux=relu_flux_hint(act), like=block)
    return SwappedUnetDecoderBlock(block.conv1, step, block.attention1, block.attention2,
                                   block.interpolation_mode, post=nn.ReLU()), note


def monai_residual_unit_rule(unit: nn.Module, spec: SwapSpec) -> Tuple[nn.Module, str]:
    """MONAI ``ResidualUnit``: conv(x) + residual(x) ↦ step(residual(x)) in ``spatial_dims`` dims; the
    residual (identity or strided/1×1 conv) is the connector; K from the first C→C stride-1 subunit."""
    convs = [m.conv for m in unit.conv.children() if hasattr(m, 'conv')]
    if not convs or not all(isinstance(c, nn.modules.conv._ConvNd) for c in convs):
        raise CannotSwap("subunits are not plain convolutions")
    if any(isinstance(c, nn.modules.conv._ConvTransposeNd) for c in convs):
        raise CannotSwap("transposed-convolution subunits are not supported")
    for i, c in enumerate(convs):
        check_plain_conv(c, f'subunit {i}')
    channels, dim = unit.out_channels, unit.spatial_dims
    ks = conv_kernel_size(convs[-1])
    weight, source = None, ''
    for i, (su, c) in enumerate(zip(unit.conv.children(), convs)):
        if c.in_channels == channels and c.out_channels == channels and all(s == 1 for s in c.stride) \
                and c.groups == 1 and conv_kernel_size(c) == ks:
            adn = getattr(su, 'adn', None)
            norm = getattr(adn, 'N', None) if adn is not None else None
            weight, source = folded_kernel(c, norm), f'subunit {i} conv·norm'
            break
    step, note = spec.make_step(channels, dim, kernel_size=ks, weight=weight, weight_source=source, like=unit)
    return SwappedResidual(step, connector=unit.residual), note


def diffusers_resnet2d_rule(block: nn.Module, spec: SwapSpec) -> Tuple[nn.Module, str]:
    """diffusers ``ResnetBlock2D`` (time_embedding_norm 'default', no up/down): (shortcut(x) + branch(x,
    temb)) / s ↦ step(shortcut(x) + W·act(temb)) / s: the time embedding enters as a per-channel
    shift of the step's initial value. K from conv1 when it is C→C, else the adjoint kernel of conv2."""
    if block.upsample is not None or block.downsample is not None:
        raise CannotSwap("resampling inside the block (up=True/down=True) is not supported")
    if block.time_embedding_norm not in ('default',) and block.time_emb_proj is not None:
        raise CannotSwap(f"time_embedding_norm={block.time_embedding_norm!r} is not supported (only 'default')")
    conv1, conv2 = block.conv1, block.conv2
    check_plain_conv(conv1, 'conv1')
    check_plain_conv(conv2, 'conv2')
    channels = conv2.out_channels
    if conv1.in_channels == channels and conv1.groups == 1:
        weight, source = folded_kernel(conv1), 'conv1'
    else:
        weight, source = adjoint_kernel(folded_kernel(conv2)), 'adjoint of conv2'
    time_proj = None
    if block.time_emb_proj is not None:
        act = nn.Identity() if block.skip_time_act else block.nonlinearity
        time_proj = nn.Sequential(act, block.time_emb_proj)
    step, note = spec.make_step(channels, 2, kernel_size=conv_kernel_size(conv2), weight=weight,
                                weight_source=source, like=block)
    return SwappedResidual(step, connector=block.conv_shortcut, time_proj=time_proj,
                           output_scale=block.output_scale_factor), note


def diffusers_resconv1d_rule(block: nn.Module, spec: SwapSpec) -> Tuple[nn.Module, str]:
    """diffusers ``ResConvBlock`` (UNet1DModel): skip(x) + conv-GN-GELU-conv(x) ↦ step(skip(x)), 1D,
    kernel 5, hidden width = the block's mid channels; K from conv_1 when it is C→mid, else the adjoint
    kernel of conv_2."""
    conv1, conv2 = block.conv_1, block.conv_2
    check_plain_conv(conv1, 'conv_1')
    check_plain_conv(conv2, 'conv_2')
    channels, hidden = conv2.out_channels, conv1.out_channels
    if conv1.in_channels == channels:
        weight, source = folded_kernel(conv1), 'conv_1'
    else:
        weight, source = adjoint_kernel(folded_kernel(conv2)), 'adjoint of conv_2'
    step, note = spec.make_step(channels, 1, kernel_size=conv_kernel_size(conv2), hidden_channels=hidden,
                                weight=weight, weight_source=source, like=block)
    connector = block.conv_skip if block.has_conv_skip else None
    return SwappedResidual(step, connector=connector), note


def diffusers_temporal1d_rule(block: nn.Module, spec: SwapSpec) -> Tuple[nn.Module, str]:
    """diffusers ``ResidualTemporalBlock1D`` (UNet1DModel resnet variants): residual_conv(x) + branch(x, t)
    ↦ step(residual_conv(x) + W·act(t)); K from conv_in when it is C→C, else the adjoint of conv_out."""
    conv_in = block.conv_in.conv1d
    conv_out = block.conv_out.conv1d
    check_plain_conv(conv_in, 'conv_in')
    check_plain_conv(conv_out, 'conv_out')
    channels = conv_out.out_channels
    if conv_in.in_channels == channels:
        weight, source = folded_kernel(conv_in), 'conv_in'
    else:
        weight, source = adjoint_kernel(folded_kernel(conv_out)), 'adjoint of conv_out'
    step, note = spec.make_step(channels, 1, kernel_size=conv_kernel_size(conv_out), weight=weight,
                                weight_source=source, like=block)
    time_proj = nn.Sequential(block.time_emb_act, block.time_emb)
    return SwappedResidual(step, connector=block.residual_conv, time_proj=time_proj), note


for _name in ('timm.models.resnet.BasicBlock', 'torchvision.models.resnet.BasicBlock'):
    register_swap(_name, resnet_basic_rule)
for _name in ('timm.models.resnet.Bottleneck', 'torchvision.models.resnet.Bottleneck'):
    register_swap(_name, resnet_bottleneck_rule)
register_swap('segmentation_models_pytorch.decoders.unet.decoder.UnetDecoderBlock', smp_unet_decoder_rule)
register_swap('monai.networks.blocks.convolutions.ResidualUnit', monai_residual_unit_rule)
register_swap('diffusers.models.resnet.ResnetBlock2D', diffusers_resnet2d_rule)
register_swap('diffusers.models.unets.unet_1d_blocks.ResConvBlock', diffusers_resconv1d_rule)
register_swap('diffusers.models.resnet.ResidualTemporalBlock1D', diffusers_temporal1d_rule)


# -------------------------------------------------------------------------------------- calibration

Call = Tuple[tuple, Dict[str, Any]]                  # positional and keyword arguments of one call


def calibration_batches(calibration: Any) -> List[Call]:
    """Normalise ``calibration`` to a list of model calls (args, kwargs).

    A tensor is one batch, run as ``model(x)``; any other iterable yields batches, each a tensor
    (``model(x)``), a tuple/list of positional arguments (``model(*args)``, e.g. a diffusion U-net's
    (sample, timestep)) or a dict of keyword arguments (``model(**kw)``). Labels are never needed.
    """
    if isinstance(calibration, torch.Tensor):
        items: List[Any] = [calibration]
    elif isinstance(calibration, (str, bytes, dict)) or not isinstance(calibration, Iterable):
        raise ValueError(f"calibration must be an input batch (a tensor [B, ...]) or an iterable of batches; "
                         f"got {type(calibration).__name__}")
    else:
        items = list(calibration)
    if not items:
        raise ValueError("calibration is empty: expected at least one input batch (a tensor [B, ...])")
    calls: List[Call] = []
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            call: Call = ((item,), {})
        elif isinstance(item, (tuple, list)):
            call = (tuple(item), {})
        elif isinstance(item, dict):
            call = ((), dict(item))
        else:
            raise ValueError(f"calibration batch {i} must be a tensor [B, ...], a tuple of positional inputs or a "
                             f"dict of keyword inputs; got {type(item).__name__}")
        tensors = [t for t in list(call[0]) + list(call[1].values()) if isinstance(t, torch.Tensor)]
        if not tensors or tensors[0].dim() == 0:
            raise ValueError(f"calibration batch {i} needs a batched input tensor [B, ...] first; got "
                             f"{describe_call(call)}")
        calls.append(call)
    return calls


def describe_call(call: Call) -> str:
    def one(v: Any) -> str:
        return f"tensor {list(v.shape)} {v.dtype}" if isinstance(v, torch.Tensor) else type(v).__name__
    parts = [one(a) for a in call[0]] + [f"{k}={one(v)}" for k, v in call[1].items()]
    return '(' + ', '.join(parts) + ')'


def batch_size(call: Call) -> int:
    first = next(t for t in list(call[0]) + list(call[1].values()) if isinstance(t, torch.Tensor))
    return int(first.shape[0])


def detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(detached(v) for v in value)
    if isinstance(value, dict):
        return {k: detached(v) for k, v in value.items()}
    return value


def run_calibration_batch(model: nn.Module, call: Call, index: int) -> None:
    """model(*args, **kwargs) without gradients; a batch the model cannot take is a ValueError."""
    try:
        with torch.no_grad():
            model(*call[0], **call[1])
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as err:
        raise ValueError(f"calibration batch {index} {describe_call(call)} could not be run through the model; "
                         f"expected the model's own input (e.g. [B, C, H, W] with its channels, dtype and "
                         f"device): {err}") from err


def captured_calls(model: nn.Module, module: nn.Module, batches: List[Call]) -> List[Tuple[Call, Any]]:
    """((args, kwargs), output) of every call of ``module`` while ``model`` runs on each batch."""
    calls: List[Tuple[Call, Any]] = []

    def hook(_m: nn.Module, args: tuple, kwargs: Dict[str, Any], output: Any) -> None:
        calls.append(((detached(args), detached(kwargs)), detached(output)))

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        for i, call in enumerate(batches):
            run_calibration_batch(model, call, i)
    finally:
        handle.remove()
    return calls


def execution_order(model: nn.Module, modules: Dict[str, nn.Module], call: Call) -> List[str]:
    """Paths of ``modules`` in the order ``model`` first calls them on one batch (uncalled ones last)."""
    order: List[str] = []
    handles = []
    for path, module in modules.items():
        def pre_hook(_m: nn.Module, _args: tuple, path: str = path) -> None:
            if path not in order:
                order.append(path)
        handles.append(module.register_forward_pre_hook(pre_hook))
    try:
        run_calibration_batch(model, call, 0)
    finally:
        for h in handles:
            h.remove()
    return order + [p for p in modules if p not in order]


def relative_error(module: nn.Module, data: List[Tuple[Call, torch.Tensor]]) -> float:
    """e = (Σ‖module(x) − y‖² / Σ‖y‖²)^½ over the captured (input, target) pairs."""
    num = den = 0.0
    with torch.no_grad():
        for (args, kwargs), y in data:
            out = module(*args, **kwargs)
            num += float((out.float() - y.float()).square().sum())
            den += float(y.float().square().sum())
    return math.sqrt(num / max(den, 1e-30))


def settle_step_size(step: nn.Module) -> None:
    """Recompute the rigorous bound of a fitted :class:`SymmetricResidual` (or subclass) at its final
    weight and re-parameterise its step so that τ is unchanged: fraction' = fraction·(B_new/B_fit)²
    (:meth:`~SymmetricResidual.set_step_fraction` caps it where the parameterisation is bounded).

    B_fit is the B of the fit's passes (the training contract's estimate, or the strict mode's cached
    B(W₀) + drift); after settling, eval passes and fine-tuning start from the full bound at the
    fitted weight with the τ the fit ended with.
    """
    if not isinstance(step, SymmetricResidual) or step.stability == 'none':
        return
    with torch.no_grad():
        b_fit = float(step.norm_bound())
        step.bound.clear()
        b_new = float(step.bound.rigorous(step.weight))
        step.set_step_fraction(float(step.step_fraction()) * (b_new / b_fit) ** 2)


def calibrate_swaps(teacher: nn.Module, student: nn.Module, paths: Sequence[str], batches: List[Call], *,
                    steps: int = 200, lr: float = 1e-3, reused: Optional[Dict[str, set]] = None
                    ) -> Dict[str, CalibrationRecord]:
    """Block-wise feature distillation: fit each swapped module to the module it replaced.

    For every path p, in the order the model runs them: x_p = the inputs reaching the swapped module
    in ``student`` (whose earlier swaps are already fitted, so the fit also absorbs their residual
    error), y_p = the outputs of the original module in ``teacher``; ``steps`` Adam steps (lr ``lr``,
    one calibration batch per step, cycling) minimise ‖new(x_p) − y_p‖² / ‖y_p‖² over the parameters
    the swap created (``reused[p]``: ids of the original's parameters kept inside, e.g. the
    connector, which stay as they are). No labels. If the fit ends above its starting error the
    starting parameters are restored, so the error never grows. τ is then settled
    (:func:`settle_step_size`). Both models run in eval mode (BatchNorm statistics are not updated);
    the modes are restored afterwards. Returns the fit of every path.
    """
    modes = {m: m.training for model in (teacher, student) for m in model.modules()}
    teacher.eval()
    student.eval()
    records: Dict[str, CalibrationRecord] = {}
    try:
        originals = {p: teacher.get_submodule(p) if p else teacher for p in paths}
        for path in execution_order(teacher, originals, batches[0]):
            new = student.get_submodule(path) if path else student
            targets = captured_calls(teacher, originals[path], batches)
            inputs = captured_calls(student, new, batches)
            if not targets or len(targets) != len(inputs):
                records[path] = CalibrationRecord(0, float('nan'), float('nan'),
                                                  f'not fitted: called {len(targets)}× in the original, '
                                                  f'{len(inputs)}× after the swap')
                continue
            if not all(isinstance(y, torch.Tensor) and y.is_floating_point() for _, y in targets):
                records[path] = CalibrationRecord(0, float('nan'), float('nan'), 'not fitted: output is not a tensor')
                continue
            data = [(call, y) for (call, _), (_, y) in zip(inputs, targets)]
            keep = (reused or {}).get(path, set())
            params = [q for q in new.parameters() if id(q) not in keep and q.requires_grad]
            before = relative_error(new, data)
            if not params:
                records[path] = CalibrationRecord(0, before, before, 'not fitted: no new trainable parameters')
                continue
            start = [q.detach().clone() for q in params]
            opt = torch.optim.Adam(params, lr=lr)
            for m in new.modules():   # the fit is training: certificates use their training passes
                if isinstance(m, NormCertificate):
                    m.train()
            with torch.enable_grad():
                for i in range(steps):
                    (args, kwargs), y = data[i % len(data)]
                    loss = (new(*args, **kwargs) - y).square().sum() / y.square().sum().clamp_min(1e-30)
                    grads = torch.autograd.grad(loss, params, allow_unused=True)
                    for q, g in zip(params, grads):
                        q.grad = g
                    opt.step()
            for q in params:
                q.grad = None
            for m in new.modules():
                settle_step_size(m)
            after = relative_error(new, data)
            note = ''
            if not after <= before:            # also catches NaN
                with torch.no_grad():
                    for q, q0 in zip(params, start):
                        q.copy_(q0)
                after, note = relative_error(new, data), 'fit did not help: initial parameters kept'
            records[path] = CalibrationRecord(steps, before, after, note)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return records


# --------------------------------------------------------------------------------------- the walker

def load_block_modules() -> None:
    """Import every module of :mod:`pdeblocks.layers` so that all residual blocks have registered."""
    import importlib
    import pkgutil

    from . import layers
    for info in pkgutil.iter_modules(layers.__path__):
        try:
            importlib.import_module(f"{layers.__name__}.{info.name}")
        except Exception as err:  # a broken optional module must not hide the valid names
            warnings.warn(f"could not import pdeblocks.layers.{info.name}: {err}", stacklevel=3)


def _patterns(value: Union[None, str, Iterable[str]], name: str) -> Optional[List[str]]:
    if value is None:
        return None
    pats = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(p, str) for p in pats):
        raise ValueError(f"{name} must be a glob pattern or a list of them (e.g. 'layer4.*'), got {value!r}")
    return pats


def _matches(path: str, pattern: str) -> bool:
    """A module path matches a glob if it or one of its ancestors does ('layer1' covers 'layer1.0')."""
    parts = path.split('.')
    return any(fnmatch.fnmatchcase('.'.join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def _candidates(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(path, module) of modules with a rule, outermost first; the inside of a candidate is not searched."""
    found: List[Tuple[str, nn.Module]] = []
    if class_key(type(model)) in SWAP_RULES:     # the model is itself one block
        return [('', model)]

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if class_key(type(child)) in SWAP_RULES:
                found.append((path, child))
            walk(child, path)

    walk(model, '')
    return found


def swap_blocks(
        model: nn.Module,
        block: Union[str, Callable[..., nn.Module]] = 'symmetric',
        *,
        include: Union[None, str, Sequence[str]] = None,
        exclude: Union[None, str, Sequence[str]] = None,
        init: str = 'auto',
        inplace: bool = False,
        calibration: Any = None,
        calibration_steps: int = 200,
        calibration_lr: float = 1e-3,
        **block_kwargs,
) -> Tuple[nn.Module, SwapReport]:
    """Replace every supported residual block of ``model`` by a PDE block; return (model, report).

    Args:
        model: any ``nn.Module``; modules whose class has a rule (:data:`SWAP_RULES`) are swapped.
        block: name of a residual PDE block in :data:`pdeblocks.layers.registry.RESIDUAL_BLOCKS`
            (``'symmetric'``, …) or a constructor ``(channels, dim=2, **kwargs) -> nn.Module``.
        include / exclude: glob patterns on module paths (``'layer4.*'``, ``'decoder.blocks.0'``); a
            path matches if it or an ancestor does. A pattern matching no swappable module warns.
        init: ``'auto'`` (K from the replaced convolution where shapes allow) or ``'random'``.
        inplace: modify ``model`` itself; by default a deep copy is swapped and ``model`` is untouched.
        calibration: optional unlabelled inputs (a tensor batch, or an iterable of batches: tensors,
            tuples of positional inputs or dicts of keyword inputs). After the swap each new module is
            fitted to reproduce the replaced block's output on the activations that reach it
            (:func:`calibrate_swaps`: ``calibration_steps`` Adam steps at ``calibration_lr`` per block,
            one batch per step). Cost: per block, two forward passes of the model over the data plus
            ``calibration_steps`` forward/backward passes of the block (and its norm-bound updates:
            for wide layers use cheaper settings such as ``gram_steps=2, bound_refresh=0.25``; a
            coarser grid, ``interp_slack=2.0``, is cheaper still, but its looser B can cut the largest
            certified τ = 2/(L·B²) by up to 4×).
            The report gives the relative error of every block before and after, the inputs used and
            the seconds spent. With ``inplace=True`` a copy of the original is kept during the fit.
        **block_kwargs: passed to every block, overriding the swap defaults (``boundary='zeros'``, the
            replaced kernel size and width, ``flux='relu'`` where the original used ReLU, ...).

    Shapes, strides, dtype, device and train/eval mode are preserved; every swapped module is
    ``SwappedResidual``-like with the PDE step at ``<path>.step`` (the module that carries
    ``stability_certificate()``). A model with nothing to swap comes back unchanged with a report
    saying so. Nothing is modified unless every rule succeeded.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(block, str):
        if block not in RESIDUAL_BLOCKS:
            load_block_modules()
        if block not in RESIDUAL_BLOCKS:
            raise ValueError(f"unknown block {block!r}; valid names: {sorted(RESIDUAL_BLOCKS)}")
    elif not callable(block):
        raise ValueError(f"block must be a registered name {sorted(RESIDUAL_BLOCKS)} or a constructor, got {block!r}")
    if init not in ('auto', 'random'):
        raise ValueError(f"init must be 'auto' or 'random', got {init!r}")
    inc, exc = _patterns(include, 'include'), _patterns(exclude, 'exclude')
    batches: List[Call] = []
    if calibration is not None:
        if isinstance(calibration_steps, bool) or not isinstance(calibration_steps, int) or calibration_steps < 1:
            raise ValueError(f"calibration_steps must be an int ≥ 1, got {calibration_steps!r}")
        if not isinstance(calibration_lr, (int, float)) or not math.isfinite(calibration_lr) or calibration_lr <= 0:
            raise ValueError(f"calibration_lr must be a finite number > 0, got {calibration_lr!r}")
        batches = calibration_batches(calibration)
        modes = {m: m.training for m in model.modules()}
        model.eval()
        try:                           # a batch the model cannot take fails here, before any change
            for i, call in enumerate(batches):
                run_calibration_batch(model, call, i)
        finally:
            for m, mode in modes.items():
                m.training = mode

    teacher = copy.deepcopy(model) if calibration is not None and inplace else model
    target = model if inplace else copy.deepcopy(model)
    spec = SwapSpec(block=block, init=init, block_kwargs=dict(block_kwargs))
    block_name = block if isinstance(block, str) else getattr(block, '__name__', repr(block))
    report = SwapReport(block=block_name, params_before=count_params(target))

    candidates = _candidates(target)
    paths = [p for p, _ in candidates]
    for kind, pats in (('include', inc), ('exclude', exc)):
        for pat in pats or []:
            if not any(_matches(p, pat) for p in paths):
                examples = ', '.join(paths[:4]) + (', …' if len(paths) > 4 else '') if paths else 'none'
                warnings.warn(f"{kind} pattern {pat!r} matches no swappable module (swappable: {examples})",
                              stacklevel=2)

    replacements: List[Tuple[str, nn.Module]] = []
    reused_by_path: Dict[str, set] = {}
    taken: List[str] = []
    for path, module in candidates:
        if any(path.startswith(t + '.') for t in taken):
            continue                                   # inside a block already being replaced
        cls = type(module).__name__
        if inc is not None and not any(_matches(path, p) for p in inc):
            continue
        hit = next((p for p in exc or [] if _matches(path, p)), None)
        if hit is not None:
            report.skipped.append(SkipRecord(path, cls, f"excluded by pattern {hit!r}"))
            continue
        try:
            result = SWAP_RULES[class_key(type(module))](module, spec)
        except CannotSwap as why:
            report.skipped.append(SkipRecord(path, cls, str(why)))
            continue
        new, note = result if isinstance(result, tuple) else (result, 'by user rule')
        if not isinstance(new, nn.Module):
            raise ValueError(f"the swap rule for {class_key(type(module))} returned {type(new).__name__}, "
                             f"expected an nn.Module")
        reused = {id(m) for m in module.modules()}
        for m in new.modules():           # new parts take the replaced block's train/eval mode
            if id(m) not in reused:
                m.training = module.training
        replacements.append((path, new))
        reused_by_path[path] = {id(q) for q in module.parameters()}
        taken.append(path)
        report.swapped.append(SwapRecord(path, cls, type(new).__name__, count_params(module),
                                         count_params(new), note))

    for path, new in replacements:
        if not path:
            target = new
            continue
        parent_path, _, name = path.rpartition('.')
        parent = target.get_submodule(parent_path) if parent_path else target
        setattr(parent, name, new)
    report.params_after = count_params(target)
    if batches and report.swapped:
        t0 = time.perf_counter()
        fits = calibrate_swaps(teacher, target, [r.path for r in report.swapped], batches,
                               steps=calibration_steps, lr=calibration_lr, reused=reused_by_path)
        for r in report.swapped:
            r.calibration = fits.get(r.path)
        report.calibration_samples = sum(batch_size(c) for c in batches)
        report.calibration_seconds = time.perf_counter() - t0
    return target, report
