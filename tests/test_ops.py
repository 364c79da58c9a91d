"""Operators: exact adjoints, stencils, and the rigour and tightness of the norm bound."""
import math

import pytest
import torch

from pdeblocks.ops import (
    BOUNDARIES,
    check_signal,
    conv,
    conv_adjoint,
    difference_stencil,
    first_difference,
    first_difference_adjoint,
    norm_bound,
    power_iteration_norm,
    strided_conv,
)
from pdeblocks.ops.norms import gram_spectral_bound, interpolation_factor
from pdeblocks.ops.schedules import fed_cycle_length, fed_cycle_time, fed_step_sizes, fed_tau_max, fsi_weights

SIZES = {1: [11], 2: [9, 10], 3: [7, 6, 8]}


@pytest.mark.parametrize('dim', [1, 2, 3])
@pytest.mark.parametrize('boundary', BOUNDARIES)
@pytest.mark.parametrize('kernel_size', [1, 3, 5])
@pytest.mark.parametrize('channels', [(1, 1), (3, 5), (4, 2)])
def test_adjoint_is_exact(dim, boundary, kernel_size, channels):
    """⟨Ku, v⟩ = ⟨u, Kᵀv⟩ in float64 to rounding, and Kᵀ maps back to u's shape."""
    gen = torch.Generator().manual_seed(dim * 100 + kernel_size)
    cin, cout = channels
    w = torch.randn([cout, cin] + [kernel_size] * dim, generator=gen, dtype=torch.float64)
    u = torch.randn([2, cin] + SIZES[dim], generator=gen, dtype=torch.float64)
    ku = conv(u, w, boundary)
    v = torch.randn(ku.shape, generator=gen, dtype=torch.float64)
    ktv = conv_adjoint(v, w, boundary)
    assert ktv.shape == u.shape
    lhs, rhs = (ku * v).sum(), (u * ktv).sum()
    assert abs(float(lhs - rhs)) <= 1e-12 * max(1.0, abs(float(lhs)))


@pytest.mark.parametrize('dim', [1, 2, 3])
@pytest.mark.parametrize('boundary', BOUNDARIES)
@pytest.mark.parametrize('stride', [1, 2])
def test_conv_bias_is_added_per_output_channel(dim, boundary, stride):
    """K u + b (and the strided R u + b) in one call: b[h] added to every sample of output channel h, as a sum after
    the convolution (float64), and the scripted function agrees."""
    gen = torch.Generator().manual_seed(7 + dim)
    w = torch.randn([3, 2] + [3] * dim, generator=gen, dtype=torch.float64)
    u = torch.randn([2, 2] + SIZES[dim], generator=gen, dtype=torch.float64)
    b = torch.tensor([1.5, -2.0, 0.25], dtype=torch.float64)
    if stride == 1:
        op, args = conv, (boundary,)
    else:
        op, args = strided_conv, (boundary, stride)
    plain = op(u, w, *args)
    expected = plain + b.reshape([1, 3] + [1] * dim)
    assert torch.allclose(op(u, w, *args, bias=b), expected, rtol=0, atol=1e-12)
    assert torch.allclose(torch.jit.script(op)(u, w, *args, bias=b), expected, rtol=0, atol=1e-12)
    assert torch.equal(op(u, w, *args, bias=None), plain)


def test_adjoint_matches_dense_matrix():
    """Kᵀ equals the transpose of K's dense matrix, built column by column (reflect, 1D)."""
    w = torch.randn(2, 1, 5, dtype=torch.float64)
    n = 8
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, n)
    dense = conv(eye, w, 'reflect').reshape(n, -1).T  # columns = K e_i
    v = torch.randn(1, 2, n, dtype=torch.float64)
    assert torch.allclose(conv_adjoint(v, w, 'reflect').reshape(-1), dense.T @ v.reshape(-1), atol=1e-12)


def test_neumann_forward_difference_is_D():
    """With [-1, 1] and 'neumann', K is the (n-1)×n difference matrix and KᵀK the Neumann Laplacian."""
    n = 6
    w = difference_stencil(1, dtype=torch.float64)
    assert w.shape == (1, 1, 2)
    u = torch.arange(n, dtype=torch.float64).pow(2).reshape(1, 1, n)
    du = conv(u, w, 'neumann')
    assert du.reshape(-1).tolist() == [1.0, 3.0, 5.0, 7.0, 9.0]
    lap = conv_adjoint(conv(u, w, 'neumann'), w, 'neumann').reshape(-1)
    expected = torch.tensor([-1.0, -2.0, -2.0, -2.0, -2.0, 9.0], dtype=torch.float64)  # -(u_{i+1}-2u_i+u_{i-1})
    expected[0] = -(u[0, 0, 1] - u[0, 0, 0])
    expected[-1] = u[0, 0, -1] - u[0, 0, -2]
    assert torch.allclose(lap, expected)


def test_stencils():
    assert difference_stencil(2, dtype=torch.float64).reshape(-1).tolist() == [1.0, -2.0, 1.0]
    assert difference_stencil(1, centred=True, dtype=torch.float64).reshape(-1).tolist() == [0.0, -1.0, 1.0]
    w = difference_stencil(1, dim=2, channels=3)
    assert w.shape == (6, 3, 2, 2)
    u = torch.zeros(1, 3, 5, 5)
    u[0, 1] = torch.arange(5.0).reshape(1, 5)  # varies along the last axis only
    d = conv(u, w, 'neumann')
    assert torch.allclose(d[0, 4], torch.ones(4, 4)) and torch.allclose(d[0, 1], torch.zeros(4, 4))
    with pytest.raises(ValueError, match='order'):
        difference_stencil(-1)


def test_fourth_order_diffusion_is_expressible():
    """D = Δ² (second difference) gives ∂ₜu = −DᵀΦ(Du): a step conserves the mean with 'neumann'."""
    w = difference_stencil(2, dtype=torch.float64)
    u = torch.rand(1, 1, 32, dtype=torch.float64)
    step = u - 0.01 * conv_adjoint(conv(u, w, 'neumann'), w, 'neumann')
    assert torch.allclose(step.sum(), u.sum())
    assert not torch.allclose(step, u)


def test_schedules():
    tau = fed_step_sizes(8, 0.25)
    assert math.isclose(sum(tau), fed_cycle_time(8, 0.25), rel_tol=1e-12)
    assert max(tau) > 0.25  # single FED steps exceed the explicit limit
    assert fsi_weights(3) == [2 / 3, 6 / 5, 10 / 7]
    with pytest.raises(ValueError):
        fed_step_sizes(0, 1.0)


def test_fed_tau_max_lands_on_the_stopping_time():
    assert math.isclose(fed_tau_max(6.0, 4, cycles=3), 0.3, rel_tol=1e-15)   # 3·6 / (3·(16 + 4))
    assert math.isclose(3 * fed_cycle_time(4, fed_tau_max(6.0, 4, cycles=3)), 6.0, rel_tol=1e-12)
    assert fed_cycle_length(10.0, 0.5) == 8          # ⌈√60⌉: 8² + 8 = 72 ≥ 60
    assert fed_cycle_length(1.0, 0.5) == 3           # ⌈√6⌉
    assert fed_cycle_length(1e-9, 0.5) == 1
    assert fed_tau_max(10.0, fed_cycle_length(10.0, 0.5)) <= 0.5
    for bad in (dict(time=0.0, n=4), dict(time=1.0, n=0), dict(time=1.0, n=4, cycles=0)):
        with pytest.raises(ValueError, match='must be'):
            fed_tau_max(**bad)
    with pytest.raises(ValueError, match='τ_limit'):
        fed_cycle_length(1.0, 0.0)


# ---------------------------------------------------------------------------------------------- norm bound

def test_gram_bound_is_rigorous_and_converges():
    torch.manual_seed(0)
    a = torch.randn(50, 20, 30, dtype=torch.float64)
    exact = torch.linalg.matrix_norm(a, ord=2)
    for steps in (1, 3, 6):
        b = gram_spectral_bound(a, steps)
        assert (b >= exact * (1 - 1e-12)).all()
    assert (gram_spectral_bound(a, 8) <= exact * 1.01).all()


@pytest.mark.parametrize('dim,size', [(1, [256]), (2, [40, 40])])
@pytest.mark.parametrize('kernel_size', [3, 5])
@pytest.mark.parametrize('boundary', ['neumann', 'zeros', 'circular'])
def test_norm_bound_rigorous_and_tight_random(dim, size, kernel_size, boundary):
    torch.manual_seed(kernel_size + dim)
    c = 16
    w = torch.randn([c, c] + [kernel_size] * dim, dtype=torch.float64) / math.sqrt(c * kernel_size ** dim)
    bound = float(norm_bound(w, boundary))
    true = float(power_iteration_norm(w, boundary, size, iters=400))
    assert bound >= true
    assert bound <= 1.2 * true, (bound, true)


def test_norm_bound_reflect_is_rigorous():
    """Mirror padding: the bound must cover the true norm, which exceeds the symbol sup."""
    torch.manual_seed(3)
    for dim, size in [(1, [6]), (1, [64]), (2, [6, 7]), (2, [24, 24])]:
        w = torch.randn([8, 8] + [3] * dim, dtype=torch.float64)
        true = float(power_iteration_norm(w, 'reflect', size, iters=600))
        assert float(norm_bound(w, 'reflect')) >= true
        assert float(norm_bound(w, 'reflect')) >= float(norm_bound(w, 'zeros'))


@pytest.mark.parametrize('dim', [1, 2])
def test_norm_bound_adversarial_off_grid_peak(dim):
    """Kernels whose symbol peaks between grid frequencies, the worst case for a sampled symbol.

    A separable kernel w = ⊗ cos(ω₀ j) has symbol sup = (1D sup)^d, which a 4096-point FFT
    resolves to ~1e-6; the bound must stay above it, though the grid never samples ω₀.
    """
    from pdeblocks.ops.norms import default_grid
    k = 5
    grid = default_grid([k] * dim)
    j = torch.arange(k, dtype=torch.float64)
    for shift in (0.5, 0.25, 0.37):
        line = torch.cos(2 * math.pi * shift / grid * j)
        sup_1d = torch.fft.fft(line, n=4096).abs().max()
        w = line if dim == 1 else line[:, None] * line[None, :]
        w = w.reshape([1, 1] + [k] * dim)
        sup = float(sup_1d) ** dim
        for boundary in ('neumann', 'zeros', 'circular'):
            assert float(norm_bound(w, boundary)) >= sup
        true = float(power_iteration_norm(w, 'zeros', [256] * dim if dim == 1 else [64, 64], iters=3000, tol=1e-14))
        assert true <= sup * (1 + 1e-9)


def test_norm_bound_trained_weights():
    """After training (smooth, low-pass kernels) the bound stays above and within 1.2× the true norm."""
    torch.manual_seed(0)
    from pdeblocks.layers import SymmetricResidual
    blk = SymmetricResidual(8, dim=2, boundary='zeros', flux='charbonnier', stability='euclidean').double()
    opt = torch.optim.Adam(blk.parameters(), lr=3e-2)
    x = torch.rand(8, 8, 16, 16, dtype=torch.float64)
    target = torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # learn a smoothing step
    for _ in range(60):
        loss = (blk(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for boundary in ('neumann', 'zeros', 'circular'):
        bound = float(norm_bound(blk.weight, boundary))
        true = float(power_iteration_norm(blk.weight, boundary, [40, 40], iters=600))
        assert true <= bound <= 1.2 * true


def test_interpolation_factor_rejects_coarse_grid():
    with pytest.raises(ValueError, match='too coarse'):
        interpolation_factor([3, 3], 4)
    with pytest.raises(ValueError, match='smaller than the kernel'):
        norm_bound(torch.randn(2, 2, 7), grid=5)


def test_norm_bound_float32_bf16_meta():
    w = torch.randn(4, 4, 3, 3)
    b32 = norm_bound(w, 'zeros')
    assert b32.dtype == torch.float32
    assert torch.allclose(norm_bound(w.to(torch.bfloat16), 'zeros'), norm_bound(w.to(torch.bfloat16).float(), 'zeros'))
    assert norm_bound(torch.empty(4, 4, 3, 3, device='meta'), 'zeros').device.type == 'meta'


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize('make,match', [
    (lambda w: torch.randn(2, 3, 8), 'expected a 4D tensor'),
    (lambda w: torch.randn(2, 5, 8, 8), 'expected 3 input channels, got 5'),
    (lambda w: torch.ones(2, 3, 8, 8, dtype=torch.int64), 'floating point'),
    (lambda w: torch.randn(0, 3, 8, 8), 'non-empty batch'),
    (lambda w: torch.randn(2, 3, 2, 8), 'too small for kernel size 3'),
])
def test_check_signal_errors(make, match):
    w = torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match=match):
        check_signal(make(w), w, 'neumann')


def test_even_kernel_only_with_neumann():
    from pdeblocks.ops.conv import check_kernel_size
    assert check_kernel_size([2], 'neumann') == [2]
    for b in ('zeros', 'circular', 'reflect'):
        with pytest.raises(ValueError, match='odd kernel size'):
            check_kernel_size([4], b)
    with pytest.raises(ValueError, match='boundary must be one of'):
        conv(torch.randn(1, 1, 5), torch.randn(1, 1, 3), 'periodic')


def test_first_difference_is_the_neumann_difference_convolution():
    w = difference_stencil(1, dtype=torch.float64)
    u = torch.randn(5, 1, 33, dtype=torch.float64)
    p = torch.randn(5, 1, 32, dtype=torch.float64)
    assert torch.equal(first_difference(u), conv(u, w, 'neumann'))
    assert torch.equal(first_difference_adjoint(p), conv_adjoint(p, w, 'neumann'))
    assert first_difference(torch.arange(4.0)).tolist() == [1.0, 1.0, 1.0]
    assert first_difference_adjoint(torch.tensor([[2.0, 5.0]])).tolist() == [[-2.0, -3.0, 5.0]]   # p_{i−1} − p_i
