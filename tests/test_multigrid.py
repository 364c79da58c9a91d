"""Tests for multigrid: transfer operators, the classical V/W-cycle solver, MultigridCycle and MultigridUNet.

References are independent of the code under test: dense matrices written from the textbook
formulas (numpy), the adjoint identity ⟨Ru, v⟩ = ⟨u, Rᵀv⟩, autograd adjoints, hand-computed values.
"""
import itertools
import math

import numpy as np
import pytest
import torch

from pdeblocks.layers.multigrid import GridTransfer, MultigridCycle, MultigridUNet
from pdeblocks.layers.symmetric import SymmetricResidual
from pdeblocks.models.multigrid_unet import multigrid_unet_1d, multigrid_unet_2d
from pdeblocks.ops.conv import BOUNDARIES, conv, conv_adjoint
from pdeblocks.ops.multigrid import (
    GramOperator,
    Multigrid,
    StencilOperator,
    check_cycle_settings,
    conjugate_gradient,
    dense_matrix,
    jacobi_solve,
    max_levels,
    poisson_stencil,
)
from pdeblocks.ops.transfer import full_weighting, prolong, restrict, strided_conv, strided_conv_adjoint
from pdeblocks.stability import Certificate, certify

f64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------- transfer
@pytest.mark.parametrize('boundary', BOUNDARIES)
@pytest.mark.parametrize('dim', [1, 2])
@pytest.mark.parametrize('n', [8, 11])
def test_strided_adjoint_identity(boundary, dim, n):
    if boundary == 'circular' and n % 2:
        n += 1
    kernels = [2, 3, 4] if boundary == 'neumann' else [3, 5]
    for k in kernels:
        w = torch.randn([3, 2] + [k] * dim, generator=gen(k), dtype=f64)
        size = [n] if dim == 1 else [n, n + 2]
        u = torch.randn([2, 2] + size, generator=gen(1), dtype=f64)
        ru = restrict(u, w, boundary)
        v = torch.randn(ru.shape, generator=gen(2), dtype=f64)
        lhs = (ru * v).sum()
        rhs = (u * strided_conv_adjoint(v, w, size, boundary)).sum()
        assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12), (boundary, dim, n, k)


def test_strided_adjoint_equals_autograd_vjp():
    w = torch.randn(2, 2, 3, 3, generator=gen(), dtype=f64)
    for boundary in BOUNDARIES:
        u = torch.randn(1, 2, 9, 10, generator=gen(3), dtype=f64, requires_grad=True)
        y = strided_conv(u, w, boundary)
        v = torch.randn(y.shape, generator=gen(4), dtype=f64)
        (g,) = torch.autograd.grad(y, u, v)
        assert torch.allclose(g, strided_conv_adjoint(v, w, [9, 10], boundary), atol=1e-13)


def test_full_weighting_and_linear_interpolation_by_hand():
    w = full_weighting(1, dtype=f64)
    u = torch.tensor([[[1., 2., 4., 8., 16., 32., 64.]]], dtype=f64)  # n = 7 → 3 coarse points
    expected = [(1 + 2 * 2 + 4) / 4, (4 + 2 * 8 + 16) / 4, (16 + 2 * 32 + 64) / 4]
    assert restrict(u, w, 'neumann').flatten().tolist() == expected
    v = torch.tensor([[[2., 4., 6.]]], dtype=f64)  # coarse points sit at fine 1, 3, 5; zero at both ends
    assert prolong(v, w, [7], 'neumann', 2.0).flatten().tolist() == [1., 2., 3., 4., 5., 6., 3.]
    # periodic: coarse points at fine 0, 2, 4, 6 and wrap-around between the last and the first
    v = torch.tensor([[[1., 3., 5., 7.]]], dtype=f64)
    assert prolong(v, w, [8], 'circular', 2.0).flatten().tolist() == [1., 2., 3., 4., 5., 6., 7., 4.]
    # 2D: bilinear interpolation is the tensor product P₁ C P₁ᵀ of the hand-written 1D matrix
    p1 = torch.tensor([[.5, 0, 0], [1, 0, 0], [.5, .5, 0], [0, 1, 0], [0, .5, .5], [0, 0, 1], [0, 0, .5]], dtype=f64)
    coarse = torch.randn(3, 3, generator=gen(), dtype=f64)
    fine = prolong(coarse[None, None], full_weighting(2, dtype=f64), [7, 7], 'neumann', 4.0)[0, 0]
    assert torch.allclose(fine, p1 @ coarse @ p1.T)


def test_transfer_bad_input():
    w = full_weighting(1, dtype=f64)
    with pytest.raises(ValueError, match='divisible by the stride'):
        restrict(torch.zeros(1, 1, 9, dtype=f64), w, 'circular')
    with pytest.raises(ValueError, match='input channels'):
        restrict(torch.zeros(1, 2, 9, dtype=f64), w, 'neumann')
    with pytest.raises(ValueError, match='does not match the fine size'):
        strided_conv_adjoint(torch.zeros(1, 1, 5, dtype=f64), w, [9], 'neumann')


# --------------------------------------------------------------------------------------- classical solver
def dense_poisson_1d(n, h):
    return (2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)) / h ** 2


def dense_full_weighting_1d(n):
    m = (n - 1) // 2
    r = np.zeros((m, n))
    for i in range(m):
        r[i, 2 * i:2 * i + 3] = [0.25, 0.5, 0.25]
    return r


def test_poisson_stencil_matches_dense_matrix():
    n, h = 7, 0.125
    a1 = dense_poisson_1d(n, h)
    op1 = StencilOperator(poisson_stencil(1, h, dtype=f64), 'zeros')
    assert np.allclose(dense_matrix(op1, [n]).numpy(), a1)
    op2 = StencilOperator(poisson_stencil(2, h, dtype=f64), 'zeros')
    a2 = np.kron(a1, np.eye(n)) + np.kron(np.eye(n), a1)
    assert np.allclose(dense_matrix(op2, [n, n]).numpy(), a2)


def test_sparse_fast_path_equals_conv():
    for dim in (1, 2, 3):
        for boundary in ('zeros', 'circular'):
            w = torch.randn([1, 1] + [3] * dim, generator=gen(dim), dtype=f64)
            u = torch.randn([2, 1] + [6] * dim, generator=gen(7), dtype=f64)
            op = StencilOperator(w, boundary)
            assert op.taps is not None
            assert torch.allclose(op(u), conv(u, w, boundary), atol=1e-13)


@pytest.mark.parametrize('dim', [1, 2])
def test_two_grid_cycle_equals_dense_reference(dim):
    """One V(2,1) two-grid cycle with damped Jacobi against numpy matrices built from the formulas."""
    n = 15
    h = 1.0 / (n + 1)
    omega = 0.7
    a1, r1 = dense_poisson_1d(n, h), dense_full_weighting_1d(n)
    ac1 = dense_poisson_1d((n - 1) // 2, 2 * h)
    if dim == 1:
        a, r, ac = a1, r1, ac1
    else:
        eye, eyec = np.eye(n), np.eye((n - 1) // 2)
        a = np.kron(a1, eye) + np.kron(eye, a1)
        ac = np.kron(ac1, eyec) + np.kron(eyec, ac1)
        r = np.kron(r1, r1)
    p = 2 ** dim * r.T
    rng = np.random.default_rng(0)
    f, u = rng.standard_normal(a.shape[0]), rng.standard_normal(a.shape[0])
    dinv = omega / np.diag(a)
    x = u.copy()
    for _ in range(2):
        x = x + dinv * (f - a @ x)
    x = x + p @ np.linalg.solve(ac, r @ (f - a @ x))
    x = x + dinv * (f - a @ x)
    op = StencilOperator(poisson_stencil(dim, h, dtype=f64), 'zeros')
    shape = [1, 1] + [n] * dim
    for coarse in ('rediscretise', 'galerkin'):  # Galerkin R A P = A_2h here only in 1D
        if dim == 2 and coarse == 'galerkin':
            continue
        mg = Multigrid(op, [n] * dim, 2, smoother='jacobi', damping=omega, pre_smooth=2, post_smooth=1,
                       coarse_solve='direct', coarse_operator=coarse)
        for path in (mg.cycle, mg._cycle):  # the allocation-free path and the general one
            got = path(torch.tensor(u).reshape(shape), torch.tensor(f).reshape(shape))
            assert np.allclose(got.flatten().numpy(), x, rtol=1e-10, atol=1e-10), (coarse, path)


def test_galerkin_operator_equals_dense_rap():
    """The probed Galerkin stencil equals R A P from dense matrices (2D Poisson: the 9-point stencil)."""
    n = 15
    h = 1.0 / (n + 1)
    op = StencilOperator(poisson_stencil(2, h, dtype=f64), 'zeros')
    mg = Multigrid(op, [n, n], 2, coarse_operator='galerkin')
    a1, r1 = dense_poisson_1d(n, h), dense_full_weighting_1d(n)
    a = np.kron(a1, np.eye(n)) + np.kron(np.eye(n), a1)
    r = np.kron(r1, r1)
    rap = r @ a @ (4 * r.T)
    assert np.allclose(dense_matrix(mg.operators[1], [7, 7]).numpy(), rap, rtol=1e-10, atol=1e-6)


def convergence_factors(dim, n, smoother, cycle='V', cycles=10, coarse='rediscretise', seed=0):
    """Per-cycle residual ratios for A e = 0 from a random start (no rounding floor to hit)."""
    h = 1.0 / (n + 1)
    op = StencilOperator(poisson_stencil(dim, h, dtype=f64), 'zeros')
    mg = Multigrid(op, [n] * dim, max_levels(n, 'zeros') - 1, cycle=cycle, smoother=smoother,
                   coarse_operator=coarse)
    u = torch.rand([1, 1] + [n] * dim, generator=gen(seed), dtype=f64)
    f = torch.zeros_like(u)
    norms = [float(mg.residual(u, f).norm())]
    for _ in range(cycles):
        u = mg.cycle(u, f)
        norms.append(float(mg.residual(u, f).norm()))
    return [b / a for a, b in zip(norms, norms[1:])]


def two_grid_fourier_factor(dim, big_n, omega, nu1, nu2):
    """Spectral radius of the two-grid operator S^ν₂ (I − P A_{2h}⁻¹ R A) S^ν₁ for Dirichlet −Δ_h with
    damped Jacobi, full weighting and linear interpolation, by Fourier analysis: the sine modes
    w_k, w_{N−k} (per axis) span invariant subspaces, where A has eigenvalues 4 Σ s/h² with
    s = sin²(kπh/2) (cos² for N − k), R maps them to the coarse mode with weights cos², −sin², and
    P maps the coarse mode back with the same weights."""
    h = 1.0 / big_n
    worst = 0.0
    for ks in itertools.product(range(1, big_n // 2), repeat=dim):
        s, weight = [], []
        for high in itertools.product([False, True], repeat=dim):
            sk = [math.cos(k * math.pi * h / 2) ** 2 if hi else math.sin(k * math.pi * h / 2) ** 2
                  for k, hi in zip(ks, high)]
            s.append(sum(sk))
            weight.append(np.prod([-math.sin(k * math.pi * h / 2) ** 2 if hi else math.cos(k * math.pi * h / 2) ** 2
                                   for k, hi in zip(ks, high)]))
        s, weight = np.array(s), np.array(weight)
        a = 4 * s / h ** 2
        a_coarse = sum(math.sin(k * math.pi * h) ** 2 for k in ks) / h ** 2
        correction = np.eye(len(s)) - np.outer(weight, weight * a) / a_coarse
        smooth = np.diag(1 - omega * 4 * s / (2 * dim))
        m = np.linalg.matrix_power(smooth, nu2) @ correction @ np.linalg.matrix_power(smooth, nu1)
        worst = max(worst, float(np.abs(np.linalg.eigvals(m)).max()))
    return worst


@pytest.mark.parametrize('dim, n, omega', [(1, 63, 2 / 3), (2, 31, 0.8)])
def test_two_grid_rate_matches_fourier_analysis(dim, n, omega):
    """The measured two-grid rate approaches the Fourier-analysis spectral radius from below
    (5/81 in 1D with ω = 2/3, ν = 2 + 2; 0.137 in 2D with ω = 0.8, the textbook ρ for ν = 4)."""
    predicted = two_grid_fourier_factor(dim, n + 1, omega, 2, 2)
    if dim == 1:
        assert predicted == pytest.approx(5 / 81, rel=1e-9)
    op = StencilOperator(poisson_stencil(dim, 1.0 / (n + 1), dtype=f64), 'zeros')
    mg = Multigrid(op, [n] * dim, 2, damping=omega, coarse_solve='direct', coarse_operator='rediscretise')
    e = torch.rand([1, 1] + [n] * dim, generator=gen(), dtype=f64)
    zero = torch.zeros_like(e)
    norms = []
    for _ in range(40):
        e = mg.cycle(e, zero)
        norms.append(float(mg.residual(e, zero).norm()))
    rate = (norms[-1] / norms[-11]) ** 0.1
    assert 0.93 * predicted <= rate <= predicted * 1.001


@pytest.mark.parametrize('n', [255, 1023, 4095])
def test_vcycle_1d_jacobi_textbook_factor(n):
    rates = convergence_factors(1, n, 'jacobi')
    asymptotic = math.exp(np.mean(np.log(rates[-4:])))
    assert 0.07 < asymptotic <= 0.1, rates


@pytest.mark.parametrize('n', [63, 127])
def test_vcycle_2d_jacobi_and_red_black_textbook_factor(n):
    jac = convergence_factors(2, n, 'jacobi')
    assert 0.14 < math.exp(np.mean(np.log(jac[-4:]))) <= 0.2, jac
    rb = convergence_factors(2, n, 'red_black')
    assert max(rb) <= 0.1, rb
    rich = convergence_factors(2, n, 'richardson')  # B = 2·diagonal for the Laplacian: equals Jacobi
    assert np.allclose(rich, jac, rtol=1e-6)


def test_factor_is_independent_of_n_and_w_cycle_is_no_worse():
    small = convergence_factors(1, 255, 'jacobi')[-1]
    large = convergence_factors(1, 8191, 'jacobi')[-1]
    assert abs(small - large) < 0.01
    v = convergence_factors(2, 63, 'jacobi', 'V')[-1]
    w = convergence_factors(2, 63, 'jacobi', 'W')[-1]
    assert w <= v


def test_solve_with_right_hand_side_reaches_rounding_floor():
    n = 1023
    op = StencilOperator(poisson_stencil(1, 1.0 / (n + 1), dtype=f64), 'zeros')
    mg = Multigrid(op, [n], 9)
    f = torch.rand(2, 1, n, generator=gen(), dtype=f64)
    u, hist = mg.solve(f, tol=1e-10, max_cycles=20)
    assert hist[-1] <= 1e-10 * float(f.norm()) and len(hist) <= 12
    exact = torch.tensor(np.linalg.solve(dense_poisson_1d(n, 1.0 / (n + 1)), f[0, 0].numpy()))
    assert torch.allclose(u[0, 0], exact, rtol=1e-8, atol=1e-12)


def test_periodic_poisson_and_single_level_direct():
    n = 64
    op = StencilOperator(poisson_stencil(1, 1.0 / n, dtype=f64), 'circular')
    f = torch.randn(1, 1, n, generator=gen(), dtype=f64)
    f = f - f.mean()
    mg = Multigrid(op, [n], 5, coarse_solve='direct')
    _, hist = mg.solve(f, tol=1e-10, max_cycles=15)
    assert hist[-1] <= 1e-10 * float(f.norm())
    one = Multigrid(StencilOperator(poisson_stencil(1, 1 / 16, dtype=f64), 'zeros'), [15], 1)
    g = torch.randn(1, 1, 15, generator=gen(1), dtype=f64)
    assert float(one.residual(one.cycle(torch.zeros_like(g), g), g).norm()) < 1e-9 * float(g.norm()) * 16 ** 2


def test_gram_operator_matches_adjoint_and_full_convolution():
    k = torch.randn(3, 2, 3, 3, generator=gen(), dtype=f64)
    u = torch.randn(1, 2, 8, 8, generator=gen(1), dtype=f64)
    periodic = GramOperator(k, 'circular', shift=0.3)
    assert torch.allclose(periodic(u), conv_adjoint(conv(u, k, 'circular'), k, 'circular') + 0.3 * u, atol=1e-12)
    # 'zeros': K is the full convolution (zero extension by k − 1); its adjoint by autograd
    x = u.clone().requires_grad_()
    full = torch.nn.functional.conv2d(torch.nn.functional.pad(x, [2, 2, 2, 2]), k)
    (ktk,) = torch.autograd.grad(full, x, full.detach())
    assert torch.allclose(GramOperator(k, 'zeros')(u), ktk, atol=1e-12)


def test_conjugate_gradient_and_jacobi_reach_tolerance():
    n = 31
    op = StencilOperator(poisson_stencil(1, 1.0 / (n + 1), dtype=f64), 'zeros')
    f = torch.rand(1, 1, n, generator=gen(), dtype=f64)
    u, hist = conjugate_gradient(op, f, tol=1e-8)
    assert hist[-1] <= 1e-8 * float(f.norm()) and len(hist) - 1 <= n  # CG: at most n steps in exact arithmetic
    u_j, iters, rel = jacobi_solve(op, f, tol=1e-8)
    assert rel <= 1e-8 and iters > 10 * (len(hist) - 1)
    assert torch.allclose(u, u_j, rtol=1e-6)


def test_classical_bad_input():
    op = StencilOperator(poisson_stencil(1, dtype=f64), 'zeros')
    with pytest.raises(ValueError, match='at most 6'):
        Multigrid(op, [63], 7)  # 63 → 31 → 15 → 7 → 3 → 1: six grids
    with pytest.raises(ValueError, match='damping'):
        Multigrid(op, [63], 3, damping=0.0)
    with pytest.raises(ValueError, match='damping'):
        Multigrid(op, [63], 3, damping=-0.5)
    with pytest.raises(ValueError, match='at most 1'):
        Multigrid(op, [64], 2)  # a Dirichlet grid needs odd sizes
    op2 = StencilOperator(poisson_stencil(2, dtype=f64), 'zeros')
    with pytest.raises(ValueError, match='star stencil|9-point'):
        Multigrid(op2, [15, 15], 3, smoother='red_black', coarse_operator='galerkin')
    with pytest.raises(ValueError, match='restriction weight'):
        Multigrid(op, [63], 3, restriction=full_weighting(1, 2, dtype=f64))
    mg = Multigrid(op, [63], 3)
    with pytest.raises(ValueError, match='expected f of shape'):
        mg.solve(torch.zeros(1, 2, 63, dtype=f64))
    with pytest.raises(ValueError, match='direct coarsest solve'):
        Multigrid(StencilOperator(poisson_stencil(2, dtype=f64), 'zeros'), [127, 127], 1)


def test_max_levels_counts_grids():
    assert max_levels(63, 'zeros') == 6  # 63, 31, 15, 7, 3, 1
    assert max_levels(64, 'circular') == 6  # 64, 32, 16, 8, 4, 2


# ------------------------------------------------------------------------------------------ MultigridCycle
def test_multigrid_cycle_gram_learns_and_converges():
    torch.manual_seed(0)
    m = MultigridCycle(2, 1, 'gram', levels=3, shift=0.1, boundary='zeros', cycles=1, coarse_solve='direct',
                       dtype=f64)
    f = torch.randn(2, 1, 31, 31, generator=gen(), dtype=f64)
    u = None
    with torch.no_grad():
        rel = []
        for _ in range(4):
            u = m(f, u)
            rel.append(float(m.residual(u, f).norm() / f.norm()))
    assert rel[-1] < 1e-3 and all(b < 0.2 * a for a, b in zip(rel[1:], rel[2:]))
    # differentiable in K: one cycle's output against a target, gradient finite and non-zero
    u = m(f)
    (u.square().mean()).backward()
    assert m.weight.grad is not None and torch.isfinite(m.weight.grad).all() and m.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('cycle', ['V', 'W'])
def test_multigrid_cycle_periodic_gram_with_smoothed_coarsest(cycle):
    k = torch.randn(3, 2, 3, generator=gen(5), dtype=f64) / 3
    m = MultigridCycle(1, 2, 'gram', kernel_size=3, hidden_channels=3, shift=0.5, boundary='circular', levels=4,
                       cycle=cycle, coarse_solve='smooth', coarse_steps=30, dtype=f64)
    with torch.no_grad():
        m.weight.copy_(k)
    f = torch.randn(2, 2, 64, generator=gen(), dtype=f64)
    with torch.no_grad():
        u = m(f)
        first = float(m.residual(u, f).norm() / f.norm())
        for _ in range(4):
            u = m(f, u)
    # the dense solve of σI + KᵀK (periodic K built as a dense circulant by autograd-free probing)
    eye = torch.eye(128, dtype=f64).reshape(128, 2, 64)
    a = (conv_adjoint(conv(eye, k, 'circular'), k, 'circular') + 0.5 * eye).reshape(128, 128).T
    exact = torch.linalg.solve(a, f.reshape(2, 128).T).T.reshape(f.shape)
    assert first < 0.5
    assert torch.allclose(u, exact, rtol=1e-4, atol=1e-4 * float(exact.abs().max()))


def test_multigrid_cycle_poisson_matches_solver_and_learned_restriction_grads():
    m = MultigridCycle(1, 1, 'poisson', spacing=1 / 64, levels=4, coarse_solve='direct', dtype=f64, cycles=2)
    f = torch.rand(1, 1, 63, generator=gen(), dtype=f64)
    mg = Multigrid(StencilOperator(poisson_stencil(1, 1 / 64, dtype=f64), 'zeros'), [63], 4, coarse_solve='direct')
    assert torch.allclose(m(f), mg.cycle(mg.cycle(torch.zeros_like(f), f), f), atol=1e-12)
    learned = MultigridCycle(1, 1, 'poisson', spacing=1 / 64, levels=4, restriction='learned', dtype=f64)
    learned(f).sum().backward()
    assert learned.restriction.grad is not None and learned.restriction.grad.abs().sum() > 0


def test_multigrid_cycle_bad_input():
    with pytest.raises(ValueError, match='damping'):
        MultigridCycle(1, 1, damping=0.0)
    with pytest.raises(ValueError, match='shape'):
        MultigridCycle(1, 2, operator=poisson_stencil(1, channels=1))
    m = MultigridCycle(1, 2, levels=4)
    with pytest.raises(ValueError, match=r'\[batch, 2'):
        m(torch.zeros(1, 1, 63))
    with pytest.raises(ValueError, match='at most 3'):
        m(torch.zeros(1, 2, 7))  # 7 → 3 → 1: three grids, four asked


# ----------------------------------------------------------------------------------------------- U-net
@pytest.mark.parametrize('boundary', BOUNDARIES)
@pytest.mark.parametrize('cycle', ['V', 'W'])
def test_unet_any_size_shapes_and_features(boundary, cycle):
    torch.manual_seed(0)
    for dim, size in ((1, [37]), (2, [21, 30])):
        net = MultigridUNet(dim, 2, 3, channels=(4, 6, 8), cycle=cycle, boundary=boundary)
        x = torch.randn([2, 2] + size)
        y = net(x)
        assert list(y.shape) == [2, 3] + size and torch.isfinite(y).all()
        feats = net.forward_features(x)
        assert [f.shape[1] for f in feats] == [4, 6, 8] == [i['num_chs'] for i in net.feature_info]
        for lev, f in enumerate(feats):
            assert list(f.shape[2:]) == [math.ceil(n / 2 ** lev) for n in size]


def test_unet_pads_by_the_boundary_and_crops_back():
    net = MultigridUNet(1, 1, 1, channels=(3, 3, 3), boundary='neumann', restriction='full_weighting')
    x = torch.randn(1, 1, 32)
    assert net.pad(x) is x
    x = torch.randn(1, 1, 29)
    mirrored = torch.cat([x, x[..., [27, 26, 25]]], dim=-1)  # mirror without edge repeat: x27, x26, x25
    assert torch.equal(net.pad(x), mirrored)
    assert torch.allclose(net(x), net(mirrored)[..., :29], atol=1e-6)
    zeros = MultigridUNet(1, 1, 1, channels=(3, 3, 3), boundary='zeros')
    assert torch.equal(zeros.pad(x), torch.nn.functional.pad(x, (0, 3)))


def test_unet_w_cycle_visits_coarse_levels_twice():
    net = MultigridUNet(1, 1, 1, channels=(2, 2, 2), cycle='W')
    calls = [0, 0, 0]
    for lev in range(3):
        net.pre[lev].register_forward_hook(lambda *a, lev=lev: calls.__setitem__(lev, calls[lev] + 1))
    net(torch.randn(1, 1, 32))
    assert calls == [1, 2, 4]


def test_unet_prolongation_is_scaled_adjoint_of_restriction():
    t = GridTransfer(3, 5, dim=2, boundary='reflect')
    x = torch.randn(2, 3, 10, 12, dtype=torch.float32)
    y = torch.randn(2, 5, 5, 6)
    lhs = (t.restrict(x) * y).sum()
    rhs = (x * t.prolong(y, [10, 12])).sum() / t.scale
    assert torch.allclose(lhs, rhs, rtol=1e-4)


def test_unet_certificate_and_certify_report_blocks():
    net = MultigridUNet(2, 1, 1, channels=(4, 8), pre_smooth=1, post_smooth=1, coarse_steps=2)
    blocks = [m for m in net.modules() if isinstance(m, SymmetricResidual)]
    assert len(blocks) == 1 + 1 + 2
    for b in blocks:
        assert b.stability_certificate().norm_factor == 1.0
    cert = net.network_certificate()
    assert isinstance(cert, Certificate) and cert.norm_factor is not None and cert.lipschitz is not None
    report = certify(net)
    assert len(report) == len(blocks)
    assert {b.path for b in report.blocks} == {n for n, m in net.named_modules() if isinstance(m, SymmetricResidual)}
    assert all(b.mode == 'euclidean' and b.norm_factor == 1.0 for b in report.blocks)


def test_unet_certificate_holds_adversarially():
    """Huge weights and inputs optimised to grow ‖f(u)‖/‖u‖ stay within the composed bound."""
    torch.manual_seed(0)
    net = MultigridUNet(1, 1, 1, channels=(3, 4), pre_smooth=1, post_smooth=1, coarse_steps=1, dtype=f64)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.mul_(1e3)
    cert = net.network_certificate()
    u = torch.randn(4, 1, 24, dtype=f64, requires_grad=True)
    opt = torch.optim.Adam([u], lr=0.1)
    worst = 0.0
    for _ in range(30):
        ratio = net(u).flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)
        worst = max(worst, float(ratio.detach().max()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    assert worst <= cert.norm_factor
    v = u.detach() + 1e-3 * torch.randn_like(u)
    diff = (net(u.detach()) - net(v)).flatten(1).norm(dim=1) / (u.detach() - v).flatten(1).norm(dim=1)
    assert float(diff.detach().max()) <= cert.lipschitz


def test_unet_trains_and_survives_absurd_learning_rate():
    torch.manual_seed(0)
    net = MultigridUNet(1, 1, 1, channels=(4, 8, 8))
    t = torch.linspace(0, 1, 64)
    clean = torch.sign(torch.sin(2 * math.pi * 3 * t)).expand(8, 1, 64)
    noisy = clean + 0.3 * torch.randn(8, 1, 64)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = (net(noisy) - clean).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    for g in opt.param_groups:
        g['lr'] = 1e4
    loss = (net(noisy) - clean).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        out = net(noisy)
    assert torch.isfinite(out).all()
    assert float(out.flatten(1).norm(dim=1).max()) <= net.network_certificate().norm_factor * float(
        noisy.flatten(1).norm(dim=1).max())


def test_unet_bad_input():
    with pytest.raises(ValueError, match='does not match the 3 channel counts'):
        MultigridUNet(2, 1, 1, channels=(4, 8, 16), levels=2)
    net = MultigridUNet(2, 3, 1, channels=(4, 8, 16))
    with pytest.raises(ValueError, match='expected 3 input channels, got 1'):
        net(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match='at most 2 levels'):
        net(torch.randn(1, 3, 8, 32))  # coarsest ⌈8/4⌉ = 2 < 3 (kernel 3, Neumann); 8 → 4 is two levels
    with pytest.raises(ValueError, match='full weighting keeps the channel count'):
        MultigridUNet(1, 1, 1, channels=(4, 8), restriction='full_weighting')
    with pytest.raises(ValueError, match='4D tensor'):
        net(torch.randn(1, 3, 32))


def test_factories():
    net = multigrid_unet_2d(in_channels=3, out_channels=2, channels=(4, 8, 8))
    assert list(net(torch.randn(1, 3, 19, 23)).shape) == [1, 2, 19, 23]
    net1 = multigrid_unet_1d(channels=(4, 8))
    assert list(net1(torch.randn(2, 1, 50)).shape) == [2, 1, 50]
    assert net1.dim == 1 and multigrid_unet_1d().widths == [16, 32, 64, 128]
    with pytest.raises(ValueError, match='pretrained'):
        multigrid_unet_2d(pretrained=True)
    d = multigrid_unet_1d(channels=(2, 4), dtype=f64)
    assert all(p.dtype == f64 for p in d.parameters())


@pytest.mark.parametrize('setting, value', [('levels', 0), ('cycle', 'F'), ('smoother', 'sor'), ('damping', 2.0),
                                            ('pre_smooth', -1), ('post_smooth', -1), ('coarse_solve', 'lu'),
                                            ('coarse_steps', -2), ('coarse_operator', 'injection')])
def test_cycle_settings_checked_once_naming_the_setting(setting, value):
    kwargs = dict(levels=3)
    kwargs[setting] = value
    with pytest.raises(ValueError, match=f"{setting.replace('damping', 'damping ω')} must be.*got {value!r}"):
        check_cycle_settings(**kwargs)
    op = StencilOperator(poisson_stencil(1, dtype=f64), 'zeros')
    with pytest.raises(ValueError, match=setting.replace('damping', 'damping ω')):
        Multigrid(op, [63], **kwargs)
