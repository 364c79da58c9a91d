"""The variational (IRLS) tail of the blind denoiser: certified bounds, the energy it minimises, segmentation,
gradients, the selector, save/load and bad arguments."""
import math

import numpy as np
import pytest
import torch

from pdeblocks.hub import load_folder
from pdeblocks.layers.tails import ImplicitTail1D, IRLSTail1D, irls_weights
from pdeblocks.models.blind import BlindDenoiser1D
from pdeblocks.ops.stencils import first_difference


def _set_gate(tail: IRLSTail1D, tau: float, contrast: float, beta: float) -> None:
    """Fix the gate's outputs for every signal: last layer zero, biases giving (τ, λ, β)."""
    with torch.no_grad():
        tail.gate[2].weight.zero_()
        tail.gate[2].bias[0] = (math.log(tau) - tail.log_tau0) / tail.gain
        tail.gate[2].bias[1] = (math.log(contrast) - tail.log_contrast0) / (tail.gain / 4)
        tail.gate[2].bias[2] = (math.log(beta / (1 - beta)) + math.log(49.0)) / (tail.gain / 4)


def _energy(w: np.ndarray, r: np.ndarray, tau: float, lam: float, q: float) -> float:
    """½‖w − r‖² + (τλ²/2) Σ ρ_q(Dw/λ), ρ_q(s) = ((1 + s²)^(1−q) − 1)/(1 − q) (log(1 + s²) at q = 1)."""
    s2 = (np.diff(w) / lam) ** 2
    rho = np.log1p(s2) if abs(q - 1) < 1e-12 else ((1 + s2) ** (1 - q) - 1) / (1 - q)
    return 0.5 * float(((w - r) ** 2).sum()) + 0.5 * tau * lam ** 2 * float(rho.sum())


def test_irls_steps_never_increase_the_energy_they_minimise():
    """IRLS is a majorise–minimise iteration for ½‖w − r‖² + (τλ²/2)Σρ_q(Dw/λ): the energy after k + 1 steps is at
    most the energy after k (ρ_q concave in s² for q ∈ (0, 2)), for the log penalty (q = 1) and q = 0.75, 1.5."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 1, 300, generator=g, dtype=torch.float64).cumsum(-1) * 0.3
    u = v + torch.randn(3, 1, 300, generator=g, dtype=torch.float64)
    beta, tau, lam = 0.7, 40.0, 0.5
    for q in (1.0, 0.75, 1.5):
        energies = []
        for steps in range(1, 7):
            tail = IRLSTail1D(steps=steps, exponent_init=q).double()
            _set_gate(tail, tau, lam, beta)
            with torch.no_grad():
                w = tail(v, u)
            r = (v + beta * (u - v)).numpy()
            energies.append([_energy(w[b, 0].numpy(), r[b, 0], tau, lam, q) for b in range(3)])
        e = np.array(energies)
        assert (np.diff(e, axis=0) <= 1e-9 * np.abs(e[1:])).all(), (q, e)
        assert e[-1].sum() < e[0].sum() * 0.999, q       # and it does move


def test_irls_tail_averages_the_data_between_the_jumps():
    """With λ ≪ 1 and τλ² ≈ 1, starting from an estimate that knows the jumps roughly, the tail returns the
    segment means of the noisy data (the piecewise-constant estimate) away from the jumps, and its error is a few
    per cent of the noise's."""
    g = torch.Generator().manual_seed(1)
    levels = torch.tensor([0.0, 6.0, -3.0, 4.0, 10.0], dtype=torch.float64)
    clean = levels.repeat_interleave(80)[None, None]                  # jumps of 3 … 9 noise units
    u = clean + torch.randn(clean.shape, generator=g, dtype=torch.float64)
    kernel = torch.ones(1, 1, 5, dtype=torch.float64) / 5             # a smeared estimate: jumps spread over 5
    v = torch.nn.functional.conv1d(torch.nn.functional.pad(clean, (2, 2), mode='replicate'), kernel)
    tail = IRLSTail1D(steps=4, exponent_init=1.0).double()
    _set_gate(tail, tau=1.0 / 0.01 ** 2, contrast=0.01, beta=0.999)
    with torch.no_grad():
        w = tail(v, u)
    means = u.reshape(5, 80).mean(1).repeat_interleave(80)
    inner = (torch.arange(400) % 80 >= 2) & (torch.arange(400) % 80 <= 77)   # the sample next to a jump may go
    assert float((w.flatten() - means)[inner].abs().max()) < 0.05             # to either side
    assert float((w - clean).pow(2).mean()) < 0.05 * float((u - clean).pow(2).mean())


def test_irls_tail_is_certified_for_any_weights():
    """certify() lists the IRLS tail with norm factor 1 in every pass; with huge random gate, selector and exponent
    weights and adversarial inputs the output stays within max(‖v‖, ‖u‖) and between min(v, u) and max(v, u)."""
    from pdeblocks import certify
    torch.manual_seed(0)
    m = BlindDenoiser1D(scheme='explicit', channels=4, hidden_channels=4, blocks=2, tail_steps=1, irls_steps=2,
                        irls_select=0.3).eval()
    last = certify(m).blocks[-1]
    assert (last.path, last.block, last.mode, last.norm_factor, last.passes) == \
        ('irls', 'IRLSTail1D', 'implicit-tridiagonal', 1.0, 'all')
    assert last.guarantee.startswith('‖f‖ ≤ ‖r‖ ≤ max(‖v‖, ‖u⁰‖)')
    tail = m.irls
    g = torch.Generator().manual_seed(3)
    for trial in range(4):
        with torch.no_grad():
            for p in tail.parameters():
                p.copy_(1e3 * torch.randn(p.shape, generator=g))
            tail.gate[2].bias[0] = 1e3 if trial % 2 else -1e3          # τ at the clamp / τ → 0
            v = 40.0 * torch.randn(3, 1, 257, generator=g).cumsum(-1)
            u = v + 300.0 * torch.randn(3, 1, 257, generator=g)
            out = tail(v, u)
        assert torch.isfinite(out).all()
        bound = torch.maximum(v.flatten(1).norm(dim=1), u.flatten(1).norm(dim=1))
        assert (out.flatten(1).norm(dim=1) <= bound * (1 + 1e-5)).all(), trial
        hi = torch.maximum(v.amax(-1, keepdim=True), u.amax(-1, keepdim=True))
        lo = torch.minimum(v.amin(-1, keepdim=True), u.amin(-1, keepdim=True))
        scale = float(u.abs().max())
        assert float((out - hi).max()) <= 1e-5 * scale and float((lo - out).max()) <= 1e-5 * scale


def test_irls_tail_gradients_selector_and_save_load(tmp_path):
    """Gradients reach the gate, the selector and the exponent; γ starts at ``irls_select``; the model stays affine-
    equivariant and round-trips through save/load; bad arguments are ValueErrors."""
    torch.manual_seed(0)
    m = BlindDenoiser1D(scheme='explicit', channels=4, hidden_channels=4, blocks=2, irls_steps=2, irls_select=0.3,
                        irls_exponent=0.75, irls_mix=0.6)
    g = torch.Generator().manual_seed(4)
    f = torch.randn(2, 1, 200, generator=g).cumsum(-1) + torch.randn(2, 1, 200, generator=g)
    m.train()
    m(f).pow(2).sum().backward()
    params = dict(m.named_parameters())
    for name in ('irls.gate.2.weight', 'irls.gate.2.bias', 'irls.selector.2.bias', 'irls.exponent_logit'):
        grad = params[name].grad
        assert grad is not None and torch.isfinite(grad).all() and float(grad.abs().max()) > 0, name
    m.eval()
    assert abs(float(m.irls.exponent().detach()) - 0.75) < 1e-6
    assert abs(float(torch.sigmoid(m.irls.selector[2].bias.detach())) - 0.3) < 1e-6
    assert abs(float(m.irls.gate_values(f, f)[2].flatten()[0]) - 0.6) < 1e-6
    with torch.no_grad():
        base = m(f)
        for a, b in ((1e-3, 0.0), (1e3, 5000.0)):
            assert float(((m(a * f + b) - b) / a - base).abs().max()) < 5e-5 * (abs(b) / a + 1.0) * float(f.abs().max())
    m.save_pretrained(tmp_path / 'irls')
    loaded = load_folder(tmp_path / 'irls')
    assert loaded.config()['irls_steps'] == 2 and loaded.config()['irls_select'] == 0.3
    with torch.no_grad():
        assert torch.allclose(loaded(f), base, atol=1e-6)
    with pytest.raises(ValueError, match='irls_steps ≥ 0'):
        BlindDenoiser1D(scheme='explicit', irls_steps=-1)
    with pytest.raises(ValueError, match='0 < mix_init < 1'):
        IRLSTail1D(mix_init=1.0)
    with pytest.raises(ValueError, match='0 < exponent_init < 2'):
        IRLSTail1D(exponent_init=2.0)


def test_edge_weights_of_the_c_kernels_match_the_torch_expressions():
    """Without autograd (CPU, float64) both tails compute their edge weights in one C pass: the IRLS weights
    (1 + (Dw/λ)²)^(−q) within 1e-14 relative of torch's pow for |s| from 0 to 1e9 and q ∈ (0, 2), 0 at s = ±∞ and NaN
    kept; the semi-implicit tail's learned diffusivity g(|Dw|/λ) bit for bit, beyond the last knot too. With
    autograd both take the torch expressions (gradients flow). Without a C compiler both sides are torch's."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(19, 1, 700, generator=g, dtype=torch.float64).cumsum(-1) * 10.0 ** torch.linspace(
        -6, 3, 19, dtype=torch.float64).reshape(19, 1, 1)
    lam = 10.0 ** torch.linspace(-4, 1, 19, dtype=torch.float64).reshape(19, 1, 1)
    for q in (0.01, 0.75, 1.0, 1.93):
        qt = torch.tensor(q, dtype=torch.float64)
        s = first_difference(w) / lam
        ref = (1.0 + s * s).pow(-qt)
        with torch.no_grad():
            out = irls_weights(w, lam, qt)
        assert out.shape == ref.shape and torch.allclose(out, ref, rtol=1e-14, atol=0), q
    w_odd = torch.tensor([[0.0, 1e200, 1e200, float('nan'), 0.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        odd = irls_weights(w_odd, torch.tensor([[1e-200]], dtype=torch.float64), torch.tensor(0.75,
                                                                                        dtype=torch.float64))
    assert odd[0, 0] == 0.0 and odd[0, 1] == 1.0 and bool(odd[0, 2:4].isnan().all()) and odd[0, 4] == 1.0
    tail = ImplicitTail1D(steps=2).double()
    with torch.no_grad():
        tail.diffusivity.knot_logits.copy_(torch.randn(tail.diffusivity.knot_logits.shape, generator=g))
        fast = tail.edge_diffusivity(w, lam)
    ref = tail.diffusivity.diffusivity_values(first_difference(w) / lam)
    assert torch.equal(fast, ref.detach())
    assert float((first_difference(w) / lam).abs().max()) > 10 * tail.diffusivity.spacing * tail.diffusivity.knots
    wg = w.clone().requires_grad_()
    irls_weights(wg, lam, torch.tensor(0.75, dtype=torch.float64)).sum().backward()
    tail.edge_diffusivity(wg, lam).sum().backward()
    assert wg.grad is not None and bool(torch.isfinite(wg.grad).all())


@pytest.mark.parametrize('dtype, rtol', [(torch.float32, 2e-6), (torch.float64, 1e-13)])
def test_gate_features_of_the_c_kernel_match_the_torch_expression(dtype, rtol):
    """Without autograd the gate's pooled lag-difference features come from one C pass per lag (sums in float64, the
    sum of logarithms from exponents and a mantissa product): torch's values to rounding for lengths from 2 (lags
    beyond the length clipped) to 5,000, a constant row and differences up to 1e16 (whose squares float32 still holds); an Inf difference gives Inf."""
    tail = ImplicitTail1D()
    g = torch.Generator().manual_seed(6)
    for n in (2, 3, 65, 5000):
        v = (torch.randn(6, 1, n, generator=g, dtype=torch.float64).cumsum(-1)
             * 10.0 ** torch.tensor([-3.0, 0.0, 2.0, 0.0, 5.0, 15.0], dtype=torch.float64).reshape(6, 1, 1)).to(dtype)
        v[3] = 1.5
        u = v + torch.randn(6, 1, n, generator=g, dtype=dtype)
        with torch.no_grad():
            fast = tail.features(v, u)
        with torch.enable_grad():
            ref = tail.features(v.clone().requires_grad_(), u).detach()     # autograd wanted: the torch expression
        assert fast.shape == ref.shape == (6, 16) and fast.dtype == dtype
        assert torch.allclose(fast, ref, rtol=rtol, atol=rtol), (n, float((fast - ref).abs().max()))
    v = torch.zeros(1, 1, 40, dtype=dtype)
    v[0, 0, 7] = float('inf')
    with torch.no_grad():
        assert bool(torch.isinf(tail.features(v, v.clone())[0, :3]).all())


def test_irls_lag_base_sets_the_gate_lags(tmp_path):
    """irls_lag_base chooses the lags of the IRLS gate's features (its powers up to 64), which sets the gate's and the
    selector's input sizes; it round-trips through config.json; a base below 2 is a ValueError naming it."""
    m = BlindDenoiser1D(scheme='explicit', channels=4, hidden_channels=4, blocks=2, irls_steps=2, irls_select=0.3,
                        irls_lag_base=2).eval()
    assert m.irls.lags == (1, 2, 4, 8, 16, 32, 64) and m.irls.gate[0].in_features == 28
    assert m.irls.selector[0].in_features == 28 + 2 * 4 + 3
    assert BlindDenoiser1D(scheme='explicit', irls_steps=1).irls.lags == (1, 4, 16, 64)
    m.save_pretrained(tmp_path / 'lags')
    assert load_folder(tmp_path / 'lags').irls.lags == (1, 2, 4, 8, 16, 32, 64)
    with pytest.raises(ValueError, match='irls_lag_base ≥ 2'):
        BlindDenoiser1D(scheme='explicit', irls_steps=1, irls_lag_base=1)
