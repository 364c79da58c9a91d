"""The signal families of the general denoiser: seeding, splits, ranges, family character, noise."""
import numpy as np
import pytest
import torch

from pdeblocks.data.families import (
    AR1_RHO,
    FAMILIES,
    GENERATORS,
    MAX_FREQUENCY,
    NOISES,
    family_rng,
    make_family_signals,
    training_batch,
    unit_range,
)


@pytest.mark.parametrize('family', FAMILIES)
def test_deterministic_unit_range_and_split_separation(family):
    a = make_family_signals(family, 'val', 4, 300, 0.1, seed=3)
    b = make_family_signals(family, 'val', 4, 300, 0.1, seed=3)
    np.testing.assert_array_equal(a.noisy, b.noisy)
    assert np.allclose(a.clean.min(1), 0.0) and np.allclose(a.clean.max(1), 1.0)
    t = make_family_signals(family, 'test', 4, 300, 0.1, seed=3)
    assert not np.allclose(a.clean, t.clean)
    # one signal regenerated on its own (offset) equals its row in the batch
    one = make_family_signals(family, 'val', 1, 300, 0.1, seed=3, offset=2)
    np.testing.assert_array_equal(one.noisy[0], a.noisy[2])
    # the clean signal does not depend on σ or on the noise type
    other = make_family_signals(family, 'val', 4, 300, 0.2, seed=3, noise='laplace')
    np.testing.assert_array_equal(other.clean, a.clean)


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('length', [16, 17, 1000])
def test_every_length(family, length):
    s = make_family_signals(family, 'train', 3, length, 0.05)
    assert s.clean.shape == (3, length) and np.isfinite(s.noisy).all()


def test_family_character():
    n, count = 1024, 24
    pc = make_family_signals('piecewise_constant', 'val', count, n, 0.0).clean
    jumps = (np.abs(np.diff(pc, axis=1)) > 1e-9).sum(1)
    assert jumps.max() < n / 4 and jumps.min() >= 0            # flat between a few jumps
    dens = sorted(jumps)
    assert dens[-1] >= 4 * max(dens[0], 1)                       # several jump densities
    trend = make_family_signals('smooth_trend', 'val', count, n, 0.0).clean
    assert np.abs(np.diff(trend, 2, axis=1)).max() < 0.02       # smooth: small curvature everywhere
    osc = make_family_signals('oscillations', 'val', count, n, 0.0).clean
    centred = osc - osc.mean(1, keepdims=True)
    crossings = (np.diff(np.sign(centred), axis=1) != 0).sum(1)
    assert np.median(crossings) >= 6                              # oscillates
    pk = make_family_signals('peaks', 'val', count, n, 0.0).clean
    # isolated peaks: most samples sit well below the top
    assert np.median(np.mean(pk > 0.5, axis=1)) < 0.3


@pytest.mark.parametrize('noise', NOISES)
def test_noise_level_and_shape(noise):
    sigma = 0.2
    s = make_family_signals('smooth_trend', 'val', 8, 8192, sigma, noise=noise)
    eps = (s.noisy.astype(np.float64) - s.clean) / sigma
    assert abs(eps.std() - 1.0) < 0.03
    kurt = np.mean(eps ** 4) / np.mean(eps ** 2) ** 2
    lag1 = np.mean(eps[:, 1:] * eps[:, :-1]) / np.mean(eps ** 2)
    if noise == 'laplace':
        assert abs(kurt - 6.0) < 0.6          # Laplace: kurtosis 6
    else:
        assert abs(kurt - 3.0) < 0.25
    assert abs(lag1 - (AR1_RHO if noise == 'ar1' else 0.0)) < 0.03


def test_training_batch_deterministic_and_mixed():
    x1, y1 = training_batch(FAMILIES, 12, 128, step=5, seed=1)
    x2, y2 = training_batch(FAMILIES, 12, 128, step=5, seed=1)
    assert x1.shape == (12, 1, 128) and x1.dtype == torch.float32
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = training_batch(FAMILIES, 12, 128, step=6, seed=1)
    assert not torch.equal(x1, x3)
    sig = (x1 - y1).flatten(1).std(1)
    assert float(sig.max() / sig.min()) > 3      # σ varies over the batch (log-uniform 0.005–0.3)


def test_bad_input():
    with pytest.raises(ValueError, match='family'):
        make_family_signals('sawtooth', 'val', 1, 64, 0.1)
    with pytest.raises(ValueError, match='split'):
        family_rng('peaks', 'holdout', 0)
    with pytest.raises(ValueError, match='length'):
        make_family_signals('peaks', 'val', 1, 8, 0.1)
    with pytest.raises(ValueError, match='noise'):
        make_family_signals('peaks', 'val', 1, 64, 0.1, noise='poisson')
    with pytest.raises(ValueError, match='sigma'):
        make_family_signals('peaks', 'val', 1, 64, -0.1)
    with pytest.raises(ValueError, match='families'):
        training_batch(('peaks', 'nope'), 2, 64, 0)


def _power_above(x: np.ndarray, f: float) -> float:
    """The fraction of the (mean-removed) signals' energy above ``f`` cycles per sample."""
    spec = np.abs(np.fft.rfft(x - x.mean(-1, keepdims=True), axis=-1)) ** 2
    freq = np.fft.rfftfreq(x.shape[-1])
    return float(spec[:, freq > f].sum() / spec.sum())


def test_max_frequency_widens_the_oscillations_only():
    """The default is the benchmark's families as they were (0.15 cycles/sample: almost no energy above 0.2);
    max_frequency=0.5 puts a good share of the energy above 0.2, in sums too (jumps and spikes put some there
    already); the families without oscillations do not change."""
    base = make_family_signals('oscillations', 'val', 64, 1024, 0.0)
    assert np.array_equal(base.clean, make_family_signals('oscillations', 'val', 64, 1024, 0.0,
                                                          max_frequency=MAX_FREQUENCY).clean)
    wide = make_family_signals('oscillations', 'val', 64, 1024, 0.0, max_frequency=0.5)
    assert _power_above(base.clean, 0.2) < 1e-3 and _power_above(wide.clean, 0.2) > 0.05
    assert _power_above(make_family_signals('sums', 'val', 64, 1024, 0.0, max_frequency=0.5).clean, 0.2) > \
        3 * _power_above(make_family_signals('sums', 'val', 64, 1024, 0.0).clean, 0.2)
    for fam in ('piecewise_constant', 'peaks', 'smooth_trend', 'piecewise_smooth'):
        assert np.array_equal(make_family_signals(fam, 'val', 4, 256, 0.1).noisy,
                              make_family_signals(fam, 'val', 4, 256, 0.1, max_frequency=0.5).noisy)
    x, y = training_batch(('oscillations',), 16, 512, step=3, max_frequency=0.5)
    assert _power_above(y[:, 0].numpy().astype(np.float64), 0.2) > 0.05
    for bad in (0.0, -0.1, 0.51, float('nan')):
        with pytest.raises(ValueError, match=r'max_frequency must be in \(0, 0.5\] cycles per sample'):
            make_family_signals('oscillations', 'val', 1, 64, 0.1, max_frequency=bad)


def test_unit_range_and_generators_registry():
    np.testing.assert_allclose(unit_range(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(unit_range(np.full(5, 7.0)), 0.5)
    assert set(GENERATORS) == set(FAMILIES)
