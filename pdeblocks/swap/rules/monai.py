"""Rule for MONAI's ``ResidualUnit`` (1D, 2D or 3D)."""
from typing import Tuple

from torch import nn

from ..kernels import check_plain_conv, conv_kernel_size, folded_kernel
from ..registry import CannotSwap
from ..spec import SwapSpec
from ..wrappers import SwappedResidual


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
