"""The steerable (bandlimited) lift, spatial max pooling on M₂ and the pde_gcnn options that use them.

References are written from the formulas in the test: the continuous kernel is evaluated at the
rotated grid point R_θ⁻¹p (no phase shifts), max pooling by explicit loops over windows.
"""
import math

import pytest
import torch

from pdeblocks.layers.gcnn import LiftM2Steerable, SpatialMaxPoolM2, rotate_m2
from pdeblocks.layers.m2 import steerable_frequencies


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _continuous_kernel(a, pairs, u, v, R, sigma):
    """K(u, v) = Σ_b a_b ψ_b(u, v) for one (out, in) pair, ψ from the formula, unnormalised coefficients a
    given per (ring, frequency, cos/sin) in the order of ``pairs`` (m = 0: one coefficient)."""
    r = math.hypot(u, v)
    phi = math.atan2(v, u)
    if r <= R:
        window = 1.0
    elif r < R + 0.5:
        window = 0.5 * (1 + math.cos(2 * math.pi * (r - R)))
    else:
        window = 0.0
    total, b = 0.0, 0
    for j, m in pairs:
        g = math.exp(-(r - j) ** 2 / (2 * sigma ** 2)) * window
        if m == 0:
            total += a[b] * g
            b += 1
        else:
            if r > 0:
                total += a[b] * g * math.cos(m * phi) + a[b + 1] * g * math.sin(m * phi)
            b += 2
    return total


def test_steerable_lift_kernels_are_the_analytic_rotation_of_one_continuous_kernel():
    Or, k, mf, sigma = 8, 5, 3, 0.6
    lift = LiftM2Steerable(2, 3, Or, k, max_frequency=mf, ring_width=sigma).double()
    pairs = steerable_frequencies(k, mf)
    R = k // 2
    # the basis is normalised per function: recover the unnormalised coefficients from orientation 0
    basis0 = lift.basis[0]  # [nb, k, k]
    raw = []
    for j, m in pairs:
        raw += [(j, m, 'c')] + ([(j, m, 's')] if m else [])
    norms = []
    for (j, m, cs) in raw:
        vals = torch.tensor([[_continuous_kernel([1.0 if q == (j, m, cs) else 0.0 for q in raw], pairs, x - R, y - R,
                                                 R, sigma) for x in range(k)] for y in range(k)], dtype=torch.float64)
        norms.append(vals.norm().item())
    K = lift.rotated_kernels().detach()  # [out, Or, in, k, k]
    for c in range(3):
        for i in range(2):
            a = (lift.weight[c, i].detach() / torch.tensor(norms, dtype=torch.float64)).tolist()
            for o in range(Or):
                th = 2 * math.pi * o / Or
                ref = torch.tensor([[_continuous_kernel(a, pairs, math.cos(th) * (x - R) + math.sin(th) * (y - R),
                                                        -math.sin(th) * (x - R) + math.cos(th) * (y - R), R, sigma)
                                     for x in range(k)] for y in range(k)], dtype=torch.float64)
                torch.testing.assert_close(K[c, o, i], ref, rtol=0, atol=1e-12)
    assert basis0.shape[0] == len(raw) == lift.basis_size == 13
    # support inside the disc of radius R + 1/2: the corners of the 5×5 stencil are zero at every orientation
    assert K[..., 0, 0].abs().max() == 0 and K[..., -1, -1].abs().max() == 0


def test_steerable_lift_quarter_turns_are_exact_and_theta_is_bandlimited():
    Or = 8
    lift = LiftM2Steerable(1, 4, Or, 5).double()
    assert lift.max_frequency == 3  # ⌈Or/2⌉ − 1
    K = lift.rotated_kernels().detach()
    for o in range(Or - 2):  # a quarter turn = 2 orientation steps = the grid rotated exactly
        torch.testing.assert_close(K[:, o + 2], torch.rot90(K[:, o], -1, dims=(-2, -1)), rtol=0, atol=1e-12)
    # every tap, as a function of θ_o, holds only harmonics m ≤ max_frequency
    spectrum = torch.fft.rfft(K, dim=1).abs()  # [out, Or/2 + 1, in, k, k]
    assert spectrum[:, lift.max_frequency + 1:].max() < 1e-12 < spectrum[:, lift.max_frequency].max()
    x = torch.randn(2, 1, 14, 14)
    with torch.no_grad():
        y = lift.float()(x)
        torch.testing.assert_close(lift(torch.rot90(x, -1, dims=(-2, -1))), rotate_m2(y, 1), rtol=1e-5, atol=1e-6)


def test_steerable_lift_off_grid_error_is_below_the_bspline_lift():
    """Measured at 45° on smooth images: the bandlimited lift commutes with rotation better."""
    from pdeblocks.layers.gcnn import LiftM2Cartesian

    def rotate(x, deg):
        a = math.radians(deg)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
        grid = torch.nn.functional.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=True)
        return torch.nn.functional.grid_sample(x, grid, align_corners=True)

    size = 33
    x = torch.randn(4, 1, size, size, dtype=torch.float64)
    x = torch.nn.functional.avg_pool2d(torch.nn.functional.avg_pool2d(x, 3, 1, 1), 3, 1, 1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing='ij')
    x = x * ((xx ** 2 + yy ** 2) < 0.5).to(x.dtype)
    inner = ((xx ** 2 + yy ** 2) < 0.3).to(x.dtype)
    errors = {}
    for name, lift in (('steerable', LiftM2Steerable(1, 16, 8, 5)), ('bspline', LiftM2Cartesian(1, 16, 8, 5))):
        lift = lift.double()
        with torch.no_grad():
            a = lift(rotate(x, 45.0)).amax(2) * inner
            b = rotate(lift(x).amax(2), 45.0) * inner
        errors[name] = ((a - b).norm() / b.norm()).item()
    assert errors['steerable'] < errors['bspline'], errors


def test_spatial_max_pool_m2_matches_windows_and_commutes_with_quarter_turns():
    x = torch.randn(2, 3, 4, 6, 8)
    pool = SpatialMaxPoolM2(2)
    y = pool(x)
    assert y.shape == (2, 3, 4, 3, 4)
    for yy in range(3):
        for xx in range(4):
            ref = x[..., 2 * yy:2 * yy + 2, 2 * xx:2 * xx + 2].amax(dim=(-2, -1))
            assert torch.equal(y[..., yy, xx], ref)
    z = torch.randn(1, 2, 8, 10, 10)
    for turns in (1, 2, 3):
        assert torch.equal(pool(rotate_m2(z, turns)), rotate_m2(pool(z), turns))
    with pytest.raises(ValueError, match='stride must be a positive int'):
        SpatialMaxPoolM2(0)
    with pytest.raises(ValueError, match='5 dims'):
        pool(torch.zeros(2, 3, 6, 8))


SQUARE_TAPS = [(0, 0), (0, 1), (1, 0), (1, 1)]
ROUND_TAPS = [(-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (0, 2), (1, -1), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]


def _pool_reference(x: torch.Tensor, g: torch.Tensor, taps=SQUARE_TAPS):
    """Max pooling with stride 2 of [P, H, W] planes over the window ``taps`` (offsets from (2y, 2x), in row-major
    order; the 2×2 window or the round 12-pixel one) by explicit loops: pixels outside the plane skipped, a candidate
    replaces the running maximum if it is larger or NaN; the gradient g is added at the winner."""
    P, H, W = x.shape
    out = torch.empty(P, H // 2, W // 2, dtype=x.dtype)
    gx = torch.zeros_like(x)
    for p in range(P):
        for yy in range(H // 2):
            for xx in range(W // 2):
                best, at = None, None
                for dy, dx in taps:
                    r, c = 2 * yy + dy, 2 * xx + dx
                    if 0 <= r < H and 0 <= c < W:
                        v = x[p, r, c].item()
                        if best is None or v > best or v != v:
                            best, at = v, (r, c)
                out[p, yy, xx] = best
                gx[p, at[0], at[1]] += g[p, yy, xx]
    return out, gx


@pytest.mark.parametrize('native', ['1', '0'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('size', [(6, 8), (5, 7), (2, 3)])
def test_spatial_max_pool_m2_values_and_winners_match_window_scan(native, dtype, size, monkeypatch):
    # the C kernel (native '1') and max_pool2d ('0'): integer values full of ties, ±inf and a NaN, odd sizes
    monkeypatch.setenv('PDEBLOCKS_NATIVE', native)
    H, W = size
    x = torch.randint(-2, 3, (2, 3, 4, H, W)).to(dtype)
    x[0, 0, 0, 0, 1] = float('nan')
    x[1, 2, 3] = float('-inf')
    x[0, 1, 2, -1, -1] = float('inf')
    g = torch.randn(2, 3, 4, H // 2, W // 2, dtype=dtype)
    xr = x.clone().requires_grad_()
    y = SpatialMaxPoolM2(2)(xr)
    y.backward(g)
    ref, gref = _pool_reference(x.reshape(24, H, W), g.reshape(24, H // 2, W // 2))
    assert torch.equal(torch.nan_to_num(y.detach(), nan=7.0), torch.nan_to_num(ref.view_as(y), nan=7.0))
    assert torch.equal(xr.grad, gref.view_as(x))
    with pytest.raises(ValueError, match=r'needs H, W >= 2, got shape \[1, 1, 1, 1, 5\]'):
        SpatialMaxPoolM2(2)(torch.zeros(1, 1, 1, 1, 5, dtype=dtype))


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('size', [(6, 8), (5, 7), (2, 3), (20, 20), (15, 22)])
def test_round_window_pool_matches_window_scan(dtype, size, monkeypatch):
    # the C kernel: integer values full of ties, ±inf and NaNs, odd sizes; values and winners as the scan. The
    # larger sizes span several vectors of the C kernel's loop; a -inf corner block puts maxima of -inf at the
    # border (where the kernel's -inf padding must not win), two NaNs in one window (the later one wins)
    H, W = size
    x = torch.randint(-2, 3, (2, 3, 4, H, W)).to(dtype)
    x[0, 0, 0, 0, 1] = float('nan')
    x[1, 2, 3] = float('-inf')
    x[0, 1, 2, -1, -1] = float('inf')
    x[1, 0, 1, :3, :3] = float('-inf')
    x[1, 1, 1, -3:, -4:] = float('-inf')
    x[0, 2, 0, 1, 1:3] = float('nan')
    g = torch.randn(2, 3, 4, H // 2, W // 2, dtype=dtype)
    ref, gref = _pool_reference(x.reshape(24, H, W), g.reshape(24, H // 2, W // 2), ROUND_TAPS)
    for native in ('1', '0'):   # '0': two max_pool2d and a maximum, the same values
        monkeypatch.setenv('PDEBLOCKS_NATIVE', native)
        xr = x.clone().requires_grad_()
        y = SpatialMaxPoolM2(2, 'round')(xr)
        assert torch.equal(torch.nan_to_num(y.detach(), nan=7.0), torch.nan_to_num(ref.view_as(y), nan=7.0))
        if native == '1':
            y.backward(g)
            assert torch.equal(xr.grad, gref.view_as(x))
    # without ties both evaluations give the scan's gradient
    x = torch.randn(2, 3, 4, H, W, dtype=dtype)
    _, gref = _pool_reference(x.reshape(24, H, W), g.reshape(24, H // 2, W // 2), ROUND_TAPS)
    for native in ('1', '0'):
        monkeypatch.setenv('PDEBLOCKS_NATIVE', native)
        xr = x.clone().requires_grad_()
        SpatialMaxPoolM2(2, 'round')(xr).backward(g)
        assert torch.allclose(xr.grad, gref.view_as(x))


def test_pde_gcnn_steerable_pools_the_lift_over_the_round_window():
    # the default since round 5 (docs/gcnn.md): the stem is BN(round pool(lift)), the round pool written here as
    # the union of the centred 4×2 and 2×4 windows by max_pool2d (independent of the C kernel)
    import timm

    import pdeblocks.models.pde_gcnn  # noqa: F401
    model = timm.create_model('pde_gcnn_steerable', num_classes=10, in_chans=1).eval()
    assert sum(p.numel() for p in model.parameters()) == 1658
    x = torch.randn(2, 1, 20, 20)
    with torch.no_grad():
        lifted = model.stem.lift(x).flatten(1, 2)
        F = torch.nn.functional
        ref = torch.maximum(F.max_pool2d(lifted, (4, 2), 2, (1, 0)), F.max_pool2d(lifted, (2, 4), 2, (0, 1)))
        torch.testing.assert_close(model.stem(x), model.stem.norm(ref.view(2, 16, 8, 10, 10)))


def test_round_window_pool_commutes_with_quarter_turns_and_rejects_bad_windows():
    z = torch.randn(1, 2, 8, 10, 10)
    pool = SpatialMaxPoolM2(2, 'round')
    for turns in (1, 2, 3):
        assert torch.equal(pool(rotate_m2(z, turns)), rotate_m2(pool(z), turns))
    with pytest.raises(ValueError, match=r"window must be 'square' or 'round', got 'hexagon'"):
        SpatialMaxPoolM2(2, 'hexagon')
    with pytest.raises(ValueError, match='the round window pools with stride 2, got stride 3'):
        SpatialMaxPoolM2(3, 'round')


def test_steerable_bad_arguments_raise():
    with pytest.raises(ValueError, match='max_frequency must be an int >= 0'):
        LiftM2Steerable(1, 2, 8, 5, max_frequency=-1)
    with pytest.raises(ValueError, match='ring_width must be > 0'):
        LiftM2Steerable(1, 2, 8, 5, ring_width=0.0)
    with pytest.raises(ValueError, match='kernel_size must be a positive odd int'):
        LiftM2Steerable(1, 2, 8, 4)
    with pytest.raises(ValueError, match=r'expected R2 feature maps.*shape \[1, 1, 4, 5, 5\]'):
        LiftM2Steerable(1, 2, 4, 3)(torch.zeros(1, 1, 4, 5, 5))


@pytest.mark.parametrize('kwargs, match', [
    (dict(lift='gaussian'), r"lift must be one of \('bspline', 'steerable'\), got 'gaussian'"),
    (dict(downsample=(-1,)), r'downsample must be stage indices in 0..4'),
    (dict(downsample=(5,)), r'downsample must be stage indices in 0..4'),
    (dict(downsample='1'), r'downsample must be stage indices'),
    (dict(lift_max_frequency=1), r"lift_max_frequency applies to lift='steerable' only, got lift='bspline'"),
    (dict(lift='steerable', lift_max_frequency=-2), r'max_frequency must be an int >= 0, got -2'),
])
def test_pde_gcnn_bad_lift_or_downsample_raises(kwargs, match):
    import timm

    import pdeblocks.models.pde_gcnn  # noqa: F401
    with pytest.raises(ValueError, match=match):
        timm.create_model('pde_gcnn', **kwargs)


def test_pde_gcnn_steerable_downsampled_is_invariant_to_quarter_turns_and_reports_reductions():
    import timm

    import pdeblocks.models.pde_gcnn  # noqa: F401
    model = timm.create_model('pde_gcnn', lift='steerable', downsample=(1, 3), num_classes=5, channels=4).eval()
    assert isinstance(model.stem.lift, LiftM2Steerable)
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        y = model(x)
        for turns in (1, 2, 3):
            torch.testing.assert_close(model(torch.rot90(x, turns, dims=(-2, -1))), y, rtol=1e-5, atol=1e-5)
        _, inter = model.forward_intermediates(x)
    assert [t.shape[-1] for t in inter] == [20, 10, 10, 5, 5]
    assert [20 // f['reduction'] for f in model.feature_info] == [20, 10, 10, 5, 5]


def test_pde_gcnn_pooling_the_lift_before_its_norm():
    import timm

    import pdeblocks.models.pde_gcnn  # noqa: F401
    model = timm.create_model('pde_gcnn', downsample=(0,), num_classes=3, channels=4).eval()
    assert [type(m).__name__ for m in model.stem] == ['LiftM2Cartesian', 'SpatialMaxPoolM2', 'BatchNorm3d']
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        lifted = model.stem.lift(x)
        ref = torch.nn.functional.max_pool2d(lifted.flatten(1, 2), 2).view(2, 4, 8, 6, 6)
        torch.testing.assert_close(model.stem(x), model.stem.norm(ref))
        _, inter = model.forward_intermediates(x)
        for turns in (1, 2, 3):
            torch.testing.assert_close(model(torch.rot90(x, turns, dims=(-2, -1))), model(x), rtol=1e-5, atol=1e-5)
    assert [t.shape[-1] for t in inter] == [12 // f['reduction'] for f in model.feature_info] == [6] * 5
