"""SymmetricResidual: the stability guarantees, tested adversarially, and the block's contract."""
import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdeblocks.layers import SymmetricResidual
from pdeblocks.layers.symmetric import NORM_BOUND_STATE
from pdeblocks.ops import norm_bound

ALL_FLUXES = ['perona_malik', 'charbonnier', 'exp_perona_malik', 'weickert', 'relu', 'learned']
MONOTONE_FLUXES = ['charbonnier', 'relu']
BOUNDARIES = ['neumann', 'zeros', 'circular', 'reflect']
# the certification kinds, each tested on the passes it certifies: strict on every pass (training
# mode included), the training contract on eval-mode passes
CERTIFIED = ['all', 'eval']


def certified_mode(module, passes):
    """Put ``module`` in the mode whose passes ``passes`` certifies (train for strict, eval for the contract)."""
    return module.train() if passes == 'all' else module.eval()


HYP = settings(max_examples=2000, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def block_and_inputs(draw, stability):
    dim = draw(st.sampled_from([1, 2]))
    boundary = draw(st.sampled_from(BOUNDARIES))
    k = draw(st.sampled_from([3, 5]))
    c = draw(st.integers(1, 4))
    h = draw(st.integers(1, 4))
    flux = draw(st.sampled_from(MONOTONE_FLUXES if stability == 'lipschitz' else ALL_FLUXES))
    n = draw(st.integers(k + 1, k + 6))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    weight_scale = 10 ** draw(st.floats(-3, 3))
    amplitude = 10 ** draw(st.floats(-3, 2))
    logit = draw(st.floats(-5, 30))  # up to τ at the limit itself (sigmoid(30) = 1 in float64 to 1e-13)
    passes = draw(st.sampled_from(CERTIFIED))
    gen = torch.Generator().manual_seed(seed)
    blk = SymmetricResidual(c, hidden_channels=h, kernel_size=k, dim=dim, flux=flux, boundary=boundary,
                            stability=stability, contrast=float(10 ** draw(st.floats(-2, 1))),
                            certification=passes).double()
    certified_mode(blk, passes)
    with torch.no_grad():
        blk.weight.copy_(torch.randn(blk.weight.shape, generator=gen, dtype=torch.float64) * weight_scale)
        blk.step_param.fill_(logit)
        if blk.bias is not None:
            blk.bias.copy_(torch.randn(blk.bias.shape, generator=gen, dtype=torch.float64) * weight_scale)
        if hasattr(blk.flux, 'knot_logits'):
            blk.flux.knot_logits.copy_(torch.randn(blk.flux.knot_logits.shape, generator=gen) * 5)
    shape = [3, c] + [n] * dim
    u = torch.randn(shape, generator=gen, dtype=torch.float64) * amplitude
    v = u + torch.randn(shape, generator=gen, dtype=torch.float64) * amplitude * 10 ** draw(st.floats(-4, 0))
    return blk, u, v


def _norms(x):
    return x.flatten(1).norm(dim=1)


@HYP
@given(block_and_inputs('euclidean'))
def test_euclidean_norm_never_grows(case):
    """‖f(u)‖ ≤ ‖u‖ for random weights up to 1e3, any flux (nonmonotone too), any boundary, τ up to the limit."""
    blk, u, _ = case
    with torch.no_grad():
        out = blk(u)
    assert (_norms(out) <= _norms(u) * (1 + 1e-12)).all()


@HYP
@given(block_and_inputs('lipschitz'))
def test_lipschitz_never_expands(case):
    """‖f(u) − f(v)‖ ≤ ‖u − v‖ for monotone fluxes, with bias, for close and distant pairs."""
    blk, u, v = case
    with torch.no_grad():
        d_out = _norms(blk(u) - blk(v))
    assert (d_out <= _norms(u - v) * (1 + 1e-9) + 1e-300).all()


@pytest.mark.parametrize('passes', CERTIFIED)
@pytest.mark.parametrize('stability,flux', [('euclidean', 'perona_malik'), ('euclidean', 'weickert'),
                                            ('euclidean', 'learned'), ('lipschitz', 'charbonnier'),
                                            ('retracted', 'learned'), ('retracted', 'perona_malik')])
def test_guarantee_survives_absurd_training(stability, flux, passes):
    """100 SGD steps at lr=10 on a loss that rewards growth: the guarantee holds on every training pass
    (strict) and on eval passes afterwards (both kinds)."""
    torch.manual_seed(0)
    blk = SymmetricResidual(4, kernel_size=3, dim=2, flux=flux, boundary='zeros', stability=stability,
                            certification=passes).double()
    opt = torch.optim.SGD(blk.parameters(), lr=10.0)
    x = torch.randn(4, 4, 10, 10, dtype=torch.float64)
    y = torch.randn_like(x)
    for _ in range(100):
        out = blk(x)
        if stability != 'lipschitz':
            loss = -out.pow(2).sum() / x.pow(2).sum()
            if passes == 'all':
                assert (_norms(out) <= _norms(x) * (1 + 1e-12)).all()
        else:
            diff = out - blk(y)
            loss = -diff.pow(2).sum() / (x - y).pow(2).sum()
            if passes == 'all':
                assert (_norms(diff) <= _norms(x - y) * (1 + 1e-9)).all()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.isfinite(p).all() for p in blk.parameters())
    blk.eval()
    with torch.no_grad():
        u = torch.randn(64, 4, 10, 10, dtype=torch.float64) * 10
        v = u + torch.randn_like(u) * 0.1
        if stability != 'lipschitz':
            assert (_norms(blk(u)) <= _norms(u) * (1 + 1e-12)).all()
            assert (_norms(blk(x)) <= _norms(x) * (1 + 1e-12)).all()
        else:
            assert (_norms(blk(u) - blk(v)) <= _norms(u - v) * (1 + 1e-9)).all()


def worst_norm_growth(blk, iterations: int = 300) -> float:
    """The largest ‖f(u)‖/‖u‖ that Adam's gradient ascent over 16 inputs [3, 12] finds (the block frozen)."""
    blk.requires_grad_(False)
    u = torch.randn(16, 3, 12, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([u], lr=0.05)
    best = 0.0
    for _ in range(iterations):
        ratio = _norms(blk(u)) / _norms(u)
        best = max(best, float(ratio.detach().max()))
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
    return best


@pytest.mark.parametrize('passes', CERTIFIED)
@pytest.mark.parametrize('boundary', BOUNDARIES)
def test_inputs_optimised_to_break_the_bound(boundary, passes):
    """Gradient ascent on ‖f(u)‖/‖u‖ over u, weights ×100 and τ at the limit: the ratio stays ≤ 1."""
    torch.manual_seed(1)
    blk = SymmetricResidual(3, kernel_size=3, dim=1, flux='exp_perona_malik', boundary=boundary,
                            contrast=0.1, certification=passes).double()
    certified_mode(blk, passes)
    with torch.no_grad():
        blk.weight.mul_(100)
        blk.step_param.fill_(40.0)
    best = worst_norm_growth(blk)
    assert best <= 1 + 1e-12
    assert best > 0.5  # the search found inputs the block barely shrinks: the test has teeth


def test_thousand_block_stack_is_monotone_layer_by_layer():
    torch.manual_seed(2)
    blocks = [SymmetricResidual(2, kernel_size=3, dim=1, flux='perona_malik', contrast=0.3).double().eval()
              for _ in range(1000)]
    u = torch.randn(2, 2, 24, dtype=torch.float64) * 5
    norms = [_norms(u)]
    with torch.no_grad():
        for b in blocks:
            b.weight.mul_(torch.rand(()) * 100)
            u = b(u)
            norms.append(_norms(u))
    norms = torch.stack(norms)
    assert (norms[1:] <= norms[:-1] * (1 + 1e-12)).all()
    assert (norms[-1] < 0.99 * norms[0]).all()  # and it does diffuse


# ------------------------------------------------------------------------------------------ retracted steps
@HYP
@given(block_and_inputs('retracted'))
def test_retracted_norm_never_grows(case):
    """A free τ from −5 to 30 (backward diffusion, thousands of stable limits), weights up to 1e3, a bias, any flux
    and boundary: ‖f(u)‖ ≤ ‖u‖."""
    blk, u, _ = case
    with torch.no_grad():
        out = blk(u)
    assert (_norms(out) <= _norms(u) * (1 + 1e-12)).all()


@HYP
@given(block_and_inputs('retracted'))
def test_retracted_lipschitz_bound_of_its_certificate(case):
    """‖f(u) − f(v)‖ ≤ (2 + |τ|·L_Φ·B²)·‖u − v‖ with B = ops.norm_bound(K) and L_Φ the flux's declared slope
    bound, for close and distant pairs."""
    blk, u, v = case
    lip_phi = blk.flux.lipschitz_bound
    if lip_phi is None:
        return
    bound = float(norm_bound(blk.weight.detach(), blk.boundary))
    lipschitz = 2.0 + abs(float(blk.step_param.detach())) * lip_phi * bound ** 2
    with torch.no_grad():
        d_out = _norms(blk(u) - blk(v))
    assert (d_out <= _norms(u - v) * lipschitz * (1 + 1e-9) + 1e-300).all()


def test_retracted_step_is_the_free_step_where_that_keeps_the_norm_and_retracted_where_not():
    """The same weights as a free step: equal outputs where the free step does not grow ‖u‖; where it does, the
    retracted output has the free output's direction and ‖u‖'s length."""
    torch.manual_seed(3)
    free = SymmetricResidual(2, dim=1, flux='charbonnier', stability='none').double()
    retracted = SymmetricResidual(2, dim=1, flux='charbonnier', stability='retracted').double()
    retracted.load_state_dict(free.state_dict())
    u = torch.randn(64, 2, 16, dtype=torch.float64)
    for tau in (0.05, -2.0, 50.0):
        with torch.no_grad():
            free.step_param.fill_(tau)
            retracted.step_param.fill_(tau)
            y, out = free(u), retracted(u)
        grew = _norms(y) > _norms(u)
        assert torch.equal(out[~grew], y[~grew])
        if tau != 0.05:
            assert grew.any()   # the free step does grow the norm here: the retraction acts
        assert torch.allclose(_norms(out[grew]), _norms(u[grew]), rtol=1e-12)
        cos = (out[grew] * y[grew]).flatten(1).sum(1) / (_norms(out[grew]) * _norms(y[grew]))
        assert torch.allclose(cos, torch.ones_like(cos))


def test_retracted_inputs_optimised_to_break_the_bound():
    """Gradient ascent on ‖f(u)‖/‖u‖ over u, weights ×100, τ = 40 and a bias: at most 1, and the search reaches 1."""
    torch.manual_seed(1)
    blk = SymmetricResidual(3, kernel_size=3, dim=1, flux='exp_perona_malik', contrast=0.1,
                            stability='retracted').double()
    with torch.no_grad():
        blk.weight.mul_(100)
        blk.step_param.fill_(40.0)
        blk.bias.normal_()
    best = worst_norm_growth(blk)
    assert 1 - 1e-9 < best <= 1 + 1e-12


def test_retracted_overflow_gives_zero_and_nan_input_still_propagates():
    """float32, τ = 1e38: the free step overflows to ±inf; the retracted one returns 0 for those samples (‖0‖ ≤ ‖u‖),
    not NaN. A NaN in u is not hidden: it propagates as in the other modes. A zero input has finite gradients."""
    blk = SymmetricResidual(2, dim=1, flux='charbonnier', stability='retracted')
    with torch.no_grad():
        blk.step_param.fill_(1e38)
        blk.weight.mul_(100)
    u = torch.randn(3, 2, 16) * 10
    with torch.no_grad():
        free = u - blk.step_param * blk.update(u)
        out = blk(u)
    assert not torch.isfinite(free).all()
    assert torch.isfinite(out).all() and (_norms(out) <= _norms(u)).all()
    u[1, 0, 3] = float('nan')
    with torch.no_grad():
        out = blk(u)
    assert torch.isnan(out[1]).any() and torch.isfinite(out[[0, 2]]).all()
    zero = SymmetricResidual(2, dim=1, flux='charbonnier', stability='retracted', bias=False)
    u = torch.zeros(2, 2, 16, requires_grad=True)
    out = zero(u)      # y = 0 = u: nothing to retract, and no 0/0 in the gradient
    out.square().sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.isfinite(u.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in zero.parameters() if p.grad is not None)


def test_retract_waits_for_no_device():
    """Off the CPU the overflow mask is applied by a where, not tested by bool() (a host sync per step on a GPU): on
    the meta device, where bool() of a tensor raises, retract still gives the shape."""
    from pdeblocks.layers.symmetric import retract
    y, u = torch.empty(4, 2, 16, device='meta'), torch.empty(4, 2, 16, device='meta')
    with pytest.raises(RuntimeError):
        bool((y > 0).any())
    assert retract(y, u).shape == (4, 2, 16)


def test_retracted_certificate():
    """certify reports ‖f(u)‖ ≤ ‖u‖ on every pass, Lipschitz 2 + |τ|·L_Φ·B² (B from ops.norm_bound), and nothing to
    verify (no bound on K is involved)."""
    from pdeblocks import certify
    blk = SymmetricResidual(3, dim=1, flux='charbonnier', stability='retracted')
    with torch.no_grad():
        blk.step_param.fill_(-7.5)
    report = certify(blk, verify=True)
    (c,) = report.blocks
    assert (c.mode, c.norm_factor, c.passes, c.verified) == ('retracted', 1.0, 'all', None)
    assert c.step_size == -7.5
    b = float(norm_bound(blk.weight.detach(), 'neumann'))
    assert c.lipschitz == pytest.approx(2.0 + 7.5 * 1.0 * b ** 2, rel=1e-3)
    assert report.composed_norm_factor == 1.0


def test_none_mode_can_blow_up():
    """The free step has no guarantee: a large τ expands the norm (shows the other tests can fail)."""
    blk = SymmetricResidual(2, dim=1, flux='charbonnier', stability='none').double()
    with torch.no_grad():
        blk.step_param.fill_(50.0)
    u = torch.randn(4, 2, 16, dtype=torch.float64)
    with torch.no_grad():
        assert (_norms(blk(u)) > _norms(u)).any()


# ------------------------------------------------------------------------------------------ the bound's cache

def test_step_size_formula_and_bound():
    blk = SymmetricResidual(4, dim=2, boundary='zeros', flux='perona_malik').eval()
    with torch.no_grad():
        blk.step_param.fill_(0.3)
    b = float(norm_bound(blk.weight, 'zeros'))
    assert abs(float(blk.norm_bound()) - b) <= 1e-6 * b
    expected = torch.sigmoid(torch.tensor(0.3)).item() * 2 / (1.0 * b * b)
    assert abs(float(blk.step_size()) - expected) <= 1e-6 * expected


@pytest.mark.parametrize('passes', CERTIFIED)
@pytest.mark.parametrize('edit', ['optimizer', 'data', 'load_state_dict', 'to_double', 'copy_'])
def test_cached_bound_never_goes_stale(edit, passes):
    torch.manual_seed(0)
    blk = SymmetricResidual(4, dim=1, certification=passes)
    blk.eval()
    blk(torch.randn(2, 4, 16))  # fills the cache
    before = float(blk.norm_bound())
    if edit == 'optimizer':
        blk.train()
        opt = torch.optim.SGD(blk.parameters(), lr=100.0)
        blk(torch.randn(2, 4, 16)).pow(2).sum().backward()
        opt.step()
    elif edit == 'data':
        blk.weight.data.mul_(7.0)
    elif edit == 'load_state_dict':
        sd = copy.deepcopy(blk.state_dict())
        sd['weight'] = sd['weight'] * 3.0   # the stored bound is now too small for these weights
        with pytest.warns(UserWarning, match='below the full bound'):
            blk.load_state_dict(sd)
    elif edit == 'to_double':
        with torch.no_grad():
            blk.weight.data = blk.weight.data * 2.0
        blk.double()
    else:
        with torch.no_grad():
            blk.weight.copy_(torch.flip(blk.weight, [-1]) * 5.0)
    certified_mode(blk, passes)
    after = float(blk.norm_bound())
    fresh = float(norm_bound(blk.weight, blk.boundary))
    assert abs(after - fresh) <= 1e-5 * fresh
    assert abs(after - before) > 1e-3 * before


def _fine_tuned_block(seed: int = 0) -> SymmetricResidual:
    """A block after small optimizer steps: B is the cached perturbation bound, above a fresh full bound."""
    torch.manual_seed(seed)
    blk = SymmetricResidual(6, dim=1, flux='perona_malik', certification='all')
    opt = torch.optim.SGD(blk.parameters(), lr=3e-5)
    for _ in range(4):
        blk(torch.randn(3, 6, 32)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    assert blk.bound.recomputations == 1   # only the first bound was a full one
    return blk


def test_state_dict_round_trip_reproduces_step_size_after_fine_tuning():
    """B travels in the state_dict: a reload gives bitwise the fine-tuned outputs. Without it the reload
    would compute a fresh (tighter) B, hence a larger τ (the second assertion shows the gap exists)."""
    blk = _fine_tuned_block()
    sd = blk.state_dict()
    assert float(sd[NORM_BOUND_STATE]) == float(blk.norm_bound())
    fresh = float(norm_bound(blk.weight, blk.boundary))
    assert float(blk.norm_bound()) > fresh * (1 + 1e-4)
    other = SymmetricResidual(6, dim=1, flux='perona_malik', certification='all')
    other.load_state_dict(sd)
    x = torch.randn(2, 6, 40)
    with torch.no_grad():
        assert torch.equal(other(x), blk(x))
        assert float(other.step_size()) == float(blk.step_size())
    # a file from before B was stored loads strictly and gets the fresh bound
    legacy = SymmetricResidual(6, dim=1, flux='perona_malik', certification='all')
    legacy.load_state_dict({k: v for k, v in sd.items() if k != NORM_BOUND_STATE}, strict=True)
    assert abs(float(legacy.norm_bound()) - fresh) <= 1e-6 * fresh
    assert float(legacy.step_size()) > float(blk.step_size())


def test_state_dict_stores_zero_when_the_full_bound_is_due():
    """No bound computed yet (or a change beyond ``refresh``): the state_dict stores 0 without computing,
    and the reloaded block computes the full bound, as the saved one would at its next call."""
    torch.manual_seed(0)
    blk = SymmetricResidual(5, dim=1)
    assert float(blk.state_dict()[NORM_BOUND_STATE]) == 0.0 and blk.bound.recomputations == 0
    blk(torch.randn(1, 5, 16))
    with torch.no_grad():
        blk.weight.mul_(2.0)                 # far beyond refresh: a full bound is due
    sd = blk.state_dict()
    assert float(sd[NORM_BOUND_STATE]) == 0.0 and blk.bound.recomputations == 1
    warm = SymmetricResidual(5, dim=1)
    warm(torch.randn(1, 5, 16))              # a warm cache for other weights is dropped on load
    warm.load_state_dict(sd)
    warm.eval()
    blk.eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.equal(warm(x), blk(x))
    assert float(warm.norm_bound()) == float(norm_bound(blk.weight, blk.boundary))


def test_stored_bound_cannot_loosen_the_guarantee():
    """A stored B below the full bound (tampered, or from other weights) is not taken: τ·L·‖K‖² ≤ 2 holds."""
    from pdeblocks.ops import power_iteration_norm
    blk = _fine_tuned_block(1)
    sd = copy.deepcopy(blk.state_dict())
    sd[NORM_BOUND_STATE] = torch.tensor(1e-3)
    sd['step_param'] = torch.tensor(20.0)   # sigmoid(θ) ≈ 1: τ at the limit
    other = SymmetricResidual(6, dim=1, flux='perona_malik')
    with pytest.warns(UserWarning, match='below the full bound'):
        other.load_state_dict(sd)
    true = float(power_iteration_norm(other.weight.detach().double(), 'neumann', [64], iters=3000, tol=1e-14))
    assert float(other.step_size()) * other.step_constant * true ** 2 <= 2.0


@pytest.mark.parametrize('stored, message', [
    (torch.tensor(float('nan')), 'finite'), (torch.tensor(float('inf')), 'finite'), (torch.tensor(-1e-30), '≥ 0'),
    (torch.tensor(-2.0), '≥ 0'), (torch.ones(2), 'one floating-point number'),
    (torch.tensor(3), 'one floating-point number')])
def test_bad_stored_bound_is_an_error(stored, message):
    blk = _fine_tuned_block()
    sd = dict(blk.state_dict(), **{NORM_BOUND_STATE: stored})
    with pytest.raises(ValueError, match=message):
        SymmetricResidual(6, dim=1, flux='perona_malik').load_state_dict(sd)


def test_small_changes_reuse_the_bound_rigorously():
    """Below the refresh threshold the bound is B(W₀) + Σ‖ΔW_j‖_F: still above the true norm."""
    from pdeblocks.ops import power_iteration_norm
    torch.manual_seed(0)
    blk = SymmetricResidual(6, dim=1, boundary='reflect', certification='all').double()
    b0 = float(blk.norm_bound())
    assert blk.bound.recomputations == 1
    for _ in range(20):  # many small steps accumulate against W₀, never against the last step
        with torch.no_grad():
            blk.weight.add_(torch.randn_like(blk.weight) * 2e-5)
        b = float(blk.norm_bound())
        true = float(power_iteration_norm(blk.weight, 'reflect', [12], iters=2000, tol=1e-14))
        assert b >= true
        assert b >= b0
    assert blk.bound.recomputations == 1
    with torch.no_grad():
        blk.weight.mul_(1.5)  # beyond 2%: recomputed
    assert abs(float(blk.norm_bound()) - float(norm_bound(blk.weight, 'reflect'))) < 1e-9
    assert blk.bound.recomputations == 2
    strict = SymmetricResidual(6, dim=1, bound_refresh=0.0, certification='all')
    strict.norm_bound()
    with torch.no_grad():
        strict.weight.add_(1e-7)
    strict.norm_bound()
    assert strict.bound.recomputations == 2


# ------------------------------------------------------------------------------------------ contract

def test_half_the_parameters():
    blk = SymmetricResidual(16, dim=2)
    standard = 2 * 16 * 16 * 9
    assert blk.weight.numel() == standard // 2


def test_shapes_dtypes_and_grad():
    for boundary in BOUNDARIES:
        blk = SymmetricResidual(3, hidden_channels=5, dim=2, boundary=boundary, stability='lipschitz',
                                flux='charbonnier')
        x = torch.randn(2, 3, 9, 11, requires_grad=True)
        y = blk(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        y.sum().backward()
        assert x.grad is not None and blk.weight.grad is not None and blk.step_param.grad is not None
    bf = SymmetricResidual(3, dim=1).to(torch.bfloat16)
    assert bf(torch.randn(2, 3, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_initial_kernel_from_stencil():
    from pdeblocks.ops import difference_stencil
    w = difference_stencil(1)
    blk = SymmetricResidual(1, kernel_size=2, dim=1, weight=w, trainable_weight=False, flux='perona_malik',
                            contrast=0.1)
    assert not blk.weight.requires_grad
    # a step preserves the mean (Neumann: zero flux over the boundary) and smooths
    u = torch.rand(1, 1, 64, dtype=torch.float32)
    out = blk(u)
    assert torch.allclose(out.mean(), u.mean(), atol=1e-6)
    assert torch.diff(out).abs().sum() < torch.diff(u).abs().sum()


@pytest.mark.parametrize('stability', ['euclidean', 'retracted'])
def test_scriptable_and_traceable(stability):
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import NodePathTracer
    blk = SymmetricResidual(4, dim=2, boundary='reflect', flux='learned', stability=stability)
    if stability == 'retracted':     # a step that grows the norm, so the retraction acts
        with torch.no_grad():
            blk.step_param.fill_(-3.0)
    x = torch.randn(2, 4, 8, 8)
    scripted = torch.jit.script(blk)
    assert torch.allclose(scripted(x), blk(x), atol=1e-6)
    tracer = NodePathTracer(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    gm = torch.fx.GraphModule(blk, tracer.trace(blk))
    assert torch.allclose(gm(x), blk(x))


def test_meta_device():
    blk = SymmetricResidual(4, dim=2, device='meta')
    assert blk(torch.randn(2, 4, 8, 8, device='meta')).is_meta


def test_zero_kernel_is_the_identity():
    blk = SymmetricResidual(3, dim=2, boundary='zeros')
    with torch.no_grad():
        blk.weight.zero_()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(blk(x), x)
    assert torch.isfinite(blk.step_size())


def test_nan_input_propagates():
    """Documented: NaN/Inf are not checked per call; they propagate to the output, nothing else breaks."""
    blk = SymmetricResidual(2, dim=1)
    x = torch.randn(1, 2, 16)
    x[0, 0, 5] = float('nan')
    y = blk(x)
    assert torch.isnan(y).any()
    assert torch.isfinite(blk(torch.randn(1, 2, 16))).all()


@pytest.mark.parametrize('kwargs,match', [
    (dict(stability='lipschitz', flux='perona_malik'), 'nonmonotone'),
    (dict(stability='euclidean', bias=True), 'bias-free'),
    (dict(stability='stable'), 'stability must be one of'),
    (dict(boundary='zeros', kernel_size=4), 'odd kernel size'),
    (dict(flux='tanh'), 'valid names'),
    (dict(dim=4), 'dim must be'),
    (dict(weight=torch.randn(3, 3, 3)), 'weight must have shape'),
    (dict(step_init=1.5), 'fraction'),
])
def test_bad_construction(kwargs, match):
    args = dict(channels=2, dim=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SymmetricResidual(**args)


@pytest.mark.parametrize('x,match', [
    (torch.randn(2, 2, 8, 8), 'expected a 3D tensor'),
    (torch.randn(2, 3, 8), 'expected 2 input channels, got 3'),
    (torch.ones(2, 2, 8, dtype=torch.int32), 'floating point'),
    (torch.randn(0, 2, 8), 'non-empty batch'),
    (torch.randn(2, 2, 2), 'too small for kernel size 3'),
])
def test_bad_input(x, match):
    blk = SymmetricResidual(2, dim=1)
    with pytest.raises(ValueError, match=match):
        blk(x)


@pytest.mark.parametrize('boundary', ['zeros', 'circular', 'reflect', 'neumann'])
def test_strided_step_is_stable_and_its_bound_certifies_the_strided_operator(boundary):
    """stride=2: K_s u = every 2nd output of K u (a torch strided convolution), the step keeps u's size, and
    the stride-1 bound B ≥ ‖K_s‖ (power iteration on the strided pair), so ‖f(u)‖ ≤ ‖u‖ for weights up to 1e3
    and τ at the limit, in every certified pass."""
    from pdeblocks.ops.transfer import strided_conv, strided_conv_adjoint
    torch.manual_seed(5)
    for scale in (1.0, 1e3):
        blk = SymmetricResidual(3, hidden_channels=5, dim=2, boundary=boundary, stride=2, step_init=0.999,
                                certification='all').double()
        with torch.no_grad():
            blk.weight.mul_(scale)
        u = torch.randn(6, 3, 11, 10, dtype=torch.float64) * 7
        with torch.no_grad():
            out = blk(u)
        assert out.shape == u.shape
        assert (out.flatten(1).norm(dim=1) <= u.flatten(1).norm(dim=1) * (1 + 1e-12)).all()
        w, v = blk.weight.detach(), torch.randn(1, 3, 11, 10, dtype=torch.float64)
        for _ in range(300):   # power iteration on K_sᵀK_s
            v = strided_conv_adjoint(strided_conv(v, w, boundary, 2), w, [11, 10], boundary, 2)
            v = v / v.norm()
        true = float(strided_conv(v, w, boundary, 2).norm())
        assert float(blk.norm_bound()) >= true
    if boundary == 'zeros':
        x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
        torch.testing.assert_close(strided_conv(x, w, 'zeros', 2), torch.nn.functional.conv2d(x, w, stride=2, padding=1))


def test_stride_is_validated_and_scriptable():
    from pdeblocks.layers import FEDCycle, ImplicitBlock
    with pytest.raises(ValueError, match='stride must be an int ≥ 1, got 0'):
        SymmetricResidual(2, stride=0)
    for cls in (FEDCycle, ImplicitBlock):
        with pytest.raises(ValueError, match='stride=1 only, got 2'):
            cls(2, dim=1, stride=2)
    blk = SymmetricResidual(4, dim=2, boundary='zeros', stride=2).eval()
    x = torch.randn(2, 4, 9, 8)
    scripted = torch.jit.script(blk)
    torch.testing.assert_close(scripted(x), blk(x))
    assert 'stride=2' in repr(blk)
