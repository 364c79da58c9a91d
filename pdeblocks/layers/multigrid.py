"""Multigrid as a network: a trainable V/W-cycle solver and the multigrid U-net of Alt et al. (JMIV 2022).

The dictionary (multigrid ↔ U-net): smoothing steps are the convolution layers, restriction R the
strided down-path, prolongation P = c·Rᵀ the transposed up-path sharing R's weight, and the
coarse-grid correction the additive skip connection.

* :class:`MultigridCycle` — ``cycles`` V- or W-cycles for A u = f, A a fixed stencil (e.g. the
  Poisson stencil) or σI + KᵀK with a trainable K; differentiable in K, R and f.
* :class:`GridTransfer` — a trainable (or full-weighting) restriction between two channel widths and
  its prolongation P = 2^d·Rᵀ by the exact adjoint.
* :class:`MultigridUNet` — each level a stack of stable PDE steps (:class:`SymmetricResidual`),
  down by R, up by the full-approximation-scheme coarse-grid correction

      x ← x + P (c − R x),    c = coarse levels applied to R x (γ times for a W-cycle),

  so that a coarse level that changes nothing corrects nothing. Any input size is padded by the
  boundary condition to a multiple of 2^(levels−1) and cropped back. ``certify(unet)`` lists its
  SymmetricResidual blocks; :meth:`MultigridUNet.network_certificate` bounds the whole net.

One module (about 410 lines): the cycle and the U-net are the two sides of the dictionary above, solver and
network, with the same restriction (full weighting or a learned stride-2 convolution, :mod:`pdeblocks.ops.transfer`)
and prolongation P = 2^d·Rᵀ; they are read and tested side by side.
"""
import math
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.conv import check_boundary, min_signal_size
from ..ops.multigrid import (
    CYCLES,
    GRID_BOUNDARIES,
    GramOperator,
    Multigrid,
    StencilOperator,
    check_cycle_settings,
    poisson_stencil,
)
from ..ops.norms import norm_bound
from ..ops.stencils import difference_stencil
from ..ops.transfer import full_weighting, interpolation_scale, strided_conv, strided_conv_adjoint
from ..stability import Certificate
from .symmetric import SymmetricResidual

__all__ = ['GridTransfer', 'MultigridCycle', 'MultigridUNet']

# the transfer's padding for each U-net boundary: Neumann (zero flux) extends by mirroring
TRANSFER_PADDING = {'neumann': 'reflect', 'reflect': 'reflect', 'zeros': 'zeros', 'circular': 'circular'}
SIGNAL_PADDING = {'neumann': 'reflect', 'reflect': 'reflect', 'zeros': 'constant', 'circular': 'circular'}


class MultigridCycle(nn.Module):
    """u ← (V- or W-cycle)^cycles (u, f) for A u = f on ``[B, C, *spatial]`` signals.

    Args:
        dim: 1, 2 or 3 spatial dimensions.
        channels: C, channels of u and f.
        operator: ``'poisson'`` (−Δ_h with ``spacing`` h), a stencil weight ``[C, C, k, …]``, or
            ``'gram'``: A = σI + KᵀK with K ``[H, C, k, …]`` trainable, initialised to the forward
            differences along each axis (so A starts as σI − Δ_h, the implicit diffusion matrix);
            K is the full convolution for ``'zeros'`` (Dirichlet), see :class:`~pdeblocks.ops.multigrid.GramOperator`.
        kernel_size, hidden_channels: K's size and H for ``'gram'`` (default k = 3, H = dim·C).
        shift: σ ≥ 0 for ``'gram'``.
        boundary: ``'zeros'`` (Dirichlet, sizes 2^(levels−1)·m − 1) or ``'circular'`` (periodic).
        levels, cycle, smoother, damping, pre_smooth, post_smooth, coarse_solve, coarse_steps,
        coarse_operator, order: see :class:`pdeblocks.ops.multigrid.Multigrid`.
        cycles: cycles per forward call.
        restriction: ``'full_weighting'`` (fixed) or ``'learned'`` (a trainable stride-2 convolution
            initialised to full weighting); P = 2^d·Rᵀ shares its weight.
        trainable: whether a stencil given as a tensor (or ``'poisson'``) is trained.

    ``forward(f, u=None)`` returns u (zeros if not given) after ``cycles`` cycles.
    """

    def __init__(self, dim: int = 2, channels: int = 1, operator: Union[str, torch.Tensor] = 'poisson',
                 kernel_size: int = 3, hidden_channels: Optional[int] = None, shift: float = 1.0,
                 spacing: float = 1.0, boundary: str = 'zeros', levels: int = 3, cycle: str = 'V', cycles: int = 1,
                 smoother: str = 'jacobi', damping: Optional[float] = None, pre_smooth: int = 2, post_smooth: int = 2,
                 coarse_solve: str = 'smooth', coarse_steps: int = 20, coarse_operator: str = 'galerkin',
                 order: int = 2, restriction: str = 'full_weighting', trainable: bool = False,
                 device=None, dtype=None):
        super().__init__()
        if dim not in (1, 2, 3):
            raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
        if channels < 1:
            raise ValueError(f"channels must be ≥ 1, got {channels}")
        if boundary not in GRID_BOUNDARIES:
            raise ValueError(f"MultigridCycle supports boundary {GRID_BOUNDARIES}, got {boundary!r}")
        check_cycle_settings(levels, cycle, smoother, damping, pre_smooth, post_smooth, coarse_solve, coarse_steps,
                             coarse_operator)
        if cycles < 1:
            raise ValueError(f"cycles must be ≥ 1, got {cycles}")
        if restriction not in ('full_weighting', 'learned'):
            raise ValueError(f"restriction must be 'full_weighting' or 'learned', got {restriction!r}")
        self.dim = dim
        self.channels = channels
        self.boundary = boundary
        self.levels = levels
        self.cycles = cycles
        self.settings = dict(cycle=cycle, smoother=smoother, damping=damping, pre_smooth=pre_smooth,
                             post_smooth=post_smooth, coarse_solve=coarse_solve, coarse_steps=coarse_steps,
                             coarse_operator=coarse_operator, order=order)
        self.shift = float(shift)
        self.gram = isinstance(operator, str) and operator == 'gram'
        if self.gram:
            if shift < 0:
                raise ValueError(f"shift σ must be ≥ 0, got {shift}")
            if coarse_operator != 'galerkin':
                raise ValueError("operator='gram' needs coarse_operator='galerkin'")
            hidden = dim * channels if hidden_channels is None else hidden_channels
            if kernel_size == 3 and hidden == dim * channels:
                k = difference_stencil(1, dim, channels, spacing=spacing, centred=True, dtype=dtype, device=device)
            else:
                fan_in = channels * kernel_size ** dim
                k = torch.randn([hidden, channels] + [kernel_size] * dim, device=device, dtype=dtype) / math.sqrt(fan_in)
            self.weight = nn.Parameter(k)
        else:
            if isinstance(operator, str):
                if operator != 'poisson':
                    raise ValueError(f"operator must be 'poisson', 'gram' or a stencil tensor, got {operator!r}")
                w = poisson_stencil(dim, spacing, channels, dtype=dtype, device=device)
            else:
                expected = [channels, channels]
                if operator.dim() != dim + 2 or list(operator.shape[:2]) != expected:
                    raise ValueError(f"a stencil for {channels} channels in {dim}D must have shape "
                                     f"[{channels}, {channels}, k, ...], got {list(operator.shape)}")
                w = operator.detach().clone().to(device=device, dtype=dtype)
            self.weight = nn.Parameter(w, requires_grad=trainable)
        r = full_weighting(dim, channels, dtype=dtype, device=device)
        if restriction == 'learned':
            self.restriction = nn.Parameter(r)
        else:
            self.register_buffer('restriction', r)

    def operator(self) -> Union[StencilOperator, GramOperator]:
        """The finest-grid operator A with the current weights."""
        if self.gram:
            return GramOperator(self.weight, self.boundary, self.shift)
        return StencilOperator(self.weight, self.boundary)

    def hierarchy(self, size: List[int]) -> Multigrid:
        """The grid hierarchy for signals of spatial ``size`` (built from the current weights)."""
        return Multigrid(self.operator(), size, self.levels, restriction=self.restriction, **self.settings)

    def residual(self, u: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """f − A u."""
        return f - self.operator()(u)

    def forward(self, f: torch.Tensor, u: Optional[torch.Tensor] = None) -> torch.Tensor:
        if f.dim() != self.dim + 2 or f.shape[1] != self.channels:
            raise ValueError(f"expected f of shape [batch, {self.channels}, {self.dim} spatial dims], got {list(f.shape)}")
        if u is not None and u.shape != f.shape:
            raise ValueError(f"u must have f's shape {list(f.shape)}, got {list(u.shape)}")
        mg = self.hierarchy(list(f.shape[2:]))
        u = torch.zeros_like(f) if u is None else u
        for _ in range(self.cycles):
            u = mg.cycle(u, f)
        return u

    def extra_repr(self) -> str:
        kind = f"gram(shift={self.shift})" if self.gram else "stencil"
        return (f"dim={self.dim}, channels={self.channels}, operator={kind}, boundary={self.boundary!r}, "
                f"levels={self.levels}, cycles={self.cycles}, {self.settings}")


class GridTransfer(nn.Module):
    """Restriction R: C_fine → C_coarse channels, a stride-2 convolution (kernel 3), and P = 2^d·Rᵀ.

    ``learned=True``: trainable weight initialised to full weighting on a channel map E with
    E[o, o mod C_fine] = 1 (normalised to ‖E‖₂ = 1) plus small noise; ``learned=False``: full
    weighting (needs C_coarse = C_fine). ``boundary`` is the padding of the strided convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, dim: int = 2, boundary: str = 'reflect',
                 learned: bool = True, device=None, dtype=None):
        super().__init__()
        check_boundary(boundary)
        if boundary == 'neumann':
            raise ValueError("GridTransfer needs a padded boundary ('zeros', 'circular', 'reflect'), got 'neumann'")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channel counts must be ≥ 1, got {in_channels} → {out_channels}")
        self.dim = dim
        self.boundary = boundary
        self.scale = interpolation_scale(dim)
        fw = full_weighting(dim, 1, dtype=dtype, device=device)[0, 0]
        if learned:
            mix = torch.zeros(out_channels, in_channels, device=device, dtype=dtype)
            for o in range(out_channels):
                mix[o, o % in_channels] = 1.0
            mix = mix / torch.linalg.matrix_norm(mix.double(), ord=2).to(mix.dtype)
            w = mix.reshape([out_channels, in_channels] + [1] * dim) * fw
            w = w + 0.01 * torch.randn_like(w) / math.sqrt(in_channels * 3 ** dim)
            self.weight = nn.Parameter(w)
        else:
            if in_channels != out_channels:
                raise ValueError(f"full weighting keeps the channel count: got {in_channels} → {out_channels}; "
                                 f"use learned=True to change it")
            self.register_buffer('weight', full_weighting(dim, in_channels, dtype=dtype, device=device))

    def restrict(self, x: torch.Tensor) -> torch.Tensor:
        """R x, halving each (even) spatial size."""
        return strided_conv(x, self.weight, self.boundary)

    def prolong(self, y: torch.Tensor, size: List[int]) -> torch.Tensor:
        """P y = 2^d·Rᵀ y onto the fine grid of spatial ``size``."""
        return self.scale * strided_conv_adjoint(y, self.weight, size, self.boundary)

    def norm_bound(self) -> float:
        """B ≥ ‖R‖₂ (the stride-1 convolution's rigorous bound: subsampling has norm 1)."""
        with torch.no_grad():
            return float(norm_bound(self.weight.detach(), self.boundary))


def _stack_certificate(stack: nn.Sequential) -> Dict[str, Optional[float]]:
    lip: Optional[float] = 1.0
    nf: Optional[float] = 1.0
    taus: List[float] = []
    for block in stack:
        cert = block.stability_certificate()
        taus.append(cert.step_size)
        lip = None if lip is None or cert.lipschitz is None else lip * cert.lipschitz
        nf = None if nf is None or cert.norm_factor is None else nf * cert.norm_factor
    return dict(lipschitz=lip, norm_factor=nf, min_step=min(taus) if taus else None)


class MultigridUNet(nn.Module):
    """A U-net that is a multigrid cycle of stable PDE steps.

    Args:
        dim: 1 or 2 (3 works too) spatial dimensions.
        in_channels, out_channels: channels of input and output (1×1 lift and head, bias-free).
        channels: width per level, finest first (a sequence), or the finest width (an int, doubled per level).
        levels: number of grids; default ``len(channels)``; must match a sequence's length.
        cycle: ``'V'`` or ``'W'`` (the coarse levels visited twice with the same weights).
        pre_smooth, post_smooth, coarse_steps: SymmetricResidual steps per level before R, after the
            correction, and on the coarsest grid.
        kernel_size, flux, boundary, stability, step_init, drop_path, and ``block_kwargs``: passed to
            every :class:`SymmetricResidual`.
        restriction: ``'learned'`` (trainable stride-2 convolutions) or ``'full_weighting'`` (needs
            equal widths).

    ``forward(x)`` maps ``[B, in_channels, *spatial]`` to ``[B, out_channels, *spatial]`` for any
    spatial size whose coarsest grid ⌈n/2^(levels−1)⌉ still fits the kernel;
    ``forward_features(x)`` returns the per-level tensors (finest first; level l has ``channels[l]``
    channels and spatial size ⌈n/2^l⌉); ``feature_info`` describes them as timm does.
    """

    def __init__(self, dim: int = 2, in_channels: int = 1, out_channels: int = 1,
                 channels: Union[int, Sequence[int]] = (16, 32, 64), levels: Optional[int] = None,
                 cycle: str = 'V', pre_smooth: int = 2, post_smooth: int = 2, coarse_steps: int = 2,
                 kernel_size: int = 3, flux: str = 'perona_malik', boundary: str = 'neumann',
                 stability: str = 'euclidean', restriction: str = 'learned', step_init: float = 0.5,
                 drop_path: float = 0.0, device=None, dtype=None, **block_kwargs: Any):
        super().__init__()
        if dim not in (1, 2, 3):
            raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be ≥ 1, got {in_channels}, {out_channels}")
        if isinstance(channels, int):
            widths = [channels * 2 ** lev for lev in range(levels if levels is not None else 3)]
        else:
            widths = [int(c) for c in channels]
            if levels is not None and levels != len(widths):
                raise ValueError(f"levels={levels} does not match the {len(widths)} channel counts {widths}")
        if not widths or any(c < 1 for c in widths):
            raise ValueError(f"channels must be positive widths, one per level, got {widths}")
        if cycle not in CYCLES:
            raise ValueError(f"cycle must be one of {tuple(CYCLES)}, got {cycle!r}")
        if restriction not in ('learned', 'full_weighting'):
            raise ValueError(f"restriction must be 'learned' or 'full_weighting', got {restriction!r}")
        for name, v in (('pre_smooth', pre_smooth), ('post_smooth', post_smooth), ('coarse_steps', coarse_steps)):
            if v < 0:
                raise ValueError(f"{name} must be ≥ 0, got {v}")
        check_boundary(boundary)
        self.dim = dim
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.widths = widths
        self.levels = len(widths)
        self.gamma = CYCLES[cycle]
        self.cycle = cycle
        self.boundary = boundary
        self.kernel_size = kernel_size
        self.min_coarse = max(2, min_signal_size(kernel_size, boundary))

        def steps(width: int, count: int) -> nn.Sequential:
            return nn.Sequential(*[
                SymmetricResidual(width, kernel_size=kernel_size, dim=dim, flux=flux, boundary=boundary,
                                  stability=stability, step_init=step_init, drop_path=drop_path,
                                  device=device, dtype=dtype, **block_kwargs) for _ in range(count)])

        fan = 1.0 / math.sqrt(in_channels)
        self.lift = nn.Parameter(torch.randn([widths[0], in_channels] + [1] * dim, device=device, dtype=dtype) * fan)
        self.head = nn.Parameter(torch.randn([out_channels, widths[0]] + [1] * dim, device=device, dtype=dtype)
                                 / math.sqrt(widths[0]))
        last = self.levels - 1
        self.pre = nn.ModuleList([steps(w, coarse_steps if lev == last else pre_smooth) for lev, w in enumerate(widths)])
        self.post = nn.ModuleList([steps(w, post_smooth) for w in widths[:-1]])
        self.transfer = nn.ModuleList([
            GridTransfer(widths[lev], widths[lev + 1], dim, TRANSFER_PADDING[boundary], learned=restriction == 'learned',
                         device=device, dtype=dtype) for lev in range(last)])
        self.feature_info = [dict(num_chs=w, reduction=2 ** lev, module=f'pre.{lev}' if lev == last else f'post.{lev}')
                             for lev, w in enumerate(widths)]

    def max_levels(self, n: int) -> int:
        """How many levels a spatial size n allows: ⌈n/2^(L−1)⌉ must be ≥ the coarsest-grid minimum."""
        levels = 1
        while math.ceil(n / 2 ** levels) >= self.min_coarse:
            levels += 1
        return levels

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.dim + 2:
            raise ValueError(f"expected a {self.dim + 2}D tensor [batch, channels, {self.dim} spatial dims], "
                             f"got shape {list(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]} (shape {list(x.shape)})")
        for n in x.shape[2:]:
            if math.ceil(n / 2 ** (self.levels - 1)) < self.min_coarse:
                raise ValueError(
                    f"levels={self.levels} is too many for spatial size {n}: the coarsest grid ⌈{n}/2^{self.levels - 1}⌉ "
                    f"must be ≥ {self.min_coarse} (kernel {self.kernel_size}, boundary {self.boundary!r}); "
                    f"size {n} allows at most {self.max_levels(n)} levels")

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Extend each axis at its end, by the boundary condition, to a multiple of 2^(levels−1)."""
        multiple = 2 ** (self.levels - 1)
        spec: List[int] = []
        for n in reversed(x.shape[2:]):
            spec += [0, (-n) % multiple]
        if not any(spec):
            return x
        return F.pad(x, spec, mode=SIGNAL_PADDING[self.boundary])

    def _level(self, level: int, x: torch.Tensor, features: List[Optional[torch.Tensor]]) -> torch.Tensor:
        x = self.pre[level](x)
        if level < self.levels - 1:
            transfer = self.transfer[level]
            r = transfer.restrict(x)
            c = r
            for _ in range(self.gamma):
                c = self._level(level + 1, c, features)
            x = x + transfer.prolong(c - r, list(x.shape[2:]))  # coarse-grid correction (FAS)
            x = self.post[level](x)
        features[level] = x
        return x

    def _lift(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensordot(self.lift.flatten(1), x, dims=([1], [1])).movedim(0, 1)

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Per-level tensors after the cycle, finest first, cropped to ⌈n/2^l⌉ per axis."""
        self.check_input(x)
        size = list(x.shape[2:])
        features: List[Optional[torch.Tensor]] = [None] * self.levels
        self._level(0, self.pad(self._lift(x)), features)
        out: List[torch.Tensor] = []
        for lev, feat in enumerate(features):
            assert feat is not None
            for a, n in enumerate(size):
                feat = feat.narrow(2 + a, 0, math.ceil(n / 2 ** lev))
            out.append(feat)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fine = self.forward_features(x)[0]
        return torch.tensordot(self.head.flatten(1), fine, dims=([1], [1])).movedim(0, 1)

    def network_certificate(self) -> Certificate:
        """Rigorous (loose) bounds for the whole net, in the certificate format, composed from the blocks':

        level map T_l = post ∘ (x ↦ x + P(G(Rx) − Rx)) ∘ pre with G = T_{l+1}^γ, so
        Lip(T_l) ≤ Lip(post)·(1 + ‖P‖‖R‖(Lip(G) + 1))·Lip(pre), ‖P‖ = 2^d‖R‖, and the same for the
        norm factor (all maps vanish at 0 when the blocks are bias-free); lift and head are linear.

        Deliberately not named ``stability_certificate``: :func:`pdeblocks.stability.certify` stops at a
        certified module, and should list the SymmetricResidual blocks themselves. Its chain product
        of the blocks is *not* a bound for the U-net (R, P and the skips sit between them); this is.
        """
        with torch.no_grad():
            lip_c: Optional[float] = None
            norm_c: Optional[float] = None
            steps: List[float] = []
            for level in range(self.levels - 1, -1, -1):
                pre = _stack_certificate(self.pre[level])
                if pre['min_step'] is not None:
                    steps.append(pre['min_step'])
                lip, nf = pre['lipschitz'], pre['norm_factor']
                if level < self.levels - 1:
                    post = _stack_certificate(self.post[level])
                    if post['min_step'] is not None:
                        steps.append(post['min_step'])
                    rr = self.transfer[level].scale * self.transfer[level].norm_bound() ** 2  # ≥ ‖P‖‖R‖
                    lip = (None if lip is None or lip_c is None or post['lipschitz'] is None
                           else post['lipschitz'] * (1.0 + rr * (lip_c ** self.gamma + 1.0)) * lip)
                    nf = (None if nf is None or norm_c is None or post['norm_factor'] is None
                          else post['norm_factor'] * (1.0 + rr * (norm_c ** self.gamma + 1.0)) * nf)
                lip_c, norm_c = lip, nf
            outer = float(torch.linalg.matrix_norm(self.lift.flatten(1).double(), ord=2)
                          * torch.linalg.matrix_norm(self.head.flatten(1).double(), ord=2))
        lipschitz = None if lip_c is None else outer * lip_c
        norm_factor = None if norm_c is None else outer * norm_c
        guarantee = ('none' if lipschitz is None and norm_factor is None else
                     '‖f(u)‖ ≤ c‖u‖' + (', ‖f(u) − f(v)‖ ≤ L‖u − v‖' if lipschitz is not None else '')
                     + ' (composed from the SymmetricResidual blocks, ‖R‖ and ‖P‖ = 2^d‖R‖)')
        passes = {b.certified_passes() for stack in list(self.pre) + list(self.post) for b in stack}
        return Certificate(mode='composite', step_size=min(steps) if steps else 0.0, norm_bound=None,
                           sector_bound=None, norm_factor=norm_factor, lipschitz=lipschitz, guarantee=guarantee,
                           passes='none' if norm_factor is None and lipschitz is None else
                           ('eval' if 'eval' in passes else 'all'))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"channels={self.widths}, cycle={self.cycle!r}, boundary={self.boundary!r}")
