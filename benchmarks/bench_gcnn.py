"""Benchmarks for the PDE-G-CNN layers (pdeblocks.layers.gcnn) and the ``pde_gcnn`` timm models.

    python benchmarks/bench_gcnn.py speed      # one CDE layer fwd+bwd: this release vs the previous one, interleaved
    python benchmarks/bench_gcnn.py epoch      # CPU time of one digits epoch: pde_gcnn, pde_gcnn_small, the linear
                                               # G-CNN baseline, a plain CNN
    python benchmarks/bench_gcnn.py rotation   # equivariance error for rotations off the 90° grid, against Or
    python benchmarks/bench_gcnn.py lift       # the lift's equivariance error at 45°: B-spline vs steerable kernels
    python benchmarks/bench_gcnn.py digits     # sklearn digits, protocols 'upright' / 'rotated' (--protocol)
    python benchmarks/bench_gcnn.py segment    # thin-curve segmentation: PDEGCNNSegmentation vs a U-net (Dice)
    python benchmarks/bench_gcnn.py probe      # protocol (a) probe of one variant (--gcnn, --ablation): accuracy vs angle
    python benchmarks/bench_gcnn.py all

Each section prints a markdown table and writes it to ``benchmarks/results/gcnn_<section>[_...].md``
(atomically). ``digits`` needs scikit-learn (benchmark-only dependency). Training runs are capped by
CPU time (``--time-limit``), which contention on a shared machine does not inflate. docs/gcnn.md has
the commands behind the published tables.
"""
import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import RESULTS, write_atomic  # noqa: E402

from pdeblocks.layers.gcnn import CDELayerM2, LiftM2Cartesian, ProjectM2, SpatialMaxPoolM2  # noqa: E402


def table(header: List[str], rows: List[List]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
    return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------
# the straightforward reference: min-plus convolution by unfold + amin, plain autograd
# ------------------------------------------------------------------------------------------------

def unfold_min_plus_m2(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(k □ f)(c, o, y, x) = min over the unfolded [kθ, k, k] neighbourhood of f + k (materialised)."""
    C, Or, kt, kh, kw = kernel.shape
    rt, rh, rw = kt // 2, kh // 2, kw // 2
    xp = torch.cat([x[:, :, Or - rt:], x, x[:, :, :rt]], dim=2) if rt else x
    xp = F.pad(xp, [rw, rw, rh, rh], value=float('inf'))
    patches = xp.unfold(2, kt, 1).unfold(3, kh, 1).unfold(4, kw, 1)  # [B, C, Or, H, W, kθ, kh, kw]
    return (patches + kernel[None, :, :, None, None]).amin(dim=(-3, -2, -1))


class _UnfoldErosion(nn.Module):
    def __init__(self, layer: nn.Module, sign: float):
        super().__init__()
        self.layer, self.sign = layer, sign

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sign * unfold_min_plus_m2(self.sign * x, self.layer.kernel())


def reference_cde_layer(layer: CDELayerM2) -> nn.Module:
    """The same CDE layer (shared parameters) with dilation and erosion done by unfold + amin."""
    ref = CDELayerM2.__new__(CDELayerM2)
    nn.Module.__init__(ref)
    ref.iterations = layer.iterations
    ref.convection, ref.linear, ref.norm = layer.convection, layer.linear, layer.norm
    ref.dilation = _UnfoldErosion(layer.dilation, -1.0)
    ref.erosion = _UnfoldErosion(layer.erosion, 1.0)
    return ref


# ------------------------------------------------------------------------------------------------
# the previous release's CDE layer (commit e02162c), kept here only to measure the speed-up against it:
# convection by gather on expanded indices, min-plus by the torch loop (PDEBLOCKS_NATIVE=0), channel
# mixing by a 1×1×1 conv3d. Same parameters and same values as the current layer.
# ------------------------------------------------------------------------------------------------

def _previous_left_invariant_shift_m2(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    from pdeblocks.layers.gcnn import translate_bilinear
    B, C, Or, H, W = x.shape
    s = shift[:, 2] * (Or / (2 * math.pi))
    n = torch.floor(s)
    a = (s - n).to(x.dtype).view(1, C, 1, 1, 1)
    o = torch.arange(Or, device=x.device).view(1, Or)
    i0 = torch.remainder(o + n.long().view(C, 1), Or)
    i1 = torch.remainder(i0 + 1, Or)
    f0 = x.gather(2, i0.view(1, C, Or, 1, 1).expand(B, C, Or, H, W))
    f1 = x.gather(2, i1.view(1, C, Or, 1, 1).expand(B, C, Or, H, W))
    x = f0 + a * (f1 - f0)
    theta = torch.arange(Or, device=x.device, dtype=torch.float32) * (2 * math.pi / Or)
    cos_o, sin_o = torch.cos(theta).view(1, Or), torch.sin(theta).view(1, Or)
    x0, y0 = shift[:, 0].view(C, 1), shift[:, 1].view(C, 1)
    sx = (cos_o * x0 - sin_o * y0).reshape(C * Or)
    sy = (sin_o * x0 + cos_o * y0).reshape(C * Or)
    return translate_bilinear(x.reshape(B, C * Or, H, W), sx, sy).reshape(B, C, Or, H, W)


class PreviousCDELayer(nn.Module):
    """The previous release's evaluation of ``layer`` (shares its parameters); run it with PDEBLOCKS_NATIVE=0."""

    def __init__(self, layer: CDELayerM2):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lay = self.layer
        for _ in range(lay.iterations):
            x = _previous_left_invariant_shift_m2(x, lay.convection.shift)
            x = lay.erosion(lay.dilation(x))
        return lay.norm(F.conv3d(x, lay.linear.weight[:, :, None, None, None]))


SPEED_CFG = dict(B=8, C=16, Or=8, H=64, W=64, k=5, kt=5)
# the digits recipe of the PDE-G-CNNs: DIGITS_EPOCHS epochs, and a model's own entry in DIGITS_RECIPES (epochs and
# train() options) where it has one (docs/gcnn.md, round 5); the command line's --epochs / --ema-decay override both
DIGITS_EPOCHS = 30
DIGITS_RECIPES: Dict[str, Dict] = {'pde_gcnn_steerable': dict(epochs=45)}


def _make_layer_and_input(seed: int = 0):
    c = SPEED_CFG
    torch.manual_seed(seed)
    layer = CDELayerM2(c['C'], c['C'], c['Or'], c['k'], c['kt'])
    x = torch.randn(c['B'], c['C'], c['Or'], c['H'], c['W'], requires_grad=True)
    return layer, x


@contextlib.contextmanager
def _native(enabled: bool):
    """Run with the fused C kernel (the default) or with the pure torch loop (the previous default)."""
    old = os.environ.get('PDEBLOCKS_NATIVE')
    os.environ['PDEBLOCKS_NATIVE'] = '1' if enabled else '0'
    try:
        yield
    finally:
        if old is None:
            del os.environ['PDEBLOCKS_NATIVE']
        else:
            os.environ['PDEBLOCKS_NATIVE'] = old


def _fwd_bwd(layer: nn.Module, x: torch.Tensor, native: bool = True):
    """Time one forward + backward; returns (seconds, output, input gradient)."""
    x.grad = None
    for p in layer.parameters():
        p.grad = None
    with _native(native):
        t0 = time.perf_counter()
        y = layer(x)
        y.square().mean().backward()
        t = time.perf_counter() - t0
    return t, y.detach(), x.grad


def _rss_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def _memory_child(which: str, threads: int) -> None:
    torch.set_num_threads(threads)
    layer, x = _make_layer_and_input()
    net = {'unfold': reference_cde_layer(layer), 'previous': PreviousCDELayer(layer)}.get(which, layer)
    _fwd_bwd(net, x[:1].detach().requires_grad_(), which != 'previous')  # build / load the C kernel first
    base = _rss_kib('VmRSS:')
    _fwd_bwd(net, x, which != 'previous')
    print(json.dumps({'peak_extra_mib': (_rss_kib('VmHWM:') - base) / 1024}))


def _peak_memory(which: str) -> float:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), '_memchild', which, str(torch.get_num_threads())],
                         capture_output=True, text=True, check=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])['peak_extra_mib']


def bench_speed(repeats: int = 10, unfold: bool = False, with_diffusion: bool = False) -> str:
    """One CDE layer fwd+bwd: this release (fused C min-plus kernel) against the previous release's
    evaluation of the same layer, and against this release with the torch loop (no C compiler),
    interleaved; the linear counterpart (diffusion, same kernel size) for scale."""
    from pdeblocks._native import native_available
    from pdeblocks.layers.gcnn import DiffusionM2
    if not native_available():
        raise SystemExit('the C kernel is not available (no C compiler, or PDEBLOCKS_NATIVE=0)')
    layer, x = _make_layer_and_input()
    previous = PreviousCDELayer(layer)
    c = SPEED_CFG
    diffusion = DiffusionM2(c['C'], c['Or'], c['k'], c['kt'])
    runs = {'native': (layer, True), 'previous': (previous, False), 'loop': (layer, False)}
    if with_diffusion:
        runs['diffusion'] = (diffusion, True)
    for net, native in runs.values():  # warm-up (builds the C kernel once)
        _fwd_bwd(net, x, native)
    times: Dict[str, List[float]] = {k: [] for k in runs}
    max_out = max_grad = 0.0
    for _ in range(repeats):  # interleaved, so contention hits all alike
        outs = {}
        for name, (net, native) in runs.items():
            t, y, g = _fwd_bwd(net, x, native)
            times[name].append(t)
            outs[name] = (y, g.clone())
        for name in ('previous', 'loop'):
            max_out = max(max_out, (outs['native'][0] - outs[name][0]).abs().max().item())
            max_grad = max(max_grad, (outs['native'][1] - outs[name][1]).abs().max().item())
        print({k: f'{v[-1]:.3f}' for k, v in times.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [p / n for n, p in zip(times['native'], times['previous'])]
    ratios_loop = [p / n for n, p in zip(times['native'], times['loop'])]
    mem = {k: _peak_memory(k) for k in ('native', 'previous')}
    rows = [
        ['CDE layer, this release (fused C min-plus kernel)', f"{med['native']:.3f}", f"{mem['native']:.0f}"],
        ['CDE layer, previous release (torch loop, gather convection, conv3d mixing)', f"{med['previous']:.3f}",
         f"{mem['previous']:.0f}"],
        ['CDE layer, this release without the C kernel (PDEBLOCKS_NATIVE=0)', f"{med['loop']:.3f}", ''],
    ]
    if with_diffusion:
        rows.append(['DiffusionM2 alone (linear convolution, same kernel), for scale', f"{med['diffusion']:.3f}", ''])
    if unfold:
        ref = reference_cde_layer(layer)
        t_ref = _fwd_bwd(ref, x)[0]
        rows.append(['CDE layer, unfold + amin reference (one run)', f'{t_ref:.3f}', f"{_peak_memory('unfold'):.0f}"])
    text = (f"## One CDE layer, fwd+bwd, B={c['B']} C={c['C']} Or={c['Or']} {c['H']}x{c['W']}, "
            f"kernel {c['kt']}x{c['k']}x{c['k']}\n\n"
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {repeats} interleaved repeats; "
            f"peak memory = peak RSS increase of a fresh process over its RSS before the pass.\n"
            f"speed-up over the previous release: median of per-repeat ratios {statistics.median(ratios):.2f}x "
            f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x); over this release without the C kernel: "
            f"{statistics.median(ratios_loop):.2f}x (min {min(ratios_loop):.2f}x, max {max(ratios_loop):.2f}x).\n"
            f"same layer, same input: max |out - out_other| = {max_out:.2e}, "
            f"max |grad - grad_other| = {max_grad:.2e} (float32 rounding: convection by C vs grid_sample, summation order)\n\n"
            + table(['implementation', 'time fwd+bwd [s]', 'peak extra memory [MiB]'], rows) + '\n')
    print(text)
    write_atomic(RESULTS / 'gcnn_speed.md', text)
    return text


# ------------------------------------------------------------------------------------------------
# equivariance off the 90° grid
# ------------------------------------------------------------------------------------------------

def rotate_image(x: torch.Tensor, angle_deg: float) -> torch.Tensor:
    a = math.radians(angle_deg)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _disc(size: int, radius2: float, dtype=torch.float64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing='ij')
    return ((xx ** 2 + yy ** 2) < radius2).to(dtype)


def rotation_error(orientations: int, angle_deg: float, seed: int = 0, size: int = 41) -> float:
    """‖net(R x) − R net(x)‖ / ‖R net(x)‖ on an inner disc; net = lift → 2 CDE layers → max-project (float64)."""
    torch.manual_seed(seed)
    net = nn.Sequential(LiftM2Cartesian(1, 6, orientations, 5), CDELayerM2(6, 6, orientations, 5),
                        CDELayerM2(6, 4, orientations, 5), ProjectM2()).double().eval()
    x = torch.randn(2, 1, size, size, dtype=torch.float64)
    x = F.avg_pool2d(F.avg_pool2d(x, 3, 1, 1), 3, 1, 1) * _disc(size, 0.6)  # smooth, inside a disc
    inner = _disc(size, 0.3)
    with torch.no_grad():
        a = net(rotate_image(x, angle_deg)) * inner
        b = rotate_image(net(x), angle_deg) * inner
    return ((a - b).norm() / b.norm()).item()


def bench_rotation() -> str:
    angles = [90.0, 60.0, 45.0, 30.0, 22.5]
    rows = []
    for Or in (4, 6, 8, 12, 16):
        rows.append([Or] + [f'{statistics.mean(rotation_error(Or, a, s) for s in range(3)):.2e}' for a in angles])
    text = ('## Rotation equivariance error vs orientation count\n\n'
            'relative error ‖net(Rx) − R net(x)‖/‖R net(x)‖ on an inner disc, net = lift → 2 CDE layers → max over θ, '
            'random init, float64, bilinear image rotation, mean over 3 seeds (the 90° column is exact '
            'for Or divisible by 4; the remainder is interpolation of both the image and the discrete θ grid)\n\n'
            + table(['Or'] + [f'{a:g}°' for a in angles], rows) + '\n')
    print(text)
    write_atomic(RESULTS / 'gcnn_rotation.md', text)
    return text


def bench_lift(angle_deg: float = 45.0, seeds: int = 3, channels: int = 16, orientations: int = 8) -> str:
    """Equivariance error on M₂ of the lift alone at ``angle_deg`` (random init, float64, the upright
    test digits): ‖L(R x) − R̃ L(x)‖ / ‖R̃ L(x)‖ (:func:`_rotate_m2_off_grid`), and the same after max over
    θ; B-spline lifts of order 1–3 against steerable lifts with angular frequencies m ≤ 0 … 3."""
    from pdeblocks.layers.gcnn import LiftM2Steerable
    x = load_digits_tensors()['x_test'][:128].double()
    xr = rotate_batch(x, torch.full((len(x),), float(angle_deg)))
    disc = _disc(x.shape[-1], 0.49)

    def errors(lift: nn.Module):
        with torch.no_grad():
            a, b = lift(x), lift(xr)
        ref = _rotate_m2_off_grid(a, angle_deg)
        pa = rotate_batch(a.amax(2), torch.full((len(x),), float(angle_deg)))
        return (((b - ref) * disc).norm() / (ref * disc).norm()).item(), \
            (((b.amax(2) - pa) * disc).norm() / (pa * disc).norm()).item()

    variants = [(f'B-spline order {s}', lambda s=s: LiftM2Cartesian(1, channels, orientations, 5, spline_order=s))
                for s in (1, 2, 3)]
    variants += [(f'steerable, m ≤ {m}', lambda m=m: LiftM2Steerable(1, channels, orientations, 5, max_frequency=m))
                 for m in (3, 2, 1, 0)]
    rows = []
    for name, build in variants:
        e = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            lift = build().double()
            e.append(errors(lift))
        rows.append([name, sum(p.numel() for p in lift.parameters()), f'{statistics.mean(v[0] for v in e):.3f}',
                     f'{statistics.mean(v[1] for v in e):.3f}'])
    text = (f'## The lift alone at {angle_deg:g}°: equivariance error on M₂\n\n'
            f'{channels} random kernels 5×5 (init seeds 0…{seeds - 1}, mean), {orientations} orientations, float64; 128 '
            f'upright test digits; bilinear rotation of the image and of every (c, o) plane, θ shifted by '
            f'{angle_deg * orientations / 360:g} steps; inner disc (radius 0.7).\n\n'
            + table(['lift', 'parameters (1 → 16 channels)', 'error on M₂', 'error after max over θ'], rows) + '\n')
    print(text)
    write_atomic(RESULTS / 'gcnn_lift.md', text)
    return text


# ------------------------------------------------------------------------------------------------
# sklearn digits: upright training, rotated test split
# ------------------------------------------------------------------------------------------------

class PlainCNN(nn.Module):
    """Conv-BN-ReLU ×3 with max-pooling, global average pool, linear head."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_chans: int = 1):
        super().__init__()

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.features = nn.Sequential(*block(in_chans, width // 2), nn.MaxPool2d(2), *block(width // 2, width),
                                      nn.MaxPool2d(2), *block(width, width * 2))
        self.head = nn.Linear(width * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(-2, -1)))


class GroupConvM2(nn.Module):
    """Depthwise linear group convolution on M₂ with free kernels (the G-CNN baseline's layer):

        (K ⋆ f)(c, o, p) = Σ_{d, q} K_c(R_{θ_o}⁻¹ q, d) f(c, o + d − rθ, p + q),

    K_c(·, d) a B-spline expansion on the k×k grid rotated per output orientation exactly like the
    lift's kernels, so the layer is roto-translation equivariant (exactly for quarter turns)."""

    def __init__(self, channels: int, orientations: int, kernel_size: int = 5, orientation_kernel_size: int = 5):
        super().__init__()
        self.channels, self.orientations = channels, orientations
        self.kernel_size, self.orientation_kernel_size = kernel_size, orientation_kernel_size
        self.weight = nn.Parameter(torch.empty(channels, orientation_kernel_size, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight.view(channels, 1, -1), a=math.sqrt(5))

    def kernel(self) -> torch.Tensor:
        """kernel[c, o, d, i, j] = K_c(R_{θ_o}⁻¹ q_ij, d): [C, Or, kθ, k, k] (the layout of linear_convolution_m2)."""
        from pdeblocks.layers.gcnn import bspline_rotation_matrix
        C, kt, k, Or = self.channels, self.orientation_kernel_size, self.kernel_size, self.orientations
        A = bspline_rotation_matrix(self.weight, Or, k, 2).to(self.weight.dtype)  # [Or, k², k²]
        return torch.einsum('opn,cdn->codp', A, self.weight.reshape(C, kt, k * k)).reshape(C, Or, kt, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one conv2d with C groups of Or → Or channels: the θ band (o' = o + d − rθ mod Or) scattered into a
        # dense Or × Or block per channel (≈ 30× faster on CPU than linear_convolution_m2's C·Or groups)
        C, kt, k, Or = self.channels, self.orientation_kernel_size, self.kernel_size, self.orientations
        o = torch.arange(Or, device=x.device)
        d = torch.arange(kt, device=x.device)
        band = F.one_hot((o.view(1, Or) + d.view(kt, 1) - kt // 2) % Or, Or).to(x.dtype)  # [kθ, o, o']
        weight = torch.einsum('codij,dop->copij', self.kernel().to(x.dtype), band).reshape(C * Or, Or, k, k)
        B, H, W = x.shape[0], x.shape[3], x.shape[4]
        return F.conv2d(x.reshape(B, C * Or, H, W), weight, padding=k // 2, groups=C).view(B, C, Or, H, W)


class LinearGCNN(nn.Module):
    """Lifting G-CNN baseline with the PDE-G-CNN's widths: the project's lift (+ BN, ReLU), then ``depth``
    × [GroupConvM2 → LinearM2 → BN → ReLU] (linear group convolutions instead of the CDE layers), max
    over θ, global average pool, linear head."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, channels: int = 16, orientations: int = 8,
                 depth: int = 4, kernel_size: int = 5, orientation_kernel_size: int = 5):
        super().__init__()
        from pdeblocks.layers.gcnn import LinearM2
        layers = [LiftM2Cartesian(in_chans, channels, orientations, kernel_size), nn.BatchNorm3d(channels), nn.ReLU()]
        for _ in range(depth):
            layers += [GroupConvM2(channels, orientations, kernel_size, orientation_kernel_size),
                       LinearM2(channels, channels), nn.BatchNorm3d(channels), nn.ReLU()]
        self.features = nn.Sequential(*layers, ProjectM2('max'))
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(-2, -1)))


def rotate_batch(x: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate every image of ``x`` [N, C, H, W] by its own angle (bilinear, zero outside, about the centre)."""
    a = angles_deg.to(torch.float64) * (math.pi / 180)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x.double(), grid, align_corners=True).to(x.dtype)


def translate_batch(x: torch.Tensor, shifts_px: torch.Tensor) -> torch.Tensor:
    """Translate every image of ``x`` [N, C, H, W] by its own (dx, dy) in pixels (``shifts_px`` [N, 2]):
    out(p) = x(p − (dx, dy)), bilinear, zero outside."""
    N, H, W = x.shape[0], x.shape[-2], x.shape[-1]
    s = shifts_px.to(torch.float64)
    one, zero = torch.ones(N, dtype=torch.float64), torch.zeros(N, dtype=torch.float64)
    # affine_grid with align_corners=True: one pixel is 2 / (size - 1) in normalised coordinates
    theta = torch.stack([torch.stack([one, zero, -s[:, 0] * 2 / (W - 1)], 1),
                         torch.stack([zero, one, -s[:, 1] * 2 / (H - 1)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    return F.grid_sample(x.double(), grid, align_corners=True).to(x.dtype)


def load_digits_tensors(size: int = 20, seed: int = 0) -> Dict[str, torch.Tensor]:
    """8×8 digits → bilinear ×2 upsampling (16×16) → zero-padded to size×size; 80/20 split (seed);
    ``x_train_rot`` / ``x_test_rot``: each image rotated once by a uniformly random angle (bilinear)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    p = (size - x.shape[-1]) // 2
    x = F.pad(x, [p, size - x.shape[-1] - p, p, size - x.shape[-2] - p])
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_train = int(0.8 * len(x))
    tr, te = perm[:n_train], perm[n_train:]
    x_test_rot = rotate_batch(x[te], torch.rand(len(te), generator=g) * 360.0)
    x_train_rot = rotate_batch(x[tr], torch.rand(len(tr), generator=g) * 360.0)
    return dict(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te], x_test_rot=x_test_rot,
                x_train_rot=x_train_rot)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 128]).argmax(1) for i in range(0, len(x), 128)])
    return (pred == y).float().mean().item()


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int = 32,
          seed: int = 0, augment_rotation: bool = False, weight_decay: float = 1e-4,
          time_limit: float = float('inf'), ema_decay: float = 0.0, augment_shift: float = 0.0) -> Dict[str, float]:
    """AdamW (timm's create_optimizer_v2: no decay on norms, biases and the model's no_weight_decay
    set) with timm's per-step cosine schedule and one warm-up epoch. ``augment_rotation``: every batch
    rotated by fresh uniform random angles; ``augment_shift`` = s > 0: every image translated by fresh
    uniform random (dx, dy) ∈ [−s, s]² pixels (bilinear, zero outside: sub-pixel shifts blur like the
    resampling of a rotation, without rotating). Stops after ``time_limit`` seconds of this process's CPU
    time (the schedule is not shortened). ``ema_decay`` > 0: an exponential moving average of the
    weights, ā ← d·ā + (1 − d)·a after every step (timm's ModelEmaV3), replaces the weights at the end,
    and the batch-norm statistics are then recomputed on the training images (one pass, no gradients;
    included in the times). Returns wall and CPU time, epochs run and the mean epoch CPU time (CPU
    time, not wall time, is what a shared machine does not inflate)."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler
    from timm.utils import ModelEmaV3
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")
    g = torch.Generator().manual_seed(seed)
    opt = create_optimizer_v2(model, 'adamw', lr=lr, weight_decay=weight_decay)
    ema = ModelEmaV3(model, decay=ema_decay) if ema_decay > 0 else None
    steps_per_epoch = math.ceil(len(x) / batch_size)
    sched = CosineLRScheduler(opt, t_initial=epochs * steps_per_epoch, warmup_t=steps_per_epoch,
                              warmup_lr_init=lr / 100, lr_min=lr / 1000, t_in_epochs=False)
    t0, c0 = time.perf_counter(), time.process_time()
    step = 0
    epochs_run = 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx]
            if augment_rotation:
                xb = rotate_batch(xb, torch.rand(len(idx), generator=g) * 360.0)
            if augment_shift > 0:
                xb = translate_batch(xb, (torch.rand(len(idx), 2, generator=g) * 2 - 1) * augment_shift)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            sched.step_update(step)
            if ema is not None:
                ema.update(model, step)
        epochs_run += 1
        cpu = time.process_time() - c0
        print(f'  epoch {epochs_run}: loss {loss.item():.3f}, cpu {cpu:.0f} s, wall {time.perf_counter() - t0:.0f} s',
              flush=True)
        if cpu > time_limit:
            break
    if ema is not None:  # the averaged weights, with batch-norm statistics of their own
        model.load_state_dict(ema.module.state_dict())
        torch.optim.swa_utils.update_bn([x[i:i + batch_size] for i in range(0, len(x), batch_size)], model)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dict(time=wall, cpu_time=cpu, epochs=epochs_run, epoch_time=cpu / epochs_run)


def digits_models(names: List[str], gcnn_kwargs: Dict, seed: int = 0) -> Dict[str, nn.Module]:
    import timm

    import pdeblocks.models.pde_gcnn  # noqa: F401 registers pde_gcnn*
    models = {}
    for name in names:
        torch.manual_seed(seed)
        if name == 'cnn' or name == 'cnn+rot':
            models[name] = PlainCNN(10, 32)
        elif name == 'gcnn_linear':
            models[name] = LinearGCNN(10, 1)
        else:  # 'timm_name' or 'timm_name@{json kwargs}' (the latter overrides gcnn_kwargs)
            timm_name, _, extra = name.partition('@')
            kwargs = dict(gcnn_kwargs, **json.loads(extra)) if extra else gcnn_kwargs
            models[name] = timm.create_model(timm_name, num_classes=10, in_chans=1, **kwargs)
    return models


def digits_recipe(name: str, epochs: Optional[int], recipe: Dict) -> Tuple[int, Dict]:
    """Epochs and :func:`train` options for the PDE-G-CNN ``name`` ('MODEL', 'MODEL@{json}' or 'MODEL#ABLATION' read
    MODEL's entry): ``epochs`` unless None and the keys of ``recipe`` (the command line's), else the model's
    :data:`DIGITS_RECIPES` entry, else :data:`DIGITS_EPOCHS` and no extra options."""
    own = dict(DIGITS_RECIPES.get(name.partition('@')[0].partition('#')[0], {}))
    own_epochs = own.pop('epochs', DIGITS_EPOCHS)
    return (own_epochs if epochs is None else epochs), {**own, **recipe}


def bench_digits(protocol: str, names: List[str], epochs: Dict[str, Optional[int]], lrs: Dict[str, float],
                 gcnn_kwargs: Dict, time_limit: float, tag: str = '', seed: int = 0, recipe: Dict = None) -> str:
    """Protocol 'upright': train on upright digits, test upright and rotated (the equivariance test).
    Protocol 'rotated': train on the randomly rotated training split, test on the rotated test split
    (the rotated-MNIST protocol). 'cnn+rot' is the CNN with per-batch random rotation augmentation.
    ``recipe``: extra :func:`train` options (``ema_decay``, ``augment_shift``, ``weight_decay``) for the models other
    than the CNNs; ``epochs['gcnn']`` None: :func:`digits_recipe` picks a model's epochs and options."""
    recipe = recipe or {}
    data = load_digits_tensors()
    x_train = data['x_train'] if protocol == 'upright' else data['x_train_rot']
    models = digits_models(names, gcnn_kwargs, seed)
    rows, records = [], []
    for name, model in models.items():
        n_params = sum(p.numel() for p in model.parameters())
        kind = 'cnn' if name.startswith('cnn') else 'gcnn'
        n_epochs, extra = digits_recipe(name, epochs['gcnn'], recipe) if kind == 'gcnn' else (epochs['cnn'], {})
        run = train(model, x_train, data['y_train'], n_epochs, lrs[kind], augment_rotation=name == 'cnn+rot',
                    time_limit=time_limit, seed=seed, **extra)
        acc = _accuracy(model, data['x_test'], data['y_test'])
        acc_rot = _accuracy(model, data['x_test_rot'], data['y_test'])
        rec = dict(model=name, params=n_params, upright=acc, rotated=acc_rot, lr=lrs[kind], recipe=extra, **run)
        records.append(rec)
        rows.append([name, n_params, f'{acc * 100:.1f}', f'{acc_rot * 100:.1f}', f"{run['epochs']}",
                     f"{run['cpu_time']:.0f}", f"{run['time']:.0f}", f"{run['epoch_time']:.2f}"])
        print(rows[-1], flush=True)
    cnn_epoch = next((r['epoch_time'] for r in records if r['model'] == 'cnn'), None)
    if cnn_epoch:
        for row, rec in zip(rows, records):
            row.append(f"{rec['epoch_time'] / cnn_epoch:.1f}")
    what = ('trained upright, tested upright and randomly rotated' if protocol == 'upright'
            else 'trained and tested randomly rotated')
    text = (f'## sklearn digits, {what}\n\n'
            f"1797 digits 8×8 → 16×16 (bilinear) → padded 20×20; 80/20 split (seed 0); rotated splits: every image "
            f"rotated once by a uniform random angle (bilinear). AdamW (timm create_optimizer_v2, weight decay 1e-4) "
            f"+ timm per-step cosine schedule with one warm-up epoch, batch 32, lr {lrs}, epochs "
            f"{dict(epochs, gcnn=epochs['gcnn'] or 'per model (table)')}, stop after {time_limit:.0f} s of CPU time; PDE-G-CNN options {gcnn_kwargs}, recipes {dict((r['model'], r['recipe']) for r in records)}; seed {seed}. {torch.get_num_threads()} CPU "
            f"thread(s) on a shared machine (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the "
            f"end): wall time is inflated by contention, CPU time is the training cost; epoch times are CPU time.\n\n"
            + table(['model', 'parameters', 'test acc upright [%]', 'test acc rotated [%]', 'epochs',
                     'train CPU time [s]', 'train wall time [s]', 'epoch CPU time [s]']
                    + (['epoch time / CNN'] if cnn_epoch else []), rows) + '\n')
    print(text)
    write_atomic(RESULTS / f'gcnn_digits_{protocol}{tag}.md', text)
    write_atomic(RESULTS / f'gcnn_digits_{protocol}{tag}.json', json.dumps(records, indent=2) + '\n')
    return text


def bench_epoch(names: List[str], repeats: int = 3, tag: str = '') -> str:
    """CPU time of one training epoch on the digits (upright split, batch 32, AdamW) per model, the
    models interleaved within every repeat; ratio to the plain CNN's epoch. A name 'MODEL#ABLATION' is
    MODEL with the probe ablation ABLATION applied (:func:`_ablate`)."""
    data = load_digits_tensors()
    names = names + ['cnn'] if 'cnn' not in names else names
    built = digits_models([n.partition('#')[0] for n in names], {})
    models = {}
    for name in names:
        base, _, ablation = name.partition('#')
        models[name] = built[base] if not ablation else digits_models([base], {})[base]
        if ablation:
            _ablate(models[name], ablation)
    times: Dict[str, List[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            run = train(model, data['x_train'], data['y_train'], 1, 0.005)
            times[name].append(run['cpu_time'])
    med = {name: statistics.median(v) for name, v in times.items()}
    rows = [[name, sum(p.numel() for p in models[name].parameters()), f'{med[name]:.2f}',
             f"{med[name] / med['cnn']:.1f}"] for name in models]
    text = ('## One training epoch on the digits (1437 images 20×20, batch 32)\n\n'
            f'CPU time of the process (median of {repeats}, models interleaved), {torch.get_num_threads()} '
            f'thread(s), torch {torch.__version__}.\n\n'
            + table(['model', 'parameters', 'epoch CPU time [s]', 'ratio to the CNN'], rows) + '\n')
    print(text)
    write_atomic(RESULTS / f'gcnn_epoch{tag}.md', text)
    return text


# ------------------------------------------------------------------------------------------------
# protocol (a) probes: short runs of variants and ablations, accuracy against the rotation angle
# ------------------------------------------------------------------------------------------------

def _ablate(model: nn.Module, ablation: str) -> None:
    """Exploratory ablations of a pde_gcnn (probes only, not library options):
    'lift_order3' cubic instead of quadratic B-splines in the lift; 'lift_disc' lift coefficients
    outside the disc |n|² ≤ 5 unused; 'lift_norm' every rotated lift kernel rescaled to the norm of the
    unrotated one; 'iso' spatially isotropic metric (w₁ = w₂ = their mean); 'noconv' convection shifts
    fixed at 0; 'blurpool' the stem's 2×2 max pool (``downsample`` containing 0) replaced by a binomial
    anti-aliasing filter with stride 2 (:class:`_BinomialPoolM2`); 'octpool' that pool by a max over a nearly
    round 12-pixel window (``SpatialMaxPoolM2(2, 'round')``, the model option ``pool_window='round'``); 'instnorm' every BatchNorm3d replaced by an affine
    InstanceNorm3d (statistics of each image over (Or, H, W) per channel, in training and evaluation).
    Round 4: 'pad<N>' the input zero-padded by N px on every side inside the model (before the lift);
    'discpool' the head's global average over the disc inscribed in the map instead of the square
    (:class:`_DiscAvgPool`); 'disckernel' the dilation and erosion kernels +∞ at spatial offsets with
    Δx² + Δy² > (k//2 + ½)² (a round stencil instead of the square); 'multistage' the head reads the
    concatenated invariant descriptors (max over θ, global pool) of the stem and of every CDE layer;
    'blur<σ>' a fixed isotropic Gaussian blur of std σ px of the input inside the model (before the lift);
    'up<s>' the input upsampled ×s (bilinear) inside the model, before the lift (a finer grid for the lift
    and the first pool; pair it with ``downsample`` pooling once more to keep the CDE layers' grid);
    'thetaband<M>' the output of every erosion (the end of every CDE unit, before the channel mixing)
    band-limited over θ to angular frequencies |m| ≤ M (:class:`_ThetaBandLimit`); 'stemband<M>' the same on
    the stem's output.
    Several ablations joined by '+' are applied in order."""
    if '+' in ablation:
        for part in ablation.split('+'):
            _ablate(model, part)
        return
    lift = model.stem.lift
    if ablation.startswith('pad') and ablation[3:].isdigit():
        _prepend_to_stem(model, 'pad', nn.ZeroPad2d(int(ablation[3:])))
    elif ablation.startswith('up') and ablation[2:].isdigit():
        _prepend_to_stem(model, 'upsample', nn.Upsample(scale_factor=int(ablation[2:]), mode='bilinear',
                                                        align_corners=False))
    elif ablation.startswith('blur') and ablation != 'blurpool':
        _prepend_to_stem(model, 'blur', _GaussianBlur2d(float(ablation[4:])))
    elif ablation == 'discpool':
        model.head.global_pool = _DiscAvgPool()
    elif ablation == 'disckernel':
        from pdeblocks.layers.gcnn import FractionalErosionM2
        for mod in model.modules():
            if isinstance(mod, FractionalErosionM2):
                k = mod.kernel_size
                g = torch.arange(k, dtype=torch.float64) - k // 2
                outside = (g.view(k, 1) ** 2 + g.view(1, k) ** 2) > (k // 2 + 0.5) ** 2

                def kernel(mod=mod, outside=outside):
                    kern = type(mod).kernel(mod)
                    return kern.masked_fill(outside.to(kern.device), float('inf'))
                mod.kernel = kernel
    elif ablation == 'multistage':
        _multistage_head(model)
    elif ablation.startswith('thetaband') and ablation[9:].isdigit():
        for layer in model.modules():
            if isinstance(layer, CDELayerM2):
                layer.erosion = nn.Sequential(layer.erosion, _ThetaBandLimit(int(ablation[9:])))
    elif ablation.startswith('stemband') and ablation[8:].isdigit():
        model.stem.add_module('band', _ThetaBandLimit(int(ablation[8:])))
    elif ablation == 'lift_order3':
        lift.spline_order = 3
    elif ablation == 'lift_disc':
        k = lift.kernel_size
        g = torch.arange(k) - k // 2
        mask = ((g.view(k, 1) ** 2 + g.view(1, k) ** 2) <= 5).to(lift.weight.dtype).reshape(1, 1, -1)
        lift.interpolation_matrix = lambda: type(lift).interpolation_matrix(lift) * mask
    elif ablation == 'lift_norm':
        def rotated_kernels():
            K = type(lift).rotated_kernels(lift)  # [out, Or, in, k, k]
            n = K.flatten(2).norm(dim=-1)[:, :, None, None, None]
            return K * (n[:, :1] / n.clamp(min=1e-12))
        lift.rotated_kernels = rotated_kernels
    elif ablation == 'iso':
        from pdeblocks.layers.gcnn import _MetricKernelM2, metric_norm_sq_m2
        for mod in model.modules():
            if isinstance(mod, _MetricKernelM2):
                def rho2(mod=mod):
                    w = mod.metric.abs()
                    m = (w[:, 0] + w[:, 1]) / 2
                    return metric_norm_sq_m2(torch.stack([m, m, w[:, 2]], 1), mod.orientations, mod.kernel_size,
                                             mod.orientation_kernel_size)
                mod.rho2 = rho2
    elif ablation == 'noconv':
        for layer in model.layers:
            layer.convection.shift.data.zero_()
            layer.convection.shift.requires_grad_(False)
    elif ablation == 'blurpool':
        model.stem.pool = _BinomialPoolM2()
    elif ablation == 'octpool':
        model.stem.pool = SpatialMaxPoolM2(2, 'round')
    elif ablation == 'instnorm':
        for parent in list(model.modules()):
            for child_name, child in parent.named_children():
                if isinstance(child, nn.BatchNorm3d):
                    setattr(parent, child_name, nn.InstanceNorm3d(child.num_features, affine=True))
    elif ablation:
        raise ValueError(f"ablation must be one of lift_order3, lift_disc, lift_norm, iso, noconv, blurpool, "
                         f"octpool, instnorm, pad<N>, blur<sigma>, up<s>, discpool, disckernel, multistage, "
                         f"thetaband<M>, stemband<M> "
                         f"(several joined by '+'), got {ablation!r}")


def _prepend_to_stem(model: nn.Module, name: str, module: nn.Module) -> None:
    """``module`` runs first in ``model.stem`` (a named Sequential: lift, [pool,] norm)."""
    from collections import OrderedDict
    model.stem = nn.Sequential(OrderedDict([(name, module)] + list(model.stem.named_children())))


class _ThetaBandLimit(nn.Module):
    """Band limit over the orientation axis of M₂ maps [B, C, Or, H, W] (probe ablations 'thetaband<M>',
    'stemband<M>'): the orthogonal projection onto the angular frequencies |m| ≤ M,

        (P f)(θ_o) = Σ_{|m| ≤ M} f̂_m e^{i m θ_o},   f̂_m = (1/Or) Σ_o f(θ_o) e^{−i m θ_o},

    a circular convolution over θ (commutes with θ shifts and with everything spatial or per channel).
    A profile with no energy above M is resampled exactly by a fractional θ shift."""

    def __init__(self, max_frequency: int):
        super().__init__()
        self.max_frequency = max_frequency

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Or = x.shape[2]
        spec = torch.fft.rfft(x, dim=2)
        keep = (torch.arange(spec.shape[2], device=x.device) <= self.max_frequency).to(spec.real.dtype)
        return torch.fft.irfft(spec * keep.view(1, 1, -1, 1, 1), n=Or, dim=2)


class _DiscAvgPool(nn.Module):
    """Global average over the disc inscribed in the [B, C, H, W] map (probe ablation 'discpool'):
    mean of f(p) over |p − c|² ≤ (min(H, W)/2)², c the map's centre; returns [B, C]. The square's
    corners, which a rotation exchanges with the outside of the map, are left out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2], x.shape[-1]
        yy = torch.arange(H, dtype=x.dtype, device=x.device).view(H, 1) - (H - 1) / 2
        xx = torch.arange(W, dtype=x.dtype, device=x.device).view(1, W) - (W - 1) / 2
        mask = ((yy ** 2 + xx ** 2) <= (min(H, W) / 2) ** 2).to(x.dtype)
        return (x * mask).sum(dim=(-2, -1)) / mask.sum()


class _GaussianBlur2d(nn.Module):
    """Fixed isotropic Gaussian blur of std ``sigma`` px (radius ⌈3σ⌉, normalised, zero padding) of every
    input channel (probe ablation 'blur<σ>'): it commutes with rotations, so it can only remove the
    high frequencies that a rotation's resampling alters."""

    def __init__(self, sigma: float):
        super().__init__()
        r = max(1, math.ceil(3 * sigma))
        t = torch.arange(-r, r + 1, dtype=torch.float32)
        g = torch.exp(-t ** 2 / (2 * sigma ** 2))
        self.register_buffer('weight', (g / g.sum()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        r = self.weight.numel() // 2
        y = x.reshape(B * C, 1, H, W)
        y = F.conv2d(y, self.weight.to(x.dtype).view(1, 1, 1, -1), padding=(0, r))
        y = F.conv2d(y, self.weight.to(x.dtype).view(1, 1, -1, 1), padding=(r, 0))
        return y.view(B, C, H, W)


def _multistage_head(model: nn.Module) -> None:
    """Probe ablation 'multistage': the head reads [P Φ₀, P Φ₁, …, P Φ_depth] (P = max over θ) pooled and
    concatenated, (depth + 1)·C features, instead of the last stage's alone."""
    from timm.layers import ClassifierHead
    C = model.num_features
    n = len(model.layers) + 1
    model.head = ClassifierHead(C * n, model.num_classes, pool_type='avg')

    def forward_features(x: torch.Tensor, model=model) -> torch.Tensor:
        x = model.stem(x)
        feats = [model.project(x)]
        for layer in model.layers:
            x = layer(x)
            feats.append(model.project(x))
        return torch.cat(feats, dim=1)
    model.forward_features = forward_features


class _BinomialPoolM2(nn.Module):
    """Linear anti-aliased downsampling of M₂ maps (probe ablation 'blurpool', in place of a 2×2 max pool):
    the separable binomial [1, 3, 3, 1]/8 per axis, stride 2, zero padding 1; symmetric about every 2×2
    block's centre, so it commutes with quarter turns on even sizes like the max pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, Or, H, W = x.shape
        w1 = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype) / 8
        w = (w1.view(4, 1) * w1.view(1, 4)).view(1, 1, 4, 4)
        y = F.conv2d(x.reshape(B * C * Or, 1, H, W), w, stride=2, padding=1)
        return y.view(B, C, Or, y.shape[-2], y.shape[-1])


def stage_equivariance_errors(model: nn.Module, x: torch.Tensor, angle_deg: float = 45.0) -> List[float]:
    """Relative equivariance error of every stage of a PDEGCNN (eval mode) at ``angle_deg``:

        e_s = ‖P Φ_s(R x) − R P Φ_s(x)‖ / ‖R P Φ_s(x)‖,   P = max over θ,

    Φ_0 the stem (lift + BN), Φ_i the first i CDE layers; R the bilinear image rotation about the
    centre; norms over the batch and the channels, inside the inscribed disc of radius 0.7 (the
    rotated digit stays on the canvas there). Returns [e_0, …, e_depth]."""
    model.eval()
    xr = rotate_batch(x, torch.full((len(x),), float(angle_deg)))
    errors = []
    with torch.no_grad():
        a, b = model.stem(x), model.stem(xr)
        for i in range(len(model.layers) + 1):
            if i:
                a, b = model.layers[i - 1](a), model.layers[i - 1](b)
            pa, pb = model.project(a), model.project(b)
            ref = rotate_batch(pa, torch.full((len(x),), float(angle_deg)))
            disc = _disc(pa.shape[-1], 0.49, pa.dtype)
            errors.append(((pb - ref) * disc).norm().item() / (ref * disc).norm().item())
    return errors


def _rotate_m2_off_grid(f: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """The left action of a rotation by ``angle_deg`` (a multiple of 360°/Or) on M₂ maps [B, C, Or, H, W]:
    every (c, o) plane rotated bilinearly about the centre (:func:`rotate_batch`), θ shifted by angle·Or/360
    (the direction of ``rotate_batch``'s angle is the negative orientation step)."""
    B, C, Or, H, W = f.shape
    steps = angle_deg * Or / 360.0
    if abs(steps - round(steps)) > 1e-9:
        raise ValueError(f"angle must be a multiple of 360/Or = {360.0 / Or}, got {angle_deg}")
    planes = rotate_batch(f.reshape(B, C * Or, H, W), torch.full((B,), float(angle_deg)))
    return torch.roll(planes.reshape(B, C, Or, H, W), -int(round(steps)), dims=2)


def local_equivariance_errors(model: nn.Module, x: torch.Tensor, angle_deg: float = 45.0) -> Dict[str, List[float]]:
    """Equivariance errors on M₂ (no projection) of a PDEGCNN's parts at ``angle_deg`` (eval mode):

        lift: ‖Φ₀(R x) − R̃ Φ₀(x)‖ / ‖R̃ Φ₀(x)‖ (lift + BN),
        each op T of each CDE layer, on its own input a (from the upright x): ‖T(R̃ a) − R̃ T(a)‖ / ‖R̃ T(a)‖,

    R̃ the M₂ rotation (:func:`_rotate_m2_off_grid`); norms inside the inscribed disc of radius 0.7.
    'floor' is the interpolation alone on the lift's output: ‖R̃R̃ Φ₀(x) − R̃₂ Φ₀(x)‖ / ‖R̃₂ Φ₀(x)‖ with R̃₂
    the rotation by twice the angle (exact on the grid at 2·45° = 90°). Returns {'lift': [e], 'floor':
    [e], 'layer i': [e per op (pool, convection, dilation, erosion; mixing + BN commute exactly)]}."""
    model.eval()

    def rel(a, b):
        disc = _disc(a.shape[-1], 0.49, a.dtype)
        return ((a - b) * disc).norm().item() / (b * disc).norm().item()

    out: Dict[str, List[float]] = {}
    with torch.no_grad():
        a = model.stem(x)
        out['lift'] = [rel(model.stem(rotate_batch(x, torch.full((len(x),), float(angle_deg)))),
                           _rotate_m2_off_grid(a, angle_deg))]
        out['floor'] = [rel(_rotate_m2_off_grid(_rotate_m2_off_grid(a, angle_deg), angle_deg),
                            _rotate_m2_off_grid(a, 2 * angle_deg))]
        for i, layer in enumerate(model.layers):
            ops = list(layer) if isinstance(layer, nn.Sequential) else [layer]
            errors = []
            for op in ops:
                parts = [op.convection, op.dilation, op.erosion] if isinstance(op, CDELayerM2) else [op]
                for part in parts:
                    y = part(a)
                    errors.append(rel(part(_rotate_m2_off_grid(a, angle_deg)), _rotate_m2_off_grid(y, angle_deg)))
                    a = y
                if isinstance(op, CDELayerM2):
                    a = op.norm(op.linear(a))
            out[f'layer {i + 1}'] = errors
    return out


def bench_probe(name: str, gcnn_kwargs: Dict, ablation: str, epochs: Optional[int], lr: float, tag: str = '',
                seed: int = 0, recipe: Dict = None) -> str:
    """Protocol (a) probe: train ``name`` upright for ``epochs`` (the digits recipe, plus the :func:`train`
    options in ``recipe``), then accuracy on the upright test split, the randomly rotated one, and the
    test split rotated by fixed angles; for a PDEGCNN also the relative equivariance error of every stage
    at 45° (:func:`stage_equivariance_errors`). ``epochs`` None and options not in ``recipe``: the model's
    (:func:`digits_recipe`)."""
    epochs, recipe = digits_recipe(name, epochs, recipe or {})
    data = load_digits_tensors()
    model = digits_models([name], gcnn_kwargs, seed)[name]
    _ablate(model, ablation)
    run = train(model, data['x_train'], data['y_train'], epochs, lr, seed=seed, **recipe)
    x, y = data['x_test'], data['y_test']
    angles = [0, 15, 22.5, 30, 45, 60, 90]
    accs = [_accuracy(model, rotate_batch(x, torch.full((len(x),), float(a))), y) for a in angles]
    rot = _accuracy(model, data['x_test_rot'], y)
    errors = stage_equivariance_errors(model, x) if hasattr(model, 'layers') else []
    local = local_equivariance_errors(model, x) if hasattr(model, 'layers') else {}
    local_text = '; '.join(f"{k}: {' / '.join(f'{e:.2f}' for e in v)}" for k, v in local.items())
    row = [name, json.dumps(gcnn_kwargs), ablation or '-', sum(p.numel() for p in model.parameters()), epochs, seed,
           f'{rot * 100:.1f}'] + [f'{a * 100:.1f}' for a in accs] + [' / '.join(f'{e:.2f}' for e in errors),
                                                                     f"{run['cpu_time']:.0f}"]
    text = ('## Protocol (a) probe: trained upright, accuracy against the rotation angle\n\n'
            f'digits recipe as in `digits` (AdamW, cosine, batch 32, lr {lr}; {recipe or "no EMA, no shifts"}), '
            f'{epochs} epochs, seed {seed}, '
            f'{torch.get_num_threads()} thread(s). Equivariance error at 45° per stage (stem, then after each CDE '
            f'layer): ‖P Φ(Rx) − R P Φ(x)‖ / ‖R P Φ(x)‖ on the test digits, P = max over θ, inner disc.\n\n'
            f'Local errors on M₂ at 45° (`local_equivariance_errors`: lift + BN; the interpolation floor; per CDE '
            f'layer: [pool,] convection / dilation / erosion on their own inputs): {local_text}\n\n'
            + table(['model', 'options', 'ablation', 'parameters', 'epochs', 'seed', 'random rotations [%]']
                    + [f'{a:g}° [%]' for a in angles] + ['error at 45° per stage', 'train CPU time [s]'], [row]) + '\n')
    print(text)
    write_atomic(RESULTS / f'gcnn_probe{tag}.md', text)
    write_atomic(RESULTS / f'gcnn_probe{tag}.json', json.dumps(dict(
        model=name, options=gcnn_kwargs, ablation=ablation, epochs=epochs, seed=seed, lr=lr, recipe=recipe,
        upright=accs[0], rotated=rot,
        angles=angles, accuracy=accs, stage_errors_45=errors, local_errors_45=local, cpu_time=run['cpu_time'],
        wall_time=run['time']),
        indent=2) + '\n')
    return text


def bench_probe_seeds(name: str, gcnn_kwargs: Dict, ablation: str, epochs: Optional[int], lr: float, tag: str,
                      seeds: List[int], recipe: Dict = None) -> str:
    """:func:`bench_probe` for every seed (files ``gcnn_probe{tag}_s{seed}.*``), then one table of the seeds
    with mean ± standard deviation (``gcnn_probe{tag}_seeds.md``)."""
    records = []
    for seed in seeds:
        bench_probe(name, gcnn_kwargs, ablation, epochs, lr, f'{tag}_s{seed}', seed, recipe)
        records.append(json.loads((RESULTS / f'gcnn_probe{tag}_s{seed}.json').read_text()))
    angles = records[0]['angles']
    cols = [('upright', lambda r: r['upright']), ('random rotations', lambda r: r['rotated'])]
    cols += [(f'{a:g}°', lambda r, i=i: r['accuracy'][i]) for i, a in enumerate(angles) if a not in (0, 90)]
    rows = [[r['seed']] + [f'{f(r) * 100:.1f}' for _, f in cols] + [f"{r['cpu_time']:.0f}"] for r in records]

    def mean_sd(values: List[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f'{statistics.mean(values):.1f} ± {sd:.1f}'

    rows.append(['mean ± sd'] + [mean_sd([f(r) * 100 for r in records]) for _, f in cols]
                + [mean_sd([r['cpu_time'] for r in records])])
    n_params = sum(p.numel() for p in digits_models([name], gcnn_kwargs)[name].parameters())
    epochs, recipe = records[0]['epochs'], records[0]['recipe']
    text = (f'## Protocol (a) over seeds {seeds}: {name} {json.dumps(gcnn_kwargs)}\n\n'
            f'{n_params} parameters; ablation {ablation or "-"}; {epochs} epochs, lr {lr}, recipe {recipe or {}}; '
            f'accuracy in % on the upright, randomly rotated and fixed-angle test splits; train CPU time in s, '
            f'{torch.get_num_threads()} thread(s). Per-seed files: `gcnn_probe{tag}_s<seed>.md`.\n\n'
            + table(['seed'] + [c for c, _ in cols] + ['train CPU time [s]'], rows) + '\n')
    print(text)
    write_atomic(RESULTS / f'gcnn_probe{tag}_seeds.md', text)
    return text


# ------------------------------------------------------------------------------------------------
# segmentation of thin curvilinear structures (the paper's vessel task, on synthetic data)
# ------------------------------------------------------------------------------------------------

def curve_images(n: int, size: int = 40, seed: int = 0, noise: float = 0.35) -> Dict[str, torch.Tensor]:
    """``n`` images [n, 1, size, size] of 1–3 thin curves (quadratic Bézier, Gaussian profile σ 0.6 px,
    contrast 0.4–1) over distractors (1–3 blobs, radius 1.5–3.5 px, contrast 0.4–1) and a smooth
    background ramp, plus white noise of std ``noise``; target mask: distance to a curve < 1 px."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing='ij')
    pix = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)  # [P, 2]
    t = torch.linspace(0, 1, 4 * size).view(-1, 1)
    images, masks = [], []
    for _ in range(n):
        img = torch.zeros(size * size)
        dist = torch.full((size * size,), float('inf'))
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            p0, p1, p2 = (torch.rand(3, 2, generator=g) * (size + 10) - 5).unbind(0)
            curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2  # [T, 2]
            d = torch.cdist(pix, curve).amin(1)
            contrast = 0.4 + 0.6 * torch.rand(1, generator=g)
            img = torch.maximum(img, contrast * torch.exp(-d ** 2 / (2 * 0.6 ** 2)))
            dist = torch.minimum(dist, d)
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            c = torch.rand(2, generator=g) * size
            r = 1.5 + 2 * torch.rand(1, generator=g)
            blob = torch.sigmoid((r - (pix - c).norm(dim=1)) * 3)
            img = torch.maximum(img, (0.4 + 0.6 * torch.rand(1, generator=g)) * blob)
        ramp = (torch.rand(2, generator=g) - 0.5) * 0.6 / size
        img = img + pix @ ramp + noise * torch.randn(size * size, generator=g)
        images.append(img.view(1, size, size))
        masks.append((dist < 1.0).float().view(1, size, size))
    return dict(x=torch.stack(images), y=torch.stack(masks))


class UNet(nn.Module):
    """Plain U-net: (conv3-BN-ReLU)×2 per level, max-pool down, transposed conv up, skip concatenation."""

    def __init__(self, in_chans: int = 1, out_chans: int = 1, widths=(8, 16, 32)):
        super().__init__()

        def double(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(),
                                 nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

        self.down = nn.ModuleList([double(in_chans, widths[0])] +
                                  [double(widths[i], widths[i + 1]) for i in range(len(widths) - 1)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(len(widths) - 1))])
        self.merge = nn.ModuleList([double(2 * widths[i], widths[i]) for i in reversed(range(len(widths) - 1))])
        self.head = nn.Conv2d(widths[0], out_chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], 1))
        return self.head(x)


def dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Dice 2|P∩T| / (|P| + |T|) of the thresholded prediction (logit > 0) over the whole set."""
    pred = (logits > 0).float()
    return (2 * (pred * target).sum() / (pred.sum() + target.sum()).clamp(min=1)).item()


def train_segmentation(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float,
                       batch_size: int = 16, time_limit: float = float('inf'), seed: int = 0) -> Dict[str, float]:
    """BCE + soft Dice loss, AdamW (timm) with timm's per-step cosine schedule; CPU-time cap."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler
    g = torch.Generator().manual_seed(seed)
    opt = create_optimizer_v2(model, 'adamw', lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    sched = CosineLRScheduler(opt, t_initial=epochs * steps_per_epoch, warmup_t=steps_per_epoch,
                              warmup_lr_init=lr / 100, lr_min=lr / 1000, t_in_epochs=False)
    t0, c0 = time.perf_counter(), time.process_time()
    step = epochs_run = 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            logits = model(x[idx])
            prob = torch.sigmoid(logits)
            soft_dice = 1 - 2 * (prob * y[idx]).sum() / (prob.sum() + y[idx].sum() + 1)
            loss = F.binary_cross_entropy_with_logits(logits, y[idx]) + soft_dice
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            sched.step_update(step)
        epochs_run += 1
        cpu = time.process_time() - c0
        print(f'  epoch {epochs_run}: loss {loss.item():.3f}, cpu {cpu:.0f} s', flush=True)
        if cpu > time_limit:
            break
    return dict(time=time.perf_counter() - t0, cpu_time=time.process_time() - c0, epochs=epochs_run)


def bench_segment(models: List[str], epochs: int, lrs: Dict[str, float], time_limit: float, n_train: int = 256,
                  n_test: int = 128, tag: str = '') -> str:
    from pdeblocks.models.pde_gcnn import PDEGCNNSegmentation
    train_set, test_set = curve_images(n_train, seed=0), curve_images(n_test, seed=1)
    builders = {
        'pde_gcnn': lambda: PDEGCNNSegmentation(in_chans=1, channels=8, orientations=8, depth=6, kernel_size=5),
        'unet': lambda: UNet(1, 1, (8, 16, 32)),
    }
    rows, records = [], []
    for name in models:
        torch.manual_seed(0)
        model = builders[name]()
        n_params = sum(p.numel() for p in model.parameters())
        run = train_segmentation(model, train_set['x'], train_set['y'], epochs, lrs[name], time_limit=time_limit)
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(test_set['x'][i:i + 32]) for i in range(0, n_test, 32)])
        score = dice(logits, test_set['y'])
        records.append(dict(model=name, params=n_params, dice=score, lr=lrs[name], **run))
        rows.append([name, n_params, f'{score:.3f}', run['epochs'], f"{run['cpu_time']:.0f}", f"{run['time']:.0f}"])
        print(rows[-1], flush=True)
    text = ('## Segmentation of thin curves (synthetic, 40×40, noise σ 0.35, blob distractors)\n\n'
            f'{n_train} training / {n_test} test images (`curve_images`, seeds 0 / 1); BCE + soft Dice, AdamW (timm) '
            f'+ per-step cosine, batch 16, {epochs} epochs or {time_limit:.0f} s CPU, lr {lrs}; Dice of the '
            f'thresholded test predictions over the whole test set. pde_gcnn = PDEGCNNSegmentation(channels 8, '
            f'Or 8, depth 6, 5×5×5 kernels); unet = plain U-net (widths 8, 16, 32). {torch.get_num_threads()} '
            f'CPU thread(s), shared machine.\n\n'
            + table(['model', 'parameters', 'test Dice', 'epochs', 'train CPU time [s]', 'train wall time [s]'], rows)
            + '\n')
    print(text)
    write_atomic(RESULTS / f'gcnn_segment{tag}.md', text)
    write_atomic(RESULTS / f'gcnn_segment{tag}.json', json.dumps(records, indent=2) + '\n')
    return text


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == '_memchild':
        _memory_child(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('section', choices=['speed', 'rotation', 'lift', 'digits', 'epoch', 'segment', 'probe', 'all'])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--unfold', action='store_true', help='speed: also time the unfold + amin reference (~100 s)')
    parser.add_argument('--diffusion', action='store_true', help='speed: also time DiffusionM2 (for scale)')
    parser.add_argument('--protocol', choices=['upright', 'rotated', 'both'], default='both',
                        help='digits: train upright (test rotated) or train and test rotated')
    parser.add_argument('--models', default='pde_gcnn,cnn,cnn+rot', help='digits: comma-separated model names')
    parser.add_argument('--epochs', type=int, default=None,
                        help=f'digits, probe: epochs of the PDE-G-CNN (default: the model\'s DIGITS_RECIPES entry, '
                             f'else {DIGITS_EPOCHS})')
    parser.add_argument('--cnn-epochs', type=int, default=30, help='digits: epochs of the CNNs')
    parser.add_argument('--lr', type=float, default=0.02, help='digits: peak learning rate of the PDE-G-CNN')
    parser.add_argument('--cnn-lr', type=float, default=0.005, help='digits: peak learning rate of the CNNs')
    parser.add_argument('--ablation', default='',
                        help='probe: lift_order3, lift_disc, lift_norm, iso, noconv, blurpool, octpool or instnorm')
    parser.add_argument('--gcnn', default='{}', help='digits: JSON of extra timm kwargs for the PDE-G-CNN')
    parser.add_argument('--time-limit', type=float, default=600.0, help='digits: wall-clock cap per model [s]')
    parser.add_argument('--epoch-models', default='pde_gcnn,pde_gcnn_small,gcnn_linear,pde_gcnn_steerable',
                        help='epoch: models timed against the CNN, separated by ";" (NAME or NAME@{json timm kwargs})')
    parser.add_argument('--seg-models', default='pde_gcnn,unet', help='segment: comma-separated models')
    parser.add_argument('--seg-epochs', type=int, default=60, help='segment: epochs (both models)')
    parser.add_argument('--seg-lr', type=float, default=0.02, help='segment: peak lr of the PDE-G-CNN')
    parser.add_argument('--unet-lr', type=float, default=0.005, help='segment: peak lr of the U-net')
    parser.add_argument('--seed', type=int, default=0,
                        help='digits: seed of the model initialisation and batch order (the data split is fixed)')
    parser.add_argument('--seeds', default='',
                        help='probe: comma-separated seeds, one run each and a mean ± sd table (overrides --seed)')
    parser.add_argument('--ema-decay', type=float, default=None,
                        help='digits, probe: EMA of the PDE-G-CNN weights with this decay per step (0: off; default: '
                             'the model\'s DIGITS_RECIPES entry, else off)')
    parser.add_argument('--augment-shift', type=float, default=0.0,
                        help='digits, probe: random translations of the PDE-G-CNN training images in [-s, s] px')
    parser.add_argument('--weight-decay', type=float, default=None,
                        help='digits, probe: AdamW weight decay of the PDE-G-CNN (default 1e-4)')
    parser.add_argument('--tag', default='', help='digits: suffix of the result files')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch intra-op threads (default 1: robust timings on a shared, oversubscribed CPU)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = {'augment_shift': args.augment_shift} if args.augment_shift else {}
    if args.ema_decay is not None:
        recipe['ema_decay'] = args.ema_decay
    if args.weight_decay is not None:
        recipe['weight_decay'] = args.weight_decay
    if args.section in ('speed', 'all'):
        bench_speed(args.repeats, args.unfold, args.diffusion)
    if args.section in ('rotation', 'all'):
        bench_rotation()
    if args.section in ('lift', 'all'):
        bench_lift()
    if args.section in ('digits', 'all'):
        protocols = ['upright', 'rotated'] if args.protocol == 'both' else [args.protocol]
        for protocol in protocols:
            bench_digits(protocol, args.models.split(','), {'gcnn': args.epochs, 'cnn': args.cnn_epochs},
                         {'gcnn': args.lr, 'cnn': args.cnn_lr}, json.loads(args.gcnn), args.time_limit, args.tag,
                         args.seed, recipe)
    if args.section in ('epoch', 'all'):
        bench_epoch(args.epoch_models.replace(';', ',').split(',') if '@' not in args.epoch_models
                    else args.epoch_models.split(';'), max(1, min(args.repeats, 5)), args.tag)
    if args.section == 'probe' and args.seeds:
        bench_probe_seeds(args.models.split(',')[0], json.loads(args.gcnn), args.ablation, args.epochs, args.lr,
                          args.tag, [int(s) for s in args.seeds.split(',')], recipe)
    elif args.section == 'probe':
        bench_probe(args.models.split(',')[0], json.loads(args.gcnn), args.ablation, args.epochs, args.lr, args.tag,
                    args.seed, recipe)
    if args.section in ('segment', 'all'):
        bench_segment(args.seg_models.split(','), args.seg_epochs, {'pde_gcnn': args.seg_lr, 'unet': args.unet_lr},
                      args.time_limit, tag=args.tag)


if __name__ == '__main__':
    main()
