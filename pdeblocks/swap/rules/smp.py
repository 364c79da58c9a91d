"""Rule for segmentation_models_pytorch's U-net decoder block (``UnetDecoderBlock``)."""
from typing import Tuple

from torch import nn

from ..kernels import check_plain_conv, conv_kernel_size, folded_kernel
from ..spec import SwapSpec, relu_flux_hint
from ..wrappers import SwappedUnetDecoderBlock


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
