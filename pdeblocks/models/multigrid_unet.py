"""Factories for the multigrid U-net (:class:`pdeblocks.layers.multigrid.MultigridUNet`), 1D and 2D.

Not timm classifiers: they map a signal to a signal of the same size (denoising, segmentation,
operator learning). ``pretrained=True`` is refused: no weights are published for them.
"""
from typing import Any, Sequence

from ..layers.multigrid import MultigridUNet

__all__ = ['multigrid_unet_1d', 'multigrid_unet_2d']


def _build(dim: int, in_channels: int, out_channels: int, channels: Sequence[int], cycle: str,
           pretrained: bool, **kwargs: Any) -> MultigridUNet:
    if pretrained:
        raise ValueError("no pretrained weights exist for multigrid U-nets; use pretrained=False")
    return MultigridUNet(dim=dim, in_channels=in_channels, out_channels=out_channels, channels=channels,
                         cycle=cycle, **kwargs)


def multigrid_unet_2d(in_channels: int = 3, out_channels: int = 3, channels: Sequence[int] = (32, 64, 128, 256),
                      cycle: str = 'V', pretrained: bool = False, **kwargs: Any) -> MultigridUNet:
    """2D multigrid U-net: 4 levels of 32–256 channels, 2 + 2 symmetric Perona–Malik steps per level,
    Neumann boundaries, learned restriction; ``kwargs`` go to :class:`MultigridUNet`."""
    return _build(2, in_channels, out_channels, channels, cycle, pretrained, **kwargs)


def multigrid_unet_1d(in_channels: int = 1, out_channels: int = 1, channels: Sequence[int] = (16, 32, 64, 128),
                      cycle: str = 'V', pretrained: bool = False, **kwargs: Any) -> MultigridUNet:
    """1D multigrid U-net: 4 levels of 16–128 channels (signals, time series); see :func:`multigrid_unet_2d`."""
    return _build(1, in_channels, out_channels, channels, cycle, pretrained, **kwargs)
