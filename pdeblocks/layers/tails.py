"""The blind denoiser's tails: exact, parameter-light stages after the network N, each certified for every input.

For v = N(u) and the normalised input u⁰ (units of the noise level, so the noise is 1):

* :class:`ImplicitTail1D` — exact semi-implicit diffusion steps (I + τKᵀGK)f = v with G read from v, τ gated;
* :class:`IRLSTail1D` — a variational (IRLS) segmentation of u⁰ blended in by a learned selector;
* :class:`BayesSegmentTail1D` — the posterior mean over all segmentations of u⁰
  (:func:`~pdeblocks.ops.segmentation.segment_posterior_mean`), blended in by a learned selector;
* :class:`ResidualShrinkTail1D` — f = v + S(u⁰ − v), spectral shrinkage of the residual
  (:func:`~pdeblocks.ops.spectral.spectral_shrink`).

The selectors (:func:`selector`, :func:`blend`) see pooled features of v, u⁰ and the candidate
(:func:`residual_features`); :class:`~pdeblocks.models.blind.BlindDenoiser1D` chains the tails.
"""
import math
from typing import Optional, Tuple

import torch
from torch import nn

from .._native import native_library, run_ranges, split_ranges
from ..ops.segmentation import segment_posterior_mean
from ..ops.spectral import spectral_shrink
from ..ops.stencils import first_difference
from ..ops.tridiagonal import implicit_diffusion_step
from ..stability import Certificate
from .flux import LearnedFlux

__all__ = ['ImplicitTail1D', 'IRLSTail1D', 'BayesSegmentTail1D', 'ResidualShrinkTail1D', 'irls_weights',
           'residual_features', 'selector', 'blend', 'RESIDUAL_LAGS']


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

    ``degree`` D > 0: the pieces are polynomials of degree ≤ D instead (model-averaged; ``segment_posterior_mean``'s
    ``degree``), still a convex combination of orthogonal projections, so ‖w‖₂ ≤ ‖u‖₂; a fitted piece may overshoot
    [min u, max u]. Quadratic pieces fit peaks and smooth segments where constants need many boundaries
    (docs/denoiser.md: "What is left of the σ = 0.1 mean").
    """

    features = ImplicitTail1D.features

    def __init__(self, hidden: int = 32, lags: Tuple[int, ...] = (1, 4, 16, 64), hazard: float = 1 / 32,
                 max_length: int = 256, select_init: float = 0.12, degree: int = 0):
        super().__init__()
        if hidden < 1 or not lags or min(lags) < 1:
            raise ValueError(f"need hidden ≥ 1 and lags ≥ 1; got hidden={hidden}, lags={lags}")
        if isinstance(degree, bool) or degree not in (0, 1, 2):
            raise ValueError(f"degree must be 0, 1 or 2, got {degree!r}")
        if not 0.0 < hazard < 1.0 or not 0.0 < select_init < 1.0:
            raise ValueError(f"need 0 < hazard < 1 and 0 < select_init < 1, got {hazard}, {select_init}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an int ≥ 1, got {max_length!r}")
        self.lags = tuple(int(lag) for lag in lags)
        self.hazard = float(hazard)
        self.max_length = max_length
        self.degree = degree
        self.selector = selector(len(self.lags), hidden, select_init, extra=1)
        self.evidence_weight = nn.Parameter(torch.tensor(1.0))

    def forward(self, v: torch.Tensor, u: torch.Tensor, evidence: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``v``, ``u`` [B, 1, n]; ``evidence``: the IRLS tail's selector logit [B, 1] (None: 0)."""
        w = segment_posterior_mean(u, 1.0, self.hazard, self.max_length, degree=self.degree
                                   ).to(device=v.device, dtype=v.dtype)
        if evidence is None:
            evidence = v.new_zeros(v.shape[0], 1)
        x = torch.cat([self.features(v, u), residual_features(u, v, w), evidence], 1)
        return blend(v, w, self.evidence_weight * evidence + self.selector(x))

    @torch.jit.unused
    def stability_certificate(self) -> Certificate:
        """Unconditional: w is a convex combination of projections of u⁰, f one of v and w (class docstring)."""
        if self.degree:
            bound = '‖f‖ ≤ max(‖v‖, ‖u⁰‖)'
            pieces = f'its least-squares fits by polynomials of degree ≤ {self.degree} on segments'
        else:
            bound, pieces = '‖f‖ ≤ max(‖v‖, ‖u⁰‖) and min(v, u⁰) ≤ f ≤ max(v, u⁰)', 'u⁰\'s segment means'
        return Certificate(mode='posterior-mean', step_size=float('nan'), norm_bound=None, sector_bound=None, norm_factor=1.0,
                           lipschitz=None,
                           guarantee=f'{bound} for every input and weight (w = E[s | u⁰] under a product-partition '
                                     f'prior: a convex combination of {pieces}; hazard {self.hazard:g}, segments of '
                                     f'at most {self.max_length} samples)', passes='all')

    def extra_repr(self) -> str:
        return f"hazard={self.hazard:g}, max_length={self.max_length}, lags={self.lags}" + \
            (f", degree={self.degree}" if self.degree else '')


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
