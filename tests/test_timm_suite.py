"""timm's own model tests (from the sdist of the installed timm) against every registered pde_* model.

Runs ``pytest -p pdeblocks tests/test_models.py -k pde_ -m "<markers>"`` inside the unpacked sdist,
in a subprocess. The sdist is fetched once with ``pip download`` (PyPI) and cached under
``$PDEBLOCKS_TIMM_SDIST_CACHE`` (default ``~/.cache/pdeblocks``).
"""
import os
import re
import subprocess
import sys
import tarfile

import pytest
import timm

MARKERS = 'base or forward or backward or cfg or torchscript or features or fxforward or fxbackward'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _timm_sdist() -> str:
    cache = os.environ.get('PDEBLOCKS_TIMM_SDIST_CACHE', os.path.join(os.path.expanduser('~'), '.cache', 'pdeblocks'))
    root = os.path.join(cache, f'timm-{timm.__version__}')
    if os.path.isfile(os.path.join(root, 'tests', 'test_models.py')):
        return root
    os.makedirs(cache, exist_ok=True)
    subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--no-binary', ':all:',
                    f'timm=={timm.__version__}', '-d', cache], check=True, timeout=600)
    archive = os.path.join(cache, f'timm-{timm.__version__}.tar.gz')
    with tarfile.open(archive) as tar:
        tar.extractall(cache, filter='data')
    return root


def test_timm_model_suite_passes_for_every_pde_model():
    import pdeblocks  # noqa: F401
    models = timm.list_models('pde_*')
    assert models, 'no pde_* models registered'
    root = _timm_sdist()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
    env.pop('GITHUB_ACTIONS', None)
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'pdeblocks', 'tests/test_models.py', '-k', 'pde_', '-m', MARKERS,
         '-q', '-rA', '-p', 'no:cacheprovider', '-W', 'ignore::pytest.PytestUnknownMarkWarning'],
        cwd=root, env=env, capture_output=True, text=True, timeout=3000)
    tail = result.stdout[-6000:] + result.stderr[-2000:]
    summary = re.search(r'(\d+) passed', result.stdout)
    assert result.returncode == 0, tail
    assert summary and int(summary.group(1)) >= 7 * len(models), tail
    for name in models:  # every model went through forward, backward, cfg, torchscript, features and fx
        passed = re.findall(rf'PASSED \S+::(\w+)\[\d+-{re.escape(name)}(?:\.\w+)?\]', result.stdout)
        assert len(set(passed)) >= 7, (name, sorted(set(passed)))


if __name__ == '__main__':
    sys.exit(pytest.main([__file__, '-q', '-s']))
