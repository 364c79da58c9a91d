"""Pretrained pdeblocks models: validated configs, strict safetensors, Hub resolution, bundled copies.

``from_pretrained(name_or_repo_id_or_path, revision=None)`` accepts

* a **local folder** with ``config.json`` and ``model.safetensors``;
* a **Hub repo id** ``org/name`` (e.g. ``pdeblocks/denoiser-1d``): the two files are fetched with
  ``huggingface_hub.hf_hub_download`` and therefore use its cache (``HF_HUB_CACHE``), offline mode
  (``HF_HUB_OFFLINE=1``) and ``revision`` (a branch, tag or commit; default ``main``). For
  ``pdeblocks/<name>`` of a bundled model, if the Hub copy cannot be had (offline and not cached, no
  network, repository or file missing), the bundled copy of that revision is used, with a warning;
* a **bundled name** (``denoiser-1d``, see :func:`list_pretrained`): the Hub cache's copy of
  ``pdeblocks/<name>`` at that revision if one is cached (no network access), else the bundled copy.

**Revisions.** A bundled folder may hold ``revisions.json`` (:func:`bundled_revisions`), the map from
the Hub tags of ``pdeblocks/<name>`` to the bundled models that carry them::

    {"repo_id": "pdeblocks/denoiser-1d", "current": "v6",
     "revisions": {"v1": "denoiser-1d-piecewise-constant", "v2": "denoiser-1d-v2", "v3": "denoiser-1d-v3",
                   "v4": "denoiser-1d-v4", "v5": "denoiser-1d-v5", "v6": "denoiser-1d"}}

so that ``from_pretrained('pdeblocks/denoiser-1d', revision='v1')`` gives the Hub's v1 when the Hub
(or its cache) has it, and the bundled ``denoiser-1d-piecewise-constant`` when it does not. A bare
name without a revision looks in the cache at ``current`` (the tag of the bundled weights), not at
``main``: a cache filled before an upgrade cannot put older weights behind the name. The bundled
fallback serves ``revision`` None, ``'main'`` or a tag of the map; any other revision that the Hub
cannot give is a ValueError naming the known ones. Without ``revisions.json`` the known revisions
are ``main`` alone.

``config.json`` is validated before anything is built: ``architecture`` must be one of
:func:`architectures` (the one registry: every :class:`~pdeblocks.models.denoise1d.Pretrained1D`
subclass with an ``architecture`` name registers itself) and every other key a constructor argument of
that class, decoded by :data:`CONFIG_CODERS` — the coders the Hub mixin uses too — after its declared
type (int, float, str or bool, ints within [0, 65536], floats finite); anything else raises a
ValueError. ``revisions.json`` is validated likewise before use. Weights are read with ``safetensors``
only (never pickle): a corrupted or truncated file, missing or unexpected keys, shape mismatches and
non-finite values raise a ValueError.
"""
import inspect
import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, Union

import torch
from huggingface_hub import hf_hub_download
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ._io import atomic_path, atomic_write_json
from .layers.symmetric import optional_state_keys

CONFIG_NAME = 'config.json'
WEIGHTS_NAME = 'model.safetensors'
REVISIONS_NAME = 'revisions.json'
MAIN = 'main'
# a Hub tag of the revisions map: a short git ref name (not 'main', which always means the Hub's head)
_TAG = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,63}')
HUB_ORG = 'pdeblocks'
BUNDLED_DIR = Path(__file__).resolve().parent / 'pretrained'
_INT_RANGE = (0, 65536)


ARCHITECTURES: Dict[str, Type[nn.Module]] = {}   # the allow-list, filled by register_architecture


def register_architecture(cls: Type[nn.Module]) -> Type[nn.Module]:
    """Add ``cls`` to the allow-list under ``cls.architecture`` (a class decorator; returns ``cls``)."""
    name = getattr(cls, 'architecture', None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} needs a non-empty string attribute 'architecture', got {name!r}")
    if ARCHITECTURES.get(name, cls) is not cls:
        raise ValueError(f"architecture {name!r} is already registered to {ARCHITECTURES[name].__qualname__}, "
                         f"cannot register {cls.__qualname__}")
    ARCHITECTURES[name] = cls
    return cls


def architectures() -> Dict[str, Type[nn.Module]]:
    """The allow-list: architecture name in ``config.json`` → model class (a copy)."""
    return dict(ARCHITECTURES)


def architecture_class(name: str) -> Type[nn.Module]:
    table = architectures()
    if name not in table:
        raise ValueError(f"unknown architecture {name!r}; known architectures: {sorted(table)}")
    return table[name]


def list_pretrained() -> List[str]:
    """Names of the pretrained models bundled with the package (each also ``pdeblocks/<name>`` on the Hub)."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir()
                  if (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file())


def bundled_revisions(name: str) -> Optional[Dict[str, Any]]:
    """The validated ``revisions.json`` of the bundled model ``name`` (module docstring), or None if it has none.

    Returns ``{'repo_id': 'pdeblocks/<name>', 'current': tag, 'revisions': {tag: bundled name}}``. Raises a
    ValueError, naming what was expected and what came, for anything else: not a JSON object, missing or
    unknown keys, a ``repo_id`` other than ``pdeblocks/<name>``, a tag that is not a short ref name (or is
    ``main``), a revision naming no bundled model, or ``current`` not a tag of the map that names ``name``.
    """
    path = BUNDLED_DIR / name / REVISIONS_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    keys = {'repo_id', 'current', 'revisions'}
    if not isinstance(data, dict) or set(data) != keys:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} must hold a JSON object with the keys {sorted(keys)}, got {got}")
    if data['repo_id'] != f'{HUB_ORG}/{name}':
        raise ValueError(f"{path}: 'repo_id' must be {HUB_ORG + '/' + name!r}, got {data['repo_id']!r}")
    table = data['revisions']
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path}: 'revisions' must be a non-empty object tag → bundled name, got {table!r}")
    bundled = list_pretrained()
    for tag, target in table.items():
        if not _TAG.fullmatch(tag) or tag == MAIN:
            raise ValueError(f"{path}: revision {tag!r} must be a tag name of 1–64 letters, digits, '.', '_' or "
                             f"'-' (not {MAIN!r})")
        if target not in bundled:
            raise ValueError(f"{path}: revision {tag!r} names {target!r}, which is not a bundled model; "
                             f"bundled: {bundled}")
    current = data['current']
    if not isinstance(current, str) or current not in table or table[current] != name:
        raise ValueError(f"{path}: 'current' must be a tag of 'revisions' that names {name!r}, "
                         f"got {data['current']!r}")
    return dict(repo_id=data['repo_id'], current=data['current'], revisions=dict(table))


def known_revisions(name: str) -> List[str]:
    """The revisions of ``pdeblocks/<name>`` that the bundled copies can serve offline: ``main`` and the map's tags."""
    table = bundled_revisions(name)
    return [MAIN] + sorted(table['revisions'] if table else [])


def bundled_for_revision(name: str, revision: Optional[str]) -> str:
    """The bundled model that stands for ``pdeblocks/<name>`` at ``revision`` (None and ``main``: ``name``
    itself); a ValueError naming the known revisions for any other revision the map does not hold."""
    if revision is None or revision == MAIN:
        return name
    table = bundled_revisions(name)
    if table is None or revision not in table['revisions']:
        raise ValueError(f"unknown revision {revision!r} of {HUB_ORG}/{name}: not on the Hub or in its cache, and "
                         f"not among the revisions bundled with pdeblocks: {known_revisions(name)}")
    return table['revisions'][revision]


def recipe_of(name: str) -> Optional[str]:
    """The recipe that trained the bundled model ``name`` (``pdeblocks train <recipe>`` reproduces it), as its
    ``eval.json`` names it; None without one."""
    path = BUNDLED_DIR / name / 'eval.json'
    try:
        ev = json.loads(path.read_text(encoding='utf-8')) if path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    recipe = ev.get('recipe') if isinstance(ev, dict) else None
    return recipe.get('name') if isinstance(recipe, dict) else None


def published_name(recipe: str) -> str:
    """The bundled model trained by ``recipe``: the one whose ``eval.json`` names it (e.g. ``denoiser-1d-general``
    → ``denoiser-1d-v2``; ``denoiser-1d`` → ``denoiser-1d-piecewise-constant``); a ValueError if none or several do."""
    found = [name for name in list_pretrained() if recipe_of(name) == recipe]
    if len(found) != 1:
        raise ValueError(f"expected one bundled model trained by recipe {recipe!r}, found {found}")
    return found[0]


def _expected(what: str, value: Any) -> ValueError:
    return ValueError(f"must be {what}, got {value!r} ({type(value).__name__})")


def _decode_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _expected('a boolean', value)
    return value


def _decode_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expected('an integer', value)
    if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        raise _expected(f'an integer in [{_INT_RANGE[0]}, {_INT_RANGE[1]}]', value)
    return value


def _decode_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _expected('a finite number', value)
    return float(value)


def _decode_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _expected('a string', value)
    return value


def _same(value: Any) -> Any:
    return value


# type of a constructor argument → (encoder, decoder) of its config.json value, in the format of
# huggingface_hub's ``coders`` (bool before int: the mixin takes the first type the annotation subclasses)
CONFIG_CODERS: Dict[type, Tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    bool: (_same, _decode_bool), int: (_same, _decode_int), float: (_same, _decode_float), str: (_same, _decode_str)}


def validate_config(config: Any) -> Tuple[Type[nn.Module], Dict[str, Any]]:
    """(model class, constructor kwargs) from a parsed ``config.json``; raises ValueError on anything unexpected."""
    if not isinstance(config, dict):
        raise ValueError(f"config.json must hold a JSON object, got {type(config).__name__}")
    if 'architecture' not in config:
        raise ValueError(f"config.json has no 'architecture' key (keys: {sorted(config)})")
    arch = config['architecture']
    if not isinstance(arch, str):
        raise ValueError(f"config.json 'architecture' must be a string, got {arch!r}")
    cls = architecture_class(arch)
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != 'self'}
    unknown = sorted(set(config) - set(params) - {'architecture'})
    if unknown:
        raise ValueError(f"config.json of {arch!r} has unknown keys {unknown}; allowed: {sorted(params)}")
    kwargs = {}
    for key, value in config.items():
        if key == 'architecture':
            continue
        annotation = params[key].annotation
        if annotation not in CONFIG_CODERS:
            raise ValueError(f"architecture {arch!r} declares argument {key!r} with unsupported type {annotation!r}")
        try:
            kwargs[key] = CONFIG_CODERS[annotation][1](value)
        except ValueError as exc:
            raise ValueError(f"config.json of {arch!r}: {key!r} {exc}") from None
    return cls, kwargs


def read_config(path: Union[str, Path]) -> Dict[str, Any]:
    try:
        text = Path(path).read_text(encoding='utf-8')
    except FileNotFoundError:
        raise ValueError(f"no {CONFIG_NAME} at {path}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def load_weights(model: nn.Module, path: Union[str, Path], map_location: Union[str, torch.device] = 'cpu') -> nn.Module:
    """Strictly load ``model.safetensors`` into ``model`` (no pickle; every mismatch is a ValueError)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no weights file {WEIGHTS_NAME} at {path}")
    try:
        with safe_open(str(path), framework='pt', device=str(map_location)) as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises SafetensorError / OSError on corrupted or truncated files
        raise ValueError(f"{path} is not a valid safetensors file (corrupted or truncated?): {exc}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors) - optional_state_keys(model))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"weights in {path} do not match {type(model).__name__}: missing keys {missing[:8]}"
                         f"{'…' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
                         f"{'…' if len(unexpected) > 8 else ''}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(f"weights in {path}: {k!r} has shape {list(v.shape)}, "
                             f"{type(model).__name__} expects {list(expected[k].shape)}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ValueError(f"weights in {path}: {k!r} contains NaN or Inf")
    model.load_state_dict(tensors, strict=True)
    return model.to(map_location).eval()


def save_folder(model: nn.Module, directory: Union[str, Path]) -> None:
    """Write ``config.json`` (validated round-trip) and ``model.safetensors``, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config()
    validate_config(config)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={'format': 'pt', 'architecture': config['architecture']})
    atomic_write_json(directory / CONFIG_NAME, config)


def load_folder(directory: Union[str, Path], map_location='cpu', expected_architecture: Optional[str] = None) -> nn.Module:
    directory = Path(directory)
    return _build(directory / CONFIG_NAME, directory / WEIGHTS_NAME, map_location, expected_architecture)


def _build(config_path: Path, weights_path: Path, map_location, expected_architecture: Optional[str]) -> nn.Module:
    cls, kwargs = validate_config(read_config(config_path))
    if expected_architecture and cls.architecture != expected_architecture:
        raise ValueError(f"{config_path} holds architecture {cls.architecture!r}, not {expected_architecture!r}")
    return load_weights(cls(**kwargs), weights_path, map_location)


def _hub_files(repo_id: str, revision: Optional[str], cache_dir, force_download: bool, local_files_only: bool,
               token) -> Tuple[Path, Path]:
    paths = [Path(hf_hub_download(repo_id=repo_id, filename=name, revision=revision, cache_dir=cache_dir,
                                  force_download=force_download, local_files_only=local_files_only, token=token))
             for name in (CONFIG_NAME, WEIGHTS_NAME)]
    return paths[0], paths[1]


def _bundled_files(name: str) -> Tuple[Path, Path, str]:
    return BUNDLED_DIR / name / CONFIG_NAME, BUNDLED_DIR / name / WEIGHTS_NAME, 'bundled'


def resolve(name_or_repo_id_or_path: Union[str, Path], revision: Optional[str] = None, cache_dir=None,
            force_download: bool = False, local_files_only: bool = False, token=None) -> Tuple[Path, Path, str]:
    """(config path, weights path, where from: 'folder' | 'hub' | 'bundled'); see the module docstring."""
    ident = str(name_or_repo_id_or_path)
    if os.path.isdir(ident):
        if revision not in (None, MAIN):
            raise ValueError(f"{ident!r} is a local folder: it has no revision {revision!r}")
        return Path(ident) / CONFIG_NAME, Path(ident) / WEIGHTS_NAME, 'folder'
    bundled = list_pretrained()
    if ident in bundled:  # a bare name: the Hub cache's copy if cached, else the bundled copy; no network
        table = bundled_revisions(ident)
        cached = revision if revision is not None else (table['current'] if table else None)
        try:
            c, w = _hub_files(f'{HUB_ORG}/{ident}', cached, cache_dir, False, True, token)
            return c, w, 'hub'
        except Exception:
            return _bundled_files(bundled_for_revision(ident, revision))
    if ident.count('/') == 1 and not ident.startswith(('.', '/')) and not os.path.exists(ident):
        org, name = ident.split('/')
        try:
            c, w = _hub_files(ident, revision, cache_dir, force_download, local_files_only, token)
            return c, w, 'hub'
        except Exception as exc:
            if org == HUB_ORG and name in bundled:
                target = bundled_for_revision(name, revision)
                at = '' if revision is None else f" at revision {revision!r}"
                warnings.warn(f"could not get {ident}{at} from the Hub ({type(exc).__name__}); using the copy "
                              f"bundled with pdeblocks ({target})", RuntimeWarning, stacklevel=3)
                return _bundled_files(target)
            raise ValueError(f"cannot load {ident!r} from the Hugging Face Hub: {type(exc).__name__}: {exc}") from None
    raise ValueError(f"{ident!r} is neither a folder, a Hub repo id (org/name) nor a bundled model; "
                     f"bundled models: {bundled}")


def load_pretrained(name_or_repo_id_or_path: Union[str, Path], revision: Optional[str] = None, cache_dir=None,
                    force_download: bool = False, local_files_only: bool = False, token=None,
                    map_location='cpu', expected_architecture: Optional[str] = None) -> nn.Module:
    """Resolve, validate and strictly load a pretrained model (see the module docstring)."""
    config_path, weights_path, _ = resolve(name_or_repo_id_or_path, revision, cache_dir, force_download,
                                           local_files_only, token)
    return _build(config_path, weights_path, map_location, expected_architecture)


def from_pretrained(name_or_repo_id_or_path: Union[str, Path], revision: Optional[str] = None,
                    map_location='cpu', **hub_kwargs) -> nn.Module:
    """``pdeblocks.from_pretrained``: a bundled name, a Hub repo id or a folder → model in eval mode."""
    return load_pretrained(name_or_repo_id_or_path, revision=revision, map_location=map_location, **hub_kwargs)


def _entrypoint(name: str, architecture: str, pretrained: bool, kwargs: Dict[str, Any]) -> nn.Module:
    if pretrained:
        if kwargs:
            raise ValueError(f"pretrained=True takes no model arguments (got {sorted(kwargs)}); the bundled config "
                             f"fixes them")
        if name not in list_pretrained():
            raise ValueError(f"no pretrained weights for {name!r} in this version; bundled: {list_pretrained()}. "
                             f"Use pretrained=False for an untrained model")
        return from_pretrained(name)
    return architecture_class(architecture)(**kwargs)


def denoiser_1d(pretrained: bool = True, **kwargs) -> nn.Module:
    """torch.hub entrypoint: the bundled ``denoiser-1d`` (the general blind denoiser, offline), or an untrained
    BlindDenoiser1D(**kwargs)."""
    return _entrypoint('denoiser-1d', 'blind_denoiser_1d', pretrained, kwargs)


def denoiser_1d_piecewise_constant(pretrained: bool = True, **kwargs) -> nn.Module:
    """torch.hub entrypoint: the bundled ``denoiser-1d-piecewise-constant`` (revision v1 of ``pdeblocks/denoiser-1d``,
    non-blind, piecewise-constant signals on [0, 1]), or an untrained Denoiser1D(**kwargs)."""
    return _entrypoint('denoiser-1d-piecewise-constant', 'denoiser_1d', pretrained, kwargs)


def diffusion_1d(pretrained: bool = True, **kwargs) -> nn.Module:
    """torch.hub entrypoint: the bundled ``diffusion-1d-perona-malik``, or an untrained Diffusion1D(**kwargs)."""
    return _entrypoint('diffusion-1d-perona-malik', 'diffusion_1d', pretrained, kwargs)


def denoiser_1d_multigrid(pretrained: bool = True, **kwargs) -> nn.Module:
    """torch.hub entrypoint: the bundled ``denoiser-1d-multigrid``, or an untrained MultigridDenoiser1D(**kwargs)."""
    return _entrypoint('denoiser-1d-multigrid', 'multigrid_denoiser_1d', pretrained, kwargs)
