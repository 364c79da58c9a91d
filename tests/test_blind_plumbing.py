"""The blind denoiser's plumbing: scale-freeness of ``denoise_signal`` in any units, bad input (library and CLI:
one line, exit 2, no partial files), ``pdeblocks denoise`` printing σ̂, and the Hub round trip offline."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pdeblocks.cli import main
from pdeblocks.hub import architectures, from_pretrained, load_folder
from pdeblocks.models.blind import BlindDenoiser1D, check_finite_scale, denoise_signal, denoise_signals, scale_limits
from pdeblocks.models.denoise1d import Denoiser1D
from pdeblocks.signal_io import read_signals

ROOT = Path(__file__).resolve().parent.parent
SCALES = (1e-3, 1.0, 1e3, 1e6)
OFFSETS = (-3.0, 0.0, 5000.0)


def _perturbed(m, seed=0):
    """Leave the identity start: random weights that change the input."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def tiny_blind(scheme='fed', seed=0, **extra):
    torch.manual_seed(seed)
    kw = dict(channels=4, levels=2, steps=1) if scheme == 'multigrid' else \
        dict(scale=4, channels=4, hidden_channels=4, blocks=2, steps=2)
    return _perturbed(BlindDenoiser1D(scheme=scheme, **kw, **extra), seed)


def trace(n=512, sigma=0.1, seed=0):
    """A step, a sine and a parabola (unit range) plus white noise of standard deviation ``sigma``."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, n)
    return (t > 0.3) * 0.8 + 0.3 * np.sin(6 * t) + 0.5 * t ** 2 + sigma * rng.standard_normal(n)


def equivariance_error(denoise, f, a, b):
    """max |(D(a·f + b) − b)/a − D(f)| relative to max |D(f) − median f| (the denoised signal's own size)."""
    base = denoise(f)
    moved = (denoise(a * f + b) - b) / a
    return float(np.abs(moved - base).max() / np.abs(base - np.median(f)).max())


# ---------------------------------------------------------------- scale-freeness
def test_denoise_signal_is_affine_equivariant_and_the_test_can_fail():
    """denoise(a·f + b) = a·denoise(f) + b within rounding for a ∈ {1e-3, 1, 1e3, 1e6}, b ∈ {−3, 0, 5000}.

    Rounding: the affine map is exact to float64 (1e-16 · (|b|/a + |f|) relative), the network runs in float32,
    so the normalised input may round one float32 ulp differently: 1e-5 of the output's size is ~100 ulps.
    The same check on the non-blind Denoiser1D (units fixed at training) fails by orders of magnitude."""
    m = tiny_blind('fed')
    f = trace()
    blind = lambda x: denoise_signal(x, m).denoised   # noqa: E731
    assert np.abs(blind(f) - f).max() > 1e-2          # the network does change the trace
    for a in SCALES:
        for b in OFFSETS:
            assert equivariance_error(blind, f, a, b) < 1e-5, (a, b)

    plain = _perturbed(Denoiser1D(scale=4, channels=4, hidden_channels=4, blocks=2))

    def fixed_units(x):
        with torch.no_grad():
            return plain(torch.from_numpy(x).float()[None, None])[0, 0].double().numpy()
    worst = max(equivariance_error(fixed_units, f, a, b) for a in SCALES for b in OFFSETS)
    assert worst > 1e-2


@pytest.mark.filterwarnings('ignore:ImplicitBlock')   # 2 Chebyshev iterations: residual above tol, no matter here
@pytest.mark.parametrize('scheme', ['explicit', 'implicit', 'multigrid'])
def test_other_schemes_are_affine_equivariant(scheme):
    m = tiny_blind(scheme)
    f = trace()
    blind = lambda x: denoise_signal(x, m).denoised   # noqa: E731
    for a, b in ((1e-3, 5000.0), (1e6, -3.0)):
        assert equivariance_error(blind, f, a, b) < 1e-5, (a, b)


@pytest.mark.parametrize('extra', [{}, dict(spectral_noise=True, residual_threshold=8.0)], ids=['sigma_d', 'spectral'])
def test_absurd_scales_work_exactly_in_float64(extra):
    """1e-30 and 1e30 (and 1e-200 with an offset, 1e-300 and 1e300) are exact: the normalisation is scale-free in
    float64, the spectral σ̂ too (its squares would underflow below 1e-154 without its own scaling)."""
    m = tiny_blind(**extra)
    f = trace()
    blind = lambda x: denoise_signal(x, m).denoised   # noqa: E731
    for a, b in ((1e-30, 0.0), (1e30, 0.0), (1e30, -3e30), (1e-200, 1e-199), (1e-300, 0.0), (1e300, 0.0)):
        assert equivariance_error(blind, f, a, b) < 1e-5, (a, b)
    sigma_1 = denoise_signal(f, m).noise_sigma
    assert 0.05 < sigma_1 < 0.2
    for a in (1e-30, 1e-300, 1e300):
        assert abs(denoise_signal(a * f, m).noise_sigma / (a * sigma_1) - 1) < 1e-12, a


def test_scale_limits_are_the_dtypes():
    assert scale_limits(torch.float64) == (torch.finfo(torch.float64).tiny, torch.finfo(torch.float64).max / 16)
    assert scale_limits(torch.float32)[1] < 3e37
    check_finite_scale(torch.from_numpy(1e-30 * trace())[None, None].float())   # fine in float32 too
    with pytest.raises(ValueError, match=r'absurd scale: max \|f\|'):
        check_finite_scale(torch.from_numpy(3e37 * trace())[None, None].float())


@pytest.mark.parametrize('bad, match', [
    (1e307 * trace(), r'absurd scale: max \|f\| = 1\.\d+e\+307 exceeds'),
    (1e-310 * trace(), r'absurd scale: the noise estimate σ̂ = .* below .*smallest normal float64'),
    (np.ones((64, 1)), r'1-D signal.*\(64, 1\)'),
    (np.arange(15.0), 'has 15 samples; the denoiser needs at least 16'),
    (np.array([1.0 + 1j] * 32), 'real numbers'),
])
def test_bad_input_one_line(bad, match):
    with pytest.raises(ValueError, match=match) as info:
        denoise_signal(bad, tiny_blind())
    assert '\n' not in str(info.value)


def test_denoise_signals_batch_equals_single_and_names_bad_rows():
    m = tiny_blind()
    rows = np.stack([trace(seed=0), np.full(512, 2.5), 1e3 * trace(seed=1) + 7])
    batch = denoise_signals(rows, m)
    for row, res in zip(rows, batch):
        one = denoise_signal(row, m)
        # batching changes the float32 network's summation order: ~1e-7 of the signal's size
        np.testing.assert_allclose(res.denoised, one.denoised, rtol=0, atol=1e-5 * np.ptp(row))
        assert res.noise_sigma == one.noise_sigma and res.note == one.note
    assert np.array_equal(batch[1].denoised, rows[1]) and 'constant' in batch[1].note
    rows[2, 100] = np.nan
    with pytest.raises(ValueError, match=r'^signal 3 of 3: .*NaN or Inf'):
        denoise_signals(rows, m)
    with pytest.raises(ValueError, match=r'\[count, length\].*\(512,\)'):
        denoise_signals(rows[0], m)
    with pytest.raises(ValueError, match='needs a BlindDenoiser1D, got Denoiser1D'):
        denoise_signals(rows, Denoiser1D(scale=2, channels=2, hidden_channels=2, blocks=1))


# ---------------------------------------------------------------- a known noise level
def test_given_sigma_replaces_the_estimate_equivariantly():
    """With σ given the model runs on (f − c)/σ: the model's own σ̂ given back reproduces the blind output, another σ
    changes it (more smoothing for a larger σ), and D(a·f + b; a·σ) = a·D(f; σ) + b; the result reports σ."""
    m = tiny_blind('explicit')
    f = trace(512, 0.1)
    blind = denoise_signal(f, m)
    same = denoise_signal(f, m, sigma=blind.noise_sigma)
    np.testing.assert_array_equal(same.denoised, blind.denoised)
    assert same.noise_sigma == blind.noise_sigma and 'given noise σ' in same.note and 'not estimated' in same.note
    small, large = (denoise_signal(f, m, sigma=s).denoised for s in (0.05, 0.4))
    assert np.abs(small - f).mean() < np.abs(blind.denoised - f).mean() < np.abs(large - f).mean()
    for a, b in ((1e-3, -3.0), (1e3, 5000.0)):
        moved = (denoise_signal(a * f + b, m, sigma=0.3 * a).denoised - b) / a
        np.testing.assert_allclose(moved, denoise_signal(f, m, sigma=0.3).denoised, rtol=0, atol=1e-6)
    rows = np.stack([f, 2 * f + 1, np.full(512, 3.25)])
    batch = denoise_signals(rows, m, sigma=[0.1, 0.2, 0.5])
    np.testing.assert_allclose(batch[1].denoised, 2 * batch[0].denoised + 1, rtol=0, atol=1e-6)
    assert np.array_equal(batch[2].denoised, rows[2]) and batch[2].note == 'constant signal: returned unchanged'
    assert [r.noise_sigma for r in denoise_signals(rows[:2], m, sigma=0.2)] == [0.2, 0.2]
    x = torch.from_numpy(rows).float()[:, None]
    out = m.predict(x, sigma=torch.tensor([0.1, 0.2, 0.5]))[:, 0].numpy()
    np.testing.assert_allclose(out[:2], np.stack([batch[0].denoised, batch[1].denoised]), rtol=0, atol=1e-5)
    assert np.array_equal(out[2], x[2, 0].numpy())


def test_given_sigma_helps_where_the_estimate_assumes_the_wrong_noise():
    """The bundled model on Laplacian and AR(1) noise of standard deviation 0.1: σ̂ reads low (it assumes white
    Gaussian noise), and the true σ given raises the mean PSNR over 8 piecewise-smooth test signals by more than
    0.3 dB (measured: 0.56 and 2.05)."""
    from pdeblocks.data.families import make_family_signals
    from pdeblocks.data.signals import psnr
    m = from_pretrained('denoiser-1d')
    for noise in ('laplace', 'ar1'):
        s = make_family_signals('piecewise_smooth', 'test', 8, 1024, 0.1, noise=noise)
        blind = denoise_signals(s.noisy, m)
        given = denoise_signals(s.noisy, m, sigma=0.1)
        assert np.median([r.noise_sigma for r in blind]) < 0.095, noise     # 0.091 (Laplace), 0.063 (AR(1))
        gain = np.mean([psnr(g.denoised, c) - psnr(b.denoised, c) for g, b, c in zip(given, blind, s.clean)])
        assert gain > 0.3, (noise, gain)


@pytest.mark.parametrize('sigma, match', [
    (0.0, r'finite and > 0, got 0\.0$'), (-1.0, r'finite and > 0, got -1\.0$'), (float('nan'), 'got nan'),
    (float('inf'), 'got inf'), ('x', r"a number > 0 or one per signal, got 'x'"),
    ([0.1, 0.2], r'one number or one per signal \(1\), got shape \(2,\)'),
    (1e-320, 'absurd scale: the given noise level σ = 1e-320 is below'),
])
def test_given_sigma_bad_values_one_line(sigma, match):
    with pytest.raises(ValueError, match=match):
        denoise_signal(trace(), tiny_blind(), sigma=sigma)


def test_given_sigma_per_row_names_the_bad_row():
    rows = np.stack([trace(), trace(seed=1)])
    with pytest.raises(ValueError, match=r'finite and > 0, got 0\.0 for signal 2 of 2'):
        denoise_signals(rows, tiny_blind(), sigma=[0.1, 0.0])
    with pytest.raises(ValueError, match=r'one per signal \(2\), got shape \(3,\)'):
        denoise_signals(rows, tiny_blind(), sigma=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match='absurd scale: the given noise level σ = 1e-40 is below 1.18e-38'):
        tiny_blind().predict(torch.from_numpy(rows).float()[:, None], sigma=1e-40)


# ---------------------------------------------------------------- pdeblocks denoise with a blind model
@pytest.fixture(scope='module')
def blind_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp('models') / 'blind'
    tiny_blind('explicit').save_pretrained(folder)
    return folder


def test_cli_blind_prints_sigma_per_signal_in_its_units(tmp_path, blind_folder, capsys):
    """Three traces in millivolts around 5000 with σ = 50: σ̂ printed per signal (≈ 50, the noise put in),
    the file equals denoise_signal's output, the constant row comes back unchanged and is named."""
    rows = np.stack([1e3 * trace(4096, 0.05, seed=s) + 5000 for s in range(2)] + [np.full(4096, 3.25)])
    src, dst = tmp_path / 'mv.npy', tmp_path / 'out.npy'
    np.save(src, rows)
    assert main(['denoise', str(src), str(dst), '--model', str(blind_folder)]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert '(blind)' in lines[0] and "in the signals' units" in lines[1]
    printed = [float(ln.split('σ̂ = ')[1]) for ln in lines[2:4]]
    assert all(abs(s / 50.0 - 1) < 0.1 for s in printed), printed
    assert lines[4] == '  signal 3: constant signal: σ̂ = 0, returned unchanged'
    m = load_folder(blind_folder)
    written = np.load(dst)
    for row, got in zip(rows, written):
        np.testing.assert_allclose(got, denoise_signal(row, m).denoised, rtol=0, atol=1e-5 * np.ptp(row))
    assert np.array_equal(written[2], rows[2])


def test_cli_blind_one_signal_and_summary(tmp_path, blind_folder, capsys):
    src, dst = tmp_path / 'one.csv', tmp_path / 'one_out.csv'
    np.savetxt(src, 1e-30 * trace()[None], delimiter=',', fmt='%.17g')
    assert main(['denoise', str(src), str(dst), '--model', str(blind_folder)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[1].startswith('estimated noise σ̂ = ') and "(in the signal's units)" in out[1]
    assert 5e-32 < float(out[1].split('= ')[1].split()[0]) < 2e-31
    assert read_signals(dst).shape == (1, 512)
    many = np.stack([(k + 1) * trace(seed=k) for k in range(11)] + [np.zeros(512)])
    src, dst = tmp_path / 'many.npy', tmp_path / 'many_out.npy'
    np.save(src, many)
    assert main(['denoise', str(src), str(dst), '--model', str(blind_folder)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and 'over 11 signals' in out[1] and 'returned unchanged: [12]' in out[1]
    lo, hi = (float(v) for v in out[1].split('range [')[1].split(']')[0].split(', '))
    assert 0.05 < lo < 0.2 and 0.5 < hi < 2.2          # σ = 0.1·(k + 1) for k = 0 … 10


def _bad_cli(tmp_path, name, arr, capsys, *extra):
    src, dst = tmp_path / name, tmp_path / ('out' + Path(name).suffix)
    np.save(src, arr)
    code = main(['denoise', str(src), str(dst), *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('pdeblocks: error: ') and err.count('\n') == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]      # no output, no temporary
    return err


@pytest.mark.parametrize('arr, match', [
    (trace()[:, None], r'in\.npy holds an array of shape \(512, 1\), read as 512 signal\(s\) of length 1'),
    (np.stack([trace(), 1e307 * trace()]), r'in\.npy: signal 2 of 2: absurd scale'),
    (np.stack([trace(), 1e-310 * trace()]), r'signal 2 of 2: absurd scale: the noise estimate'),
    (trace()[:12], 'at least 16 samples per signal'),
    (np.r_[trace()[:100], np.inf, trace()[:100]], 'NaN or Inf'),
])
def test_cli_blind_bad_input_exit_2_no_files(tmp_path, blind_folder, capsys, arr, match):
    err = _bad_cli(tmp_path, 'in.npy', arr, capsys, '--model', str(blind_folder))
    assert len(re.findall(match, err)) == 1, err


def test_cli_blind_uses_a_given_sigma(tmp_path, blind_folder, capsys):
    """``--sigma`` reaches a blind model: the file equals denoise_signals(…, sigma=…) and differs from the blind run,
    and the report says the σ was given; a bad --sigma is exit 2 with nothing written."""
    rows = np.stack([1e3 * trace(1024, 0.05, seed=s) + 5000 for s in range(2)] + [np.full(1024, 7.5)])
    src, dst = tmp_path / 'mv.npy', tmp_path / 'out.npy'
    np.save(src, rows)
    assert main(['denoise', str(src), str(dst), '--model', str(blind_folder), '--sigma', '80']) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[1] == ("given noise σ = 80 (in the signals' units; not estimated) for all 3 signals; 1 constant "
                      "signal(s) returned unchanged: [3]"), out
    m = load_folder(blind_folder)
    expected = np.stack([r.denoised for r in denoise_signals(rows, m, sigma=80.0)])
    np.testing.assert_allclose(np.load(dst), expected, rtol=0, atol=1e-9 * np.ptp(rows))
    assert np.abs(np.load(dst) - np.stack([r.denoised for r in denoise_signals(rows, m)])).max() > 1.0
    dst.unlink()
    err = _bad_cli(tmp_path, 'mv.npy', rows, capsys, '--model', str(blind_folder), '--sigma', '0')
    assert '--sigma must be a positive number, got 0.0' in err


def test_cli_non_blind_unchanged_but_non_finite_output_is_an_error(tmp_path, capsys, monkeypatch):
    """A bundled non-blind model keeps its path; should it return NaN, nothing is written and exit is 2."""
    src, dst = tmp_path / 'in.npy', tmp_path / 'out.npy'
    f = trace(256)
    np.save(src, f)
    specialist = ('--model', 'denoiser-1d-piecewise-constant')
    assert main(['denoise', str(src), str(dst), *specialist]) == 0
    assert 'noise level estimated σ ≈' in capsys.readouterr().out
    m = from_pretrained('denoiser-1d-piecewise-constant')
    with torch.no_grad():
        np.testing.assert_allclose(np.load(dst), m(torch.from_numpy(f).float()[None, None])[0, 0].double().numpy(),
                                   atol=2e-6)
    dst.unlink()
    monkeypatch.setattr(Denoiser1D, 'predict', lambda self, x: x * float('nan'))
    err = _bad_cli(tmp_path, 'in.npy', f, capsys, *specialist)
    assert 'produced NaN or Inf' in err and 'not scale-free' in err


def test_default_model_is_the_bundled_general_blind_denoiser(tmp_path, capsys):
    """``denoise_signal(x)`` and ``pdeblocks denoise IN OUT`` without a model use the bundled denoiser-1d, the
    general blind model: a trace in millivolts around 5000 (σ = 50) is denoised in its units, σ̂ ≈ 50 printed,
    and the file equals denoise_signal with that model given explicitly."""
    general = from_pretrained('denoiser-1d')
    assert type(general) is BlindDenoiser1D
    f = 1e3 * trace(1024, 0.05, seed=3) + 5000.0
    res = denoise_signal(f)
    np.testing.assert_array_equal(res.denoised, denoise_signal(f, general).denoised)
    assert abs(res.noise_sigma / 50.0 - 1) < 0.1
    clean = 1e3 * trace(1024, 0.0, seed=3) + 5000.0
    assert np.sqrt(np.mean((res.denoised - clean) ** 2)) < 0.5 * 50.0      # at least halves the noise
    src, dst = tmp_path / 'mv.csv', tmp_path / 'out.csv'
    np.savetxt(src, f[None], delimiter=',', fmt='%.17g')
    assert main(['denoise', str(src), str(dst)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert 'with denoiser-1d (blind)' in out[0] and out[1].startswith('estimated noise σ̂ = ')
    assert abs(float(out[1].split('= ')[1].split()[0]) / 50.0 - 1) < 0.1
    np.testing.assert_allclose(read_signals(dst)[0], res.denoised, rtol=0, atol=1e-9 * 5000)


# ---------------------------------------------------------------- the Hub: registry and offline round trip
OFFLINE_LOAD = textwrap.dedent('''
    import json, sys
    import numpy as np, torch
    import pdeblocks
    from pdeblocks.hub import resolve
    repo, signal_path = sys.argv[1], sys.argv[2]
    f = torch.from_numpy(np.load(signal_path))[None, None]
    out = {}
    for how, load in (('function', pdeblocks.from_pretrained),
                      ('class', lambda r: __import__('pdeblocks.models.blind', fromlist=['x']).BlindDenoiser1D
                       .from_pretrained(r))):
        m = load(repo)
        with torch.no_grad():
            out[how] = dict(type=type(m).__name__, source=resolve(repo)[2], config=m.config(),
                            denoised=m(f)[0, 0].tolist())
    print(json.dumps(out))
''')


@pytest.mark.parametrize('scheme', ['fed', 'multigrid'])
def test_hub_round_trip_offline(tmp_path, scheme):
    """save_pretrained → a Hub cache snapshot → from_pretrained in a fresh process with HF_HUB_OFFLINE=1:
    the same class, config and outputs (bitwise); safetensors only; a bad config or missing key is refused.
    The fresh process loads through ``pdeblocks.from_pretrained`` before anything imports models.blind:
    ``import pdeblocks`` alone must put blind_denoiser_1d in the hub's one registry."""
    assert architectures()['blind_denoiser_1d'] is BlindDenoiser1D
    from safetensors.torch import load_file, save_file
    from test_hub import fill_hub_cache
    m = tiny_blind(scheme)
    folder, cache = tmp_path / 'saved', tmp_path / 'hub'
    m.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir() if p.suffix in ('.json', '.safetensors', '.bin', '.pt')) == \
        ['config.json', 'model.safetensors']
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == 'blind_denoiser_1d' and config['scheme'] == scheme
    fill_hub_cache(cache, 'someone/blind-denoiser', folder, 'd' * 40)
    f = trace()
    np.save(tmp_path / 'f.npy', f)
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE='1', PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    env.pop('HF_HOME', None)
    proc = subprocess.run([sys.executable, '-c', OFFLINE_LOAD, 'someone/blind-denoiser', str(tmp_path / 'f.npy')],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    with torch.no_grad():
        expect = m(torch.from_numpy(f)[None, None])[0, 0].numpy()
    for how in ('function', 'class'):
        assert res[how]['type'] == 'BlindDenoiser1D' and res[how]['source'] == 'hub'
        assert res[how]['config'] == config
        assert np.array_equal(np.array(res[how]['denoised']), expect), how
    # strict: an unknown config key and a missing tensor are refused
    bad = tmp_path / 'bad'
    bad.mkdir()
    (bad / 'config.json').write_text(json.dumps(dict(config, sigma=0.1)))
    (bad / 'model.safetensors').write_bytes((folder / 'model.safetensors').read_bytes())
    with pytest.raises(ValueError, match=r"unknown keys \['sigma'\]"):
        from_pretrained(bad)
    (bad / 'config.json').write_text(json.dumps(config))
    tensors = load_file(str(folder / 'model.safetensors'))
    key = next(k for k in sorted(tensors) if k.endswith('.weight'))
    tensors.pop(key)
    save_file(tensors, str(bad / 'model.safetensors'))
    with pytest.raises(ValueError, match=re.escape(f"missing keys ['{key}']")):
        from_pretrained(bad)


# ---------------------------------------------------------------- AR(1) noise of known correlation
def test_whitening_inverts_and_makes_ar1_noise_white():
    """colour_ar1 undoes whiten_ar1 to rounding for ρ ∈ {−0.9, 0, 0.5, 0.95} (one ρ or one per row); the families'
    AR(1) test noise (ρ = 0.5, standard deviation σ) comes out white (lag-one correlation within 0.03 of 0 over 64 ×
    4096 samples, measured −0.003) with the same standard deviation (within 2 %)."""
    from pdeblocks.data.families import AR1_RHO, add_noise
    from pdeblocks.ops.noise import colour_ar1, whiten_ar1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 300, generator=g, dtype=torch.float64)
    for rho in (-0.9, 0.0, 0.5, 0.95):
        torch.testing.assert_close(colour_ar1(whiten_ar1(x, rho), rho), x, rtol=0, atol=1e-12)
    rows = torch.tensor([-0.9, 0.0, 0.5, 0.95], dtype=torch.float64).reshape(4, 1, 1)
    torch.testing.assert_close(colour_ar1(whiten_ar1(x, rows), rows), x, rtol=0, atol=1e-12)
    assert float((whiten_ar1(x, rows)[1] - x[1]).abs().max()) == 0.0
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(np.stack([add_noise(np.zeros(4096), 0.1, rng, 'ar1') for _ in range(64)]))
    assert abs(float(np.corrcoef(noise[:, :-1].flatten(), noise[:, 1:].flatten())[0, 1]) - AR1_RHO) < 0.03
    white = whiten_ar1(noise, AR1_RHO)
    assert abs(float(np.corrcoef(white[:, :-1].flatten(), white[:, 1:].flatten())[0, 1])) < 0.03
    assert abs(float(white.std()) / 0.1 - 1) < 0.02


def test_correlation_given_whitens_denoises_and_colours_back():
    """correlation=ρ runs D on the whitened, centred signal and colours the result back: equal to that composition
    computed here (to the network's float32 rounding), ρ = 0 equal to the plain call, affine-equivariant, per-row ρ, constant rows unchanged, the note
    names ρ."""
    from pdeblocks.ops.noise import colour_ar1, median_last, whiten_ar1
    m = tiny_blind('explicit')
    f = trace(512, 0.1)
    x = torch.from_numpy(f)[None, None]
    c = median_last(x)
    expected = c + colour_ar1(m.predict(whiten_ar1(x - c, 0.5)), 0.5)
    got = denoise_signal(f, m, correlation=0.5)
    np.testing.assert_allclose(got.denoised, expected[0, 0].numpy(), rtol=0, atol=1e-6)   # the network's float32
    assert 'AR(1) noise with ρ = 0.5' in got.note
    np.testing.assert_allclose(denoise_signal(f, m, correlation=0.0).denoised, denoise_signal(f, m).denoised,
                               rtol=0, atol=1e-9)
    assert np.abs(got.denoised - denoise_signal(f, m).denoised).max() > 1e-3
    for a, b in ((1e-3, -3.0), (1e3, 5000.0)):
        moved = (denoise_signal(a * f + b, m, correlation=0.5).denoised - b) / a
        np.testing.assert_allclose(moved, got.denoised, rtol=0, atol=1e-6)
        moved = (denoise_signal(a * f + b, m, sigma=0.2 * a, correlation=0.5).denoised - b) / a
        np.testing.assert_allclose(moved, denoise_signal(f, m, sigma=0.2, correlation=0.5).denoised, rtol=0, atol=1e-6)
    rows = np.stack([f, f, np.full(512, 2.5)])
    batch = denoise_signals(rows, m, correlation=[0.5, 0.0, 0.3])
    np.testing.assert_allclose(batch[0].denoised, got.denoised, rtol=0, atol=1e-6)     # batched float32 convolutions
    np.testing.assert_allclose(batch[1].denoised, denoise_signal(f, m).denoised, rtol=0, atol=1e-6)
    assert np.array_equal(batch[2].denoised, rows[2])


def test_correlation_given_helps_on_ar1_noise():
    """The bundled model on AR(1) noise (ρ = 0.5, σ = 0.1), 8 test signals of two families: ρ given raises the mean
    PSNR over the blind call by more than 2 dB (v6: 3.2 and 9.7; v5: 3.0 and 9.3), and over σ given alone by more
    than 0.3 (v6: 0.47 and 3.9; v5: 0.93 and 5.4)."""
    from pdeblocks.data.families import make_family_signals
    from pdeblocks.data.signals import psnr
    m = from_pretrained('denoiser-1d')
    for fam in ('piecewise_smooth', 'smooth_trend'):
        s = make_family_signals(fam, 'test', 8, 1024, 0.1, noise='ar1')

        def mean_psnr(s=s, **kw):
            return np.mean([psnr(r.denoised, c) for r, c in zip(denoise_signals(s.noisy, m, **kw), s.clean)])

        with_rho = mean_psnr(correlation=0.5)
        assert with_rho > mean_psnr() + 2.0 and with_rho > mean_psnr(sigma=0.1) + 0.3, fam


@pytest.mark.parametrize('rho, match', [
    (1.0, r'in \(−1, 1\), got 1\.0$'), (-1.0, r'got -1\.0$'), (float('nan'), 'got nan'),
    ('x', r"a number in \(−1, 1\) or one per signal, got 'x'"),
    ([0.1, 0.2], r'one number or one per signal \(1\), got shape \(2,\)'),
])
def test_correlation_bad_values_one_line(rho, match):
    with pytest.raises(ValueError, match=match):
        denoise_signal(trace(), tiny_blind(), correlation=rho)


def test_cli_correlation(tmp_path, blind_folder, capsys):
    """``--correlation`` reaches a blind model (the file equals denoise_signals(…, correlation=…), the report names
    ρ); |ρ| ≥ 1, or a model that cannot use it, is exit 2 with nothing written."""
    rows = np.stack([1e3 * trace(1024, 0.05, seed=s) + 5000 for s in range(2)])
    src, dst = tmp_path / 'mv.npy', tmp_path / 'out.npy'
    np.save(src, rows)
    assert main(['denoise', str(src), str(dst), '--model', str(blind_folder), '--correlation', '0.5']) == 0
    out = capsys.readouterr().out
    m = load_folder(blind_folder)
    expected = np.stack([r.denoised for r in denoise_signals(rows, m, correlation=0.5)])
    np.testing.assert_allclose(np.load(dst), expected, rtol=0, atol=1e-9 * np.ptp(rows))
    assert 'σ̂ = ' in out
    dst.unlink()
    src1 = tmp_path / 'one.npy'
    np.save(src1, rows[0])
    assert main(['denoise', str(src1), str(dst), '--model', str(blind_folder), '--correlation', '0.5']) == 0
    assert 'AR(1) noise with ρ = 0.5' in capsys.readouterr().out
    dst.unlink()
    src1.unlink()
    err = _bad_cli(tmp_path, 'mv.npy', rows, capsys, '--model', str(blind_folder), '--correlation', '1')
    assert '--correlation must be in (−1, 1), got 1.0' in err
    err = _bad_cli(tmp_path, 'mv.npy', rows, capsys, '--model', 'denoiser-1d-piecewise-constant', '--correlation', '0.5')
    assert '--correlation needs a blind model' in err and 'is a Denoiser1D' in err
