"""pytest plugin for tests/test_timm_suite.py: keep timm's tests whose ``model_name`` parameter (without
its pretrained tag) is listed in ``$PDEBLOCKS_TIMM_MODELS`` (comma separated)."""
import os


def pytest_collection_modifyitems(config, items):
    wanted = set(filter(None, os.environ.get('PDEBLOCKS_TIMM_MODELS', '').split(',')))
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, 'callspec', None)
        name = callspec.params.get('model_name') if callspec is not None else None
        (keep if isinstance(name, str) and name.split('.')[0] in wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
