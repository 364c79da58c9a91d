"""Pretrained loading: validated config.json, strict safetensors, real huggingface_hub resolution offline."""
import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import pdeblocks.hub as hub
from pdeblocks import certify
from pdeblocks.hub import BUNDLED_DIR, from_pretrained, list_pretrained, load_folder, validate_config
from pdeblocks.models.blind import BlindDenoiser1D
from pdeblocks.models.denoise1d import Denoiser1D, Diffusion1D, StandardResNet1D

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ['denoiser-1d', 'denoiser-1d-multigrid', 'denoiser-1d-piecewise-constant', 'diffusion-1d-perona-malik']


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
    import torch
    import pdeblocks.hub as hub

    def probe(m):   # the model's output on a fixed ramp: which weights were loaded
        with torch.no_grad():
            return m(torch.linspace(0.0, 1.0, 256)[None, None] ** 2).double().sum().item()

    out = {}
    for key, ident, kw in json.loads(sys.argv[1]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            try:
                m = hub.from_pretrained(ident, **kw)
                out[key] = dict(params=sum(p.numel() for p in m.parameters()), arch=m.architecture,
                                source=hub.resolve(ident, **kw)[2], probe=probe(m),
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
    fill_hub_cache(cache, 'pdeblocks/denoiser-1d', b, commit_b, refs=('v6',))
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
        ['tag', 'pdeblocks/denoiser-1d', {'revision': 'v6'}],
        ['commit', 'pdeblocks/denoiser-1d', {'revision': commit_b}],
        ['bare', 'denoiser-1d', {}],
        ['other', 'someone/my-denoiser', {}],
        ['fallback', 'pdeblocks/diffusion-1d-perona-malik', {}],
        ['missing', 'someone/not-cached', {}],
    ])
    assert {k: res['main'][k] for k in ('params', 'arch', 'source', 'warned')} == \
        dict(params=n_a, arch='denoiser_1d', source='hub', warned=[])
    assert res['tag']['params'] == n_b and res['commit']['params'] == n_b
    # a bare name with a revisions map looks in the cache at the bundled weights' tag (v6), not at main
    assert res['bare']['params'] == n_b and res['bare']['source'] == 'hub'
    assert res['other']['params'] == n_b
    # not in the offline cache: the bundled copy, with a warning
    assert res['fallback']['source'] == 'bundled' and res['fallback']['params'] == bundled_params
    assert res['fallback']['warned'] and 'bundled' in res['fallback']['warned'][0]
    assert 'cannot load' in res['missing']['error']
    # a corrupted Hub copy is an error, never silently replaced by the bundled one
    assert 'not a valid safetensors file' in res['corrupted']['error']


def test_torch_hub_entrypoints_offline():
    from pdeblocks.hub import denoiser_1d, denoiser_1d_multigrid, diffusion_1d
    assert denoiser_1d().architecture == 'blind_denoiser_1d'
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


# ---------------------------------------------------------------- revisions: the general model and the specialist
GENERAL, PREVIOUS, SPECIALIST = 'denoiser-1d', 'denoiser-1d-v2', 'denoiser-1d-piecewise-constant'
V3 = 'denoiser-1d-v3'   # revision v3: the IRLS-tail model before the Bayesian segmentation tail
V4 = 'denoiser-1d-v4'   # revision v4: the same weights as v5, before the spectral σ̂ and the residual tail
V5 = 'denoiser-1d-v5'   # revision v5: v4's weights with the spectral σ̂ and the residual tail


def _probe(m) -> float:
    with torch.no_grad():
        return m(torch.linspace(0.0, 1.0, 256)[None, None] ** 2).double().sum().item()


def test_bundled_names_and_revisions_map():
    """denoiser-1d is the general blind model (v6: the 4× grid, steps certified by retraction); the specialist (v1)
    and the earlier general models (v2 … v5) keep their own names; v5 is v4's weights with the spectral σ̂ and the
    residual tail."""
    general, previous, specialist = from_pretrained(GENERAL), from_pretrained(PREVIOUS), from_pretrained(SPECIALIST)
    v3, v4, v5 = from_pretrained(V3), from_pretrained(V4), from_pretrained(V5)
    assert type(general) is BlindDenoiser1D and type(previous) is BlindDenoiser1D and type(specialist) is Denoiser1D
    assert type(v3) is BlindDenoiser1D and v3.segment is None and general.segment is not None
    assert v4.segment is not None and v4.residual is None and not v4.spectral_noise
    assert v5.residual is not None and v5.spectral_noise and general.residual is not None and general.spectral_noise
    assert {b.stability for b in general.net.blocks} == {'retracted'} and general.net.scale == 4
    assert {b.mode for b in certify(general).blocks if b.path.startswith('net.')} == {'retracted'}
    v4_state, state = v4.state_dict(), v5.state_dict()
    assert v4_state.keys() == state.keys() and all(torch.equal(v4_state[k], state[k]) for k in state
                                                   if isinstance(state[k], torch.Tensor))
    assert general.parameter_count() <= 150_000 and specialist.parameter_count() == 47_664
    assert previous.parameter_count() == 92_728 and v3.parameter_count() == 94_927
    assert hub.bundled_revisions(GENERAL) == dict(repo_id='pdeblocks/denoiser-1d', current='v6',
                                                  revisions={'v1': SPECIALIST, 'v2': PREVIOUS, 'v3': V3, 'v4': V4,
                                                             'v5': V5, 'v6': GENERAL})
    assert hub.known_revisions(GENERAL) == ['main', 'v1', 'v2', 'v3', 'v4', 'v5', 'v6']
    assert hub.known_revisions('denoiser-1d-multigrid') == ['main']
    assert hub.bundled_for_revision(GENERAL, 'v1') == SPECIALIST
    assert hub.bundled_for_revision(GENERAL, 'v2') == PREVIOUS
    assert hub.bundled_for_revision(GENERAL, 'v3') == V3
    assert hub.bundled_for_revision(GENERAL, 'v4') == V4
    assert hub.bundled_for_revision(GENERAL, 'v5') == V5
    assert hub.bundled_for_revision(GENERAL, None) == hub.bundled_for_revision(GENERAL, 'main') == GENERAL
    with pytest.raises(ValueError,
                       match=r"unknown revision 'v9' of pdeblocks/denoiser-1d.*\['main', 'v1', 'v2', 'v3', 'v4', 'v5', 'v6'\]"):
        hub.bundled_for_revision(GENERAL, 'v9')
    # offline (no cache for these repos in a fresh HF cache is the subprocess test below): in-process the bare
    # name with revision v1 is the specialist's weights, with v2 and v3 the earlier general models'
    assert _probe(from_pretrained(GENERAL, revision='v1')) == _probe(specialist)
    assert _probe(from_pretrained(GENERAL, revision='v2')) == _probe(previous)
    assert _probe(from_pretrained(GENERAL, revision='v3')) == _probe(v3)
    assert _probe(from_pretrained(GENERAL, revision='v4')) == _probe(v4)
    assert _probe(from_pretrained(GENERAL, revision='v5')) == _probe(v5)
    assert _probe(from_pretrained(GENERAL)) == _probe(general) not in (_probe(specialist), _probe(previous), _probe(v3),
                                                                      _probe(v5))
    with pytest.raises(ValueError, match=r"unknown revision 'v1'.*\['main'\]"):
        from_pretrained('denoiser-1d-multigrid', revision='v1')


def test_published_name_maps_recipes_to_bundled_folders():
    assert hub.published_name('denoiser-1d-general') == PREVIOUS   # the first general model: revision v2
    assert hub.published_name('denoiser-1d-general-irls4-joint-long') == V3   # revision v3
    assert hub.published_name('denoiser-1d-general-bayes-joint') == V4   # revision v4
    assert hub.published_name('denoiser-1d-general-residual') == V5   # revision v5
    assert hub.published_name('denoiser-1d-general-s4r-residual') == GENERAL   # revision v6
    assert hub.published_name('denoiser-1d') == SPECIALIST      # the specialist's recipe keeps its name
    assert hub.published_name('denoiser-1d-multigrid') == 'denoiser-1d-multigrid'
    with pytest.raises(ValueError, match=r"one bundled model trained by recipe 'nope', found \[\]"):
        hub.published_name('nope')


def test_torch_hub_entrypoints_general_and_specialist():
    from pdeblocks.hub import denoiser_1d, denoiser_1d_piecewise_constant
    from pdeblocks.models.entrypoints import hub_entrypoints
    assert type(denoiser_1d()) is BlindDenoiser1D
    assert type(denoiser_1d_piecewise_constant()) is Denoiser1D
    untrained = denoiser_1d(pretrained=False, scheme='explicit', scale=4, channels=4, hidden_channels=4, blocks=1)
    assert type(untrained) is BlindDenoiser1D and untrained.parameter_count() < 2000
    assert {'denoiser_1d', 'denoiser_1d_piecewise_constant'} <= set(hub_entrypoints())


def test_a_folder_has_no_revision(tmp_path):
    tiny_denoiser().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"local folder: it has no revision 'v1'"):
        from_pretrained(tmp_path, revision='v1')


@pytest.fixture
def bundled_copy(tmp_path, monkeypatch):
    """A copy of the bundled folders (config, weights, eval.json, revisions.json) that the hub reads instead."""
    import shutil
    root = tmp_path / 'pretrained'
    for name in list_pretrained():
        shutil.copytree(BUNDLED_DIR / name, root / name)
    monkeypatch.setattr(hub, 'BUNDLED_DIR', root)
    return root


REVISIONS = dict(repo_id='pdeblocks/denoiser-1d', current='v6',
                 revisions={'v1': SPECIALIST, 'v2': PREVIOUS, 'v3': V3, 'v4': V4, 'v5': V5, 'v6': GENERAL})


@pytest.mark.parametrize('content, match', [
    ('{"repo_id": ', 'is not valid JSON'),
    ([REVISIONS], r"a JSON object with the keys \['current', 'repo_id', 'revisions'\], got list"),
    ({k: v for k, v in REVISIONS.items() if k != 'current'}, r"keys .* got \['repo_id', 'revisions'\]"),
    (dict(REVISIONS, extra=1), r"got \['current', 'extra', 'repo_id', 'revisions'\]"),
    (dict(REVISIONS, repo_id='someone/denoiser-1d'), r"'repo_id' must be 'pdeblocks/denoiser-1d', got 'someone/"),
    (dict(REVISIONS, revisions={}), "'revisions' must be a non-empty object"),
    (dict(REVISIONS, revisions=[SPECIALIST]), "'revisions' must be a non-empty object"),
    (dict(REVISIONS, revisions={'main': SPECIALIST, 'v2': GENERAL}), r"revision 'main' must be a tag name"),
    (dict(REVISIONS, revisions={'v1/../x': SPECIALIST, 'v2': GENERAL}), r"revision 'v1/../x' must be a tag name"),
    (dict(REVISIONS, revisions={'v1': 'denoiser-9d', 'v2': GENERAL}), "names 'denoiser-9d', which is not a bundled"),
    (dict(REVISIONS, revisions={'v1': ['x'], 'v2': GENERAL}), "which is not a bundled model"),
    (dict(REVISIONS, current='v7'), r"'current' must be a tag of 'revisions' that names 'denoiser-1d', got 'v7'"),
    (dict(REVISIONS, current='v5'), r"'current' must be a tag .* got 'v5'"),
    (dict(REVISIONS, current='v4'), r"'current' must be a tag .* got 'v4'"),
    (dict(REVISIONS, current='v2'), r"'current' must be a tag .* got 'v2'"),
    (dict(REVISIONS, current='v1'), r"'current' must be a tag .* got 'v1'"),
    (dict(REVISIONS, current=['v2']), r"'current' must be a tag .* got \['v2'\]"),
])
def test_bad_revisions_map_is_refused_before_use(bundled_copy, content, match):
    path = bundled_copy / GENERAL / 'revisions.json'
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    for load in (lambda: from_pretrained(GENERAL), lambda: from_pretrained(GENERAL, revision='v1')):
        with pytest.raises(ValueError, match=match):
            load()


def test_revisions_map_copy_is_valid_and_without_it_only_main(bundled_copy):
    assert hub.bundled_revisions(GENERAL) == REVISIONS      # the copy reads like the original
    (bundled_copy / GENERAL / 'revisions.json').unlink()
    assert hub.bundled_revisions(GENERAL) is None and hub.known_revisions(GENERAL) == ['main']
    with pytest.raises(ValueError, match=r"unknown revision 'v1'.*\['main'\]"):
        from_pretrained(GENERAL, revision='v1')


def test_two_revisions_of_denoiser_1d_offline(tmp_path):
    """huggingface_hub's real resolution, HF_HUB_OFFLINE=1: a cache holding the specialist at commit a (tag v1)
    and the general model at commit b (tags v6 and main) gives each by revision; with an empty cache the
    bundled copies stand in for the known revisions and an unknown revision names the known ones."""
    cache, empty = tmp_path / 'hub', tmp_path / 'empty'
    empty.mkdir()
    commit_a, commit_b = 'a' * 40, 'b' * 40
    fill_hub_cache(cache, 'pdeblocks/denoiser-1d', BUNDLED_DIR / SPECIALIST, commit_a, refs=('v1',))
    fill_hub_cache(cache, 'pdeblocks/denoiser-1d', BUNDLED_DIR / GENERAL, commit_b, refs=('v6', 'main'))
    general, specialist = _probe(from_pretrained(GENERAL)), _probe(from_pretrained(SPECIALIST))
    cases = [['main', 'pdeblocks/denoiser-1d', {}], ['v1', 'pdeblocks/denoiser-1d', {'revision': 'v1'}],
             ['v6', 'pdeblocks/denoiser-1d', {'revision': 'v6'}], ['commit', 'pdeblocks/denoiser-1d',
                                                                   {'revision': commit_a}],
             ['bare', GENERAL, {}], ['bare-v1', GENERAL, {'revision': 'v1'}],
             ['unknown', 'pdeblocks/denoiser-1d', {'revision': 'v9'}], ['bare-unknown', GENERAL, {'revision': 'v9'}]]
    cached, uncached = run_offline(cache, cases), run_offline(empty, cases)
    for key in ('main', 'v6', 'bare'):
        assert (cached[key]['arch'], cached[key]['source']) == ('blind_denoiser_1d', 'hub'), key
        assert cached[key]['probe'] == pytest.approx(general, rel=1e-6) and cached[key]['warned'] == []
    for key in ('v1', 'commit', 'bare-v1'):
        assert (cached[key]['arch'], cached[key]['source']) == ('denoiser_1d', 'hub'), key
        assert cached[key]['probe'] == pytest.approx(specialist, rel=1e-6)
    # nothing cached: the bundled copies, a warning for the repo id (none for the bare name)
    for key, arch, probe in (('main', 'blind_denoiser_1d', general), ('v6', 'blind_denoiser_1d', general),
                             ('bare', 'blind_denoiser_1d', general), ('v1', 'denoiser_1d', specialist),
                             ('bare-v1', 'denoiser_1d', specialist)):
        assert (uncached[key]['arch'], uncached[key]['source']) == (arch, 'bundled'), key
        assert uncached[key]['probe'] == pytest.approx(probe, rel=1e-6), key
        assert bool(uncached[key]['warned']) == (not key.startswith('bare')), key
    assert SPECIALIST in uncached['v1']['warned'][0] and "revision 'v1'" in uncached['v1']['warned'][0]
    for res in (cached, uncached):
        for key in ('unknown', 'bare-unknown'):
            assert re.search(r"unknown revision 'v9' of pdeblocks/denoiser-1d.*\['main', 'v1', 'v2', 'v3', 'v4', 'v5', 'v6'\]",
                             res[key]['error']), res[key]
    # a commit that is not in the cache is no known revision either
    assert 'unknown revision' in uncached['commit']['error']


def test_bare_name_ignores_a_stale_main_in_the_cache(tmp_path):
    """A cache filled before the upgrade (main = the old specialist, no v5 tag) must not put the old weights
    behind the bare name: it resolves to the bundled general model."""
    cache = tmp_path / 'hub'
    fill_hub_cache(cache, 'pdeblocks/denoiser-1d', BUNDLED_DIR / SPECIALIST, 'a' * 40, refs=('main',))
    res = run_offline(cache, [['bare', GENERAL, {}], ['repo', 'pdeblocks/denoiser-1d', {}]])
    assert (res['bare']['arch'], res['bare']['source']) == ('blind_denoiser_1d', 'bundled')
    # the repo id means the Hub's main, which this (stale) cache holds
    assert (res['repo']['arch'], res['repo']['source']) == ('denoiser_1d', 'hub')
