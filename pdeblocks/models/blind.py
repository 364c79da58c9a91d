"""A blind, affine-equivariant 1D denoiser: any offset, any scale, any length, the noise estimated.

For a signal f (one row of ``[B, 1, n]``) the wrapper :class:`BlindDenoiser1D` computes

    σ̂(f) = 1.4826 · median_t |(h ∗ f)_t − median(h ∗ f)|,   h = (1, −3, 3, −1)/√20,
    c(f) = median_t f_t,
    D(f) = c + σ̂ · N((f − c)/σ̂)        (f itself where σ̂ = 0),

with N a certified diffusion network on reflect-padded input, followed by the exact tails of
:mod:`pdeblocks.layers.tails`. σ̂ is :mod:`pdeblocks.ops.noise`'s: h has unit norm, so for white noise of
standard deviation σ, h ∗ noise has standard deviation σ, and 1.4826 = 1/Φ⁻¹(3/4) turns the median
absolute deviation into σ. With ``spectral_noise`` σ̂ is the smaller of this and a spectral estimate
(:func:`~pdeblocks.ops.noise.spectral_noise_sigma`), which oscillations near Nyquist do not inflate. Where the
noise level is known, :meth:`BlindDenoiser1D.predict` and :func:`denoise_signal` take it instead of σ̂. This module
re-exports the σ̂ functions and the tails under their old names.

Affine equivariance. σ̂(a·f + b) = a·σ̂(f) (h sums to zero, the MAD is positively homogeneous) and
c(a·f + b) = a·c(f) + b for a > 0, so (a·f + b − c(a·f + b))/σ̂(a·f + b) = (f − c(f))/σ̂(f): N sees
the same input, and D(a·f + b) = a·D(f) + b up to rounding. N works in units of the noise: its
fluxes' contrasts are multiples of σ̂, which is what a Perona–Malik threshold should be.

Scales. Normalisation and de-normalisation run in the input's dtype, so the only limits are the
dtype's own (:func:`scale_limits`): σ̂ must be a normal number (≥ ``finfo.tiny``, else u = (f − c)/σ̂
loses digits) and max |f| ≤ ``finfo.max``/16 (h∗f, f − c and c + σ̂·v stay finite). In float64 that is
σ̂ ≥ 2.2e-308 and |f| ≤ 1.1e307: traces at 1e-30 or 1e30 denoise exactly like the same trace at 1.

Edges. N sees the normalised signal extended by ``pad`` samples of even (whole-sample) reflection on
each side (at most n − 1, and at least what N's minimum length needs: reflected again where one reflection is
too short, :func:`reflect_pad`), and the output is cropped.

Schemes of N (``scheme``), each with its certified form (``stability='euclidean'``) and its free-step
twin (``stability='none'``: the same skeleton, parameters and operator applications, no bound on τ); the explicit
scheme also with free steps that keep ‖step(z)‖ ≤ ‖z‖ by retraction (``stability='retracted'``, the free twin's
parameters; :func:`~pdeblocks.layers.symmetric.retract`):

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
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layers.fed import FEDCycle, FSIBlock
from ..layers.flux import LearnedFlux
from ..layers.implicit import ImplicitBlock
from ..layers.multigrid import MultigridUNet
from ..layers.symmetric import SymmetricResidual
from ..layers.tails import BayesSegmentTail1D, ImplicitTail1D, IRLSTail1D, ResidualShrinkTail1D, irls_weights
from ..ops.noise import (
    MAD_TO_SIGMA,
    NOISE_FILTER,
    colour_ar1,
    median_last,
    noise_sigma,
    spectral_noise_sigma,
    whiten_ar1,
)
from .denoise1d import Denoiser1D, Pretrained1D, _shuffle, _Skeleton1D, _unshuffle

__all__ = ['NOISE_FILTER', 'MAD_TO_SIGMA', 'SCHEMES', 'scale_limits', 'noise_sigma', 'spectral_noise_sigma', 'median_last', 'RepeatedStep',
           'ImplicitTail1D', 'IRLSTail1D', 'BayesSegmentTail1D', 'ResidualShrinkTail1D', 'irls_weights', 'BlindDenoiser1D', 'DenoiseResult', 'denoise_signal', 'denoise_signals', 'check_signal_1d',
           'check_finite_scale', 'check_noise_level', 'check_noise_correlation']

SCHEMES = ('explicit', 'fed', 'fsi', 'implicit', 'multigrid')
MIN_LENGTH = 16                           # shortest signal: σ̂ rests on n − 3 filtered samples


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


def reflect_pad(u: torch.Tensor, p: int) -> torch.Tensor:
    """``u`` [..., n] extended by ``p`` samples of whole-sample reflection on each side: u[−i] = u[i], u[n − 1 + i] =
    u[n − 1 − i], reflected again as often as ``p`` needs (the extension is even about both ends, period 2(n − 1));
    ``F.pad(u, (p, p), mode='reflect')`` where p ≤ n − 1. Needs n ≥ 2 where p > 0."""
    n = u.shape[-1]
    if p <= 0:
        return u
    if p <= n - 1:
        return F.pad(u, (p, p), mode='reflect')
    if n < 2:
        raise ValueError(f"reflecting needs at least 2 samples, got {n}")
    period = 2 * (n - 1)
    i = torch.arange(-p, n + p, device=u.device) % period
    return u[..., torch.where(i < n, i, period - i)]


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
    ``segment_max_length``, ``segment_degree``: the Bayesian segmentation tail after the IRLS tail
    (:class:`BayesSegmentTail1D`: γ at start where the IRLS selector is undecided, the prior's boundary probability,
    longest segment and the pieces' highest polynomial degree); ``poly_select`` (0: none), ``poly_degree``: a second
    segmentation tail after it, with pieces of degree ≤ ``poly_degree`` and a selector of its own (γ at start);
    ``spectral_noise``: σ̂ = min(σ̂_D, σ̂_S) instead of σ̂_D (:func:`noise_sigma`); ``residual_threshold`` (0: none),
    ``residual_frame``: the residual tail last (:class:`ResidualShrinkTail1D`: κ and the frame); ``dilation``: the explicit
    steps cycle through the dilations 1, 2, …, ``dilation`` (a power of two; :class:`~pdeblocks.layers.symmetric.Dilated1D`)."""

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
                 segment_degree: int = 0, poly_select: float = 0.0, poly_degree: int = 2,
                 spectral_noise: bool = False, residual_threshold: float = 0.0, residual_frame: int = 64,
                 dilation: int = 1):
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
        if stability not in ('euclidean', 'retracted', 'none'):
            raise ValueError(f"stability must be 'euclidean' (certified), 'retracted' (certified by retraction) or "
                             f"'none' (free-step twin), got {stability!r}")
        if stability == 'retracted' and scheme != 'explicit':
            raise ValueError(f"stability='retracted' retracts the explicit steps; scheme {scheme!r} has none "
                             f"(expected scheme='explicit', got {scheme!r})")
        if pad < 0 or blocks < 1 or steps < 1:
            raise ValueError(f"need pad ≥ 0, blocks ≥ 1 and steps ≥ 1; got pad={pad}, blocks={blocks}, steps={steps}")
        if refine_cycles < 0 or refine_steps < 1 or refine_channels < 1:
            raise ValueError(f"need refine_cycles ≥ 0, refine_steps ≥ 1 and refine_channels ≥ 1; got "
                             f"{refine_cycles}, {refine_steps}, {refine_channels}")
        if dilation != 1 and scheme != 'explicit':
            raise ValueError(f"dilation dilates the explicit steps; scheme {scheme!r} has none (expected "
                             f"scheme='explicit' or dilation=1, got dilation={dilation})")
        if step_init != 0.5 and scheme != 'explicit':
            raise ValueError(f"step_init sets the explicit steps' τ at start; scheme {scheme!r} has its own "
                             f"(expected scheme='explicit' or step_init=0.5, got step_init={step_init})")
        self.scheme = scheme
        self.pad = pad
        self.spectral_noise = spectral_noise
        if scheme == 'explicit':
            self.net: nn.Module = Denoiser1D(scale, channels, hidden_channels, blocks, kernel_size, knots, contrast,
                                             support, step_init=step_init, stability=stability,
                                             interp_slack=interp_slack, dilation=dilation)
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
                                          select_init=segment_select,
                                          degree=segment_degree) if segment_select > 0 else None
        if not 0.0 <= poly_select < 1.0:
            raise ValueError(f"need 0 ≤ poly_select < 1 (0: no polynomial segmentation tail; else γ at start), got "
                             f"{poly_select}")
        unused = [f'{name}={value!r} needs {select} > 0' for name, value, default, select, on in (
            ('segment_degree', segment_degree, 0, 'segment_select', segment_select),
            ('poly_degree', poly_degree, 2, 'poly_select', poly_select)) if value != default and not on]
        if unused:     # a tail's option without its tail would be silently ignored
            raise ValueError(f"{'; '.join(unused)} (its tail is off), got segment_select={segment_select}, "
                             f"poly_select={poly_select}")
        self.poly = BayesSegmentTail1D(tail_hidden, lags=lags, hazard=segment_hazard, max_length=segment_max_length,
                                       select_init=poly_select, degree=poly_degree) if poly_select > 0 else None
        if not residual_threshold >= 0.0:
            raise ValueError(f"need residual_threshold ≥ 0 (0: no residual tail), got {residual_threshold}")
        self.residual = ResidualShrinkTail1D(residual_threshold, residual_frame) if residual_threshold > 0 else None

    @property
    def min_length(self) -> int:
        return MIN_LENGTH      # σ̂'s; the reflection makes up any length N needs

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
        need = (self.inner_min_length - n + 1) // 2      # per side, for N's minimum length
        p = max(min(self.pad, n - 1), need)
        x = reflect_pad(u, p)
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
        if self.poly is not None:
            v = self.poly(v, x.to(v.dtype))
        v = v[..., p:p + n]
        if self.residual is not None:      # on the signal's own samples: reflected noise is no noise to S
            v = self.residual(v, u.to(v.dtype))
        v = v.to(f.dtype)
        return torch.where(sigma > 0, centre + scale * v, f)

    @torch.no_grad()
    def predict(self, f: torch.Tensor, chunk_samples: int = 1 << 17, sigma: Any = None,
                correlation: Any = None) -> torch.Tensor:
        """As :meth:`Pretrained1D.predict`, with the input checks of :func:`check_finite_scale`; signals with
        σ̂ = 0 (constant, or no noise found) come back unchanged, with a warning naming them. σ̂ is computed once
        for the checks, the chunks and the warning (three medians per sample: about 6 % of the time at n = 4096).

        ``sigma``: the noise level in f's units where it is known (one number, or one per signal; see
        :func:`check_noise_level`), used instead of σ̂: D(f; σ) = c + σ·N((f − c)/σ), so D(a·f + b; a·σ) =
        a·D(f; σ) + b; constant signals come back unchanged. σ̂ assumes white Gaussian noise; for heavy-tailed or
        coloured noise of known standard deviation the given σ is worth 0.4–4.8 dB per signal family
        (docs/denoiser.md).

        ``correlation``: the lag-one correlation ρ of AR(1) noise where it is known (a blank run's), one number or one
        per signal (:func:`check_noise_correlation`): f is centred on its median c, whitened (:func:`~pdeblocks.ops.
        noise.whiten_ar1`: the noise becomes white of the same σ), denoised, and coloured back,
        c + colour(D(whiten(f − c))); affine-equivariant as D. ``sigma`` (or σ̂ of the whitened signal) is the noise's
        own standard deviation."""
        super().check_input(f)
        if chunk_samples < 1:
            raise ValueError(f"chunk_samples must be ≥ 1, got {chunk_samples}")
        if correlation is not None:
            rho = torch.from_numpy(check_noise_correlation(correlation, f.shape[0])).to(f.dtype).reshape(-1, 1, 1)
            check_finite_scale(f)
            centre = median_last(f)
            return centre + colour_ar1(self.predict(whiten_ar1(f - centre, rho), chunk_samples, sigma), rho)
        given = sigma is not None
        sigma = (torch.from_numpy(check_noise_level(sigma, f.shape[0])).reshape(-1, 1, 1) if given
                 else self.noise_sigma(f))
        check_finite_scale(f, sigma, given=given)   # before the cast: a σ below f's dtype is named, not rounded to 0
        sigma = sigma.to(f.dtype)
        step = max(1, chunk_samples // f.shape[-1])
        out = torch.cat([self.denoise_with_sigma(f[i:i + step], sigma[i:i + step]) for i in range(0, f.shape[0], step)])
        if given:       # a constant signal has no noise to remove, whatever σ is given
            out = torch.where(f.amax(-1, keepdim=True) == f.amin(-1, keepdim=True), f, out)
        flat = (sigma == 0).flatten()
        if bool(flat.any()):
            idx = flat.nonzero().flatten().tolist()
            warnings.warn(f"σ̂ = 0 (constant signal or no noise found) for signal(s) {idx[:8]}"
                          f"{'…' if len(idx) > 8 else ''}: returned unchanged", stacklevel=2)
        return out

    def certificate_schemes(self) -> Dict[str, Any]:
        """The scheme, stability and parameter count (the blocks' own certificates come from ``pdeblocks.certify``)."""
        modes = {m.stability for m in self.modules() if isinstance(m, SymmetricResidual)}
        stability = next((m for m in ('none', 'retracted') if m in modes), 'euclidean')
        return dict(scheme=self.scheme, stability=stability, parameters=self.parameter_count())


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


def _per_signal(value: Any, count: int, name: str, kind: str, condition: str, valid) -> np.ndarray:
    """``value`` as float64 ``[count]``: one number for every signal or one per signal, each with ``valid`` true;
    else a one-line ValueError: "the {name} must be {kind} or one per signal" / "… must be {condition}"."""
    try:
        v = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"the {name} must be {kind} or one per signal, got {value!r}") from None
    if v.size == 1:
        v = np.full(count, float(v.reshape(())))
    elif v.ndim != 1 and v.squeeze().ndim == 1:
        v = v.squeeze()
    if v.shape != (count,):
        raise ValueError(f"the {name} must be one number or one per signal ({count}), got shape {v.shape}")
    bad = ~valid(v)
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise ValueError(f"the {name} must be {condition}, got {float(v[i])!r}"
                         f"{f' for signal {i + 1} of {count}' if count > 1 else ''}")
    return v


def check_noise_level(sigma: Any, count: int) -> np.ndarray:
    """A known noise level as float64 ``[count]``: one finite number > 0, or a sequence of ``count`` of them (one
    per signal); else a one-line ValueError naming what was expected and what came."""
    return _per_signal(sigma, count, 'noise level σ', 'a number > 0', 'finite and > 0',
                       lambda v: np.isfinite(v) & (v > 0))


def check_noise_correlation(correlation: Any, count: int) -> np.ndarray:
    """The lag-one correlation ρ of AR(1) noise as float64 ``[count]``: one finite number in (−1, 1), or a sequence of
    ``count`` of them; else a one-line ValueError naming what was expected and what came."""
    return _per_signal(correlation, count, 'noise correlation ρ', 'a number in (−1, 1)', 'in (−1, 1)',
                       lambda v: np.isfinite(v) & (np.abs(v) < 1))


@dataclass
class DenoiseResult:
    """What :func:`denoise_signal` returns: the denoised signal, the noise level used (the estimate σ̂, or the σ
    given) and a one-line note."""

    denoised: np.ndarray
    noise_sigma: float
    note: str


def denoise_signal(signal: Any, model: Optional[BlindDenoiser1D] = None, sigma: Any = None,
                   correlation: Any = None) -> DenoiseResult:
    """Denoise one measured trace in its own units (``pdeblocks denoise`` calls :func:`denoise_signals`).

    ``signal``: a 1-D array of any real dtype, length ≥ ``model.min_length``. Normalisation and
    de-normalisation run in float64, the network in its own dtype, so D(a·f + b) = a·D(f) + b to
    float64 rounding of the affine map plus the network's rounding times a·σ̂. A constant signal, or one
    where σ̂ = 0, is returned unchanged and the note says so. Bad input raises a one-line ValueError
    (:func:`check_signal_1d`: not 1-D (the shape named), too short, NaN/Inf, absurd scale).

    ``sigma``: the noise's standard deviation in the signal's units where it is known (from a blank run, a
    detector's specification), used instead of σ̂, so D(a·f + b; a·σ) = a·D(f; σ) + b. σ̂ assumes white Gaussian
    noise: it reads heavy-tailed noise low (0.85–0.92 σ for Laplacian noise) and coloured noise lower still, where
    the true σ is worth 0.4–4.8 dB per signal family (docs/denoiser.md). :func:`check_noise_level` names a bad
    value.

    ``correlation``: the lag-one correlation ρ ∈ (−1, 1) of AR(1) noise (e.g. ``np.corrcoef(blank[:-1], blank[1:])[0,
    1]`` of a blank run): the trace is whitened, denoised and coloured back (:meth:`BlindDenoiser1D.predict`); with
    ``sigma`` too, σ is the noise's own standard deviation. :func:`check_noise_correlation` names a bad value.
    """
    model = _blind_model(model)
    x = check_signal_1d(signal, model.min_length)[None]
    return _denoise_rows(x, model, None if sigma is None else check_noise_level(sigma, 1),
                         None if correlation is None else check_noise_correlation(correlation, 1))[0]


def denoise_signals(signals: Any, model: Optional[BlindDenoiser1D] = None, sigma: Any = None,
                    correlation: Any = None) -> List[DenoiseResult]:
    """:func:`denoise_signal` for each row of a ``[count, length]`` array, run as one batch; ``sigma``,
    ``correlation``: one known noise level or AR(1) correlation for all rows, or one per row (None: each row's σ̂,
    white noise).

    A bad row raises a one-line ValueError that names it ("signal i of count: …"); nothing is
    returned then, so a caller writes all signals or none.
    """
    model = _blind_model(model)
    x = np.asarray(signals)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"expected signals as a [count, length] array with count ≥ 1, got shape {x.shape}")
    given = None if sigma is None else check_noise_level(sigma, x.shape[0])
    rho = None if correlation is None else check_noise_correlation(correlation, x.shape[0])
    rows = []
    for i, row in enumerate(x):
        try:
            rows.append(check_signal_1d(row, model.min_length))
        except ValueError as exc:
            raise ValueError(f"signal {i + 1} of {x.shape[0]}: {exc}") from None
    return _denoise_rows(np.stack(rows), model, given, rho)


def _blind_model(model: Optional[BlindDenoiser1D]) -> BlindDenoiser1D:
    if model is None:
        from ..hub import from_pretrained
        model = from_pretrained('denoiser-1d')
    if not isinstance(model, BlindDenoiser1D):
        raise ValueError(f"denoise_signal needs a BlindDenoiser1D, got {type(model).__name__}")
    return model


def _denoise_rows(x: np.ndarray, model: BlindDenoiser1D, given: Optional[np.ndarray] = None,
                  rho: Optional[np.ndarray] = None) -> List[DenoiseResult]:
    """Checked float64 rows ``[count, n]`` → one result each; rows with σ̂ = 0 bypass the network; ``given``: the
    checked known noise levels ``[count]`` (:func:`check_noise_level`), used instead of σ̂; ``rho``: the checked AR(1)
    correlations (:func:`check_noise_correlation`), σ̂ then of the whitened signal."""
    f = torch.from_numpy(x)[:, None]
    model.eval()
    constants = x.max(axis=1) == x.min(axis=1)
    if given is not None:
        sigma = torch.from_numpy(given)
    elif rho is not None:
        sigma = model.noise_sigma(whiten_ar1(f - median_last(f), torch.from_numpy(rho).reshape(-1, 1, 1))).flatten()
    else:
        sigma = model.noise_sigma(f).flatten()
    active = (sigma > 0) & torch.from_numpy(~constants)
    out = x.copy()
    if bool(active.any()):
        pick = active.numpy()
        out[pick] = model.predict(f[active], sigma=None if given is None else given[pick],
                                  correlation=None if rho is None else rho[pick])[:, 0].numpy()
    results = []
    for i, (row, s, constant) in enumerate(zip(out, sigma.tolist(), constants.tolist())):
        if constant:
            note = f"constant signal: {'σ̂ = 0, ' if given is None else ''}returned unchanged"
        elif given is not None:
            note = f"given noise σ = {s:.4g} (in the signal's units; not estimated)"
        elif s == 0.0:
            note = 'no noise found (σ̂ = 0): returned unchanged'
        else:
            note = f"estimated noise σ̂ = {s:.4g} (in the signal's units)"
        if rho is not None and not constant:
            note += f"; AR(1) noise with ρ = {rho[i]:.4g}: whitened, denoised, coloured back"
        results.append(DenoiseResult(row, 0.0 if constant and given is None else s, note))
    return results
