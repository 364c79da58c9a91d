"""Tests for the PDE-G-CNN layers (pdeblocks.layers.gcnn) and the timm models (pdeblocks.models.pde_gcnn).

References here are written from the formulas, independently of the code under test: the group
law of M₂, the logarithmic coordinates, trilinear interpolation and min/sum over all neighbours.
"""
import math

import pytest
import torch

from pdeblocks._native import native_available
from pdeblocks.layers._morphology import _min_plus_autograd_loop
from pdeblocks.layers.gcnn import (
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
    bspline,
    left_invariant_shift_m2,
    linear_convolution_m2,
    max_plus_convolution_m2,
    min_plus_convolution_m2,
    rotate_m2,
)

# ------------------------------------------------------------------------------------------------
# brute-force references
# ------------------------------------------------------------------------------------------------

def _wrap(angle):
    """Angle in (−π, π]."""
    a = math.fmod(angle + math.pi, 2 * math.pi)
    if a <= 0:
        a += 2 * math.pi
    return a - math.pi


def _log_coords(x, y, th):
    h = th / 2
    s = math.sin(h) / h if h != 0 else 1.0
    return (x * math.cos(h) + y * math.sin(h)) / s, (-x * math.sin(h) + y * math.cos(h)) / s, th


def _h_inv_g(h, g):
    """h⁻¹g for h, g = (x, y, θ) with (p, θ)(p', θ') = (p + R_θ p', θ + θ')."""
    dx, dy = g[0] - h[0], g[1] - h[1]
    c, s = math.cos(h[2]), math.sin(h[2])
    return c * dx + s * dy, -s * dx + c * dy, _wrap(g[2] - h[2])


def _rho2(w, q):
    c1, c2, c3 = _log_coords(*q)
    return abs(w[0]) * c1 ** 2 + abs(w[1]) * c2 ** 2 + abs(w[2]) * c3 ** 2


def _neighbours(o, row, col, Or, H, W, k, kt):
    """All h = (o', row', col') in the kernel window of g = (o, row, col), inside the image."""
    for d in range(-(kt // 2), kt // 2 + 1):
        for i in range(-(k // 2), k // 2 + 1):
            for j in range(-(k // 2), k // 2 + 1):
                if 0 <= row + i < H and 0 <= col + j < W:
                    yield (o + d) % Or, row + i, col + j


def _brute_m2(f, metric, k, kt, reduce):
    """reduce over h of (f(h), ρ̃²(h⁻¹g)) for every g; f: [B, C, Or, H, W] float64."""
    B, C, Or, H, W = f.shape
    out = torch.empty_like(f)
    step = 2 * math.pi / Or
    for b in range(B):
        for c in range(C):
            w = metric[c].tolist()
            for o in range(Or):
                for row in range(H):
                    for col in range(W):
                        g = (col, row, o * step)
                        terms = [(f[b, c, o2, r2, c2].item(), _rho2(w, _h_inv_g((c2, r2, o2 * step), g)))
                                 for o2, r2, c2 in _neighbours(o, row, col, Or, H, W, k, kt)]
                        out[b, c, o, row, col] = reduce(terms)
    return out


def _erosion_reference(f, metric, k, kt, alpha):
    beta = 2 * alpha / (2 * alpha - 1)
    return _brute_m2(f, metric, k, kt, lambda t: min(v + rho2 ** (beta / 2) / beta for v, rho2 in t))


def _dilation_reference(f, metric, k, kt, alpha):
    beta = 2 * alpha / (2 * alpha - 1)
    return _brute_m2(f, metric, k, kt, lambda t: max(v - rho2 ** (beta / 2) / beta for v, rho2 in t))


def _trilinear(fc, t, yy, xx):
    """fc: [Or, H, W]; linear and periodic in θ-index t, bilinear in (yy, xx), zero outside the image."""
    Or, H, W = fc.shape
    t0, y0, x0 = math.floor(t), math.floor(yy), math.floor(xx)
    total = 0.0
    for dt in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                wgt = (1 - abs(t - t0 - dt)) * (1 - abs(yy - y0 - dy)) * (1 - abs(xx - x0 - dx))
                if 0 <= y0 + dy < H and 0 <= x0 + dx < W:
                    total += wgt * fc[(t0 + dt) % Or, y0 + dy, x0 + dx].item()
    return total


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------------
# correctness against brute force
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('alpha', [0.55, 0.65, 1.0])
def test_erosion_and_dilation_m2_match_brute_force(alpha):
    Or, k, kt = 6, 3, 3
    f = torch.randn(1, 2, Or, 5, 6, dtype=torch.float64)
    ero = FractionalErosionM2(2, Or, k, kt, alpha=alpha).double()
    dil = FractionalDilationM2(2, Or, k, kt, alpha=alpha).double()
    with torch.no_grad():
        dil.metric.copy_(ero.metric)
        ero.metric[0, 1] = -ero.metric[0, 1]  # w is used as |w|
        got_e, got_d = ero(f), dil(f)
    torch.testing.assert_close(got_e, _erosion_reference(f, ero.metric, k, kt, alpha), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_d, _dilation_reference(f, dil.metric, k, kt, alpha), rtol=1e-10, atol=1e-10)


def test_erosion_m2_five_cubed_kernel_matches_brute_force():
    Or, k, kt = 8, 5, 5
    f = torch.randn(1, 1, Or, 6, 6, dtype=torch.float64)
    ero = FractionalErosionM2(1, Or, k, kt).double()
    with torch.no_grad():
        ero.metric.copy_(torch.tensor([[0.3, 1.7, 0.4]]))
        got = ero(f)
    torch.testing.assert_close(got, _erosion_reference(f, ero.metric, k, kt, 0.65), rtol=1e-10, atol=1e-10)


def test_diffusion_m2_matches_brute_force():
    Or, k, kt = 6, 3, 3
    f = torch.randn(1, 2, Or, 4, 5, dtype=torch.float64)
    dif = DiffusionM2(2, Or, k, kt).double()
    with torch.no_grad():
        got = dif(f)
    B, C, _, H, W = f.shape
    step = 2 * math.pi / Or
    ref = torch.empty_like(f)
    for c in range(C):
        w = dif.metric[c].tolist()
        for o in range(Or):
            # the normaliser runs over the full kernel window, also where it leaves the image
            g0 = (0.0, 0.0, o * step)
            norm = sum(math.exp(-_rho2(w, _h_inv_g((float(j), float(i), (o + d) * step), g0)))
                       for d in range(-1, 2) for i in range(-1, 2) for j in range(-1, 2))
            for row in range(H):
                for col in range(W):
                    g = (col, row, o * step)
                    ref[0, c, o, row, col] = sum(
                        f[0, c, o2, r2, c2].item() * math.exp(-_rho2(w, _h_inv_g((c2, r2, o2 * step), g)))
                        for o2, r2, c2 in _neighbours(o, row, col, Or, H, W, k, kt)) / norm
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_convection_m2_matches_trilinear_brute_force():
    Or = 6
    f = torch.randn(1, 2, Or, 5, 6, dtype=torch.float64)
    conv = ConvectionM2(2, Or).double()
    with torch.no_grad():
        conv.shift.copy_(torch.tensor([[0.7, -1.3, 0.4], [-0.45, 0.2, -2.9]]))
        got = conv(f)
    ref = torch.empty_like(f)
    step = 2 * math.pi / Or
    for c in range(2):
        x0, y0, t0 = conv.shift[c].tolist()
        for o in range(Or):
            th = o * step
            sx, sy = math.cos(th) * x0 - math.sin(th) * y0, math.sin(th) * x0 + math.cos(th) * y0
            for row in range(5):
                for col in range(6):
                    # f(g·g₀) with g·g₀ = (p + R_θ(x₀, y₀), θ + θ₀)
                    ref[0, c, o, row, col] = _trilinear(f[0, c], o + t0 / step, row + sy, col + sx)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_r2_layers_match_brute_force():
    f = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    alpha, k = 0.8, 5
    beta = 2 * alpha / (2 * alpha - 1)
    ero = FractionalErosionR2(3, k, alpha).double()
    dil = FractionalDilationR2(3, k, alpha).double()
    dif = DiffusionR2(3, k).double()
    con = ConvectionR2(3).double()
    with torch.no_grad():
        got_e, got_d, got_f, got_c = ero(f), dil(f), dif(f), con(f)
    ref_e, ref_d, ref_f, ref_c = (torch.empty_like(f) for _ in range(4))
    r = k // 2
    for b in range(2):
        for c in range(3):
            we, wd, wf = ero.metric[c].abs().tolist(), dil.metric[c].abs().tolist(), dif.metric[c].abs().tolist()
            norm = sum(math.exp(-(wf[0] * j * j + wf[1] * i * i)) for i in range(-r, r + 1) for j in range(-r, r + 1))
            for row in range(5):
                for col in range(6):
                    nb = [(i, j) for i in range(-r, r + 1) for j in range(-r, r + 1)
                          if 0 <= row + i < 5 and 0 <= col + j < 6]
                    v = [f[b, c, row + i, col + j].item() for i, j in nb]
                    ref_e[b, c, row, col] = min(
                        x + (we[0] * j * j + we[1] * i * i) ** (beta / 2) / beta for x, (i, j) in zip(v, nb))
                    ref_d[b, c, row, col] = max(
                        x - (wd[0] * j * j + wd[1] * i * i) ** (beta / 2) / beta for x, (i, j) in zip(v, nb))
                    ref_f[b, c, row, col] = sum(
                        x * math.exp(-(wf[0] * j * j + wf[1] * i * i)) for x, (i, j) in zip(v, nb)) / norm
                    x0, y0 = con.shift[c].tolist()
                    ref_c[b, c, row, col] = _trilinear(f[b, c].unsqueeze(0), 0.0, row + y0, col + x0)
    for got, ref in ((got_e, ref_e), (got_d, ref_d), (got_f, ref_f), (got_c, ref_c)):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_min_plus_unfold_reference_and_custom_backward_agree_with_plain_autograd():
    """The winner-routed backward equals autograd through a plain running minimum (no ties in random data)."""
    x = torch.randn(2, 3, 4, 7, 6, dtype=torch.float64, requires_grad=True)
    k = torch.rand(3, 4, 3, 5, 3, dtype=torch.float64, requires_grad=True)
    y = min_plus_convolution_m2(x, k)
    y_ref = _min_plus_autograd_loop(x, k)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, k), g)
    ref = torch.autograd.grad(y_ref, (x, k), g)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('native', ['1', '0'])
def test_min_plus_saves_only_a_small_index(native, monkeypatch):
    """Memory: the forward keeps one winner index per output element (int16 from the C kernel, uint8
    from the torch loop for ≤ 256 offsets), no unfolded tensor."""
    monkeypatch.setenv('PDEBLOCKS_NATIVE', native)
    x = torch.randn(2, 4, 8, 16, 16, requires_grad=True)
    k = torch.rand(4, 8, 5, 5, 5, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = min_plus_convolution_m2(x, k)
    expected = torch.int16 if native == '1' and native_available() else torch.uint8
    assert [t.dtype for t in saved] == [expected]
    assert sum(t.numel() * t.element_size() for t in saved) == y.numel() * expected.itemsize
    y.sum().backward()
    assert x.grad is not None and k.grad is not None


def _native_and_loop(fn, x, k, g, monkeypatch):
    """(out, ∂x, ∂k) from the C kernel and from the torch loop."""
    results = []
    for native in ('1', '0'):
        monkeypatch.setenv('PDEBLOCKS_NATIVE', native)
        xx, kk = x.detach().requires_grad_(), k.detach().requires_grad_()
        y = fn(xx, kk)
        results.append((y,) + torch.autograd.grad(y, (xx, kk), g))
    return results


needs_native = pytest.mark.skipif(not native_available(), reason='no C compiler: the fused kernel is not built')


@needs_native
@pytest.mark.parametrize('fn', [min_plus_convolution_m2, max_plus_convolution_m2])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_native_kernel_equals_torch_loop_including_ties(fn, dtype, monkeypatch):
    """Same values, and the same winner (first offset in (d, i, j) order) under massive ties:
    integer-valued inputs and kernels, so gradients must agree exactly, not just approximately."""
    g0 = torch.Generator().manual_seed(0)
    # the last three: 10×10 planes (whole vectors only), kernels wider than rw = 2 (the row padding is
    # shared between rows) and kernels larger than the image (reads reaching past a plane's last row)
    for shape, ks in (((2, 3, 8, 9, 11), (3, 5, 3)), ((1, 2, 4, 5, 4), (1, 1, 1)), ((2, 2, 6, 7, 70), (5, 3, 7)),
                      ((2, 2, 8, 10, 10), (5, 5, 5)), ((1, 2, 6, 20, 17), (3, 11, 13)), ((2, 1, 4, 4, 3), (3, 9, 9))):
        x = torch.randint(0, 3, shape, generator=g0).to(dtype)
        k = torch.randint(0, 2, (shape[1], shape[2]) + ks, generator=g0).to(dtype)
        g = torch.randint(-3, 4, shape, generator=g0).to(dtype)
        (y, gx, gk), (y2, gx2, gk2) = _native_and_loop(fn, x, k, g, monkeypatch)
        for a, b in ((y, y2), (gx, gx2), (gk, gk2)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_native
@pytest.mark.parametrize('fn', [min_plus_convolution_m2, max_plus_convolution_m2])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_native_kernel_skipping_offsets_that_cannot_win_is_exact(fn, dtype, monkeypatch):
    """The C kernel leaves out, per block of positions, the offsets whose candidate provably exceeds the
    centre's. Smooth integer-valued inputs and steep integer kernels make most offsets skippable and
    keep massive ties; ±inf inputs and infinite kernel taps are included. Values, winners (so both
    gradients) must equal the torch loop's exactly, and the skipping must not change the C result."""
    from pdeblocks.layers._morphology import _native_forward
    g0 = torch.Generator().manual_seed(1)
    for shape, ks in (((2, 3, 8, 21, 19), (5, 5, 5)), ((1, 2, 6, 40, 9), (3, 7, 3)), ((2, 2, 4, 5, 70), (3, 3, 9))):
        B, C, Or, H, W = shape
        yy = torch.arange(H, dtype=torch.float64).view(1, 1, 1, H, 1)
        xx = torch.arange(W, dtype=torch.float64).view(1, 1, 1, 1, W)
        phase = torch.rand(B, C, Or, 1, 1, generator=g0, dtype=torch.float64) * 6
        x = torch.round(4 * torch.sin(0.3 * yy + phase) * torch.cos(0.2 * xx - phase)).to(dtype)
        x[0, 0, 0, 2, 3], x[-1, -1, -1, 1, 1] = float('inf'), -float('inf')
        kt, kh, kw = ks
        d = (torch.arange(kt) - kt // 2).view(kt, 1, 1) ** 2
        i = (torch.arange(kh) - kh // 2).view(1, kh, 1) ** 2
        j = (torch.arange(kw) - kw // 2).view(1, 1, kw) ** 2
        k = (torch.randint(1, 4, (C, Or, 1, 1, 1), generator=g0) * (d + i + j)).to(dtype)
        k[0, 0, 0, 0, 0] = float('inf')
        g = torch.randint(-3, 4, shape, generator=g0).to(dtype)
        (y, gx, gk), (y2, gx2, gk2) = _native_and_loop(fn, x, k, g, monkeypatch)
        for a, b in ((y, y2), (gx, gx2), (gk, gk2)):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        monkeypatch.setenv('PDEBLOCKS_NATIVE', '1')
        dilation = fn is max_plus_convolution_m2
        skipped, full = _native_forward(x, k, dilation, True, True), _native_forward(x, k, dilation, True, False)
        assert torch.equal(skipped[0], full[0]) and torch.equal(skipped[1], full[1])


@needs_native
def test_native_kernel_skipping_ignores_blocks_with_nan():
    """A NaN input never wins (strict <); a (b, c) block holding one is evaluated without skipping, so
    the result equals the full evaluation, and both equal unfold + amin with NaN read as +inf."""
    from pdeblocks.layers._morphology import _native_forward
    x = torch.randn(2, 2, 4, 9, 9, dtype=torch.float64)
    x[0, 1, 2, 4, 4] = float('nan')
    x[1, 0, :, :, :] = float('nan')
    k = 10 * torch.rand(2, 4, 3, 5, 5, dtype=torch.float64)
    k[:, :, 1, 2, 2] = 0
    skipped, full = _native_forward(x, k, False, True, True), _native_forward(x, k, False, True, False)
    assert torch.equal(skipped[0], full[0]) and torch.equal(skipped[1], full[1])
    xp = torch.cat([x[:, :, -1:], x, x[:, :, :1]], dim=2).nan_to_num(nan=float('inf'))
    xp = torch.nn.functional.pad(xp, [2, 2, 2, 2], value=float('inf'))
    ref = (xp.unfold(2, 3, 1).unfold(3, 5, 1).unfold(4, 5, 1) + k[None, :, :, None, None]).amin(dim=(-3, -2, -1))
    torch.testing.assert_close(skipped[0], ref, rtol=0, atol=0)


@needs_native
def test_native_kernel_matches_unfold_and_gradcheck(monkeypatch):
    """Against an independent unfold + amin on random data, and gradcheck (float64) of both signs."""
    monkeypatch.setenv('PDEBLOCKS_NATIVE', '1')
    x = torch.randn(2, 3, 6, 7, 5, dtype=torch.float64, requires_grad=True)
    k = torch.rand(3, 6, 3, 3, 5, dtype=torch.float64, requires_grad=True)
    xp = torch.cat([x[:, :, -1:], x, x[:, :, :1]], dim=2)
    xp = torch.nn.functional.pad(xp, [2, 2, 1, 1], value=float('inf'))
    patches = xp.unfold(2, 3, 1).unfold(3, 3, 1).unfold(4, 5, 1)
    ref = (patches + k[None, :, :, None, None]).amin(dim=(-3, -2, -1))
    torch.testing.assert_close(min_plus_convolution_m2(x, k), ref, rtol=0, atol=0)
    torch.autograd.gradcheck(min_plus_convolution_m2, (x, k))
    torch.autograd.gradcheck(max_plus_convolution_m2, (x, k))


@needs_native
def test_native_shift_equals_torch_path_and_gradcheck(monkeypatch):
    """Convection's C kernel against the index_select + grid_sample path (values and all gradients),
    including shifts larger than the image and a single orientation; gradcheck in float64."""
    torch.manual_seed(0)
    for shape, scale in (((2, 3, 8, 9, 11), 1.0), ((2, 3, 4, 6, 5), 3.0), ((1, 2, 1, 5, 7), 20.0)):
        x = torch.randn(*shape, dtype=torch.float64)
        shift = torch.randn(shape[1], 3, dtype=torch.float64) * scale
        g = torch.randn(*shape, dtype=torch.float64)
        results = []
        for native in ('1', '0'):
            monkeypatch.setenv('PDEBLOCKS_NATIVE', native)
            xx, ss = x.clone().requires_grad_(), shift.clone().requires_grad_()
            y = left_invariant_shift_m2(xx, ss)
            results.append((y,) + torch.autograd.grad(y, (xx, ss), g))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    monkeypatch.setenv('PDEBLOCKS_NATIVE', '1')
    x = torch.randn(2, 3, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    shift = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(left_invariant_shift_m2, (x, shift))


def test_geometry_cache_is_plain_constants_per_dtype():
    """The constant geometry (offsets, B-spline rotation matrix, cos/sin of the orientations) is cached.
    A first forward under inference mode must leave no inference tensors in the cache (a later
    training forward saves them for backward), and float64 layers get their own float64 entries."""
    from pdeblocks.layers import m2
    m2._GEOMETRY_CACHE.clear()
    torch.manual_seed(0)
    net = torch.nn.Sequential(LiftM2Cartesian(1, 3, 4, 5), CDELayerM2(3, 3, 4, 3)).eval()
    x = torch.randn(2, 1, 9, 9)
    with torch.inference_mode():
        y0 = net(x)
    cached = list(m2._GEOMETRY_CACHE.values())
    assert len(cached) == 3 and not any(t.is_inference() or t.requires_grad for t in cached)
    y = net(x)
    y.square().sum().backward()
    torch.testing.assert_close(y.detach(), y0, rtol=0, atol=0)
    assert all(p.grad is not None for p in net.parameters())
    net.double()(x.double())
    assert len(m2._GEOMETRY_CACHE) == 6
    assert {t.dtype for t in m2._GEOMETRY_CACHE.values()} == {torch.float32, torch.float64}


def test_native_kernel_falls_back_without_a_compiler(monkeypatch, tmp_path):
    """No working compiler: native_library() is None and the layers still work (torch loop)."""
    from pdeblocks import _native as nat
    monkeypatch.setattr(nat, '_state', {'tried': False, 'lib': None, 'error': ''})
    monkeypatch.setenv('PDEBLOCKS_CACHE', str(tmp_path))
    monkeypatch.setenv('CC', str(tmp_path / 'no-such-compiler'))
    assert nat.native_library() is None and 'no-such-compiler' in nat._state['error']
    x = torch.randn(1, 2, 4, 5, 5, requires_grad=True)
    y = max_plus_convolution_m2(x, torch.rand(2, 4, 3, 3, 3))
    y.sum().backward()
    assert x.grad is not None


# ------------------------------------------------------------------------------------------------
# identities
# ------------------------------------------------------------------------------------------------

def test_delta_kernels_give_the_identity():
    x = torch.randn(2, 3, 4, 6, 7, dtype=torch.float64)
    k = torch.full((3, 4, 3, 5, 5), float('inf'), dtype=torch.float64)
    k[:, :, 1, 2, 2] = 0  # morphological delta: 0 at the identity, +∞ elsewhere
    assert torch.equal(min_plus_convolution_m2(x, k), x)
    assert torch.equal(max_plus_convolution_m2(x, k), x)
    lin = torch.zeros(3, 4, 3, 5, 5, dtype=torch.float64)
    lin[:, :, 1, 2, 2] = 1  # linear delta
    torch.testing.assert_close(linear_convolution_m2(x, lin), x, rtol=0, atol=1e-15)
    # layers with their parameters at the delta limit
    conv = ConvectionM2(3, 4).double()
    ero, dil, dif = FractionalErosionM2(3, 4, 5).double(), FractionalDilationM2(3, 4, 5).double(), DiffusionM2(3, 4, 5).double()
    with torch.no_grad():
        conv.shift.zero_()
        for m in (ero, dil, dif):
            m.metric.fill_(1e4)
        torch.testing.assert_close(conv(x), x, rtol=0, atol=1e-15)
        for m in (ero, dil, dif):
            torch.testing.assert_close(m(x), x, rtol=0, atol=1e-12)


def test_lift_order1_at_zero_angle_is_plain_correlation_and_splines_sum_to_one():
    lift = LiftM2Cartesian(2, 3, 4, 5, spline_order=1).double()
    x = torch.randn(2, 2, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        y = lift(x)
    ref = torch.nn.functional.conv2d(x, lift.weight, padding=2)
    torch.testing.assert_close(y[:, :, 0], ref)
    # 90° steps rotate the kernel grid exactly: K_{o+1}(p) = K_o(R_{−90°} p)
    K = lift.rotated_kernels().detach()
    for o in range(3):
        torch.testing.assert_close(K[:, o + 1], torch.rot90(K[:, o], -1, dims=(-2, -1)), rtol=0, atol=1e-12)
    t = torch.linspace(-3, 3, 61, dtype=torch.float64)
    for order in range(4):
        total = sum(bspline(t - n, order) for n in range(-6, 7))
        torch.testing.assert_close(total, torch.ones_like(t), rtol=0, atol=1e-12)


def test_projection_and_linear_m2():
    x = torch.randn(2, 3, 4, 5, 5)
    torch.testing.assert_close(ProjectM2('max')(x), x.max(dim=2).values)
    torch.testing.assert_close(ProjectM2('sum')(x), x.sum(dim=2))
    lin = LinearM2(3, 2)
    torch.testing.assert_close(lin(x), torch.einsum('dc,bcohw->bdohw', lin.weight, x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------------

def _gradcheck_module(module, x):
    """gradcheck with respect to the input and every parameter of ``module`` (float64)."""
    module = module.double()
    names = [n for n, _ in module.named_parameters()]

    def fn(inp, *ps):
        return torch.func.functional_call(module, dict(zip(names, ps)), (inp,))

    inputs = (x.double().requires_grad_(),) + tuple(p.detach().clone().requires_grad_() for p in module.parameters())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('name', ['lift', 'convection', 'diffusion', 'dilation', 'erosion', 'linear', 'cde',
                                  'convection_r2', 'diffusion_r2', 'dilation_r2', 'erosion_r2', 'cde_r2'])
def test_gradcheck_every_layer(name):
    Or = 4
    m2 = torch.randn(1, 2, Or, 5, 5)
    r2 = torch.randn(1, 2, 5, 5)
    layers = {
        'lift': (LiftM2Cartesian(2, 2, Or, 3), r2),
        'convection': (ConvectionM2(2, Or), m2),
        'diffusion': (DiffusionM2(2, Or, 3), m2),
        'dilation': (FractionalDilationM2(2, Or, 3, alpha=0.8), m2),
        'erosion': (FractionalErosionM2(2, Or, 3, alpha=0.6), m2),
        'linear': (LinearM2(2, 3), m2),
        'cde': (CDELayerM2(2, 2, Or, 3, norm=False), m2),
        'convection_r2': (ConvectionR2(2), r2),
        'diffusion_r2': (DiffusionR2(2, 3), r2),
        'dilation_r2': (FractionalDilationR2(2, 3), r2),
        'erosion_r2': (FractionalErosionR2(2, 3), r2),
        'cde_r2': (CDELayerR2(2, 2, 3, norm=False), r2),
    }
    module, x = layers[name]
    _gradcheck_module(module, x)


# ------------------------------------------------------------------------------------------------
# equivariance
# ------------------------------------------------------------------------------------------------

def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize('Or', [4, 8, 12])
def test_lift_cde_project_commutes_with_quarter_turns(Or):
    net = torch.nn.Sequential(
        LiftM2Cartesian(1, 4, Or, 5), CDELayerM2(4, 4, Or, 5), CDELayerM2(4, 3, Or, 3, iterations=2), ProjectM2()
    ).eval()
    x = torch.randn(2, 1, 15, 15)
    with torch.no_grad():
        y = net(x)
        for turns in (1, 2, 3):
            y_rot = net(torch.rot90(x, turns, dims=(-2, -1)))
            assert _rel(y_rot, torch.rot90(y, turns, dims=(-2, -1))) <= 1e-5


@pytest.mark.parametrize('layer', ['convection', 'diffusion', 'dilation', 'erosion', 'cde'])
def test_m2_layers_commute_with_the_m2_rotation(layer):
    Or = 8
    module = {
        'convection': ConvectionM2(3, Or), 'diffusion': DiffusionM2(3, Or, 5), 'dilation': FractionalDilationM2(3, Or, 5),
        'erosion': FractionalErosionM2(3, Or, 5), 'cde': CDELayerM2(3, 3, Or, 5).eval(),
    }[layer]
    x = torch.randn(2, 3, Or, 11, 11)
    with torch.no_grad():
        for turns in (1, 2, 3):
            assert _rel(module(rotate_m2(x, turns)), rotate_m2(module(x), turns)) <= 1e-5


def test_lift_is_equivariant_with_rotate_m2():
    lift = LiftM2Cartesian(2, 3, 8, 5)
    x = torch.randn(1, 2, 13, 13)
    with torch.no_grad():
        # an image rotation R_{+90°} (torch.rot90 with k = −1) lifts to rotate_m2(·, 1)
        assert _rel(lift(torch.rot90(x, -1, dims=(-2, -1))), rotate_m2(lift(x), 1)) <= 1e-6


@pytest.mark.parametrize('model_name', ['pde_gcnn', 'pde_gcnn_small', 'pde_gcnn_steerable'])
def test_pde_gcnn_logits_invariant_to_quarter_turns(model_name):
    import timm

    import pdeblocks.models.pde_gcnn  # noqa: F401 registers the models
    model = timm.create_model(model_name, num_classes=5).eval()
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        y = model(x)
        for turns in (1, 2, 3):
            torch.testing.assert_close(model(torch.rot90(x, turns, dims=(-2, -1))), y, rtol=1e-5, atol=1e-5)


def _rotate_image(x, angle_deg):
    """Bilinear rotation of [B, C, H, W] about the centre (zero outside)."""
    a = math.radians(angle_deg)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
    grid = torch.nn.functional.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=True)
    return torch.nn.functional.grid_sample(x, grid, align_corners=True)


def _smooth_disc_image(size, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, size, size, generator=g, dtype=torch.float64)
    x = torch.nn.functional.avg_pool2d(torch.nn.functional.avg_pool2d(x, 3, 1, 1), 3, 1, 1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing='ij')
    return x * ((xx ** 2 + yy ** 2) < 0.5).to(x.dtype)


def test_rotation_by_other_angles_is_approximately_equivariant():
    """Off the 90° grid equivariance is approximate (interpolation); at 90° it is exact."""
    Or, size = 8, 33
    net = torch.nn.Sequential(LiftM2Cartesian(1, 4, Or, 5), CDELayerM2(4, 4, Or, 5), ProjectM2()).double().eval()
    x = _smooth_disc_image(size, 0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing='ij')
    inner = ((xx ** 2 + yy ** 2) < 0.35).to(x.dtype)
    errors = {}
    with torch.no_grad():
        for angle in (90.0, 45.0, 30.0):
            a = net(_rotate_image(x, angle)) * inner
            b = _rotate_image(net(x), angle) * inner
            errors[angle] = _rel(a, b)
    assert errors[90.0] < 1e-5
    assert 1e-4 < errors[45.0] < 0.5 and 1e-4 < errors[30.0] < 0.5, errors


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------

def test_bad_input_raises_value_errors():
    with pytest.raises(ValueError, match='alpha'):
        FractionalErosionM2(2, 4, 5, alpha=0.5)
    with pytest.raises(ValueError, match='alpha'):
        FractionalDilationR2(2, 5, alpha=1.2)
    with pytest.raises(ValueError, match='kernel_size'):
        DiffusionM2(2, 4, 4)
    with pytest.raises(ValueError, match='kernel_size'):
        LiftM2Cartesian(1, 2, 4, 6)
    with pytest.raises(ValueError, match='orientation_kernel_size'):
        FractionalErosionM2(2, 4, 5, orientation_kernel_size=2)
    with pytest.raises(ValueError, match='orientation_kernel_size'):
        FractionalErosionM2(2, 4, 5, orientation_kernel_size=5)
    with pytest.raises(ValueError, match='divisible by 4'):
        rotate_m2(torch.zeros(1, 1, 6, 3, 3), 1)
    with pytest.raises(ValueError, match='even'):
        rotate_m2(torch.zeros(1, 1, 5, 3, 3), 2)
    with pytest.raises(ValueError, match='5 dims'):
        FractionalErosionM2(2, 4, 3)(torch.zeros(2, 4, 5, 5))
    with pytest.raises(ValueError, match='Or=4'):
        ConvectionM2(2, 4)(torch.zeros(1, 2, 6, 5, 5))
    with pytest.raises(ValueError, match='4 dims'):
        LiftM2Cartesian(1, 2, 4, 3)(torch.zeros(1, 1, 4, 5, 5))
    with pytest.raises(ValueError, match='C=2'):
        DiffusionR2(2, 3)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(ValueError, match='odd'):
        min_plus_convolution_m2(torch.zeros(1, 1, 4, 5, 5), torch.zeros(1, 4, 3, 4, 3))
    with pytest.raises(ValueError, match="'max' or 'sum'"):
        ProjectM2('mean')
    with pytest.raises(ValueError, match=r'shape \[2, 3, 4\]'):
        ProjectM2()(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r'5 dims.*shape \[2, 2, 4, 5\]'):
        LinearM2(2, 3)(torch.zeros(2, 2, 4, 5))
    with pytest.raises(ValueError, match='C=2'):
        LinearM2(2, 3)(torch.zeros(2, 3, 4, 5, 5))
    with pytest.raises(ValueError, match=r'6 dims, shape \[1, 2, 4, 5, 5, 1\]'):
        CDELayerM2(2, 2, 4, 3)(torch.zeros(1, 2, 4, 5, 5, 1))
    for bad_or in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match='orientations must be a positive int'):
            LiftM2Cartesian(1, 2, bad_or, 3)
    for bad_alpha in (0.5, 1.2, float('nan'), True):
        with pytest.raises(ValueError, match=r'alpha must be a number in \[0.55, 1\]'):
            CDELayerM2(2, 2, 4, 3, alpha=bad_alpha)


@pytest.mark.parametrize('kwargs, match', [
    (dict(orientations=0), 'orientations must be a positive int'),
    (dict(orientations=6.0), 'orientations must be a positive int'),
    (dict(kernel_size=4), 'kernel_size must be a positive odd int'),
    (dict(lift_kernel_size=6), 'kernel_size must be a positive odd int'),
    (dict(orientation_kernel_size=9), r'orientation_kernel_size must be <= orientations \(8\)'),
    (dict(alpha=0.54), r'alpha must be a number in \[0.55, 1\]'),
])
def test_pde_gcnn_bad_configuration_raises(kwargs, match):
    import timm

    import pdeblocks.models.pde_gcnn  # noqa: F401
    with pytest.raises(ValueError, match=match):
        timm.create_model('pde_gcnn', **kwargs)


@pytest.mark.parametrize('in_chans', [1, 2, 3, 5])
def test_pde_gcnn_other_in_chans(in_chans):
    """timm users build any in_chans; the lift takes them, and a wrong count is a ValueError naming the shape."""
    import timm

    import pdeblocks.models.pde_gcnn  # noqa: F401
    model = timm.create_model('pde_gcnn_small', in_chans=in_chans, num_classes=4).eval()
    assert model.stem.lift.in_channels == in_chans
    with torch.no_grad():
        assert model(torch.randn(2, in_chans, 12, 12)).shape == (2, 4)
    with pytest.raises(ValueError, match=rf'C={in_chans}.*\[2, {in_chans + 1}, 12, 12\]'):
        model(torch.randn(2, in_chans + 1, 12, 12))


# ------------------------------------------------------------------------------------------------
# scripting, dtypes, devices, timm API
# ------------------------------------------------------------------------------------------------

def test_torchscript_matches_eager():
    net = torch.nn.Sequential(LiftM2Cartesian(1, 3, 4, 3), CDELayerM2(3, 2, 4, 3), ProjectM2()).eval()
    x = torch.randn(1, 1, 9, 9)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_bfloat16_forward():
    net = torch.nn.Sequential(LiftM2Cartesian(1, 3, 4, 3), CDELayerM2(3, 2, 4, 3), ProjectM2()).eval()
    x = torch.randn(1, 1, 9, 9)
    y = net.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_timm_model_api():
    import timm

    import pdeblocks.models.pde_gcnn  # noqa: F401
    model = timm.create_model('pde_gcnn_small', num_classes=7).eval()
    assert model.in_chans == 3 == model.pretrained_cfg['input_size'][0]  # timm's default, like every timm model
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert len(inter) == len(model.feature_info) == 4
        assert all(t.shape == (2, 8, 16, 16) for t in inter)
        torch.testing.assert_close(final, model.forward_features(x))
        assert model(x).shape == (2, 7)
        assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.head_hidden_size)
    with pytest.raises(TypeError):
        timm.create_model('pde_gcnn_small', not_an_arg=1)
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3 and model.num_classes == 3
    feats = timm.create_model('pde_gcnn_small', features_only=True, out_indices=(1, 3)).eval()
    with torch.no_grad():
        out = feats(x)
    assert [t.shape[1] for t in out] == feats.feature_info.channels() == [8, 8]
    meta = timm.create_model('pde_gcnn', device='meta')
    assert all(p.device.type == 'meta' for p in meta.parameters())


def test_grad_checkpointing_matches():
    import timm

    import pdeblocks.models.pde_gcnn  # noqa: F401
    model = timm.create_model('pde_gcnn_small').train()
    x = torch.randn(2, 3, 12, 12)
    y = model(x)
    model.set_grad_checkpointing(True)
    y2 = model(x)
    torch.testing.assert_close(y, y2)
    y2.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    x = torch.randn(2, 3, 8, 12, 12, dtype=torch.float64, requires_grad=True)
    layer = CDELayerM2(3, 4, 8, 5).double().eval()
    y = layer(x)
    y.square().sum().backward()
    xc = x.detach().cuda().requires_grad_()
    layer_c = CDELayerM2(3, 4, 8, 5).double().eval().cuda()
    layer_c.load_state_dict(layer.state_dict())
    yc = layer_c(xc)
    yc.square().sum().backward()
    torch.testing.assert_close(yc.cpu(), y)
    torch.testing.assert_close(xc.grad.cpu(), x.grad)
    for p, pc in zip(layer.parameters(), layer_c.parameters()):
        torch.testing.assert_close(pc.grad.cpu(), p.grad)


def test_segmentation_model_is_equivariant_to_quarter_turns():
    """Per-pixel logits of the dense PDE-G-CNN rotate with the image (Or divisible by 4)."""
    from pdeblocks.models.pde_gcnn import PDEGCNNSegmentation
    torch.manual_seed(0)
    model = PDEGCNNSegmentation(in_chans=2, out_chans=3, channels=4, orientations=8, depth=2, kernel_size=3).eval()
    x = torch.randn(2, 2, 13, 13)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 3, 13, 13)
        for turns in (1, 2, 3):
            torch.testing.assert_close(model(torch.rot90(x, turns, dims=(-2, -1))), torch.rot90(y, turns, dims=(-2, -1)),
                                       rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='depth must be a positive int'):
        PDEGCNNSegmentation(depth=0)


@needs_native
def test_native_kernels_with_two_threads_match_one_thread():
    """Plane and channel ranges split over a thread pool give the same values and gradients (float64:
    the channel mixing's conv1d sums in another order with two threads, nothing else may differ)."""
    torch.manual_seed(0)
    layer = CDELayerM2(3, 3, 4, 3).double()
    x = torch.randn(2, 3, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    results = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            x.grad = None
            layer.zero_grad()
            y = layer(x)
            y.square().sum().backward()
            results.append([y.detach(), x.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
