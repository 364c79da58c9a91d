"""What the user asked for (:class:`SwapSpec`) and how a rule builds its PDE step from it.

``spec.make_step(channels, dim, ...)`` calls the chosen residual block's constructor
``constructor(channels, dim=dim, **kw)`` with the swap defaults (``boundary='zeros'``, the replaced
kernel size and hidden width, a flux hint, the initial K) under the user's ``block_kwargs``.
"""
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ..layers.registry import RESIDUAL_BLOCKS, takes_stride


def module_dtype_device(module: nn.Module) -> Tuple[Optional[torch.dtype], Optional[torch.device]]:
    """dtype and device of a module's first parameter (else first buffer; (None, None) if it has neither)."""
    for p in module.parameters():
        return p.dtype, p.device
    for b in module.buffers():
        return b.dtype, b.device
    return None, None


def relu_flux_hint(act: Optional[nn.Module]) -> Optional[str]:
    """'relu' when the original nonlinearity is a ReLU (the closest flux); else the block's default."""
    return 'relu' if isinstance(act, nn.ReLU) else None


@dataclass
class SwapSpec:
    """What the user asked for; rules build their PDE step with :meth:`make_step`."""

    block: Union[str, Callable[..., nn.Module]]
    init: str
    block_kwargs: Dict[str, Any]

    @property
    def constructor(self) -> Callable[..., nn.Module]:
        return RESIDUAL_BLOCKS[self.block] if isinstance(self.block, str) else self.block

    def accepted(self) -> Optional[set]:
        """Keyword names the constructor takes (None = any, it has ``**kwargs``)."""
        try:
            params = inspect.signature(self.constructor).parameters.values()
        except (TypeError, ValueError):
            return None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return {p.name for p in params}

    def make_step(self, channels: int, dim: int, *, kernel_size: List[int],
                  hidden_channels: Optional[int] = None, weight: Optional[torch.Tensor] = None,
                  weight_source: str = '', flux: Optional[str] = None, drop_path: Optional[nn.Module] = None,
                  like: Optional[nn.Module] = None, stride: int = 1) -> Tuple[nn.Module, str]:
        """Build ``constructor(channels, dim=dim, **kw)`` with the swap defaults under the user's kwargs.

        Defaults: ``boundary='zeros'`` (size-preserving, like the replaced padded convs), the replaced
        kernel size and hidden width, the flux hint, the replaced convolution's ``stride`` where the block
        takes one (``supports_stride``; else K runs at stride 1), and with ``init='auto'`` the given initial K.
        Defaults the constructor does not take are dropped; the user's
        ``block_kwargs`` always win. Returns the module (dtype/device/mode of ``like``) and an init note.
        """
        dtype, device = module_dtype_device(like) if like is not None else (None, None)
        square = all(k == kernel_size[0] for k in kernel_size)   # int where square: blocks may take only int
        defaults: Dict[str, Any] = dict(boundary='zeros', kernel_size=kernel_size[0] if square else list(kernel_size))
        if hidden_channels is not None:
            defaults['hidden_channels'] = hidden_channels
        if flux is not None:
            defaults['flux'] = flux
        if stride != 1 and takes_stride(self.constructor):
            defaults['stride'] = stride
        if drop_path is not None and not isinstance(drop_path, nn.Identity):
            defaults['drop_path'] = drop_path
        user = self.block_kwargs
        note = 'random'
        if self.init == 'auto' and weight is not None and 'weight' not in user:
            ks = user.get('kernel_size', kernel_size)
            ks = [ks] * dim if isinstance(ks, int) else list(ks)
            hidden = user.get('hidden_channels', hidden_channels) or channels
            finite_nonzero = bool(torch.isfinite(weight).all()) and float(weight.abs().max()) > 0.0
            if not finite_nonzero:    # e.g. a zero-initialised last BatchNorm: a zero K is a dead step
                note = f'random ({weight_source} is zero or not finite)'
            elif list(weight.shape) == [hidden, channels] + ks:
                defaults['weight'] = weight
                note = f'auto: {weight_source}'
            else:
                note = f'random (block_kwargs changed K to {[hidden, channels] + ks})'
        elif self.init == 'auto':
            note = 'random (no convolution of matching shape)' if 'weight' not in user else 'weight from block_kwargs'
        if device is not None:
            defaults['device'] = device
        if dtype is not None:
            defaults['dtype'] = dtype
        accepted = self.accepted()
        if accepted is not None:
            dropped = [k for k in defaults if k not in accepted]
            if 'weight' in dropped:
                note = 'random (block takes no weight=)'
            defaults = {k: v for k, v in defaults.items() if k in accepted}
        kwargs = {**defaults, **user}
        try:
            step = self.constructor(channels, dim=dim, **kwargs)
        except TypeError as err:
            raise ValueError(f"block {self.block!r} rejected the keyword arguments {sorted(kwargs)}: {err}") from err
        if dtype is not None:
            step = step.to(device=device, dtype=dtype)
        if like is not None:
            step.train(like.training)
        return step, note

