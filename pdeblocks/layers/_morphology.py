"""Min-plus (morphological) convolution on M₂ = ℝ² ⋊ S¹ with a sparse, winner-routed backward.

For feature maps f of shape ``[B, C, Or, H, W]`` (orientation θ_o = 2πo/Or, x along W, y along H)
and a kernel k of shape ``[C, Or, kθ, kh, kw]`` (one 3D kernel per channel and *output*
orientation, already evaluated at the left-invariant offset g⁻¹h),

    (k □ f)(c, o, y, x) = min_{d, i, j}  f(c, (o + d - rθ) mod Or, y + i - rh, x + j - rw) + k[c, o, d, i, j],

with r• = k• // 2, periodic in θ and +∞ outside the spatial domain (so pixels outside the image
never win; the kernel's centre tap always lies inside).

The forward pass keeps a running minimum and the index of the winning offset (the first offset in
row-major (d, i, j) order attaining the minimum, so ties are deterministic). The backward pass
routes every output gradient to its winner: ∂L/∂f at the winning source position, ∂L/∂k[c, o, j]
= Σ of the output gradients whose winner is j. Memory is O(|f|) instead of the O(|f|·kθ·kh·kw)
of an unfold + amin. Two evaluations give identical values and winners:

- on CPU in float32 / float64, a fused C kernel (:mod:`pdeblocks._native`, compiled on first use;
  set ``PDEBLOCKS_NATIVE=0`` to disable): one pass over the offsets per output plane, planes split
  over ``torch.get_num_threads()`` threads;
- otherwise (other devices or dtypes, no C compiler) a loop over the offsets of elementwise torch
  ops on strided views, processed in cache-sized chunks, with a ``bincount`` / ``index_add_`` backward.
"""
from typing import Tuple

import torch
from torch.autograd.function import once_differentiable

from .._native import native_library, run_ranges, split_ranges

__all__ = ['min_plus_convolution_m2', 'max_plus_convolution_m2', 'check_m2_kernel']

# elements per chunk of the forward loop (≈ 512 KiB of float32): big enough to amortise the Python
# loop, small enough that input, candidate and running minimum stay in L2 cache
_CHUNK_ELEMENTS = 1 << 17


def check_m2_kernel(x: torch.Tensor, kernel: torch.Tensor) -> None:
    """Raise ValueError unless ``x`` is ``[B, C, Or, H, W]`` and ``kernel`` is ``[C, Or, kθ, kh, kw]``
    with odd kernel sizes and kθ ≤ Or."""
    if x.dim() != 5:
        raise ValueError(f"expected M2 feature maps of shape [B, C, Or, H, W] (5 dims), got shape {list(x.shape)}")
    if kernel.dim() != 5:
        raise ValueError(f"expected a kernel of shape [C, Or, kθ, kh, kw] (5 dims), got shape {list(kernel.shape)}")
    if kernel.shape[0] != x.shape[1] or kernel.shape[1] != x.shape[2]:
        raise ValueError(
            f"kernel [C, Or, ...] = {list(kernel.shape[:2])} does not match the input's [C, Or] = {list(x.shape[1:3])}")
    if kernel.shape[2] % 2 == 0 or kernel.shape[3] % 2 == 0 or kernel.shape[4] % 2 == 0:
        raise ValueError(f"kernel sizes [kθ, kh, kw] must be odd (centred), got {list(kernel.shape[2:])}")
    if kernel.shape[2] > x.shape[2]:
        raise ValueError(f"orientation kernel size kθ={kernel.shape[2]} exceeds the orientation count Or={x.shape[2]}")


def _pad_m2(x: torch.Tensor, rt: int, rh: int, rw: int, value: float) -> torch.Tensor:
    """Pad θ periodically by ``rt`` and (y, x) with the constant ``value`` by ``rh``, ``rw``."""
    if rt > 0:
        x = torch.cat([x[:, :, x.shape[2] - rt:], x, x[:, :, :rt]], dim=2)
    if rh > 0 or rw > 0:
        x = torch.nn.functional.pad(x, [rw, rw, rh, rh], value=value)
    return x


def _min_plus_forward(x: torch.Tensor, kernel: torch.Tensor, track: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Running minimum over the kernel offsets; returns (min, winning offset index or empty).

    The winner index is tracked with float ops only (comparisons written to a float 0/1 tensor
    and a running maximum of j·[cand < best]), which vectorise far better than bool masks.
    """
    B, C, Or, H, W = x.shape
    kt, kh, kw = kernel.shape[2], kernel.shape[3], kernel.shape[4]
    J = kt * kh * kw
    xp = _pad_m2(x, kt // 2, kh // 2, kw // 2, float('inf'))
    # kernel taps as [J, C, Or, 1, 1] so each broadcasts over (B, H, W)
    taps = kernel.reshape(C, Or, J).permute(2, 0, 1).contiguous().to(x.dtype)[:, :, :, None, None]
    out = torch.empty_like(x)
    winner = torch.empty_like(x) if track else x.new_empty(0)
    # on CPU chunk over (batch, channel) so one chunk (≈ _CHUNK_ELEMENTS) stays in cache; on an
    # accelerator one chunk holds everything (fewer kernel launches)
    chunk = _CHUNK_ELEMENTS if x.device.type == 'cpu' else max(x.numel(), 1)
    per_channel = Or * H * W
    c_step = max(1, min(C, chunk // max(per_channel, 1)))
    b_step = max(1, min(B, chunk // max(per_channel * C, 1))) if c_step == C else 1
    for b0 in range(0, B, b_step):
        b1 = min(B, b0 + b_step)
        for c0 in range(0, C, c_step):
            c1 = min(C, c0 + c_step)
            src = xp[b0:b1, c0:c1]
            best = out[b0:b1, c0:c1]
            best.fill_(float('inf'))
            cand = torch.empty_like(best)
            better = torch.empty_like(best)
            win = winner[b0:b1, c0:c1] if track else cand
            if track:
                win.zero_()
            j = 0
            for d in range(kt):
                for i in range(kh):
                    for dw in range(kw):
                        torch.add(src[:, :, d:d + Or, i:i + H, dw:dw + W], taps[j, c0:c1], out=cand)
                        if track and j > 0:
                            # win = max(win, j·[cand < best]): the last strict improvement wins
                            torch.lt(cand, best, out=better)
                            better.mul_(float(j))
                            torch.maximum(win, better, out=win)
                        torch.minimum(best, cand, out=best)
                        j += 1
    index = winner.to(torch.uint8 if J <= 256 else torch.int32) if track else winner
    return out, index


def _uses_native(x: torch.Tensor, kernel: torch.Tensor) -> bool:
    """The C kernel handles CPU float32 / float64 tensors with < 2¹⁵ offsets (int16 winner index)."""
    if x.device.type != 'cpu' or x.dtype not in (torch.float32, torch.float64):
        return False
    if kernel.shape[2] * kernel.shape[3] * kernel.shape[4] > 32767:
        return False
    return native_library() is not None


def _native_forward(x: torch.Tensor, kernel: torch.Tensor, dilation: bool, track: bool,
                    skip: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """The C kernel; ``skip``: leave out, per block of positions, the offsets that provably cannot win
    (exact, see :mod:`pdeblocks._native`)."""
    lib = native_library()
    B, C, Or, H, W = x.shape
    kt, kh, kw = kernel.shape[2], kernel.shape[3], kernel.shape[4]
    x = x.contiguous()
    k = kernel.detach().to(x.dtype).contiguous()
    out = torch.empty(x.shape, dtype=x.dtype)
    win = torch.empty(x.shape, dtype=torch.int16) if track else x.new_empty(0, dtype=torch.int16)
    fwd = lib.minplus_f32_forward if x.dtype == torch.float32 else lib.minplus_f64_forward
    pointers = (x.data_ptr(), k.data_ptr(), out.data_ptr(), win.data_ptr() if track else None)
    sign = -1 if dilation else 1

    def blocks(q0: int, q1: int) -> int:
        return fwd(*pointers, C, Or, H, W, kt, kh, kw, sign, int(skip), q0, q1)

    if any(run_ranges(blocks, split_ranges(B * C, torch.get_num_threads()))):
        raise MemoryError('min_plus_convolution_m2: the C kernel could not allocate its buffers')
    return out, win


def _native_backward(grad_out: torch.Tensor, win: torch.Tensor, kernel_shape, dilation: bool,
                     need_x: bool, need_k: bool):
    lib = native_library()
    B, C, Or, H, W = grad_out.shape
    kt, kh, kw = kernel_shape[2], kernel_shape[3], kernel_shape[4]
    g = grad_out.contiguous()
    gx = torch.empty_like(g) if need_x else None  # every (b, c) block is written by the kernel
    gk = torch.zeros(kernel_shape, dtype=torch.float64) if need_k else None
    bwd = lib.minplus_f32_backward if g.dtype == torch.float32 else lib.minplus_f64_backward
    pointers = (g.data_ptr(), win.data_ptr(), gx.data_ptr() if need_x else None, gk.data_ptr() if need_k else None)
    sign = -1 if dilation else 1

    def channels(c0: int, c1: int) -> int:
        return bwd(*pointers, B, C, Or, H, W, kt, kh, kw, sign, c0, c1)

    if any(run_ranges(channels, split_ranges(C, torch.get_num_threads()))):
        raise MemoryError('min_plus_convolution_m2: the C kernel could not allocate its offset table')
    return gx, gk


class _MorphologicalConvolutionM2(torch.autograd.Function):
    """Erosion min_h f(h) + k (``dilation=False``) or dilation max_h f(h) − k = −min_h (−f(h) + k)
    (``dilation=True``) on M₂: winner index saved in the forward, gradients routed to it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor, dilation: bool) -> torch.Tensor:
        track = bool(ctx.needs_input_grad[0] or ctx.needs_input_grad[1])
        ctx.native = _uses_native(x, kernel)
        ctx.dilation = dilation
        if ctx.native:
            out, index = _native_forward(x, kernel, dilation, track)
        elif dilation:
            out, index = _min_plus_forward(-x, kernel, track)
            out = out.neg_()
        else:
            out, index = _min_plus_forward(x, kernel, track)
        ctx.save_for_backward(index)
        ctx.x_shape = tuple(x.shape)
        ctx.kernel_shape = tuple(kernel.shape)
        ctx.kernel_dtype = kernel.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (index,) = ctx.saved_tensors
        need_x, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if ctx.native:
            gx, gk = _native_backward(grad_out, index, ctx.kernel_shape, ctx.dilation, need_x, need_k)
        elif ctx.dilation:  # out = −m(−x): ∂/∂k = m's with −g, ∂/∂x = −(m's with −g)
            gx, gk = _routed_backward(-grad_out, index, ctx.x_shape, ctx.kernel_shape, need_x, need_k)
            gx = gx.neg_() if gx is not None else None
        else:
            gx, gk = _routed_backward(grad_out, index, ctx.x_shape, ctx.kernel_shape, need_x, need_k)
        return gx, (gk.to(ctx.kernel_dtype) if gk is not None else None), None


def _routed_backward(grad_out: torch.Tensor, index: torch.Tensor, x_shape, kernel_shape, need_x: bool,
                     need_k: bool):
    """Torch evaluation of the winner-routed backward of min_h f(h) + k (any device)."""
    B, C, Or, H, W = x_shape
    _, _, kt, kh, kw = kernel_shape
    J = kt * kh * kw
    dev = grad_out.device
    grad_out = grad_out.contiguous()
    win = index.long()
    grad_x = grad_kernel = None
    if need_k:
        # ∂L/∂k[c, o, j] = Σ_{b, y, x : winner = j} ∂L/∂out[b, c, o, y, x]
        co = torch.arange(C * Or, device=dev).view(1, C, Or, 1, 1) * J
        key = (win + co).reshape(-1)
        weights = grad_out.reshape(-1)
        if weights.dtype not in (torch.float32, torch.float64):
            weights = weights.float()
        grad_kernel = torch.bincount(key, weights=weights, minlength=C * Or * J).view(kernel_shape)
    if need_x:
        # ∂L/∂f at the winning source position, accumulated in the padded layout then folded back
        rt, rh, rw = kt // 2, kh // 2, kw // 2
        Tp, Hp, Wp = Or + 2 * rt, H + 2 * rh, W + 2 * rw
        d = torch.arange(kt, device=dev).view(kt, 1, 1)
        i = torch.arange(kh, device=dev).view(1, kh, 1)
        dw = torch.arange(kw, device=dev).view(1, 1, kw)
        offset = (d * (Hp * Wp) + i * Wp + dw).reshape(J)
        base = (torch.arange(B * C, device=dev).view(B, C, 1, 1, 1) * (Tp * Hp * Wp)
                + torch.arange(Or, device=dev).view(1, 1, Or, 1, 1) * (Hp * Wp)
                + torch.arange(H, device=dev).view(1, 1, 1, H, 1) * Wp
                + torch.arange(W, device=dev).view(1, 1, 1, 1, W))
        target = (base + offset[win]).reshape(-1)
        grad_pad = torch.zeros(B * C * Tp * Hp * Wp, dtype=grad_out.dtype, device=dev)
        grad_pad.index_add_(0, target, grad_out.reshape(-1))
        grad_pad = grad_pad.view(B, C, Tp, Hp, Wp)[:, :, :, rh:rh + H, rw:rw + W]
        grad_x = grad_pad[:, :, rt:rt + Or].clone()
        if rt > 0:  # fold the periodic θ padding back
            grad_x[:, :, :rt] += grad_pad[:, :, Or + rt:]
            grad_x[:, :, Or - rt:] += grad_pad[:, :, :rt]
    return grad_x, grad_kernel


def _min_plus_autograd_loop(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Scriptable fallback: the same running minimum with plain autograd (slower backward)."""
    C, Or, kt, kh, kw = kernel.shape[0], kernel.shape[1], kernel.shape[2], kernel.shape[3], kernel.shape[4]
    H, W = x.shape[3], x.shape[4]
    xp = _pad_m2(x, kt // 2, kh // 2, kw // 2, float('inf'))
    taps = kernel.reshape(C, Or, kt * kh * kw).to(x.dtype)
    out = torch.full_like(x, float('inf'))
    j = 0
    for d in range(kt):
        for i in range(kh):
            for dw in range(kw):
                tap = taps[:, :, j].reshape(1, C, Or, 1, 1)
                out = torch.minimum(out, xp[:, :, d:d + Or, i:i + H, dw:dw + W] + tap)
                j += 1
    return out


def min_plus_convolution_m2(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Morphological convolution (erosion) (k □ f)(g) = min_h f(h) + k(g⁻¹h) on M₂.

    Args:
        x: feature maps f, ``[B, C, Or, H, W]``.
        kernel: ``[C, Or, kθ, kh, kw]``, ``kernel[c, o, d, i, j]`` = k at the offset
            (Δθ, Δy, Δx) = (d - kθ//2, i - kh//2, j - kw//2) seen from output orientation o.

    Returns:
        ``[B, C, Or, H, W]``; periodic in θ, out-of-image positions never contribute. Gradients go to
        the first offset (row-major in (d, i, j)) attaining the minimum.
    """
    check_m2_kernel(x, kernel)
    if torch.jit.is_scripting():
        return _min_plus_autograd_loop(x, kernel)
    return _MorphologicalConvolutionM2.apply(x, kernel, False)


def max_plus_convolution_m2(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Morphological dilation max_h f(h) - k(g⁻¹h) = -(k □ -f)(g); arguments as in :func:`min_plus_convolution_m2`."""
    check_m2_kernel(x, kernel)
    if torch.jit.is_scripting():
        return -_min_plus_autograd_loop(-x, kernel)
    return _MorphologicalConvolutionM2.apply(x, kernel, True)
