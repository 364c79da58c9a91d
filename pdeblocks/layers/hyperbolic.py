"""Ruthotto–Haber's PDE blocks: TV normalisation, parabolic, hyperbolic (leapfrog) and Hamiltonian
(Verlet) stacks, the last two with reversible backpropagation.

All use the layer F(Y) = Kᵀ σ(N(K Y)): K a convolution, Kᵀ its exact adjoint with the same weight
(:mod:`pdeblocks.ops.conv`), N = :class:`TVNorm`, σ = ReLU. With steps j = 0…n−1 and step h:

* parabolic:   Y_{j+1} = Y_j − h F_j(Y_j)
* hyperbolic:  Y_{j+1} = 2Y_j − Y_{j−1} − h² F_j(Y_j),  Y_{−1} = Y_0       (leapfrog)
* Hamiltonian: channels split [Y, Z] (first and second half);
  Y_{j+1} = Y_j − h F¹_j(Z_j),  Z_{j+1} = Z_j + h F²_j(Y_{j+1})             (Verlet)

**Reversibility.** The leapfrog and Verlet maps are exactly invertible given the last two states:
Y_{j−1} = 2Y_j − Y_{j+1} − h² F_j(Y_j), and Z_j = Z_{j+1} − h F²_j(Y_{j+1}), Y_j = Y_{j+1} + h F¹_j(Z_j).
With ``reversible=True`` (training only) every step is an autograd function
(:class:`~pdeblocks.layers.reversible.ReversibleStep`) that saves nothing; only the final two states are
kept, the backward pass reconstructs each earlier state from the last two and back-propagates through one evaluation
of each F, and parameter gradients are accumulated step by step, so activation memory does not
grow with depth. Per step it costs one extra evaluation of each F
(≈ 4/3 of plain autograd's compute). Gradients equal plain autograd's up to the rounding of the
reconstruction (float64: ~1e-12 relative; tested to 1e-6).

Guarantees (honest): none of these maps is norm- or Lipschitz-bounded by construction (h and ‖K‖
are not constrained, as in the authors' code); leapfrog and Verlet are exactly invertible. The
certificates say so.
"""
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import register_notrace_function, register_notrace_module
from torch import nn

from ..ops.conv import check_boundary, check_kernel_size, conv, conv_adjoint
from ..stability import Certificate
from .registry import register_block
from .reversible import ReversibleStack, ReversibleState, ReversibleStep, vector_jacobian
from .symmetric import check_input

__all__ = ['TVNorm', 'NormalizedFlux', 'ParabolicBlock', 'HyperbolicBlock', 'HamiltonianBlock', 'ReversibleStep',
           'ReversibleState']


@register_notrace_function
def check_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """x must be ``[B, channels, ...]`` (a ValueError naming expected vs got); a leaf for torch.fx."""
    if x.dim() < 2 or x.shape[1] != channels:
        raise ValueError(f"expected [B, {channels}, ...], got shape {list(x.shape)}")
    return x


class TVNorm(nn.Module):
    """Total-variation normalisation N(Y) = a ⊙ Y / √(Σ_c Y_c² + ε) + b (per pixel, over channels).

    a (scale) and b (bias) are trainable per channel (a = 1, b = 0 at start). Input ``[B, C, *spatial]``.
    """

    no_weight_decay_params = ('weight', 'bias')

    def __init__(self, channels: int, eps: float = 1e-3, affine: bool = True, device=None, dtype=None):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be ≥ 1, got {channels}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.channels = channels
        self.eps = float(eps)
        if affine:
            self.weight = nn.Parameter(torch.ones(channels, device=device, dtype=dtype))
            self.bias = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype))
        else:
            self.weight = None
            self.bias = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_channels(x, self.channels)
        y = x * torch.rsqrt((x * x).sum(dim=1, keepdim=True) + self.eps)
        if self.weight is not None and self.bias is not None:
            shape = [1, self.channels] + [1] * (x.dim() - 2)
            y = y * self.weight.reshape(shape).to(x.dtype) + self.bias.reshape(shape).to(x.dtype)
        return y

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps:g}, affine={self.weight is not None}"


class NormalizedFlux(nn.Module):
    """F(Y) = Kᵀ σ(N(K Y)), K: C → H channels (one weight for K and Kᵀ), N = TVNorm(H), σ = ReLU."""

    def __init__(self, channels: int, hidden_channels: Optional[int] = None, kernel_size: int = 3, dim: int = 2,
                 boundary: str = 'neumann', eps: float = 1e-3, weight_scale: float = 1.0, device=None, dtype=None):
        super().__init__()
        if dim not in (1, 2, 3):
            raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
        hidden = channels if hidden_channels is None else hidden_channels
        if channels < 1 or hidden < 1:
            raise ValueError(f"channels must be ≥ 1, got channels={channels}, hidden_channels={hidden_channels}")
        check_boundary(boundary)
        ks = [kernel_size] * dim
        check_kernel_size(ks, boundary)
        self.boundary = boundary
        fan_in = channels * kernel_size ** dim
        self.weight = nn.Parameter(torch.randn([hidden, channels] + ks, device=device, dtype=dtype)
                                   * (weight_scale / fan_in ** 0.5))
        self.norm = TVNorm(hidden, eps=eps, device=device, dtype=dtype)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return conv_adjoint(F.relu(self.norm(conv(y, self.weight, self.boundary))), self.weight, self.boundary)


@register_notrace_function
def check_split(x: torch.Tensor, channels: int, dim: int) -> torch.Tensor:
    """x must be ``[B, channels, *spatial]`` with ``dim`` spatial axes (a ValueError naming expected vs got)."""
    if x.dim() != dim + 2 or x.shape[1] != channels:
        raise ValueError(f"expected input [B, {channels}, {dim} spatial axes], got shape {list(x.shape)}")
    return x


def _check_steps(steps: int, step_size: float) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int ≥ 1, got {steps!r}")
    if not step_size > 0:
        raise ValueError(f"step_size h must be > 0, got {step_size}")


def _drop_path(drop_path: Union[float, nn.Module]) -> nn.Module:
    if isinstance(drop_path, nn.Module):
        return drop_path
    return DropPath(drop_path) if drop_path > 0.0 else nn.Identity()


def _uncertified(mode: str, h: float, guarantee: str) -> Certificate:
    return Certificate(mode=mode, step_size=h, norm_bound=None, sector_bound=None, norm_factor=None, lipschitz=None,
                       guarantee=guarantee, passes='none')


class ParabolicBlock(nn.Module):
    """``steps`` parabolic steps Y ← Y − h Kⱼᵀ σ(N(Kⱼ Y)) (Ruthotto–Haber's first-order unit)."""

    def __init__(self, channels: int, dim: int = 2, steps: int = 3, step_size: float = 1.0, kernel_size: int = 3,
                 boundary: str = 'neumann', eps: float = 1e-3, drop_path: Union[float, nn.Module] = 0.0,
                 device=None, dtype=None):
        super().__init__()
        _check_steps(steps, step_size)
        self.channels = channels
        self.steps = steps
        self.step_size = float(step_size)
        self.layers = nn.ModuleList([NormalizedFlux(channels, None, kernel_size, dim, boundary, eps,
                                                    device=device, dtype=dtype) for _ in range(steps)])
        self.drop_path = _drop_path(drop_path)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y0 = check_input(y, self.layers[0].weight, self.layers[0].boundary)
        y = y0
        for layer in self.layers:
            y = y - self.step_size * layer(y)
        return y0 + self.drop_path(y - y0)

    def stability_certificate(self) -> Certificate:
        return _uncertified('parabolic-rh', self.step_size,
                            'none (h and ‖K‖ unconstrained; σ∘N is not monotone, so the continuous-time '
                            'contraction of Ruthotto–Haber does not apply)')


@register_notrace_module
class HyperbolicBlock(ReversibleStack):
    """``steps`` leapfrog steps Y_{j+1} = 2Yⱼ − Y_{j−1} − h² Kⱼᵀ σ(N(Kⱼ Yⱼ)), Y₋₁ = Y₀; returns Y_n.

    Args:
        channels, dim: C and spatial dimensions of Y.
        steps: n (each step has its own Kⱼ and Nⱼ).
        step_size: h (> 0, fixed).
        kernel_size, boundary, eps: of every Kⱼ and Nⱼ.
        reversible: rebuild states in backward instead of storing them (:class:`ReversibleStep`).
        drop_path: stochastic depth on Y_n − Y₀.
    """

    def __init__(self, channels: int, dim: int = 2, steps: int = 3, step_size: float = 1.0, kernel_size: int = 3,
                 boundary: str = 'neumann', eps: float = 1e-3, reversible: bool = True,
                 drop_path: Union[float, nn.Module] = 0.0, device=None, dtype=None):
        super().__init__()
        _check_steps(steps, step_size)
        self.channels = channels
        self.steps = steps
        self.step_size = float(step_size)
        self.reversible = reversible
        self.layers = nn.ModuleList([NormalizedFlux(channels, None, kernel_size, dim, boundary, eps,
                                                    device=device, dtype=dtype) for _ in range(steps)])
        self.drop_path = _drop_path(drop_path)

    def run(self, prev: torch.Tensor, cur: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h2 = self.step_size * self.step_size
        for layer in self.layers:
            prev, cur = cur, 2.0 * cur - prev - h2 * layer(cur)
        return prev, cur

    @torch.jit.unused
    def step_parameters(self, index: int) -> List[nn.Parameter]:
        return [p for p in self.layers[index].parameters() if p.requires_grad]

    @torch.jit.unused
    def step_forward(self, index: int, prev: torch.Tensor, cur: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(Y_{j−1}, Y_j) ↦ (Y_j, Y_{j+1}) without a graph."""
        with torch.no_grad():
            return cur, 2.0 * cur - prev - self.step_size ** 2 * self.layers[index](cur)

    @torch.jit.unused
    def step_reverse(self, index: int, prev: torch.Tensor, cur: torch.Tensor, g_prev: torch.Tensor,
                     g_cur: torch.Tensor):
        """From (Y_j, Y_{j+1}) and their grads to (Y_{j−1}, Y_j), theirs, and step j's parameter grads.

        Y_{j−1} = 2Y_j − Y_{j+1} − h² F(Y_j); from Y_{j+1} = 2Y_j − Y_{j−1} − h² F(Y_j):
        ∂/∂Y_{j−1} = −g, ∂/∂Y_j = g_prev + 2g − h² J_F(Y_j)ᵀ g (g the gradient of Y_{j+1}).
        """
        h2 = self.step_size ** 2
        params = self.step_parameters(index)
        with torch.enable_grad():
            y = prev.detach().requires_grad_(True)
            f = self.layers[index](y)
        older = 2.0 * prev - cur - h2 * f.detach()
        vjp = vector_jacobian(f, [y] + params, -h2 * g_cur)
        g_y = g_prev + 2.0 * g_cur
        if vjp[0] is not None:
            g_y = g_y + vjp[0]
        return older, prev, -g_cur, g_y, vjp[1:]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y0 = check_input(y, self.layers[0].weight, self.layers[0].boundary)
        if not torch.jit.is_scripting() and self.use_reversible(y0):
            _, out = self.run_reversible(y0, y0)
        else:
            _, out = self.run(y0, y0)
        return y0 + self.drop_path(out - y0)

    def stability_certificate(self) -> Certificate:
        return _uncertified('hyperbolic-leapfrog', self.step_size,
                            'exactly invertible from the last two states (reversible); no norm/Lipschitz bound')

    def extra_repr(self) -> str:
        return f"{self.channels}, steps={self.steps}, h={self.step_size:g}, reversible={self.reversible}"


@register_notrace_module
class HamiltonianBlock(ReversibleStack):
    """``steps`` Verlet steps on [Y, Z] = channels split in halves (C must be even):

    Y_{j+1} = Yⱼ − h K¹ⱼᵀ σ(N(K¹ⱼ Zⱼ)),  Z_{j+1} = Zⱼ + h K²ⱼᵀ σ(N(K²ⱼ Y_{j+1})); K¹, K²: C/2 → C/2.

    Args as :class:`HyperbolicBlock`.
    """

    def __init__(self, channels: int, dim: int = 2, steps: int = 3, step_size: float = 1.0, kernel_size: int = 3,
                 boundary: str = 'neumann', eps: float = 1e-3, reversible: bool = True,
                 drop_path: Union[float, nn.Module] = 0.0, device=None, dtype=None):
        super().__init__()
        if channels < 2 or channels % 2:
            raise ValueError(f"HamiltonianBlock splits the channels into halves Y, Z: expected an even count ≥ 2, "
                             f"got {channels}")
        _check_steps(steps, step_size)
        self.channels = channels
        self.half = channels // 2
        self.steps = steps
        self.step_size = float(step_size)
        self.reversible = reversible
        self.flux_z = nn.ModuleList([NormalizedFlux(self.half, None, kernel_size, dim, boundary, eps,
                                                    device=device, dtype=dtype) for _ in range(steps)])
        self.flux_y = nn.ModuleList([NormalizedFlux(self.half, None, kernel_size, dim, boundary, eps,
                                                    device=device, dtype=dtype) for _ in range(steps)])
        self.drop_path = _drop_path(drop_path)

    def run(self, y: torch.Tensor, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.step_size
        for f1, f2 in zip(self.flux_z, self.flux_y):
            y = y - h * f1(z)
            z = z + h * f2(y)
        return y, z

    @torch.jit.unused
    def step_parameters(self, index: int) -> List[nn.Parameter]:
        return [p for m in (self.flux_z[index], self.flux_y[index]) for p in m.parameters() if p.requires_grad]

    @torch.jit.unused
    def step_forward(self, index: int, y: torch.Tensor, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(Y_j, Z_j) ↦ (Y_{j+1}, Z_{j+1}) without a graph."""
        with torch.no_grad():
            y = y - self.step_size * self.flux_z[index](z)
            return y, z + self.step_size * self.flux_y[index](y)

    @torch.jit.unused
    def step_reverse(self, index: int, y: torch.Tensor, z: torch.Tensor, gy: torch.Tensor, gz: torch.Tensor):
        """From (Y_{j+1}, Z_{j+1}) and their grads to (Y_j, Z_j), theirs, and step j's parameter grads."""
        h = self.step_size
        f1, f2 = self.flux_z[index], self.flux_y[index]
        params1 = [p for p in f1.parameters() if p.requires_grad]
        params2 = [p for p in f2.parameters() if p.requires_grad]
        # Z_{j+1} = Z_j + h F²(Y_{j+1})  ⇒  Z_j = Z_{j+1} − h F²(Y_{j+1}), g_Y += h J_{F²}ᵀ g_Z
        with torch.enable_grad():
            y_in = y.detach().requires_grad_(True)
            out2 = f2(y_in)
        z = z - h * out2.detach()
        vjp2 = vector_jacobian(out2, [y_in] + params2, h * gz)
        if vjp2[0] is not None:
            gy = gy + vjp2[0]
        # Y_{j+1} = Y_j − h F¹(Z_j)  ⇒  Y_j = Y_{j+1} + h F¹(Z_j), g_Z −= h J_{F¹}ᵀ g_Y
        with torch.enable_grad():
            z_in = z.detach().requires_grad_(True)
            out1 = f1(z_in)
        y = y + h * out1.detach()
        vjp1 = vector_jacobian(out1, [z_in] + params1, -h * gy)
        if vjp1[0] is not None:
            gz = gz + vjp1[0]
        return y, z, gy, gz, vjp1[1:] + vjp2[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = check_split(x, self.channels, self.flux_z[0].weight.dim() - 2)
        y = check_input(x0[:, :self.half], self.flux_z[0].weight, self.flux_z[0].boundary)
        z = x0[:, self.half:]
        if not torch.jit.is_scripting() and self.use_reversible(x0):
            y, z = self.run_reversible(y, z)
        else:
            y, z = self.run(y, z)
        return x0 + self.drop_path(torch.cat([y, z], dim=1) - x0)

    def stability_certificate(self) -> Certificate:
        return _uncertified('hamiltonian-verlet', self.step_size,
                            'exactly invertible (symplectic Verlet, reversible); no norm/Lipschitz bound')

    def extra_repr(self) -> str:
        return (f"{self.channels} = 2×{self.half}, steps={self.steps}, h={self.step_size:g}, "
                f"reversible={self.reversible}")


register_block('parabolic', ParabolicBlock)
register_block('hyperbolic', HyperbolicBlock)
register_block('hamiltonian', HamiltonianBlock)
