"""Flux activations: formulas, declared constants (checked numerically), timm act_layer use."""
import pytest
import torch

from pdeblocks.layers import FLUXES, LearnedFlux, create_flux

S = torch.linspace(-30, 30, 120001, dtype=torch.float64)


def _phi(name, lam=0.7, **kw):
    f = create_flux(name, contrast=lam, **kw).double()
    with torch.no_grad():
        return f, f(S.reshape(1, 1, -1)).reshape(-1)


@pytest.mark.parametrize('name,g', [
    ('perona_malik', lambda s, lam: 1 / (1 + s ** 2 / lam ** 2)),
    ('charbonnier', lambda s, lam: 1 / torch.sqrt(1 + s ** 2 / lam ** 2)),
    ('exp_perona_malik', lambda s, lam: torch.exp(-s ** 2 / (2 * lam ** 2))),
    ('weickert', lambda s, lam: torch.where(s == 0, torch.ones_like(s), 1 - torch.exp(-3.31488 / (s / lam) ** 8))),
    ('relu', lambda s, lam: (s > 0).double()),
])
def test_flux_formula(name, g):
    f, phi = _phi(name)
    assert torch.allclose(phi, g(S, 0.7) * S, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize('name', sorted(FLUXES))
def test_declared_constants_hold(name):
    """Sector bound 0 ≤ Φ(s)/s ≤ L everywhere; monotone and slope bounds where declared."""
    f, phi = _phi(name)
    nz = S != 0
    ratio = phi[nz] / S[nz]
    assert ratio.min() >= 0 and ratio.max() <= f.sector_bound + 1e-12
    slope = torch.diff(phi) / torch.diff(S)
    if f.monotone:
        assert slope.min() >= -1e-9
        assert slope.max() <= f.slope_bound + 1e-6
    else:
        assert slope.min() < 0, f"{name} is declared nonmonotone but is monotone on the grid"
    if f.lipschitz_bound is not None:
        assert slope.abs().max() <= f.lipschitz_bound + 1e-6


def test_learned_flux_stays_in_sector_for_any_parameters():
    f = LearnedFlux(channels=3, contrast=0.5, sector_bound=2.0).double()
    with torch.no_grad():
        f.knot_logits.copy_(torch.randn_like(f.knot_logits) * 50)
    s = torch.randn(4, 3, 1000, dtype=torch.float64) * 10
    phi = f(s)
    ratio = phi / s
    assert ratio.min() >= 0 and ratio.max() <= 2.0
    # and it is genuinely free-form: nonmonotone for these knots
    grid = torch.linspace(0, 5, 5000, dtype=torch.float64).reshape(1, 1, -1).expand(1, 3, -1)
    assert (torch.diff(f(grid), dim=-1) < 0).any()


def test_learned_flux_starts_near_perona_malik_and_is_continuous():
    f = LearnedFlux(contrast=1.0).double()
    pm = create_flux('perona_malik', contrast=1.0).double()
    s = torch.linspace(-3, 3, 601, dtype=torch.float64).reshape(1, 1, -1)
    assert (f(s) - pm(s)).abs().max() < 0.03
    far = torch.linspace(4.0, 40, 2000, dtype=torch.float64).reshape(1, 1, -1)  # beyond s_max = 4λ
    assert torch.diff(f(far)).abs().max() < 1e-12  # constant flux beyond the knots
    edge = torch.tensor([4.0 - 1e-9, 4.0 + 1e-9], dtype=torch.float64).reshape(1, 1, -1)
    assert torch.diff(f(edge)).abs().max() < 1e-8  # and no jump at s_max


def test_contrast_is_trainable_per_channel():
    f = create_flux('perona_malik', channels=4, contrast=0.3)
    assert f.raw_contrast.shape == (4,)
    assert torch.allclose(f.contrast, torch.full((4,), 0.3), atol=1e-6)
    s = torch.randn(2, 4, 16, requires_grad=True)
    f(s).sum().backward()
    assert f.raw_contrast.grad is not None and f.raw_contrast.grad.abs().sum() > 0


def test_unknown_flux_lists_valid_names():
    with pytest.raises(ValueError) as e:
        create_flux('tanh')
    for name in FLUXES:
        assert name in str(e.value)


def test_flux_as_timm_act_layer():
    """timm blocks call act_layer(inplace=True); a flux works there (scalar contrast)."""
    import timm

    from pdeblocks.layers import Charbonnier
    model = timm.create_model('resnet18', act_layer=Charbonnier, num_classes=3)
    assert isinstance(model.act1, Charbonnier)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_weickert_gradients_finite_in_float32_and_bf16():
    f = create_flux('weickert', contrast=1.0)
    for dtype in (torch.float32, torch.bfloat16):
        s = torch.tensor([0.0, 1e-8, 1e-3, 1.0, 1e3, 1e8], dtype=dtype, requires_grad=True)
        f(s.reshape(1, 1, -1)).sum().backward()
        assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize('channels', [1, 5])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
def test_learned_flux_matches_knot_interpolation_scriptable_and_traceable(channels, dtype):
    """forward and ``diffusivity_values`` against an independent reference (numpy interpolation of the
    knot values, g(s_max)·s_max/|s| beyond the support) on knots, at and beyond the support, at 0 and
    huge |s|; then TorchScript and torch.fx (timm's notrace functions) give the same values."""
    import numpy as np
    from timm.layers._fx import get_notrace_functions
    torch.manual_seed(0)
    flux = LearnedFlux(channels, contrast=0.7, knots=9, support=4.0)
    with torch.no_grad():
        flux.knot_logits.normal_(0.0, 2.0)
    h = flux.spacing
    special = torch.tensor([0.0, h, 3 * h, 8 * h, -8 * h, 8 * h + 1e-3, 1e6, -1e6, 1e-30])
    s = torch.cat([special, torch.randn(200) * 4.0]).to(dtype).reshape(1, 1, -1).repeat(2, channels, 1)
    knots = np.arange(9) * h
    values = torch.sigmoid(flux.knot_logits.detach()).double().numpy()      # sector bound 1
    a = s.double().abs().numpy()
    g_ref = np.stack([np.where(a[:, c] <= knots[-1], np.interp(a[:, c], knots, values[c]),
                               values[c, -1] * knots[-1] / np.maximum(a[:, c], knots[-1]))
                      for c in range(channels)], axis=1)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-12 if dtype == torch.float64 else 1e-5
    expected = torch.from_numpy(g_ref) * s.double()
    assert torch.allclose(flux(s).double(), expected, atol=tol * 8, rtol=tol)
    assert torch.allclose(flux.diffusivity_values(s).double(), torch.from_numpy(g_ref), atol=tol, rtol=tol)
    scripted = torch.jit.script(flux)
    traced = torch.fx.GraphModule(flux, torch.fx.Tracer(autowrap_functions=tuple(get_notrace_functions())).trace(flux))
    assert torch.equal(scripted(s), flux(s)) and torch.equal(traced(s), flux(s))


@pytest.mark.parametrize('name', ['perona_malik', 'charbonnier'])
@pytest.mark.parametrize('channels', [None, 3])
def test_fused_flux_backward_matches_autograd(name, channels):
    """The hand-written backward (from g alone) against autograd through the formula, and gradcheck."""
    from pdeblocks.layers.flux import FusedFlux, create_flux
    torch.manual_seed(0)
    flux = create_flux(name, channels, contrast=0.6).double()
    assert flux.fused
    s = (torch.randn(2, 3, 7, dtype=torch.float64) * 2).requires_grad_()
    lam = torch.nn.functional.softplus(flux.raw_contrast).reshape([1, -1, 1] if channels else [1, 1, 1])
    lam = lam.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: FusedFlux.apply(a, b, flux), (s, lam))
    weights = torch.randn(2, 3, 7, dtype=torch.float64)
    fused = torch.autograd.grad((flux(s) * weights).sum(), [s, flux.raw_contrast])
    plain = torch.autograd.grad((flux.diffusivity(s * s, torch.nn.functional.softplus(flux.raw_contrast).reshape(
        lam.shape)) * s * weights).sum(), [s, flux.raw_contrast])
    for a, b in zip(fused, plain):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the learned flux's C kernel
def _native_available():
    from pdeblocks._native import native_available
    return native_available()


@pytest.mark.skipif(not _native_available(), reason='no C compiler: the torch expression serves')
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('channels, shape', [(1, (2, 5, 37)), (5, (2, 5, 37)), (5, (3, 5, 4, 6)), (5, (4, 5))])
def test_native_learned_flux_is_the_torch_expression_bit_for_bit(dtype, channels, shape):
    """The C kernel gives the values of the torch expression exactly (same operations, same order), at knots,
    at ±s_max, beyond it, at 0, at huge |s|; a NaN stays NaN in its place. The native path is the one taken."""
    from pdeblocks.layers import flux as flux_module
    torch.manual_seed(1)
    flux = LearnedFlux(None if channels == 1 else channels, contrast=0.7, knots=9)
    with torch.no_grad():
        flux.knot_logits.normal_(0.0, 2.0)
    h, n = flux.spacing, shape[0] * shape[1] * (shape[2] if len(shape) > 2 else 1) * (shape[3] if len(shape) > 3 else 1)
    s = (torch.randn(n, dtype=torch.float64) * 3.0)
    s[:9] = torch.tensor([0.0, h, 3 * h, 8 * h, -8 * h, 8 * h * (1 + 1e-7), 1e30, -1e30, 1e-30])
    s = s.to(dtype).reshape(shape)
    values = flux.knot_values(dtype)
    assert flux_module._native_flux_applies(s, values)
    expected = flux_module.learned_flux_expression(s, values, h)
    assert torch.equal(flux(s), expected) and torch.equal(flux_module.learned_flux(s, values, h), expected)
    s_nan = s.clone()
    s_nan.view(-1)[10] = float('nan')
    out = flux_module.NativeLearnedFlux.apply(s_nan, values, h)
    assert torch.isnan(out.view(-1)[10]) and torch.isfinite(out.view(-1)[11:]).all()


@pytest.mark.skipif(not _native_available(), reason='no C compiler: the torch expression serves')
@pytest.mark.parametrize('channels', [1, 4])
def test_native_learned_flux_gradients(channels):
    """gradcheck (float64) of ∂Φ/∂s and ∂Φ/∂(knot values); in float32 the gradients of s and of the knot logits
    match autograd through the torch expression, including 0 at and beyond ±s_max (clamp's gradient)."""
    from pdeblocks.layers import flux as flux_module
    torch.manual_seed(2)
    flux = LearnedFlux(None if channels == 1 else channels, contrast=0.7, knots=6).double()
    with torch.no_grad():
        flux.knot_logits.normal_(0.0, 1.5)
    h = flux.spacing
    s = (torch.randn(2, 4, 11, dtype=torch.float64) * 2.0)
    s = s + 0.05 * h * (s / h - (s / h).round()).sign()   # keep away from the knots, where g has kinks
    values = flux.knot_values(torch.float64).detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, v: flux_module.NativeLearnedFlux.apply(x, v, h),
                                    (s.requires_grad_(), values))
    flux = flux.float()
    x = (torch.randn(3, 4, 50) * 2.0)
    x[0, 0, :4] = torch.tensor([5 * h, -5 * h, 1e9, 0.0])   # ±s_max, beyond, 0
    g = torch.randn_like(x)
    grads = []
    for native in (True, False):
        xr = x.clone().requires_grad_()
        flux.zero_grad()
        v = flux.knot_values(torch.float32)
        out = (flux_module.NativeLearnedFlux.apply(xr, v, h) if native
               else flux_module.learned_flux_expression(xr, v, h))
        (out * g).sum().backward()
        grads.append((xr.grad.clone(), flux.knot_logits.grad.clone()))
    (gs, gl), (gs_ref, gl_ref) = grads
    assert torch.equal(gs[0, 0, :3], torch.zeros(3)) and torch.equal(gs_ref[0, 0, :3], torch.zeros(3))
    assert torch.allclose(gs, gs_ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(gl, gl_ref, atol=1e-4 * gl_ref.abs().max().item(), rtol=1e-4)


@pytest.mark.skipif(not _native_available(), reason='no C compiler: the torch expression serves')
@pytest.mark.parametrize('knots', [2, 16, 17, 18, 40])
def test_native_learned_flux_register_tables_bit_for_bit(knots):
    """float32 rows with ≤ 17 knots take the AVX-512 path (knot tables in registers, permutes; rows of any length, the
    last vector masked), more knots the gathers: both are the torch expression bit for bit, -0.0 included."""
    from pdeblocks.layers import flux as flux_module
    torch.manual_seed(knots)
    flux = LearnedFlux(6, contrast=0.9, knots=knots)
    with torch.no_grad():
        flux.knot_logits.normal_(0.0, 2.0)
    values = flux.knot_values(torch.float32)
    for inner in (1, 15, 16, 17, 515):
        s = torch.randn(2, 6, inner) * 3.0 * flux.spacing * knots
        s.view(-1)[:4] = torch.tensor([-0.0, 1e30, -1e30, flux.spacing * (knots - 1)])[:s.numel()]
        out = flux_module.learned_flux(s, values, flux.spacing)
        expected = flux_module.learned_flux_expression(s, values, flux.spacing)
        assert torch.equal(out, expected) and torch.equal(torch.signbit(out), torch.signbit(expected)), inner


# ---------------------------------------------------------------- the rational fluxes' C kernel
@pytest.mark.skipif(not _native_available(), reason='no C compiler: the torch expression serves')
@pytest.mark.parametrize('name', ['perona_malik', 'charbonnier'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('channels', [None, 6])
def test_native_rational_flux_is_the_torch_expression_bit_for_bit(name, dtype, channels):
    """Perona–Malik and Charbonnier through the C kernel give g(s²)·s of their torch expression exactly, with and
    without gradients, for rows of any length (the last vector partial), at 0, −0, ±1e30 and tiny s; a NaN stays
    NaN in its place. The native path is the one taken."""
    from pdeblocks.layers import flux as flux_module
    from pdeblocks.layers.flux import channel_view
    torch.manual_seed(3)
    flux = create_flux(name, channels, contrast=0.8).to(dtype)
    with torch.no_grad():
        flux.raw_contrast.normal_(0.0, 1.0)
    for inner in (1, 15, 16, 17, 515):
        s = torch.randn(2, 6, inner, dtype=dtype) * 3.0
        s.view(-1)[:6] = torch.tensor([0.0, -0.0, 1e30, -1e30, 1e-30, 0.8], dtype=dtype)
        lam = channel_view(torch.nn.functional.softplus(flux.raw_contrast), s).to(dtype)
        assert flux_module._native_rational_applies(s, lam)
        expected = flux.diffusivity(s * s, lam) * s
        with torch.no_grad():
            quiet = flux(s)
        graded = flux(s.clone().requires_grad_())
        assert type(graded.grad_fn).__name__.startswith('NativeRationalFlux')
        for out in (quiet, graded.detach()):
            assert torch.equal(out, expected) and torch.equal(torch.signbit(out), torch.signbit(expected)), inner
    s_nan = s.clone()
    s_nan.view(-1)[10] = float('nan')
    out = flux(s_nan)
    assert torch.isnan(out.view(-1)[10]) and torch.isfinite(out.view(-1)[11:]).all()


@pytest.mark.skipif(not _native_available(), reason='no C compiler: the torch expression serves')
@pytest.mark.parametrize('name', ['perona_malik', 'charbonnier'])
@pytest.mark.parametrize('channels', [None, 4])
@pytest.mark.parametrize('threaded', [False, True])
def test_native_rational_flux_gradients(name, channels, threaded, monkeypatch):
    """gradcheck (float64) of ∂Φ/∂s and ∂Φ/∂λ through the C kernel, rows split over threads or not; in float32 the
    gradients of s and of the raw contrast match the hand-written torch backward (FusedFlux)."""
    from pdeblocks.layers import flux as flux_module
    from pdeblocks.layers.flux import FusedFlux, NativeRationalFlux, channel_view
    if threaded:
        monkeypatch.setattr(flux_module, 'RATIONAL_FLUX_THREADED', 1)
        monkeypatch.setattr(torch, 'get_num_threads', lambda: 3)
    torch.manual_seed(4)
    flux = create_flux(name, channels, contrast=0.6).double()
    kind = flux.native_kind
    s = (torch.randn(3, 4, 13, dtype=torch.float64) * 2).requires_grad_()
    lam = channel_view(torch.nn.functional.softplus(flux.raw_contrast), s).detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: NativeRationalFlux.apply(a, b, kind), (s, lam))
    flux = flux.float()
    x = torch.randn(5, 4, 3, 37) * 2.0
    g = torch.randn_like(x)
    grads = []
    for native in (True, False):
        xr = x.clone().requires_grad_()
        flux.zero_grad()
        lam = channel_view(torch.nn.functional.softplus(flux.raw_contrast), xr)
        out = flux(xr) if native else FusedFlux.apply(xr, lam, flux)
        assert (type(out.grad_fn).__name__.startswith('NativeRationalFlux')) == native
        (out * g).sum().backward()
        grads.append((xr.grad.clone(), flux.raw_contrast.grad.clone()))
    (gs, gl), (gs_ref, gl_ref) = grads
    assert torch.allclose(gs, gs_ref, atol=1e-6, rtol=1e-6)
    assert torch.allclose(gl, gl_ref, atol=1e-4 * gl_ref.abs().max().item(), rtol=1e-4)
