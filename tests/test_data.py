"""Signal generators, splits, the oracle, reference diffusion solvers and the TV baseline."""
import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm

from pdeblocks import classical as ref
from pdeblocks.classical import perona_malik_denoise, tv_denoise
from pdeblocks.data import bayes_segment_means, make_signals, oracle_segment_means, psnr, segment_starts, signal_rng


# ---------------------------------------------------------------- generators
@pytest.mark.parametrize('kind', ['piecewise_constant', 'piecewise_smooth'])
@pytest.mark.parametrize('length', [256, 1024, 4096])
def test_signals_deterministic_and_in_range(kind, length):
    a = make_signals(kind, 'train', 3, length, 0.1, seed=5)
    b = make_signals(kind, 'train', 3, length, 0.1, seed=5)
    assert a.clean.shape == (3, length) and a.noisy.dtype == np.float32
    np.testing.assert_array_equal(a.noisy, b.noisy)
    assert a.clean.min() >= 0.0 and a.clean.max() <= 1.0
    # every signal is regenerated alone by its index
    c = make_signals(kind, 'train', 1, length, 0.1, seed=5, offset=2)
    np.testing.assert_array_equal(c.noisy[0], a.noisy[2])


def test_splits_and_seeds_differ():
    sets = [make_signals('piecewise_constant', s, 2, 512, 0.1).clean for s in ('train', 'val', 'test')]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.array_equal(sets[i], sets[j])
    assert not np.array_equal(make_signals('piecewise_constant', 'test', 2, 512, 0.1, seed=1).clean, sets[2])


def test_piecewise_constant_jumps_only_at_segment_starts():
    s = make_signals('piecewise_constant', 'test', 4, 2048, 0.05)
    for clean, starts in zip(s.clean, s.starts):
        jumps = np.flatnonzero(np.diff(clean) != 0) + 1
        assert set(jumps) <= set(starts[1:].tolist())
        assert len(starts) > 5  # mean segment 64 → about 32 segments
        assert np.all(np.diff(starts) >= 8)


def test_clean_signal_does_not_depend_on_sigma_and_noise_is_gaussian():
    a = make_signals('piecewise_smooth', 'val', 8, 4096, 0.05)
    b = make_signals('piecewise_smooth', 'val', 8, 4096, 0.2)
    np.testing.assert_array_equal(a.clean, b.clean)
    z = (b.noisy.astype(np.float64) - b.clean) / 0.2
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02
    z2 = (a.noisy.astype(np.float64) - a.clean) / 0.05
    np.testing.assert_allclose(z2, z, atol=1e-4)  # same draws, scaled


def test_bad_arguments():
    with pytest.raises(ValueError, match='split'):
        signal_rng('piecewise_constant', 'holdout', 0)
    with pytest.raises(ValueError, match='kind'):
        make_signals('sawtooth', 'train', 1, 256, 0.1)
    with pytest.raises(ValueError, match='length'):
        make_signals('piecewise_constant', 'train', 1, 4, 0.1)
    with pytest.raises(ValueError, match='sigma'):
        make_signals('piecewise_constant', 'train', 1, 256, float('nan'))


def test_oracle_and_psnr_against_hand_computation():
    s = make_signals('piecewise_constant', 'test', 2, 300, 0.1)
    o = oracle_segment_means(s.noisy, s.starts)
    st = s.starts[1]
    a, b = st[1], st[2]
    assert o[1, a] == pytest.approx(float(np.mean(s.noisy[1, a:b].astype(np.float64))))
    mse = float(np.mean((o[0] - s.clean[0].astype(np.float64)) ** 2))
    assert psnr(o, s.clean)[0] == pytest.approx(10 * math.log10(1 / mse))
    # the oracle's MSE is about σ²·segments/length
    big = make_signals('piecewise_constant', 'test', 64, 1024, 0.1)
    mse = np.mean((oracle_segment_means(big.noisy, big.starts) - big.clean) ** 2)
    expect = 0.01 * np.mean([len(x) for x in big.starts]) / 1024
    assert 0.8 < mse / expect < 1.2


# ---------------------------------------------------------------- the Bayes limit
def _segmentations(n: int, m: int):
    """Every tuple of segment lengths the generator can draw for length n (non-final ones end by n − m)."""
    def rec(start):
        if start == n:
            yield ()
            return
        for length in range(m, n - start + 1):
            end = start + length
            if end == n or end <= n - m:
                for rest in rec(end):
                    yield (length,) + rest
    yield from rec(0)


def _segmentation_prior(lengths, m: int, mean_segment: float) -> float:
    """Probability of a segmentation under segment_starts' renewal process, derived independently:
    next length L = m + G − 1 with G ~ Geometric(p); the draw that would leave fewer than m samples stops."""
    p = 1 / (mean_segment - m + 1)
    prob = 1.0
    for length in lengths[:-1]:
        prob *= p * (1 - p) ** (length - m)
    # the last segment of length R: the next draw L exceeded R − m, P(L > k) = (1 − p)^(k − m + 1) for k ≥ m − 1
    k = lengths[-1] - m
    return prob * ((1 - p) ** (k - m + 1) if k >= m - 1 else 1.0)


def test_segmentation_prior_matches_the_generator():
    n, m, mean_segment, draws = 14, 3, 6.0, 40000
    prior = {seg: _segmentation_prior(seg, m, mean_segment) for seg in _segmentations(n, m)}
    assert sum(prior.values()) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(3)
    counts = {}
    for _ in range(draws):
        seg = tuple(np.diff(np.append(segment_starts(n, rng, mean_segment, m), n)).tolist())
        counts[seg] = counts.get(seg, 0) + 1
    assert set(counts) <= set(prior)
    total_variation = 0.5 * sum(abs(counts.get(seg, 0) / draws - q) for seg, q in prior.items())
    assert total_variation < 0.035  # sampling noise ≈ 0.015; a last-segment law off by one sample gives 0.07


def test_bayes_segment_means_equals_brute_force_posterior_mean():
    # every segmentation enumerated, each level integrated on a fine grid over [0, 1]
    n, m, mean_segment, sigma = 18, 3, 6.0, 0.15
    rng = np.random.default_rng(5)
    y = np.repeat(rng.uniform(0, 1, 4), [5, 4, 6, 3]) + sigma * rng.standard_normal(n)
    grid = (np.arange(4000) + 0.5) / 4000
    numerator, evidence = np.zeros(n), 0.0
    for seg in _segmentations(n, m):
        weight, pieces, start = _segmentation_prior(seg, m, mean_segment), [], 0
        for length in seg:
            lik = np.exp(-((y[start:start + length, None] - grid) ** 2).sum(0) / (2 * sigma ** 2))
            weight *= lik.mean()
            pieces.append((start, length, (lik * grid).sum() / lik.sum()))
            start += length
        evidence += weight
        for start, length, level in pieces:
            numerator[start:start + length] += weight * level
    expected = numerator / evidence
    got = bayes_segment_means(y, sigma, mean_segment, m)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # a batch with one σ per signal gives the same rows
    both = bayes_segment_means(np.stack([y, y[::-1]]), [sigma, 0.3], mean_segment, m)
    np.testing.assert_allclose(both[0], got, atol=1e-12)
    assert not np.allclose(both[1], got[::-1], atol=1e-3)


def test_truncated_normal_mean_in_both_tails():
    """E[Z | a < Z < b] against 60-digit arithmetic, also where a and b lie far in one tail (there the plain
    quotient (φ(a) − φ(b))/(Φ(b) − Φ(a)) loses every digit)."""
    mpmath = pytest.importorskip('mpmath')
    from pdeblocks.data.signals import _truncated_normal_mean
    mpmath.mp.dps = 60

    def exact(a, b):
        a, b = mpmath.mpf(a), mpmath.mpf(b)
        root2 = mpmath.sqrt(2)
        mass = (mpmath.erfc(a / root2) - mpmath.erfc(b / root2) if a > 0
                else mpmath.erfc(-b / root2) - mpmath.erfc(-a / root2)) / 2
        return float((mpmath.npdf(a) - mpmath.npdf(b)) / mass)

    pairs = [(x, x + w) for x in (-3e7, -3e4, -300.0, -30.0, -3.0, -0.5, 0.0, 0.3, 2.0, 20.0, 200.0, 2e4)
             for w in (0.01, 1.0, 10.0, 1e3)]
    got = _truncated_normal_mean(torch.tensor([p[0] for p in pairs], dtype=torch.float64),
                                 torch.tensor([p[1] for p in pairs], dtype=torch.float64))
    for (a, b), g in zip(pairs, got.tolist()):
        e = exact(a, b)
        assert a <= g <= b
        assert abs(g - e) <= 1e-9 * max(1.0, abs(e)), (a, b, g, e)


def test_bayes_segment_means_far_outside_the_prior_stays_in_its_support():
    far = bayes_segment_means(np.stack([np.full(32, 1e6), np.full(32, -1e6), np.full(32, 1.5)]), 0.1)
    assert np.all((far >= 0) & (far <= 1))
    np.testing.assert_allclose(far[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(far[1], 0.0, atol=1e-6)
    assert np.all(far[2] > 0.99)


def test_bayes_limit_lies_between_tv_and_the_oracle():
    s = make_signals('piecewise_constant', 'test', 16, 512, 0.1)
    bayes = psnr(bayes_segment_means(s.noisy, 0.1), s.clean).mean()
    oracle = psnr(oracle_segment_means(s.noisy, s.starts), s.clean).mean()
    tv = max(psnr(tv_denoise(s.noisy, w).numpy(), s.clean).mean() for w in (0.05, 0.1, 0.2, 0.4))
    assert tv + 1.0 < bayes < oracle


def test_bayes_segment_means_bad_input():
    y = np.zeros((2, 64))
    with pytest.raises(ValueError, match='sigma'):
        bayes_segment_means(y, 0.0)
    with pytest.raises(ValueError, match='sigma'):
        bayes_segment_means(y, [0.1, float('nan')])
    with pytest.raises(ValueError, match=r'one per signal \(2\)'):
        bayes_segment_means(y, [0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match='NaN'):
        bayes_segment_means(np.full(64, np.nan), 0.1)
    with pytest.raises(ValueError, match=r'\[count, n\]'):
        bayes_segment_means(np.zeros((2, 2, 64)), 0.1)
    with pytest.raises(ValueError, match='min_segment'):
        bayes_segment_means(np.zeros(4), 0.1, min_segment=8)
    with pytest.raises(ValueError, match='min_segment must be an int'):
        bayes_segment_means(np.zeros(64), 0.1, min_segment=3.5)


# ---------------------------------------------------------------- diffusion references
def _linear_exact(f: np.ndarray, time: float, order: int) -> np.ndarray:
    """exp(−T DᵀD) f with D the m-th difference matrix, built by hand (independent of pdeblocks)."""
    n = f.shape[-1]
    d = np.eye(n)
    for _ in range(order):
        d = d[1:] - d[:-1]
    return f @ expm(-time * d.T @ d).T


def _linear_flux():
    # Charbonnier with an enormous contrast: g(s²) = 1/√(1 + s²/λ²) = 1 − O(1e-12) on these signals
    return ref.make_flux('charbonnier', 1e6)


@pytest.mark.parametrize('order,time', [(1, 3.0), (2, 0.5)])
def test_schemes_converge_to_the_exact_linear_solution(order, time):
    f = make_signals('piecewise_smooth', 'test', 2, 64, 0.1).noisy.astype(np.float64)
    exact = _linear_exact(f, time, order)
    flux = _linear_flux()
    ft = torch.from_numpy(f)
    rk = ref.fine_reference(ft, flux, time, order).numpy()
    assert np.abs(rk - exact).max() < 1e-8
    ex = ref.explicit(ft, flux, time, order).numpy()
    assert np.abs(ex - exact).max() < 0.05
    imp1 = ref.implicit(ft, flux, time, 20, order).numpy()
    imp2 = ref.implicit(ft, flux, time, 40, order).numpy()
    e1, e2 = np.abs(imp1 - exact).max(), np.abs(imp2 - exact).max()
    assert e2 < e1 and 1.6 < e1 / e2 < 2.4  # first order in time
    # a FED cycle with τ_max below the stability limit is stable and accurate for a linear problem
    cycles = 3
    steps = math.ceil(math.sqrt(3 * time / cycles / ref.stable_step(flux, order, 0.9)))
    fed = ref.fed(ft, flux, time, steps, cycles, order).numpy()
    assert np.abs(fed - exact).max() < 0.05


@pytest.mark.parametrize('scheme', ['explicit', 'fed', 'implicit', 'reference'])
def test_mass_is_conserved_with_neumann_boundaries(scheme):
    f = torch.from_numpy(make_signals('piecewise_constant', 'test', 3, 128, 0.1).noisy).double()
    flux = ref.make_flux('perona_malik', 0.1)
    u = {'explicit': lambda: ref.explicit(f, flux, 5.0), 'fed': lambda: ref.fed(f, flux, 5.0, 4, 2),
         'implicit': lambda: ref.implicit(f, flux, 5.0, 5), 'reference': lambda: ref.fine_reference(f, flux, 5.0)}[scheme]()
    torch.testing.assert_close(u.sum(-1), f.sum(-1), atol=1e-9, rtol=0)


def test_fine_reference_error_is_documented_small_and_explicit_converges_to_it():
    f = torch.from_numpy(make_signals('piecewise_smooth', 'test', 2, 256, 0.1).noisy).double()
    flux = ref.make_flux('perona_malik', 0.1)
    assert ref.reference_error(f, flux, 10.0) < 1e-8
    r = ref.fine_reference(f, flux, 10.0)
    e1 = ref.relative_error(ref.explicit_steps(f, flux, 10.0, 100), r).max()
    e2 = ref.relative_error(ref.explicit_steps(f, flux, 10.0, 200), r).max()
    assert e2 < e1 and 1.5 < e1 / e2 < 2.5


def test_perona_malik_reference_keeps_max_min():
    f = torch.from_numpy(make_signals('piecewise_constant', 'test', 4, 256, 0.1).noisy).double()
    u = ref.fine_reference(f, ref.make_flux('perona_malik', 0.1), 10.0)
    assert bool((u.amax(-1) <= f.amax(-1) + 1e-9).all()) and bool((u.amin(-1) >= f.amin(-1) - 1e-9).all())


# ---------------------------------------------------------------- TV denoising
def test_tv_closed_form_for_a_single_step():
    # f = a on n1 samples, b on n2 samples, |b − a| large: the minimiser moves each plateau by w/nᵢ
    n1, n2, a, b, w = 30, 50, 0.2, 0.9, 1.5
    f = torch.tensor([a] * n1 + [b] * n2, dtype=torch.float64)
    u = tv_denoise(f[None], w, tol=1e-12)[0]
    expect = torch.tensor([a + w / n1] * n1 + [b - w / n2] * n2, dtype=torch.float64)
    torch.testing.assert_close(u, expect, atol=1e-5, rtol=0)


def test_tv_optimality_conditions_on_noisy_signals():
    s = make_signals('piecewise_constant', 'test', 3, 200, 0.1)
    f = torch.from_numpy(s.noisy).double()
    w = 0.3
    u = tv_denoise(f, w, tol=1e-12).numpy()
    fn = f.numpy()
    # KKT: u = f − Dᵀp with |p| ≤ w and p = w·sign(Du) where Du ≠ 0; (Dᵀp)ᵢ = pᵢ₋₁ − pᵢ, so p = −cumsum(f − u)
    p = -np.cumsum(fn - u, axis=-1)[:, :-1]
    assert np.all(np.abs(p) <= w + 1e-5)
    du = np.diff(u, axis=-1)
    jump = np.abs(du) > 1e-5
    np.testing.assert_allclose(p[jump], w * np.sign(du[jump]), atol=1e-4)
    assert np.all(np.abs(np.sum(fn - u, axis=-1)) < 1e-6)  # the mean is kept


def test_tuned_baselines_denoise():
    s = make_signals('piecewise_constant', 'test', 8, 1024, 0.1)
    f = torch.from_numpy(s.noisy).double()
    noisy = psnr(s.noisy, s.clean).mean()
    assert psnr(tv_denoise(f, 0.35).numpy(), s.clean).mean() > noisy + 8
    assert psnr(perona_malik_denoise(f, 0.03, 100.0).numpy(), s.clean).mean() > noisy + 8


def test_perona_malik_tuning_follows_each_path_to_its_peak():
    """The tuned stopping time is the peak of PSNR(T) on the path, however late it comes (here past
    T = 200, where a fixed window used to cut the search off), and it is checked against independent
    solves at other times."""
    from pdeblocks.classical import tune_perona_malik
    v = make_signals('piecewise_constant', 'val', 8, 256, 0.2, seed=0)
    lam, t, score = tune_perona_malik(v.noisy, v.clean, contrasts=[0.0107])
    assert lam == 0.0107 and t > 200
    f = torch.from_numpy(v.noisy).double()

    def at(time):
        return psnr(perona_malik_denoise(f, lam, time).numpy(), v.clean).mean()

    assert at(t) == pytest.approx(score, abs=1e-9)
    assert at(t) > max(at(200.0), at(t / 2), at(1.5 * t))


def test_perona_malik_tuning_warns_at_the_ends_of_its_search():
    from pdeblocks.classical import tune_perona_malik
    v = make_signals('piecewise_constant', 'val', 4, 256, 0.2, seed=0)
    with pytest.warns(UserWarning, match='best stopping time is the cap'):
        tune_perona_malik(v.noisy, v.clean, contrasts=[0.0107], max_time=50.0)
    with pytest.warns(UserWarning, match='end of the grid'):
        lam, _, _ = tune_perona_malik(v.noisy, v.clean, contrasts=[0.0107, 0.4])
    assert lam == 0.0107


@pytest.mark.parametrize('kwargs', [dict(contrasts=[]), dict(contrasts=[0.0]), dict(contrasts=[float('nan')]),
                                    dict(max_time=0.1), dict(patience=0.5), dict(tau=0.0)])
def test_perona_malik_tuning_bad_arguments(kwargs):
    from pdeblocks.classical import tune_perona_malik
    v = make_signals('piecewise_constant', 'val', 2, 64, 0.1, seed=0)
    with pytest.raises(ValueError, match='got'):
        tune_perona_malik(v.noisy, v.clean, **kwargs)


def test_moved_solvers_keep_their_old_import_paths():
    """pdeblocks.classical is the home; data.reference re-exports, train.baselines re-exports and warns."""
    import importlib
    import sys

    from pdeblocks.data import reference
    assert reference.fed is ref.fed and reference.fine_reference is ref.fine_reference
    sys.modules.pop('pdeblocks.train.baselines', None)
    with pytest.warns(DeprecationWarning, match='pdeblocks.classical'):
        baselines = importlib.import_module('pdeblocks.train.baselines')
    assert baselines.tv_denoise is ref.tv_denoise and baselines.PM_CONTRASTS == ref.PM_CONTRASTS
