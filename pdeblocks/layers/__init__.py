"""Building blocks: flux activations, scheme blocks, multigrid and group layers."""
from .flux import (
    FLUXES, Charbonnier, ExpPeronaMalik, Flux, LearnedFlux, PeronaMalik, ReLUFlux, Weickert, create_flux,
)
from .symmetric import STABILITY_MODES, OperatorNormBound, SymmetricBasicBlock, SymmetricResidual

__all__ = [
    'FLUXES', 'Charbonnier', 'ExpPeronaMalik', 'Flux', 'LearnedFlux', 'PeronaMalik', 'ReLUFlux', 'Weickert',
    'create_flux', 'STABILITY_MODES', 'OperatorNormBound', 'SymmetricBasicBlock', 'SymmetricResidual',
]
