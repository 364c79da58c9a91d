"""Discrete operators: convolutions with exact adjoints, finite-difference stencils, norm bounds, tridiagonal solves,
the posterior mean of a piecewise-constant (or piecewise-polynomial) signal, a Parseval short-time Fourier frame and
its spectral shrinkage, blind noise estimates."""
from .conv import BOUNDARIES, check_signal, conv, conv_adjoint, min_signal_size
from .multigrid import (
    GramOperator,
    Multigrid,
    StencilOperator,
    conjugate_gradient,
    galerkin_operator,
    gram_stencil,
    jacobi_solve,
    max_levels,
    poisson_stencil,
)
from .noise import MAD_TO_SIGMA, NOISE_FILTER, NOISE_FRAME, median_last, noise_sigma, spectral_noise_sigma
from .norms import bound_settings, gram_spectral_bound, norm_bound, power_iteration_norm, symbol_norm_sup, tap_norm_sum
from .segmentation import SegmentPosterior, segment_posterior, segment_posterior_mean
from .spectral import spectral_shrink, stft_frame, stft_frame_inverse
from .stencils import difference_stencil, first_difference, first_difference_adjoint
from .transfer import full_weighting, interpolation_scale, prolong, restrict, strided_conv, strided_conv_adjoint
from .tridiagonal import implicit_diffusion_step, solve_tridiagonal

__all__ = [
    'BOUNDARIES', 'check_signal', 'conv', 'conv_adjoint', 'min_signal_size',
    'bound_settings', 'gram_spectral_bound', 'norm_bound', 'power_iteration_norm', 'symbol_norm_sup', 'tap_norm_sum',
    'difference_stencil', 'first_difference', 'first_difference_adjoint', 'full_weighting', 'interpolation_scale', 'prolong', 'restrict', 'strided_conv',
    'strided_conv_adjoint', 'GramOperator', 'Multigrid', 'StencilOperator', 'conjugate_gradient',
    'galerkin_operator', 'gram_stencil', 'jacobi_solve', 'max_levels', 'poisson_stencil',
    'implicit_diffusion_step', 'solve_tridiagonal', 'SegmentPosterior', 'segment_posterior', 'segment_posterior_mean',
    'spectral_shrink', 'stft_frame', 'stft_frame_inverse',
    'MAD_TO_SIGMA', 'NOISE_FILTER', 'NOISE_FRAME', 'median_last', 'noise_sigma', 'spectral_noise_sigma',
]
