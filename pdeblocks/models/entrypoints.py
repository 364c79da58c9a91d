"""torch.hub entrypoints, generated from the registries (``hubconf.py`` publishes :func:`hub_entrypoints`).

* every timm model registered by pdeblocks (``pde_*``): ``timm.create_model(name, pretrained, **kwargs)``,
  documented by the model's own entrypoint docstring;
* its deprecated names (timm's ``register_model_deprecations``), which build the current model with
  timm's warning;
* the pretrained 1D models of :mod:`pdeblocks.hub` (``denoiser_1d``, ``denoiser_1d_piecewise_constant``,
  ``diffusion_1d``, ``denoiser_1d_multigrid``) and the multigrid U-net factories.

``torch.hub.list(repo)`` lists them all, ``torch.hub.help(repo, name)`` prints a docstring,
``torch.hub.load(repo, name, **kwargs)`` builds the model.
"""
from typing import Callable, Dict

import timm
from timm.models import get_deprecated_models, is_model, model_entrypoint
from torch import nn

from ..hub import denoiser_1d, denoiser_1d_multigrid, denoiser_1d_piecewise_constant, diffusion_1d
from .multigrid_unet import multigrid_unet_1d, multigrid_unet_2d

__all__ = ['hub_entrypoints', 'timm_model_names']

Entrypoint = Callable[..., nn.Module]


def _ours(name: str) -> bool:
    return is_model(name) and model_entrypoint(name).__module__.startswith('pdeblocks.')


def timm_model_names() -> Dict[str, str]:
    """pdeblocks' timm models: name → itself, and deprecated name → its current model."""
    names = {name: name for name in timm.list_models() if _ours(name)}
    names.update({old: new for old, new in get_deprecated_models().items() if new and _ours(new.split('.')[0])})
    return names


def _timm_entrypoint(name: str, current: str) -> Entrypoint:
    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    doc = (model_entrypoint(current.split('.')[0]).__doc__ or '').strip()
    if name == current:
        entrypoint.__doc__ = f"``timm.create_model({name!r}, pretrained, **kwargs)``: {doc}"
    else:
        entrypoint.__doc__ = f"Deprecated name of ``{current}`` (timm warns and builds it): {doc}"
    entrypoint.__name__ = entrypoint.__qualname__ = name
    return entrypoint


def hub_entrypoints() -> Dict[str, Entrypoint]:
    """Every torch.hub entrypoint of pdeblocks: name → function (module docstring)."""
    table: Dict[str, Entrypoint] = {name: _timm_entrypoint(name, current)
                                    for name, current in sorted(timm_model_names().items())}
    for fn in (denoiser_1d, denoiser_1d_piecewise_constant, diffusion_1d, denoiser_1d_multigrid, multigrid_unet_1d,
               multigrid_unet_2d):
        table[fn.__name__] = fn
    return table
