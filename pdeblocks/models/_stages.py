"""Shared timm model API for models laid out as stem (feature 0) → stages (features 1…) → head.

:class:`StageModelMixin` gives such a model timm's uniform API once: ``get_classifier``,
``reset_classifier``, ``forward_intermediates``, ``prune_intermediate_layers``, ``forward_head`` and
``forward`` (= ``forward_head(forward_features(x))``; ``forward_features`` stays the model's own, so
the scripted forward path is the model's). A model states where its parts are and may override three
small hooks:

* ``stages_attr`` — the name of its ``nn.Sequential`` of stages (default ``'stages'``);
* :meth:`~StageModelMixin.after_stem` — what runs between the stem's tap and the first stage
  (default nothing; PDE-ResNet: the stem's max pooling);
* :meth:`~StageModelMixin.feature_map` — how a tapped state becomes a feature map (default the state
  itself; PDE-G-CNN: the projection M₂ → ℝ²);
* :meth:`~StageModelMixin.run_stage` — one stage, checkpointed when ``self.grad_checkpointing`` is
  set (a model whose stages checkpoint themselves overrides it);
* :meth:`~StageModelMixin.check_input` — validation of the input of ``forward_intermediates`` (default
  none), and ``feature_fmt``, the layout of the feature maps (default ``'NCHW'``; signals: ``'NCL'``).

It needs ``self.stem``, ``self.head`` (a timm ``ClassifierHead``), ``self.num_features`` and
``self.feature_info`` (one entry per tap).

:class:`Connector` is the change of width and resolution between stages that the PDE-ResNet (2D) and the 1D
symmetric ResNets share.
"""
from typing import List, Optional, Set, Tuple, Union

import torch
from timm.layers import get_device_dtype
from timm.models import checkpoint
from timm.models._features import feature_take_indices
from torch import nn


class StageModelMixin:
    """timm's model API for stem → stages → head models (see the module docstring)."""

    stages_attr: str = 'stages'
    feature_fmt: str = 'NCHW'

    def after_stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, 'grad_checkpointing', False) and not torch.jit.is_scripting():
            return checkpoint(stage, x)
        return stage(x)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """The parameters the model's modules declare exempt from weight decay (``no_weight_decay_params``:
        step parameters θ, flux contrasts and knots, norm scales), by their full names."""
        return {f'{path}.{name}' if path else name for path, module in self.named_modules()
                for name in getattr(module, 'no_weight_decay_params', ())
                if isinstance(getattr(module, name, None), nn.Parameter)}

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new classifier of ``num_classes`` outputs (0: none) on the features, in the model's mode."""
        self.num_classes = num_classes
        # factory kwargs from the whole model: the head alone may hold no parameters after reset(0)
        self.head.reset(num_classes, global_pool, in_features=self.num_features, **get_device_dtype(self))
        self.head.train(self.training)
        self.head_hidden_size = self.head.num_features

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages after the last requested tap (and the head); returns the kept indices."""
        stages = getattr(self, self.stages_attr)
        take_indices, max_index = feature_take_indices(len(stages) + 1, indices)
        prune_end = max_index < len(stages)
        setattr(self, self.stages_attr, stages[:max_index])
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: Optional[str] = None,
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Final features and the feature maps after the stem (index 0) and each stage (1…).

        ``indices``: the last n taps if int, all if None, else the listed ones; ``stop_early`` skips the
        stages after the last tap; ``norm`` has no effect (no final norm); ``output_fmt``: the model's
        ``feature_fmt`` (the only layout; None means it).
        """
        if output_fmt is not None and output_fmt != self.feature_fmt:
            raise ValueError(f"output_fmt must be {self.feature_fmt!r}, got {output_fmt!r}")
        x = self.check_input(x)
        stages = getattr(self, self.stages_attr)
        take_indices, max_index = feature_take_indices(len(stages) + 1, indices)
        intermediates: List[torch.Tensor] = []
        x = self.stem(x)
        if 0 in take_indices:
            intermediates.append(self.feature_map(x))
        x = self.after_stem(x)
        if stop_early and not torch.jit.is_scripting():
            stages = stages[:max_index]
        for i, stage in enumerate(stages):
            x = self.run_stage(stage, x)
            if i + 1 in take_indices:
                intermediates.append(self.feature_map(x))
        if intermediates_only:
            return intermediates
        return self.feature_map(x), intermediates

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class Connector(nn.Module):
    """Change of width and resolution between stages (not certified): AvgPool(stride) → 1×1 conv → BN → ReLU,
    for ``dim``-D signals (1, 2 or 3)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 2, dim: int = 2, device=None, dtype=None):
        super().__init__()
        if dim not in (1, 2, 3):
            raise ValueError(f"Connector: dim must be 1, 2 or 3, got {dim!r}")
        dd = {'device': device, 'dtype': dtype}
        pool, conv, norm = ((nn.AvgPool1d, nn.Conv1d, nn.BatchNorm1d), (nn.AvgPool2d, nn.Conv2d, nn.BatchNorm2d),
                            (nn.AvgPool3d, nn.Conv3d, nn.BatchNorm3d))[dim - 1]
        self.pool = pool(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        self.conv = conv(in_chs, out_chs, 1, bias=False, **dd)
        self.bn = norm(out_chs, **dd)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(self.pool(x))))
