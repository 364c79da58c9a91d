"""The built-in swap rules: one module per package family, and the table of the classes they serve.

Classes are named as strings (``'timm.models.resnet.BasicBlock'``), so none of these modules imports
timm, torchvision, segmentation_models_pytorch, MONAI or diffusers; a rule only reads the attributes
of the module it is given. Importing this package registers :data:`BUILTIN_RULES` with
:func:`~pdeblocks.swap.register_swap`.
"""
from typing import Dict

from ..registry import Rule, register_swap
from .diffusers import diffusers_resconv1d_rule, diffusers_resnet2d_rule, diffusers_temporal1d_rule
from .monai import monai_residual_unit_rule
from .resnet import resnet_basic_rule, resnet_bottleneck_rule
from .smp import smp_unet_decoder_rule

BUILTIN_RULES: Dict[str, Rule] = {
    'timm.models.resnet.BasicBlock': resnet_basic_rule,
    'torchvision.models.resnet.BasicBlock': resnet_basic_rule,
    'timm.models.resnet.Bottleneck': resnet_bottleneck_rule,
    'torchvision.models.resnet.Bottleneck': resnet_bottleneck_rule,
    'segmentation_models_pytorch.decoders.unet.decoder.UnetDecoderBlock': smp_unet_decoder_rule,
    'monai.networks.blocks.convolutions.ResidualUnit': monai_residual_unit_rule,
    'diffusers.models.resnet.ResnetBlock2D': diffusers_resnet2d_rule,
    'diffusers.models.unets.unet_1d_blocks.ResConvBlock': diffusers_resconv1d_rule,
    'diffusers.models.resnet.ResidualTemporalBlock1D': diffusers_temporal1d_rule,
}

for _class_name, _rule in BUILTIN_RULES.items():
    register_swap(_class_name, _rule)
