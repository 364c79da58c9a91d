"""Recipes of the general-purpose blind denoiser (:class:`~pdeblocks.models.blind.BlindDenoiser1D`) on the signal
families of :mod:`pdeblocks.data.families` (``data='families'``), trained by the project trainer::

    OMP_NUM_THREADS=1 pdeblocks train RECIPE [--out DIR] [--resume] [--log-every 50]

Recipes: ``denoiser-1d-general`` (revision v2 of ``denoiser-1d``), the chain of fine-tunes that made v3
(``-implicit`` → ``-irls4`` → ``-irls4-joint`` → ``-irls4-joint-long``; each names its source in ``start_from``),
the probes along the way, ``-bayes`` → ``-bayes-joint`` (v4), ``-residual`` (v5: v4's weights with the spectral σ̂ and
the residual tail, ``steps=0``), every one with its free-step twin ``RECIPE-free``, and ``schemes-<scheme>-<certified|free>``
(the short comparison of ``benchmarks/bench_denoise_schemes.py``: one budget, 1 thread).
"""
from typing import Any, Dict, Tuple

from ..data.families import FAMILIES, MAX_FREQUENCY
from ..models.blind import BlindDenoiser1D
from .recipes import RECIPES, Recipe, register_recipe

__all__ = ['register_general', 'SCHEME_MODELS', 'SCHEME_BUDGET', 'GENERAL_SIGMAS', 'GENERAL_MODEL', 'V2_WEIGHTS']

GENERAL_SIGMAS = (0.005, 0.3)

# The scheme comparison: one short recipe and budget for every scheme, each certified and free.
SCHEME_MODELS: Dict[str, Dict[str, Any]] = {
    'explicit': dict(scheme='explicit', blocks=16),
    'fed': dict(scheme='fed', blocks=4, steps=4),
    'implicit': dict(scheme='implicit', blocks=4, steps=4, relative_step=4.0),
    'multigrid': dict(scheme='multigrid', scale=1, channels=12, levels=3, steps=2),
    # added after the first four: the multigrid cycle on the unshuffled grid of the explicit skeleton
    'multigrid-unshuffled': dict(scheme='multigrid', scale=8, channels=32, levels=3, growth=1, steps=2),
    'explicit-scale16': dict(scheme='explicit', scale=16, blocks=16),   # twice the reach per step, half the cost
    # the explicit skeleton followed by full-resolution edge-preserving diffusion (2 FED cycles of 8 steps)
    'explicit-refine': dict(scheme='explicit', blocks=16, refine_cycles=2, refine_steps=8, refine_channels=2),
    # the explicit skeleton followed by the semi-implicit full-resolution tail (exact tridiagonal solves, gated τ)
    'explicit-tail': dict(scheme='explicit', blocks=16, tail_steps=2),
    'explicit-tail-edges': dict(scheme='explicit', blocks=16, tail_steps=2, tail_edges=8),
    # finer grids: half and a quarter of the reach per step, twice and four times the positions (the same parameters)
    'explicit-scale4': dict(scheme='explicit', scale=4, blocks=16),
    'explicit-scale2': dict(scheme='explicit', scale=2, blocks=16),
    'explicit-scale4-dilation2': dict(scheme='explicit', scale=4, blocks=16, dilation=2),   # every second step dilated
    'explicit-scale4-dilation8': dict(scheme='explicit', scale=4, blocks=16, dilation=8),   # the cycle 1, 2, 4, 8
}
SCHEME_BUDGET = dict(steps=1200, batch_size=16, length=512, lr=3e-3, warmup=50, checkpoint_every=200)


def _general(name: str, model: Dict[str, Any], description: str,
             loss: str = 'relative_mse', **train: Any) -> Recipe:
    return register_recipe(Recipe(name=name, task='denoise', architecture=BlindDenoiser1D.architecture,
                                  model_kwargs=model, seed=0, data='families', kinds=FAMILIES, sigma_min=GENERAL_SIGMAS[0],
                                  sigma_max=GENERAL_SIGMAS[1], loss=loss,
                                  description=description, **train))


for _scheme, _kwargs in SCHEME_MODELS.items():
    for _stab, _label in (('euclidean', 'certified'), ('none', 'free')):
        _general(f'schemes-{_scheme}-{_label}', dict(_kwargs, stability=_stab),
                 f'scheme comparison: {_scheme}, {_label}, blind on all families, short budget', **SCHEME_BUDGET)


# the loss: every signal's dB counts alike (log), at the short budget
_general('schemes-explicit-refine-log-certified', dict(SCHEME_MODELS['explicit-refine'], stability='euclidean'),
         'scheme comparison: explicit + full-resolution refinement, certified, log relative MSE', loss='log_relative_mse',
         **SCHEME_BUDGET)


# revision v2's weights, bundled: the start of the chain of fine-tunes that made v3, and the run that is its free twin
V2_WEIGHTS = 'pdeblocks/pretrained/denoiser-1d-v2'
V2_FREE_WEIGHTS = 'runs/denoiser-1d-general-free/model'


def _free_source(folder: str) -> str:
    """The free twin's source for a fine-tune from ``folder``: the free run of the same stage."""
    return V2_FREE_WEIGHTS if folder == V2_WEIGHTS else folder.replace('/model', '-free/model')


def register_general(model: Dict[str, Any], name: str = 'denoiser-1d-general', steps: int = 30000,
                     loss: str = 'relative_mse', lr: float = 3e-3, start_from: str = '',
                     data_offset: int = 0, trainable: Tuple[str, ...] = (), restart: Tuple[str, ...] = (),
                     max_frequency: float = MAX_FREQUENCY, stability: str = 'euclidean', twin: bool = True) -> None:
    """(Re)register recipe ``name`` (its steps' ``stability``) and, with ``twin``, its free twin ``name-free`` for
    ``model`` kwargs. A fine-tune's twin starts from the free run of its source's stage, at the same data step, with
    the same trained stages."""
    if stability not in ('euclidean', 'retracted'):
        raise ValueError(f"a general recipe's steps are certified: stability 'euclidean' or 'retracted' (the free "
                         f"twin is registered with it), got {stability!r}")
    train = dict(steps=steps, batch_size=32, length=512, lr=lr, warmup=100, checkpoint_every=250, loss=loss,
                 data_offset=data_offset, trainable=trainable, restart=restart, max_frequency=max_frequency)
    _general(name, dict(model, stability=stability),
             f"general-purpose blind denoiser: certified{' by retraction' if stability == 'retracted' else ''}, all "
             "signal families, σ ∈ [0.005, 0.3] of the range", start_from=start_from, **train)
    if twin:
        _general(f'{name}-free', dict(model, stability='none'),
                 f'free-step twin of {name} (same skeleton, τ unconstrained, no guarantee)',
                 start_from=start_from and _free_source(start_from), **train)


# the choice of benchmarks/bench_denoise_schemes.py (docs/denoiser.md): 16 explicit certified steps, best mean
# validation PSNR at the short budget among the schemes that keep up with TV, certified = free twin within 0.1 dB
# (every constructor argument spelled out, so that a later change of a default cannot change a resumed run);
# revision v2 of denoiser-1d, bundled as denoiser-1d-v2 (trained as runs/denoiser-1d-general-v2)
GENERAL_MODEL = dict(scheme='explicit', scale=8, channels=32, hidden_channels=32, blocks=16, kernel_size=5, knots=16,
                     contrast=1.0, support=4.0, pad=32, interp_slack=1.005)
register_general(GENERAL_MODEL)
# tried and not published: + the full-resolution refinement and the log relative MSE (short budget, same seed:
# +0.17 / +0.08 dB mean, then +0.63 / +0.71 more), 12,000 steps. On the test split +0.06 / +0.16 dB mean over the
# families against the published model, piecewise constant +0.09, but QuadChirp 7 dB lower (docs/denoiser.md)
register_general(dict(GENERAL_MODEL, refine_cycles=2, refine_steps=8, refine_channels=2), 'denoiser-1d-general-refine',
                 steps=12000, loss='log_relative_mse')


# Fine-tunes: each names the saved model it starts from, the data step it starts at (batches its source never saw)
# and, where only some stages train, those stages (BlindDenoiser1D's children; the others frozen, in eval mode).
# The published model + the semi-implicit full-resolution tail (2 exact tridiagonal steps, τ and λ per signal from a
# learned gate, τ = 0.1 at start: near the identity), fine-tuned from revision v2's weights (docs/denoiser.md)
IMPLICIT_MODEL = dict(GENERAL_MODEL, tail_steps=2)
for _name, _model, _steps in (
        ('denoiser-1d-general-implicit', IMPLICIT_MODEL, 4000),
        ('denoiser-1d-general-implicit-edges', dict(IMPLICIT_MODEL, tail_edges=8), 4000),   # + the edge stop
        # three steps, the edge stop and the input mixed into the first right-hand side
        ('denoiser-1d-general-implicit-mix', dict(IMPLICIT_MODEL, tail_steps=3, tail_edges=8, tail_mix=True), 3000),
        # the cheapest: one step, the input mixed in
        ('denoiser-1d-general-implicit-mix1', dict(IMPLICIT_MODEL, tail_steps=1, tail_mix=True), 3000)):
    register_general(_model, _name, steps=_steps, lr=1e-3, start_from=V2_WEIGHTS, data_offset=30000)

# the semi-implicit candidate + the variational (IRLS) tail: 3 exact reweighted least-squares solves with the noisy
# input mixed into the data, τ, λ and β per signal from the gate (docs/denoiser.md); only the new stage trains
# started where segmentation pays (β = 0.9, λ = 0.01, τλ² = 1: measured on the candidate's own output, piecewise
# constant +1.9 / +1.6 dB); started at the identity (β = 0.02) the gate stayed there
IRLS_MODEL = dict(IMPLICIT_MODEL, irls_steps=3, irls_tau=1e4, irls_contrast=0.01, irls_mix=0.9)
TAIL_ONLY: Dict[str, Any] = dict(trainable=('irls',))
for _name, _model, _loss in (('denoiser-1d-general-irls', IRLS_MODEL, 'relative_mse'),
                              ('denoiser-1d-general-irls-log', IRLS_MODEL, 'log_relative_mse'),
                              # + the selector: γ from a residual test blends w with the network's output
                              ('denoiser-1d-general-irls-select', dict(IRLS_MODEL, irls_select=0.2), 'relative_mse'),
                              ('denoiser-1d-general-irls-select-log', dict(IRLS_MODEL, irls_select=0.2),
                               'log_relative_mse')):
    register_general(_model, _name, steps=3000, lr=3e-3, loss=_loss,
                     start_from='runs/denoiser-1d-general-implicit/model', data_offset=34000, **TAIL_ONLY)
# the measured choice (probes of 1,200 steps, validation split): the selector and the log loss (piecewise constant
# +2.7 / +2.0 dB, the other families within 0.15 dB); four IRLS steps and q = 0.75, the gate started where the probes'
# gates went (λ = 0.003, τλ² = 0.1, β = 0.9; fixed parameters of that kind gave 33.7 dB on piecewise constant at σ 0.1)
IRLS4_MODEL = dict(IMPLICIT_MODEL, irls_steps=4, irls_tau=1.1e4, irls_contrast=0.003, irls_mix=0.9, irls_select=0.2,
                   irls_exponent=0.75)
register_general(IRLS4_MODEL, 'denoiser-1d-general-irls4', steps=3000, lr=3e-3, loss='log_relative_mse',
                 start_from='runs/denoiser-1d-general-implicit/model', data_offset=34000, **TAIL_ONLY)
# then everything together (the network may hand the tail sharper jumps), at a tenth of the learning rate, on batches
# neither stage saw
register_general(IRLS4_MODEL, 'denoiser-1d-general-irls4-joint', steps=2500, lr=3e-4, loss='log_relative_mse',
                 start_from='runs/denoiser-1d-general-irls4/model', data_offset=37000)
# and longer, from there (every family above its best peer after 2,500 steps; the mean at σ 0.1 still short of +2):
# revision v3 of denoiser-1d. Its free twin (the twin-gap target) is the chain of '-free' recipes: τ unconstrained in
# the network's explicit steps; the tails are unconditionally stable solves, the same in both twins
register_general(IRLS4_MODEL, 'denoiser-1d-general-irls4-joint-long', steps=6000, lr=3e-4, loss='log_relative_mse',
                 start_from='runs/denoiser-1d-general-irls4-joint/model', data_offset=39500)
# six IRLS steps instead of four on the long run's weights, only the tail re-tuned (fixed parameters: +0.26 dB on
# today's piecewise constant at σ 0.1 from 4 to 6 steps)
LONG = dict(start_from='runs/denoiser-1d-general-irls4-joint-long/model', data_offset=45500)
register_general(dict(IRLS4_MODEL, irls_steps=6), 'denoiser-1d-general-irls6-long', steps=1500, lr=1e-3,
                 loss='log_relative_mse', **LONG, **TAIL_ONLY)
# eight IRLS steps the same way, once the tails' C kernels made a step cost about 0.3 % of the model's time (more steps
# on weights tuned for fewer lose: 4 → 8 on the published weights −0.35 dB on today's piecewise constant at σ 0.1)
register_general(dict(IRLS4_MODEL, irls_steps=8), 'denoiser-1d-general-irls8-long', steps=1500, lr=1e-3,
                 loss='log_relative_mse', **LONG, **TAIL_ONLY)
# measured: −0.05 dB on today's piecewise constant at σ 0.1 against six steps (33.87 / 33.91), validation −0.09 there;
# six steps, then everything together as -irls4-joint did for four (+0.12 dB there on today's piecewise constant)
SIX = dict(start_from='runs/denoiser-1d-general-irls6-long/model', data_offset=47000)
register_general(dict(IRLS4_MODEL, irls_steps=6), 'denoiser-1d-general-irls6-joint', steps=2500, lr=3e-4,
                 loss='log_relative_mse', **SIX)
# measured: today's piecewise constant at σ 0.1 33.92 (six steps' tail alone: 33.91), validation mean −0.04 dB at σ 0.1;
# the six-step tail alone, 3,000 more steps at a third of the learning rate, on batches it never saw
register_general(dict(IRLS4_MODEL, irls_steps=6), 'denoiser-1d-general-irls6-long2', steps=3000, lr=3e-4,
                 loss='log_relative_mse', **SIX, **TAIL_ONLY)
# measured: 33.94 dB; a per-signal oracle over the gate's outputs reaches 34.18 there: the gate is what limits. Its
# features at the lags 1, 2, 4, …, 64 (28 instead of 16): the gate and the selector restart from their initialisation
# (started where segmentation pays, as -irls4), the rest from -irls6-long, only the tail trains
register_general(dict(IRLS4_MODEL, irls_steps=6, irls_lag_base=2), 'denoiser-1d-general-irls6-lags2', steps=3000,
                 lr=3e-3, loss='log_relative_mse', restart=('irls.gate.', 'irls.selector.'), **SIX,
                 **TAIL_ONLY)
# measured (validation): piecewise constant +0.12 dB at σ 0.1 over -irls4-joint-long, the mean +0.03; today's piecewise
# constant 33.88. Then 3,000 more tail steps at lr 1e-3 on batches it never saw
register_general(dict(IRLS4_MODEL, irls_steps=6, irls_lag_base=2), 'denoiser-1d-general-irls6-lags2-long', steps=3000, lr=1e-3, loss='log_relative_mse',
                 start_from='runs/denoiser-1d-general-irls6-lags2/model', data_offset=50000, **TAIL_ONLY)
# capacity within the throughput budget (v3 runs at 0.67× TV quiet, the target is 0.5×): four more explicit steps
# (20 instead of 16, +23k parameters, about +25 % of the network's time) appended to v3's network, starting near the
# identity (τ at 5 % of the stable limit), everything fine-tuned
register_general(dict(IRLS4_MODEL, blocks=20, step_init=0.05), 'denoiser-1d-general-irls4-deep', steps=6000, lr=1e-3,
                 loss='log_relative_mse', **LONG)
# the Bayesian segmentation tail after v3's two tails: the posterior mean over all segmentations of a generic prior
# (boundary probability 1/32, chosen on the families' validation piecewise constant; segments ≤ 256 samples) where the
# IRLS tail finds one segmentation (today's piecewise constant at σ 0.1: 34.48 dB with γ = 1 on v3, v3 33.80); only
# its selector trains (w has no parameter), from the IRLS selector's evidence (γ = sigmoid(ℓ − 2) at start)
register_general(dict(IRLS4_MODEL, segment_select=0.12), 'denoiser-1d-general-bayes', steps=3000, lr=3e-3,
                 loss='log_relative_mse', trainable=('segment',), **LONG)
# measured (validation, against v3): piecewise constant +0.53 / +0.47 dB, peaks −0.13 / −0.20, the mean +0.06 / +0.04;
# today's piecewise constant 41.60 / 34.42; 4,000 more steps at lr 1e-3 moved no family by more than 0.04 dB, and
# features of where w misfits a few samples (local residual energies) or of the posterior boundary probabilities did
# not help peaks (−0.27, −0.24 at σ 0.1)
# then everything together (as -irls4-joint after -irls4), at lr 3e-4, on batches neither stage saw
register_general(dict(IRLS4_MODEL, segment_select=0.12), 'denoiser-1d-general-bayes-joint', steps=2500, lr=3e-4,
                 loss='log_relative_mse', start_from='runs/denoiser-1d-general-bayes/model',
                 data_offset=48500)
# oscillations up to Nyquist in training (the families' generator stops at 0.15 cycles/sample, and v4 takes what is
# faster for noise: the classic QuadChirp, which sweeps up to 0.5, comes out 4 dB below its noisy input); everything,
# from v4, at lr 3e-4, on batches no stage saw
register_general(dict(IRLS4_MODEL, segment_select=0.12), 'denoiser-1d-general-wideband', steps=2500, lr=3e-4,
                 loss='log_relative_mse', start_from='runs/denoiser-1d-general-bayes-joint/model',
                 data_offset=51000, max_frequency=0.5)
# measured (validation, 32 signals per family and σ, and QuadChirp's 8 noise draws, against v4): QuadChirp 23.17 / 17.96 dB (v4 21.80 / 16.15, noisy
# 25.96 / 20.09), oscillations up to Nyquist +0.28 / +0.10, the families' mean −0.07 / −0.04: σ̂_D itself is 1.9 σ on
# QuadChirp. The same with σ̂ = min(σ̂_D, σ̂_S): the spectral estimate is not fooled by fast oscillations (min 1.15 σ)
register_general(dict(IRLS4_MODEL, segment_select=0.12, spectral_noise=True), 'denoiser-1d-general-wideband-spectral',
                 steps=2500, lr=3e-4, loss='log_relative_mse',
                 start_from='runs/denoiser-1d-general-bayes-joint/model', data_offset=51000, max_frequency=0.5)
# measured (as above; the residual tail below added at inference):
# the families' mean −0.04 / −0.015 dB, oscillations up to Nyquist −0.14 / −0.23 below v4 with both changes, QuadChirp
# 27.04 / 21.56 against 27.28 / 22.11: training on them does not help once σ̂ and the residual tail see them
# revision v5: v4's weights, no step of training; σ̂ = min(σ̂_D, σ̂_S) and the residual tail last (κ = 8, frames of
# 64 samples): what the network removed but stands 8 times above the noise floor in some short-time Fourier
# coefficient of the residual is put back (the classic QuadChirp: 21.80 / 16.15 dB → 27.28 / 22.11, the families'
# mean −0.01 / +0.01 on validation; κ = 6: QuadChirp +0.3, the families −0.05)
register_general(dict(IRLS4_MODEL, segment_select=0.12, spectral_noise=True, residual_threshold=8.0),
                 'denoiser-1d-general-residual', steps=0, loss='log_relative_mse',
                 start_from='runs/denoiser-1d-general-bayes-joint/model')
# the segmentation tail with pieces of degree ≤ 2 (model-averaged over 0, 1, 2) instead of constants: blended per signal
# into v5 with the clean signal known it gains +0.34 dB in the families' mean at σ 0.1 (peaks +0.94), with a selector
# of boosted trees +0.16 (benchmarks/bench_family_ceiling.py); here v5's own selector retrains for the new w, the
# rest frozen, on batches no stage saw
register_general(dict(IRLS4_MODEL, segment_select=0.12, spectral_noise=True, residual_threshold=8.0, segment_degree=2),
                 'denoiser-1d-general-poly', steps=1500, lr=3e-3, loss='log_relative_mse', trainable=('segment',),
                 start_from='runs/denoiser-1d-general-residual/model', data_offset=54000)
# measured (validation, 16 signals per family and σ, against v5): peaks +0.31 / +0.60, piecewise smooth +0.21 / +0.34,
# sums +0.10 / +0.08, but piecewise constant −0.65 / −0.48 (the selector, led by the IRLS evidence, keeps γ high where
# the quadratic pieces' mean is 1.1 dB below the constant pieces'): the mean −0.00 / +0.09. So both: v5's constant
# tail as it is, then a second segmentation tail with quadratic pieces and a selector of its own, which alone trains
register_general(dict(IRLS4_MODEL, segment_select=0.12, spectral_noise=True, residual_threshold=8.0, poly_select=0.12),
                 'denoiser-1d-general-poly2', steps=1500, lr=3e-3, loss='log_relative_mse', trainable=('poly',),
                 start_from='runs/denoiser-1d-general-residual/model', data_offset=54000)
# measured (as above): peaks +0.24 / +0.30, piecewise smooth +0.22 / +0.25, sums +0.07 / +0.07, piecewise constant
# −0.02 / −0.00, smooth trends +0.03 / −0.05, oscillations +0.00 / −0.02: the mean +0.09 / +0.09. Twice the steps,
# γ = 0.3 at start
register_general(dict(IRLS4_MODEL, segment_select=0.12, spectral_noise=True, residual_threshold=8.0, poly_select=0.3),
                 'denoiser-1d-general-poly3', steps=3000, lr=3e-3, loss='log_relative_mse', trainable=('poly',),
                 start_from='runs/denoiser-1d-general-residual/model', data_offset=54000)
# measured (as above): the mean +0.09 / +0.10 (peaks +0.23 / +0.32, piecewise smooth +0.22 / +0.25, piecewise constant
# −0.01 / +0.01); the quadratic pieces' kernel takes 6–9× the constant one's time (10–18 s per 1000 × 4096 samples):
# not published (docs/denoiser.md, "What is left of the σ = 0.1 mean")

# The network on the 4× unshuffled grid instead of 8× (twice the positions, the same widths and parameters): at the
# scheme comparison's short budget (1,200 steps × 16 signals, validation) +0.71 / +0.64 dB in the families' mean over
# scale 8 (peaks +0.98 / +0.82, piecewise constant +1.88 / +1.39, oscillations +0.04 / +0.03); scale 2 +0.66 / +0.55 at
# 5× the network's time, scale 4 with 24 channels +0.55 / +0.45. v5's chain again on that network, from scratch, with
# σ̂ = min(σ̂_D, σ̂_S) throughout (v5 took it at the end); -irls4-joint-long's 6,000 steps left out (+0.05 / +0.02 in v3)
S4_MODEL = dict(GENERAL_MODEL, scale=4, spectral_noise=True)


def register_chain(prefix: str, model: Dict[str, Any], joint_long: int = 0, trunk: str = '',
                   stability: str = 'euclidean') -> None:
    """v5's chain of stages on the network ``model`` (and its free twin): the network from scratch (30,000 steps),
    then each stage fine-tunes the one before it on batches no stage saw, with the tails added as v5's were
    (``PREFIX``, ``-implicit``, ``-irls4``, ``-irls4-joint``, ``-bayes``, ``-bayes-joint``, ``-residual``).

    ``joint_long`` > 0: v5's longer joint fine-tune (``-irls4-joint-long``, that many steps) after ``-irls4-joint``.
    ``trunk``: a chain registered before on the same network whose stages up to ``-irls4-joint`` this one shares; only
    the stages after them are registered under ``prefix``, the first starting from the trunk's ``-irls4-joint`` run.
    ``stability='retracted'``: the steps certified by retraction; no free twin is registered (a chain on the same
    ``model`` with the default stability registered it)."""
    irls4 = dict(model, **{k: v for k, v in IRLS4_MODEL.items() if k not in GENERAL_MODEL})
    chain = [   # (suffix, model, steps, lr, loss, trainable)
        ('', model, 30000, 3e-3, 'relative_mse', ()),
        ('-implicit', dict(model, tail_steps=2), 4000, 1e-3, 'relative_mse', ()),
        ('-irls4', irls4, 3000, 3e-3, 'log_relative_mse', ('irls',)),
        ('-irls4-joint', irls4, 2500, 3e-4, 'log_relative_mse', ()),
        ('-bayes', dict(irls4, segment_select=0.12), 3000, 3e-3, 'log_relative_mse', ('segment',)),
        ('-bayes-joint', dict(irls4, segment_select=0.12), 2500, 3e-4, 'log_relative_mse', ()),
        ('-residual', dict(irls4, segment_select=0.12, residual_threshold=8.0), 0, 3e-4, 'log_relative_mse', ()),
    ]
    shared = 4      # the network, -implicit, -irls4, -irls4-joint
    if trunk and f'{trunk}-irls4-joint' not in RECIPES:
        raise ValueError(f"trunk {trunk!r} has no stage {trunk + '-irls4-joint'!r}: register_chain({trunk!r}, …) first")
    if joint_long:
        chain.insert(shared, ('-irls4-joint-long', irls4, joint_long, 3e-4, 'log_relative_mse', ()))
    source, offset = '', 0
    for i, (suffix, stage, steps, lr, loss, trainable) in enumerate(chain):
        name = (trunk if trunk and i < shared else prefix) + suffix
        if not (trunk and i < shared):
            register_general(stage, name, steps=steps, lr=lr, loss=loss, start_from=source, data_offset=offset,
                             trainable=trainable, stability=stability, twin=stability == 'euclidean')
        source, offset = f'runs/{name}/model', offset + steps


register_chain('denoiser-1d-general-s4', S4_MODEL)
# measured at stage 1 (validation, against v2 = the same stage at scale 8): +0.52 / +0.47 dB in the mean, but its free
# twin is ahead by 0.33 / 0.39 (oscillations 0.68 at σ 0.1): the certified steps end at 0.90–1.00 of the stable limit
# (v2: 0.55–0.99), the free ones at 1.7–18×. Every second step at dilation 2 reaches as far as scale 8's steps
register_chain('denoiser-1d-general-s4d2', dict(S4_MODEL, dilation=2))
# the scale-4 chain with v5's -irls4-joint-long (6,000 steps) put back, branching off its -irls4-joint run
register_chain('denoiser-1d-general-s4-long', S4_MODEL, joint_long=6000, trunk='denoiser-1d-general-s4')
# more certified steps on the 4× grid (24 instead of 16: 1.5× the diffusion time, about 140k parameters): does the twin
# gap close where the certified steps end at their limit (docs/denoiser.md, "What the certificate costs")? No: the
# network stage is +0.07 / +0.09 over 16 steps and 0.26 / 0.30 behind their free twin (later stages not run)
register_chain('denoiser-1d-general-s4b24', dict(S4_MODEL, blocks=24), joint_long=6000)
# the scale-4 chain with its steps certified by retraction instead of by τ ≤ 2/(L·B²): any τ, each step's output
# scaled to at most its input's norm (the same promise ‖step(z)‖ ≤ ‖z‖). At the short budget (3 seeds) +0.15 / +0.15 dB
# over the certified steps, where the free twin is +0.20 / +0.20 (benchmarks/bench_certificate_cost.py). Its free twin
# is denoiser-1d-general-s4's (the same model, stability='none'). The whole chain, test split: +2.94 / +2.28 over the
# best peer, its free twin within 0.073 dB in every family (256 paired signals; docs/denoiser.md, "Certified by
# retraction")
register_chain('denoiser-1d-general-s4r', S4_MODEL, joint_long=6000, stability='retracted')
