"""Building blocks: flux activations, scheme blocks, multigrid and group layers."""
from .flux import (
    FLUXES, Charbonnier, ExpPeronaMalik, Flux, LearnedFlux, PeronaMalik, ReLUFlux, Weickert, create_flux,
)
from .registry import RESIDUAL_BLOCKS, create_block, register_block
from .symmetric import STABILITY_MODES, OperatorNormBound, SymmetricBasicBlock, SymmetricResidual

__all__ = [
    'FLUXES', 'Charbonnier', 'ExpPeronaMalik', 'Flux', 'LearnedFlux', 'PeronaMalik', 'ReLUFlux', 'Weickert',
    'create_flux', 'RESIDUAL_BLOCKS', 'create_block', 'register_block', 'STABILITY_MODES', 'OperatorNormBound', 'SymmetricBasicBlock', 'SymmetricResidual',
]
