"""Rules for diffusers' residual blocks: ``ResnetBlock2D`` (UNet2DModel and the latent U-nets),
``ResConvBlock`` and ``ResidualTemporalBlock1D`` (UNet1DModel). The time embedding enters the step
as a per-channel shift of its initial value."""
from typing import Tuple

from torch import nn

from ..kernels import adjoint_kernel, check_plain_conv, conv_kernel_size, folded_kernel
from ..registry import CannotSwap
from ..spec import SwapSpec
from ..wrappers import SwappedResidual


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
