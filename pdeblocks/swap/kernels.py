"""Initial kernels K from the replaced block's convolutions, and which convolutions a step can replace.

Folding: a convolution W followed by BatchNorm (running statistics) equals, up to a bias, the
convolution with kernel W·γ/√(σ²+ε) per output channel (:func:`folded_kernel`). The adjoint of a
zero-padded 'same' convolution has kernel W'[i, o, j] = W[o, i, −j] (:func:`adjoint_kernel`).
"""
from typing import List, Optional

import torch
from torch import nn

from .registry import CannotSwap


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Detached, in float32 (half precision is raised to it) or float64 (kept)."""
    return t.detach().to(torch.promote_types(t.dtype, torch.float32))


def norm_scale(norm: Optional[nn.Module], channels: int) -> Optional[torch.Tensor]:
    """Per-channel factor a following norm applies to a conv's output: γ/√(σ²+ε) for BatchNorm with
    running stats; None for data-dependent norms (GroupNorm, InstanceNorm), which are not folded."""
    if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.running_var is not None:
        scale = torch.rsqrt(at_least_float32(norm.running_var) + norm.eps)
        if norm.weight is not None:
            scale = scale * at_least_float32(norm.weight)
        if scale.numel() == channels:
            return scale
    return None


def folded_kernel(conv: nn.Module, norm: Optional[nn.Module] = None) -> torch.Tensor:
    """conv.weight (float32, or float64 for a float64 conv) with the following BatchNorm's scale folded
    into its output channels."""
    w = at_least_float32(conv.weight).clone()
    scale = norm_scale(norm, w.shape[0])
    if scale is not None:
        w = w * scale.reshape([-1] + [1] * (w.dim() - 1))
    return w


def adjoint_kernel(weight: torch.Tensor) -> torch.Tensor:
    """Kernel of the adjoint of a zero-padded 'same' convolution: W'[i, o, j] = W[o, i, −j] (channels
    swapped, taps flipped), so that K = conv(W') has Kᵀ = conv(W) exactly."""
    return weight.transpose(0, 1).flip(list(range(2, weight.dim()))).contiguous()


def dense_weight(conv: nn.Conv2d) -> torch.Tensor:
    """Weight of a grouped conv expanded to the equivalent dense ``[out, in, k..]`` (block diagonal)."""
    w = at_least_float32(conv.weight)
    g = conv.groups
    if g == 1:
        return w.clone()
    out_g, in_g = w.shape[0] // g, w.shape[1]
    dense = w.new_zeros([w.shape[0], in_g * g] + list(w.shape[2:]))
    for i in range(g):
        dense[i * out_g:(i + 1) * out_g, i * in_g:(i + 1) * in_g] = w[i * out_g:(i + 1) * out_g]
    return dense


def conv_kernel_size(conv: nn.Module) -> List[int]:
    """Kernel size of a convolution as a list, one entry per spatial dimension."""
    ks = conv.kernel_size
    return [ks] if isinstance(ks, int) else list(ks)


def check_plain_conv(conv: nn.Module, what: str) -> None:
    """Decline convolutions the PDE step cannot stand in for (dilated, even or non-'same' padded)."""
    dil = conv.dilation if isinstance(conv.dilation, (tuple, list)) else (conv.dilation,)
    if any(d != 1 for d in dil):
        raise CannotSwap(f"{what} is dilated ({tuple(dil)}); the PDE step has no dilation")
    ks = conv_kernel_size(conv)
    if any(k % 2 == 0 for k in ks):
        raise CannotSwap(f"{what} has an even kernel {tuple(ks)}; a zero-padded step needs an odd (centred) stencil")
    pad = conv.padding
    if pad != 'same' and list(pad if isinstance(pad, (tuple, list)) else [pad] * len(ks)) != [k // 2 for k in ks]:
        raise CannotSwap(f"{what} has padding {pad}, not the size-preserving {tuple(k // 2 for k in ks)}")
