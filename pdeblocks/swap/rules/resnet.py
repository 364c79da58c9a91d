"""Rules for timm and torchvision ResNet ``BasicBlock`` and ``Bottleneck``.

The two packages' blocks have the same forward (relu(shortcut(x) + branch(x))) and differ only in
attribute names (timm's ``act2``/``act3``, ``drop_path``, ``aa``), which the rules read with
``getattr``, so one rule per block type serves both packages.
"""
import copy
import math
from typing import Optional, Tuple

import torch
from torch import nn

from ..kernels import check_plain_conv, conv_kernel_size, dense_weight, folded_kernel, norm_scale
from ..registry import CannotSwap
from ..spec import SwapSpec, relu_flux_hint
from ..wrappers import SwappedResidual


def post_activation(post: Optional[nn.Module]) -> Optional[nn.Module]:
    """The activation applied after the residual sum, for the swapped block: a fresh ReLU, else a copy."""
    return nn.ReLU() if isinstance(post, nn.ReLU) else (copy.deepcopy(post) if post is not None else None)


def resnet_basic_rule(block: nn.Module, spec: SwapSpec) -> Tuple[nn.Module, str]:
    """timm / torchvision ``BasicBlock``: relu(shortcut(x) + bn2 conv2 relu bn1 conv1 x) ↦
    relu(step(x)) inside a stage, relu(downsample(step(x))) at a stage entry.

    K = bn1·conv1 with conv1's stride, i.e. K u is the original's pre-activation W₁'u (up to the
    dropped bias): [C, C, 3, 3] inside a stage, [C_out, C_in, 3, 3] at a stage entry, where the step
    runs at the input width C_in with H = C_out hidden channels *before* the downsample connector.
    That order matters: the usual downsample is a 1×1 convolution with stride 2, which reads one
    input pixel in four, so a step placed after it would never see 3/4 of the block's input (the
    replaced strided 3×3 conv1 saw all of it); before it, K's 3×3 stencil carries the neighbours'
    information into the pixels the connector keeps. With the stride (blocks that take one: the explicit
    step) K u costs what conv1 cost and Kᵀ the same; at stride 1 the step would cost 4× conv1 twice."""
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
    stride = conv1.stride[0] if step_first and len(set(conv1.stride)) == 1 else 1
    step, note = spec.make_step(channels_in, 2, kernel_size=conv_kernel_size(conv1),
                                hidden_channels=conv1.out_channels if step_first else None, weight=weight,
                                weight_source='conv1·bn1', flux=relu_flux_hint(post),
                                drop_path=getattr(block, 'drop_path', None), like=block, stride=stride)
    if stride != 1 and getattr(step, 'stride', 1) != stride:
        note += ' (at stride 1: the block takes no stride)'

    return SwappedResidual(step, connector=downsample, post=post_activation(post), step_first=step_first), note


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
    return SwappedResidual(step, connector=downsample, post=post_activation(post), step_first=step_first), note
