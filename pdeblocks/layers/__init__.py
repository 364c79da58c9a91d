"""Building blocks: flux activations, scheme blocks, multigrid and group layers."""
from .flux import (
    FLUXES, Charbonnier, ExpPeronaMalik, Flux, LearnedFlux, PeronaMalik, ReLUFlux, Weickert, create_flux,
)
from .registry import RESIDUAL_BLOCKS, create_block, register_block
from .symmetric import STABILITY_MODES, OperatorNormBound, SymmetricBasicBlock, SymmetricResidual
from .fed import FEDCycle, FSIBlock, LaggedDiffusion, cycle_amplification_bound, leja_order
from .implicit import ImplicitBlock
from .hyperbolic import (
    HamiltonianBlock, HyperbolicBlock, NormalizedFlux, ParabolicBlock, ReversibleState, ReversibleStep, TVNorm,
)
from .multigrid import GridTransfer, MultigridCycle, MultigridUNet

__all__ = [
    'FLUXES', 'Charbonnier', 'ExpPeronaMalik', 'Flux', 'LearnedFlux', 'PeronaMalik', 'ReLUFlux', 'Weickert',
    'create_flux', 'RESIDUAL_BLOCKS', 'create_block', 'register_block', 'STABILITY_MODES',
    'FEDCycle', 'FSIBlock', 'LaggedDiffusion', 'cycle_amplification_bound', 'leja_order', 'ImplicitBlock',
    'HamiltonianBlock', 'HyperbolicBlock', 'NormalizedFlux', 'ParabolicBlock', 'ReversibleState', 'ReversibleStep',
    'TVNorm', 'GridTransfer', 'MultigridCycle', 'MultigridUNet', 'OperatorNormBound', 'SymmetricBasicBlock', 'SymmetricResidual',
]
