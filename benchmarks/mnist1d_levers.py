"""Screening the levers that decide whether certified symmetric blocks cost accuracy on MNIST-1D (issue 20).

Prototypes of step parameterisations (kept rigorous: every certified variant satisfies the same theorem as
``SymmetricResidual``'s Euclidean/Lipschitz mode), trained under one recipe on MNIST-1D generated offline.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mnist1d_levers.py --epochs 20 --seeds 0 --variants cert,free,...

Step parameterisations of u ↦ u − Kᵀ D Φ(K u + b):

* ``free``: D = τ·I, τ a free scalar (stability='none').
* ``scalar``: D = σ(θ)·2/(L B²)·I with B ≥ ‖K‖ the Gram-iteration symbol bound × Szegő factor (the
  library's bound, recomputed every step), with (``grad``) or without (``nograd``) gradient through B.
* ``channel``: D = diag σ(θ_i)·(2/L)/T_i, T_i = Σ_j Σ_δ |(KKᵀ)_ij(δ)| (Schur/Gershgorin row sums of the
  Gram stencil, T ⪰ KKᵀ for every padding and size), with or without gradient through T.

Proof for ``channel`` (Euclidean, 0 ≤ Φ(s)/s ≤ L, no bias): with p = Φ(Ku), c_i = σ(θ_i)·2/L ≤ 2/L,
⟨Ku, Dp⟩ ≥ Σ D_i p_i²/L and ‖KᵀDp‖² ≤ pᵀDTDp = Σ D_i c_i p_i², so ‖f(u)‖² ≤ ‖u‖² − Σ D_i (2/L − c_i) p_i².
Lipschitz mode (monotone Φ, slope ≤ L, bias allowed): D^½KKᵀD^½ ⪯ D^½TD^½ ⪯ (2/L)·I, the SLL condition.
"""
import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from pdeblocks.layers.flux import create_flux
from pdeblocks.ops.conv import conv, conv_adjoint
from pdeblocks.ops.norms import bound_settings, gram_spectral_bound


def mnist1d_data(seed: int = 42):
    """MNIST-1D with the package's standard arguments (4000 train / 1000 test, length 40), generated offline."""
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.seed = seed
    d = make_dataset(args)
    f = lambda a: torch.tensor(a, dtype=torch.float32).unsqueeze(1)  # noqa: E731
    return f(d['x']), torch.tensor(d['y']), f(d['x_test']), torch.tensor(d['y_test'])


def symbol_bound(weight: torch.Tensor, grid: int, factor: float, gram_steps: int = 5) -> torch.Tensor:
    """B ≥ ‖K‖₂ (the library's symbol bound: Gram iteration on an N-grid × Szegő factor × float margin),
    built from differentiable ops so that the gradient can flow through B."""
    symbol = torch.fft.rfftn(weight.float(), s=[grid] * (weight.dim() - 2), dim=list(range(2, weight.dim())))
    symbol = symbol.flatten(2).permute(2, 0, 1)
    return gram_spectral_bound(symbol, gram_steps).amax() * (1.0 + 1e-3) * factor


def top_singular_value_surrogate(weight: torch.Tensor, grid: int = 8) -> torch.Tensor:
    """σ_max(K̂(ω*)) as |u*ᴴ K̂(ω*) v*| with (ω*, u*, v*) the top singular triple of the symbol on a grid, found
    without gradient: its value is σ_max at ω*, its gradient the exact (Danskin) gradient of sup_ω σ_max(K̂(ω)).
    Used only as a gradient carrier: B_eff = B·s/s.detach() has the rigorous value B and ∂B ≈ ∂σ_max."""
    with torch.no_grad():
        symbol = torch.fft.rfft(weight.detach().float(), n=grid, dim=-1).permute(2, 0, 1)  # [F, H, C]
        u, sv, vh = torch.linalg.svd(symbol)
        best = int(sv[:, 0].argmax())
        phase = torch.exp(-2j * math.pi * best * torch.arange(weight.shape[-1], dtype=torch.float32) / grid)
        left, right = u[best, :, 0], vh[best, 0, :]
    k_hat = (weight.float().to(torch.complex64) * phase).sum(-1)  # K̂(ω*) [H, C], differentiable
    return (left.conj() @ k_hat @ right.conj()).abs()


def mode_fraction(weight: torch.Tensor, bound: float, grid: int = 64) -> float:
    """ρ = mean over frequencies and singular values of σ²/B²: the average fraction of the top mode's step that a
    mode of K gets (1: a flat spectrum, K̂(ω) a multiple of an isometry everywhere)."""
    symbol = torch.fft.fft(weight.detach().float(), n=grid, dim=-1)  # [H, C, grid]
    return float((symbol.abs() ** 2).sum() / (grid * min(weight.shape[0], weight.shape[1]) * bound * bound))


def gram_row_sums(weight: torch.Tensor) -> torch.Tensor:
    """T_i = Σ_j Σ_δ |(KKᵀ)_ij(δ)| for a 1D kernel [H, C, k]: diag(T) ⪰ KKᵀ on any signal size/padding."""
    k = weight.shape[-1]
    gram = F.conv1d(weight, weight, padding=k - 1)  # [H, H, 2k−1]: (KKᵀ)_ij(δ)
    return gram.abs().sum(dim=(1, 2))


class LeverBlock(nn.Module):
    """u ↦ u − Kᵀ D Φ(K u + b) with the step parameterisations of the module docstring (1D, zeros padding)."""

    def __init__(self, channels: int, hidden: Optional[int] = None, kernel_size: int = 3, flux: str = 'perona_malik',
                 step: str = 'scalar', grad_bound: bool = True, bias: bool = False, step_init: float = 0.5,
                 contrast: float = 1.0, channel_fraction: bool = True, normalize: bool = False):
        super().__init__()
        hidden = hidden or channels
        self.step, self.grad_bound, self.normalize = step, grad_bound, normalize
        self.flux = create_flux(flux, hidden, contrast=contrast)
        lip = getattr(self.flux, 'slope_bound', None) if bias else None
        self.L = float(lip if lip is not None else self.flux.sector_bound)
        if bias and not getattr(self.flux, 'monotone', False):
            raise ValueError("a bias needs a monotone flux (Lipschitz mode)")
        self.weight = nn.Parameter(torch.randn(hidden, channels, kernel_size) / math.sqrt(channels * kernel_size))
        self.bias = nn.Parameter(torch.zeros(hidden)) if bias else None
        self.grid, self.factor = bound_settings([kernel_size], 'zeros')
        n = hidden if (step == 'channel' and channel_fraction) else 1
        if step == 'free':
            self.step_param = nn.Parameter(torch.tensor(step_init * 2.0 / (self.L * 4.0)))
        else:
            self.step_param = nn.Parameter(torch.full((n,), math.log(step_init / (1 - step_init))))

    def kernel(self) -> torch.Tensor:
        """K = V (or V/‖V‖_F with ``normalize``: the scale of V, a gauge freedom of τKᵀΦ_λ(K·), is removed)."""
        if self.normalize:
            return self.weight / self.weight.norm()
        return self.weight

    def step_sizes(self) -> torch.Tensor:
        """D as [H] (or a scalar)."""
        if self.step == 'free':
            return self.step_param
        w = self.kernel()
        if self.step == 'scalar':
            b = symbol_bound(w, self.grid, self.factor)
            if self.grad_bound == 'surrogate':  # rigorous value B, gradient of σ_max
                sur = top_singular_value_surrogate(w)
                b = b.detach() * sur / sur.detach()
            elif not self.grad_bound:
                b = b.detach()
            return torch.sigmoid(self.step_param) * 2.0 / (self.L * b * b)
        t = gram_row_sums(w)
        t = t if self.grad_bound else t.detach()
        return torch.sigmoid(self.step_param) * 2.0 / (self.L * t.clamp_min(1e-12))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        w = self.kernel()
        s = conv(u, w, 'zeros')
        if self.bias is not None:
            s = s + self.bias.reshape(1, -1, 1)
        d = self.step_sizes()
        p = self.flux(s) * (d.reshape(1, -1, 1) if d.dim() == 1 else d)
        return u - conv_adjoint(p, w, 'zeros')

    def stability_certificate(self):
        """What this block guarantees (read by ``pdeblocks.certify``): ``step_size`` is the largest D_i; the
        certificate holds in every pass (D is computed from the rigorous bound at the current weights)."""
        with torch.no_grad():
            tau = float(self.step_sizes().float().max())
            bound = float(symbol_bound(self.kernel(), self.grid, self.factor))
        monotone = bool(getattr(self.flux, 'monotone', False))
        if self.step == 'free':
            c = dict(mode='none', norm_factor=None, lipschitz=None, guarantee='none (free step)')
        elif self.bias is not None:
            c = dict(mode='lipschitz', norm_factor=None, lipschitz=1.0, guarantee='‖f(u) − f(v)‖ ≤ ‖u − v‖')
        else:
            c = dict(mode='euclidean', norm_factor=1.0, lipschitz=1.0 if monotone else None,
                     guarantee='‖f(u)‖ ≤ ‖u‖')
        c.update(step_size=tau, norm_bound=bound, sector_bound=self.L)
        try:   # the certificate type of pdeblocks ≥ 235fedf; a dict before
            from pdeblocks.stability import Certificate
        except ImportError:
            return c
        return Certificate(**c, passes='none' if self.step == 'free' else 'all')

    @torch.no_grad()
    def step_report(self) -> Dict[str, float]:
        """τ (mean over channels) and τ·L·‖K‖²/2 with ‖K‖ from the symbol bound (1 = the scalar limit)."""
        d = self.step_sizes().float()
        b = float(symbol_bound(self.kernel(), self.grid, self.factor))
        return dict(tau=float(d.mean()), tau_max=float(d.max()), frac=float(d.max()) * self.L * b * b / 2, bound=b,
                    rho=mode_fraction(self.kernel(), b))


class ChannelScale(nn.Module):
    """x ↦ a ⊙ x per channel (no bias, no batch statistics): ‖a ⊙ x‖ ≤ max|a_c|·‖x‖, an exact Lipschitz factor."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * self.scale.reshape(1, -1, 1)


class Net(nn.Module):
    """lift (1×5 conv to C) → blocks → [optional per-block affine/BN] → flatten → linear."""

    def __init__(self, blocks: List[nn.Module], channels: int = 32, length: int = 40, num_classes: int = 10,
                 between: str = 'none'):
        super().__init__()
        self.lift = nn.Conv1d(1, channels, 5, padding=2)
        self.blocks = nn.ModuleList(blocks)
        if between == 'bn':
            self.between = nn.ModuleList([nn.BatchNorm1d(channels) for _ in blocks])
        elif between == 'scale':
            self.between = nn.ModuleList([ChannelScale(channels) for _ in blocks])
        else:
            self.between = nn.ModuleList([nn.Identity() for _ in blocks])
        self.head = nn.Linear(channels * length, num_classes)

    def forward(self, x):
        x = self.lift(x)
        for b, n in zip(self.blocks, self.between):
            x = n(b(x))
        return self.head(x.flatten(1))


class PlainCNN(nn.Module):
    """The issue's plain CNN: 1×5 conv to 32, three 32→32 3-tap convs, ReLU after each, flatten, linear."""

    def __init__(self, channels: int = 32, length: int = 40, num_classes: int = 10):
        super().__init__()
        layers = [nn.Conv1d(1, channels, 5, padding=2), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * length, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class BoundGradient:
    """Mixin for the library's SymmetricResidual (and its FED/FSI subclasses), 1D: ``norm_bound()`` keeps its value,
    the rigorous cached B, and carries the gradient of σ_max: B·s/s.detach(), s = |u*ᴴK̂(ω*)v*| with the top
    singular triple found without gradient (:func:`top_singular_value_surrogate`). τ = σ(θ)·2/(L·B²) is unchanged
    in value, so the certificate is exactly the library's; only the optimizer now sees that growing σ_max shrinks τ."""

    def norm_bound(self) -> torch.Tensor:
        b = super().norm_bound()
        if torch.is_grad_enabled() and self.weight.requires_grad:
            s = top_singular_value_surrogate(self.weight, grid=self.bound.grid)
            b = b * (s / s.detach())
        return b


def library_blocks(depth: int, **kw) -> List[nn.Module]:
    from pdeblocks.layers import SymmetricResidual
    return [SymmetricResidual(32, kernel_size=3, dim=1, boundary='zeros', **kw) for _ in range(depth)]


def fed_blocks(depth: int, **kw) -> List[nn.Module]:
    from pdeblocks.layers import FEDCycle
    return [FEDCycle(32, kernel_size=3, dim=1, boundary='zeros', **kw) for _ in range(depth)]


def library_blocks_st(depth: int, fed: bool = False, **kw) -> List[nn.Module]:
    """The library's blocks with :class:`BoundGradient` (FEDCycle with ``fed``)."""
    from pdeblocks.layers import FEDCycle, SymmetricResidual
    base = FEDCycle if fed else SymmetricResidual
    cls = type(f'{base.__name__}BoundGradient', (BoundGradient, base), {})
    return [cls(32, kernel_size=3, dim=1, boundary='zeros', **kw) for _ in range(depth)]


# name → (builder of the model); each builder takes depth
VARIANTS = {
    'plain': lambda d: PlainCNN(),
    'lib_free': lambda d: Net(library_blocks(d, stability='none')),
    'lib_cert': lambda d: Net(library_blocks(d)),
    'lib_cert_lip_charb': lambda d: Net(library_blocks(d, stability='lipschitz', flux='charbonnier')),
    'free_pm': lambda d: Net([LeverBlock(32, step='free') for _ in range(d)]),
    'free_pm_bias': lambda d: Net([LeverBlock(32, step='free', flux='charbonnier', bias=True) for _ in range(d)]),
    'scalar_nograd': lambda d: Net([LeverBlock(32, grad_bound=False) for _ in range(d)]),
    'scalar_grad': lambda d: Net([LeverBlock(32) for _ in range(d)]),
    'scalar_grad_i9': lambda d: Net([LeverBlock(32, step_init=0.9) for _ in range(d)]),
    'channel_nograd': lambda d: Net([LeverBlock(32, step='channel', grad_bound=False) for _ in range(d)]),
    'channel_grad': lambda d: Net([LeverBlock(32, step='channel') for _ in range(d)]),
    'channel_grad_relu': lambda d: Net([LeverBlock(32, step='channel', flux='relu') for _ in range(d)]),
    'channel_grad_charb_bias': lambda d: Net([LeverBlock(32, step='channel', flux='charbonnier', bias=True)
                                              for _ in range(d)]),
    'scalar_grad_charb_bias': lambda d: Net([LeverBlock(32, flux='charbonnier', bias=True) for _ in range(d)]),
    'scalar_grad_relu': lambda d: Net([LeverBlock(32, flux='relu') for _ in range(d)]),
    'scalar_grad_bn': lambda d: Net([LeverBlock(32) for _ in range(d)], between='bn'),
    'lib_cert_bn': lambda d: Net(library_blocks(d), between='bn'),
    'fro_nograd': lambda d: Net([LeverBlock(32, grad_bound=False, normalize=True) for _ in range(d)]),
    'fro_channel_nograd': lambda d: Net([LeverBlock(32, step='channel', grad_bound=False, normalize=True)
                                         for _ in range(d)]),
    'fro_nograd_charb_bias': lambda d: Net([LeverBlock(32, grad_bound=False, normalize=True, flux='charbonnier',
                                                       bias=True) for _ in range(d)]),
    'fro_nograd_relu': lambda d: Net([LeverBlock(32, grad_bound=False, normalize=True, flux='relu')
                                      for _ in range(d)]),
    'scalar_st': lambda d: Net([LeverBlock(32, grad_bound='surrogate') for _ in range(d)]),
    'scalar_st_charb_bias': lambda d: Net([LeverBlock(32, grad_bound='surrogate', flux='charbonnier', bias=True)
                                           for _ in range(d)]),
    'scalar_st_relu': lambda d: Net([LeverBlock(32, grad_bound='surrogate', flux='relu') for _ in range(d)]),
    'lib_cert_st': lambda d: Net(library_blocks_st(d)),
    'lib_fed3': lambda d: Net(fed_blocks(d, steps=3)),
    'lib_fed3_st': lambda d: Net(library_blocks_st(d, fed=True, steps=3)),
    'lib_cert_st_d3': lambda d: Net(library_blocks_st(3)),
    'lib_cert_st_lam01': lambda d: Net(library_blocks_st(d, contrast=0.1)),
    'lib_cert_lam01': lambda d: Net(library_blocks(d, contrast=0.1)),
    'lib_cert_st_lam10': lambda d: Net(library_blocks_st(d, contrast=10.0)),
    'lib_cert_scale': lambda d: Net(library_blocks(d), between='scale'),
    'scalar_st_scale': lambda d: Net([LeverBlock(32, grad_bound='surrogate') for _ in range(d)], between='scale'),
    'scalar_st_bn': lambda d: Net([LeverBlock(32, grad_bound='surrogate') for _ in range(d)], between='bn'),
    'lib_free_bn': lambda d: Net(library_blocks(d, stability='none'), between='bn'),
    'scalar_grad_h64': lambda d: Net([LeverBlock(32, hidden=64) for _ in range(d)]),
}

# what each screened variant changes against the library default (lib_cert)
LEVERS = {
    'plain': 'plain CNN (4 conv, ReLU)',
    'lib_free': 'library block, free step (stability=none, bias)',
    'lib_free_bn': 'library block, free step, BatchNorm after every block',
    'lib_cert': 'library default: Euclidean, Perona–Malik, τ = σ(θ)·2/(L·B²), B cached, no gradient',
    'lib_cert_lip_charb': 'library block, Lipschitz mode, Charbonnier, bias',
    'free_pm_bias': 'prototype, free step, Charbonnier, bias',
    'scalar_nograd': 'prototype of the default: B recomputed each step, no gradient',
    'scalar_grad': 'gradient through B (Gram bound in autograd every step)',
    'scalar_grad_i9': 'gradient through B, step_init 0.9',
    'scalar_st': 'B rigorous, gradient of σ_max(K̂(ω*)) (Danskin surrogate)',
    'channel_nograd': 'per-channel D_i = σ(θ_i)·(2/L)/T_i, T Gram row sums, no gradient',
    'channel_grad': 'per-channel steps, gradient through T',
    'fro_nograd': 'K = V/‖V‖_F (scale gauge removed), B of K, no gradient',
    'fro_channel_nograd': 'K = V/‖V‖_F, per-channel steps, no gradient',
    'fro_nograd_relu': 'K = V/‖V‖_F, no gradient, ReLU flux',
    'fro_nograd_charb_bias': 'K = V/‖V‖_F, no gradient, Charbonnier + bias (Lipschitz)',
    'scalar_grad_charb_bias': 'gradient through B, Lipschitz mode: Charbonnier + bias',
    'channel_grad_charb_bias': 'per-channel steps with gradient, Charbonnier + bias',
    'channel_grad_relu': 'per-channel steps with gradient, ReLU flux',
    'scalar_grad_relu': 'gradient through B, ReLU flux',
    'scalar_st_charb_bias': 'σ_max surrogate gradient, Charbonnier + bias',
    'scalar_st_relu': 'σ_max surrogate gradient, ReLU flux',
    'lib_cert_bn': 'library default + BatchNorm after every block (not certified)',
    'scalar_grad_bn': 'gradient through B + BatchNorm after every block',
    'scalar_st_bn': 'σ_max surrogate gradient + BatchNorm after every block',
    'lib_cert_st': 'library SymmetricResidual + BoundGradient mixin (σ_max surrogate gradient, value unchanged)',
    'lib_fed3': 'library FEDCycle, 3 steps per cycle (diffusion time 4τ_max), no gradient through B',
    'lib_fed3_st': 'library FEDCycle, 3 steps, + BoundGradient',
    'lib_cert_st_d3': 'library block + BoundGradient, 3 blocks instead of 6',
    'lib_cert_st_lam01': 'library block + BoundGradient, contrast λ init 0.1',
    'lib_cert_lam01': 'library block, contrast λ init 0.1',
    'lib_cert@cad507a': 'lib_cert run on the library at cad507a: radial gradient of B, training-pass estimate',
    'lib_cert_lam01@cad507a': 'lib_cert_lam01 run on the library at cad507a',
    'lib_cert_st_lam10': 'library block + BoundGradient, contrast λ init 10',
    'lib_cert_scale': 'library default + certified per-channel gain after every block',
    'scalar_st_scale': 'σ_max surrogate gradient + certified per-channel gain after every block',
    'scalar_grad_h64': 'gradient through B, 64 hidden channels',
}


def write_table(jsonl: str, stem: str = 'mnist1d_levers') -> str:
    """The screening table (one row per variant and seed) from the JSON lines of earlier runs."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import save_results
    rows = [json.loads(line) for line in open(jsonl) if line.strip()]
    lines = ['| variant | lever | params | test % | train % | τ after training | τ·L·B²/2 | B | ρ |',
             '|---|---|---:|---:|---:|---|---|---|---|']
    rng = lambda v, d=3: '—' if not v else f"{min(v):.{d}g}–{max(v):.{d}g}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['variant']} | {LEVERS.get(r['variant'], '')} | {r['params']:,} | {r['acc'] * 100:.1f} | "
                     f"{r['train_acc'] * 100:.1f} | {rng(r['tau'])} | {rng(r['frac'])} | {rng(r['bound'])} | "
                     f"{rng(r.get('rho', []), 2)} |")
    epochs = sorted({r['epochs'] for r in rows})
    seeds = sorted({r['seed'] for r in rows})
    head = (f"MNIST-1D lever screening: {epochs} epochs, seed(s) {seeds}, AdamW lr 3e-3, cosine, batch 100, 6 blocks "
            f"of 32 channels, flatten head. ρ = mean σ²/B² over the modes of K (blank: not recorded in that run).")
    text = '\n'.join([head, ''] + lines + ['', f'Command: python benchmarks/mnist1d_levers.py --table {jsonl}'])
    save_results(stem, text, rows)
    return text


NO_DECAY = ('step_param', 'raw_contrast', 'knot_logits', 'bias', 'scale')


def train(model: nn.Module, data, epochs: int, seed: int, lr: float = 3e-3, batch: int = 100, wd: float = 1e-2):
    x, y, xt, yt = data
    decay = [p for n, p in model.named_parameters() if not n.endswith(NO_DECAY) and p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if n.endswith(NO_DECAY) or p.dim() <= 1]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=wd), dict(params=rest, weight_decay=0.0)], lr=lr)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    per_epoch = (time.perf_counter() - t0) / epochs
    model.eval()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
        train_acc = float((model(x).argmax(1) == y).float().mean())
    return acc, train_acc, per_epoch


def step_stats(model: nn.Module) -> List[Dict[str, float]]:
    out = []
    for m in model.modules():
        if isinstance(m, LeverBlock):
            out.append(m.step_report())
        elif hasattr(m, 'step_size') and hasattr(m, 'norm_bound'):
            with torch.no_grad():
                tau, b = float(m.step_size()), float(m.norm_bound())
            out.append(dict(tau=tau, tau_max=tau, frac=tau * m.step_constant * b * b / 2, bound=b,
                            rho=mode_fraction(m.weight, b)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--variants', default='plain,lib_free,lib_cert,scalar_grad,channel_grad')
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--seeds', default='0')
    p.add_argument('--depth', type=int, default=6)
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--out', default=None, help='append JSON lines here')
    p.add_argument('--table', default=None, help='write benchmarks/results/mnist1d_levers.md from these JSON lines')
    a = p.parse_args(argv)
    if a.table:
        print(write_table(a.table))
        return 0
    torch.set_num_threads(1)
    data = mnist1d_data()
    for name in a.variants.split(','):
        for seed in [int(s) for s in a.seeds.split(',')]:
            torch.manual_seed(seed)
            model = VARIANTS[name](a.depth)
            params = sum(p.numel() for p in model.parameters() if p.requires_grad)
            acc, tr, per_epoch = train(model, data, a.epochs, seed, lr=a.lr)
            st = step_stats(model)
            row = dict(variant=name, seed=seed, epochs=a.epochs, depth=a.depth, lr=a.lr, params=params, acc=acc,
                       train_acc=tr, s_per_epoch=per_epoch,
                       tau=[round(s['tau'], 5) for s in st], frac=[round(s['frac'], 3) for s in st],
                       bound=[round(s['bound'], 3) for s in st], rho=[round(s['rho'], 3) for s in st])
            print(json.dumps(row), flush=True)
            if a.out:
                with open(a.out, 'a') as f:
                    f.write(json.dumps(row) + '\n')


if __name__ == '__main__':
    sys.exit(main())
