"""The certificate abstraction: settings, the training contract, strictness, gradients and state."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import pdeblocks
import pdeblocks._native
from pdeblocks.layers import FEDCycle, FSIBlock, ImplicitBlock, SymmetricResidual, certificate
from pdeblocks.layers.certificate import Certification, NormCertificate, resolve_certification
from pdeblocks.ops import norm_bound, power_iteration_norm

SCHEMES = [SymmetricResidual, FEDCycle, FSIBlock, ImplicitBlock]


def _norms(x):
    return x.flatten(1).norm(dim=1)


@pytest.mark.parametrize('cls', SCHEMES)
@pytest.mark.parametrize('passes', ['all', 'eval'])
def test_weights_changed_between_every_pair_of_passes(cls, passes):
    """A large random step on the weights between every two forward passes: each certified pass keeps
    ‖f(u)‖ ≤ ‖u‖ (strict: training passes too; the contract: eval passes), and its B is ≥ ‖K‖."""
    torch.manual_seed(3)
    blk = cls(3, dim=1, kernel_size=3, certification=passes).double()
    blk.train() if passes == 'all' else blk.eval()
    u = torch.randn(8, 3, 20, dtype=torch.float64) * 5
    for i in range(25):
        with torch.no_grad():
            blk.weight.add_(torch.randn_like(blk.weight) * 10 ** (i % 5 - 2))
            if i % 3 == 0:
                blk.weight.data.mul_(3.0)           # invisible to the version counter
        with torch.no_grad():
            out = blk(u)
            b = float(blk.bound.rigorous(blk.weight))
        assert (_norms(out) <= _norms(u) * (1 + 1e-12)).all()
        true = float(power_iteration_norm(blk.weight, 'neumann', [20], iters=500, tol=1e-12))
        assert b >= true


@pytest.mark.parametrize('passes', ['all', 'eval'])
def test_strided_entry_step_with_weights_changed_between_every_pair_of_passes(passes):
    """pde_resnet's stage entry (K_s: [C_out, C_in, 3, 3] with stride 2, zero padding) under the same attack: each
    certified pass keeps ‖f(u)‖ ≤ ‖u‖, and its B is ≥ ‖K‖ ≥ ‖K_s‖ (power iteration, stride 1 and strided)."""
    from pdeblocks.ops.transfer import strided_conv, strided_conv_adjoint
    torch.manual_seed(5)
    blk = SymmetricResidual(3, hidden_channels=5, dim=2, boundary='zeros', stride=2, step_init=0.999,
                            certification=passes).double()
    blk.train() if passes == 'all' else blk.eval()
    u = torch.randn(6, 3, 11, 10, dtype=torch.float64) * 5
    for i in range(20):
        with torch.no_grad():
            blk.weight.add_(torch.randn_like(blk.weight) * 10 ** (i % 5 - 2))
            if i % 3 == 0:
                blk.weight.data.mul_(3.0)           # invisible to the version counter
            out = blk(u)
            b = float(blk.bound.rigorous(blk.weight))
            w = blk.weight.detach()
            v = torch.randn(1, 3, 11, 10, dtype=torch.float64)
            for _ in range(300):
                v = strided_conv_adjoint(strided_conv(v, w, 'zeros', 2), w, [11, 10], 'zeros', 2)
                v = v / v.norm()
            strided = float(strided_conv(v, w, 'zeros', 2).norm())
        assert out.shape == u.shape and (_norms(out) <= _norms(u) * (1 + 1e-12)).all()
        full = float(power_iteration_norm(blk.weight, 'zeros', [11, 10], iters=500, tol=1e-12))
        assert b >= full and b >= strided


def test_contract_training_passes_are_cheap_and_eval_is_rigorous():
    """Training passes under the contract compute no full bound (one at the first pass; the estimate is
    recalibrated by power iteration every 50 weight updates); the first eval pass after training
    computes the full bound at the trained weights."""
    torch.manual_seed(0)
    blk = SymmetricResidual(8, dim=2, boundary='zeros', certification=dict(calibrate_every=50, gradient='scale'))
    opt = torch.optim.SGD(blk.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(4, 8, 12, 12)
    for _ in range(120):
        loss = blk(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert blk.bound.recomputations == 1
    assert blk.bound.calibrations == 3            # at the first pass, after 50 and after 100 updates
    blk.eval()
    with torch.no_grad():
        blk(x)
        blk(x)
    assert blk.bound.recomputations == 2
    assert float(blk.norm_bound()) == pytest.approx(float(norm_bound(blk.weight, 'zeros')), rel=1e-6)
    assert pdeblocks.certify(blk, verify=True).verified is True


def _train_then_steps(blk, loss_fn, steps: int, lr: float):
    """τ of the last training pass and of an eval pass after ``steps`` SGD steps (momentum 0.9) on ``loss_fn(blk)``."""
    opt = torch.optim.SGD(blk.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        loss = loss_fn(blk)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        tau_train = float(blk.step_size())
        blk.eval()
        return tau_train, float(blk.step_size())


@pytest.mark.parametrize('seed', [1, 2, 3, 4])
def test_contract_eval_step_within_two_percent_of_the_last_training_step(seed):
    """Eval computes what training optimised: τ_eval / τ_train − 1 ≤ 2% after a real training run (seed 3 gave
    3.2% when the σ_max tracking made one power step per update; see TRACKING_REFINE)."""
    torch.manual_seed(seed)
    blk = SymmetricResidual(16, dim=2, boundary='zeros', flux='perona_malik')
    x, y = torch.randn(8, 16, 12, 12), torch.randn(8, 16, 12, 12)
    tau_train, tau_eval = _train_then_steps(blk, lambda b: (b(x) - y).pow(2).mean(), 150, 0.01)
    assert abs(tau_eval / tau_train - 1.0) <= 0.02
    assert tau_eval <= tau_train * 1.001     # the estimate never undercuts the rigorous B by more than rounding


def test_contract_wide_block_follows_a_growing_frequency():
    """A wide block (scale gradient, recalibrated every 25 updates) trained to grow K at one frequency (here the
    DC of its input): the eval step stays within 2% of the last training step's. With recalibrations that swept
    the whole grid only every 8th time, the frequency grew unseen and τ_train was 10–14× τ_eval."""
    torch.manual_seed(0)
    blk = SymmetricResidual(128, dim=2, boundary='zeros', flux='charbonnier')
    assert not blk.bound.tracks_maximiser(blk.weight)
    x = torch.randn(4, 128, 8, 8) + 2.0
    # the loss rewards a large update
    tau_train, tau_eval = _train_then_steps(blk, lambda b: -(b(x) - x).abs().mean(), 60, 0.05)
    assert abs(tau_train / tau_eval - 1.0) <= 0.02


@pytest.mark.parametrize('passes', ['all', 'eval'])
def test_bound_carries_the_scale_gradient(passes):
    """With gradient='scale', ∂τ/∂W along W is the derivative of 2s/(L·B²) (B is homogeneous: checked
    against finite differences of the full bound) and zero across W; with gradient=False, none."""
    torch.manual_seed(2)
    blk = SymmetricResidual(4, dim=1, boundary='circular',
                            certification=dict(passes=passes, gradient='scale')).double()
    w0 = blk.weight.detach().clone()
    blk.step_size().backward()
    along = float((blk.weight.grad * w0).sum())
    eps = 1e-6
    taus = [float(torch.sigmoid(blk.step_param)) * 2.0 / float(norm_bound(w0 * (1 + sign * eps), 'circular')) ** 2
            for sign in (1, -1)]
    assert along == pytest.approx((taus[0] - taus[1]) / (2 * eps), rel=1e-4)
    across = torch.randn_like(w0)
    across -= (across * w0).sum() / (w0 * w0).sum() * w0
    assert abs(float((blk.weight.grad * across).sum())) <= 1e-9 * float(blk.weight.grad.norm() * across.norm())
    free = SymmetricResidual(4, dim=1, certification=dict(passes=passes, gradient=False)).double()
    assert torch.autograd.grad(free.step_size(), free.weight, allow_unused=True)[0] is None


def _grid_sigma_max(weight: torch.Tensor, grid: int) -> torch.Tensor:
    """max over the N-grid of σ_max(K̂(ω)) by SVD (1D kernels), the reference for the σ_max gradient."""
    symbol = torch.fft.rfft(weight, n=grid, dim=-1).permute(2, 0, 1)
    return torch.linalg.svdvals(symbol)[:, 0].max()


@pytest.mark.parametrize('passes', ['all', 'eval'])
def test_bound_carries_the_sigma_max_gradient(passes):
    """With gradient='sigma_max', τ keeps its value and ∂log τ/∂W = −2·∂log σ_max/∂W, σ_max the largest
    singular value of the symbol over the grid (finite differences of an SVD), in every direction."""
    torch.manual_seed(4)
    blk = SymmetricResidual(4, dim=1, boundary='circular',
                            certification=dict(passes=passes, gradient='sigma_max')).double()
    grid = blk.bound.grid
    with torch.no_grad():
        blk.step_size()
        value = float(blk.step_size())
    blk.bound.calibrate(blk.weight, 300)   # converged ω*, v (a training pass re-tracks them at each update)
    tau = blk.step_size()
    # strict: the rigorous value exactly; the contract's estimate κ·σ moves with the converged v
    assert float(tau) == pytest.approx(value, rel=1e-12 if passes == 'all' else 1e-6)
    tau.backward()
    w0, eps = blk.weight.detach().clone(), 1e-6
    for _ in range(3):
        d = torch.randn_like(w0)
        fd = (torch.log(_grid_sigma_max(w0 + eps * d, grid)) - torch.log(_grid_sigma_max(w0 - eps * d, grid))) / (2 * eps)
        assert float((blk.weight.grad * d).sum()) / float(tau) == pytest.approx(-2.0 * float(fd), rel=1e-5)


def test_auto_gradient_tracks_narrow_blocks_only():
    """'auto' takes the σ_max gradient where tracking is cheap (H·C·F ≤ TRACKING_LIMIT), else the scale one."""
    assert SymmetricResidual(32, dim=1).bound.tracks_maximiser(torch.empty(32, 32, 3))
    assert SymmetricResidual(64, dim=2).bound.tracks_maximiser(torch.empty(64, 64, 3, 3))
    assert not SymmetricResidual(128, dim=2).bound.tracks_maximiser(torch.empty(128, 128, 3, 3))
    wide = SymmetricResidual(128, dim=2, certification=dict(gradient='sigma_max'))
    assert wide.bound.tracks_maximiser(wide.weight)


def test_sigma_max_contract_recalibrates_every_update_and_is_not_exploited():
    """Under the contract with the σ_max gradient ω* and v are re-tracked at every weight update, so SGD at
    lr 0.1 on a loss that rewards big updates cannot grow K where the estimate does not look: the rigorous
    B of eval stays within 5% of the training passes' B, and no full bound is computed in training."""
    torch.manual_seed(1)
    blk = SymmetricResidual(16, dim=2, boundary='zeros', certification=dict(gradient='sigma_max'))
    opt = torch.optim.SGD(blk.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 16, 12, 12), torch.randn(8, 16, 12, 12)
    for i in range(1, 151):
        loss = (blk(x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i % 50 == 0:
            with torch.no_grad():
                b_train = float(blk.norm_bound())
                blk.eval()
                b_eval = float(blk.norm_bound())
                blk.train()
            assert b_eval / b_train <= 1.05
    assert blk.bound.calibrations >= 150


def test_settings_resolver_and_legacy_keywords():
    s = resolve_certification('all', bound_refresh=0.25, interp_slack=2.0)
    assert (s.passes, s.refresh, s.interp_slack) == ('all', 0.25, 2.0)
    assert resolve_certification(dict(calibrate_every=7)).calibrate_every == 7
    assert resolve_certification(Certification(gradient=False)).gradient == 'none'
    assert resolve_certification(dict(gradient=True)).gradient == 'auto'
    blk = FEDCycle(4, dim=1, bound_refresh=0.25, certification='all')   # subclasses forward every keyword
    assert blk.bound.settings.refresh == 0.25 and blk.bound.strict


@pytest.mark.parametrize('certification,kwargs,match', [
    ('strict', {}, "one of"), (dict(passes='train'), {}, 'passes must be one of'),
    (dict(refresh=-0.1), {}, 'refresh must be a finite number ≥ 0'), (dict(gram_steps=0), {}, 'gram_steps'),
    (dict(calibrate_every=0), {}, 'calibrate_every'), (dict(interp_slack=1.0), {}, 'interp_slack'),
    (dict(speed=1), {}, 'unknown certification settings'), (None, dict(bound_refresh=-1.0), 'refresh'),
    (3, {}, 'got int'), (dict(gradient='danskin'), {}, "gradient must be one of .*'sigma_max'.*got 'danskin'"),
])
def test_bad_settings(certification, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SymmetricResidual(2, dim=1, certification=certification, **kwargs)


def test_scheme_blocks_reject_conflicting_arguments():
    with pytest.raises(ValueError, match="stability='euclidean'"):
        FEDCycle(2, dim=1, stability='lipschitz')
    with pytest.raises(ValueError, match='bias-free'):
        FSIBlock(2, dim=1, bias=True)
    with pytest.raises(TypeError, match='relative_step'):
        ImplicitBlock(2, dim=1, step_init=0.3)
    with pytest.raises(TypeError, match='speed'):
        ImplicitBlock(2, dim=1, speed=3)


def test_step_fraction_round_trip_per_parameterisation():
    """set_step_fraction inverts each block's own parameterisation (sigmoid, softplus)."""
    sym, imp = SymmetricResidual(2, dim=1), ImplicitBlock(2, dim=1)
    sym.set_step_fraction(0.3)
    imp.set_step_fraction(50.0)
    assert float(sym.step_fraction()) == pytest.approx(0.3, rel=1e-6)
    assert float(imp.step_fraction()) == pytest.approx(50.0, rel=1e-6)


def test_anchor_round_trip_resumes_the_estimate_bitwise():
    torch.manual_seed(4)
    blk = SymmetricResidual(5, dim=1)
    opt = torch.optim.SGD(blk.parameters(), lr=0.05)
    x = torch.randn(3, 5, 24)
    for _ in range(3):
        blk(x).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    other = copy.deepcopy(blk)
    fresh = SymmetricResidual(5, dim=1)
    fresh.load_state_dict(blk.state_dict())
    assert fresh.bound.restore_anchor(blk.bound.anchor())
    with torch.no_grad():
        assert torch.equal(fresh.norm_bound(), other.norm_bound())


def test_norm_certificate_alias_and_module_state():
    from pdeblocks.layers import OperatorNormBound
    assert OperatorNormBound is NormCertificate
    cert = NormCertificate([3, 3], 'zeros')
    assert cert.settings == Certification()
    assert 'passes=' in repr(cert)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_contract_passes_do_not_synchronise():
    """On a GPU the contract's training passes and the eval passes with unchanged weights never wait for
    the device (torch's sync debug mode raises on every synchronising call); calibrations may."""
    torch.manual_seed(0)
    blk = SymmetricResidual(16, dim=2, boundary='zeros', certification=dict(calibrate_every=1000)).cuda()
    opt = torch.optim.SGD(blk.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(4, 16, 32, 32, device='cuda')
    blk(x).sum().backward()                     # first pass: calibration
    torch.cuda.set_sync_debug_mode('error')
    try:
        for _ in range(5):
            opt.zero_grad()
            with torch.autocast('cuda', dtype=torch.bfloat16):
                blk(x).float().pow(2).mean().backward()
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode('default')
    blk.eval()
    with torch.no_grad():
        ref = blk(x)                             # first eval pass: the full bound at the trained weights
        torch.cuda.set_sync_debug_mode('error')
        try:
            for _ in range(5):
                out = blk(x)
        finally:
            torch.cuda.set_sync_debug_mode('default')
    assert torch.equal(out, ref)
    assert (out.flatten(1).norm(dim=1) <= x.flatten(1).norm(dim=1) * (1 + 1e-5)).all()
    assert pdeblocks.certify(blk, verify=True).verified


def test_bf16_autocast_keeps_the_bound_in_float32():
    torch.manual_seed(0)
    blk = SymmetricResidual(4, dim=2, boundary='zeros').eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        blk(x)
        b = blk.norm_bound()
    assert b.dtype == torch.float32
    assert float(b) == pytest.approx(float(norm_bound(blk.weight, 'zeros')), rel=1e-6)


def test_verify_reports_nothing_for_free_steps():
    free = SymmetricResidual(3, dim=1, stability='none')
    report = pdeblocks.certify(torch.nn.Sequential(free, SymmetricResidual(3, dim=1)).eval(), verify=True)
    assert [b.verified for b in report.blocks] == [None, True] and report.verified is True
    assert pdeblocks.certify(free, verify=True).verified is None


def test_partial_recalibration_touches_only_the_candidate_frequencies():
    """Between full recalibrations only the CANDIDATES frequencies of largest σ are iterated: the other vectors
    and σ stay as they were, ω* is the best candidate, and a checkpoint anchor carries σ and the cadence."""
    from pdeblocks.layers.certificate import CANDIDATES
    torch.manual_seed(6)
    cert = NormCertificate([3, 3], 'zeros')
    w = torch.randn(12, 12, 3, 3)
    cert.calibrate(w, 10)
    vectors, sigmas = cert._vectors.clone(), cert._sigmas.clone()
    candidates = sigmas.topk(CANDIDATES).indices
    cert.calibrate(w + 0.01 * torch.randn_like(w), 2, full=False)
    others = torch.ones(len(sigmas), dtype=torch.bool)
    others[candidates] = False
    assert torch.equal(cert._vectors[others], vectors[others]) and torch.equal(cert._sigmas[others], sigmas[others])
    assert not torch.equal(cert._sigmas[candidates], sigmas[candidates])
    assert int(cert._index) == int(candidates[cert._sigmas[candidates].argmax()])
    blk = SymmetricResidual(12, dim=2, boundary='zeros', certification=dict(gradient='scale'))
    blk(torch.randn(1, 12, 6, 6))
    anchor = blk.bound.anchor()
    other = SymmetricResidual(12, dim=2, boundary='zeros', certification=dict(gradient='scale'))
    other.load_state_dict(blk.state_dict())
    assert other.bound.restore_anchor(anchor)
    assert torch.equal(other.bound._sigmas, blk.bound._sigmas) and other.bound.calibrations == blk.bound.calibrations


def test_calibrate_rejects_no_steps():
    """calibrate with 0 power steps would record σ = 0 at every frequency it visits: a ValueError naming both."""
    cert = NormCertificate([3, 3], 'zeros')
    with pytest.raises(ValueError, match=r'steps ≥ 1 and refine ≥ 0, got steps=0, refine=0'):
        cert.calibrate(torch.randn(4, 4, 3, 3), 0)
    with pytest.raises(ValueError, match=r'got steps=1, refine=-1'):
        cert.calibrate(torch.randn(4, 4, 3, 3), 1, refine=-1)


@pytest.mark.skipif(not certificate._native_bfloat16(torch.device('cpu')), reason='no native bfloat16 products here')
def test_bfloat16_power_steps_find_the_float32_maximiser(monkeypatch):
    """Wide weights (512 channels) take their power steps in bfloat16: the same ω* as in float32, and σ(W) at the
    tracked v equal to float32's to 1e-4, both below σ_max of the symbol there (numpy's SVD) and within 2% of it."""
    torch.manual_seed(7)
    w = torch.randn(512, 512, 3, 3) * (2 / (9 * 512)) ** 0.5 + 0.01 * torch.randn(512, 512, 1, 1)
    assert w[:, :, 0].numel() * 9 >= certificate.LOW_PRECISION_MIN
    found = {}
    for name, limit in (('float32', 1 << 62), ('bfloat16', certificate.LOW_PRECISION_MIN)):
        monkeypatch.setattr(certificate, 'LOW_PRECISION_MIN', limit)
        cert = NormCertificate([3, 3], 'zeros')
        cert.calibrate(w, 2, refine=20)
        found[name] = (int(cert._index), float(cert.sigma(w)))
    assert found['bfloat16'][0] == found['float32'][0]
    assert found['bfloat16'][1] != found['float32'][1]   # the bfloat16 steps did run (their v rounds differently)
    symbol = np.einsum('hct,t->hc', w.reshape(512, 512, 9).double().numpy(), cert._phase.cdouble().numpy())
    exact = np.linalg.svd(symbol, compute_uv=False)[0]
    assert abs(found['bfloat16'][1] - found['float32'][1]) <= 1e-4 * exact
    for _, sigma in found.values():   # a power iterate: a lower bound, within 2% after these steps
        assert 0.98 * exact <= sigma <= exact * (1 + 1e-5)


@pytest.mark.skipif(not pdeblocks._native.native_available(), reason='no C compiler')
def test_fused_sigma_and_square_match_two_passes(monkeypatch):
    """Wide weights take σ(W) and ‖W‖² from one C pass over W: the values against numpy in float64 (rows of odd length,
    so the kernel's scalar tail runs), and the training pass's B̃ and gradient against the product-and-dot path."""
    torch.manual_seed(8)
    w = torch.randn(520, 225, 3, 3)
    assert w.numel() >= certificate.FUSED_MIN
    x = torch.randn(2, 225 * 9)
    sigma, square = certificate._apply_and_square(w, x)
    w64, x64 = w.reshape(520, -1).double().numpy(), x.double().numpy()
    assert float(sigma) == pytest.approx(np.linalg.norm(x64 @ w64.T), rel=1e-5)
    assert float(square) == pytest.approx((w64 ** 2).sum(), rel=1e-5)
    assert certificate._apply_and_square(w.requires_grad_(), x) is None          # autograd wanted: torch's ops
    weight = nn.Parameter(torch.randn(512, 512, 3, 3) * (2 / (9 * 512)) ** 0.5)
    cert = NormCertificate([3, 3], 'zeros').train()
    cert(weight)
    passes, kernel_calls = {}, []
    fused = certificate._apply_and_square
    monkeypatch.setattr(certificate, '_apply_and_square', lambda *args: kernel_calls.append(fused(*args)) or kernel_calls[-1])
    for name in ('fused', 'two passes'):
        if name == 'two passes':
            assert kernel_calls and kernel_calls[-1] is not None   # the training pass took the kernel's values
            monkeypatch.setattr(certificate, '_apply_and_square', lambda *args: None)
        weight.grad = None
        b = cert(weight)
        b.backward()
        passes[name] = (b.detach(), weight.grad.clone())
    assert torch.allclose(passes['fused'][0], passes['two passes'][0], rtol=1e-6)
    scale = float(passes["two passes"][1].abs().max())
    assert torch.allclose(passes["fused"][1], passes["two passes"][1], rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.skipif(not pdeblocks._native.native_available(), reason='no C compiler')
@pytest.mark.parametrize('shape,grid', [((64, 64, 3, 3), None), ((6, 9, 5), 24), ((5, 7, 3, 3, 3), 8)])
def test_power_step_kernel_matches_the_torch_steps(monkeypatch, shape, grid):
    """Narrow weights take calibrate's power steps in the C kernel: the same vectors, σ at every grid frequency and ω*
    as torch's steps (float32 rounding), through a full calibration, a partial one and the refinement; the converged σ
    at ω* is below numpy's σ_max of the symbol there and within 1e-4 of it; an anchor taken before is not changed."""
    torch.manual_seed(9)
    w = torch.randn(shape)
    w[0] *= 3   # a clear maximiser, so that both paths converge to the same ω*
    step = 0.01 * torch.randn_like(w)
    found, calls = {}, []
    power_kernel = certificate._native_power_steps
    monkeypatch.setattr(certificate, '_native_power_steps', lambda *args: calls.append(power_kernel(*args)) or calls[-1])
    for name, limit in (('torch', 0), ('kernel', 1 << 30)):
        monkeypatch.setattr(certificate, 'NATIVE_POWER_MAX', limit)
        cert = NormCertificate(list(shape[2:]), 'zeros', certification=None if grid is None else dict(grid=grid))
        cert.calibrate(w, 60)
        before = cert._vectors.clone()
        held = cert._vectors
        cert.calibrate(w + step, 2, full=False)
        cert.calibrate(w + 2 * step, 1, refine=3)
        assert torch.equal(held, before)   # replaced, not changed in place
        found[name] = (cert._vectors, cert._sigmas, int(cert._index), cert)
        assert (calls[-1] is None) == (name == 'torch')
    (v0, s0, i0, _), (v1, s1, i1, cert) = found['torch'], found['kernel']
    assert i0 == i1
    assert torch.allclose(s1, s0, rtol=1e-5, atol=1e-6 * float(s0.max()))
    assert torch.allclose(v1, v0, atol=1e-4)
    cert.calibrate(w, 200, refine=100)
    symbol = np.einsum('hct,t->hc', w.reshape(shape[0], shape[1], -1).double().numpy(), cert._phase.cdouble().numpy())
    exact = np.linalg.svd(symbol, compute_uv=False)[0]
    assert exact * (1 - 1e-4) <= float(cert._sigmas[cert._index]) <= exact * (1 + 1e-5)


@pytest.mark.skipif(not pdeblocks._native.native_available(), reason='no C compiler')
def test_power_step_kernel_under_a_float64_default_dtype():
    """The kernel writes float32 σ: a float64 default dtype must not change the buffers it is given."""
    torch.manual_seed(10)
    w = torch.randn(16, 16, 3, 3)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        cert = NormCertificate([3, 3], 'zeros')
        cert.calibrate(w, 100, refine=50)
    finally:
        torch.set_default_dtype(old)
    symbol = np.einsum('hct,t->hc', w.reshape(16, 16, 9).double().numpy(), cert._phase.cdouble().numpy())
    exact = np.linalg.svd(symbol, compute_uv=False)[0]
    assert cert._sigmas.dtype == torch.float32
    assert exact * (1 - 1e-4) <= float(cert._sigmas[cert._index]) <= exact * (1 + 1e-5)
