"""PDE-ResNets whose residual blocks are the accelerated explicit and the implicit schemes.

Both reuse :class:`~pdeblocks.models.pde_resnet.PDEResNet` (stem, connectors, head, the full timm
API) and only swap the block by its registry name:

* ``pde_fsi_resnet*`` — every block is one FSI cycle of n explicit steps with the two-steps-back
  skip (:class:`~pdeblocks.layers.fed.FSIBlock`, lagged diffusivity, ‖f(u)‖ ≤ ‖u‖ at every step);
  a cycle reaches diffusion time τ(n² + n)/3 where n symmetric blocks reach nτ.
* ``pde_implicit_resnet*`` — every block is a recurrent implicit step (I + τKᵀG K) u = u⁰ solved
  by a shared-weight Chebyshev recurrence (:class:`~pdeblocks.layers.implicit.ImplicitBlock`),
  stable for every τ; τ starts at 4× the explicit limit and is trained.

Default widths are kept small (32, 64, 96, 128): every block computes the rigorous bound of
‖K‖ (``pdeblocks.ops.norms``), whose cost grows like C³ (about 1.3 s at C = 128 and 6 s at C = 256
on one CPU core). Pass ``widths=(64, 128, 256, 512), layers=(2, 2, 2, 2)`` for resnet18's shape.
"""
from typing import Any, Dict

from timm.models import generate_default_cfgs, register_model

from ..layers import fed as _fed  # noqa: F401  (registers 'fed', 'fsi')
from ..layers import implicit as _implicit  # noqa: F401  (registers 'implicit')
from .pde_resnet import PDEResNet, _cfg, _create_pde_resnet

__all__ = ['pde_fsi_resnet', 'pde_fsi_resnet_tiny', 'pde_implicit_resnet', 'pde_implicit_resnet_tiny']

_SMALL = dict(layers=(1, 1, 1, 1), widths=(32, 64, 96, 128), stem_width=32)
_TINY = dict(layers=(1, 1, 1, 1), widths=(16, 32, 48, 64), stem_width=16)

default_cfgs = generate_default_cfgs({
    'pde_fsi_resnet.untrained': _cfg(),
    'pde_fsi_resnet_tiny.untrained': _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
    'pde_implicit_resnet.untrained': _cfg(),
    'pde_implicit_resnet_tiny.untrained': _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
})


def _with_block(block: str, block_kwargs: Dict[str, Any], args: Dict[str, Any],
                kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Model kwargs: ``args`` with the block, its default kwargs updated by the caller's, then the caller's."""
    merged = dict(block_kwargs, **(kwargs.pop('block_kwargs', None) or {}))
    return dict(dict(args, block=block, block_kwargs=merged), **kwargs)


@register_model
def pde_fsi_resnet(pretrained: bool = False, **kwargs) -> PDEResNet:
    """FSI PDE-ResNet: widths (32, 64, 96, 128), one 4-step FSI cycle per stage."""
    return _create_pde_resnet('pde_fsi_resnet', pretrained, **_with_block('fsi', dict(steps=4), _SMALL, kwargs))


@register_model
def pde_fsi_resnet_tiny(pretrained: bool = False, **kwargs) -> PDEResNet:
    """Tiny FSI PDE-ResNet for tests: widths (16, 32, 48, 64), one 2-step FSI cycle per stage."""
    return _create_pde_resnet('pde_fsi_resnet_tiny', pretrained, **_with_block('fsi', dict(steps=2), _TINY, kwargs))


@register_model
def pde_implicit_resnet(pretrained: bool = False, **kwargs) -> PDEResNet:
    """Implicit PDE-ResNet: widths (32, 64, 96, 128), one implicit step (τ = 4× explicit limit,
    ≤ 20 Chebyshev iterations, tol 1e-3) per stage."""
    bk = dict(relative_step=4.0, tol=1e-3, max_iterations=20)
    return _create_pde_resnet('pde_implicit_resnet', pretrained, **_with_block('implicit', bk, _SMALL, kwargs))


@register_model
def pde_implicit_resnet_tiny(pretrained: bool = False, **kwargs) -> PDEResNet:
    """Tiny implicit PDE-ResNet for tests: widths (16, 32, 48, 64), ≤ 8 iterations per step."""
    bk = dict(relative_step=2.0, tol=1e-3, max_iterations=8)
    return _create_pde_resnet('pde_implicit_resnet_tiny', pretrained, **_with_block('implicit', bk, _TINY, kwargs))
