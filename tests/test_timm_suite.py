"""timm's own model tests (from the sdist of the installed timm) against every registered pde_* model.

Runs ``pytest -p pdeblocks tests/test_models.py -k pde_ -m "<markers>"`` inside the unpacked sdist,
in a subprocess, restricted to the given models by the ``timm_select`` plugin next to this file.
The sdist is fetched once with ``pip download`` (PyPI) and cached under
``$PDEBLOCKS_TIMM_SDIST_CACHE`` (default ``~/.cache/pdeblocks``).
"""
import os
import re
import subprocess
import sys
import tarfile

import timm

import pdeblocks  # noqa: F401

MARKERS = 'base or forward or backward or cfg or torchscript or features or fxforward or fxbackward'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = timm.list_models('pde_*')


def _timm_sdist() -> str:
    cache = os.environ.get('PDEBLOCKS_TIMM_SDIST_CACHE', os.path.join(os.path.expanduser('~'), '.cache', 'pdeblocks'))
    root = os.path.join(cache, f'timm-{timm.__version__}')
    if os.path.isfile(os.path.join(root, 'tests', 'test_models.py')):
        return root
    os.makedirs(cache, exist_ok=True)
    subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--no-binary', ':all:',
                    f'timm=={timm.__version__}', '-d', cache], check=True, timeout=600)
    with tarfile.open(os.path.join(cache, f'timm-{timm.__version__}.tar.gz')) as tar:
        tar.extractall(cache, filter='data')
    return root


def _run_suite(models):
    env = dict(os.environ, PDEBLOCKS_TIMM_MODELS=','.join(models),
               PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, 'tests'), os.environ.get('PYTHONPATH', '')]))
    env.pop('GITHUB_ACTIONS', None)
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-p', 'pdeblocks', '-p', 'timm_select', 'tests/test_models.py',
         '-k', 'pde_', '-m', MARKERS, '-q', '-rA', '-p', 'no:cacheprovider',
         '-W', 'ignore::pytest.PytestUnknownMarkWarning'],
        cwd=_timm_sdist(), env=env, capture_output=True, text=True, timeout=3600)
    tail = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    for name in models:  # every model went through forward, backward, cfg, torchscript, features and fx
        passed = set(re.findall(rf'PASSED \S+::(\w+)\[\d+-{re.escape(name)}(?:\.\w+)?\]', result.stdout))
        assert len(passed) >= 7, (name, sorted(passed), tail)


def test_timm_model_suite():
    """Every registered pde_* model, pde_resnet34 included (its 512-channel bounds cost ~4 s a block and
    model instance on 2 cores; the suite builds a fresh model per test)."""
    assert 'pde_resnet18' in ALL and 'pde_resnet34' in ALL and len(ALL) >= 5
    _run_suite(ALL)
