"""A Parseval short-time Fourier frame and the spectral shrinkage of a residual.

The frame A (``frame`` = L samples, hop H = L/2, the window w_t = sin(π t / L), t = 0 … L − 1, so that w² is the
periodic Hann window and Σ_m w²(t − mH) = 1) is applied to the signal zero-padded by H on the left and to a multiple
of H, at least H, on the right: every sample lies in two frames whose squared windows sum to 1, so the frame is
tight, A*A = L·I on the signal's samples (the unnormalised DFT; Σ |X|² over every frame and the whole spectrum is
L‖r‖²), and A⁺ = A*/L (:func:`stft_frame_inverse`) gives A⁺A = I.

:func:`spectral_shrink` is S(r) = A⁺(G ⊙ Ar), G = max(0, 1 − κ·σ²/P) per coefficient, P = |X|²/Σ_t w_t² the
coefficient's power in units of white noise of standard deviation σ (E P = σ² for such noise, in every bin): a
power-subtraction (Wiener-type) gain that keeps what stands clear of the noise floor and drops the rest. For any r,
S(r) = S̃r with S̃ = A⁺GA self-adjoint and 0 ≤ S̃ ≤ I, so ‖S(r)‖₂ ≤ ‖r‖₂.
"""
import math
from typing import Union

import torch
import torch.nn.functional as F

__all__ = ['stft_frame', 'stft_frame_inverse', 'spectral_shrink']


def _check(x: torch.Tensor, frame: int) -> None:
    if frame < 4 or frame % 2:
        raise ValueError(f"frame must be an even number of samples ≥ 4, got {frame}")
    if x.dim() != 3 or x.shape[1] != 1 or not x.is_floating_point():
        raise ValueError(f"expected a float tensor [batch, 1, length], got {x.dtype} {list(x.shape)}")


def _window(frame: int, x: torch.Tensor) -> torch.Tensor:
    return torch.sin(math.pi * torch.arange(frame, dtype=x.dtype, device=x.device) / frame)


def stft_frame(x: torch.Tensor, frame: int = 64) -> torch.Tensor:
    """X = Ax, ``[B, 1, n]`` → complex ``[B, 1, M, L/2 + 1]``: the onesided DFT of the M windowed frames of x (module
    docstring), frame m starting at sample mH − H."""
    _check(x, frame)
    hop = frame // 2
    n = x.shape[-1]
    right = hop + (-(n + 2 * hop)) % hop
    frames = F.pad(x, (hop, right)).unfold(-1, frame, hop) * _window(frame, x)
    return torch.fft.rfft(frames, dim=-1)


def stft_frame_inverse(coeffs: torch.Tensor, n: int, frame: int = 64) -> torch.Tensor:
    """A⁺X = A*X/L, complex ``[B, 1, M, L/2 + 1]`` → ``[B, 1, n]``: the inverse DFT of each frame, windowed again and
    added where the frames overlap, then cropped to the signal's n samples; A⁺(Ax) = x."""
    hop = frame // 2
    if coeffs.dim() != 4 or coeffs.shape[-1] != hop + 1 or coeffs.shape[-2] * hop < n + hop:
        raise ValueError(f"expected coefficients [batch, 1, frames ≥ {-(-(n + hop) // hop)}, {hop + 1}] of "
                         f"{frame}-sample frames for {n} samples, got {list(coeffs.shape)}")
    frames = torch.fft.irfft(coeffs, n=frame, dim=-1) * _window(frame, coeffs.real)
    b, c, m, _ = frames.shape
    total = (m + 1) * hop
    out = F.fold(frames.reshape(b * c, m, frame).transpose(1, 2), output_size=(1, total), kernel_size=(1, frame),
                 stride=(1, hop))
    return out.reshape(b, c, total)[..., hop:hop + n]


def spectral_shrink(r: torch.Tensor, sigma: Union[float, torch.Tensor], threshold: float, frame: int = 64
                    ) -> torch.Tensor:
    """S(r) = A⁺(max(0, 1 − κσ²/P) ⊙ Ar) (module docstring), ``r`` ``[B, 1, n]``, ``sigma`` > 0 the noise level of r
    (a number or ``[B, 1, 1]``), κ = ``threshold`` ≥ 0; ‖S(r)‖₂ ≤ ‖r‖₂ for any input. The gains are computed from
    the coefficients in units of σ, so S(a·r; a·σ) = a·S(r; σ) at any scale the dtype holds. Differentiable in r."""
    if not threshold >= 0.0:
        raise ValueError(f"threshold must be ≥ 0, got {threshold}")
    sigma = torch.as_tensor(sigma, dtype=r.dtype, device=r.device)
    if not bool(((sigma > 0) & torch.isfinite(sigma)).all()):
        raise ValueError(f"sigma must be finite and > 0, got {sigma.flatten()[:8].tolist()}")
    coeffs = stft_frame(r, frame)
    sigma = sigma.reshape(sigma.shape + (1,) * (4 - sigma.dim()))
    power = (coeffs.real / sigma).square() + (coeffs.imag / sigma).square()     # |X|²/σ², no underflow
    floor = threshold * frame / 2.0                                             # κ·Σ_t w_t²
    gain = (1.0 - floor / power.clamp_min(torch.finfo(r.dtype).tiny)).clamp(0.0, 1.0)
    return stft_frame_inverse(gain * coeffs, r.shape[-1], frame)
