"""Pretrained loading: validated config.json, strict safetensors, real huggingface_hub resolution offline."""
import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pdeblocks.hub import BUNDLED_DIR, from_pretrained, list_pretrained, load_folder, validate_config
from pdeblocks.models.denoise1d import Denoiser1D, Diffusion1D, StandardResNet1D

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ['denoiser-1d', 'denoiser-1d-multigrid', 'diffusion-1d-perona-malik']


def tiny_denoiser(blocks=1, seed=0):
    torch.manual_seed(seed)
    m = Denoiser1D(scale=2, channels=4, hidden_channels=4, blocks=blocks, kernel_size=3, knots=4)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return m


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize('make', [tiny_denoiser,
                                  lambda: StandardResNet1D(scale=2, channels=4, hidden_channels=4, blocks=2, kernel_size=3),
                                  lambda: Diffusion1D(layers=4, cycles=2)])
def test_save_load_round_trip(tmp_path, make):
    m = make()
    m.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != '.md') == ['config.json', 'model.safetensors']
    cfg = json.loads((tmp_path / 'config.json').read_text())
    assert cfg['architecture'] == m.architecture
    x = torch.rand(3, 1, 97)
    for loaded in (from_pretrained(tmp_path), type(m).from_pretrained(tmp_path)):
        assert type(loaded) is type(m) and not loaded.training
        torch.testing.assert_close(loaded(x), m.eval()(x), rtol=0, atol=0)


def test_fine_tuned_round_trip_is_bitwise(tmp_path):
    """Save/load after optimizer steps reproduces the eval outputs exactly, and a file without the stored
    bounds (as saved by earlier versions) still loads strictly. Under the default training contract the
    eval pass uses the full bound at the current weights, so the legacy file gives the same outputs
    (in the strict mode the stored B(W₀) + drift is what it keeps: tests/test_symmetric.py)."""
    from pdeblocks.layers.symmetric import NORM_BOUND_STATE
    m = tiny_denoiser(blocks=2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    for _ in range(3):
        f = torch.rand(4, 1, 64)
        (m(f + 0.1 * torch.randn_like(f)) - f).square().mean().backward()
        opt.step()
        opt.zero_grad()
    m.eval()
    m.save_pretrained(tmp_path)
    stored = [k for k in load_file(tmp_path / 'model.safetensors') if k.endswith(NORM_BOUND_STATE)]
    assert len(stored) == 2
    x = torch.rand(3, 1, 97)
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(tmp_path)(x), m(x), rtol=0, atol=0)
    path = tmp_path / 'model.safetensors'
    save_file({k: v for k, v in load_file(path).items() if k not in stored}, path)
    legacy = from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(legacy(x), m(x))


def test_class_from_pretrained_checks_architecture(tmp_path):
    tiny_denoiser().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="architecture 'denoiser_1d', not 'diffusion_1d'"):
        Diffusion1D.from_pretrained(tmp_path)


def test_class_path_is_the_mixins_with_strict_hooks(tmp_path):
    """Pretrained1D keeps the mixin's public from_pretrained; its hooks load strictly and refuse arguments."""
    from huggingface_hub import PyTorchModelHubMixin

    from pdeblocks.models.denoise1d import Pretrained1D
    assert Pretrained1D.from_pretrained.__func__ is PyTorchModelHubMixin.from_pretrained.__func__
    tiny_denoiser().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"unexpected arguments \['channels'\]"):
        Denoiser1D.from_pretrained(tmp_path, channels=3)
    config = json.loads((tmp_path / 'config.json').read_text())
    config['channels'] = '4'
    (tmp_path / 'config.json').write_text(json.dumps(config))
    for load in (from_pretrained, Denoiser1D.from_pretrained):   # the mixin decodes with the same coders
        with pytest.raises(ValueError, match="must be an integer, got '4'"):
            load(tmp_path)


def test_one_registry_and_subclass_configs(tmp_path):
    """Every Pretrained1D subclass with an architecture name registers itself; config.json holds the
    outermost constructor's arguments; a name taken by another class is refused."""
    from pdeblocks.hub import ARCHITECTURES, architectures
    from pdeblocks.models.multigrid1d import MultigridDenoiser1D
    assert {'denoiser_1d': Denoiser1D, 'diffusion_1d': Diffusion1D, 'standard_resnet_1d': StandardResNet1D,
            'multigrid_denoiser_1d': MultigridDenoiser1D}.items() <= architectures().items()

    class Narrow1D(Denoiser1D):
        architecture = 'test_narrow_1d'

        def __init__(self, width: int = 3):
            super().__init__(scale=2, channels=width, hidden_channels=width, blocks=1, kernel_size=3, knots=4)
    try:
        assert architectures()['test_narrow_1d'] is Narrow1D
        m = Narrow1D(width=5)
        assert m.config() == {'architecture': 'test_narrow_1d', 'width': 5}
        m.save_pretrained(tmp_path)
        loaded = from_pretrained(tmp_path)
        assert type(loaded) is Narrow1D and loaded.lift.out_channels == 5
        with pytest.raises(ValueError, match="'test_narrow_1d' is already registered"):
            type('Impostor', (Denoiser1D,), {'architecture': 'test_narrow_1d'})
    finally:
        ARCHITECTURES.pop('test_narrow_1d', None)


# ---------------------------------------------------------------- config validation
@pytest.mark.parametrize('config,match', [
    ({'architecture': 'resnet50'}, 'unknown architecture'),
    ({'scale': 2}, "no 'architecture'"),
    ({'architecture': 'denoiser_1d', 'dropout': 0.1}, 'unknown keys'),
    ({'architecture': 'denoiser_1d', 'channels': '32'}, "'channels' must be an integer"),
    ({'architecture': 'denoiser_1d', 'channels': True}, "'channels' must be an integer"),
    ({'architecture': 'denoiser_1d', 'channels': 2.0}, "'channels' must be an integer"),
    ({'architecture': 'denoiser_1d', 'channels': 10 ** 9}, 'integer in'),
    ({'architecture': 'denoiser_1d', 'contrast': float('nan')}, 'finite number'),
    ({'architecture': 'denoiser_1d', 'contrast': 'big'}, 'finite number'),
    ({'architecture': ['denoiser_1d']}, 'must be a string'),
    (['denoiser_1d'], 'JSON object'),
])
def test_invalid_configs_raise(config, match):
    with pytest.raises(ValueError, match=match):
        validate_config(config)


def test_valid_config_accepts_int_for_float():
    cls, kw = validate_config({'architecture': 'diffusion_1d', 'time': 10, 'layers': 4, 'cycles': 2})
    assert cls is Diffusion1D and kw['time'] == 10.0 and isinstance(kw['time'], float)


def test_interp_slack_tightens_the_bound_and_bad_values_fail(tmp_path):
    """``interp_slack`` (recorded in config.json) sets the grid of the norm bound: still ≥ ‖K‖ (power
    iteration, float64), within 3% of it at 1.005 while the default grid's Szegő factor alone is 1.09."""
    from pdeblocks.ops.norms import power_iteration_norm
    torch.manual_seed(0)
    ratios = {}
    for slack in (1.005, 1.1):
        m = Denoiser1D(scale=2, channels=6, hidden_channels=6, blocks=2, kernel_size=5, knots=4, interp_slack=slack)
        for i, block in enumerate(m.blocks):
            with torch.no_grad():
                block.weight.copy_(torch.randn_like(block.weight) * (1 + 10 * i))
                bound = float(block.norm_bound())
            true = float(power_iteration_norm(block.weight.detach().double(), 'neumann', [256]))
            assert true <= bound
            ratios.setdefault(slack, []).append(bound / true)
    assert max(ratios[1.005]) <= 1.03 and min(ratios[1.1]) >= 1.09
    m = tiny_denoiser()
    m.save_pretrained(tmp_path)
    config = json.loads((tmp_path / 'config.json').read_text())
    assert config['interp_slack'] == 1.1
    config['interp_slack'] = 1.0
    (tmp_path / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r'interp_slack must be .*> 1, got 1.0'):
        load_folder(tmp_path)


def test_bad_json_config(tmp_path):
    tiny_denoiser().save_pretrained(tmp_path)
    (tmp_path / 'config.json').write_text('{"architecture": "denoiser_1d",')
    with pytest.raises(ValueError, match='not valid JSON'):
        load_folder(tmp_path)


# ---------------------------------------------------------------- strict weights
def _saved(tmp_path):
    tiny_denoiser().save_pretrained(tmp_path)
    return tmp_path / 'model.safetensors', load_file(tmp_path / 'model.safetensors')


def test_missing_key(tmp_path):
    path, sd = _saved(tmp_path)
    sd.pop('lift.weight')
    save_file(sd, path)
    with pytest.raises(ValueError, match=r"missing keys \['lift.weight'\]"):
        from_pretrained(tmp_path)


def test_unexpected_key(tmp_path):
    path, sd = _saved(tmp_path)
    sd['extra.weight'] = torch.zeros(2)
    save_file(sd, path)
    with pytest.raises(ValueError, match=r"unexpected keys \['extra.weight'\]"):
        from_pretrained(tmp_path)


def test_shape_mismatch(tmp_path):
    path, sd = _saved(tmp_path)
    sd['lift.weight'] = torch.zeros(5, 2, 3)
    save_file(sd, path)
    with pytest.raises(ValueError, match="'lift.weight' has shape"):
        from_pretrained(tmp_path)


def test_non_finite_weights(tmp_path):
    path, sd = _saved(tmp_path)
    sd['lift.weight'][0, 0, 0] = float('nan')
    save_file(sd, path)
    with pytest.raises(ValueError, match='NaN or Inf'):
        from_pretrained(tmp_path)


@pytest.mark.parametrize('damage', ['truncate', 'header', 'empty'])
def test_corrupted_or_truncated_file(tmp_path, damage):
    path, _ = _saved(tmp_path)
    data = path.read_bytes()
    data = {'truncate': data[:len(data) // 2], 'header': b'\xff' * 8 + data[8:], 'empty': b''}[damage]
    path.write_bytes(data)
    with pytest.raises(ValueError, match='not a valid safetensors file'):
        from_pretrained(tmp_path)


def test_pickle_is_never_loaded(tmp_path):
    """A folder with only a pickle checkpoint is refused, and the pickle is never executed."""
    sentinel = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            return (open, (str(sentinel), 'w'))

    (tmp_path / 'model').mkdir()
    tiny_denoiser().save_pretrained(tmp_path / 'model')
    os.remove(tmp_path / 'model' / 'model.safetensors')
    with open(tmp_path / 'model' / 'pytorch_model.bin', 'wb') as fh:
        pickle.dump(Evil(), fh)
    for load in (from_pretrained, Denoiser1D.from_pretrained):
        with pytest.raises(ValueError, match='no weights file'):
            load(tmp_path / 'model')
    assert not sentinel.exists()
    # a pickle renamed to model.safetensors is rejected as corrupted, not unpickled
    os.replace(tmp_path / 'model' / 'pytorch_model.bin', tmp_path / 'model' / 'model.safetensors')
    with pytest.raises(ValueError, match='not a valid safetensors file'):
        from_pretrained(tmp_path / 'model')
    assert not sentinel.exists()


def test_unknown_name():
    with pytest.raises(ValueError, match='bundled models'):
        from_pretrained('no-such-model')


# ---------------------------------------------------------------- bundled models
def test_list_pretrained_and_bundled_files_are_small():
    names = list_pretrained()
    assert set(PUBLISHED) <= set(names)
    for name in names:
        assert (BUNDLED_DIR / name / 'model.safetensors').stat().st_size < 1_000_000
        assert (BUNDLED_DIR / name / 'eval.json').is_file()


@pytest.mark.parametrize('name', PUBLISHED)
def test_bundled_models_load_and_check_length(name):
    m = from_pretrained(name)
    n = m.min_length
    assert m(torch.rand(2, 1, n)).shape == (2, 1, n)
    assert m(torch.rand(1, 1, 4096)).shape == (1, 1, 4096)
    with pytest.raises(ValueError, match=f'length ≥ {n}'):
        m(torch.rand(1, 1, n - 1))
    with pytest.raises(ValueError, match=r'\[batch, 1, length\]'):
        m(torch.rand(1, 2, 100))


# ---------------------------------------------------------------- huggingface_hub resolution, offline
def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def fill_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str, refs=('main',)) -> None:
    """Write a snapshot in huggingface_hub's documented cache layout:
    models--org--name/{blobs/<hash>, snapshots/<commit>/<file> → ../../blobs/<hash>, refs/<ref> = commit}.
    Blobs are named like the Hub does: sha256 for LFS files (safetensors), git blob sha1 otherwise."""
    repo = cache / ('models--' + repo_id.replace('/', '--'))
    (repo / 'blobs').mkdir(parents=True, exist_ok=True)
    (repo / 'snapshots' / commit).mkdir(parents=True, exist_ok=True)
    (repo / 'refs').mkdir(exist_ok=True)
    for name in ('config.json', 'model.safetensors'):
        data = (folder / name).read_bytes()
        digest = hashlib.sha256(data).hexdigest() if name.endswith('.safetensors') else _git_blob_sha1(data)
        (repo / 'blobs' / digest).write_bytes(data)
        link = repo / 'snapshots' / commit / name
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.join('..', '..', 'blobs', digest), link)
    for ref in refs:
        (repo / 'refs' / ref).write_text(commit)


SCENARIOS = textwrap.dedent('''
    import json, sys, warnings
    import pdeblocks.hub as hub
    out = {}
    for key, ident, kw in json.loads(sys.argv[1]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            try:
                m = hub.from_pretrained(ident, **kw)
                out[key] = dict(params=sum(p.numel() for p in m.parameters()), arch=m.architecture,
                                source=hub.resolve(ident, **kw)[2],
                                warned=[str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)])
            except ValueError as exc:
                out[key] = dict(error=str(exc))
    print(json.dumps(out))
''')


def run_offline(cache: Path, scenarios):
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE='1', PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    env.pop('HF_HOME', None)
    proc = subprocess.run([sys.executable, '-c', SCENARIOS, json.dumps(scenarios)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_hub_cache_resolution_offline(tmp_path):
    cache = tmp_path / 'hub'
    a, b = tmp_path / 'a', tmp_path / 'b'
    tiny_denoiser(blocks=1).save_pretrained(a)
    tiny_denoiser(blocks=3).save_pretrained(b)
    n_a = sum(p.numel() for p in tiny_denoiser(blocks=1).parameters())
    n_b = sum(p.numel() for p in tiny_denoiser(blocks=3).parameters())
    commit_a, commit_b = 'a' * 40, 'b' * 40
    fill_hub_cache(cache, 'pdeblocks/denoiser-1d', a, commit_a, refs=('main',))
    fill_hub_cache(cache, 'pdeblocks/denoiser-1d', b, commit_b, refs=('v2',))
    fill_hub_cache(cache, 'someone/my-denoiser', b, commit_b, refs=('main',))
    # a second cache (passed as cache_dir) holding a truncated copy of pdeblocks/denoiser-1d
    bad_cache, bad = tmp_path / 'bad-hub', tmp_path / 'bad'
    tiny_denoiser().save_pretrained(bad)
    (bad / 'model.safetensors').write_bytes((bad / 'model.safetensors').read_bytes()[:100])
    fill_hub_cache(bad_cache, 'pdeblocks/denoiser-1d', bad, 'c' * 40)
    bundled_params = sum(p.numel() for p in from_pretrained('diffusion-1d-perona-malik').parameters())
    res = run_offline(cache, [
        ['corrupted', 'pdeblocks/denoiser-1d', {'cache_dir': str(bad_cache)}],
        ['main', 'pdeblocks/denoiser-1d', {}],
        ['tag', 'pdeblocks/denoiser-1d', {'revision': 'v2'}],
        ['commit', 'pdeblocks/denoiser-1d', {'revision': commit_b}],
        ['bare', 'denoiser-1d', {}],
        ['other', 'someone/my-denoiser', {}],
        ['fallback', 'pdeblocks/diffusion-1d-perona-malik', {}],
        ['missing', 'someone/not-cached', {}],
    ])
    assert res['main'] == dict(params=n_a, arch='denoiser_1d', source='hub', warned=[])
    assert res['tag']['params'] == n_b and res['commit']['params'] == n_b
    assert res['bare']['params'] == n_a and res['bare']['source'] == 'hub'
    assert res['other']['params'] == n_b
    # not in the offline cache: the bundled copy, with a warning
    assert res['fallback']['source'] == 'bundled' and res['fallback']['params'] == bundled_params
    assert res['fallback']['warned'] and 'bundled' in res['fallback']['warned'][0]
    assert 'cannot load' in res['missing']['error']
    # a corrupted Hub copy is an error, never silently replaced by the bundled one
    assert 'not a valid safetensors file' in res['corrupted']['error']


def test_torch_hub_entrypoints_offline():
    from pdeblocks.hub import denoiser_1d, denoiser_1d_multigrid, diffusion_1d
    assert denoiser_1d().architecture == 'denoiser_1d'
    assert diffusion_1d(pretrained=True).architecture == 'diffusion_1d'
    assert diffusion_1d(pretrained=False, layers=4, cycles=2).parameter_count() > 0
    m = denoiser_1d_multigrid(pretrained=False, channels=4, levels=2, kernel_size=3)
    assert m(torch.rand(1, 1, 64)).shape == (1, 1, 64)
    assert denoiser_1d_multigrid(pretrained=True).architecture == 'multigrid_denoiser_1d'
    from pdeblocks.hub import _entrypoint
    with pytest.raises(ValueError, match="no pretrained weights for 'denoiser-2d'"):
        _entrypoint('denoiser-2d', 'denoiser_1d', True, {})
    with pytest.raises(ValueError, match='takes no model arguments'):
        denoiser_1d(channels=3)
