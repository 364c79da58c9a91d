"""pdeblocks: numerical schemes for PDEs as neural-network blocks with provable stability.

``import pdeblocks`` registers the ``pde_*`` architectures with timm. ``pytest -p pdeblocks`` also
works (the import is the whole plugin).
"""
from . import layers, models, ops  # noqa: F401  (models registers the timm architectures)
from .hub import from_pretrained, list_pretrained
from .stability import certify
from .swap import register_swap, swap_blocks

__version__ = '0.1.0'
__all__ = ['certify', 'from_pretrained', 'layers', 'list_pretrained', 'models', 'ops', 'register_swap',
           'swap_blocks']
