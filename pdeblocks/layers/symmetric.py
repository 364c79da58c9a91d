"""The symmetric residual block u ↦ u − τ Kᵀ Φ(K u + b) of Alt et al. and its timm drop-in.

One explicit step of the nonlinear diffusion ∂ₜu = −Kᵀ Φ(K u): K is a convolution, Kᵀ its exact
adjoint with the *same* weight tensor (half the parameters of a standard residual block), Φ a flux
activation (:mod:`pdeblocks.layers.flux`) and τ the step size.

Stability modes (``stability=``):

* ``'euclidean'`` — ‖f(u)‖₂ ≤ ‖u‖₂ for every input (Alt et al., JMIV 2022): bias-free inner layer,
  any flux with 0 ≤ Φ(s)/s ≤ L (nonmonotone allowed), τ ≤ 2/(L‖K‖²). Proof sketch:
  ‖u − τKᵀΦ‖² = ‖u‖² − 2τ⟨Ku, Φ(Ku)⟩ + τ²‖KᵀΦ‖², and ‖KᵀΦ‖² ≤ ‖K‖²‖Φ‖² ≤ ‖K‖² L ⟨Ku, Φ(Ku)⟩.
* ``'lipschitz'`` — ‖f(u) − f(v)‖₂ ≤ ‖u − v‖₂ (convex-potential form, as CPL): monotone flux with
  slope in [0, L], bias allowed, τ ≤ 2/(L‖K‖²).
* ``'retracted'`` — ‖f(u)‖₂ ≤ ‖u‖₂ for every input by retraction: a free τ, and the step's output y
  replaced by y·min(1, ‖u‖/‖y‖) per sample (:func:`retract`, the nearest point of the ball of radius ‖u‖),
  any flux, bias allowed. The promise of ``'euclidean'`` without a limit on τ: a step may overshoot on some
  components where it contracts others more. Lipschitz ≤ 2 + |τ|·L_Φ·‖K‖² (the projection is 1-Lipschitz in y
  and in the radius ‖u‖). Not local: the factor is one number per sample.
* ``'none'`` — a free trainable τ, for comparison with an unconstrained ResNet.

In ``'euclidean'`` and ``'lipschitz'`` τ = sigmoid(θ) · 2/(L·B²), B ≥ ‖K‖₂ a rigorous bound
(:func:`pdeblocks.ops.norms.norm_bound`) that follows every change of the weight, so no optimizer
step can leave the stable region. Which passes use the rigorous B (all, or eval-mode passes under
the training contract) and how B's gradient flows is the block's ``certification``
(:mod:`pdeblocks.layers.certificate`).
"""
import math
import warnings
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

import torch
from timm.layers import DropPath
from timm.models import register_notrace_function
from torch import nn

from ..ops.conv import check_boundary, check_kernel_size, check_signal, conv, conv_adjoint
from ..ops.transfer import strided_conv, strided_conv_adjoint
from ..stability import Certificate
from .certificate import Certification, NormCertificate
from .flux import Flux, ReLUFlux, create_flux, flux_constants
from .registry import register_block

STABILITY_MODES = ('euclidean', 'lipschitz', 'retracted', 'none')
FREE_STEP_MODES = ('retracted', 'none')     # τ is the parameter itself, not a fraction of 2/(L·B²)
# state_dict key suffix of the stored norm bound (PyTorch's extra-state key); optional when loading
NORM_BOUND_STATE = '_extra_state'
# ‖K‖² of the default initialisation is about 4 (the Marchenko–Pastur edge (1 + 1)²); used only to
# give the free step of stability='none' the same starting point as the stable modes.
_TYPICAL_NORM_SQ = 4.0


# K and Kᵀ (strided too) are leaves for torch.fx: their padding logic reads the kernel's and the input's shapes.
register_notrace_function(conv)
register_notrace_function(conv_adjoint)
register_notrace_function(strided_conv)
register_notrace_function(strided_conv_adjoint)


@register_notrace_function
def retract(y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """y·min(1, ‖u‖/‖y‖), norms per sample (over every axis but the first): the point of the ball of radius ‖u‖
    nearest to y, so ‖out‖ ≤ ‖u‖. Where u is finite and y is not (a step that overflowed), 0; a non-finite u
    propagates. A leaf for torch.fx."""
    norm_y = torch.linalg.vector_norm(y.flatten(1), dim=1)
    norm_u = torch.linalg.vector_norm(u.flatten(1), dim=1)
    grew = norm_y > norm_u
    one = torch.ones_like(norm_y)
    # the quotient only where it is taken: elsewhere (y = 0 included) its gradient would be 0/0
    ratio = torch.where(grew, norm_u / torch.where(grew, norm_y, one), one)
    overflow = torch.isfinite(norm_u) & ~torch.isfinite(norm_y)
    shape = [-1] + [1] * (y.dim() - 1)
    out = y * ratio.reshape(shape)
    # on the CPU a full-size where costs 2–3× the rest, and overflow is rare; elsewhere bool() would wait for the device
    if not y.is_cpu or bool(overflow.any()):
        out = torch.where(overflow.reshape(shape), torch.zeros_like(y), out)
    return out


@register_notrace_function
def check_input(u: torch.Tensor, weight: torch.Tensor, boundary: str) -> torch.Tensor:
    """Validate u for K (a ValueError naming expected vs got); a leaf for torch.fx."""
    return check_signal(u, weight, boundary)


# the module that gives B, under its former name
OperatorNormBound = NormCertificate


def _resolve_flux(flux: Union[str, nn.Module, Callable[..., nn.Module]], channels: int, contrast: float,
                  device=None, dtype=None) -> nn.Module:
    if isinstance(flux, str):
        return create_flux(flux, channels, contrast=contrast, device=device, dtype=dtype)
    if isinstance(flux, nn.Module):
        module = flux
    elif isinstance(flux, type) and issubclass(flux, Flux):
        module = flux(channels=channels, contrast=contrast, device=device, dtype=dtype)
    elif flux is nn.ReLU:
        module = ReLUFlux()
    else:
        raise ValueError(
            f"flux must be a name, a Flux subclass, nn.ReLU or a module declaring sector_bound; got {flux!r}")
    flux_constants(module)
    return module


class SymmetricResidual(nn.Module):
    """u ↦ u − τ Kᵀ Φ(K u + b), K a convolution and Kᵀ its exact adjoint sharing one weight.

    Args:
        channels: C, channels of u (kept by the block).
        hidden_channels: H, channels of Ku (default C).
        kernel_size: odd size (even allowed with ``boundary='neumann'``), int or per-axis list.
        dim: 1, 2 or 3 spatial dimensions.
        flux: name (``'perona_malik'``, ``'charbonnier'``, ``'exp_perona_malik'``, ``'weickert'``,
            ``'relu'``, ``'learned'``), a Flux class, or a flux module.
        boundary: ``'neumann'`` (default), ``'zeros'``, ``'circular'`` or ``'reflect'``.
        stability: ``'euclidean'`` (default), ``'lipschitz'``, ``'retracted'`` or ``'none'``.
        bias: trainable b; default False for ``'euclidean'`` (where it is not allowed), else True.
        step_init: initial fraction sigmoid(θ) of the stable limit (or τ·L·‖K‖²/2 for a free τ).
        contrast: initial λ of the flux (per hidden channel).
        weight: optional initial kernel ``[H, C, *k]``, e.g. a finite-difference stencil.
        trainable_weight: whether K is trained.
        drop_path: stochastic depth on the update τKᵀΦ (dropping it keeps the step stable).
        stride: K_s = every s-th output of K (a strided convolution, as a ResNet's stage-entry conv), Kᵀ_s its
            exact adjoint, so the step keeps u's size at a fraction 1/s^d of the cost. K_s is a row subset of
            K, hence ‖K_s‖ ≤ ‖K‖ and the stride-1 bound certifies it. The explicit step only (default 1).
        certification: how τ is certified: ``'eval'`` (default, the training contract), ``'all'``
            (strict), a dict of fields or a :class:`~pdeblocks.layers.certificate.Certification`.
        grid, gram_steps, interp_slack, bound_refresh: override those fields of ``certification``
            (``bound_refresh`` is its ``refresh``).

    Input: ``[B, C, *spatial]`` float; output: same shape and dtype.

    NaN/Inf: not checked per call (that would cost a device sync); they propagate to the output
    (a NaN spreads over the kernel's footprint). The guarantees hold for finite inputs.
    """

    no_weight_decay_params = ('step_param',)
    supports_stride = True   # False where a subclass applies K itself (the lagged schemes)

    def __init__(
            self,
            channels: int,
            hidden_channels: Optional[int] = None,
            kernel_size: Union[int, List[int]] = 3,
            dim: int = 2,
            flux: Union[str, nn.Module, Callable[..., nn.Module]] = 'perona_malik',
            boundary: str = 'neumann',
            stability: str = 'euclidean',
            bias: Optional[bool] = None,
            step_init: float = 0.5,
            contrast: float = 1.0,
            weight: Optional[torch.Tensor] = None,
            trainable_weight: bool = True,
            drop_path: Union[float, nn.Module] = 0.0,
            certification: Union[None, str, Dict[str, Any], Certification] = None,
            grid: Optional[int] = None,
            gram_steps: Optional[int] = None,
            interp_slack: Optional[float] = None,
            bound_refresh: Optional[float] = None,
            stride: int = 1,
            device=None,
            dtype=None,
    ):
        super().__init__()
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be an int ≥ 1, got {stride!r}")
        if stride != 1 and not self.supports_stride:
            raise ValueError(f"{type(self).__name__} applies K at the input's resolution: stride=1 only, got {stride}")
        if dim not in (1, 2, 3):
            raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
        if channels < 1:
            raise ValueError(f"channels must be ≥ 1, got {channels}")
        hidden = channels if hidden_channels is None else hidden_channels
        if hidden < 1:
            raise ValueError(f"hidden_channels must be ≥ 1, got {hidden_channels}")
        if stability not in STABILITY_MODES:
            raise ValueError(f"stability must be one of {STABILITY_MODES}, got {stability!r}")
        check_boundary(boundary)
        ks = [kernel_size] * dim if isinstance(kernel_size, int) else list(kernel_size)
        if len(ks) != dim:
            raise ValueError(f"kernel_size needs {dim} entries for dim={dim}, got {kernel_size}")
        check_kernel_size(ks, boundary)
        if not 0.0 < step_init < 1.0 and stability not in FREE_STEP_MODES:
            raise ValueError(f"step_init is a fraction of the stable limit, in (0, 1); got {step_init}")
        if step_init <= 0.0:
            raise ValueError(f"step_init must be > 0, got {step_init}")
        use_bias = stability != 'euclidean' if bias is None else bias
        if use_bias and stability == 'euclidean':
            raise ValueError("stability='euclidean' needs a bias-free inner layer (bias=False): the theorem "
                             "bounds ‖u − τKᵀΦ(Ku)‖ ≤ ‖u‖ only without b; use stability='lipschitz' for a bias")

        self.channels = channels
        self.hidden_channels = hidden
        self.kernel_size = ks
        self.dim = dim
        self.boundary = boundary
        self.stability = stability
        self.free_step = stability in FREE_STEP_MODES     # τ is step_param itself
        self.stride = stride

        self.flux = _resolve_flux(flux, hidden, contrast, device=device, dtype=dtype)
        self.sector_bound, monotone, slope = flux_constants(self.flux)
        if stability == 'lipschitz':
            if not monotone or slope is None:
                raise ValueError(
                    f"stability='lipschitz' needs a monotone flux with a slope bound (charbonnier, relu); "
                    f"{type(self.flux).__name__} is nonmonotone. Use stability='euclidean' for nonmonotone fluxes")
            self.step_constant = float(slope)
        else:
            self.step_constant = self.sector_bound

        if weight is not None:
            expected = [hidden, channels] + ks
            if list(weight.shape) != expected:
                raise ValueError(f"weight must have shape {expected}, got {list(weight.shape)}")
            w = weight.detach().clone().to(device=device, dtype=dtype)
        else:
            fan_in = channels * math.prod(ks)
            w = torch.randn([hidden, channels] + ks, device=device, dtype=dtype) / math.sqrt(fan_in)
        self.weight = nn.Parameter(w, requires_grad=trainable_weight)
        self.bias = nn.Parameter(torch.zeros(hidden, device=device, dtype=dtype)) if use_bias else None

        if stability in FREE_STEP_MODES:
            tau0 = step_init * 2.0 / (self.step_constant * _TYPICAL_NORM_SQ)
            self.step_param = nn.Parameter(torch.tensor(tau0, device=device, dtype=dtype))
        else:
            self.step_param = nn.Parameter(torch.tensor(math.log(step_init / (1.0 - step_init)),
                                                        device=device, dtype=dtype))
        self.bound = NormCertificate(ks, boundary, certification, grid=grid, gram_steps=gram_steps,
                                     interp_slack=interp_slack, bound_refresh=bound_refresh)
        if isinstance(drop_path, nn.Module):
            self.drop_path = drop_path
        else:
            self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def norm_bound(self) -> torch.Tensor:
        """B of this pass (float32): rigorous, B ≥ ‖K‖₂, except in training passes under the training
        contract (:class:`~pdeblocks.layers.certificate.NormCertificate`); carries the bound's gradient."""
        return self.bound(self.weight)

    def step_limit(self, bound: Optional[torch.Tensor] = None) -> torch.Tensor:
        """2/(L·B²), the explicit stability limit for B (default: this pass's :meth:`norm_bound`)."""
        b = self.norm_bound() if bound is None else bound
        return 2.0 / (self.step_constant * b * b)

    def step_fraction(self) -> torch.Tensor:
        """τ / limit: sigmoid(θ) ∈ (0, 1) (subclasses may parameterise it otherwise)."""
        return torch.sigmoid(self.step_param)

    @torch.jit.unused
    def set_step_fraction(self, fraction: float) -> None:
        """Set θ so that :meth:`step_fraction` is ``fraction`` (capped below 1 for sigmoid(θ))."""
        f = min(max(float(fraction), 1e-12), 1.0 - 1e-6)
        with torch.no_grad():
            self.step_param.fill_(math.log(f / (1.0 - f)))

    def step_size(self) -> torch.Tensor:
        """τ: fraction·2/(L·B²) in the modes with a step limit, the free parameter for ``'retracted'`` and
        ``'none'``."""
        if self.free_step:
            return self.step_param
        return self.step_fraction() * self.step_limit().to(self.step_param.dtype)

    def update(self, u: torch.Tensor) -> torch.Tensor:
        """Kᵀ Φ(K u + b), the (un-scaled) diffusion update (K_s and Kᵀ_s with a stride)."""
        if self.stride == 1:
            return conv_adjoint(self.flux(conv(u, self.weight, self.boundary, self.bias)), self.weight, self.boundary)
        s = strided_conv(u, self.weight, self.boundary, self.stride, self.bias)
        return strided_conv_adjoint(self.flux(s), self.weight, u.shape[2:], self.boundary, self.stride)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = check_input(u, self.weight, self.boundary)
        tau = self.step_size().to(u.dtype)
        out = u - self.drop_path(tau * self.update(u))
        if self.stability == 'retracted':
            out = retract(out, u)
        return out

    # τ depends on B, and B on the weights' history (the cached perturbation bound); so B travels in
    # the state_dict (key ``<prefix>_extra_state``) and a reload reproduces τ exactly.
    @torch.jit.unused
    def get_extra_state(self) -> torch.Tensor:
        """The bound B the next call uses, a 0-d tensor saved with the weights; 0 where that is the full
        bound at the current weight (not computed yet, or due), which a reload computes alike."""
        with torch.no_grad():
            value = self.bound.current(self.weight)
            return torch.zeros((), dtype=self.weight.dtype, device=self.weight.device) if value is None \
                else value.detach().clone()

    @torch.jit.unused
    def set_extra_state(self, state: Any) -> None:
        """Restore B from a ``state_dict`` (after the weight). 0: the full bound at the loaded weight. A
        positive B is taken if it is certified for the loaded weight (≥ the full bound there); below it,
        the full bound is used with a warning, since τ then differs from the saved model's. Anything but
        one finite number ≥ 0 is a ValueError.
        """
        if not torch.is_tensor(state) or state.numel() != 1 or not state.is_floating_point():
            got = f"tensor of shape {list(state.shape)} and dtype {state.dtype}" if torch.is_tensor(state) \
                else type(state).__name__
            raise ValueError(f"the saved norm bound of {type(self).__name__} must be one floating-point number, "
                             f"got {got}")
        b = float(state)
        if not math.isfinite(b) or b < 0.0:
            raise ValueError(f"the saved norm bound of {type(self).__name__} must be finite and ≥ 0, got {b}")
        if b == 0.0 or self.free_step:
            self.bound.clear()
        elif not self.bound.restore(self.weight, state):
            full = float(self.bound._b0)
            warnings.warn(f"the saved norm bound {b!r} is below the full bound {full!r} of the loaded weights "
                          f"(by {(full - b) / full:.1e} of it); using the full bound, so the step size τ differs "
                          f"from the saved model's", stacklevel=2)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        key = prefix + NORM_BOUND_STATE
        if key not in state_dict:   # saved before B was stored: the full bound at the loaded weight
            self.bound.clear()
            if key in missing_keys:
                missing_keys.remove(key)

    @torch.jit.unused
    def certified_step(self) -> Tuple[float, float]:
        """(τ, B) of an eval-mode pass: the rigorous B ≥ ‖K‖₂ and the τ it certifies (NaN on meta tensors)."""
        if self.weight.is_meta:  # no values to certify yet
            return float('nan'), float('nan')
        with torch.no_grad():
            b = self.bound.rigorous(self.weight)
            tau = self.step_param if self.free_step else self.step_fraction() * self.step_limit(b)
            return float(tau), float(b)

    @torch.jit.unused
    def certified_passes(self) -> str:
        """Which passes the certificate covers: ``'all'``, ``'eval'`` (the training contract) or ``'none'``."""
        return {'none': 'none', 'retracted': 'all'}.get(self.stability, self.bound.settings.passes)

    @torch.jit.unused
    def verify_certificate(self) -> Optional[bool]:
        """Recompute the full bound at the current weight from scratch and confirm that the B of an
        eval pass is at least it (None for a free τ: nothing rests on B)."""
        if self.free_step or self.weight.is_meta:
            return None
        with torch.no_grad():
            used = self.bound.rigorous(self.weight)
            fresh = self.bound.compute(self.weight)
            return bool(used >= fresh * (1.0 - 1e-6))

    @torch.jit.unused
    def stability_certificate(self) -> Certificate:
        """What this block guarantees, with the numbers it rests on (read by ``pdeblocks.certify``)."""
        tau, bound = self.certified_step()
        lip_phi = getattr(self.flux, 'lipschitz_bound', None)
        monotone = bool(getattr(self.flux, 'monotone', False))
        if self.stability == 'euclidean':
            norm_factor: Optional[float] = 1.0
            guarantee = '‖f(u)‖ ≤ ‖u‖'
            lipschitz = 1.0 if monotone else (None if lip_phi is None else 1.0 + tau * lip_phi * bound ** 2)
        elif self.stability == 'retracted':
            norm_factor = 1.0
            lipschitz = None if lip_phi is None else 2.0 + abs(tau) * lip_phi * bound ** 2
            guarantee = '‖f(u)‖ ≤ ‖u‖ (retraction)'
        elif self.stability == 'lipschitz':
            lipschitz = 1.0
            norm_factor = 1.0 if self.bias is None else None
            guarantee = '‖f(u) − f(v)‖ ≤ ‖u − v‖'
        else:
            norm_factor = None
            lipschitz = None if lip_phi is None else 1.0 + abs(tau) * lip_phi * bound ** 2
            guarantee = 'none (free step)'
        return Certificate(mode=self.stability, step_size=tau, norm_bound=bound, sector_bound=self.sector_bound,
                           norm_factor=norm_factor, lipschitz=lipschitz, guarantee=guarantee,
                           passes=self.certified_passes())

    def extra_repr(self) -> str:
        return (f"{self.channels}, hidden={self.hidden_channels}, kernel_size={tuple(self.kernel_size)}, "
                f"dim={self.dim}, boundary={self.boundary!r}, stability={self.stability!r}"
                + (f", stride={self.stride}" if self.stride != 1 else ''))


class SymmetricBasicBlock(nn.Module):
    """Drop-in for timm's ``BasicBlock``: the shortcut/downsample path is the connector, then one
    symmetric step u − τKᵀΦ(Ku) at constant width (3×3, zero padding, Euclidean stability).

    ``timm.models.resnet.ResNet(block=SymmetricBasicBlock, layers=[2, 2, 2, 2])`` builds a
    symmetric ResNet. ``act_layer`` picks the flux: ``nn.ReLU`` (timm's default) becomes the ReLU
    flux, a :class:`~pdeblocks.layers.flux.Flux` subclass is used as is. BatchNorm sits in the
    downsample connector only: a norm inside the step would break the guarantee.
    """

    expansion = 1

    def __init__(
            self,
            inplanes: int,
            planes: int,
            stride: int = 1,
            downsample: Optional[nn.Module] = None,
            cardinality: int = 1,
            base_width: int = 64,
            reduce_first: int = 1,
            dilation: int = 1,
            first_dilation: Optional[int] = None,
            act_layer: Callable[..., nn.Module] = nn.ReLU,
            norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
            attn_layer: Optional[Callable[..., nn.Module]] = None,
            aa_layer: Optional[Callable[..., nn.Module]] = None,
            drop_block: Optional[Callable[..., nn.Module]] = None,
            drop_path: Optional[nn.Module] = None,
            device=None,
            dtype=None,
            **block_kwargs,
    ):
        super().__init__()
        if cardinality != 1 or base_width != 64:
            raise ValueError(f"SymmetricBasicBlock supports cardinality=1, base_width=64 (as BasicBlock); "
                             f"got cardinality={cardinality}, base_width={base_width}")
        if dilation != 1 or (first_dilation or 1) != 1:
            raise ValueError(f"SymmetricBasicBlock supports dilation 1, got dilation={dilation}, "
                             f"first_dilation={first_dilation}")
        if (stride != 1 or inplanes != planes) and downsample is None:
            raise ValueError(f"a block from {inplanes} to {planes} channels with stride {stride} needs a "
                             f"downsample connector")
        self.downsample = downsample
        self.step = SymmetricResidual(planes, kernel_size=3, dim=2, flux=act_layer, boundary='zeros',
                                      drop_path=drop_path if drop_path is not None else 0.0,
                                      device=device, dtype=dtype, **block_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.step(x)


class Dilated1D(nn.Module):
    """A step applied at dilation d: to each of the d polyphase components z[..., j::d] of z ``[B, C, m]`` (m a
    multiple of d) on its own, so a K of k taps reaches (k − 1)·d positions, as the kernel dilated by d would (with
    Neumann boundaries per component). The split is a permutation of z, so ‖step(z)‖ ≤ ‖z‖ holds as for the step
    itself: the block keeps its certificate."""

    def __init__(self, block: nn.Module, dilation: int):
        super().__init__()
        if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
            raise ValueError(f"dilation must be an int ≥ 1, got {dilation!r}")
        self.block = block
        self.dilation = dilation

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, c, m = z.shape
        d = self.dilation
        phases = z.reshape(b, c, m // d, d).permute(0, 3, 1, 2).reshape(b * d, c, m // d)
        return self.block(phases).reshape(b, d, c, m // d).permute(0, 2, 3, 1).reshape(b, c, m)

    def extra_repr(self) -> str:
        return f'dilation={self.dilation}'


def optional_state_keys(model: nn.Module) -> Set[str]:
    """The ``state_dict`` keys of ``model`` that files saved by earlier versions may lack (stored norm bounds)."""
    return {f"{name}.{NORM_BOUND_STATE}" if name else NORM_BOUND_STATE
            for name, m in model.named_modules() if isinstance(m, SymmetricResidual)}


register_block('symmetric', SymmetricResidual)
