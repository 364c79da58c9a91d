"""The blind, affine-equivariant wrapper: noise estimate, D(a·f + b) = a·D(f) + b, lengths, bad input."""
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pdeblocks.hub import load_folder
from pdeblocks.models.blind import (
    SCHEMES,
    BlindDenoiser1D,
    denoise_signal,
    median_last,
    noise_sigma,
    spectral_noise_sigma,
)


def _noisy(n=1024, sigma=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    clean = (t > 0.3).double() * 0.8 + 0.3 * torch.sin(6 * t) + 0.5 * t ** 2
    return clean, clean + sigma * torch.randn(n, generator=g, dtype=torch.float64)


def _model(scheme='fed', seed=0, **kw):
    torch.manual_seed(seed)
    small = dict(channels=8, hidden_channels=8, blocks=2, steps=2)
    if scheme == 'multigrid':
        small = dict(channels=4, levels=2, steps=1)
    m = BlindDenoiser1D(scheme=scheme, **dict(small, **kw))
    with torch.no_grad():   # leave the identity start: a network that changes its input
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def test_noise_sigma_matches_known_sigma_and_ignores_smooth_signals():
    g = torch.Generator().manual_seed(1)
    for sigma in (1e-3, 0.3, 50.0):
        noise = sigma * torch.randn(16, 1, 4096, generator=g, dtype=torch.float64)
        t = torch.linspace(-1, 1, 4096, dtype=torch.float64)
        trend = 20 * sigma * (t ** 2 - 0.5 * t)          # a quadratic 20σ tall: annihilated by h
        est = noise_sigma(noise + trend).flatten() / sigma
        assert abs(float(est.mean()) - 1.0) < 0.03 and float(est.std()) < 0.05
    assert float(noise_sigma(torch.full((1, 1, 64), 3.7))) == 0.0


def test_noise_sigma_is_scale_and_offset_equivariant():
    _, f = _noisy()
    f = f[None, None]
    for a, b in ((1e-3, 0.0), (1e3, 5000.0), (7.0, -3.0)):
        for spectral in (False, True):
            assert math.isclose(float(noise_sigma(a * f + b, spectral)), a * float(noise_sigma(f, spectral)),
                                rel_tol=1e-6)
        assert math.isclose(float(spectral_noise_sigma(a * f + b)), a * float(spectral_noise_sigma(f)), rel_tol=1e-6)


def _fast_chirp(n=4096):
    """A chirp sweeping 0.05 → 0.48 cycles per sample, amplitude 1 (the kind of signal that fools σ̂_D)."""
    t = torch.arange(n, dtype=torch.float64)
    return torch.sin(2 * math.pi * (0.05 * t + (0.48 - 0.05) * t * t / (2 * n)))


def test_spectral_noise_sigma_on_white_noise_and_fast_oscillations():
    """σ̂_S is unbiased on white noise (the exponential law of |X|², median ln 2), ignores offsets, constants and
    smooth trends; on a fast chirp 20σ tall σ̂_D is far too large and min(σ̂_D, σ̂_S) stays near σ."""
    g = torch.Generator().manual_seed(3)
    sigma = 0.05
    noise = sigma * torch.randn(32, 1, 4096, generator=g, dtype=torch.float64)
    est = spectral_noise_sigma(noise).flatten() / sigma
    assert abs(float(est.mean()) - 1.0) < 0.02 and float(est.std()) < 0.05
    assert float(spectral_noise_sigma(torch.full((1, 1, 64), 3.7))) == 0.0
    t = torch.linspace(-1, 1, 4096, dtype=torch.float64)
    assert abs(float(spectral_noise_sigma(noise + 5.0 + 0.5 * t ** 2).mean()) / sigma - 1.0) < 0.03
    chirp = noise + 20 * sigma * _fast_chirp()
    assert float(noise_sigma(chirp).mean()) > 1.8 * sigma
    both = noise_sigma(chirp, spectral=True).flatten() / sigma
    assert float(both.min()) > 0.9 and float(both.max()) < 1.25
    for dtype, scales, rtol in ((torch.float64, (1e-300, 1e-200, 1e300), 1e-12), (torch.float32, (1e-30, 1e30), 1e-5)):
        base = spectral_noise_sigma(chirp.to(dtype)).double()     # at every scale the dtype holds: no underflow
        for a in scales:
            torch.testing.assert_close(spectral_noise_sigma((a * chirp).to(dtype)).double() / a, base, rtol=rtol, atol=0)
    short = noise[..., :63]                              # no whole frame: σ̂_D alone
    assert torch.equal(noise_sigma(short, spectral=True), noise_sigma(short))


def test_spectral_noise_is_the_models_estimate():
    """BlindDenoiser1D(spectral_noise=True) normalises by min(σ̂_D, σ̂_S), in forward and predict alike, and stays
    affine-equivariant; the default keeps σ̂_D (the published v1–v4 configs build the models they were)."""
    g = torch.Generator().manual_seed(4)
    f = (0.05 * torch.randn(2, 1, 1024, generator=g, dtype=torch.float64) + _fast_chirp(1024)).float()
    m = _model('explicit', spectral_noise=True)
    assert torch.equal(m.noise_sigma(f), noise_sigma(f, spectral=True))
    assert torch.equal(_model('explicit').noise_sigma(f), noise_sigma(f))
    assert float(m.noise_sigma(f).max()) < float(noise_sigma(f).min())
    with torch.no_grad():
        out = m(f)
        assert torch.allclose(m.predict(f), out, rtol=0, atol=1e-5)
        assert torch.allclose(m(1e3 * f + 7.0), 1e3 * out + 7.0, rtol=0, atol=1e3 * 1e-4)
        assert torch.allclose(m.denoise_with_sigma(f, m.noise_sigma(f)), out, rtol=0, atol=1e-6)
        assert not torch.allclose(_model('explicit')(f), out, rtol=0, atol=1e-3)


@pytest.mark.parametrize('scheme, kw', [(s, {}) for s in SCHEMES] + [('multigrid', dict(scale=1)),
                                                                    ('explicit', dict(refine_cycles=1, refine_steps=4))])
def test_affine_equivariance(scheme, kw):
    m = _model(scheme, **kw)
    _, f = _noisy()
    f = f.float()[None, None]
    with torch.no_grad():
        base = m(f)
        assert float((base - f).abs().max()) > 1e-3        # the network does something
        for a, b in ((1e-3, 0.0), (1e-3, 0.25), (1e3, 5000.0), (10.0, -3.0)):
            out = m(a * f + b)
            # rounding: float32 carries ~1e-7 relative to |a·f + b|, the net sees (f − c)/σ̂ ≈ 10 units
            tol = 5e-5 * (abs(b) / a + 1.0)
            err = float(((out - b) / a - base).abs().max())
            assert err < tol, (a, b, err)


def test_float64_input_keeps_precision_at_large_offsets():
    """In float64 the normalisation is exact: a trace at 1e6 with noise 1e-3 denoises like the same trace at 0."""
    m = _model()
    clean, f = _noisy(sigma=0.1)
    f = f[None, None]
    with torch.no_grad():
        base = m(f)
        moved = m(1e-2 * f + 1e6)
    assert float(((moved - 1e6) / 1e-2 - base).abs().max()) < 1e-4


@pytest.mark.parametrize('length', [16, 17, 31, 100, 1025])
def test_any_length_from_the_minimum(length):
    m = _model('explicit')
    assert m.min_length == 16
    _, f = _noisy(n=length)
    with torch.no_grad():
        out = m(f.float()[None, None])
    assert out.shape == (1, 1, length) and bool(torch.isfinite(out).all())


def test_constant_signal_returned_unchanged_and_said_so():
    m = _model()
    x = torch.full((2, 1, 64), 2.5)
    x[1] += torch.linspace(0, 1, 64)      # a noise-free ramp: σ̂ = 0 too
    with pytest.warns(UserWarning, match='σ̂ = 0'):
        out = m.predict(x)
    assert torch.equal(out, x)
    res = denoise_signal(np.full(50, 4.0), m)
    assert res.noise_sigma == 0.0 and 'constant' in res.note and np.array_equal(res.denoised, np.full(50, 4.0))


def test_denoise_signal_reports_the_estimate():
    m = _model()
    clean, f = _noisy(n=2048, sigma=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        res = denoise_signal(1e3 * f.numpy() + 10.0, m)
    assert abs(res.noise_sigma / 50.0 - 1.0) < 0.1 and 'σ̂' in res.note
    assert res.denoised.shape == (2048,) and res.denoised.dtype == np.float64


@pytest.mark.parametrize('bad, match', [
    (np.zeros((2, 64)), r'1-D signal.*\(2, 64\)'),
    (np.ones(8), 'at least 16'),
    (np.r_[np.ones(30), np.nan, np.ones(30)], 'NaN or Inf'),
    (np.r_[np.zeros(30), np.inf, np.zeros(30)], 'NaN or Inf'),
    (1e307 * np.random.default_rng(0).standard_normal(64), 'absurd scale'),    # 1e±30 work: test_blind_plumbing
    (1e-310 * np.random.default_rng(0).standard_normal(64), 'absurd scale'),
])
def test_bad_input_one_line_errors(bad, match):
    m = _model()
    with pytest.raises(ValueError, match=match) as info:
        denoise_signal(bad, m)
    assert '\n' not in str(info.value)


def test_predict_checks_finite_and_scale():
    m = _model()
    x = torch.randn(1, 1, 64)
    x[0, 0, 5] = float('nan')
    with pytest.raises(ValueError, match='NaN or Inf'):
        m.predict(x)
    with pytest.raises(ValueError, match='absurd scale'):
        m.predict(1e38 * torch.linspace(-1, 1, 64).reshape(1, 1, 64))   # beyond float32 maximum / 16


def test_predict_equals_the_forward_pass_chunk_by_chunk(monkeypatch):
    """predict computes σ̂ once for its checks, its chunks and its warning: the values of the model called on each
    chunk (to rounding: the network's convolutions may round differently for another batch size), one
    noise_sigma call over the whole batch, and a signal with σ̂ = 0 still flagged and returned unchanged."""
    import pdeblocks.models.blind as blind
    m = _model().eval()
    _, f = _noisy(n=200)
    x = torch.stack([f.float(), 3.0 * f.float() + 1.0, torch.full((200,), 2.0), -f.float()])[:, None]
    with torch.no_grad():
        ref = torch.cat([m(x[i:i + 3]) for i in (0, 3)])
    calls = []
    original = blind.noise_sigma
    monkeypatch.setattr(blind, 'noise_sigma', lambda t, spectral=False: calls.append(t.shape[0]) or original(t, spectral))
    with pytest.warns(UserWarning, match=r'signal\(s\) \[2\]'):
        out = m.predict(x, chunk_samples=600)
    assert torch.allclose(out, ref, rtol=0, atol=1e-5) and torch.equal(out[2], x[2])
    assert calls == [4]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_median_last_is_torch_median(dtype):
    """median_last (numpy's introselect on CPU) gives torch.median's value: the lower median for even lengths, ties,
    a row with NaN gives NaN, strided views; with autograd it is torch's median (the gradient reaches the median)."""
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 4093, 4096):
        x = torch.randn(5, 1, n, generator=g, dtype=torch.float64).round(decimals=1).to(dtype)   # ties
        if n > 2:
            x[3, 0, n // 3] = float('nan')
        ref = x.median(dim=-1, keepdim=True).values
        out = median_last(x)
        assert out.shape == ref.shape and out.dtype == dtype
        assert torch.equal(out.nan_to_num(7.0), ref.nan_to_num(7.0)) and bool(out[3].isnan().all()) == (n > 2)
    y = torch.randn(6, 40, generator=g, dtype=dtype)[:, ::3]
    assert torch.equal(median_last(y), y.median(dim=-1, keepdim=True).values)
    inf = torch.tensor([[float('inf'), -float('inf'), 1.0, 3.0, 2.0]], dtype=dtype)     # its sum is NaN, no sample is
    assert torch.equal(median_last(inf), torch.tensor([[2.0]], dtype=dtype))
    z = torch.randn(3, 9, dtype=dtype, requires_grad=True)
    median_last(z).sum().backward()
    assert torch.equal(z.grad.sum(-1), torch.ones(3, dtype=dtype))


def test_save_and_load_round_trip(tmp_path):
    m = _model('fed')
    m.save_pretrained(tmp_path / 'blind')
    loaded = load_folder(tmp_path / 'blind')
    assert isinstance(loaded, BlindDenoiser1D)
    _, f = _noisy()
    with torch.no_grad():
        assert torch.allclose(loaded(f.float()[None, None]), m(f.float()[None, None]), atol=1e-6)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match='scheme'):
        BlindDenoiser1D(scheme='spectral')
    with pytest.raises(ValueError, match='stability'):
        BlindDenoiser1D(stability='lipschitz')
    with pytest.raises(ValueError, match=r"scheme 'fed' has none \(expected scheme='explicit', got 'fed'\)"):
        BlindDenoiser1D(scheme='fed', stability='retracted')
    for bad in (dict(refine_cycles=-1), dict(refine_cycles=1, refine_steps=0), dict(refine_cycles=1, refine_channels=0)):
        with pytest.raises(ValueError, match='refine_cycles ≥ 0, refine_steps ≥ 1 and refine_channels ≥ 1'):
            BlindDenoiser1D(scheme='explicit', **bad)


def test_refinement_stage_is_certified_and_norm_stable():
    """The full-resolution stage: a FEDCycle that certify() reports, ‖stage(u)‖ ≤ ‖u‖ with huge weights and
    fluxes changed between passes, and its free twin one free step repeated cycles·steps times."""
    from pdeblocks import certify
    from pdeblocks.layers.fed import FEDCycle
    from pdeblocks.models.blind import RepeatedStep
    m = BlindDenoiser1D(scheme='explicit', channels=4, hidden_channels=4, blocks=2, refine_cycles=2, refine_steps=5,
                        refine_channels=3).eval()
    assert isinstance(m.refine, FEDCycle) and m.refine.steps == 5
    last = certify(m).blocks[-1]
    assert (last.path, last.block, last.guarantee.startswith('‖f(u)‖ ≤ ‖u‖')) == ('refine', 'FEDCycle', True)
    g = torch.Generator().manual_seed(1)
    for trial in range(3):
        with torch.no_grad():
            m.refine.weight.copy_(1e3 * torch.randn(m.refine.weight.shape, generator=g))
            for p in m.refine.flux.parameters():
                p.copy_(10.0 * torch.rand(p.shape, generator=g))
            u = 100.0 * torch.randn(2, 1, 300, generator=g)
            assert float(m.refine(u).norm()) <= float(u.norm()) * (1 + 1e-5), trial
    free = BlindDenoiser1D(scheme='explicit', stability='none', channels=4, hidden_channels=4, blocks=2,
                           refine_cycles=2, refine_steps=5)
    assert isinstance(free.refine, RepeatedStep) and free.refine.repeats == 10
    assert BlindDenoiser1D(scheme='explicit', channels=4, hidden_channels=4, blocks=2).refine is None


def test_log_relative_mse_counts_every_signal_in_db():
    """Outputs removing half and three quarters of their noise: relative errors ¼ and 1/16, so the log loss is
    (ln ¼ + ln 1/16)/2 = −3 ln 2 (a 6 and a 12 dB gain count alike per dB); only for denoising."""
    from pdeblocks.train.recipes import RECIPES, Recipe, register_recipe
    from pdeblocks.train.trainer import training_loss
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 1, 256, generator=g)
    noise = torch.randn(2, 1, 256, generator=g) * torch.tensor([0.05, 0.2]).reshape(2, 1, 1)
    out = clean + torch.tensor([0.5, 0.25]).reshape(2, 1, 1) * noise
    rec = Recipe(name='l', task='denoise', architecture='blind_denoiser_1d', loss='log_relative_mse')
    assert float(training_loss(rec, out, clean + noise, clean)) == pytest.approx(-3 * math.log(2), rel=1e-6)
    with pytest.raises(ValueError, match='loss must be one of'):
        register_recipe(Recipe(name='bad-log', task='diffusion', architecture='denoiser_1d', loss='log_relative_mse'))
    assert 'bad-log' not in RECIPES


def test_general_training_resumes_exactly(tmp_path, monkeypatch):
    """4 steps straight = 2 steps, stop, resume for 2 more (same weights, same Adam state); the resumed run
    draws the batches of steps 2 and 3 only."""
    import pdeblocks.data.families as families
    from pdeblocks.data.families import FAMILIES
    from pdeblocks.train.recipes import RECIPES, Recipe, register_recipe
    from pdeblocks.train.trainer import load_checkpoint, train
    name = 'test-general-tiny'
    register_recipe(Recipe(name=name, task='denoise', architecture='blind_denoiser_1d',
                           model_kwargs=dict(scheme='explicit', scale=4, channels=4, hidden_channels=4, blocks=2),
                           seed=3, steps=4, batch_size=2, length=64, warmup=1, checkpoint_every=2, data='families', kinds=FAMILIES,
                           sigma_min=0.005, sigma_max=0.3, loss='relative_mse'))
    try:
        train(name, str(tmp_path / 'straight'), evaluate=False, progress=False)
        train(name, str(tmp_path / 'split'), steps=2, evaluate=False, progress=False)
        drawn = []
        original = families.training_batch
        monkeypatch.setattr(families, 'training_batch', lambda *a, **k: drawn.append(a[3]) or original(*a, **k))
        train(name, str(tmp_path / 'split'), resume=True, evaluate=False, progress=False)
        assert drawn == [2, 3]
        models = []
        for run in ('straight', 'split'):
            m = BlindDenoiser1D(**RECIPES[name].model_kwargs)
            opt = torch.optim.Adam(m.parameters())
            state = load_checkpoint(tmp_path / run, m, opt)
            assert state['step'] == 4
            models.append(m)
        for (k, p), q in zip(models[0].state_dict().items(), models[1].state_dict().values()):
            assert torch.allclose(p, q, atol=1e-6), k
        assert (tmp_path / 'split' / 'model' / 'model.safetensors').is_file()
    finally:
        RECIPES.pop(name, None)


TINY_GENERAL = dict(scheme='explicit', scale=4, channels=4, hidden_channels=4, blocks=2)


def test_fine_tune_starts_from_its_source_trains_only_its_stages_and_draws_new_data(tmp_path, monkeypatch, capsys):
    """A recipe with start_from / data_offset / trainable, run by `pdeblocks train`: the source's tensors arrive
    bit for bit and stay there (frozen), the new stage trains, the batches are those of steps offset + 0, 1, and
    eval.json names the new tensors; --start-from replaces the source, and a scratch recipe refuses it."""
    import pdeblocks.data.families as families
    from pdeblocks.cli import main
    from pdeblocks.data.families import FAMILIES
    from pdeblocks.train.recipes import RECIPES, Recipe, register_recipe
    common = dict(task='denoise', architecture='blind_denoiser_1d', seed=5, steps=2, batch_size=2, length=64, warmup=1,
                  checkpoint_every=2, data='families', kinds=FAMILIES, sigma_min=0.01, sigma_max=0.3,
                  loss='relative_mse')
    register_recipe(Recipe(name='test-ft-base', model_kwargs=TINY_GENERAL, **common))
    register_recipe(Recipe(name='test-ft-tail', model_kwargs=dict(TINY_GENERAL, tail_steps=1), start_from='nowhere',
                           data_offset=100, trainable=('tail',), **common))
    register_recipe(Recipe(name='test-ft-bad', model_kwargs=TINY_GENERAL, start_from='nowhere', trainable=('nope',),
                           **common))
    try:
        assert main(['train', 'test-ft-base', '--out', str(tmp_path / 'base'), '--no-eval']) == 0
        base = load_folder(tmp_path / 'base' / 'model').state_dict()
        drawn = []
        original = families.training_batch
        monkeypatch.setattr(families, 'training_batch', lambda *a, **k: drawn.append(a[3]) or original(*a, **k))
        capsys.readouterr()
        assert main(['train', 'test-ft-tail', '--out', str(tmp_path / 'tail'), '--no-eval', '--log-every', '1',
                     '--start-from', str(tmp_path / 'base' / 'model')]) == 0
        assert drawn == [100, 101]
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{')]
        assert [d['step'] for d in lines] == [1, 2]
        tuned = load_folder(tmp_path / 'tail' / 'model')
        state = tuned.state_dict()
        torch.manual_seed(5)
        fresh = BlindDenoiser1D(**dict(TINY_GENERAL, tail_steps=1)).state_dict()
        for k, v in base.items():   # copied and frozen (B, the stored norm bound, is a cache, not a weight)
            assert k.endswith('_extra_state') or torch.equal(state[k], v), k
        tail_keys = sorted(k for k in state if k.startswith('tail.'))
        assert tail_keys and not set(tail_keys) & set(base)
        assert any(not torch.equal(state[k], fresh[k]) for k in tail_keys if state[k].is_floating_point())
        ev = json.loads((tmp_path / 'tail' / 'eval.json').read_text())
        assert ev['fine_tuned_from'] == dict(source=str(tmp_path / 'base' / 'model'), new=tail_keys, data_offset=100)
        assert ev['trained_parameters'] == sum(p.numel() for p in tuned.tail.parameters())
        assert ev['parameters'] == sum(p.numel() for p in tuned.parameters())
        assert main(['train', 'test-ft-base', '--out', str(tmp_path / 'x'), '--start-from', str(tmp_path)]) == 2
        assert 'trains from scratch' in capsys.readouterr().err
        assert main(['train', 'test-ft-tail', '--out', str(tmp_path / 'x'), '--no-eval']) == 2   # its source: 'nowhere'
        assert "fine-tunes the saved model in nowhere, which does not exist" in capsys.readouterr().err
        assert not (tmp_path / 'x').exists()   # refused before anything is written
        assert main(['train', 'test-ft-bad', '--out', str(tmp_path / 'y'), '--start-from',
                     str(tmp_path / 'base' / 'model')]) == 2
        err = capsys.readouterr().err
        assert "['nope']" in err and "['net']" in err
    finally:
        for name in ('test-ft-base', 'test-ft-tail', 'test-ft-bad'):
            RECIPES.pop(name, None)


@pytest.mark.parametrize('fields, match', [
    (dict(data='somewhere'), 'data must be one of'),
    (dict(data='families', kinds=('blocks',)), 'kinds must be a non-empty subset'),
    (dict(data='families', task='diffusion', loss='mse'), "'families' for denoising only"),
    (dict(restart=('tail.',)), 'needs a start_from folder'),
    (dict(data_offset=-1), 'data_offset must be ≥ 0'),
])
def test_bad_recipes_are_refused(fields, match):
    from pdeblocks.train.recipes import RECIPES, Recipe, register_recipe
    with pytest.raises(ValueError, match=match):
        register_recipe(Recipe(**dict(dict(name='test-bad', task='denoise', architecture='blind_denoiser_1d'), **fields)))
    assert 'test-bad' not in RECIPES


def test_a_checkpoint_saved_before_a_recipe_field_existed_still_resumes():
    """A saved recipe dict without the fine-tune fields is the recipe with them at their defaults, one with a field
    removed since is the recipe without it; any other difference is another recipe."""
    from pdeblocks.train.recipes import get_recipe, same_recipe
    recipe = get_recipe('denoiser-1d')
    saved = {k: v for k, v in recipe.to_dict().items() if k not in ('data', 'start_from', 'data_offset', 'trainable',
                                                                     'restart')}
    assert same_recipe(saved, recipe)
    assert not same_recipe(dict(saved, steps=recipe.steps + 1), recipe)
    general = get_recipe('denoiser-1d-general-irls4')
    assert not same_recipe({k: v for k, v in general.to_dict().items() if k != 'trainable'}, general)
    # a field Recipe no longer has (published, which nothing read; in every run saved before its removal) is ignored
    assert same_recipe(dict(general.to_dict(), published=False), general)
    run = Path(__file__).resolve().parent.parent / 'runs' / 'denoiser-1d-general-bayes-joint' / 'eval.json'
    saved_run = json.loads(run.read_text())['recipe']
    assert saved_run['published'] is False and same_recipe(saved_run, get_recipe('denoiser-1d-general-bayes-joint'))


def _tail_model(**kw):
    torch.manual_seed(0)
    return BlindDenoiser1D(scheme='explicit', channels=4, hidden_channels=4, blocks=2, tail_steps=2, **kw).eval()


def test_implicit_tail_is_certified_unconditionally():
    """certify() lists the tail with norm factor 1 in every pass; with huge gate and edge weights (τ at its clamp,
    random diffusivity knots) and adversarial inputs the tail keeps ‖v⁺‖ ≤ ‖v‖ and min v ≤ v⁺ ≤ max v."""
    from pdeblocks import certify
    m = _tail_model(tail_edges=4)
    last = certify(m).blocks[-1]
    assert (last.path, last.block, last.mode, last.norm_factor, last.passes) == \
        ('tail', 'ImplicitTail1D', 'implicit-tridiagonal', 1.0, 'all')
    assert last.guarantee.startswith('‖f(u)‖ ≤ ‖u‖ and min u ≤ f(u) ≤ max u for every τ ≥ 0')
    tail = m.tail
    g = torch.Generator().manual_seed(2)
    for trial in range(6):
        kind = trial % 3                     # 0: τ ≈ 0 (e⁻³⁰); 1: τ huge, all weights random; 2: τ huge, g = 1
        with torch.no_grad():
            for p in tail.parameters():
                p.copy_(1e3 * torch.randn(p.shape, generator=g))
            if kind == 0:
                tail.gate[2].weight[0] = 0.0
            if kind == 2:
                tail.diffusivity.knot_logits.fill_(30.0)
                tail.edges[2].weight.zero_()
                tail.edges[2].bias.fill_(30.0)
                tail.gate[2].weight[1] = 0.0
                tail.gate[2].bias[1] = 5.0                 # λ = e¹⁰: every difference is small
            tail.gate[2].bias[0] = -1e3 if kind == 0 else 1e3
            v = 50.0 * torch.randn(3, 1, 257, generator=g).cumsum(-1) + 1e3 * torch.randn(3, 1, 257, generator=g)
            u = v + torch.randn(3, 1, 257, generator=g)
            out = tail(v, u)
            tau, _ = tail.parameters_per_signal(v, u)
        assert torch.isfinite(out).all()
        scale = float(v.abs().max())
        assert (out.flatten(1).norm(dim=1) <= v.flatten(1).norm(dim=1) * (1 + 1e-6)).all(), trial
        assert float((out - v.amax(-1, keepdim=True)).max()) <= 1e-6 * scale
        assert float((v.amin(-1, keepdim=True) - out).max()) <= 1e-6 * scale
        if kind == 2:
            assert float(tau.min()) > 1e3
            assert float((out - v).abs().max()) > 1.0           # a long diffusion did happen
        elif kind == 0:
            assert float(tau.max()) < 1e-12
            assert torch.allclose(out, v, atol=1e-6 * scale)     # τ → 0: the identity


def test_implicit_tail_gradients_reach_the_gate_and_the_diffusivity():
    """One backward pass through the exact solves gives finite, nonzero gradients to the gate, the diffusivity
    knots and the network, so the tail's τ and λ are learned with the rest."""
    m = _tail_model().train()
    _, f = _noisy()
    m(f.float()[None, None].repeat(2, 1, 1)).pow(2).sum().backward()
    for name in ('tail.gate.2.weight', 'tail.gate.2.bias', 'tail.diffusivity.knot_logits'):
        grad = dict(m.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and float(grad.abs().max()) > 0, name


def test_implicit_tail_equivariance_save_load_and_old_configs(tmp_path):
    """The blind wrapper stays affine-equivariant with the tail; config and weights round-trip; a config
    without the tail's arguments (the published model's) still loads, without a tail."""
    m = _tail_model(tail_edges=4)
    with torch.no_grad():
        m.tail.gate[2].bias[0] = 0.5                     # τ = 0.1·e⁴: the tail does act
    _, f = _noisy()
    f = f.float()[None, None]
    with torch.no_grad():
        base = m(f)
        for a, b in ((1e-3, 0.0), (1e3, 5000.0), (10.0, -3.0)):
            assert float(((m(a * f + b) - b) / a - base).abs().max()) < 5e-5 * (abs(b) / a + 1.0), (a, b)
    m.save_pretrained(tmp_path / 'tail')
    loaded = load_folder(tmp_path / 'tail')
    assert loaded.config()['tail_steps'] == 2 and loaded.config()['tail_edges'] == 4
    with torch.no_grad():
        assert torch.allclose(loaded(f), base, atol=1e-6)
    old = load_folder('pdeblocks/pretrained/denoiser-1d-v2')     # revision v2: a config written before the tails
    assert 'tail_steps' not in json.loads(open('pdeblocks/pretrained/denoiser-1d-v2/config.json').read())
    assert old.tail is None
    with pytest.raises(ValueError, match='tail_steps ≥ 0'):
        BlindDenoiser1D(scheme='explicit', tail_steps=-1)


def test_implicit_tail_with_the_input_mixed_in_stays_within_both():
    """``tail_mix``: the first right-hand side is (1 − β)v + βu, so with huge random weights the output stays within
    max(‖v‖, ‖u‖) and between min(v, u) and max(v, u); β starts at 0.02 for every signal."""
    m = _tail_model(tail_edges=4, tail_mix=True)
    tail = m.tail
    g = torch.Generator().manual_seed(5)
    v = 30.0 * torch.randn(4, 1, 200, generator=g)
    u = v + 100.0 * torch.randn(4, 1, 200, generator=g)
    with torch.no_grad():
        assert torch.allclose(tail.mixture(v, u), torch.full((4, 1, 1), 0.02))
        for _ in range(3):
            for p in tail.parameters():
                p.copy_(1e3 * torch.randn(p.shape, generator=g))
            out = tail(v, u)
            assert (out.flatten(1).norm(dim=1) <= torch.maximum(v.flatten(1).norm(dim=1), u.flatten(1).norm(dim=1))
                    * (1 + 1e-6)).all()
            hi = torch.maximum(v.amax(-1, keepdim=True), u.amax(-1, keepdim=True))
            lo = torch.minimum(v.amin(-1, keepdim=True), u.amin(-1, keepdim=True))
            assert float((out - hi).max()) <= 1e-4 and float((lo - out).max()) <= 1e-4


def test_step_init_starts_the_explicit_steps_at_that_fraction_of_the_stable_limit():
    """step_init reaches every explicit step of N (blocks added to a trained network start near the identity);
    the default is the skeleton's 0.5, so configs saved before the argument existed build the same model."""
    from pdeblocks.layers.symmetric import SymmetricResidual
    for init in (0.05, 0.5):
        m = BlindDenoiser1D(scheme='explicit', scale=4, channels=4, hidden_channels=4, blocks=3, step_init=init)
        fractions = [float(b.step_fraction()) for b in m.modules() if isinstance(b, SymmetricResidual)]
        assert len(fractions) == 3 and fractions == pytest.approx([init] * 3, rel=1e-6)
    default = BlindDenoiser1D(scheme='explicit', scale=4, channels=4, hidden_channels=4, blocks=1)
    assert float(default.net.blocks[0].step_fraction()) == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r'in \(0, 1\); got 1.5'):
        BlindDenoiser1D(scheme='explicit', scale=4, channels=4, hidden_channels=4, blocks=1, step_init=1.5)
    with pytest.raises(ValueError, match=r"scheme 'fed' has its own .*got step_init=0.05"):
        BlindDenoiser1D(scheme='fed', scale=4, channels=4, hidden_channels=4, blocks=1, step_init=0.05)


def test_fine_tune_chain_reads_the_sources_back_to_a_bundled_model():
    """v3's recipe names the run it fine-tunes; the chain ends at revision v2's bundled weights."""
    from pdeblocks.train.recipes import Recipe, fine_tune_chain, get_recipe, source_recipe
    chain = fine_tune_chain('denoiser-1d-general-irls4-joint-long')
    assert chain == ['denoiser-1d-general-implicit', 'denoiser-1d-general-irls4', 'denoiser-1d-general-irls4-joint',
                     'denoiser-1d-general-irls4-joint-long']
    assert get_recipe(chain[0]).start_from == 'pdeblocks/pretrained/denoiser-1d-v2'
    assert source_recipe(get_recipe('denoiser-1d')) is None and fine_tune_chain('denoiser-1d') == ['denoiser-1d']
    assert source_recipe(Recipe(name='x', task='denoise', architecture='a', start_from='runs/no-such-recipe/model')) is None


def test_a_branched_chain_shares_its_trunk_and_continues_its_data():
    """register_chain(trunk=…): the stages after -irls4-joint start from the trunk's run, on the batches after it,
    and the trunk's own recipes are not re-registered (its later stages keep their sources)."""
    from pdeblocks.train.general import register_chain
    from pdeblocks.train.recipes import fine_tune_chain, get_recipe
    chain = fine_tune_chain('denoiser-1d-general-s4-long-residual')
    assert chain == ['denoiser-1d-general-s4', 'denoiser-1d-general-s4-implicit', 'denoiser-1d-general-s4-irls4',
                     'denoiser-1d-general-s4-irls4-joint', 'denoiser-1d-general-s4-long-irls4-joint-long',
                     'denoiser-1d-general-s4-long-bayes', 'denoiser-1d-general-s4-long-bayes-joint',
                     'denoiser-1d-general-s4-long-residual']
    steps = [get_recipe(n).steps for n in chain]
    assert steps == [30000, 4000, 3000, 2500, 6000, 3000, 2500, 0]
    assert [get_recipe(n).data_offset for n in chain] == [0, 30000, 34000, 37000, 39500, 45500, 48500, 51000]
    assert get_recipe('denoiser-1d-general-s4-bayes').start_from == 'runs/denoiser-1d-general-s4-irls4-joint/model'
    free = get_recipe('denoiser-1d-general-s4-long-irls4-joint-long-free')
    assert free.start_from == 'runs/denoiser-1d-general-s4-irls4-joint-free/model'
    assert free.model_kwargs['stability'] == 'none'
    assert fine_tune_chain('denoiser-1d-general-s4-long-residual-free')[3] == 'denoiser-1d-general-s4-irls4-joint-free'
    with pytest.raises(ValueError, match=r"trunk 'no-such-chain' has no stage 'no-such-chain-irls4-joint'"):
        register_chain('x', {}, joint_long=10, trunk='no-such-chain')


def test_retracted_denoiser_keeps_the_norm_of_every_step_with_huge_free_steps(tmp_path):
    """stability='retracted': the free twin's parameters, every explicit step certified ‖f(z)‖ ≤ ‖z‖ (certify), and
    the promise kept with τ of both signs far past the limit and weights ×100, changed between passes; the model
    round-trips through its folder; its recipe chain registers no free twin of its own."""
    from pdeblocks import certify
    from pdeblocks.hub import load_folder
    from pdeblocks.train.recipes import RECIPES, fine_tune_chain, get_recipe
    kw = dict(scheme='explicit', scale=4, channels=4, hidden_channels=4, blocks=3)
    m = BlindDenoiser1D(stability='retracted', **kw).eval()
    assert m.parameter_count() == BlindDenoiser1D(stability='none', **kw).parameter_count()
    report = certify(m)
    assert [b.mode for b in report.blocks] == ['retracted'] * 3 and report.composed_norm_factor == 1.0
    assert m.certificate_schemes()['stability'] == 'retracted'
    torch.manual_seed(0)
    f = torch.randn(4, 1, 300)
    norms = []
    hooks = [b.register_forward_hook(lambda mod, i, o: norms.append((i[0].flatten(1).norm(dim=1),
                                                                     o.flatten(1).norm(dim=1)))) for b in m.net.blocks]
    for tau in (-20.0, 50.0, 1e4):
        with torch.no_grad():
            for b in m.net.blocks:
                b.weight.mul_(100 if tau == 50.0 else 1)
                b.step_param.fill_(tau)
            out = m(f)
        assert torch.isfinite(out).all()
    for h in hooks:
        h.remove()
    assert len(norms) == 9 and all((o <= i * (1 + 1e-6)).all() for i, o in norms)
    assert any((o > i * 0.999).any() for i, o in norms)   # steps the retraction held at ‖z‖
    m.save_pretrained(tmp_path / 'r')
    loaded = load_folder(tmp_path / 'r')
    assert loaded.net.blocks[0].stability == 'retracted'
    assert torch.equal(loaded(f), m(f))
    chain = fine_tune_chain('denoiser-1d-general-s4r-residual')
    assert all(get_recipe(n).model_kwargs['stability'] == 'retracted' for n in chain)
    assert not any(f'{n}-free' in RECIPES for n in chain)
    from pdeblocks.train.general import register_chain
    with pytest.raises(ValueError, match=r"stability 'euclidean' or 'retracted' .*got 'none'"):
        register_chain('x', {}, stability='none')


def test_dilated_steps_act_on_each_polyphase_component_and_keep_the_certificate(tmp_path):
    """dilation=2: every second explicit step acts on the even and the odd positions of the unshuffled grid on their
    own (equal to the undilated step applied to z[..., 0::2] and z[..., 1::2], computed here slice by slice), is
    certified as its block, keeps ‖step(z)‖ ≤ ‖z‖ with huge weights changed between passes, and the model keeps
    its lengths, equivariance and config; bad dilations are named."""
    from pdeblocks import certify
    from pdeblocks.layers import Dilated1D, SymmetricResidual
    torch.manual_seed(0)
    m = BlindDenoiser1D(scheme='explicit', scale=4, channels=6, hidden_channels=6, blocks=4, dilation=2).double()
    kinds = [type(b).__name__ for b in m.net.blocks]
    assert kinds == ['SymmetricResidual', 'Dilated1D', 'SymmetricResidual', 'Dilated1D']
    assert [b.path for b in certify(m).blocks[:4]] == ['net.blocks.0', 'net.blocks.1.block', 'net.blocks.2',
                                                       'net.blocks.3.block']
    step = m.net.blocks[1]
    g = torch.Generator().manual_seed(3)
    for trial in range(3):
        with torch.no_grad():
            step.block.weight.copy_(1e3 * torch.randn(step.block.weight.shape, generator=g, dtype=torch.float64))
            for p in step.block.flux.parameters():
                p.copy_(10 * torch.rand(p.shape, generator=g, dtype=torch.float64))
            z = 100 * torch.randn(3, 6, 40, generator=g, dtype=torch.float64)
            out = step(z)
            assert torch.equal(out[..., 0::2], step.block(z[..., 0::2].contiguous()))
            assert torch.equal(out[..., 1::2], step.block(z[..., 1::2].contiguous()))
            assert float(out.norm()) <= float(z.norm()) * (1 + 1e-12), trial
    assert m.net.min_length == 40 and m.min_length == 16
    for n in (16, 41, 203):
        f = torch.randn(2, 1, n, dtype=torch.float64).cumsum(-1)
        with torch.no_grad():
            out = m(f)
            assert out.shape == f.shape and bool(torch.isfinite(out).all())
            torch.testing.assert_close(m(1e3 * f - 7), 1e3 * out - 7, rtol=0, atol=1e-9 * 1e3 * float(f.abs().max()))
    fresh = BlindDenoiser1D(scheme='explicit', scale=4, channels=6, hidden_channels=6, blocks=4, dilation=2).eval()
    fresh.save_pretrained(tmp_path / 'm')
    loaded = load_folder(tmp_path / 'm')
    assert isinstance(loaded.net.blocks[3], Dilated1D) and loaded.net.blocks[3].dilation == 2
    f = torch.randn(2, 1, 100).cumsum(-1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(f), fresh(f), rtol=0, atol=0)
    assert isinstance(BlindDenoiser1D(scheme='explicit', blocks=2).net.blocks[1], SymmetricResidual)
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match='dilation must be an int ≥ 1'):
            Dilated1D(step.block, bad)
    for bad in (0, 3, 6, True, 2.0):
        with pytest.raises(ValueError, match=rf'dilation must be a power of two \(the largest of the cycle 1, 2, 4, …\), '
                                             rf'got {bad!r}'):
            BlindDenoiser1D(scheme='explicit', dilation=bad)
    cycle = BlindDenoiser1D(scheme='explicit', scale=4, blocks=7, dilation=8).net
    assert [getattr(b, 'dilation', 1) for b in cycle.blocks] == [1, 2, 4, 8, 1, 2, 4]
    assert cycle.min_length == 4 * 5 * 8
    with pytest.raises(ValueError, match=r"scheme 'fed' has none \(expected scheme='explicit' or dilation=1, got "
                                         r"dilation=2\)"):
        BlindDenoiser1D(scheme='fed', dilation=2)


@pytest.mark.parametrize('n', [2, 5, 16])
def test_reflect_pad_reflects_again_where_one_reflection_is_too_short(n):
    """reflect_pad equals numpy's whole-sample reflection (np.pad mode 'reflect', which reflects again for pads
    longer than the signal) for pads up to ten times the length, and F.pad where one reflection suffices."""
    from pdeblocks.models.blind import reflect_pad
    x = np.random.default_rng(n).normal(size=(2, 1, n))
    for p in (0, 1, n - 1, n, 3 * n + 1, 10 * n):
        expected = np.pad(x, ((0, 0), (0, 0), (p, p)), mode='reflect')
        got = reflect_pad(torch.from_numpy(x), p)
        assert got.shape[-1] == n + 2 * p and np.array_equal(got.numpy(), expected), p
    with pytest.raises(ValueError, match='reflecting needs at least 2 samples, got 1'):
        reflect_pad(torch.zeros(1, 1, 1), 3)


def test_a_network_longer_than_the_signal_still_takes_the_minimum_length():
    """The cycle 1, 2, 4, 8 on the 4× grid needs 160 samples for its network; the blind model still takes 16 (the
    reflection repeats) and denoises them finitely and equivariantly."""
    m = BlindDenoiser1D(scheme='explicit', scale=4, channels=6, hidden_channels=6, blocks=4, dilation=8).double()
    assert m.inner_min_length == 160 and m.min_length == 16
    _, f = _noisy(n=16)
    f = f[None, None]
    with torch.no_grad():
        out = m(f)
        assert out.shape == f.shape and bool(torch.isfinite(out).all())
        torch.testing.assert_close(m(1e3 * f + 5), 1e3 * out + 5, rtol=0, atol=1e-9)
        assert float((out - f).abs().max()) > 0
