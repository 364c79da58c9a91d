"""A blind, affine-equivariant 1D denoiser: any offset, any scale, any length, the noise estimated.

For a signal f (one row of ``[B, 1, n]``) the wrapper :class:`BlindDenoiser1D` computes

    σ̂(f) = 1.4826 · median_t |(h ∗ f)_t − median(h ∗ f)|,   h = (1, −3, 3, −1)/√20,
    c(f) = median_t f_t,
    D(f) = c + σ̂ · N((f − c)/σ̂)        (f itself where σ̂ = 0),

with N a certified diffusion network on reflect-padded input. h has unit norm, so for white noise of
standard deviation σ, h ∗ noise has standard deviation σ, and 1.4826 = 1/Φ⁻¹(3/4) turns the median
absolute deviation into σ (the finest-scale MAD estimate of Donoho & Johnstone, with a third-order
difference instead of the Haar wavelet: it annihilates quadratics, so smooth trends and oscillations
inflate σ̂ far less than with first differences; see tests/test_blind.py and docs/denoiser.md). With
``spectral_noise`` σ̂ is the smaller of this and a spectral estimate (:func:`spectral_noise_sigma`, the median
power of a short-time Fourier transform), which oscillations near Nyquist do not inflate.

Affine equivariance. σ̂(a·f + b) = a·σ̂(f) (h sums to zero, the MAD is positively homogeneous) and
c(a·f + b) = a·c(f) + b for a > 0, so (a·f + b − c(a·f + b))/σ̂(a·f + b) = (f − c(f))/σ̂(f): N sees
the same input, and D(a·f + b) = a·D(f) + b up to rounding. N works in units of the noise: its
fluxes' contrasts are multiples of σ̂, which is what a Perona–Malik threshold should be.

Scales. Normalisation and de-normalisation run in the input's dtype, so the only limits are the
dtype's own (:func:`scale_limits`): σ̂ must be a normal number (≥ ``finfo.tiny``, else u = (f − c)/σ̂
loses digits) and max |f| ≤ ``finfo.max``/16 (h∗f, f − c and c + σ̂·v stay finite). In float64 that is
σ̂ ≥ 2.2e-308 and |f| ≤ 1.1e307: traces at 1e-30 or 1e30 denoise exactly like the same trace at 1.

Edges. N sees the normalised signal extended by ``pad`` samples of even (whole-sample) reflection on
each side (at most n − 1, and at least what N's minimum length needs), and the output is cropped.

Schemes of N (``scheme``), each with its certified form (``stability='euclidean'``) and its free-step
twin (``stability='none'``: the same skeleton, parameters and operator applications, no bound on τ):

* ``'explicit'`` — :class:`~pdeblocks.models.denoise1d.Denoiser1D`: ``blocks`` symmetric steps
  u − τKᵀΦ(Ku) (τ ≤ 2/(L B²)) between a pixel-unshuffle by ``scale`` and its inverse.
* ``'fed'`` — the same skeleton with ``blocks`` FED cycles of ``steps`` lagged steps
  (:class:`~pdeblocks.layers.fed.FEDCycle`: time τ_max(n² + n)/3 per cycle, ‖cycle(u)‖ ≤ ‖u‖).
* ``'fsi'`` — as ``'fed'`` with :class:`~pdeblocks.layers.fed.FSIBlock` (lagged, every state bounded).
* ``'implicit'`` — ``blocks`` lagged implicit steps (I + τKᵀGK)u = u⁰ (:class:`~pdeblocks.layers.
  implicit.ImplicitBlock`, τ starting at ``relative_step`` × the explicit limit, at most ``steps``
  Chebyshev iterations, stopping at relative residual 0.05: ‖u‖ ≤ ‖u⁰‖ after any number).
* ``'multigrid'`` — f − S⁻¹U(Sf), U a :class:`~pdeblocks.layers.multigrid.MultigridUNet` V-cycle of
  symmetric steps on ``levels`` grids of widths channels·growth^l, S the unshuffle by ``scale``.

The free twin of a cycle (``'fed'``, ``'fsi'``, ``'implicit'``) is one free symmetric step applied
``steps`` times with its weights shared (:class:`RepeatedStep`): the same K and flux, the same number
of K/Kᵀ pairs, τ unconstrained, the flux re-evaluated at every step.
"""
import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._native import native_library, run_ranges, split_ranges
from ..layers.fed import FEDCycle, FSIBlock
from ..layers.flux import LearnedFlux
from ..layers.implicit import ImplicitBlock
from ..layers.multigrid import MultigridUNet
from ..layers.symmetric import SymmetricResidual
from ..ops.segmentation import segment_posterior_mean
from ..ops.spectral import spectral_shrink
from ..ops.stencils import first_difference
from ..ops.tridiagonal import implicit_diffusion_step
from ..stability import Certificate
from .denoise1d import Denoiser1D, Pretrained1D, _shuffle, _Skeleton1D, _unshuffle

__all__ = ['NOISE_FILTER', 'MAD_TO_SIGMA', 'SCHEMES', 'scale_limits', 'noise_sigma', 'spectral_noise_sigma', 'median_last', 'RepeatedStep',
           'ImplicitTail1D', 'IRLSTail1D', 'BayesSegmentTail1D', 'ResidualShrinkTail1D', 'irls_weights', 'BlindDenoiser1D', 'DenoiseResult', 'denoise_signal', 'denoise_signals', 'check_signal_1d',
           'check_finite_scale', 'check_noise_level']

NOISE_FILTER = (1.0 / math.sqrt(20.0), -3.0 / math.sqrt(20.0), 3.0 / math.sqrt(20.0), -1.0 / math.sqrt(20.0))
MAD_TO_SIGMA = 1.482602218505602          # 1/Φ⁻¹(3/4): MAD → σ for Gaussian samples
SCHEMES = ('explicit', 'fed', 'fsi', 'implicit', 'multigrid')
MIN_LENGTH = 16                           # shortest signal: σ̂ rests on n − 3 filtered samples
NOISE_FRAME = 64                          # the spectral σ̂'s frame (hop 32)


def noise_sigma(f: torch.Tensor, spectral: bool = False) -> torch.Tensor:
    """σ̂ per signal, ``[B, 1, n]`` → ``[B, 1, 1]``: σ̂_D = 1.4826·median|h∗f − median(h∗f)|, h = (1, −3, 3, −1)/√20;
    with ``spectral``, min(σ̂_D, σ̂_S) (:func:`spectral_noise_sigma`; σ̂_D alone for n < 64).

    σ̂_D is unbiased for white Gaussian noise on a signal that is locally quadratic, and 0 for a constant (or a
    noise-free piecewise-quadratic) signal; it needs n ≥ 4. Oscillations near Nyquist pass h with gain up to
    8/√20 and inflate it (1.9 σ on the classic QuadChirp); σ̂_S is not fooled by them but by dense jumps, so each
    estimate, too large where its assumption fails, bounds the other.
    """
    # h∗f as differences: (f_t − f_{t+3} + 3(f_{t+2} − f_{t+1}))/√20, 8× faster than conv1d's single channel
    d = (f[..., :-3] - f[..., 3:] + 3.0 * (f[..., 2:-1] - f[..., 1:-2])) * NOISE_FILTER[0]
    dev = (d - median_last(d)).abs()
    sigma = MAD_TO_SIGMA * median_last(dev)
    if spectral and f.shape[-1] >= NOISE_FRAME:
        sigma = torch.minimum(sigma, spectral_noise_sigma(f))
    return sigma


def spectral_noise_sigma(f: torch.Tensor) -> torch.Tensor:
    """σ̂_S per signal, ``[B, 1, n]`` (n ≥ 64) → ``[B, 1, 1]``: √(median_{m,k} |X_{m,k}|² / ln 2), with
    X_{m,k} = Σ_t w_t f_{32m+t} e^{−2πikt/64} the short-time Fourier transform of the whole frames under the
    periodic Hann window w of 64 samples scaled to ‖w‖ = 1, over the bins k = 2 … 30.

    For white noise of standard deviation σ each |X_{m,k}|²/σ² there is exponential with mean 1 (w² has no
    frequency beyond two bins, so the real and imaginary parts are independent, of variance σ²/2 each), whose
    median is ln 2. A constant's transform lies in bins 0 and 1, so σ̂_S(a·f + b) = a·σ̂_S(f) for a > 0. f is centred
    on its median and divided by its largest deviation first, so that a large offset adds no rounding, a constant
    gives 0, and the squares neither underflow nor overflow at any scale the dtype holds (:func:`scale_limits`). A
    signal sparse in time and frequency (tones, chirps, smooth trends) leaves most of the bins to the noise.
    """
    w = torch.hann_window(NOISE_FRAME, periodic=True, dtype=f.dtype, device=f.device)
    centred = f - median_last(f)
    size = centred.abs().amax(-1, keepdim=True)
    unit = torch.where(size > 0, size, torch.ones_like(size))
    frames = (centred / unit).unfold(-1, NOISE_FRAME, NOISE_FRAME // 2) * (w / w.norm())
    power = torch.fft.rfft(frames, dim=-1)[..., 2:NOISE_FRAME // 2 - 1].abs().square()
    return unit * (median_last(power.flatten(2)) / math.log(2.0)).sqrt()


def median_last(x: torch.Tensor) -> torch.Tensor:
    """The median over the last axis, keepdim, as ``x.median(dim=-1, keepdim=True).values``: the lower median, the
    element of rank ⌊(n − 1)/2⌋; NaN where a row holds one. On CPU in float32 / float64 without autograd by numpy's
    introselect (``np.partition``), the same value 3.5× faster than torch's (96 rows of 4093, one thread)."""
    if x.device.type != 'cpu' or x.dtype not in (torch.float32, torch.float64) or x.shape[-1] == 0 or \
            (torch.is_grad_enabled() and x.requires_grad):
        return x.median(dim=-1, keepdim=True).values
    k = (x.shape[-1] - 1) // 2
    value = torch.from_numpy(np.partition(x.detach().numpy(), k, axis=-1)[..., k:k + 1])
    nan = torch.isnan(x.sum(-1, keepdim=True))          # a NaN sample makes the sum NaN (so may ∞ − ∞: checked)
    if bool(nan.any()):
        value = torch.where(torch.isnan(x).any(-1, keepdim=True), torch.full_like(value, float('nan')), value)
    return value


class RepeatedStep(nn.Module):
    """u ↦ S^m(u): one step module S applied ``repeats`` = m times with shared weights (the free twin of a cycle)."""

    def __init__(self, step: nn.Module, repeats: int):
        super().__init__()
        if not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be an int ≥ 1, got {repeats!r}")
        self.step = step
        self.repeats = repeats

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        for _ in range(self.repeats):
            u = self.step(u)
        return u


class SchemeSkeleton1D(_Skeleton1D):
    """unshuffle → lift → ``blocks`` cycles of a scheme (or their free twins) → project the change → shuffle."""

    architecture = 'scheme_skeleton_1d'

    def __init__(self, scheme: str = 'fed', stability: str = 'euclidean', scale: int = 8, channels: int = 32,
                 hidden_channels: int = 32, blocks: int = 4, kernel_size: int = 5, knots: int = 16,
                 contrast: float = 1.0, support: float = 4.0, steps: int = 4, relative_step: float = 4.0,
                 interp_slack: float = 1.005):
        super().__init__()
        self.build_skeleton(scale, channels, kernel_size)

        def flux() -> LearnedFlux:
            return LearnedFlux(hidden_channels, contrast=contrast, knots=knots, support=support)

        common = dict(kernel_size=kernel_size, dim=1, boundary='neumann', interp_slack=interp_slack)
        layers = []
        for _ in range(blocks):
            if stability == 'none':
                layers.append(RepeatedStep(SymmetricResidual(channels, hidden_channels, flux=flux(), stability='none',
                                                             **common), steps))
            elif scheme == 'fed':
                layers.append(FEDCycle(channels, hidden_channels, flux=flux(), steps=steps, **common))
            elif scheme == 'fsi':
                layers.append(FSIBlock(channels, hidden_channels, flux=flux(), steps=steps, **common))
            else:
                layers.append(ImplicitBlock(channels, hidden_channels, flux=flux(), relative_step=relative_step,
                                            max_iterations=steps, tol=0.05, **common))
        self.blocks = nn.ModuleList(layers)


def refinement(stability: str, cycles: int, steps: int, channels: int, knots: int, contrast: float, support: float,
               interp_slack: float) -> nn.Module:
    """The full-resolution stage after N: ``cycles`` FED cycles of ``steps`` lagged steps
    u ← u − τᵢKᵀ(G ⊙ Ku), K a 3-tap filter bank 1 → ``channels``, G = g(Ku⁰) a learned flux (time τ_max(n² + n)/3
    per cycle, ‖cycle(u)‖ ≤ ‖u‖). N works on the unshuffled grid (8 samples per position); this stage is
    edge-preserving diffusion on the samples themselves, Perona–Malik with a learned diffusivity. The free twin
    (``stability='none'``) is one free step repeated cycles·steps times."""
    # step_init 0.01: the stage starts near the identity, so that N trains as without it
    common = dict(kernel_size=3, dim=1, boundary='neumann', interp_slack=interp_slack, step_init=0.01)
    flux = LearnedFlux(channels, contrast=contrast, knots=knots, support=support)
    if stability == 'none':
        return RepeatedStep(SymmetricResidual(1, channels, flux=flux, stability='none', **common), cycles * steps)
    return FEDCycle(1, channels, flux=flux, steps=steps, cycles=cycles, **common)


def _native_edge_weights(w: torch.Tensor, contrast: torch.Tensor, *requiring: torch.Tensor) -> Optional[Tuple]:
    """(library, w, λ per row, rows, n, ranges) for the C kernels of the tails' edge weights (:mod:`pdeblocks._native`,
    item 6), or None where they do not apply: autograd wanted (``w``, ``contrast`` or any of ``requiring``), not CPU
    float64, or no compiler. λ (``contrast``) is one per signal, broadcast as [..., 1]."""
    lib = native_library()
    if lib is None or w.device.type != 'cpu' or w.dtype != torch.float64 or contrast.dtype != torch.float64 \
            or w.shape[-1] < 2 or torch.broadcast_shapes(contrast.shape, w.shape[:-1] + (1,)) != w.shape[:-1] + (1,):
        return None
    if torch.is_grad_enabled() and any(t.requires_grad for t in (w, contrast) + requiring):
        return None
    n = w.shape[-1]
    rows = w.numel() // n
    lam = contrast.expand(w.shape[:-1] + (1,)).contiguous()
    return lib, w.contiguous(), lam, rows, n, split_ranges(rows, torch.get_num_threads())


def _native_lag_features(v: torch.Tensor, u: torch.Tensor, lags: Tuple[int, ...]) -> Optional[torch.Tensor]:
    """:meth:`ImplicitTail1D.features` by the C kernel (:mod:`pdeblocks._native`, item 6), or None where it does not
    apply: autograd wanted, not CPU float32 / float64 ``[B, 1, n]`` pairs of one dtype, n < 2, or no compiler."""
    lib = native_library()
    if lib is None or v.device.type != 'cpu' or v.dtype not in (torch.float32, torch.float64) or u.dtype != v.dtype \
            or v.dim() != 3 or v.shape[1] != 1 or u.shape != v.shape or v.shape[-1] < 2:
        return None
    if torch.is_grad_enabled() and (v.requires_grad or u.requires_grad):
        return None
    v, u = v.contiguous(), u.contiguous()
    rows, n = v.shape[0], v.shape[-1]
    lag = torch.tensor(lags, dtype=torch.int64)
    out = torch.empty(rows, 4 * len(lags), dtype=v.dtype)
    fn = lib.tail_lag_features_f32 if v.dtype == torch.float32 else lib.tail_lag_features_f64
    run_ranges(lambda r0, r1: fn(v.data_ptr(), u.data_ptr(), lag.data_ptr(), out.data_ptr(), n, len(lags), r0, r1),
               split_ranges(rows, torch.get_num_threads()))
    return out


def irls_weights(w: torch.Tensor, contrast: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """ω = (1 + s²)^(−q), s = Dw/λ (D the forward difference): :class:`IRLSTail1D`'s edge weights, ``w`` [..., n] →
    [..., n − 1], ``contrast`` λ [..., 1], ``q`` a 0-d tensor. Without autograd on CPU in float64 one pass of the C
    kernel (exp(−q·log(1 + s²)) by fdlibm's log and exp, within a few ulp of torch's pow), else torch ops."""
    native = _native_edge_weights(w, contrast, q)
    if native is None:
        s = first_difference(w) / contrast
        return (1.0 + s * s).pow(-q)
    lib, w, lam, rows, n, ranges = native
    q = q.to(torch.float64).reshape(1).contiguous()
    out = torch.empty(w.shape[:-1] + (n - 1,), dtype=torch.float64)
    run_ranges(lambda r0, r1: lib.tail_irls_weights(w.data_ptr(), lam.data_ptr(), q.data_ptr(), out.data_ptr(),
                                                     n, r0, r1), ranges)
    return out


def _gate_settings(tail: nn.Module, steps: int, hidden: int, lags: Tuple[int, ...], tau_init: float,
                   contrast_init: float, gain: float, tau_max: float) -> None:
    """Check and store the settings a tail's per-signal gate shares (:class:`ImplicitTail1D`, :class:`IRLSTail1D`):
    ``steps``, ``lags`` and, in logarithms, τ₀, λ₀ and τ_max of the gate τ = τ₀·e^{gain·h₀} ≤ τ_max, λ = λ₀·e^{gain·h₁/4}."""
    if steps < 1 or hidden < 1 or not lags or min(lags) < 1:
        raise ValueError(f"need steps ≥ 1, hidden ≥ 1 and lags ≥ 1; got steps={steps}, hidden={hidden}, "
                         f"lags={lags}")
    if not (tau_init > 0 and contrast_init > 0 and tau_max >= tau_init and gain > 0):
        raise ValueError(f"need 0 < tau_init ≤ tau_max, contrast_init > 0 and gain > 0; got {tau_init}, "
                         f"{tau_max}, {contrast_init}, {gain}")
    tail.steps = steps
    tail.lags = tuple(int(lag) for lag in lags)
    tail.log_tau0 = math.log(tau_init)
    tail.log_contrast0 = math.log(contrast_init)
    tail.log_tau_max = math.log(tau_max)
    tail.tau_max = float(tau_max)
    tail.gain = float(gain)


class ImplicitTail1D(nn.Module):
    """The semi-implicit full-resolution tail: ``steps`` lagged-diffusivity steps, exact, with a learned gate.

    For the network's output v (one signal, in units of σ̂) and per signal a diffusion time τ ≥ 0 and contrast
    λ > 0 from the gate, each step solves

        (I + τ Dᵀ diag(g(Dv/λ)) D) v⁺ = v,     then v ← v⁺,

    D the (n − 1) × n forward difference (the fixed 2-tap stencil, no flux across the ends) and g ∈ [0, 1] a
    learned diffusivity (:class:`~pdeblocks.layers.flux.LearnedFlux`'s g, one channel, knots over |s|/λ ∈ [0,
    ``support``], started on exp(−(s/λ)²): near 0 across a jump, so a long time segments instead of blurring).
    The tridiagonal system is solved exactly (:func:`~pdeblocks.ops.tridiagonal.implicit_diffusion_step`,
    cyclic reduction in float64), so every step satisfies, for every τ ≥ 0 and any weights,
    ‖v⁺‖₂ ≤ ‖v‖₂, min v ≤ v⁺ ≤ max v and mean v⁺ = mean v; τ = 0 is the identity.

    The gate: features of v (and of the normalised input u) pooled over the signal — for lags ℓ ∈ ``lags``,
    with δ = v_{t+ℓ} − v_t: log mean|δ|, log rms δ and mean log(|δ| + 10⁻³) (their gaps measure how sparse the
    differences are: piecewise constant signals have few large ones, trends and oscillations many small ones),
    and log rms of u's lag differences — into a two-layer perceptron whose last layer starts at zero:
    log τ = log ``tau_init`` + ``gain``·h₀ (clamped to [e⁻³⁰, ``tau_max``]), log λ = log ``contrast_init`` +
    ``gain``/4·h₁. ``gain`` makes a diffusion time of 10³ reachable in a few hundred Adam steps. The gate is learned
    from data: it sees the signal, never a family label.

    With ``edge_channels`` > 0 each edge's diffusivity is further multiplied by a learned stop sigmoid(e_i) ∈ (0, 1),
    e = a two-layer convolution of (v, u) (width ``edge_width``, then 2 taps onto the edges): an edge detector wider
    than one difference (a jump the network spread over several samples has small first differences), as the
    regularised diffusivity g(|∇u_σ|) of Catté et al. Any weights ≥ 0 keep the guarantees above.

    With ``mix`` the first step's right-hand side is (1 − β)v + βu, β ∈ (0, 1) per signal from the gate (a third
    output; 0.02 at start): the diffusion may average the noisy samples themselves within the segments its edges
    close, rather than the network's estimate of them. The guarantees then hold from that convex combination:
    ‖f‖ ≤ max(‖v‖, ‖u‖) and min(v, u) ≤ f ≤ max(v, u).
    """

    def __init__(self, steps: int = 2, knots: int = 16, support: float = 4.0, hidden: int = 32,
                 lags: Tuple[int, ...] = (1, 4, 16, 64), tau_init: float = 0.1, contrast_init: float = 1.0,
                 gain: float = 8.0, tau_max: float = 1e6, edge_channels: int = 0, edge_width: int = 9,
                 mix: bool = False):
        super().__init__()
        if edge_channels < 0 or edge_width < 1 or edge_width % 2 == 0:
            raise ValueError(f"need edge_channels ≥ 0 and an odd edge_width ≥ 1; got {edge_channels}, {edge_width}")
        _gate_settings(self, steps, hidden, lags, tau_init, contrast_init, gain, tau_max)
        self.diffusivity = LearnedFlux(1, contrast=1.0, knots=knots, support=support)
        with torch.no_grad():   # start on exp(−x²): a jump of a few λ stops the flow
            x = torch.arange(knots, dtype=torch.float32) * self.diffusivity.spacing
            g0 = torch.exp(-x ** 2).clamp(1e-6, 1 - 1e-4)
            self.diffusivity.knot_logits.copy_((torch.log(g0) - torch.log1p(-g0))[None])
        self.mix = bool(mix)
        self.gate = nn.Sequential(nn.Linear(4 * len(self.lags), hidden), nn.GELU(), nn.Linear(hidden, 3 if mix else 2))
        with torch.no_grad():
            self.gate[2].weight.zero_()
            self.gate[2].bias.zero_()
        # the learned edge stop: a factor sigmoid(e_i) ∈ (0, 1) on every edge's diffusivity, e from a small
        # convolution of (v, u); it starts at 0.88 everywhere (last layer zero, bias 2: not saturated)
        self.edges: Optional[nn.Module] = None
        if edge_channels:
            self.edges = nn.Sequential(nn.Conv1d(2, edge_channels, edge_width, padding=edge_width // 2), nn.GELU(),
                                       nn.Conv1d(edge_channels, 1, 2))
            with torch.no_grad():
                self.edges[2].weight.zero_()
                self.edges[2].bias.fill_(2.0)

    def features(self, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``[B, 1, n]`` twice → ``[B, 4·len(lags)]`` pooled, scale-aware features (class docstring). Without autograd
        on CPU one C pass per lag (sums in float64: the same features to float32 rounding), else torch ops."""
        native = _native_lag_features(v, u, self.lags)
        if native is not None:
            return native
        n = v.shape[-1]
        out = []
        for lag in self.lags:
            k = min(lag, n - 1)
            d = (v[..., k:] - v[..., :-k]).flatten(1)
            e = (u[..., k:] - u[..., :-k]).flatten(1)
            a = d.abs()
            out += [(a.mean(1) + 1e-3).log(), (d.pow(2).mean(1) + 1e-6).log() / 2, (a + 1e-3).log().mean(1),
                    (e.pow(2).mean(1) + 1e-6).log() / 2]
        return torch.stack(out, 1)

    def gate_values(self, v: torch.Tensor, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor,
                                                                   Optional[torch.Tensor]]:
        """(τ, λ, β), each ``[B, 1, 1]``, from one pass of the gate: the diffusion time, the contrast and (``mix``;
        else None) the share β ∈ (0, 1) of the input u in the first step's right-hand side (sigmoid, 0.02 at start)."""
        return self.gate_from_features(self.features(v, u))

    def gate_from_features(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """:meth:`gate_values` from the pooled features ``[B, 4·len(lags)]`` of :meth:`features`."""
        h = self.gate(features)
        log_tau = (self.log_tau0 + self.gain * h[:, 0]).clamp(-30.0, self.log_tau_max)
        log_contrast = self.log_contrast0 + self.gain / 4 * h[:, 1]
        beta = torch.sigmoid(self.gain / 4 * h[:, 2] - math.log(49.0))[:, None, None] if self.mix else None
        return log_tau.exp()[:, None, None], log_contrast.exp()[:, None, None], beta

    def parameters_per_signal(self, v: torch.Tensor, u: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(τ, λ), each ``[B, 1, 1]``: the gate's diffusion time and contrast for each signal."""
        tau, contrast, _ = self.gate_values(v, u)
        return tau, contrast

    def mixture(self, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """β ∈ (0, 1) per signal, ``[B, 1, 1]`` (``mix`` only; :meth:`gate_values`)."""
        if not self.mix:
            raise ValueError("mixture() needs an ImplicitTail1D built with mix=True, got mix=False")
        return self.gate_values(v, u)[2]

    def forward(self, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        tau, contrast, beta = self.gate_values(v, u)    # the gate runs once
        stop = None if self.edges is None else torch.sigmoid(self.edges(torch.cat([v, u], 1))).to(torch.float64)
        w = v.to(torch.float64)
        if beta is not None:   # a convex combination: its norm ≤ max(‖v‖, ‖u‖), its range within theirs
            w = w + beta.to(torch.float64) * (u.to(torch.float64) - w)
        tau, contrast = tau.to(torch.float64), contrast.to(torch.float64)
        for _ in range(self.steps):
            g = self.edge_diffusivity(w, contrast)
            w = implicit_diffusion_step(w, g if stop is None else g * stop, tau)
        return w.to(v.dtype)

    def edge_diffusivity(self, w: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
        """g(Dw/λ) on the edges, ``w`` [..., n] → [..., n − 1] (:meth:`LearnedFlux.diffusivity_values`); without
        autograd on CPU in float64 one pass of the C kernel, the same values bit for bit."""
        native = _native_edge_weights(w, contrast, self.diffusivity.knot_logits)
        if native is None or self.diffusivity.knot_logits.shape[0] != 1:
            return self.diffusivity.diffusivity_values(first_difference(w) / contrast)
        lib, w, lam, rows, n, ranges = native
        values = self.diffusivity.knot_values(torch.float64)          # [1, K]
        slopes = torch.diff(values, dim=1).contiguous()
        values = values.contiguous()
        params = torch.tensor([1.0 / self.diffusivity.spacing], dtype=torch.float64)
        out = torch.empty(w.shape[:-1] + (n - 1,), dtype=torch.float64)
        run_ranges(lambda r0, r1: lib.tail_knot_weights(w.data_ptr(), lam.data_ptr(), values.data_ptr(),
                                                         slopes.data_ptr(), params.data_ptr(), out.data_ptr(), n,
                                                         values.shape[1], r0, r1), ranges)
        return out

    @torch.jit.unused
    def stability_certificate(self) -> Certificate:
        """Unconditional: every step is an exact solve of an SPD M-matrix system, ‖v⁺‖ ≤ ‖v‖ and the max–min
        principle for every τ ≥ 0 (τ ≤ ``tau_max`` is the gate's clamp, not a stability limit)."""
        return Certificate(mode='implicit-tridiagonal', step_size=self.tau_max, norm_bound=2.0,
                           sector_bound=self.diffusivity.sector_bound, norm_factor=1.0, lipschitz=None,
                           guarantee=f'‖f(u)‖ ≤ ‖u‖ and min u ≤ f(u) ≤ max u for every τ ≥ 0 ({self.steps} exact '
                                     f'tridiagonal solves of (I + τDᵀg(Du)D)u⁺ = u, g ∈ [0, 1]; τ per signal from '
                                     f'the gate, at most {self.tau_max:g}'
                                     + ('; u the convex mixture (1 − β)v + βu⁰ of the network output and its input'
                                        if self.mix else '') + ')', passes='all')

    def extra_repr(self) -> str:
        return f"steps={self.steps}, lags={self.lags}, tau_max={self.tau_max:g}, gain={self.gain:g}, mix={self.mix}"


RESIDUAL_LAGS = (1, 2, 4, 8)


def residual_features(u: torch.Tensor, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``[B, 1, n]`` × 3 → ``[B, 2·len(RESIDUAL_LAGS) + 3]``: for the residuals e = u − w (of a tail's segmentation)
    and e⁰ = u − v (of the network's estimate), the autocorrelations √n·Σ eₜeₜ₊ₖ / Σ eₜ² at the lags k (about N(0, 1)
    for white residuals), and log mean e², log mean e⁰², log mean (w − v)². White residuals (autocorrelations ≈ 0,
    mean square ≈ 1 in units of σ̂) say the segmentation explains the signal; structure left in e says it does not."""
    out = []
    e, e0 = (u - w).flatten(1), (u - v).flatten(1)
    root_n = math.sqrt(e.shape[1])
    for r in (e, e0):
        energy = r.pow(2).sum(1) + 1e-6
        for lag in RESIDUAL_LAGS:
            k = min(lag, r.shape[1] - 1)
            out.append(root_n * (r[:, k:] * r[:, :-k]).sum(1) / energy)
    out += [(e.pow(2).mean(1) + 1e-6).log(), (e0.pow(2).mean(1) + 1e-6).log(),
            ((w - v).flatten(1).pow(2).mean(1) + 1e-6).log()]
    return torch.stack(out, 1)


def selector(lag_count: int, hidden: int, select_init: float, extra: int = 0) -> nn.Sequential:
    """The perceptron of a tail's selector: the gate's 4·``lag_count`` features, :func:`residual_features` and
    ``extra`` more → one logit; its last layer zero at start, so the logit is logit(``select_init``) for every signal."""
    net = nn.Sequential(nn.Linear(4 * lag_count + 2 * len(RESIDUAL_LAGS) + 3 + extra, hidden), nn.GELU(),
                        nn.Linear(hidden, 1))
    with torch.no_grad():
        net[2].weight.zero_()
        net[2].bias.fill_(math.log(select_init / (1.0 - select_init)))
    return net


def blend(v: torch.Tensor, w: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
    """v + γ(w − v), γ = sigmoid(``logit``) ∈ (0, 1) per signal (``logit`` [B, 1]): within v and w."""
    return v + torch.sigmoid(logit)[:, :, None] * (w - v)


class IRLSTail1D(nn.Module):
    """The variational tail: ``steps`` iteratively reweighted least-squares (IRLS) steps for a robust penalty, exact.

    For the network's output v and the normalised input u (one signal, in units of σ̂) and per signal τ ≥ 0,
    λ > 0 and β ∈ (0, 1) from a gate, with the data r = (1 − β)v + βu fixed and w⁰ = v, each step solves

        (I + τ Dᵀ diag(ω(Dwᵏ/λ)) D) wᵏ⁺¹ = r,     ω(s) = (1 + s²)^(−q),  q = 2·sigmoid(θ) ∈ (0, 2) learned,

    D the (n − 1) × n forward difference. This is IRLS (a majorise–minimise iteration: ρ is concave in s²) for

        min_w ½‖w − r‖² + (τλ²/2) Σᵢ ρ_q((Dw)ᵢ/λ),   ρ_q(s) = ((1 + s²)^(1−q) − 1)/(1 − q)   (q = 1: log(1 + s²)),

    a penalised least squares whose penalty grows like λ² log|s| (q = 1) across a jump s ≫ λ and like s²/2 within
    a segment: with λ ≪ 1 and τλ² ≈ 1 it segments (a jump costs about τλ² log(s/λ)), so on piecewise constant
    signals it averages the noisy samples between the jumps — what tuned Perona–Malik reaches with λ ≈ 0.01σ
    after T ≈ 10⁴. Unlike the lagged diffusion of :class:`ImplicitTail1D` (right-hand side = the last iterate),
    the right-hand side stays the data r, so a large τ does not merge segments by running longer; the jumps are
    re-located at every step from the current iterate, starting from the network's estimate v.

    Every step is an exact solve (:func:`~pdeblocks.ops.tridiagonal.implicit_diffusion_step`) of an SPD
    M-matrix system with rows summing to 1, so for every τ ≥ 0 and any weights the output is a convex
    combination of r's samples: ‖f‖₂ ≤ ‖r‖₂ ≤ max(‖v‖₂, ‖u‖₂), min(v, u) ≤ f ≤ max(v, u), mean f = mean r.

    The gate is :class:`ImplicitTail1D`'s (the same pooled lag-difference features of v and u, a two-layer
    perceptron with its last layer zero at start): log τ = log ``tau_init`` + ``gain``·h₀ (clamped to
    [e⁻³⁰, ``tau_max``]), log λ = log ``contrast_init`` + ``gain``/4·h₁, β = sigmoid(``gain``/4·h₂ − log 49)
    (``mix_init`` at start). The defaults start near the identity (β = 0.02, τλ² = 0.0025); started there, the gate
    stays there (measured: any β > 0 adds noise to the other families first), so a fine-tune starts it where
    segmentation pays (β ≈ 0.9, λ = 0.01, τλ² ≈ 1) and lets the gate learn to switch it off.

    With ``select`` the output is v + γ(w − v), γ ∈ (0, 1) per signal (``select_init`` at start) from a second
    perceptron on the gate's features and on statistics of the residuals e = u − w and e⁰ = u − v
    (:func:`residual_features`: autocorrelations, mean squares): a model-selection test — on a piecewise constant
    signal the segmentation leaves white noise of variance ≈ 1, on any other it leaves structure. Where γ → 0 the
    gate's τ, λ, β get no gradient, so they are shaped by the signals the segmentation fits. Still a convex
    combination of v and w: the guarantees above hold unchanged.
    """

    features = ImplicitTail1D.features
    gate_values = ImplicitTail1D.gate_values
    gate_from_features = ImplicitTail1D.gate_from_features

    def __init__(self, steps: int = 3, hidden: int = 32, lags: Tuple[int, ...] = (1, 4, 16, 64),
                 tau_init: float = 1.0, contrast_init: float = 0.05, gain: float = 8.0, tau_max: float = 1e6,
                 mix_init: float = 0.02, select: bool = False, select_init: float = 0.5, exponent_init: float = 1.0):
        super().__init__()
        if not 0.0 < exponent_init < 2.0:
            raise ValueError(f"need the penalty's exponent at start 0 < exponent_init < 2, got {exponent_init}")
        if not (0.0 < mix_init < 1.0 and 0.0 < select_init < 1.0):
            raise ValueError(f"need 0 < mix_init < 1 and 0 < select_init < 1, got {mix_init}, {select_init}")
        _gate_settings(self, steps, hidden, lags, tau_init, contrast_init, gain, tau_max)
        self.mix = True
        # q = 2·sigmoid(θ), ``exponent_init`` at start (1: the log penalty)
        self.exponent_logit = nn.Parameter(torch.tensor(math.log(exponent_init / (2.0 - exponent_init))))
        self.gate = nn.Sequential(nn.Linear(4 * len(self.lags), hidden), nn.GELU(), nn.Linear(hidden, 3))
        with torch.no_grad():
            self.gate[2].weight.zero_()
            self.gate[2].bias.zero_()
            # β = sigmoid(gain/4·h₂ − log 49) = mix_init at start
            self.gate[2].bias[2] = (math.log(mix_init / (1.0 - mix_init)) + math.log(49.0)) / (self.gain / 4)
        # the selector: γ ∈ (0, 1) per signal from the residuals' statistics (a model-selection test)
        self.selector: Optional[nn.Module] = selector(len(self.lags), hidden, select_init) if select else None

    def exponent(self) -> torch.Tensor:
        """q ∈ (0, 2): ω(s) = (1 + s²)^(−q) (q = 1: Cauchy weights, the log penalty; q = ½: a smoothed TV)."""
        return 2.0 * torch.sigmoid(self.exponent_logit)

    def forward(self, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.blend(v, u)[0]

    def blend(self, v: torch.Tensor, u: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(the tail's output, the selector's logit [B, 1], None without a selector): the logit is the evidence
        that the signal is piecewise constant, which :class:`BayesSegmentTail1D` takes as an input."""
        features = self.features(v, u)                  # the gate's and the selector's
        tau, contrast, beta = self.gate_from_features(features)
        if beta is None:
            raise ValueError("IRLSTail1D's gate must give β (mix)")
        v64 = v.to(torch.float64)
        r = v64 + beta.to(torch.float64) * (u.to(torch.float64) - v64)   # convex: within v and u
        tau, contrast = tau.to(torch.float64), contrast.to(torch.float64)
        q = self.exponent().to(torch.float64)
        w = v64
        for _ in range(self.steps):
            w = implicit_diffusion_step(r, irls_weights(w, contrast, q), tau)
        if self.selector is None:
            return w.to(v.dtype), None
        w = w.to(v.dtype)
        logit = self.selector(torch.cat([features, residual_features(u, v, w)], 1))
        return blend(v, w, logit), logit

    @torch.jit.unused
    def stability_certificate(self) -> Certificate:
        """Unconditional: every step maps the fixed data r to a convex combination of its samples (an exact solve of
        an SPD M-matrix system), for every τ ≥ 0 (``tau_max`` is the gate's clamp, not a stability limit)."""
        return Certificate(mode='implicit-tridiagonal', step_size=self.tau_max, norm_bound=2.0, sector_bound=1.0,
                           norm_factor=1.0, lipschitz=None,
                           guarantee=f'‖f‖ ≤ ‖r‖ ≤ max(‖v‖, ‖u⁰‖) and min(v, u⁰) ≤ f ≤ max(v, u⁰) for every τ ≥ 0 '
                                     f'({self.steps} exact IRLS solves of (I + τDᵀω(Dw/λ)D)w⁺ = r, ω ∈ (0, 1], '
                                     f'r = (1 − β)v + βu⁰ the convex mixture of the network output and its input; '
                                     f'τ per signal from the gate, at most {self.tau_max:g})', passes='all')

    def extra_repr(self) -> str:
        return f"steps={self.steps}, lags={self.lags}, tau_max={self.tau_max:g}, gain={self.gain:g}"


class BayesSegmentTail1D(nn.Module):
    """The Bayesian segmentation tail: w = E[s | u], s piecewise constant, u the input; a selector blends it in.

    For the normalised input u (units of σ̂, so the noise level is 1) w is the posterior mean of
    :func:`~pdeblocks.ops.segmentation.segment_posterior_mean`: boundaries a Bernoulli(``hazard``) process, segments
    of at most ``max_length`` samples, levels flat over u's range; a sum over all segmentations (O(n·W)), not the one
    segmentation :class:`IRLSTail1D` finds (a MAP estimate: on today's piecewise-constant signals at σ = 0.1 the
    exact ℓ0 segmentation tuned on the answer stays at 33.8 dB, the posterior mean of this prior reaches 34.4; the
    Bayes limit under the generator's own prior is 34.68).

    The output is v + γ(w − v), γ = sigmoid(a·ℓ + g(·)) per signal: ℓ the IRLS tail's selector logit (the evidence
    that the signal is piecewise constant; 0 without one), a learned (1 at start), g a perceptron on the gate's pooled
    features of v and u, :func:`residual_features` of w and ℓ itself (its last layer zero at start: g =
    logit(``select_init``)). A selector of its own without ℓ learned no such test: trained as this one, γ stayed at
    0.02–0.15 on piecewise-constant signals, where w is 0.5 dB better. Features of where w misfits a few samples, or of
    the posterior boundary probabilities, did not make it better on peaks (docs/denoiser.md).

    w depends on the input only (no parameter), so it is computed without autograd: gradients reach the selector and,
    through (1 − γ)v, everything before; none flows from w back to the input. Certified for any weights and input:
    w = Σ_S p(S | u)·Π_S u, a convex combination over segmentations S of the orthogonal projections Π_S onto their
    piecewise constants, so ‖w‖₂ ≤ ‖u‖₂ and min u ≤ w ≤ max u, and f is a convex combination of v and w.
    """

    features = ImplicitTail1D.features

    def __init__(self, hidden: int = 32, lags: Tuple[int, ...] = (1, 4, 16, 64), hazard: float = 1 / 32,
                 max_length: int = 256, select_init: float = 0.12):
        super().__init__()
        if hidden < 1 or not lags or min(lags) < 1:
            raise ValueError(f"need hidden ≥ 1 and lags ≥ 1; got hidden={hidden}, lags={lags}")
        if not 0.0 < hazard < 1.0 or not 0.0 < select_init < 1.0:
            raise ValueError(f"need 0 < hazard < 1 and 0 < select_init < 1, got {hazard}, {select_init}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an int ≥ 1, got {max_length!r}")
        self.lags = tuple(int(lag) for lag in lags)
        self.hazard = float(hazard)
        self.max_length = max_length
        self.selector = selector(len(self.lags), hidden, select_init, extra=1)
        self.evidence_weight = nn.Parameter(torch.tensor(1.0))

    def forward(self, v: torch.Tensor, u: torch.Tensor, evidence: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``v``, ``u`` [B, 1, n]; ``evidence``: the IRLS tail's selector logit [B, 1] (None: 0)."""
        w = segment_posterior_mean(u, 1.0, self.hazard, self.max_length).to(device=v.device, dtype=v.dtype)
        if evidence is None:
            evidence = v.new_zeros(v.shape[0], 1)
        x = torch.cat([self.features(v, u), residual_features(u, v, w), evidence], 1)
        return blend(v, w, self.evidence_weight * evidence + self.selector(x))

    @torch.jit.unused
    def stability_certificate(self) -> Certificate:
        """Unconditional: w is a convex combination of projections of u⁰, f one of v and w (class docstring)."""
        return Certificate(mode='posterior-mean', step_size=float('nan'), norm_bound=None, sector_bound=None, norm_factor=1.0,
                           lipschitz=None,
                           guarantee=f'‖f‖ ≤ max(‖v‖, ‖u⁰‖) and min(v, u⁰) ≤ f ≤ max(v, u⁰) for every input and weight '
                                     f'(w = E[s | u⁰] under a product-partition prior: a convex combination of u⁰\'s '
                                     f'segment means; hazard {self.hazard:g}, segments of at most {self.max_length} '
                                     f'samples)', passes='all')

    def extra_repr(self) -> str:
        return f"hazard={self.hazard:g}, max_length={self.max_length}, lags={self.lags}"


class ResidualShrinkTail1D(nn.Module):
    """The residual tail: f = v + S(u⁰ − v), S the spectral shrinkage of :func:`~pdeblocks.ops.spectral.spectral_shrink`
    on a Parseval short-time Fourier frame of ``frame`` samples with threshold κ = ``threshold``, the noise level 1
    (u⁰ is in units of σ̂).

    What the network took for noise but stands κ times above the noise floor in some time–frequency coefficient of
    the residual is put back: a tone or chirp faster than anything the network learnt (the classic QuadChirp, which
    the network alone returned 4 dB below its noisy input), while a residual that is white noise passes almost
    nothing (a coefficient's power exceeds κ = 8 times its mean with probability e⁻⁸). No parameter. The model applies
    it after cropping the reflected padding: reflected noise is even about the edge, its coefficients exceed κ far
    more often, and on the padded signal the first 32 samples of peaks lost 0.3–0.5 dB.

    Certified for any input: f = (I − S̃)v + S̃u⁰ with S̃ = A⁺GA, 0 ≤ S̃ ≤ I, so ‖f − v‖ ≤ ‖u⁰ − v‖ and
    ‖f‖² ≤ ‖v‖² + ‖u⁰‖² (each eigencomponent of S̃ is a convex combination): norm factor √2 on max(‖v‖, ‖u⁰‖).
    """

    def __init__(self, threshold: float = 8.0, frame: int = 64):
        super().__init__()
        if not threshold > 0.0 or not math.isfinite(threshold):
            raise ValueError(f"need a finite threshold > 0, got {threshold}")
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 4 or frame % 2:
            raise ValueError(f"frame must be an even int ≥ 4, got {frame!r}")
        self.threshold = float(threshold)
        self.frame = frame

    def forward(self, v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``v`` (the output so far), ``u`` (the normalised input) ``[B, 1, n]``."""
        return v + spectral_shrink(u - v, 1.0, self.threshold, self.frame)

    @torch.jit.unused
    def stability_certificate(self) -> Certificate:
        """Unconditional: S̃ is a matrix between 0 and I (class docstring)."""
        return Certificate(mode='residual-shrinkage', step_size=float('nan'), norm_bound=None, sector_bound=None,
                           norm_factor=math.sqrt(2.0), lipschitz=None,
                           guarantee=f'‖f − v‖ ≤ ‖u⁰ − v‖ and ‖f‖² ≤ ‖v‖² + ‖u⁰‖² for every input (a power-subtraction '
                                     f'gain in [0, 1] on a Parseval frame of {self.frame} samples, threshold '
                                     f'{self.threshold:g} times the noise floor)', passes='all')

    def extra_repr(self) -> str:
        return f"threshold={self.threshold:g}, frame={self.frame}"


class MultigridResidual1D(nn.Module):
    """f ↦ f − S⁻¹U(S f): S the pixel-unshuffle by ``scale`` (the identity for 1), U a 1D :class:`MultigridUNet`
    of learned-flux symmetric steps on ``levels`` grids of widths channels·growth^l (head zero: the identity
    at start)."""

    def __init__(self, channels: int, levels: int, kernel_size: int, stability: str, interp_slack: float,
                 smooth: int, scale: int = 1, growth: int = 2):
        super().__init__()
        if scale < 1 or growth < 1:
            raise ValueError(f"need scale ≥ 1 and growth ≥ 1, got scale={scale}, growth={growth}")
        self.scale = scale
        widths = [channels * growth ** lev for lev in range(levels)]
        self.unet = MultigridUNet(dim=1, in_channels=scale, out_channels=scale, channels=widths, cycle='V',
                                  pre_smooth=smooth, post_smooth=smooth, coarse_steps=smooth, kernel_size=kernel_size,
                                  flux='learned', boundary='neumann', stability=stability, interp_slack=interp_slack)
        with torch.no_grad():
            self.unet.head.zero_()

    @property
    def min_length(self) -> int:
        return ((self.unet.min_coarse - 1) * 2 ** (self.unet.levels - 1) + 1) * self.scale

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.scale == 1:
            return f - self.unet(f)
        n = f.shape[-1]
        extra = (-n) % self.scale
        x = F.pad(f, (0, extra), mode='replicate') if extra else f
        return f - _shuffle(self.unet(_unshuffle(x, self.scale)))[..., :n]


class BlindDenoiser1D(Pretrained1D, tags=['denoising', 'blind', 'nonlinear-diffusion']):
    """D(f) = c + σ̂·N((f − c)/σ̂): blind (σ̂ from the data), affine-equivariant, any length ≥ ``min_length``.

    See the module docstring for σ̂, c, the padding and the schemes of N. Args: ``scheme`` and
    ``stability`` choose N; ``scale``, ``channels``, ``hidden_channels``, ``blocks``, ``kernel_size``,
    ``knots``, ``contrast``, ``support`` its skeleton (as :class:`Denoiser1D`); ``steps``: steps per
    cycle (``'fed'``, ``'fsi'``), Chebyshev iterations (``'implicit'``), or smoothing steps per level
    (``'multigrid'``); ``relative_step``: the implicit τ at start, in explicit limits; ``levels``:
    multigrid grids; ``growth``: multigrid width factor per level; ``pad``: reflected samples per side; ``interp_slack``: the norm bound's grid;
    ``refine_cycles`` (0: none), ``refine_steps``, ``refine_channels``: the full-resolution stage after N
    (:func:`refinement`); ``tail_steps`` (0: none), ``tail_hidden``, ``tail_tau``, ``tail_gain``, ``tail_edges``, ``tail_mix``:
    the semi-implicit tail after that (:class:`ImplicitTail1D`: steps, gate width, τ at start, the gate's gain,
    edge-stop channels, whether the input is mixed into the right-hand side); ``irls_steps`` (0: none), ``irls_tau``,
    ``irls_contrast``, ``irls_mix``, ``irls_select``: the variational tail after that (:class:`IRLSTail1D`: IRLS
    steps, τ, λ and β at start; ``irls_select`` > 0: a selector blends its result with the network's by a residual
    test, γ = ``irls_select`` at start; ``irls_exponent``: q at start; ``irls_lag_base``: the lags of its gate's
    features, the powers of this base up to 64 (4: 1, 4, 16, 64)); ``step_init``: the explicit steps' τ at start, as a
    fraction of the stable limit (:class:`~pdeblocks.layers.symmetric.SymmetricResidual`; small: steps that start near
    the identity, e.g. blocks added to a trained network); ``segment_select`` (0: none), ``segment_hazard``,
    ``segment_max_length``: the Bayesian segmentation tail after the IRLS tail (:class:`BayesSegmentTail1D`: γ at
    start where the IRLS selector is undecided, the prior's boundary probability and longest segment);
    ``spectral_noise``: σ̂ = min(σ̂_D, σ̂_S) instead of σ̂_D (:func:`noise_sigma`); ``residual_threshold`` (0: none),
    ``residual_frame``: the residual tail last (:class:`ResidualShrinkTail1D`: κ and the frame)."""

    architecture = 'blind_denoiser_1d'

    def __init__(self, scheme: str = 'fed', stability: str = 'euclidean', scale: int = 8, channels: int = 32,
                 hidden_channels: int = 32, blocks: int = 4, kernel_size: int = 5, knots: int = 16,
                 contrast: float = 1.0, support: float = 4.0, steps: int = 4, relative_step: float = 4.0,
                 levels: int = 3, growth: int = 2, pad: int = 32, interp_slack: float = 1.005,
                 refine_cycles: int = 0, refine_steps: int = 8, refine_channels: int = 4,
                 tail_steps: int = 0, tail_hidden: int = 32, tail_tau: float = 0.1, tail_gain: float = 8.0,
                 tail_edges: int = 0, tail_mix: bool = False, irls_steps: int = 0, irls_tau: float = 1.0,
                 irls_contrast: float = 0.05, irls_mix: float = 0.02, irls_select: float = 0.0,
                 irls_exponent: float = 1.0, irls_lag_base: int = 4, step_init: float = 0.5,
                 segment_select: float = 0.0, segment_hazard: float = 1 / 32, segment_max_length: int = 256,
                 spectral_noise: bool = False, residual_threshold: float = 0.0, residual_frame: int = 64):
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        if stability not in ('euclidean', 'none'):
            raise ValueError(f"stability must be 'euclidean' (certified) or 'none' (free-step twin), got {stability!r}")
        if pad < 0 or blocks < 1 or steps < 1:
            raise ValueError(f"need pad ≥ 0, blocks ≥ 1 and steps ≥ 1; got pad={pad}, blocks={blocks}, steps={steps}")
        if refine_cycles < 0 or refine_steps < 1 or refine_channels < 1:
            raise ValueError(f"need refine_cycles ≥ 0, refine_steps ≥ 1 and refine_channels ≥ 1; got "
                             f"{refine_cycles}, {refine_steps}, {refine_channels}")
        if step_init != 0.5 and scheme != 'explicit':
            raise ValueError(f"step_init sets the explicit steps' τ at start; scheme {scheme!r} has its own "
                             f"(expected scheme='explicit' or step_init=0.5, got step_init={step_init})")
        self.scheme = scheme
        self.pad = pad
        self.spectral_noise = spectral_noise
        if scheme == 'explicit':
            self.net: nn.Module = Denoiser1D(scale, channels, hidden_channels, blocks, kernel_size, knots, contrast,
                                             support, step_init=step_init, stability=stability,
                                             interp_slack=interp_slack)
        elif scheme == 'multigrid':
            self.net = MultigridResidual1D(channels, levels, kernel_size, stability, interp_slack, steps, scale, growth)
        else:
            self.net = SchemeSkeleton1D(scheme, stability, scale, channels, hidden_channels, blocks, kernel_size, knots,
                                        contrast, support, steps, relative_step, interp_slack)
        self.inner_min_length = int(self.net.min_length)
        self.refine = refinement(stability, refine_cycles, refine_steps, refine_channels, knots, contrast, support,
                                 interp_slack) if refine_cycles else None
        if tail_steps < 0:
            raise ValueError(f"need tail_steps ≥ 0 (0: no implicit tail), got {tail_steps}")
        # unconditionally stable whatever the stability mode: the free twin keeps the same tail
        self.tail = ImplicitTail1D(tail_steps, knots, support, tail_hidden, tau_init=tail_tau, gain=tail_gain,
                                   edge_channels=tail_edges, mix=tail_mix) if tail_steps else None
        if irls_steps < 0:
            raise ValueError(f"need irls_steps ≥ 0 (0: no variational tail), got {irls_steps}")
        if irls_lag_base < 2:
            raise ValueError(f"need irls_lag_base ≥ 2 (the IRLS gate's lags are its powers up to 64), got {irls_lag_base}")
        lags = tuple(irls_lag_base ** k for k in range(7) if irls_lag_base ** k <= 64)
        self.irls = IRLSTail1D(irls_steps, tail_hidden, lags=lags, tau_init=irls_tau, contrast_init=irls_contrast,
                               gain=tail_gain, mix_init=irls_mix, select=irls_select > 0,
                               select_init=irls_select if irls_select > 0 else 0.5,
                               exponent_init=irls_exponent) if irls_steps else None
        if not 0.0 <= segment_select < 1.0:
            raise ValueError(f"need 0 ≤ segment_select < 1 (0: no segmentation tail; else γ at start), got "
                             f"{segment_select}")
        self.segment = BayesSegmentTail1D(tail_hidden, lags=lags, hazard=segment_hazard, max_length=segment_max_length,
                                          select_init=segment_select) if segment_select > 0 else None
        if not residual_threshold >= 0.0:
            raise ValueError(f"need residual_threshold ≥ 0 (0: no residual tail), got {residual_threshold}")
        self.residual = ResidualShrinkTail1D(residual_threshold, residual_frame) if residual_threshold > 0 else None

    @property
    def min_length(self) -> int:
        # reflection adds at most n − 1 samples per side: 3n − 2 ≥ N's minimum
        return max(MIN_LENGTH, math.ceil((self.inner_min_length + 2) / 3))

    def check_input(self, f: torch.Tensor) -> None:
        super().check_input(f)
        check_finite_scale(f, self.noise_sigma(f) if bool(torch.isfinite(f).all()) else None)

    def normalise(self, f: torch.Tensor, sigma: Optional[torch.Tensor] = None
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u, c, s, σ̂): u = (f − c)/s with c the median and s = σ̂ (1 where σ̂ = 0), all per signal; ``sigma``:
        σ̂ = :meth:`noise_sigma` (f) where the caller has it already."""
        if sigma is None:
            sigma = self.noise_sigma(f)
        centre = median_last(f)
        scale = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
        return (f - centre) / scale, centre, scale, sigma

    def noise_sigma(self, f: torch.Tensor) -> torch.Tensor:
        """This model's σ̂ ``[B, 1, 1]`` of ``f`` ``[B, 1, n]``: :func:`noise_sigma` (f, ``spectral_noise``)."""
        return noise_sigma(f, spectral=self.spectral_noise)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        super().check_input(f)
        return self.denoise_with_sigma(f, self.noise_sigma(f))

    def denoise_with_sigma(self, f: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(f) (class docstring) for ``f`` [B, 1, n] whose σ̂ = :meth:`noise_sigma` (f) [B, 1, 1] the caller has
        computed (:meth:`predict` computes it once for its checks, its chunks and its warning). No checks."""
        n = f.shape[-1]
        u, centre, scale, sigma = self.normalise(f, sigma)
        p = min(max(self.pad, (self.inner_min_length - n + 1) // 2), n - 1)
        x = F.pad(u, (p, p), mode='reflect') if p > 0 else u
        w = next(self.net.parameters())
        v = self.net(x.to(w.dtype))
        if self.refine is not None:
            v = self.refine(v)
        if self.tail is not None:
            v = self.tail(v, x.to(v.dtype))
        evidence: Optional[torch.Tensor] = None
        if self.irls is not None:
            v, evidence = self.irls.blend(v, x.to(v.dtype))
        if self.segment is not None:
            v = self.segment(v, x.to(v.dtype), evidence)
        v = v[..., p:p + n]
        if self.residual is not None:      # on the signal's own samples: reflected noise is no noise to S
            v = self.residual(v, u.to(v.dtype))
        v = v.to(f.dtype)
        return torch.where(sigma > 0, centre + scale * v, f)

    @torch.no_grad()
    def predict(self, f: torch.Tensor, chunk_samples: int = 1 << 17, sigma: Any = None) -> torch.Tensor:
        """As :meth:`Pretrained1D.predict`, with the input checks of :func:`check_finite_scale`; signals with
        σ̂ = 0 (constant, or no noise found) come back unchanged, with a warning naming them. σ̂ is computed once
        for the checks, the chunks and the warning (three medians per sample: about 6 % of the time at n = 4096).

        ``sigma``: the noise level in f's units where it is known (one number, or one per signal; see
        :func:`check_noise_level`), used instead of σ̂: D(f; σ) = c + σ·N((f − c)/σ), so D(a·f + b; a·σ) =
        a·D(f; σ) + b. σ̂ assumes white Gaussian noise; for heavy-tailed or coloured noise of known standard
        deviation the given σ is worth 0.5–3.5 dB (docs/denoiser.md)."""
        super().check_input(f)
        if chunk_samples < 1:
            raise ValueError(f"chunk_samples must be ≥ 1, got {chunk_samples}")
        given = sigma is not None
        sigma = (torch.from_numpy(check_noise_level(sigma, f.shape[0])).reshape(-1, 1, 1) if given
                 else self.noise_sigma(f))
        check_finite_scale(f, sigma, given=given)   # before the cast: a σ below f's dtype is named, not rounded to 0
        sigma = sigma.to(f.dtype)
        step = max(1, chunk_samples // f.shape[-1])
        out = torch.cat([self.denoise_with_sigma(f[i:i + step], sigma[i:i + step]) for i in range(0, f.shape[0], step)])
        flat = (sigma == 0).flatten()
        if bool(flat.any()):
            idx = flat.nonzero().flatten().tolist()
            warnings.warn(f"σ̂ = 0 (constant signal or no noise found) for signal(s) {idx[:8]}"
                          f"{'…' if len(idx) > 8 else ''}: returned unchanged", stacklevel=2)
        return out

    def certificate_schemes(self) -> Dict[str, Any]:
        """The scheme, stability and parameter count (the blocks' own certificates come from ``pdeblocks.certify``)."""
        return dict(scheme=self.scheme, stability='none' if any(
            isinstance(m, SymmetricResidual) and m.stability == 'none' for m in self.modules()) else 'euclidean',
            parameters=self.parameter_count())


def scale_limits(dtype: torch.dtype) -> Tuple[float, float]:
    """(smallest σ̂, largest max |f|) for which D stays exact in ``dtype``: (finfo.tiny, finfo.max/16).

    σ̂ ≥ finfo.tiny keeps σ̂ a normal number (a subnormal one has fewer digits, and u = (f − c)/σ̂ loses
    them); max |f| ≤ finfo.max/16 keeps h∗f (|h|₁ = 8/√20 < 2), f − c (< 2 max |f|) and c + σ̂·v finite.
    """
    info = torch.finfo(dtype)
    return float(info.tiny), float(info.max) / 16.0


def check_finite_scale(f: torch.Tensor, sigma: Optional[torch.Tensor] = None, given: bool = False) -> None:
    """One-line ValueErrors for NaN/Inf samples and for scales outside :func:`scale_limits` of f's dtype.

    ``f``: ``[B, 1, n]`` floating point, n ≥ 4 for the σ̂ check (shorter signals are the length check's);
    ``sigma``: :func:`noise_sigma` (f) where the caller has it already, or the noise level the user ``given``.
    """
    def which(mask: torch.Tensor) -> str:    # the batch index of the offending signals, where there is a batch
        idx = mask.nonzero().flatten().tolist()
        return f" (signal(s) {idx[:8]}{'…' if len(idx) > 8 else ''})" if f.shape[0] > 1 else ''

    finite = torch.isfinite(f)
    if not bool(finite.all()):
        where = (~finite).flatten(1)
        b, t = where.nonzero()[0].tolist()
        raise ValueError(f"the signal contains NaN or Inf samples{which(where.any(1))}, the first at sample {t}"
                         f"{f' of signal {b}' if f.shape[0] > 1 else ''}; expected finite values")
    smallest_sigma, largest = scale_limits(f.dtype)
    dtype = str(f.dtype).replace('torch.', '')
    peak = float(f.abs().amax())
    if peak > largest:
        raise ValueError(f"absurd scale: max |f| = {peak:.3g} exceeds {largest:.3g} (the {dtype} maximum / 16, "
                         f"beyond which differences overflow); rescale the units")
    if f.shape[-1] >= len(NOISE_FILTER):
        sigma = (noise_sigma(f) if sigma is None else sigma).flatten()
        tiny = (sigma > 0) & (sigma < smallest_sigma)
        if bool(tiny.any()):
            raise ValueError(f"absurd scale: {'the given noise level σ' if given else 'the noise estimate σ̂'} = "
                             f"{float(sigma[tiny][0]):.3g} is below "
                             f"{smallest_sigma:.3g}, the smallest normal {dtype} number{which(tiny)}; "
                             f"rescale the units")


def check_signal_1d(signal: Any, min_length: int) -> np.ndarray:
    """``signal`` as a float64 1-D array, or a one-line ValueError (not 1-D, too short, NaN/Inf, absurd scale)."""
    x = np.asarray(signal)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got an array of shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"expected real numbers, got dtype {x.dtype}")
    if x.shape[0] < min_length:
        raise ValueError(f"the signal has {x.shape[0]} samples; the denoiser needs at least {min_length}")
    x = x.astype(np.float64)
    check_finite_scale(torch.from_numpy(x)[None, None])
    return x


def check_noise_level(sigma: Any, count: int) -> np.ndarray:
    """A known noise level as float64 ``[count]``: one finite number > 0, or a sequence of ``count`` of them (one
    per signal); else a one-line ValueError naming what was expected and what came."""
    try:
        s = np.asarray(sigma.detach().cpu() if isinstance(sigma, torch.Tensor) else sigma, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"the noise level σ must be a number > 0 or one per signal, got {sigma!r}") from None
    if s.size == 1:
        s = np.full(count, float(s.reshape(())))
    elif s.ndim != 1 and s.squeeze().ndim == 1:
        s = s.squeeze()
    if s.shape != (count,):
        raise ValueError(f"the noise level σ must be one number or one per signal ({count}), got shape {s.shape}")
    bad = ~(np.isfinite(s) & (s > 0))
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise ValueError(f"the noise level σ must be finite and > 0, got {float(s[i])!r}"
                         f"{f' for signal {i + 1} of {count}' if count > 1 else ''}")
    return s


@dataclass
class DenoiseResult:
    """What :func:`denoise_signal` returns: the denoised signal, the noise level used (the estimate σ̂, or the σ
    given) and a one-line note."""

    denoised: np.ndarray
    noise_sigma: float
    note: str


def denoise_signal(signal: Any, model: Optional[BlindDenoiser1D] = None, sigma: Any = None) -> DenoiseResult:
    """Denoise one measured trace in its own units (``pdeblocks denoise`` calls :func:`denoise_signals`).

    ``signal``: a 1-D array of any real dtype, length ≥ ``model.min_length``. Normalisation and
    de-normalisation run in float64, the network in its own dtype, so D(a·f + b) = a·D(f) + b to
    float64 rounding of the affine map plus the network's rounding times a·σ̂. A constant signal, or one
    where σ̂ = 0, is returned unchanged and the note says so. Bad input raises a one-line ValueError
    (:func:`check_signal_1d`: not 1-D (the shape named), too short, NaN/Inf, absurd scale).

    ``sigma``: the noise's standard deviation in the signal's units where it is known (from a blank run, a
    detector's specification), used instead of σ̂, so D(a·f + b; a·σ) = a·D(f; σ) + b. σ̂ assumes white Gaussian
    noise: it reads heavy-tailed noise low (0.85–0.92 σ for Laplacian noise) and coloured noise lower still, where
    the true σ is worth 0.5–3.5 dB (docs/denoiser.md). :func:`check_noise_level` names a bad value.
    """
    model = _blind_model(model)
    x = check_signal_1d(signal, model.min_length)[None]
    return _denoise_rows(x, model, None if sigma is None else check_noise_level(sigma, 1))[0]


def denoise_signals(signals: Any, model: Optional[BlindDenoiser1D] = None, sigma: Any = None) -> List[DenoiseResult]:
    """:func:`denoise_signal` for each row of a ``[count, length]`` array, run as one batch; ``sigma``: one known
    noise level for all rows or one per row (None: each row's σ̂).

    A bad row raises a one-line ValueError that names it ("signal i of count: …"); nothing is
    returned then, so a caller writes all signals or none.
    """
    model = _blind_model(model)
    x = np.asarray(signals)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected signals as a [count, length] array with count ≥ 1, got shape {x.shape}")
    given = None if sigma is None else check_noise_level(sigma, x.shape[0])
    rows = []
    for i, row in enumerate(x):
        try:
            rows.append(check_signal_1d(row, model.min_length))
        except ValueError as exc:
            raise ValueError(f"signal {i + 1} of {x.shape[0]}: {exc}") from None
    return _denoise_rows(np.stack(rows), model, given)


def _blind_model(model: Optional[BlindDenoiser1D]) -> BlindDenoiser1D:
    if model is None:
        from ..hub import from_pretrained
        model = from_pretrained('denoiser-1d')
    if not isinstance(model, BlindDenoiser1D):
        raise ValueError(f"denoise_signal needs a BlindDenoiser1D, got {type(model).__name__}")
    return model


def _denoise_rows(x: np.ndarray, model: BlindDenoiser1D, given: Optional[np.ndarray] = None) -> List[DenoiseResult]:
    """Checked float64 rows ``[count, n]`` → one result each; rows with σ̂ = 0 bypass the network; ``given``: the
    checked known noise levels ``[count]`` (:func:`check_noise_level`), used instead of σ̂."""
    f = torch.from_numpy(x)[:, None]
    model.eval()
    constants = x.max(axis=1) == x.min(axis=1)
    sigma = model.noise_sigma(f).flatten() if given is None else torch.from_numpy(given)
    active = (sigma > 0) & torch.from_numpy(~constants)
    out = x.copy()
    if bool(active.any()):
        out[active.numpy()] = model.predict(f[active], sigma=None if given is None else given[active.numpy()]
                                            )[:, 0].numpy()
    results = []
    for row, s, constant in zip(out, sigma.tolist(), constants.tolist()):
        if constant:
            note = f"constant signal: {'σ̂ = 0, ' if given is None else ''}returned unchanged"
        elif given is not None:
            note = f"given noise σ = {s:.4g} (in the signal's units; not estimated)"
        elif s == 0.0:
            note = 'no noise found (σ̂ = 0): returned unchanged'
        else:
            note = f"estimated noise σ̂ = {s:.4g} (in the signal's units)"
        results.append(DenoiseResult(row, 0.0 if constant and given is None else s, note))
    return results
