"""Registry of residual PDE blocks by name, for model factories and :func:`pdeblocks.swap_blocks`.

Every entry builds a module that maps ``[B, C, *spatial]`` to the same shape at constant width:
``constructor(channels, dim=2, **kwargs) -> nn.Module``.
"""
from typing import Callable, Dict, Union

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


def takes_stride(block: Union[str, Callable[..., nn.Module]]) -> bool:
    """Whether a residual block (a registered name or a constructor) takes a ``stride``: K_s applied at every s-th
    output, the step keeping u's size (its class's ``supports_stride``; unknown names: False)."""
    constructor = RESIDUAL_BLOCKS.get(block) if isinstance(block, str) else block
    return bool(getattr(constructor, 'supports_stride', False))
