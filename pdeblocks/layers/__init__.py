"""Building blocks: flux activations, scheme blocks, multigrid and group layers, the blind denoiser's tails."""
from .fed import FEDCycle, FSIBlock, LaggedCycle, LaggedDiffusion, cycle_amplification_bound, leja_order
from .flux import FLUXES, Charbonnier, ExpPeronaMalik, Flux, LearnedFlux, PeronaMalik, ReLUFlux, Weickert, create_flux
from .gcnn import (
    CDELayer,
    CDELayerM2,
    CDELayerR2,
    ConvectionM2,
    ConvectionR2,
    DiffusionM2,
    DiffusionR2,
    FractionalDilationM2,
    FractionalDilationR2,
    FractionalErosionM2,
    FractionalErosionR2,
    LiftM2Cartesian,
    LinearM2,
    ProjectM2,
    max_plus_convolution_m2,
    min_plus_convolution_m2,
    rotate_m2,
)
from .hyperbolic import HamiltonianBlock, HyperbolicBlock, NormalizedFlux, ParabolicBlock, TVNorm
from .implicit import ImplicitBlock
from .multigrid import GridTransfer, MultigridCycle, MultigridUNet
from .registry import RESIDUAL_BLOCKS, create_block, register_block
from .reversible import ReversibleState, ReversibleStep
from .symmetric import STABILITY_MODES, Dilated1D, OperatorNormBound, SymmetricBasicBlock, SymmetricResidual
from .tails import BayesSegmentTail1D, ImplicitTail1D, IRLSTail1D, ResidualShrinkTail1D

__all__ = [
    'FLUXES', 'Charbonnier', 'ExpPeronaMalik', 'Flux', 'LearnedFlux', 'PeronaMalik', 'ReLUFlux', 'Weickert',
    'create_flux', 'RESIDUAL_BLOCKS', 'create_block', 'register_block', 'STABILITY_MODES',
    'FEDCycle', 'FSIBlock', 'LaggedCycle', 'LaggedDiffusion', 'cycle_amplification_bound', 'leja_order', 'ImplicitBlock',
    'HamiltonianBlock', 'HyperbolicBlock', 'NormalizedFlux', 'ParabolicBlock', 'ReversibleState', 'ReversibleStep',
    'TVNorm', 'GridTransfer', 'MultigridCycle', 'MultigridUNet',
    'CDELayer', 'CDELayerM2', 'CDELayerR2', 'ConvectionM2', 'ConvectionR2', 'DiffusionM2', 'DiffusionR2',
    'FractionalDilationM2', 'FractionalDilationR2', 'FractionalErosionM2', 'FractionalErosionR2', 'LiftM2Cartesian',
    'LinearM2', 'ProjectM2', 'max_plus_convolution_m2', 'min_plus_convolution_m2', 'rotate_m2',
    'Dilated1D', 'OperatorNormBound', 'SymmetricBasicBlock', 'SymmetricResidual',
    'BayesSegmentTail1D', 'ImplicitTail1D', 'IRLSTail1D', 'ResidualShrinkTail1D',
]
