"""The Bayesian segmentation (pdeblocks.ops.segmentation) and the blind denoiser's tail built on it: the posterior
mean against an explicit sum over every segmentation, the C kernel against the torch recursion, the bounds under
adversarial input, equivariance, the tail's certificate, gradients, save/load and bad arguments."""
import itertools
import math

import numpy as np
import pytest
import torch

import pdeblocks.ops.segmentation as segmentation
from pdeblocks import certify
from pdeblocks._native import native_available
from pdeblocks.hub import load_folder
from pdeblocks.layers.tails import BayesSegmentTail1D
from pdeblocks.models.blind import BlindDenoiser1D
from pdeblocks.ops.segmentation import segment_posterior, segment_posterior_mean


def _enumerated(x: np.ndarray, sigma: float, hazard: float, level_range: float, max_length: int):
    """(E[u | x], P(boundary at s | x) for s = 1 … n − 1) by listing every segmentation with segments of at most
    ``max_length`` samples: each weighs Π_segments √(2πσ²/L)/R·exp(−SS/(2σ²))·(1 − h)^(L−1), times h per boundary,
    and sets u to its segments' means."""
    n = len(x)
    total, acc, bnd = 0.0, np.zeros(n), np.zeros(n - 1)
    for cuts in itertools.product((0, 1), repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        if max(b - a for a, b in zip(bounds[:-1], bounds[1:])) > max_length:
            continue
        log_w, u = 0.0, np.empty(n)
        for a, b in zip(bounds[:-1], bounds[1:]):
            seg = x[a:b]
            ss = float(((seg - seg.mean()) ** 2).sum())
            log_w += (-ss / (2 * sigma ** 2) + 0.5 * math.log(2 * math.pi * sigma ** 2 / (b - a)) - math.log(level_range)
                      + (b - a - 1) * math.log1p(-hazard))
            u[a:b] = seg.mean()
        log_w += (len(bounds) - 2) * math.log(hazard)
        weight = math.exp(log_w)
        total += weight
        acc += weight * u
        bnd += weight * np.asarray(cuts, dtype=float)
    return acc / total, bnd / total


@pytest.fixture(params=['native', 'torch'])
def backend(request, monkeypatch):
    """Both paths of segment_posterior_mean: the C kernel (where a compiler works) and the torch recursion."""
    if request.param == 'native':
        if not native_available():
            pytest.skip('no C compiler: the torch path is the only one')
    else:
        monkeypatch.setattr(segmentation, 'native_library', lambda: None)
    return request.param


@pytest.mark.parametrize('sigma,hazard,max_length', [(0.5, 0.2, 64), (0.3, 0.05, 64), (1.0, 0.5, 3), (0.4, 0.1, 1)])
def test_posterior_mean_equals_the_sum_over_every_segmentation(backend, sigma, hazard, max_length):
    """Nine samples (256 segmentations), steps and noise: the recursion gives the mean and the boundary probabilities
    the explicit sum gives, with and without a longest segment shorter than the signal (max_length 1: every sample its
    own segment, w = x, every boundary certain)."""
    rng = np.random.default_rng(3)
    x = np.r_[np.zeros(4), np.full(5, 1.5)] + 0.4 * rng.standard_normal(9)
    span = float(x.max() - x.min())
    mean, boundary = _enumerated(x, sigma, hazard, span, max_length)
    got = segment_posterior(torch.tensor(x)[None], sigma, hazard, max_length)
    np.testing.assert_allclose(got.mean[0].numpy(), mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.boundary[0].numpy(), boundary, rtol=0, atol=1e-10)
    torch.testing.assert_close(segment_posterior_mean(torch.tensor(x)[None], sigma, hazard, max_length), got.mean,
                               rtol=0, atol=0)
    if max_length == 1:
        np.testing.assert_allclose(got.mean[0].numpy(), x, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.boundary[0].numpy(), 1.0, rtol=0, atol=1e-12)


def test_a_wide_level_prior_is_a_prior_not_the_data_range(backend):
    """level_range R only scales each segment's weight (1/R per segment): R = 5e6σ, far above the 1e6σ of data range
    beyond which rows come back unchanged, still gives the explicit sum's posterior mean with that R."""
    rng = np.random.default_rng(5)
    x = np.r_[np.zeros(5), np.full(4, 2.0)] + 0.3 * rng.standard_normal(9)
    mean, _ = _enumerated(x, 0.5, 0.1, 2.5e6, 64)
    got = segment_posterior_mean(torch.tensor(x)[None], 0.5, 0.1, 64, level_range=torch.tensor(2.5e6))[0].numpy()
    np.testing.assert_allclose(got, mean, rtol=0, atol=1e-10)
    assert np.abs(got - x).max() > 0.1


def test_native_and_torch_agree_on_long_signals(monkeypatch):
    """Piecewise-constant rows of 700 samples with noise, a slope and a spike: the C kernel (which drops starts below
    1e-15 of the sum) and the torch recursion (whole windows) agree to 1e-8 of the range."""
    if not native_available():
        pytest.skip('no C compiler')
    g = torch.Generator().manual_seed(0)
    levels = torch.rand(3, 14, generator=g, dtype=torch.float64).repeat_interleave(50, 1) * 8
    x = levels + torch.randn(3, 700, generator=g, dtype=torch.float64)
    x[1] += torch.linspace(0, 10, 700, dtype=torch.float64)
    x[2, 300] += 60.0
    sigma = torch.tensor([1.0, 0.7, 1.3], dtype=torch.float64)
    native = segment_posterior(x, sigma, 1 / 32, 128)
    monkeypatch.setattr(segmentation, 'native_library', lambda: None)
    reference = segment_posterior(x, sigma, 1 / 32, 128)
    assert float((native.mean - reference.mean).abs().max()) < 1e-8 * float(x.max() - x.min())
    assert float((native.boundary - reference.boundary).abs().max()) < 1e-8


def test_recovers_the_levels_of_a_noisy_step_signal():
    """Four segments of 200 samples 6σ apart: the posterior mean is within 0.15σ of each level away from the jumps
    (the segment means of 200 noisy samples: standard error 0.07σ), far better than the noisy input."""
    g = torch.Generator().manual_seed(1)
    clean = torch.tensor([0.0, 6.0, -3.0, 2.0], dtype=torch.float64).repeat_interleave(200)
    x = clean + torch.randn(800, generator=g, dtype=torch.float64)
    w = segment_posterior_mean(x, 1.0, 1 / 64, 256)
    inner = torch.cat([torch.arange(20 + 200 * k, 180 + 200 * k) for k in range(4)])
    assert float((w - clean)[inner].abs().max()) < 0.15
    assert float(((w - clean) ** 2).mean()) < 0.02 * float(((x - clean) ** 2).mean())


@pytest.mark.parametrize('case', ['spikes', 'huge', 'constant', 'tiny_sigma', 'huge_sigma', 'alternating'])
def test_bounds_hold_for_adversarial_rows(backend, case):
    """w is a convex combination of projections of x: min x ≤ w ≤ max x and ‖w‖₂ ≤ ‖x‖₂, for spikes of 1e6σ, values
    of 1e12, constant rows, σ far below and far above the signal's scale, and ±1 alternation."""
    g = torch.Generator().manual_seed(2)
    n = 300
    sigma = 1.0
    if case == 'spikes':
        x = torch.randn(2, n, generator=g, dtype=torch.float64)
        x[:, ::37] = 1e6
    elif case == 'huge':
        x = 1e12 * torch.rand(2, n, generator=g, dtype=torch.float64)
        sigma = 1e10
    elif case == 'constant':
        x = torch.full((2, n), 4.25, dtype=torch.float64)
    elif case == 'tiny_sigma':
        x = torch.randn(2, n, generator=g, dtype=torch.float64)
        sigma = 1e-9
    elif case == 'huge_sigma':
        x = torch.randn(2, n, generator=g, dtype=torch.float64)
        sigma = 1e9
    else:
        x = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(n // 2)[None].repeat(2, 1)
    w = segment_posterior_mean(x, sigma, 1 / 32, 128)
    assert torch.isfinite(w).all()
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    assert bool(((w >= lo) & (w <= hi)).all())
    assert bool((w.norm(dim=1) <= x.norm(dim=1) * (1 + 1e-12)).all())
    if case == 'constant':
        assert torch.equal(w, x)
    if case == 'tiny_sigma':    # beyond 1e6 σ of range the data is its own posterior mean
        assert torch.equal(w, x)
    if case == 'huge_sigma':    # noise far above the signal: the prior's segments (mean length 32) average x
        assert float(w.var(1).max()) < 0.1 * float(x.var(1).min())


def test_affine_equivariance():
    """w(a·x + b; a·σ) = a·w(x; σ) + b for a > 0 (the level range defaults to the data's): the segmentation does not
    depend on units."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 20, generator=g, dtype=torch.float64).repeat_interleave(25, 1) * 5 + torch.randn(2, 500, generator=g, dtype=torch.float64)
    w = segment_posterior_mean(x, 1.0)
    for a, b in ((1e-3, 7.0), (250.0, -3e4)):
        np.testing.assert_allclose(segment_posterior_mean(a * x + b, a).numpy(), (a * w + b).numpy(),
                                   rtol=0, atol=1e-9 * max(abs(a) * 20, abs(b)))


def test_bad_arguments_name_what_came():
    x = torch.zeros(2, 10)
    with pytest.raises(ValueError, match=r'hazard must be in \(0, 1\), got 1.5'):
        segment_posterior_mean(x, 1.0, 1.5)
    with pytest.raises(ValueError, match=r"max_length must be an int ≥ 1, got 0"):
        segment_posterior_mean(x, 1.0, 0.1, 0)
    with pytest.raises(ValueError, match='sigma must be finite and > 0'):
        segment_posterior_mean(x, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=r'one value or one per row \(2\)'):
        segment_posterior_mean(x, torch.ones(3))
    with pytest.raises(ValueError, match=r'level_range must be finite and > 0, one value or one per row \(2\); got shape \(3,\)'):
        segment_posterior_mean(x, 1.0, level_range=torch.ones(3))
    with pytest.raises(ValueError, match='NaN or Inf'):
        segment_posterior_mean(torch.tensor([[0.0, float('nan')]]))
    with pytest.raises(ValueError, match=r'x must be a tensor \[\.\.\., n\] with n ≥ 1'):
        segment_posterior_mean(torch.tensor(1.0))
    with pytest.raises(ValueError, match='need 0 < hazard < 1 and 0 < select_init < 1'):
        BayesSegmentTail1D(hazard=0.0)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=rf'need 0 ≤ segment_select < 1 .*got {bad}'):
            BlindDenoiser1D(scheme='explicit', blocks=1, segment_select=bad)


def _small_model(**kwargs) -> BlindDenoiser1D:
    return BlindDenoiser1D(scheme='explicit', channels=8, hidden_channels=8, blocks=2, tail_steps=1, irls_steps=2,
                           irls_select=0.2, segment_select=0.3, **kwargs)


def test_tail_certificate_bounds_and_gradients():
    """The tail is certified in certify(); with huge random selector weights the output stays within v and u⁰ (and
    so the whole model within the bounds of its parts); gradients reach the selector and the network, none the
    input through w."""
    model = _small_model().double()
    report = certify(model)
    last = report.blocks[-1]
    assert (last.path, last.block, last.mode, last.norm_factor, last.passes) == \
        ('segment', 'BayesSegmentTail1D', 'posterior-mean', 1.0, 'all')
    tail = model.segment
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in tail.parameters():
            p.copy_(1e3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    v = torch.randn(4, 1, 200, generator=g, dtype=torch.float64)
    u = 3 * torch.randn(4, 1, 200, generator=g, dtype=torch.float64)
    f = tail(v, u)
    lo, hi = torch.minimum(v.amin(-1, keepdim=True), u.amin(-1, keepdim=True)), \
        torch.maximum(v.amax(-1, keepdim=True), u.amax(-1, keepdim=True))
    assert bool(((f >= lo - 1e-12) & (f <= hi + 1e-12)).all())
    assert bool((f.flatten(1).norm(dim=1) <= torch.maximum(v.flatten(1).norm(dim=1), u.flatten(1).norm(dim=1)) + 1e-9).all())
    model = _small_model()
    x = torch.randn(2, 1, 256, generator=g).cumsum(-1)
    model(x).pow(2).mean().backward()
    assert model.segment.selector[2].weight.grad is not None and model.segment.selector[2].weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.parameters())


def test_model_with_the_tail_is_affine_equivariant_and_round_trips(tmp_path):
    """D(a·f + b) = a·D(f) + b with the segmentation tail, and save/load gives the same outputs (the tail's settings
    come back from config.json)."""
    model = _small_model(segment_hazard=1 / 16, segment_max_length=64).double().eval()
    g = torch.Generator().manual_seed(6)
    f = torch.rand(2, 1, 12, generator=g, dtype=torch.float64).repeat_interleave(40, -1) + \
        0.1 * torch.randn(2, 1, 480, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = model(f)
        for a, b in ((1e-3, 5.0), (1e3, -40.0)):
            np.testing.assert_allclose(model(a * f + b).numpy(), (a * out + b).numpy(), rtol=0, atol=1e-9 * max(a, abs(b)))
    model.save_pretrained(tmp_path / 'm')
    loaded = load_folder(tmp_path / 'm').double().eval()
    assert loaded.segment.hazard == 1 / 16 and loaded.segment.max_length == 64
    with torch.no_grad():
        assert torch.equal(loaded(f), out)


def test_tail_takes_the_irls_evidence_and_blends_the_posterior_mean():
    """At start (the perceptron's last layer zero) γ = sigmoid(ℓ + logit(select_init)) per signal, ℓ the IRLS
    selector's logit, and the output is v + γ(w − v) with w the posterior mean of u at noise level 1; without ℓ,
    γ = select_init. In the model, the IRLS tail's logit is what reaches it."""
    tail = BayesSegmentTail1D(select_init=0.25, hazard=1 / 16, max_length=64).double()
    g = torch.Generator().manual_seed(7)
    u = torch.rand(3, 1, 8, generator=g, dtype=torch.float64).repeat_interleave(30, -1) * 6 + \
        torch.randn(3, 1, 240, generator=g, dtype=torch.float64)
    v = u + 0.5 * torch.randn(3, 1, 240, generator=g, dtype=torch.float64)
    ell = torch.tensor([[-3.0], [0.0], [4.0]], dtype=torch.float64)
    w = segment_posterior_mean(u, 1.0, 1 / 16, 64)
    start = float(torch.tensor(math.log(0.25 / 0.75), dtype=torch.float32))   # the bias, built in float32
    gamma = torch.sigmoid(ell + start)[:, :, None]
    with torch.no_grad():
        torch.testing.assert_close(tail(v, u, ell), v + gamma * (w - v), rtol=0, atol=1e-12)
        torch.testing.assert_close(tail(v, u), v + torch.sigmoid(torch.tensor(start, dtype=torch.float64)) * (w - v), rtol=0, atol=1e-12)
    model = _small_model().double().eval()
    seen = {}
    def keep(module, args):    # returns None: the arguments go on unchanged
        seen['evidence'] = args[2]
    model.segment.register_forward_pre_hook(keep)
    f = torch.randn(2, 1, 300, generator=g, dtype=torch.float64)
    with torch.no_grad():
        model(f)
        u0 = model.normalise(f)[0]
        pad = model.pad
        v_net = model.tail(model.net(torch.nn.functional.pad(u0, (pad, pad), mode='reflect')),
                           torch.nn.functional.pad(u0, (pad, pad), mode='reflect'))
        _, logit = model.irls.blend(v_net, torch.nn.functional.pad(u0, (pad, pad), mode='reflect'))
    torch.testing.assert_close(seen['evidence'], logit)


# ---------------------------------------------------------------- polynomial pieces (degree > 0)
def _enumerated_poly(x: np.ndarray, sigma: float, hazard: float, level_range: float, max_length: int, degree: int):
    """E[u | x] with pieces of degree d ≤ ``degree`` by listing every segmentation and fitting each piece by least
    squares (numpy): a segment of L samples weighs Σ_d (2πσ²)^(p/2)·det(XᵀX)^(−½)·R^(−p)·exp(−RSS_d/(2σ²))/(D + 1)
    (p = d + 1 ≤ L, X the Vandermonde matrix of z = (t − s)/L), times (1 − h)^(L−1), h per boundary; its posterior
    mean is the fits averaged with those weights."""
    n = len(x)
    total, acc = 0.0, np.zeros(n)
    for cuts in itertools.product((0, 1), repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        if max(b - a for a, b in zip(bounds[:-1], bounds[1:])) > max_length:
            continue
        log_w, u = (len(bounds) - 2) * math.log(hazard), np.empty(n)
        for a, b in zip(bounds[:-1], bounds[1:]):
            L, seg = b - a, x[a:b]
            terms, fits = [], []
            for d in range(min(degree, L - 1) + 1):
                X = np.vander(np.arange(L) / L, d + 1, increasing=True)
                coef = np.linalg.lstsq(X, seg, rcond=None)[0]
                rss = float(((seg - X @ coef) ** 2).sum())
                terms.append(0.5 * (d + 1) * math.log(2 * math.pi * sigma ** 2) - 0.5 * np.linalg.slogdet(X.T @ X)[1]
                             - (d + 1) * math.log(level_range) - rss / (2 * sigma ** 2) - math.log(degree + 1))
                fits.append(X @ coef)
            top = max(terms)
            p = np.exp(np.array(terms) - top)
            log_w += top + math.log(p.sum()) + (L - 1) * math.log1p(-hazard)
            u[a:b] = sum(pk * f for pk, f in zip(p / p.sum(), fits))
        weight = math.exp(log_w)
        total += weight
        acc += weight * u
    return acc / total


@pytest.mark.parametrize('degree,sigma,hazard,max_length', [(1, 0.5, 0.2, 64), (2, 0.3, 0.1, 64), (2, 1.0, 0.4, 4),
                                                            (1, 0.4, 0.3, 2)])
def test_polynomial_pieces_equal_the_sum_over_every_segmentation(backend, degree, sigma, hazard, max_length):
    """Nine samples, a ramp then a bend: with pieces of degree ≤ 1 or 2 the recursion (C kernel or torch) gives the
    posterior mean the explicit sum with least-squares fits gives; unpruned and with the kernel's default pruning."""
    rng = np.random.default_rng(7)
    t = np.arange(9.0)
    x = np.where(t < 4, 0.5 * t, 2.0 - 0.3 * (t - 4) ** 2) + 0.3 * rng.standard_normal(9)
    expected = _enumerated_poly(x, sigma, hazard, float(x.max() - x.min()), max_length, degree)
    for prune in (0.0, 1e-15):
        got = segment_posterior_mean(torch.tensor(x)[None], sigma, hazard, max_length, prune=prune, degree=degree)
        np.testing.assert_allclose(got[0].numpy(), expected, rtol=0, atol=1e-7)


def test_polynomial_pieces_native_and_torch_agree_and_fit_a_parabola(monkeypatch):
    """Rows of 300 samples (a parabola, a step between two ramps, a peak): the scalar C kernel and the torch recursion
    agree to 1e-6σ; on the noisy parabola the posterior mean with quadratic pieces is within 0.5σ of it away from
    the ends and closer than with constant pieces."""
    if not native_available():
        pytest.skip('no C compiler')
    g = torch.Generator().manual_seed(3)
    t = torch.linspace(-1, 1, 300, dtype=torch.float64)
    clean = torch.stack([20 * t ** 2, torch.where(t < 0, 5 * t, 8 - 3 * t), 15 * torch.exp(-(t / 0.05) ** 2)])
    x = clean + torch.randn(3, 300, generator=g, dtype=torch.float64)
    native = segment_posterior_mean(x, 1.0, 1 / 32, 128, degree=2)
    monkeypatch.setattr(segmentation, 'native_library', lambda: None)
    reference = segment_posterior_mean(x, 1.0, 1 / 32, 128, degree=2)
    assert float((native - reference).abs().max()) < 1e-6
    inner = slice(20, 280)
    assert float((native[0] - clean[0])[inner].abs().max()) < 0.5
    constant = segment_posterior_mean(x[:1], 1.0, 1 / 32, 128)
    assert float(((native[0] - clean[0]) ** 2).mean()) < 0.5 * float(((constant[0] - clean[0]) ** 2).mean())


@pytest.mark.parametrize('case', ['spikes', 'huge', 'alternating', 'tiny_sigma', 'huge_sigma'])
def test_polynomial_pieces_keep_the_norm_bound_for_adversarial_rows(backend, case):
    """‖w‖₂ ≤ ‖x‖₂ for pieces of degree ≤ 2 (a convex combination of orthogonal projections), and w(x + b) = w(x) + b,
    for spikes of 1e6σ, values of 1e12, ±1 alternation and σ far below or above the signal's scale."""
    g = torch.Generator().manual_seed(6)
    n = 120 if backend == 'torch' else 400
    x = torch.randn(2, n, generator=g, dtype=torch.float64)
    sigma = 1.0
    if case == 'spikes':
        x[:, ::37] += 1e6
    elif case == 'huge':
        x = 1e12 * x
        sigma = 1e12
    elif case == 'alternating':
        x = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat(2, n // 2)
    elif case == 'tiny_sigma':
        sigma = 1e-3
    else:
        sigma = 1e3
    w = segment_posterior_mean(x, sigma, 1 / 16, 64, degree=2)
    assert bool(torch.isfinite(w).all())
    assert bool((w.norm(dim=1) <= x.norm(dim=1) * (1 + 1e-12)).all())
    shift = 7.0 * float(x.abs().max())
    moved = segment_posterior_mean(x + shift, sigma, 1 / 16, 64, degree=2) - shift
    if case != 'spikes':    # spikes: rows beyond 1e6σ of range come back unchanged either way
        assert float((moved - w).abs().max()) < 1e-6 * max(shift, sigma)


def test_polynomial_tail_in_the_model(tmp_path):
    """segment_degree reaches the tail: the certificate states the norm bound only (a fitted piece may overshoot),
    the model saves and loads with it, the output differs from constant pieces', and a bad degree is named."""
    torch.manual_seed(0)
    m = _small_model(segment_degree=2).eval()
    assert m.segment.degree == 2 and 'degree=2' in repr(m.segment)
    cert = m.segment.stability_certificate()
    assert 'polynomials of degree ≤ 2' in cert.guarantee and 'min(v, u⁰)' not in cert.guarantee
    assert 'min(v, u⁰)' in BayesSegmentTail1D().stability_certificate().guarantee
    m.save_pretrained(tmp_path / 'm')
    loaded = load_folder(tmp_path / 'm')
    assert loaded.segment.degree == 2
    t = torch.linspace(-1, 1, 400, dtype=torch.float32)
    f = (8 * t ** 2 + 0.3 * torch.randn(400)).reshape(1, 1, -1)
    with torch.no_grad():
        out = m(f)
        torch.testing.assert_close(loaded(f), out, rtol=0, atol=0)
        constant = _small_model().eval()
        constant.load_state_dict(m.state_dict())
        assert float((constant(f) - out).abs().max()) > 1e-4
    x = f.double().reshape(1, -1) / 0.3
    nearly_constant = segment_posterior_mean(x, degree=2, degree_prior=(1.0, 1e-200, 1e-200))
    torch.testing.assert_close(nearly_constant, segment_posterior_mean(x), rtol=0, atol=1e-9)
    for bad_prior, match in (((1.0, 0.0, 1.0), r'3 finite numbers > 0 \(one per degree 0 … 2\), got \(1.0, 0.0, 1.0\)'),
                             ((1.0, 1.0), r'3 finite numbers > 0')):
        with pytest.raises(ValueError, match=match):
            segment_posterior_mean(x, degree=2, degree_prior=bad_prior)
    for bad in (3, -1, True, 1.5):
        with pytest.raises(ValueError, match='degree must be 0, 1 or 2'):
            segment_posterior_mean(torch.zeros(1, 10), degree=bad)
        with pytest.raises(ValueError, match='degree must be 0, 1 or 2'):
            BayesSegmentTail1D(degree=bad)


def test_second_polynomial_tail_is_certified_and_keeps_the_norm_bound():
    """poly_select adds a second segmentation tail with quadratic pieces after the constant one: certify() lists it
    last with its own guarantee; with huge random selector weights its output keeps ‖f‖ ≤ max(‖v‖, ‖u⁰‖); a bad
    poly_select is named."""
    model = _small_model(poly_select=0.2).double()
    report = certify(model)
    assert [(b.path, b.block) for b in report.blocks[-2:]] == [('segment', 'BayesSegmentTail1D'),
                                                               ('poly', 'BayesSegmentTail1D')]
    assert 'degree ≤ 2' in report.blocks[-1].guarantee and model.poly.degree == 2 and model.segment.degree == 0
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for p in model.poly.parameters():
            p.copy_(1e3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    v = torch.randn(4, 1, 300, generator=g, dtype=torch.float64)
    u = 3 * torch.randn(4, 1, 300, generator=g, dtype=torch.float64).cumsum(-1)
    f = model.poly(v, u)
    assert bool((f.flatten(1).norm(dim=1) <= torch.maximum(v.flatten(1).norm(dim=1), u.flatten(1).norm(dim=1))
                 * (1 + 1e-12)).all())
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=rf'need 0 ≤ poly_select < 1 .*got {bad}'):
            BlindDenoiser1D(scheme='explicit', blocks=1, poly_select=bad)


def test_a_tail_option_without_its_tail_is_an_error():
    """segment_degree needs the segmentation tail and poly_degree the second one: given with the tail off they would
    be silently unused, so the constructor names them and the select that is 0."""
    with pytest.raises(ValueError, match=r'^segment_degree=2 needs segment_select > 0 \(its tail is off\), got '
                                         r'segment_select=0.0, poly_select=0.0$'):
        BlindDenoiser1D(scheme='explicit', blocks=1, segment_degree=2)
    with pytest.raises(ValueError, match=r'^poly_degree=1 needs poly_select > 0 \(its tail is off\)'):
        BlindDenoiser1D(scheme='explicit', blocks=1, segment_select=0.1, poly_degree=1)
    with pytest.raises(ValueError, match=r'segment_degree=1 needs segment_select > 0; poly_degree=1 needs poly_select'):
        BlindDenoiser1D(scheme='explicit', blocks=1, segment_degree=1, poly_degree=1)
    assert BlindDenoiser1D(scheme='explicit', blocks=1, poly_select=0.1, poly_degree=1).poly.degree == 1
    assert BlindDenoiser1D(scheme='explicit', blocks=1, segment_select=0.1, segment_degree=1).segment.degree == 1
