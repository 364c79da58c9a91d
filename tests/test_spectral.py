"""The Parseval short-time Fourier frame, the spectral shrinkage of a residual and the residual tail."""
import math

import numpy as np
import pytest
import torch

from pdeblocks.hub import load_folder
from pdeblocks.layers.tails import ResidualShrinkTail1D
from pdeblocks.models.blind import BlindDenoiser1D
from pdeblocks.ops.spectral import spectral_shrink, stft_frame, stft_frame_inverse
from pdeblocks.stability import certify


def _onesided_energy(coeffs: torch.Tensor, frame: int) -> torch.Tensor:
    """Σ |X|² over every frame and the whole spectrum (bins 1 … L/2 − 1 stand for two), per signal."""
    weight = torch.full((coeffs.shape[-1],), 2.0, dtype=coeffs.real.dtype)
    weight[0] = weight[-1] = 1.0
    return (coeffs.abs().square() * weight).sum((-1, -2)).flatten()


@pytest.mark.parametrize('frame', [4, 16, 64])
@pytest.mark.parametrize('n', [1, 5, 64, 100, 1031])
def test_frame_is_tight_and_inverted(frame, n):
    """Σ|X|² = L‖x‖² and A⁺Ax = x for every length, shorter than a frame included."""
    g = torch.Generator().manual_seed(n + frame)
    x = torch.randn(3, 1, n, generator=g, dtype=torch.float64)
    coeffs = stft_frame(x, frame)
    torch.testing.assert_close(_onesided_energy(coeffs, frame), frame * x.square().sum((-1, -2)).flatten(),
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(stft_frame_inverse(coeffs, n, frame), x, rtol=0, atol=1e-12)


def test_frame_matches_the_textbook_transform():
    """Frame m is the DFT of x_{mH−H+t}·sin(πt/L), t = 0 … L − 1, with zeros outside the signal (numpy's FFT)."""
    x = np.random.default_rng(0).standard_normal(50)
    frame, hop = 16, 8
    coeffs = stft_frame(torch.from_numpy(x)[None, None], frame)[0, 0].numpy()
    padded = np.concatenate([np.zeros(hop), x, np.zeros(2 * frame)])
    window = np.sin(np.pi * np.arange(frame) / frame)
    for m in range(coeffs.shape[0]):
        np.testing.assert_allclose(coeffs[m], np.fft.rfft(padded[m * hop:m * hop + frame] * window), atol=1e-12)
    assert coeffs.shape[0] * hop >= 50 + hop       # every sample is in two frames


def test_noise_power_has_mean_sigma_squared_in_every_bin():
    sigma = 0.7
    x = sigma * torch.randn(64, 1, 4096, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    power = stft_frame(x, 64)[..., 2:-2, :].abs().square() / 32.0       # Σ w² = L/2; interior frames
    per_bin = power.mean((0, 1, 2)) / sigma ** 2
    assert float(per_bin.min()) > 0.95 and float(per_bin.max()) < 1.05


def test_shrink_bounds_hold_for_adversarial_residuals():
    """‖S(r)‖ ≤ ‖r‖ for spikes, huge values, tones, noise at any σ and threshold, and S is 0 ≤ S̃ ≤ I: with the
    gains of r frozen, ⟨S̃y, y⟩ ∈ [0, ‖y‖²] (checked through ‖S(r)‖² ≤ ⟨S(r), r⟩)."""
    g = torch.Generator().manual_seed(2)
    n = 300
    t = torch.arange(n, dtype=torch.float64)
    cases = [torch.randn(5, 1, n, generator=g, dtype=torch.float64),
             torch.zeros(2, 1, n, dtype=torch.float64).index_fill_(-1, torch.tensor([0, 151, 299]), 1e12),
             (1e300 * torch.sin(0.49 * math.pi * t))[None, None],
             (torch.sin(0.2 * t) + 1e-3 * torch.randn(n, generator=g, dtype=torch.float64))[None, None],
             torch.full((1, 1, n), -3.0, dtype=torch.float64)]
    for r in cases:
        for sigma in (1e-9, 0.1, 1.0, 1e6):
            for kappa in (0.0, 0.5, 8.0, 1e9):
                s = spectral_shrink(r, sigma, kappa, 32)
                assert bool(torch.isfinite(s).all())
                ns, nr = s.flatten(1).norm(dim=1), r.flatten(1).norm(dim=1)
                assert bool((ns <= nr * (1 + 1e-12)).all())
                assert bool(((s * r).flatten(1).sum(1) >= ns ** 2 * (1 - 1e-9) - 1e-300).all())
    r = cases[0]
    torch.testing.assert_close(spectral_shrink(r, 1.0, 0.0, 32), r, rtol=0, atol=1e-12)    # κ = 0: identity
    assert float(spectral_shrink(r, 1.0, 1e9, 32).abs().max()) == 0.0                       # above everything: 0


def test_shrink_keeps_a_tone_and_drops_white_noise():
    """A tone 4σ tall at 0.45 cycles per sample comes back (its amplitude within 15 %) with less than a fifth of the
    noise (what lies in the bins of its main lobe), and white noise alone almost vanishes."""
    g = torch.Generator().manual_seed(3)
    t = torch.arange(4096, dtype=torch.float64)
    tone = 4.0 * torch.sin(2 * math.pi * 0.45 * t)
    noise = torch.randn(8, 1, 4096, generator=g, dtype=torch.float64)
    kept = spectral_shrink(tone + noise, 1.0, 8.0, 64)
    assert float(((kept - tone) ** 2).mean()) < 0.2 * float((noise ** 2).mean())
    assert 0.85 < float((kept * tone).mean() / (tone * tone).mean()) < 1.05
    assert float((spectral_shrink(noise, 1.0, 8.0, 64) ** 2).mean()) < 1e-3


def test_shrink_takes_sigma_per_signal_and_is_positively_homogeneous():
    g = torch.Generator().manual_seed(4)
    r = torch.randn(3, 1, 200, generator=g, dtype=torch.float64) + torch.sin(torch.arange(200.0)).double()
    sig = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)[:, None, None]
    both = spectral_shrink(r, sig, 8.0, 16)
    for i in range(3):
        torch.testing.assert_close(both[i:i + 1], spectral_shrink(r[i:i + 1], float(sig[i]), 8.0, 16), rtol=0,
                                   atol=1e-12)
    for a in (1e3, 1e-300, 1e300):        # the gains from the coefficients in units of σ: no underflow or overflow
        torch.testing.assert_close(spectral_shrink(a * r, a * sig, 8.0, 16) / a, both, rtol=1e-10, atol=1e-12)


def test_bad_arguments_name_what_came():
    x = torch.zeros(1, 1, 10)
    with pytest.raises(ValueError, match=r'frame must be an even number of samples ≥ 4, got 7'):
        stft_frame(x, 7)
    with pytest.raises(ValueError, match=r'expected a float tensor \[batch, 1, length\], got torch.float32 \[10\]'):
        stft_frame(torch.zeros(10), 8)
    with pytest.raises(ValueError, match=r'expected coefficients \[batch, 1, frames ≥ 4, 5\] of 8-sample frames for '
                                         r'10 samples, got \[1, 1, 2, 5\]'):
        stft_frame_inverse(stft_frame(x, 8)[..., :2, :], 10, 8)
    with pytest.raises(ValueError, match=r'got \[1, 1, 4, 3\]'):
        stft_frame_inverse(stft_frame(x, 8)[..., :3], 10, 8)
    with pytest.raises(ValueError, match=r'threshold must be ≥ 0, got -1'):
        spectral_shrink(x, 1.0, -1.0)
    with pytest.raises(ValueError, match=r'threshold must be ≥ 0, got nan'):
        spectral_shrink(x, 1.0, float('nan'))
    for bad in (0.0, -1.0, float('inf')):
        with pytest.raises(ValueError, match=r'sigma must be finite and > 0, got \['):
            spectral_shrink(x, bad, 8.0)
    with pytest.raises(ValueError, match=r'need a finite threshold > 0, got 0.0'):
        ResidualShrinkTail1D(0.0)
    with pytest.raises(ValueError, match=r'frame must be an even int ≥ 4, got 6.0'):
        ResidualShrinkTail1D(8.0, 6.0)
    with pytest.raises(ValueError, match=r'need residual_threshold ≥ 0 \(0: no residual tail\), got -2'):
        BlindDenoiser1D(scheme='explicit', channels=8, hidden_channels=8, blocks=2, residual_threshold=-2)


def _model(**kw):
    torch.manual_seed(0)
    return BlindDenoiser1D(scheme='explicit', channels=8, hidden_channels=8, blocks=2, residual_threshold=8.0,
                           **kw).eval()


def test_tail_in_the_model_certified_equivariant_and_round_trips(tmp_path):
    """The residual tail is last, certified (norm factor √2 in every pass), on the signal's own samples; with the tail
    the model stays affine equivariant; its settings come back from config.json and it is v + S(u⁰ − v) of what came
    before it."""
    m = _model(residual_frame=32).double()
    last = certify(m).blocks[-1]
    assert (last.path, last.block, last.mode, last.passes) == ('residual', 'ResidualShrinkTail1D',
                                                                'residual-shrinkage', 'all')
    assert last.norm_factor == math.sqrt(2.0)
    g = torch.Generator().manual_seed(5)
    t = torch.arange(600, dtype=torch.float64)
    f = (torch.sin(2 * math.pi * 0.4 * t) + 0.1 * torch.randn(2, 1, 600, generator=g, dtype=torch.float64))
    seen = {}
    m.residual.register_forward_hook(lambda mod, args, out: seen.update(v=args[0], u=args[1], out=out))
    with torch.no_grad():
        out = m(f)
        torch.testing.assert_close(seen['out'], seen['v'] + spectral_shrink(seen['u'] - seen['v'], 1.0, 8.0, 32),
                                   rtol=0, atol=1e-12)
        # on the signal's own samples (after the crop of the reflected padding): u⁰ is the normalised input itself
        torch.testing.assert_close(seen['u'], m.normalise(f)[0], rtol=0, atol=1e-12)
        for a, b in ((1e-3, 5.0), (1e3, -40.0)):
            np.testing.assert_allclose(m(a * f + b).numpy(), (a * out + b).numpy(), rtol=0, atol=1e-9 * max(a, abs(b)))
    m.save_pretrained(tmp_path / 'm')
    loaded = load_folder(tmp_path / 'm').double().eval()
    assert (loaded.residual.threshold, loaded.residual.frame) == (8.0, 32)
    with torch.no_grad():
        assert torch.equal(loaded(f), out)


def test_tail_bounds_under_huge_inputs_and_weights():
    """‖f − v‖ ≤ ‖u⁰ − v‖ and ‖f‖² ≤ ‖v‖² + ‖u⁰‖² for random, huge and alternating v and u⁰."""
    tail = ResidualShrinkTail1D(8.0, 64)
    g = torch.Generator().manual_seed(6)
    n = 500
    alt = torch.ones(n, dtype=torch.float64)
    alt[1::2] = -1
    for v, u in ((torch.randn(3, 1, n, generator=g, dtype=torch.float64), torch.randn(3, 1, n, generator=g, dtype=torch.float64)),
                 (1e150 * torch.randn(2, 1, n, generator=g, dtype=torch.float64), 1e150 * alt.expand(2, 1, n)),
                 (torch.zeros(1, 1, n, dtype=torch.float64), 1e3 * alt[None, None])):
        f = tail(v, u)
        norm = lambda x: x.flatten(1).norm(dim=1)        # noqa: E731
        assert bool((norm(f - v) <= norm(u - v) * (1 + 1e-12)).all())
        assert bool((norm(f) ** 2 <= (norm(v) ** 2 + norm(u) ** 2) * (1 + 1e-12)).all())


def test_gradients_flow_through_the_tail_to_the_network():
    m = _model()
    x = torch.randn(2, 1, 256, generator=torch.Generator().manual_seed(7)).cumsum(-1)
    m.train()
    m(x).pow(2).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.net.parameters())
