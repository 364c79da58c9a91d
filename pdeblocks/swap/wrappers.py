"""The modules a swap puts in place of a residual block: :class:`SwappedResidual`,
x ↦ post(step(connector(x) + shift(temb))) / output_scale, and :class:`SwappedUnetDecoderBlock` for
segmentation_models_pytorch U-net decoders. Only ``.step`` carries a stability certificate."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class SwappedResidual(nn.Module):
    """x ↦ post(step(connector(x) + shift(temb))) / output_scale — a residual block whose branch is a
    PDE step at constant width; with ``step_first=True``, x ↦ post(connector(step(x + shift(temb)))).

    ``connector``: the original shortcut / downsample path (identity if it had none). ``time_proj``:
    optional map temb ↦ per-channel shift (diffusion U-nets), added to the step's input. ``post``:
    the activation the original applied after its residual sum. ``step_first``: run the step at the
    block's input width and resolution, before a connector that changes them (so that a strided 1×1
    connector, which reads one pixel in s², subsamples the step's output instead of the raw input).
    Only the step carries a stability certificate; the connector is the user's layer and is not covered.
    """

    def __init__(self, step: nn.Module, connector: Optional[nn.Module] = None,
                 post: Optional[nn.Module] = None, time_proj: Optional[nn.Module] = None,
                 output_scale: float = 1.0, step_first: bool = False):
        super().__init__()
        self.connector = connector if connector is not None else nn.Identity()
        self.time_proj = time_proj
        self.step = step
        self.post = post if post is not None else nn.Identity()
        self.output_scale = float(output_scale)
        self.step_first = bool(step_first)

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None) -> torch.Tensor:
        u = x if self.step_first else self.connector(x)
        if self.time_proj is not None and temb is not None:
            shift = self.time_proj(temb)
            u = u + shift.reshape(list(shift.shape) + [1] * (u.dim() - shift.dim()))
        u = self.step(u)
        if self.step_first:
            u = self.connector(u)
        u = self.post(u)
        if self.output_scale != 1.0:
            u = u / self.output_scale
        return u

    def extra_repr(self) -> str:
        return 'step_first=True' if self.step_first else ''


class SwappedUnetDecoderBlock(nn.Module):
    """segmentation_models_pytorch U-net decoder block with its second conv replaced by a PDE step.

    upsample → concatenate skip → attention1 → conv1 (channel connector, unchanged) → step → ReLU →
    attention2; same call signature as ``UnetDecoderBlock``.
    """

    def __init__(self, connector: nn.Module, step: nn.Module, attention1: nn.Module,
                 attention2: nn.Module, interpolation_mode: str, post: Optional[nn.Module] = None):
        super().__init__()
        self.interpolation_mode = interpolation_mode
        self.attention1 = attention1
        self.connector = connector
        self.step = step
        self.post = post if post is not None else nn.Identity()
        self.attention2 = attention2

    def forward(self, feature_map: torch.Tensor, target_height: int, target_width: int,
                skip_connection: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = F.interpolate(feature_map, size=(target_height, target_width), mode=self.interpolation_mode)
        if skip_connection is not None:
            x = torch.cat([x, skip_connection], dim=1)
            x = self.attention1(x)
        x = self.post(self.step(self.connector(x)))
        return self.attention2(x)
