"""The ``pdeblocks`` command line: file formats, bad input (exit 2, one line, no partial output), train/resume,
torchrun smoke run, publish --dry-run, demo."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pdeblocks.cli import main
from pdeblocks.data import make_signals
from pdeblocks.hub import from_pretrained, list_pretrained
from pdeblocks.signal_io import read_signals

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, '-m', 'pdeblocks.cli', *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=kw.pop('timeout', 120), cwd=kw.pop('cwd', None))


@pytest.fixture(scope='module')
def signals():
    return make_signals('piecewise_constant', 'test', 3, 256, 0.1).noisy.astype(np.float64)


def _write(path: Path, arr: np.ndarray):
    if path.suffix == '.npy':
        np.save(path, arr)
    else:
        np.savetxt(path, np.atleast_2d(arr), delimiter=',' if path.suffix == '.csv' else ' ', fmt='%.9g')


@pytest.mark.parametrize('suffix', ['.npy', '.csv', '.txt'])
@pytest.mark.parametrize('many', [False, True])
def test_denoise_formats(tmp_path, signals, suffix, many, capsys):
    arr = signals if many else signals[0]
    src, dst = tmp_path / f'in{suffix}', tmp_path / f'out{suffix}'
    _write(src, arr)
    assert main(['denoise', str(src), str(dst)]) == 0
    out = read_signals(dst)
    assert out.shape == np.atleast_2d(arr).shape
    from pdeblocks.models.blind import denoise_signals  # the default model is the general blind one
    expect = np.stack([r.denoised for r in denoise_signals(np.atleast_2d(arr), from_pretrained('denoiser-1d'))])
    np.testing.assert_allclose(out, expect, atol=2e-6)
    assert 'denoised' in capsys.readouterr().out


def test_single_column_is_one_signal(tmp_path, signals):
    src, dst = tmp_path / 'in.csv', tmp_path / 'out.csv'
    np.savetxt(src, signals[0][:, None], delimiter=',')
    assert main(['denoise', str(src), str(dst)]) == 0
    assert read_signals(dst).shape == (1, 256)


def test_denoise_plot_and_sigma(tmp_path, signals):
    src, dst, png = tmp_path / 'in.npy', tmp_path / 'out.npy', tmp_path / 'p.png'
    np.save(src, signals)
    assert main(['denoise', str(src), str(dst), '--sigma', '0.1', '--plot', str(png)]) == 0
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


BAD_INPUTS = {
    'empty.csv': '',
    'blank.txt': '\n\n   \n',
    'ragged.csv': '0.1,0.2,0.3\n0.1,0.2\n',
    'text.csv': '0.1,abc,0.3\n',
    'nan.txt': '0.1 nan 0.3 0.4\n',
    'inf.csv': '0.1,inf,0.3\n',
    'short.csv': '0.1,0.2,0.3\n',
}


@pytest.mark.parametrize('name', sorted(BAD_INPUTS))
def test_bad_input_files(tmp_path, name, capsys):
    src, dst = tmp_path / name, tmp_path / ('out' + Path(name).suffix)
    src.write_text(BAD_INPUTS[name])
    assert main(['denoise', str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('pdeblocks: error: ') and err.count('\n') == 1 and 'Traceback' not in err
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize('args,match', [
    (['--model', 'no-such-model'], 'cannot load model'),
    (['--model', 'diffusion-1d-perona-malik'], 'is a diffusion model'),
    (['--sigma', '-1'], '--sigma must be a positive number'),
])
def test_bad_options(tmp_path, signals, args, match, capsys):
    src, dst = tmp_path / 'in.npy', tmp_path / 'out.npy'
    np.save(src, signals)
    assert main(['denoise', str(src), str(dst), *args]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count('\n') == 1 and not dst.exists()


def test_bad_npy_and_extensions(tmp_path, capsys):
    obj = tmp_path / 'obj.npy'
    np.save(obj, np.array([{'a': 1}], dtype=object), allow_pickle=True)
    assert main(['denoise', str(obj), str(tmp_path / 'o.npy')]) == 2
    assert main(['denoise', str(tmp_path / 'missing.csv'), str(tmp_path / 'o.csv')]) == 2
    good = tmp_path / 'g.npy'
    np.save(good, np.zeros((2, 64)))
    assert main(['denoise', str(good), str(tmp_path / 'o.json')]) == 2
    np.save(good, np.zeros((2, 3, 64)))
    assert main(['denoise', str(good), str(tmp_path / 'o.npy')]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(ln.startswith('pdeblocks: error: ') for ln in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['g.npy', 'obj.npy']


def test_entry_point_error_is_one_line_exit_2(tmp_path):
    src = tmp_path / 'bad.csv'
    src.write_text('1,2\n3\n')
    proc = run_cli('denoise', src, tmp_path / 'out.csv')
    assert proc.returncode == 2 and proc.stdout == ''
    assert proc.stderr.count('\n') == 1 and 'ragged rows' in proc.stderr and 'Traceback' not in proc.stderr


def test_diffuse(tmp_path, signals, capsys):
    src, dst = tmp_path / 'in.txt', tmp_path / 'out.txt'
    _write(src, signals)
    assert main(['diffuse', str(src), str(dst), '--time', '10']) == 0
    out = read_signals(dst)
    model = from_pretrained('diffusion-1d-perona-malik')
    with torch.no_grad():
        expect = model(torch.from_numpy(signals).float()[:, None])[:, 0].double().numpy()
    np.testing.assert_allclose(out, expect, atol=2e-6)
    np.testing.assert_allclose(out.sum(-1), signals.sum(-1), rtol=1e-4)  # Neumann: mass kept
    # twice the model's time: applied twice
    assert main(['diffuse', str(src), str(dst), '--time', '20']) == 0
    assert main(['diffuse', str(src), str(tmp_path / 'x.txt'), '--time', '7']) == 2
    assert 'positive multiple' in capsys.readouterr().err and not (tmp_path / 'x.txt').exists()
    assert main(['diffuse', str(src), str(dst), '--time', '7', '--method', 'fed']) == 0
    assert read_signals(dst).shape == signals.shape


def test_demo_prints_table_and_writes_png(tmp_path, capsys):
    """The default (blind, general) model: one row per training family against tuned TV; the specialist: the
    piecewise-constant table with the Bayes limit and the oracle."""
    from pdeblocks.data.families import FAMILIES
    png = tmp_path / 'demo.png'
    assert main(['demo', '--plot', str(png), '--count', '2']) == 0
    out = capsys.readouterr().out
    assert '| total variation (tuned) | denoiser-1d |' in out
    assert all(f"| {fam.replace('_', ' ')} |" in out for fam in FAMILIES)
    assert png.read_bytes()[:4] == b'\x89PNG'
    png.unlink()
    assert main(['demo', '--model', 'denoiser-1d-piecewise-constant', '--plot', str(png), '--count', '2']) == 0
    out = capsys.readouterr().out
    assert '| total variation' in out and '| oracle' in out and '| denoiser-1d-piecewise-constant' in out
    assert '| Bayes limit' in out and png.read_bytes()[:4] == b'\x89PNG'
    assert main(['demo', '--count', '0', '--plot', str(tmp_path / 'no.png')]) == 2
    assert 'count' in capsys.readouterr().err and not (tmp_path / 'no.png').exists()


def test_train_resume_and_checkpoint(tmp_path):
    out = tmp_path / 'run'
    assert main(['train', 'smoke-test', '--out', str(out), '--steps', '2', '--no-eval']) == 0
    state = json.loads((out / 'checkpoint.json').read_text())
    assert state['step'] == 2 and not list(out.glob('*.tmp*'))
    assert main(['train', 'smoke-test', '--out', str(out), '--steps', '4', '--eval-count', '2', '--resume']) == 0
    assert json.loads((out / 'checkpoint.json').read_text())['step'] == 4
    res = json.loads((out / 'eval.json').read_text())
    assert res['steps'] == 4 and res['threads'] == torch.get_num_threads()
    errors = res['evaluation']['errors']
    assert set(errors) >= {'model', 'fed_cycle', 'explicit_same_steps', 'implicit_same_steps'}
    assert all(0 <= v['mean'] <= v['max'] for v in errors.values())
    m = from_pretrained(out / 'model')
    assert m.architecture == 'diffusion_1d'


def test_resume_equals_uninterrupted(tmp_path):
    """2 + 2 steps with --resume give bitwise the weights of 4 uninterrupted steps (deterministic data)."""
    a, b = tmp_path / 'a', tmp_path / 'b'
    common = ['train', 'smoke-test', '--no-eval']
    assert main([*common, '--out', str(a), '--steps', '4']) == 0
    assert main([*common, '--out', str(b), '--steps', '2']) == 0
    assert main([*common, '--out', str(b), '--steps', '4', '--resume']) == 0
    ma, mb = from_pretrained(a / 'model'), from_pretrained(b / 'model')
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_checkpoint_keeps_the_bound_anchors(tmp_path):
    """A resumed run continues the cached norm bounds B(W₀) + Σ‖W − W₀‖ from the same W₀ as an
    uninterrupted run (a fresh anchor at the checkpoint would give a different, looser B, hence τ)."""
    from pdeblocks.layers.symmetric import SymmetricResidual
    from pdeblocks.models.denoise1d import Denoiser1D
    from pdeblocks.train.trainer import load_checkpoint, save_checkpoint

    def nudge(model, seed):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1e-5 * torch.randn(p.shape, generator=g))

    def bounds(model):
        return [float(m.norm_bound()) for m in model.modules() if isinstance(m, SymmetricResidual)]

    torch.manual_seed(0)
    make = lambda: Denoiser1D(scale=2, channels=4, hidden_channels=4, blocks=2, kernel_size=3, knots=4)  # noqa: E731
    a = make()
    bounds(a)                       # anchors W₀
    nudge(a, 1)
    bounds(a)                       # perturbation bounds, anchors kept
    save_checkpoint(tmp_path, a, torch.optim.Adam(a.parameters()), dict(step=1))
    b = make()
    load_checkpoint(tmp_path, b, torch.optim.Adam(b.parameters()))
    nudge(a, 2)
    nudge(b, 2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert bounds(a) == bounds(b)
    fresh_anchor = make()
    fresh_anchor.load_state_dict(b.state_dict())   # B in use, but W₀ at these weights: not the same bounds
    nudge(fresh_anchor, 3)
    nudge(b, 3)
    assert bounds(fresh_anchor) != bounds(b)


def test_unknown_recipe(capsys):
    assert main(['train', 'no-such-recipe']) == 2
    assert 'unknown recipe' in capsys.readouterr().err


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / 'ddp'
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                           '-m', 'pdeblocks.cli', 'train', 'smoke-test', '--out', str(out),
                           '--steps', '3', '--no-eval'], env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / 'eval.json').read_text())
    assert res['world_size'] == 2 and res['steps'] == 3
    from_pretrained(out / 'model')


def test_denoiser_evaluation_reports_the_bayes_limit_and_the_card_shows_it():
    from pdeblocks.cards import UNREACHABLE_TARGET, _denoise_body, read_eval, target_status
    from pdeblocks.train.evaluate import baseline_psnr
    row = baseline_psnr('piecewise_constant', 0.1, 4, length=256)
    assert row['noisy'] < row['tv'] < row['bayes'] < row['oracle']
    ev = read_eval('denoiser-1d-piecewise-constant')
    for r in ev['evaluation']['table']['piecewise_constant'].values():
        r.pop('bayes', None)    # evaluations written before the column: the card shows it only when present
    assert 'Bayes limit |' not in _denoise_body('denoiser-1d-piecewise-constant', ev)
    del ev['comparison']        # no comparison block: the status line still starts after a blank line
    status = target_status(ev['evaluation']['table']['piecewise_constant']['0.1'], ev['recipe']['steps'])
    assert '|\n\n' + status in _denoise_body('denoiser-1d-piecewise-constant', ev)
    for sigma, r in ev['evaluation']['table']['piecewise_constant'].items():
        r['bayes'] = r['tv'] + 3.25 + float(sigma)
    card = _denoise_body('denoiser-1d-piecewise-constant', ev)
    assert '| denoiser-1d-piecewise-constant | Bayes limit | oracle |' in card
    r = ev['evaluation']['table']['piecewise_constant']['0.1']
    assert f"| {r['bayes']:.2f} | {r['oracle']:.2f} |" in card
    assert f"{r['bayes'] - r['model']:.2f} dB" in card and '+3.35 dB' in card and UNREACHABLE_TARGET in card
    r['bayes'] = r['tv'] + 5.0   # a limit above the target: the card must not call the target impossible
    card = _denoise_body('denoiser-1d-piecewise-constant', ev)
    assert '+5.00 dB' in card and UNREACHABLE_TARGET not in card


def test_publish_dry_run(tmp_path, capsys):
    out = tmp_path / 'hub'
    assert main(['publish', 'denoiser-1d', '--repo-id', 'pdeblocks/denoiser-1d', '--dry-run', '--out', str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ['README.md', 'config.json', 'eval.json', 'examples.png', 'flux.png', 'model.safetensors']
    card = (out / 'README.md').read_text()
    assert card.startswith('---\n') and 'library_name: pdeblocks' in card and 'model-index' in card
    ev = json.loads((out / 'eval.json').read_text())
    # the model-index numbers are the evaluation's, not typed by hand
    psnr = ev['evaluation']['table']['piecewise_constant']['0.1']['model']
    assert f'value: {round(psnr, 2)}' in card
    from_pretrained(out)
    assert main(['publish', 'nope', '--repo-id', 'a/b', '--dry-run', '--out', str(tmp_path / 'x')]) == 2


def test_publish_out_folder_must_be_empty_or_an_assembly(tmp_path):
    from pdeblocks.publish import assemble
    (tmp_path / 'notes.txt').write_text('mine')
    with pytest.raises(ValueError, match=r"holds other files \['notes.txt'\]"):
        assemble('denoiser-1d', str(tmp_path))
    assert (tmp_path / 'notes.txt').read_text() == 'mine'


@pytest.mark.slow
def test_publish_from_an_installed_wheel(tmp_path):
    """`pdeblocks publish NAME --dry-run` from a wheel installed outside any checkout, run from an unrelated
    folder: it assembles in a new temporary folder and writes nothing into the installed package."""
    import shutil
    import sysconfig
    src = tmp_path / 'src'
    shutil.copytree(ROOT / 'pdeblocks', src / 'pdeblocks', ignore=shutil.ignore_patterns('__pycache__'))
    for f in ('pyproject.toml', 'README.md'):
        shutil.copy2(ROOT / f, src / f)
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '--no-input']
    subprocess.run(pip + ['wheel', '--no-deps', '--no-build-isolation', '-w', str(tmp_path / 'dist'), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel, = (tmp_path / 'dist').glob('pdeblocks-*.whl')
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True, timeout=120)
    python = venv / 'bin' / 'python'
    subprocess.run(pip + ['--python', str(python), 'install', '--no-deps', str(wheel)], check=True,
                   capture_output=True, timeout=300)
    site = Path(subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / 'dependencies.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')   # torch, timm, … of this venv
    before = sorted(p.relative_to(site) for p in site.rglob('*') if '__pycache__' not in p.parts)
    cwd = tmp_path / 'elsewhere'
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env.update(OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    where = subprocess.run([str(python), '-c', 'import pdeblocks; print(pdeblocks.__file__)'], cwd=cwd, env=env,
                           check=True, capture_output=True, text=True).stdout.strip()
    assert Path(where).is_relative_to(site)
    proc = subprocess.run([str(venv / 'bin' / 'pdeblocks'), 'publish', 'denoiser-1d', '--repo-id',
                           'pdeblocks/denoiser-1d', '--dry-run'], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    folder = Path(proc.stdout.split('assembled ', 1)[1].split(':', 1)[0])
    assert sorted(p.name for p in folder.iterdir()) == ['README.md', 'config.json', 'eval.json', 'examples.png',
                                                        'flux.png', 'model.safetensors']
    assert not folder.is_relative_to(site) and not list(cwd.iterdir())
    assert sorted(p.relative_to(site) for p in site.rglob('*') if '__pycache__' not in p.parts) == before
    shutil.rmtree(folder)


def test_list(capsys):
    """Each bundled model with the recipe that trained it (from its eval.json) and its revision of the Hub repo."""
    assert main(['list']) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(list_pretrained())
    assert lines['denoiser-1d'].split(None, 1)[1] == ('recipe denoiser-1d-general-s4r-residual, pdeblocks/denoiser-1d '
                                                      'revision v6 (current)')
    assert lines['denoiser-1d-piecewise-constant'].split(None, 1)[1] == \
        'recipe denoiser-1d, pdeblocks/denoiser-1d revision v1'
    assert lines['denoiser-1d-multigrid'].split(None, 1)[1] == 'recipe denoiser-1d-multigrid'


def test_train_notes_a_recipe_named_like_another_bundled_model(monkeypatch, capsys):
    """`pdeblocks train denoiser-1d` trains the specialist (the recipe of revision v1): it says so, and names the
    recipe of the bundled denoiser-1d; a recipe that trains its namesake gets no note."""
    import pdeblocks.cli as cli
    monkeypatch.setattr(cli, 'train', lambda *a, **k: dict(steps=0, final_loss=None))
    assert main(['train', 'denoiser-1d', '--no-eval']) == 0
    err = capsys.readouterr().err
    assert err == ("note: recipe 'denoiser-1d' trains the bundled 'denoiser-1d-piecewise-constant'; the bundled "
                   "'denoiser-1d' comes from recipe 'denoiser-1d-general-s4r-residual'\n")
    assert main(['train', 'denoiser-1d-multigrid', '--no-eval']) == 0
    assert capsys.readouterr().err == ''


def test_certify_unknown_model(capsys):
    assert main(['certify', 'no_such_model']) == 2
    err = capsys.readouterr().err
    assert err.startswith('pdeblocks: error: ') and err.count('\n') == 1


def test_certify_prints_the_report(capsys):
    assert main(['certify', 'pde_resnet_tiny']) == 0
    out = capsys.readouterr().out
    assert 'SymmetricResidual' in out and 'stages.3.entry' in out


def test_card_says_where_the_perona_malik_tuning_ended_at_its_grid():
    from pdeblocks.cards import _denoise_body, pm_grid_edges, read_eval
    from pdeblocks.classical import PM_CONTRASTS
    ev = read_eval('denoiser-1d-piecewise-constant')
    rows = ev['evaluation']['table']['piecewise_constant']
    rows['0.1']['tuned']['pm_contrast'] = min(PM_CONTRASTS)
    for s in ('0.05', '0.2'):
        rows[s]['tuned']['pm_contrast'] = 0.01
    assert pm_grid_edges(ev['evaluation']) == [('piecewise_constant', '0.1')]
    assert 'piecewise constant signals at σ = 0.1' in _denoise_body('denoiser-1d-piecewise-constant', ev)
    rows['0.1']['tuned']['pm_contrast'] = 0.01
    assert pm_grid_edges(ev['evaluation']) == []
    assert 'signals at σ = ' not in _denoise_body('denoiser-1d-piecewise-constant', ev)
