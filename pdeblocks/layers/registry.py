"""Registry of residual PDE blocks by name, for model factories and :func:`pdeblocks.swap_blocks`.

Every entry builds a module that maps ``[B, C, *spatial]`` to the same shape at constant width:
``constructor(channels, dim=2, **kwargs) -> nn.Module``.
"""
from typing import Callable, Dict

from torch import nn

RESIDUAL_BLOCKS: Dict[str, Callable[..., nn.Module]] = {}


def register_block(name: str, constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``constructor(channels, dim=2, **kwargs)`` under ``name`` (overwriting is an error)."""
    if name in RESIDUAL_BLOCKS and RESIDUAL_BLOCKS[name] is not constructor:
        raise ValueError(f"a residual block named {name!r} is already registered")
    RESIDUAL_BLOCKS[name] = constructor
    return constructor


def create_block(name: str, channels: int, dim: int = 2, **kwargs) -> nn.Module:
    """Build a registered residual block; unknown names raise a ValueError listing the valid ones."""
    if name not in RESIDUAL_BLOCKS:
        raise ValueError(f"unknown block {name!r}; valid names: {sorted(RESIDUAL_BLOCKS)}")
    return RESIDUAL_BLOCKS[name](channels, dim=dim, **kwargs)
