"""FED / FSI / implicit / hyperbolic / Hamiltonian blocks and the Ruthotto–Haber and scheme models.

References are independent of the code under test: dense matrices built here, closed-form
polynomials, the data engineer's reference solvers (:mod:`pdeblocks.data.reference`), plain
autograd for the reversible backward.
"""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pdeblocks.layers.fed import FEDCycle, FSIBlock, cycle_amplification_bound, leja_order
from pdeblocks.layers.hyperbolic import HamiltonianBlock, HyperbolicBlock, ParabolicBlock, TVNorm
from pdeblocks.layers.implicit import ImplicitBlock
from pdeblocks.layers.registry import RESIDUAL_BLOCKS, create_block
from pdeblocks.ops.schedules import fed_step_sizes
from pdeblocks.ops.stencils import difference_stencil
from pdeblocks.stability import Certificate


def difference_matrix(n: int) -> torch.Tensor:
    """(n−1)×n forward difference, written out (independent of pdeblocks.ops.conv)."""
    d = torch.zeros(n - 1, n, dtype=torch.float64)
    idx = torch.arange(n - 1)
    d[idx, idx] = -1.0
    d[idx, idx + 1] = 1.0
    return d


def pm_diffusivity(s: torch.Tensor, lam: float) -> torch.Tensor:
    return 1.0 / (1.0 + s * s / lam ** 2)


def signals_1d(count: int = 6, length: int = 64, seed: int = 0, noise: float = 0.0) -> torch.Tensor:
    """Piecewise constant signals in [0, 1] (+ optional noise), [count, 1, length] float64."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, length))
    for i in range(count):
        jumps = np.sort(rng.choice(np.arange(4, length - 4), size=4, replace=False))
        values = rng.uniform(0, 1, size=5)
        out[i] = values[np.searchsorted(jumps, np.arange(length), side='right')]
    out += noise * rng.standard_normal(out.shape)
    return torch.from_numpy(out)[:, None, :]


def fixed_1d(cls, lam: float = 0.1, **kw):
    """A block on 1D signals with K = D fixed, float64, the given PM contrast."""
    block = cls(1, kernel_size=2, dim=1, boundary='neumann', weight=difference_stencil(1, dtype=torch.float64),
                trainable_weight=False, contrast=lam, dtype=torch.float64, interp_slack=1.0001, **kw)
    return block.requires_grad_(False)


# ----------------------------------------------------------------------------------------------- FED
@pytest.mark.parametrize('n', [1, 2, 5, 8, 16, 32])
def test_fed_polynomial_is_bounded_by_one(n):
    """|Π(1 − τᵢλ)| ≤ 1 on [0, 2/τ_max] and Σ τᵢ = τ_max(n²+n)/3 (closed form, dense grid)."""
    taus = np.array(fed_step_sizes(n, 1.0))
    assert abs(taus.sum() - (n * n + n) / 3) < 1e-10
    lam = np.linspace(0, 2, 200001)
    p = np.prod(1 - taus[:, None] * lam[None, :], axis=0)
    assert np.abs(p).max() <= 1 + 1e-9
    if n > 1:
        assert taus.max() > 1.0  # single steps exceed the explicit limit


def _amplifications(taus):
    lam = np.linspace(0, 2, 40001)
    partial = tail = 0.0
    p = np.ones_like(lam)
    for t in taus:
        p = p * (1 - t * lam)
        partial = max(partial, np.abs(p).max())
    p = np.ones_like(lam)
    for t in taus[::-1]:
        p = p * (1 - t * lam)
        tail = max(tail, np.abs(p).max())
    return partial, tail


@pytest.mark.parametrize('n', [8, 16])
def test_leja_order_limits_rounding_amplification(n):
    taus = fed_step_sizes(n, 1.0)
    order = leja_order([1 / t for t in taus])
    assert sorted(order) == list(range(n))
    leja = max(_amplifications([taus[i] for i in order]))
    ascending = max(_amplifications(taus))
    assert leja < 50 and ascending > 50 * leja
    block = FEDCycle(1, dim=1, steps=n, dtype=torch.float64)
    assert np.allclose(block.step_fractions.numpy(), [taus[i] for i in order], rtol=1e-12)


def test_fed_block_is_the_lagged_cycle():
    """Block output = the dense lagged cycle written here; ≠ per-step recomputation."""
    lam, n = 0.1, 8
    block = fixed_1d(FEDCycle, lam, steps=n, step_init=0.9)
    u0 = signals_1d(4, 48)
    tau_max = float(block.step_size())
    taus = fed_step_sizes(n, tau_max)
    d = difference_matrix(48)
    lagged, per_step = [], []
    for u in u0[:, 0]:
        a = d.T @ torch.diag(pm_diffusivity(d @ u, lam)) @ d
        v = u.clone()
        for t in taus:
            v = v - t * a @ v
        lagged.append(v)
        w = u.clone()
        for t in taus:
            w = w - t * d.T @ (pm_diffusivity(d @ w, lam) * (d @ w))
        per_step.append(w)
    lagged = torch.stack(lagged)[:, None]
    per_step = torch.stack(per_step)[:, None]
    out = block(u0)
    assert torch.allclose(out, lagged, rtol=0, atol=1e-10 * float(u0.abs().max()))
    assert (out - per_step).norm() > 1e3 * (out - lagged).norm()


def test_fed_lagged_is_more_accurate_than_per_step():
    """One 8-step cycle to T ≈ 12 (τ_max just below 0.5) against the fine reference (explicit, τ/50),
    noisy signals: the block (lagged) vs the data package's per-step FED."""
    from pdeblocks.classical import explicit_steps, fed, make_flux, relative_error
    lam, n, time_ = 0.2, 8, 11.99
    u0 = signals_1d(6, 128, seed=1, noise=0.1)
    flux = make_flux('perona_malik', lam)
    ref = explicit_steps(u0, flux, time_, 1200)
    block = fixed_1d(FEDCycle, lam, steps=n, step_init=0.5)
    limit = float(2 / block.norm_bound() ** 2)
    block = fixed_1d(FEDCycle, lam, steps=n, step_init=(3 * time_ / (n * n + n)) / limit)
    assert abs(block.cycle_time() - time_) < 1e-9
    lagged_err = float(relative_error(block(u0), ref).mean())
    per_step_err = float(relative_error(fed(u0, flux, time_, n, 1, lagged=False), ref).mean())
    assert lagged_err < 0.06 and per_step_err > 4 * lagged_err


@pytest.mark.parametrize('cls', [FEDCycle, FSIBlock])
@pytest.mark.parametrize('flux', ['perona_malik', 'weickert', 'learned', 'relu'])
def test_cycle_norm_decay_adversarial(cls, flux):
    torch.manual_seed(0)
    block = cls(3, dim=2, steps=16, cycles=2, flux=flux, boundary='zeros', step_init=0.999, dtype=torch.float64)
    with torch.no_grad():
        block.weight.mul_(1e3 * torch.rand_like(block.weight))
    u = (1e3 * torch.randn(4, 3, 12, 12, dtype=torch.float64))
    out = block(u)
    ratio = out.flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)
    assert torch.all(ratio <= 1 + 1e-9), ratio.max()


def test_cycle_norm_decay_optimised_input():
    """Gradient ascent on ‖f(u)‖/‖u‖ over inputs cannot exceed 1."""
    torch.manual_seed(1)
    block = FEDCycle(2, dim=2, steps=8, flux='perona_malik', boundary='circular', step_init=0.999,
                     contrast=0.05, dtype=torch.float64).requires_grad_(False)
    u = torch.randn(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([u], lr=0.1)
    best = 0.0
    for _ in range(60):
        ratio = block(u).norm() / u.norm()
        best = max(best, float(ratio.detach()))
        opt.zero_grad()
        (-ratio).backward()
        opt.step()
    assert best <= 1 + 1e-9


def test_learned_fed_steps_stay_stable():
    torch.manual_seed(2)
    block = FEDCycle(2, dim=1, steps=8, learn_steps=True, step_init=0.999, dtype=torch.float64)
    assert 1.0 <= float(block.amplification()) <= 1 + 1e-4  # plain FED at start
    with torch.no_grad():
        block.step_log_factors.copy_(torch.randn(8, dtype=torch.float64))
    c = float(block.amplification())
    # the certified bound is above the dense-grid sup of the perturbed polynomial
    fr = (block.step_fractions * block.step_log_factors.exp()).detach().numpy()
    x = np.linspace(0, 2, 400001)
    dense = np.abs(np.prod(1 - fr[:, None] * x[None], axis=0)).max()
    assert c >= dense > 1.0
    u = torch.randn(5, 2, 40, dtype=torch.float64) * 10
    out = block(u)
    assert torch.all(out.flatten(1).norm(dim=1) <= u.flatten(1).norm(dim=1) * (1 + 1e-9))
    # trainable: gradient reaches the factors
    out.square().sum().backward()
    assert block.step_log_factors.grad is not None and block.step_log_factors.grad.abs().sum() > 0


def test_cycle_amplification_bound_is_rigorous():
    rng = np.random.default_rng(0)
    for n in (3, 6, 10):
        fr = torch.from_numpy(rng.uniform(0.1, 3.0, size=n))
        bound = float(cycle_amplification_bound(fr))
        x = np.linspace(0, 2, 2_000_001)
        dense = np.abs(np.prod(1 - fr.numpy()[:, None] * x[None], axis=0)).max()
        assert bound >= dense


# ----------------------------------------------------------------------------------------------- FSI
@pytest.mark.parametrize('n', [3, 8])
def test_lagged_fsi_equals_fed(n):
    """Two different recurrences (FED steps vs FSI extrapolation) give the same cycle."""
    u0 = signals_1d(4, 40)
    fed = fixed_1d(FEDCycle, 0.1, steps=n, cycles=2, step_init=0.8)
    fsi = fixed_1d(FSIBlock, 0.1, steps=n, cycles=2, step_init=0.8)
    a, b = fed(u0), fsi(u0)
    assert (a - u0).norm() > 0.01 * u0.norm()
    assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_fsi_every_intermediate_is_stable():
    """FSI with k steps is the k-th intermediate state (α_k does not depend on n)."""
    torch.manual_seed(3)
    u = torch.randn(3, 2, 10, 10, dtype=torch.float64) * 100
    ref = FSIBlock(2, dim=2, steps=12, boundary='zeros', step_init=0.999, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.mul_(50)
    for k in range(1, 13):
        block = FSIBlock(2, dim=2, steps=k, boundary='zeros', step_init=0.999, dtype=torch.float64)
        block.load_state_dict(ref.state_dict())
        out = block(u)
        assert torch.all(out.flatten(1).norm(dim=1) <= u.flatten(1).norm(dim=1) * (1 + 1e-9)), k


def test_fsi_per_step_and_learned_alpha_certificates_are_honest():
    per_step = FSIBlock(2, dim=1, diffusivity='per_step')
    learned = FSIBlock(2, dim=1, learn_extrapolation=True)
    lagged = FSIBlock(2, dim=1)
    assert per_step.stability_certificate().norm_factor is None
    assert learned.stability_certificate().norm_factor is None
    assert per_step.stability_certificate().passes == learned.stability_certificate().passes == 'none'
    assert lagged.stability_certificate().norm_factor == 1.0
    assert isinstance(learned.extrapolation, torch.nn.Parameter)
    # the per-step form follows Hafner et al.'s recurrence, written out here
    u = torch.rand(2, 2, 30)
    tau = per_step.step_size()
    prev = cur = u
    for k in range(per_step.steps):
        alpha = (4 * k + 2) / (2 * k + 3)
        upd = cur - tau * per_step.update(cur)
        prev, cur = cur, alpha * upd + (1 - alpha) * prev
    assert torch.allclose(per_step(u), cur, atol=1e-6)


# ------------------------------------------------------------------------------------------ implicit
def dense_implicit(u0: torch.Tensor, lam: float, tau: float) -> torch.Tensor:
    d = difference_matrix(u0.shape[-1])
    out = []
    for u in u0[:, 0]:
        m = torch.eye(len(u), dtype=torch.float64) + tau * d.T @ torch.diag(pm_diffusivity(d @ u, lam)) @ d
        out.append(torch.linalg.solve(m, u))
    return torch.stack(out)[:, None]


@pytest.mark.parametrize('solver,multiple,iters', [('chebyshev', 100.0, 400), ('richardson', 3.0, 2000)])
def test_implicit_matches_dense_solve(solver, multiple, iters):
    u0 = signals_1d(4, 64)
    block = fixed_1d(ImplicitBlock, 0.1, relative_step=multiple, tol=1e-9, max_iterations=iters, solver=solver)
    tau = float(block.step_size())
    assert abs(tau - multiple * 2 / float(block.norm_bound()) ** 2) < 1e-9 * tau
    out = block(u0)
    assert block.last_residual <= 1e-9 and block.last_iterations < iters
    ref = dense_implicit(u0, 0.1, tau)
    assert float((out - ref).norm() / ref.norm()) < 1e-7
    # residual reported = true residual of the returned solution (within rounding)
    d = difference_matrix(64)
    res = max(float((u - (o + tau * d.T @ (pm_diffusivity(d @ u, 0.1) * (d @ o)))).norm() / u.norm())
              for u, o in zip(u0[:, 0], out[:, 0]))
    assert res <= 2e-9


def test_implicit_converges_at_100x_explicit_limit_and_is_stable():
    u0 = signals_1d(6, 128, noise=0.05)
    block = fixed_1d(ImplicitBlock, 0.05, relative_step=100.0, tol=1e-6, max_iterations=500)
    out = block(u0)
    assert block.last_residual <= 1e-6
    assert torch.all(out.flatten(1).norm(dim=1) <= u0.flatten(1).norm(dim=1))
    assert torch.allclose(out.mean(-1), u0.mean(-1), atol=1e-6)  # Neumann: the mean is conserved


@pytest.mark.parametrize('iterations', [1, 2, 3, 7])
def test_implicit_every_iterate_is_stable_adversarial(iterations):
    torch.manual_seed(4)
    block = ImplicitBlock(3, dim=2, boundary='zeros', relative_step=1e4, tol=1e-12, max_iterations=iterations,
                          flux='weickert', dtype=torch.float64)
    with torch.no_grad():
        block.weight.mul_(1e2)
    u = torch.randn(2, 3, 10, 10, dtype=torch.float64) * 1e3
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        out = block(u)
    assert torch.all(out.flatten(1).norm(dim=1) <= u.flatten(1).norm(dim=1) * (1 + 1e-9))


def test_implicit_gradients_match_dense_reference():
    """Implicit differentiation and unrolling vs autograd through a dense solve (contrast and input)."""
    torch.manual_seed(5)
    u0 = signals_1d(3, 32, noise=0.05)
    w = torch.randn_like(u0)
    grads = {}
    for mode in ('implicit', 'unrolled'):
        block = fixed_1d(ImplicitBlock, 0.1, relative_step=20.0, tol=1e-12, max_iterations=400, gradient=mode)
        block.flux.raw_contrast.requires_grad_(True)
        block.step_param.requires_grad_(True)
        x = u0.clone().requires_grad_(True)
        (block(x) * w).sum().backward()
        grads[mode] = [x.grad, block.flux.raw_contrast.grad, block.step_param.grad]
    # dense reference with the same parameters
    block = fixed_1d(ImplicitBlock, 0.1, relative_step=20.0)
    raw = block.flux.raw_contrast.detach().clone().requires_grad_(True)
    theta = block.step_param.detach().clone().requires_grad_(True)
    x = u0.clone().requires_grad_(True)
    limit = 2 / float(block.norm_bound()) ** 2
    lam, tau = F.softplus(raw), F.softplus(theta) * limit
    d = difference_matrix(32)
    outs = []
    for u in x[:, 0]:
        g = 1.0 / (1.0 + (d @ u) ** 2 / lam ** 2)
        outs.append(torch.linalg.solve(torch.eye(32, dtype=torch.float64) + tau * d.T @ torch.diag(g) @ d, u))
    (torch.stack(outs)[:, None] * w).sum().backward()
    ref = [x.grad, raw.grad, theta.grad]
    for mode, gs in grads.items():
        for a, b in zip(gs, ref):
            assert float((a - b).norm() / b.norm()) < 1e-6, mode


def test_implicit_warns_once_with_residual():
    block = fixed_1d(ImplicitBlock, 0.1, relative_step=100.0, tol=1e-10, max_iterations=3)
    u0 = signals_1d(2, 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        block(u0)
        block(u0)
    messages = [str(c.message) for c in caught if issubclass(c.category, RuntimeWarning)]
    assert len(messages) == 1 and 'residual' in messages[0]
    assert f"{block.last_residual:.3g}" in messages[0] and block.last_residual > 1e-10
    assert block.last_iterations == 3


def test_implicit_torchscript_matches_eager():
    torch.manual_seed(6)
    block = ImplicitBlock(2, dim=2, boundary='zeros', relative_step=5.0, tol=1e-6, max_iterations=100)
    x = torch.randn(2, 2, 9, 9)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        scripted = torch.jit.script(block)
    assert torch.allclose(scripted(x), block(x), atol=1e-6)


# ---------------------------------------------------------------------------------- hyperbolic family
def test_tvnorm_formula():
    torch.manual_seed(7)
    norm = TVNorm(5, eps=1e-2)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 6.0))
        norm.bias.copy_(torch.linspace(-1, 1, 5))
    x = torch.randn(3, 5, 4, 6)
    expected = x.clone()
    for b in range(3):
        for i in range(4):
            for j in range(6):
                v = x[b, :, i, j]
                expected[b, :, i, j] = torch.arange(1.0, 6.0) * v / math.sqrt(float(v @ v) + 1e-2) + \
                    torch.linspace(-1, 1, 5)
    assert torch.allclose(norm(x), expected, atol=1e-5)


def _flux_ref(layer, y):
    """Kᵀσ(N(K y)) with torch's conv2d / conv_transpose2d (zero padding)."""
    w = layer.weight
    s = F.conv2d(y, w, padding=1)
    s = s / torch.sqrt((s * s).sum(1, keepdim=True) + layer.norm.eps)
    s = s * layer.norm.weight.view(1, -1, 1, 1) + layer.norm.bias.view(1, -1, 1, 1)
    return F.conv_transpose2d(F.relu(s), w, padding=1)


def test_leapfrog_and_verlet_recurrences():
    torch.manual_seed(8)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    hyp = HyperbolicBlock(4, steps=4, step_size=0.7, boundary='zeros', reversible=False, dtype=torch.float64)
    prev, cur = x, x
    for layer in hyp.layers:
        prev, cur = cur, 2 * cur - prev - 0.49 * _flux_ref(layer, cur)
    assert torch.allclose(hyp(x), cur, atol=1e-12)
    ham = HamiltonianBlock(4, steps=3, step_size=0.3, boundary='zeros', reversible=False, dtype=torch.float64)
    y, z = x[:, :2], x[:, 2:]
    for f1, f2 in zip(ham.flux_z, ham.flux_y):
        y = y - 0.3 * _flux_ref(f1, z)
        z = z + 0.3 * _flux_ref(f2, y)
    assert torch.allclose(ham(x), torch.cat([y, z], 1), atol=1e-12)
    par = ParabolicBlock(4, steps=2, step_size=0.5, boundary='zeros', dtype=torch.float64)
    y = x
    for layer in par.layers:
        y = y - 0.5 * _flux_ref(layer, y)
    assert torch.allclose(par(x), y, atol=1e-12)


@pytest.mark.parametrize('cls', [HyperbolicBlock, HamiltonianBlock])
def test_reversible_gradients_match_autograd(cls):
    torch.manual_seed(9)
    block = cls(6, dim=2, steps=8, step_size=0.5, boundary='zeros', dtype=torch.float64)
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    w = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    results = {}
    for reversible in (True, False):
        block.reversible = reversible
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out = block(xi)
        (out * w).sum().backward()
        results[reversible] = (out.detach(), [xi.grad] + [p.grad for p in block.parameters()])
    assert torch.equal(results[True][0], results[False][0])
    for a, b in zip(results[True][1], results[False][1]):
        assert b is not None and float((a - b).norm() / b.norm()) < 1e-6


def _training_peak_bytes(block, x):
    """Peak live CPU bytes of forward + backward (torch profiler, self allocations in time order)."""
    for p in block.parameters():
        p.grad = torch.zeros_like(p)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        block(x).square().sum().backward()
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                    if e.self_cpu_memory_usage != 0)
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize('cls', [HyperbolicBlock, HamiltonianBlock])
def test_reversible_activation_memory_does_not_grow(cls):
    x = torch.randn(2, 8, 16, 16)

    def peak(steps, reversible):
        torch.manual_seed(0)
        block = cls(8, dim=2, steps=steps, step_size=0.2, boundary='zeros', reversible=reversible)
        return _training_peak_bytes(block, x)
    assert peak(16, True) <= 1.1 * peak(4, True)
    assert peak(16, False) >= 3 * peak(4, False)
    assert peak(16, True) < 0.5 * peak(16, False)
    # nothing is saved through autograd by the reversible steps
    block = cls(8, dim=2, steps=4, step_size=0.2, boundary='zeros', reversible=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = block(x)
    assert saved == []
    out.sum().backward()


@pytest.mark.parametrize('cls', [HyperbolicBlock, HamiltonianBlock])
def test_reversible_retain_graph_and_in_place_guard(cls):
    torch.manual_seed(10)
    block = cls(4, dim=2, steps=3, step_size=0.5, boundary='zeros', dtype=torch.float64)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    out = block(x)
    first = torch.autograd.grad(out.sum(), x, retain_graph=True)[0]
    second = torch.autograd.grad(out.sum(), x)[0]
    assert torch.allclose(first, second, rtol=1e-12, atol=0)
    # an in-place edit of the stack's output before backward is detected, not silently wrong
    block.drop_path = torch.nn.Identity()
    y = x.detach().clone().requires_grad_(True)
    raw = block.run_reversible(*((y, y) if cls is HyperbolicBlock else (y[:, :2], y[:, 2:])))
    raw[1].mul_(2.0)
    with pytest.raises(RuntimeError, match='in place'):
        raw[1].sum().backward()


# ----------------------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    with pytest.raises(ValueError, match='even'):
        HamiltonianBlock(5)
    with pytest.raises(ValueError, match='step_size'):
        HyperbolicBlock(4, step_size=0.0)
    with pytest.raises(ValueError, match='steps'):
        ParabolicBlock(4, steps=0)
    with pytest.raises(ValueError, match='steps'):
        FEDCycle(2, steps=0)
    with pytest.raises(ValueError, match='cycles'):
        FSIBlock(2, cycles=-1)
    with pytest.raises(ValueError, match='ordering'):
        FEDCycle(2, ordering='random')
    with pytest.raises(ValueError, match='relative_step'):
        ImplicitBlock(2, relative_step=-1.0)
    with pytest.raises(ValueError, match='relative_step'):
        ImplicitBlock(2, relative_step=0.0)
    with pytest.raises(ValueError, match='max_iterations'):
        ImplicitBlock(2, max_iterations=0)
    with pytest.raises(ValueError, match='tol'):
        ImplicitBlock(2, tol=0.0)
    with pytest.raises(ValueError, match='outer_iterations'):
        ImplicitBlock(2, gradient='implicit', outer_iterations=2)
    with pytest.raises(ValueError, match='diffusivity'):
        FSIBlock(2, diffusivity='sometimes')
    # mismatched shapes: expected vs got in the message
    for block in (FEDCycle(3, dim=2), FSIBlock(3, dim=2), ImplicitBlock(3, dim=2), HyperbolicBlock(4),
                  HamiltonianBlock(4), ParabolicBlock(4)):
        with pytest.raises(ValueError, match=r'\[2, 5, 8, 8\]'):
            block(torch.randn(2, 5, 8, 8))
    with pytest.raises(ValueError):
        TVNorm(3)(torch.randn(2, 4, 5))


# ------------------------------------------------------------------------------ registry, certificates
@pytest.mark.parametrize('name', ['fed', 'fsi', 'implicit', 'hyperbolic', 'hamiltonian'])
def test_registered_blocks(name):
    assert name in RESIDUAL_BLOCKS
    block = create_block(name, 8, dim=2, drop_path=0.1, boundary='zeros')
    x = torch.randn(2, 8, 6, 6)
    block.train()
    assert block(x).shape == x.shape
    block.eval()
    with torch.no_grad():
        assert block(x).shape == x.shape
    cert = block.stability_certificate()
    assert isinstance(cert, Certificate) and cert.mode and cert.guarantee
    assert create_block(name, 4, dim=1, boundary='neumann')(torch.randn(1, 4, 12)).shape == (1, 4, 12)


# ---------------------------------------------------------------------------------------------- models
def test_ruthotto_haber_parameter_counts_match_the_authors():
    import timm

    import pdeblocks.models.ruthotto_haber  # noqa: F401
    counts = {name: sum(p.numel() for p in timm.create_model(name).parameters())
              for name in ('pde_parabolic_cnn', 'pde_hyperbolic_cnn', 'pde_hamiltonian_cnn')}
    assert counts == {'pde_parabolic_cnn': 502_570, 'pde_hyperbolic_cnn': 502_570, 'pde_hamiltonian_cnn': 264_106}


def test_scheme_models_forward_and_certify():
    import timm

    import pdeblocks.models.pde_schemes  # noqa: F401
    from pdeblocks.stability import certify
    for name, mode in (('pde_fsi_resnet_tiny', 'fsi-lagged'), ('pde_implicit_resnet_tiny', 'implicit-lagged')):
        model = timm.create_model(name, num_classes=7)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
        report = certify(model)
        assert len(report) == 4 and all(b.mode == mode for b in report.blocks)
        assert report.composed_norm_factor == 1.0
