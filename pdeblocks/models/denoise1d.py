"""Pretrained-model classes for 1D signals: ``[batch, 1, length]`` in, same shape out.

* :class:`Denoiser1D` (``denoiser-1d``) — a symmetric ResNet: pixel-unshuffle by ``scale``,
  a lifting convolution, ``blocks`` symmetric steps u ↦ u − τKᵀΦ(Ku) with learned nonmonotone
  fluxes (Euclidean stability: ‖step(u)‖ ≤ ‖u‖), a projection of the change the steps made and
  pixel-shuffle back: output = f − P(z₀ − z_N).
* :class:`StandardResNet1D` — the same skeleton with standard residual blocks
  u + W₂Φ(W₁u + b) (two independent convolutions: twice the block parameters), for the
  comparison with Alt et al.'s "half the parameters" claim.
* :class:`Diffusion1D` (``diffusion-1d-perona-malik``) — n symmetric steps u ↦ u − τᵢDᵀΦᵢ(Du)
  with the fixed forward difference D and per-step learned flux Φᵢ and step τᵢ, initialised with
  the Perona–Malik flux and the FED step sizes of ``cycles`` cycles reaching the stopping time T.

All classes use :class:`huggingface_hub.PyTorchModelHubMixin` through its two hooks:
``_save_pretrained`` writes ``config.json`` (``architecture`` + constructor arguments) and
``model.safetensors``; ``_from_pretrained`` loads with :func:`pdeblocks.hub.load_pretrained`
(validated config, strict safetensors loading, never pickle). The mixin decodes ``config.json`` with
:data:`pdeblocks.hub.CONFIG_CODERS`, the decoders :func:`pdeblocks.hub.validate_config` uses.
"""
import functools
import inspect
import math
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

# ARCHITECTURES: the hub's one registry, importable here where it used to live
from ..hub import ARCHITECTURES, CONFIG_CODERS, load_pretrained, register_architecture, save_folder  # noqa: F401
from ..layers.flux import LearnedFlux
from ..layers.symmetric import Dilated1D, SymmetricResidual
from ..ops.schedules import fed_step_sizes, fed_tau_max
from ..ops.stencils import difference_stencil

CARD_KWARGS = dict(library_name='pdeblocks', license='apache-2.0',
                   repo_url='https://github.com/pdeblocks/pdeblocks')


def _recording_arguments(init: Callable) -> Callable:
    """``init`` that first records, on the outermost call, the constructor's arguments (defaults applied)
    as ``self.init_arguments``: what :meth:`Pretrained1D.config` writes to ``config.json``."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if 'init_arguments' not in self.__dict__:   # a subclass's constructor has not recorded its own
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            object.__setattr__(self, 'init_arguments', dict(list(bound.arguments.items())[1:]))
        init(self, *args, **kwargs)
    return __init__


class Pretrained1D(nn.Module, PyTorchModelHubMixin, **CARD_KWARGS, tags=['pdeblocks', '1d-signal'],
                   coders=CONFIG_CODERS):
    """Base class: input checks, config with ``architecture``, strict safetensors save/load.

    A subclass that sets ``architecture`` joins the allow-list of :func:`pdeblocks.hub.architectures`
    (:func:`~pdeblocks.hub.register_architecture`); its constructor arguments must be int, float, str
    or bool (the types of :data:`~pdeblocks.hub.CONFIG_CODERS`).

    ``Cls.from_pretrained`` is the mixin's: a folder or a Hub repo id, resolved by huggingface_hub (an
    offline, uncached repo raises its ``LocalEntryNotFoundError``). Bundled names (``'denoiser-1d'``)
    and the bundled fallback of ``pdeblocks/<name>`` belong to :func:`pdeblocks.from_pretrained`.
    """

    architecture: str = ''
    init_arguments: Dict[str, Any]

    def __init_subclass__(cls, **kwargs):
        kwargs.setdefault('coders', CONFIG_CODERS)   # the mixin takes coders per class, not inherited
        super().__init_subclass__(**kwargs)
        if '__init__' in cls.__dict__:
            cls.__init__ = _recording_arguments(cls.__dict__['__init__'])
        if cls.__dict__.get('architecture'):
            register_architecture(cls)

    @property
    def min_length(self) -> int:
        raise NotImplementedError

    def check_input(self, f: torch.Tensor) -> None:
        if not isinstance(f, torch.Tensor) or f.dim() != 3 or f.shape[1] != 1:
            shape = list(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"{type(self).__name__} expects a float tensor [batch, 1, length], got {shape}")
        if not f.is_floating_point():
            raise ValueError(f"{type(self).__name__} expects a floating point tensor, got {f.dtype}")
        if f.shape[0] == 0:
            raise ValueError(f"{type(self).__name__} expects a non-empty batch, got shape {list(f.shape)}")
        if f.shape[-1] < self.min_length:
            raise ValueError(f"{type(self).__name__} needs signals of length ≥ {self.min_length}, "
                             f"got length {f.shape[-1]}")

    def config(self) -> Dict[str, Any]:
        """``architecture`` + the constructor arguments (what ``config.json`` holds)."""
        return {'architecture': self.architecture, **self.init_arguments}

    def _save_pretrained(self, save_directory: Path) -> None:
        """The mixin's saving hook: ``config.json`` (validated) and ``model.safetensors``, each atomically."""
        save_folder(self, save_directory)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: Optional[str], cache_dir, force_download: bool,
                         local_files_only: bool, token, map_location: str = 'cpu',
                         config: Optional[Dict[str, Any]] = None, **model_kwargs):
        """The mixin's loading hook: :func:`pdeblocks.hub.load_pretrained` (validated config, strict
        safetensors, no pickle) of a folder or Hub repo id; the config's architecture must be this class's.

        The mixin passes the decoded ``config`` and its constructor arguments; any other argument is an
        error, since the architecture and its arguments come from ``config.json``.
        """
        given = sorted(k for k, v in model_kwargs.items()
                       if not (isinstance(config, dict) and k in config and config[k] == v))
        if given:
            raise ValueError(f"unexpected arguments {given}: the architecture and its arguments come from config.json")
        return load_pretrained(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                               local_files_only=local_files_only, token=token, map_location=map_location,
                               expected_architecture=cls.architecture)

    @torch.no_grad()
    def predict(self, f: torch.Tensor, chunk_samples: int = 1 << 17) -> torch.Tensor:
        """The model applied to ``f`` [batch, 1, length] without autograd, in chunks of about
        ``chunk_samples`` samples (at least one signal each): on a CPU the activations of a chunk stay
        in cache, which is faster than one large batch (see ``benchmarks/bench_denoise.py``) and bounds
        the memory. The same values as ``self(f)``."""
        self.check_input(f)
        if chunk_samples < 1:
            raise ValueError(f"chunk_samples must be ≥ 1, got {chunk_samples}")
        step = max(1, chunk_samples // f.shape[-1])
        return torch.cat([self(f[i:i + step]) for i in range(0, f.shape[0], step)])

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _unshuffle(f: torch.Tensor, scale: int) -> torch.Tensor:
    """[B, 1, L] (L divisible by s) → [B, s, L/s]: channel j holds samples j, j + s, …"""
    b, _, n = f.shape
    return f.reshape(b, n // scale, scale).transpose(1, 2)


def _shuffle(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_unshuffle`: [B, s, m] → [B, 1, s·m]."""
    b, s, m = x.shape
    return x.transpose(1, 2).reshape(b, 1, m * s)


class _Skeleton1D(Pretrained1D):
    """unshuffle → lift → residual blocks → project the change → shuffle: f − P(z₀ − z_N).

    z₀ = lift(f) and z_N the output of the blocks: the network returns f minus the projected change
    the blocks made. For symmetric (diffusion) blocks this lets the output be the diffused signal
    (if P inverts the lift, f − P(z₀ − z_N) = P z_N) instead of a noise estimate read off
    smoothed features.
    """

    def build_skeleton(self, scale: int, channels: int, kernel_size: int, dilation: int = 1) -> None:
        """The lift and the projection; ``dilation``: the largest dilation of a block
        (:class:`~pdeblocks.layers.symmetric.Dilated1D`): the unshuffled length is padded to a multiple of it."""
        if scale < 1 or channels < 1 or kernel_size < 1 or kernel_size % 2 == 0 or dilation < 1:
            raise ValueError(f"need scale ≥ 1, channels ≥ 1, an odd kernel_size and dilation ≥ 1; got scale={scale}, "
                             f"channels={channels}, kernel_size={kernel_size}, dilation={dilation}")
        self.scale = scale
        self.kernel_size = kernel_size
        self.dilation = dilation
        pad = kernel_size // 2
        self.lift = nn.Conv1d(scale, channels, kernel_size, padding=pad, padding_mode='replicate')
        self.project = nn.Conv1d(channels, scale, kernel_size, padding=pad, padding_mode='replicate')
        nn.init.zeros_(self.project.weight)  # start as the identity f ↦ f
        nn.init.zeros_(self.project.bias)

    @property
    def min_length(self) -> int:
        return self.scale * self.kernel_size * self.dilation

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        self.check_input(f)
        n = f.shape[-1]
        extra = (-n) % (self.scale * self.dilation)
        x = F.pad(f, (0, extra), mode='replicate') if extra else f
        z0 = self.lift(_unshuffle(x, self.scale))
        z = z0
        for block in self.blocks:
            z = block(z)
        # the change the blocks made to the lifted signal, projected back: out = f − P(z₀ − z_N)
        residual = _shuffle(self.project(z0 - z))[..., :n]
        return f - residual


class Denoiser1D(_Skeleton1D, tags=['denoising', 'symmetric-resnet', 'nonlinear-diffusion']):
    """Symmetric ResNet denoiser for 1D signals with learned nonmonotone fluxes.

    f ∈ [B, 1, L] → unshuffle by s → lift (conv s→C) → ``blocks`` × [u − τKᵀΦ(Ku)] (K: C→H,
    kernel k, Neumann boundary, :class:`~pdeblocks.layers.flux.LearnedFlux` with g ∈ [0, 1],
    Euclidean stability; ``stability='retracted'``: a free τ with the same guarantee ‖step(z)‖ ≤ ‖z‖ kept by
    :func:`~pdeblocks.layers.symmetric.retract`; ``stability='none'``: a free step, no guarantee) → project the change
    z₀ − z_N (conv C→s) → shuffle → f − P(z₀ − z_N).

    Minimum length: ``scale · kernel_size · dilation`` samples; any longer length works (padded by edge
    replication to a multiple of ``scale · dilation`` internally, cropped back).

    ``dilation`` D > 1, a power of two: the blocks cycle through the dilations 1, 2, 4, …, D
    (:class:`~pdeblocks.layers.symmetric.Dilated1D`; D = 2: every second block at dilation 2). A K at dilation d
    reaches d times as far, so at the same certified τ its step diffuses d² times as far: the network reaches
    further on a fine grid (``scale``) without more steps or parameters.

    ``interp_slack``: how far the norm bound B ≥ ‖K‖ may exceed the symbol's maximum on its frequency
    grid (:func:`~pdeblocks.ops.norms.default_grid`). Since τ ≤ 2/(L·B²), a tighter B allows larger
    steps; 1D grids are cheap (1.005: 63 frequencies for 5 taps, one H×C matrix each).
    """

    architecture = 'denoiser_1d'

    def __init__(self, scale: int = 8, channels: int = 32, hidden_channels: int = 32, blocks: int = 8,
                 kernel_size: int = 5, knots: int = 16, contrast: float = 1.0, support: float = 4.0,
                 step_init: float = 0.5, stability: str = 'euclidean', interp_slack: float = 1.1,
                 dilation: int = 1):
        super().__init__()
        if stability not in ('euclidean', 'retracted', 'none'):
            raise ValueError(f"stability must be 'euclidean', 'retracted' or 'none' (nonmonotone fluxes), got "
                             f"{stability!r}")
        if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1 or dilation & (dilation - 1):
            raise ValueError(f"dilation must be a power of two (the largest of the cycle 1, 2, 4, …), got {dilation!r}")
        self.build_skeleton(scale, channels, kernel_size, dilation)
        cycle = dilation.bit_length()     # 1, 2, …, D: log₂ D + 1 dilations

        def step(i: int) -> nn.Module:
            block = SymmetricResidual(channels, hidden_channels, kernel_size, dim=1,
                                      flux=LearnedFlux(hidden_channels, contrast=contrast, knots=knots,
                                                       support=support),
                                      boundary='neumann', stability=stability, step_init=step_init,
                                      interp_slack=interp_slack)
            return Dilated1D(block, 1 << i % cycle) if i % cycle else block
        self.blocks = nn.ModuleList([step(i) for i in range(blocks)])


class StandardBlock1D(nn.Module):
    """u ↦ u + W₂ Φ(W₁u + b₁): independent convolutions W₁: C→H (with bias) and W₂: H→C."""

    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, knots: int, contrast: float,
                 support: float):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(channels, hidden_channels, kernel_size, padding=pad)
        self.flux = LearnedFlux(hidden_channels, contrast=contrast, knots=knots, support=support)
        self.conv2 = nn.Conv1d(hidden_channels, channels, kernel_size, padding=pad, bias=False)
        nn.init.normal_(self.conv2.weight, std=0.5 / math.sqrt(hidden_channels * kernel_size))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u + self.conv2(self.flux(self.conv1(u)))


class StandardResNet1D(_Skeleton1D, tags=['denoising', 'resnet']):
    """The non-symmetric comparison: same skeleton as :class:`Denoiser1D`, standard residual blocks
    u + W₂Φ(W₁u + b₁) with the same learned flux, hence about twice the block parameters."""

    architecture = 'standard_resnet_1d'

    def __init__(self, scale: int = 8, channels: int = 32, hidden_channels: int = 32, blocks: int = 8,
                 kernel_size: int = 5, knots: int = 16, contrast: float = 1.0, support: float = 4.0):
        super().__init__()
        self.build_skeleton(scale, channels, kernel_size)
        self.blocks = nn.ModuleList([
            StandardBlock1D(channels, hidden_channels, kernel_size, knots, contrast, support)
            for _ in range(blocks)])


class Diffusion1D(Pretrained1D, tags=['nonlinear-diffusion', 'perona-malik', 'fed']):
    """n learned explicit steps u ↦ u − τᵢ Dᵀ Φᵢ(D u) of 1D nonlinear diffusion to time T.

    D: the fixed m-th forward difference (``order`` m, Neumann boundary: zero flux at the ends).
    Φᵢ: per-step :class:`~pdeblocks.layers.flux.LearnedFlux` initialised on Perona–Malik with
    contrast λ (``contrast``). τᵢ: per-step free step sizes initialised with the FED cycle
    ``cycles`` FED cycles of m = n/cycles steps, ``fed_step_sizes(m, τ_max)`` with
    τ_max = 3T/(cycles·(m² + m)) (Σ τᵢ = T).

    Stability, honestly: FED steps are far beyond the explicit limit 2/(L‖D‖²) (the largest is
    ≈ 0.4·m²·τ_max), so the steps use ``stability='none'`` and carry no per-step certificate; a
    FED cycle is only provably stable for a frozen linear operator and τ_max ≤ 2/(L‖D‖²) = 1/2
    (which the published configuration satisfies at initialisation: 4 cycles of 4 steps to T = 10,
    τ_max = 0.375). The trained network is validated on the test split (error, max–min range)
    instead — see the model card.

    Minimum length: ``order + 1`` samples.
    """

    architecture = 'diffusion_1d'

    def __init__(self, layers: int = 16, time: float = 10.0, contrast: float = 0.1, order: int = 1,
                 knots: int = 32, support: float = 10.0, cycles: int = 4):
        super().__init__()
        if layers < 1 or time <= 0 or contrast <= 0 or order not in (1, 2) or cycles < 1 or layers % cycles:
            raise ValueError(f"need layers ≥ 1, time > 0, contrast > 0, order in (1, 2), cycles dividing layers; "
                             f"got layers={layers}, time={time}, contrast={contrast}, order={order}, cycles={cycles}")
        self.order = order
        self.time = time
        stencil = difference_stencil(order, dim=1, channels=1)
        m = layers // cycles
        taus = fed_step_sizes(m, fed_tau_max(time, m, cycles)) * cycles
        self.steps = nn.ModuleList()
        for tau in taus:
            step = SymmetricResidual(1, 1, order + 1, dim=1,
                                     flux=LearnedFlux(1, contrast=contrast, knots=knots, support=support),
                                     boundary='neumann', stability='none', weight=stencil, trainable_weight=False)
            with torch.no_grad():
                step.step_param.fill_(tau)
            self.steps.append(step)

    @property
    def min_length(self) -> int:
        return self.order + 1

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        self.check_input(f)
        u = f
        for step in self.steps:
            u = step(u)
        return u
