"""The exact tridiagonal solvers (Thomas in C on CPU, cyclic reduction elsewhere) and the implicit diffusion step they
make unconditionally stable."""
import numpy as np
import pytest
import torch

from pdeblocks.ops.tridiagonal import (
    cyclic_reduction,
    diffusion_system,
    implicit_diffusion_step,
    solve_tridiagonal,
    thomas,
)

LENGTHS = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100, 257, 1000]


def _dense(diag: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    return torch.diag_embed(diag) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)


def _dense_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a⁻¹b for batched float64 matrices by numpy's LAPACK. Not torch.linalg.solve: with torch 2.14.1 (MKL) a batched
    solve of 257 × 257 systems after torch.set_num_threads(1) then (2) (which test_gcnn's thread test does) raises
    'Pivots given to lu_solve…' or returns a wrong x (residual 1e2), whatever the solver under test."""
    return torch.from_numpy(np.linalg.solve(a.double().numpy(), b.double().unsqueeze(-1).numpy())[..., 0])


def _spd(shape, n, g):
    """A random symmetric diagonally dominant (hence SPD) tridiagonal system, off-diagonals of both signs."""
    off = torch.randn(*shape, n - 1, generator=g, dtype=torch.float64)
    pad = torch.zeros(*shape, 1, dtype=torch.float64)
    diag = torch.cat([pad, off.abs()], -1) + torch.cat([off.abs(), pad], -1) + 0.1 + torch.rand(*shape, n, generator=g,
                                                                                                 dtype=torch.float64)
    return diag, off


@pytest.mark.parametrize('n', LENGTHS)
def test_matches_dense_solve(n):
    g = torch.Generator().manual_seed(n)
    diag, off = _spd((2, 3), n, g)
    rhs = torch.randn(2, 3, n, generator=g, dtype=torch.float64)
    x = solve_tridiagonal(diag, off, rhs)
    ref = _dense_solve(_dense(diag, off), rhs)
    assert x.shape == rhs.shape
    assert torch.allclose(x, ref, rtol=0, atol=1e-12 * float(ref.abs().max()))



@pytest.mark.parametrize('n', LENGTHS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_both_solvers_match_dense_solve(n, dtype):
    """Cyclic reduction (the fallback, other devices) and the C kernel's Thomas solve (used on CPU where a compiler
    works) each against a dense LU solve, in float32 and float64."""
    g = torch.Generator().manual_seed(100 + n)
    diag, off = _spd((2, 3), n, g)
    rhs = torch.randn(2, 3, n, generator=g, dtype=torch.float64)
    ref = _dense_solve(_dense(diag, off), rhs)
    tol = (1e-12 if dtype == torch.float64 else 1e-5) * float(ref.abs().max())
    args = [t.to(dtype) for t in (diag, off, rhs)]
    assert torch.allclose(cyclic_reduction(*args).double(), ref, rtol=0, atol=tol)
    x = thomas(*args)
    from pdeblocks._native import native_available
    if native_available():
        assert x is not None and x.dtype == dtype and x.shape == rhs.shape
        assert torch.allclose(x.double(), ref, rtol=0, atol=tol)
    else:
        assert x is None
    assert thomas(*[t.to(torch.bfloat16) for t in (diag, off, rhs)]) is None   # not handled: cyclic reduction

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('n', [1, 2, 3, 130])
def test_thomas_rows_in_vector_lanes_equal_row_by_row(n, dtype):
    """The C kernel solves blocks of rows in vector lanes and the rows left over one by one: 37 rows at once (blocks
    and a remainder for any lane count up to 32) give bit for bit what each row gives alone, and match a dense solve."""
    from pdeblocks._native import native_available
    if not native_available():
        pytest.skip('no C compiler: cyclic reduction only')
    g = torch.Generator().manual_seed(n)
    diag, off = _spd((37,), n, g)
    rhs = torch.randn(37, n, generator=g, dtype=torch.float64)
    args = [t.to(dtype) for t in (diag, off, rhs)]
    x = thomas(*args)
    one_by_one = torch.cat([thomas(*[t[i:i + 1] for t in args]) for i in range(37)])
    assert torch.equal(x, one_by_one)
    ref = _dense_solve(_dense(diag, off), rhs)
    tol = (1e-12 if dtype == torch.float64 else 1e-5) * float(ref.abs().max())
    assert torch.allclose(x.double(), ref, rtol=0, atol=tol)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('n', [1, 2, 9, 301])
def test_step_without_gradient_equals_the_assembled_solve(n, dtype):
    """Without autograd the step builds I + τDᵀWD inside the C kernel: bit for bit the solve of diffusion_system's
    matrices, for τ per signal and one τ for all, 0 to 1e6; with autograd it takes the assembled path."""
    g = torch.Generator().manual_seed(n)
    u = torch.randn(21, 1, n, generator=g, dtype=dtype)
    w = torch.rand(21, 1, n - 1, generator=g, dtype=dtype)
    for tau in (10.0 ** torch.linspace(-3, 6, 21, dtype=dtype).reshape(21, 1, 1), torch.tensor(0.0, dtype=dtype),
                torch.tensor(250.0, dtype=dtype)):
        ref = solve_tridiagonal(*diffusion_system(w, tau), u)
        with torch.no_grad():
            assert torch.equal(implicit_diffusion_step(u, w, tau), ref)
    assert implicit_diffusion_step(u, w.requires_grad_(), tau).grad_fn is not None


@pytest.mark.parametrize('n', [6, 33, 500])
def test_diffusion_system_matches_dense_operator(n):
    """diag/off of I + τDᵀWD against the dense matrix built from D, and the step against a dense solve, for τ up
    to 1e6 (the condition number then reaches ~1e6: float64 keeps ~1e-10)."""
    g = torch.Generator().manual_seed(n)
    w = torch.rand(4, n - 1, generator=g, dtype=torch.float64)
    tau = torch.tensor([0.0, 1.0, 1e3, 1e6], dtype=torch.float64).reshape(4, 1)
    D = torch.diff(torch.eye(n, dtype=torch.float64), dim=0)            # (n − 1) × n forward difference
    dense = torch.eye(n, dtype=torch.float64) + tau[:, :, None] * (D.T @ (w[:, :, None] * D))   # [4, n, n]
    diag, off = diffusion_system(w, tau)
    assert torch.allclose(_dense(diag, off), dense, rtol=1e-14, atol=0)
    u = torch.randn(4, n, generator=g, dtype=torch.float64)
    ref = _dense_solve(dense, u)
    assert torch.allclose(implicit_diffusion_step(u, w, tau), ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize('n', [1, 2, 5, 8, 11])
def test_gradcheck(n):
    g = torch.Generator().manual_seed(n)
    diag, off = _spd((2,), n, g)
    rhs = torch.randn(2, n, generator=g, dtype=torch.float64)
    args = (diag.requires_grad_(), off.requires_grad_(), rhs.requires_grad_())
    assert torch.autograd.gradcheck(solve_tridiagonal, args)


def test_gradient_matches_dense_solve_through_the_diffusion_step():
    """Gradients w.r.t. u, the edge weights and τ of the step against autograd through torch.linalg.solve."""
    g = torch.Generator().manual_seed(0)
    n = 37
    u = torch.randn(3, 1, n, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, 1, n - 1, generator=g, dtype=torch.float64, requires_grad=True)
    tau = torch.tensor([0.5, 20.0, 300.0], dtype=torch.float64).reshape(3, 1, 1).requires_grad_()
    probe = torch.randn(3, 1, n, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((implicit_diffusion_step(u, w, tau) * probe).sum(), (u, w, tau))
    D = torch.diff(torch.eye(n, dtype=torch.float64), dim=0)
    dense = torch.eye(n, dtype=torch.float64) + tau * (D.T @ (w.transpose(-1, -2) * D))     # [3, n, n]
    ref = torch.autograd.grad((torch.linalg.solve(dense, u.transpose(-1, -2)).transpose(-1, -2) * probe).sum(),
                              (u, w, tau))
    for a, b in zip(grads, ref):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11)


def _norm_ratio_and_range(u, w, tau):
    out = implicit_diffusion_step(u, w, tau)
    ratio = out.flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)
    below = (u.amin(-1, keepdim=True) - out).amax()
    above = (out - u.amax(-1, keepdim=True)).amax()
    return out, ratio, below, above


@pytest.mark.parametrize('dtype, tau', [(torch.float64, t) for t in (0.0, 1e-3, 1.0, 1e4, 1e6, 1e8)]
                         + [(torch.float32, t) for t in (0.0, 1.0, 100.0)])
def test_stability_for_any_tau_and_weights(dtype, tau):
    """‖u⁺‖ ≤ ‖u‖, min u ≤ u⁺ ≤ max u and the mean kept, for τ·w from 0 to 1e8 (some edges cut), to rounding:
    eps × the condition number 1 + 4τ max w (float64 to τw = 1e8; float32 to 100)."""
    g = torch.Generator().manual_seed(7)
    n = 301
    u = 100.0 * torch.randn(6, 1, n, generator=g, dtype=torch.float64) + 40.0
    w = torch.rand(6, 1, n - 1, generator=g, dtype=torch.float64) * torch.tensor(
        [0.0, 1e-8, 1e-3, 0.1, 1.0, 1.0], dtype=torch.float64).reshape(6, 1, 1)
    w[5, :, ::7] = 0.0                     # cut edges: independent pieces
    u, w = u.to(dtype), w.to(dtype)
    out, ratio, below, above = _norm_ratio_and_range(u, w, torch.tensor(tau, dtype=dtype))
    eps = torch.finfo(dtype).eps * 4.0 * (1.0 + 4.0 * tau)
    scale = float(u.abs().max())
    assert torch.isfinite(out).all()
    assert float(ratio.max()) <= 1.0 + eps
    assert float(below) <= eps * scale and float(above) <= eps * scale
    assert float((out.mean(-1) - u.mean(-1)).abs().max()) <= eps * scale
    if tau == 0.0:
        assert torch.equal(out, u)


def test_stability_against_optimised_inputs():
    """Gradient ascent on ‖u⁺‖/‖u‖ and on the overshoot max u⁺ − max u, over u, the weights (softplus: ≥ 0) and
    log τ, starting from rough signals: neither ever exceeds its bound."""
    g = torch.Generator().manual_seed(3)
    n = 64
    u = torch.randn(8, 1, n, generator=g, dtype=torch.float64).requires_grad_()
    raw_w = (3.0 * torch.randn(8, 1, n - 1, generator=g, dtype=torch.float64)).requires_grad_()
    log_tau = torch.full((8, 1, 1), 2.0, dtype=torch.float64).requires_grad_()
    opt = torch.optim.Adam([u, raw_w, log_tau], lr=0.1)
    worst_ratio, worst_overshoot = 0.0, -1.0
    for _ in range(150):
        w = torch.nn.functional.softplus(raw_w) * 1e3
        out, ratio, below, above = _norm_ratio_and_range(u, w, log_tau.exp())
        overshoot = ((out.amax(-1) - u.amax(-1)) / u.abs().amax(-1)).amax()
        worst_ratio = max(worst_ratio, float(ratio.detach().max()))
        worst_overshoot = max(worst_overshoot, float(overshoot.detach()))
        loss = -(ratio.sum() + 100.0 * overshoot)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert worst_ratio <= 1.0 + 1e-12
    assert worst_overshoot <= 1e-12


@pytest.mark.parametrize('args, match', [
    ((torch.ones(2, 5), torch.ones(2, 5), torch.ones(2, 5)), r'off .* must have shape \(2, 4\) .* got \(2, 5\)'),
    ((torch.ones(2, 5), torch.ones(2, 4), torch.ones(2, 6)), r'rhs must have diag\'s shape \(2, 5\), got \(2, 6\)'),
    ((torch.ones(3, 5), torch.ones(2, 4), torch.ones(3, 5)), r'off .* must have shape \(3, 4\) .* got \(2, 4\)'),
    ((torch.ones(()), torch.ones(()), torch.ones(())), r'last axis'),
    ((torch.ones(2, 5, dtype=torch.long), torch.ones(2, 4), torch.ones(2, 5)), r'floating-point'),
    ((torch.ones(2, 5), torch.ones(2, 4, dtype=torch.float64), torch.ones(2, 5)), r'one dtype'),
])
def test_bad_shapes_are_value_errors_naming_expected_and_got(args, match):
    with pytest.raises(ValueError, match=match):
        solve_tridiagonal(*args)


def test_bad_step_inputs():
    u = torch.ones(2, 1, 10)
    with pytest.raises(ValueError, match=r'weights .* must have shape \(2, 1, 9\) .* got \(2, 1, 10\)'):
        implicit_diffusion_step(u, torch.ones(2, 1, 10), 1.0)
    with pytest.raises(ValueError, match=r'tau .* got shape \(2, 1, 3\)'):
        implicit_diffusion_step(u, torch.ones(2, 1, 9), torch.ones(2, 1, 3))
