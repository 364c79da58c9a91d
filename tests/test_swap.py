"""Tests of pdeblocks.swap: swapping PDE blocks into timm, torchvision, smp, MONAI and diffusers models.

Optional families are skipped (importorskip) when their package is missing. Models are small
configurations built from random weights (never from the Hub); wide layers make the rigorous norm
bound expensive, so full-width models are only checked structurally or with cheap bound settings.
"""
import copy
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock as TimmBasicBlock
from torch import nn

import pdeblocks
from pdeblocks.layers import SymmetricResidual
from pdeblocks.layers.registry import RESIDUAL_BLOCKS
from pdeblocks.ops.norms import power_iteration_norm
from pdeblocks.swap import (
    SWAP_RULES,
    CannotSwap,
    SwappedResidual,
    SwapReport,
    load_block_modules,
    register_swap,
    swap_blocks,
)

# cheap but rigorous bound settings for tests of wide layers (grid 6, one Gram step)
CHEAP = dict(interp_slack=2.0, gram_steps=1)


def narrow_resnet(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=7, **kw)


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine params and running stats (like a trained model)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def steps_of(model: nn.Module, report: SwapReport):
    return [model.get_submodule(p) for p in report.step_paths]


def check_roundtrip(original: nn.Module, swapped: nn.Module, call, **swap_kw) -> None:
    """state_dict of a swapped model loads into another swap of the same architecture, same outputs."""
    other = copy.deepcopy(original)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01 * torch.randn_like(p))
    other_swapped, _ = swap_blocks(other, **swap_kw)
    missing = other_swapped.load_state_dict(swapped.state_dict())
    assert not missing.missing_keys and not missing.unexpected_keys
    other_swapped.eval()
    swapped.eval()
    with torch.no_grad():
        torch.testing.assert_close(call(other_swapped), call(swapped))


def check_backward(swapped: nn.Module, out: torch.Tensor, report: SwapReport) -> None:
    out.float().square().mean().backward()
    for step in steps_of(swapped, report):
        grads = [p.grad for p in step.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


# ----------------------------------------------------------------------------------------- timm

def test_timm_basicblock_shapes_backward_params_roundtrip():
    model = narrow_resnet('resnet18', channels=(8, 16, 32, 64)).eval()
    randomise_batchnorm(model)
    x = torch.randn(2, 3, 32, 32)
    swapped, report = swap_blocks(model)
    assert len(report.swapped) == 8 and not report.skipped
    assert all(isinstance(swapped.get_submodule(r.path), SwappedResidual) for r in report.swapped)
    with torch.no_grad():
        assert swapped(x).shape == model(x).shape == (2, 7)
    # expected parameter count, from the block shapes: each BasicBlock loses conv1, bn1, conv2, bn2
    # (the downsample is kept) and gains K [C_out, C_in, 3, 3] plus the step parameter θ (ReLU flux:
    # none); C_in = C_out inside a stage, C_in = C_out / 2 at a stage entry (step before the downsample)
    expected = sum(p.numel() for p in model.parameters())
    for r in report.swapped:
        old = model.get_submodule(r.path)
        c_in, c_out = old.conv1.in_channels, old.conv2.out_channels
        expected -= sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
                        for m in (old.conv1, old.bn1, old.conv2, old.bn2))
        expected += 9 * c_in * c_out + 1
    assert sum(p.numel() for p in swapped.parameters()) == expected == report.params_after
    assert report.params_after < 0.62 * report.params_before
    swapped.train()
    check_backward(swapped, swapped(x), report)
    check_roundtrip(model, swapped, lambda m: m(x))


def test_timm_auto_init_takes_the_pretrained_convolutions():
    model = narrow_resnet('resnet18', channels=(8, 16, 32, 64)).eval()
    randomise_batchnorm(model)
    swapped, report = swap_blocks(model)
    inner = model.layer1[1]                               # C→C, stride 1: K = conv1 · γ/√(σ²+ε)
    scale = inner.bn1.weight / torch.sqrt(inner.bn1.running_var + inner.bn1.eps)
    torch.testing.assert_close(swapped.layer1[1].step.weight, inner.conv1.weight * scale[:, None, None, None])
    # stage entry 8→16, stride 2: the step runs first, at 8 channels and full resolution, with
    # K [16, 8, 3, 3] = bn1·conv1 at conv1's stride 2: K u is the original pre-activation
    entry = model.layer2[0]
    scale1 = entry.bn1.weight / torch.sqrt(entry.bn1.running_var + entry.bn1.eps)
    step = swapped.layer2[0].step
    assert swapped.layer2[0].step_first and not swapped.layer2[1].step_first and step.weight.shape == (16, 8, 3, 3)
    assert step.stride == 2 and swapped.layer1[1].step.stride == 1
    u = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    strided = F.conv2d(u, (entry.conv1.weight * scale1[:, None, None, None]).double(), stride=2, padding=1)
    torch.testing.assert_close(F.conv2d(u, step.weight.double(), stride=2, padding=1), strided, rtol=1e-5, atol=1e-6)
    # the step's update is Kᵀ_s Φ(K_s u) with K_s that strided convolution and Kᵀ_s its adjoint
    blk = copy.deepcopy(step).double()
    s = F.conv2d(u, blk.weight, stride=2, padding=1)
    expected = F.conv_transpose2d(F.relu(s), blk.weight, stride=2, padding=1, output_padding=1)
    torch.testing.assert_close(blk.update(u), expected)
    # an input whose odd pixels are the only non-zero ones: a step after the strided 1×1 downsample
    # would never see it; before it, the 3×3 stencil carries it into the kept pixels
    v = torch.zeros(1, 8, 6, 6)
    v[:, :, 1::2, 1::2] = torch.rand(1, 8, 3, 3)
    with torch.no_grad():
        assert (step(v) - v)[:, :, ::2, ::2].abs().max() > 0
        assert swapped.layer2[0](v).shape == model.layer2[0](v).shape
    notes = {r.path: r.init for r in report.swapped}
    assert notes['layer1.1'].startswith('auto') and notes['layer2.0'].startswith('auto')
    # init='random' does not copy: K differs from conv1
    rnd, rrep = swap_blocks(model, init='random')
    assert all(r.init == 'random' for r in rrep.swapped)
    assert not torch.allclose(rnd.layer1[1].step.weight, swapped.layer1[1].step.weight)


@pytest.mark.parametrize('name, kw', [
    ('resnet50', dict(channels=(8, 16, 32, 64))),
    ('resnext50_32x4d', dict(channels=(16, 32, 64, 128))),
    ('seresnet18', dict(channels=(8, 16, 32, 64))),
    ('resnet26d', dict(channels=(8, 16, 32, 64))),
])
def test_timm_family_variants(name, kw):
    model = narrow_resnet(name, **kw).eval()
    x = torch.randn(2, 3, 32, 32)
    swapped, report = swap_blocks(model)
    n_blocks = sum(isinstance(m, (timm.models.resnet.BasicBlock, timm.models.resnet.Bottleneck))
                   for m in model.modules())
    assert len(report.swapped) == n_blocks > 0 and not report.skipped
    assert not any(isinstance(m, (timm.models.resnet.BasicBlock, timm.models.resnet.Bottleneck))
                   for m in swapped.modules())
    with torch.no_grad():
        assert swapped(x).shape == model(x).shape
    assert report.params_after < report.params_before
    if 'Bottleneck' in report.swapped[0].old_class:
        for r in report.swapped:
            old, new = model.get_submodule(r.path), swapped.get_submodule(r.path)
            step = new.step
            c = old.conv1.in_channels   # the step runs at the block's input width
            # stage entries (a downsample connector) run the step first, at the input resolution
            assert new.step_first == (old.downsample is not None)
            replaced = sum(old.get_submodule(n).weight.numel() for n in ('conv1', 'conv2', 'conv3'))
            h = step.weight.shape[0]
            assert list(step.weight.shape) == [h, c, 3, 3]
            assert r.init.startswith('auto')
            # K holds about half the replaced convolution weights (H rounded to a multiple of 8)
            assert abs(9 * h * c - replaced / 2) <= 9 * c * 4 + 1e-9


def test_bottleneck_stage_entry_runs_the_step_first_with_the_composite_kernel():
    """At a stage entry (stride 2, 16 → 32 channels) the step runs at the input width and resolution:
    K's rows are rows of the linear part of bn2·conv2∘bn1·conv1 at stride 1, measured independently as
    f(x) − f(0) through the original's layers; the output is downsample(step(x))."""
    from timm.models.resnet import Bottleneck
    torch.manual_seed(0)
    down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
    block = Bottleneck(16, 8, stride=2, downsample=down).double().eval()
    randomise_batchnorm(block)
    swapped, report = swap_blocks(block)
    assert swapped.step_first and report.swapped[0].init.startswith('auto') and 'at stride 1' in report.swapped[0].init
    x = torch.randn(2, 16, 10, 10, dtype=torch.float64)

    def mid(u):   # bn2 ∘ conv2 (at stride 1) ∘ act1 ∘ bn1 ∘ conv1, with act1 removed: the linear path
        c2 = block.conv2
        return block.bn2(F.conv2d(block.bn1(block.conv1(u)), c2.weight, padding=1, groups=c2.groups))

    linear = mid(x) - mid(torch.zeros_like(x))
    k_out = F.conv2d(x, swapped.step.weight, padding=1)
    rows = []
    for k in range(k_out.shape[1]):
        match = [j for j in range(linear.shape[1]) if torch.allclose(k_out[:, k], linear[:, j], rtol=1e-9, atol=1e-9)]
        assert len(match) == 1, k
        rows.append(match[0])
    assert rows == sorted(rows)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), torch.relu(down(swapped.step(x))))
        assert swapped(x).shape == block(x).shape


def test_preserves_dtype_mode_and_original():
    model = narrow_resnet('resnet18', channels=(8, 8, 8, 8)).double()
    model.train()
    model.layer2.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swapped, report = swap_blocks(model)
    assert all(p.dtype == torch.float64 for p in swapped.parameters())
    assert swapped.layer1[0].step.training and not swapped.layer2[0].step.training
    assert swapped.layer1[0].training and not swapped.layer2[0].training and not swapped.layer2[0].post.training
    assert not swapped.layer2[0].connector.training and swapped.layer3[0].connector.training
    out = swapped(torch.randn(2, 3, 16, 16, dtype=torch.float64))
    assert out.dtype == torch.float64
    # inplace=False leaves the original untouched
    assert isinstance(model.layer1[0], TimmBasicBlock)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    same, _ = swap_blocks(model, inplace=True)
    assert same is model and isinstance(model.layer1[0], SwappedResidual)


def test_single_block_and_declined_convolutions():
    block = TimmBasicBlock(8, 8).eval()
    randomise_batchnorm(block)
    swapped, report = swap_blocks(block)
    assert isinstance(swapped, SwappedResidual) and report.step_paths == ['step']
    assert '(root)' in str(report)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        assert swapped(x).shape == block(x).shape
    dilated = TimmBasicBlock(8, 8, dilation=2)
    same, rep = swap_blocks(dilated)
    assert isinstance(same, TimmBasicBlock) and 'dilated' in rep.skipped[0].reason


def test_include_exclude_and_warnings():
    model = narrow_resnet('resnet18', channels=(8, 8, 8, 8))
    swapped, report = swap_blocks(model, include='layer1')
    assert [r.path for r in report.swapped] == ['layer1.0', 'layer1.1']
    assert isinstance(swapped.layer2[0], TimmBasicBlock)
    swapped, report = swap_blocks(model, exclude=['layer4.*', 'layer3.1'])
    assert {s.path for s in report.skipped} == {'layer4.0', 'layer4.1', 'layer3.1'}
    assert all('excluded' in s.reason for s in report.skipped)
    assert 'layer3.1' in str(report)
    with pytest.warns(UserWarning, match='layer9'):
        _, report = swap_blocks(model, include=['layer1.*', 'layer9'])
    assert len(report.swapped) == 2
    with pytest.warns(UserWarning, match='fc'):
        swap_blocks(model, exclude='fc')
    with pytest.raises(ValueError, match='glob'):
        swap_blocks(model, include=[3])


def test_bad_input_and_nothing_to_swap():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out, report = swap_blocks(plain)
    assert not report.changed and report.swapped == [] and report.params_before == report.params_after
    assert 'nothing swapped' in str(report)
    assert [type(m) for m in out] == [nn.Conv2d, nn.ReLU, nn.Linear]
    model = narrow_resnet('resnet18', channels=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="valid names: .*'symmetric'"):
        swap_blocks(model, 'no_such_block')
    with pytest.raises(ValueError, match="init must be"):
        swap_blocks(model, init='pretrained')
    with pytest.raises(ValueError, match='nn.Module'):
        swap_blocks('resnet18')
    with pytest.raises(ValueError, match='rejected'):
        swap_blocks(model, no_such_kwarg=1)
    with pytest.raises(ValueError, match='dotted'):
        register_swap('BasicBlock', lambda m, s: m)


def block_io(model: nn.Module, path: str, x: torch.Tensor):
    """(input, output) of the module at ``path`` while ``model`` runs on x in eval mode."""
    seen = {}
    handle = model.get_submodule(path).register_forward_hook(lambda m, a, out: seen.update(x=a[0], y=out))
    was = model.training
    model.eval()
    with torch.no_grad():
        logits = model(x)
    model.train(was)
    handle.remove()
    return seen['x'], seen['y'], logits


def test_calibration_fits_each_block_to_the_replaced_one():
    model = narrow_resnet('resnet18', channels=(8, 16, 32, 64))
    randomise_batchnorm(model)
    model.train()                                     # the caller's mode must come back unchanged
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    data = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    x_new = torch.randn(4, 3, 32, 32)                 # held-out inputs, not used by the fit
    plain, _ = swap_blocks(model, **CHEAP)
    fitted, report = swap_blocks(model, calibration=data, calibration_steps=40, calibration_lr=3e-3, **CHEAP)
    assert model.training and all(m.training for m in fitted.modules())
    assert all(torch.equal(v, before_state[k]) for k, v in model.state_dict().items())
    assert report.calibration_samples == 16 and report.calibration_seconds > 0
    assert all(r.calibration is not None and r.calibration.steps == 40 for r in report.swapped)
    assert all(r.calibration.error_after < r.calibration.error_before for r in report.swapped)
    assert 'calibrated: error' in str(report) and 'calibration: 16 inputs' in str(report)
    # the reported error, recomputed here on the first block (whose input is the unchanged stem's)
    xs = torch.cat(data)
    u, y, _ = block_io(model, 'layer1.0', xs)
    with torch.no_grad():
        out = fitted.eval().layer1[0](u)
    assert (out - y).norm() / y.norm() == pytest.approx(report.swapped[0].calibration.error_after, rel=1e-4)
    # block by block, up to the last one, the chained features of held-out inputs are closer to the
    # original's than without calibration
    for path in ('layer1.1', 'layer2.0', 'layer4.1'):
        _, y, _ = block_io(model, path, x_new)
        _, y_fit, _ = block_io(fitted, path, x_new)
        _, y_plain, _ = block_io(plain, path, x_new)
        assert (y_fit - y).norm() < (y_plain - y).norm()
    # still stable: τ·‖K‖² ≤ 2/L with ‖K‖ from power iteration (a lower bound, independent of B)
    for step in steps_of(fitted, report):
        norm = power_iteration_norm(step.weight.detach().double(), 'zeros', [16, 16])
        assert float(step.step_size().detach()) * float(norm) ** 2 <= 2.0 / step.step_constant
    # τ was settled on a fresh bound: a state_dict round trip reproduces the calibrated outputs
    other, _ = swap_blocks(model, **CHEAP)
    other.load_state_dict(fitted.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other.eval()(x_new), fitted.eval()(x_new), rtol=1e-4, atol=1e-5)


def test_calibration_bad_input_is_rejected_before_any_change():
    model = narrow_resnet('resnet18', channels=(8, 8, 8, 8)).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match='iterable of batches; got str'):
        swap_blocks(model, calibration='images/', **CHEAP)
    with pytest.raises(ValueError, match='calibration is empty'):
        swap_blocks(model, calibration=[], **CHEAP)
    with pytest.raises(ValueError, match='batch 1 must be a tensor'):
        swap_blocks(model, calibration=[torch.randn(2, 3, 32, 32), 'x'], **CHEAP)
    with pytest.raises(ValueError, match=r'batch 0 \(tensor \[2, 5, 32, 32\].*could not be run'):
        swap_blocks(model, calibration=torch.randn(2, 5, 32, 32), inplace=True, **CHEAP)
    with pytest.raises(ValueError, match='batched input tensor'):
        swap_blocks(model, calibration=[torch.tensor(1.0)], **CHEAP)
    with pytest.raises(ValueError, match='calibration_steps'):
        swap_blocks(model, calibration=torch.randn(2, 3, 32, 32), calibration_steps=0, **CHEAP)
    with pytest.raises(ValueError, match='calibration_lr'):
        swap_blocks(model, calibration=torch.randn(2, 3, 32, 32), calibration_lr=float('nan'), **CHEAP)
    # inplace=True with a batch the model cannot take: nothing was swapped
    assert not any(isinstance(m, SwappedResidual) for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_block_kwargs_and_registry_constructors():
    model = narrow_resnet('resnet18', channels=(8, 8, 8, 8))
    swapped, report = swap_blocks(model, stability='lipschitz', flux='charbonnier', boundary='circular')
    steps = steps_of(swapped, report)
    assert all(s.stability == 'lipschitz' and s.boundary == 'circular' for s in steps)
    # every registered residual block works through the registry, with the swap defaults it accepts
    load_block_modules()
    assert 'symmetric' in RESIDUAL_BLOCKS
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    for name in sorted(RESIDUAL_BLOCKS):
        s, rep = swap_blocks(model, name, include='layer1.1')
        assert len(rep.swapped) == 1
        step = s.layer1[1].step
        assert type(step) is RESIDUAL_BLOCKS[name] or isinstance(step, RESIDUAL_BLOCKS[name])
        assert getattr(step, 'boundary', 'zeros') == 'zeros'
        with torch.no_grad():
            y = s(x)
        assert y.shape == (2, 7) and torch.isfinite(y).all()

    class ScaleStep(nn.Module):            # a constructor without weight=: K cannot be initialised
        def __init__(self, channels, dim=2, boundary='zeros', kernel_size=(3, 3)):
            super().__init__()
            self.boundary = boundary
            self.scale = nn.Parameter(torch.tensor(0.5))

        def forward(self, u):
            return self.scale * u

    s, rep = swap_blocks(model, ScaleStep, include='layer1.1')      # conv1 is C→C: K would fit
    assert [r.init for r in rep.swapped] == ['random (block takes no weight=)']
    assert isinstance(s.layer1[1].step, ScaleStep) and s.layer1[1].step.boundary == 'zeros'


def test_user_rule_decline_and_atomicity():
    class MyBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return x + self.conv(x)

    def rule(block, spec):
        if block.conv.in_channels == 5:
            raise CannotSwap('five channels are not supported')
        step, note = spec.make_step(block.conv.out_channels, 2, kernel_size=[3, 3],
                                    weight=block.conv.weight.detach(), weight_source='conv', like=block)
        return SwappedResidual(step), note

    register_swap(MyBlock, rule)
    try:
        model = nn.Sequential(MyBlock(4), MyBlock(5), nn.ModuleList([MyBlock(4)]))
        swapped, report = swap_blocks(model)
        assert [r.path for r in report.swapped] == ['0', '2.0']
        assert report.skipped[0].path == '1' and 'five' in report.skipped[0].reason
        torch.testing.assert_close(swapped[0].step.weight, model[0].conv.weight)

        def failing(block, spec):
            if block.conv.in_channels == 5:
                raise RuntimeError('rule bug')
            return rule(block, spec)

        register_swap(MyBlock, failing)
        with pytest.raises(RuntimeError, match='rule bug'):
            swap_blocks(model, inplace=True)
        assert all(isinstance(m, MyBlock) for m in (model[0], model[1], model[2][0]))   # nothing half-written
    finally:
        SWAP_RULES.pop(f"{MyBlock.__module__}.{MyBlock.__qualname__}", None)


def test_certificates_cover_every_swapped_block():
    model = narrow_resnet('resnet18', channels=(8, 16, 16, 16))
    swapped, report = swap_blocks(model)
    for path in report.step_paths:
        step = swapped.get_submodule(path)
        cert = step.stability_certificate()
        assert cert.mode == 'euclidean' and cert.norm_factor == 1.0
        # adversarial check of the promise on the swapped step: huge, rough inputs never grow
        u = 1e3 * torch.randn(4, step.channels, 7, 7).sign() * torch.rand(4, step.channels, 7, 7)
        with torch.no_grad():
            assert (step(u).flatten(1).norm(dim=1) <= u.flatten(1).norm(dim=1) * (1 + 1e-5)).all()
    from pdeblocks.stability import certify
    certified = {b.path: b for b in certify(swapped).blocks}
    assert set(report.step_paths) <= set(certified)
    assert all(certified[p].guarantee == '‖f(u)‖ ≤ ‖u‖' for p in report.step_paths)


def test_torch_compile_eager_backend():
    model = narrow_resnet('resnet18', channels=(8, 8, 8, 8)).eval()
    swapped, _ = swap_blocks(model)
    x = torch.randn(2, 3, 16, 16)
    compiled = torch.compile(swapped, backend='eager')
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), swapped(x))
    out = compiled(x)
    out.sum().backward()
    assert swapped.layer1[0].step.weight.grad is not None


@pytest.mark.slow
def test_torch_compile_inductor():
    pytest.importorskip('torch._inductor')
    import shutil
    if shutil.which('g++') is None and shutil.which('cc') is None:
        pytest.skip('inductor needs a C++ compiler')
    model = narrow_resnet('resnet18', channels=(8, 8, 8, 8)).eval()
    swapped, _ = swap_blocks(model)
    x = torch.randn(2, 3, 16, 16)
    compiled = torch.compile(swapped)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), swapped(x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------- torchvision

def test_torchvision_blocks():
    tv = pytest.importorskip('torchvision')
    from torchvision.models.resnet import BasicBlock, Bottleneck
    torch.manual_seed(0)
    down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
    model = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, stride=2, downsample=down),
                          Bottleneck(16, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3)).eval()
    x = torch.randn(2, 8, 12, 12)
    swapped, report = swap_blocks(model)
    assert [r.old_class for r in report.swapped] == ['BasicBlock', 'BasicBlock', 'Bottleneck']
    assert swapped[1].connector is swapped[1].connector and isinstance(swapped[1].connector, nn.Sequential)
    with torch.no_grad():
        assert swapped(x).shape == model(x).shape == (2, 3)
    swapped.train()
    check_backward(swapped, swapped(x), report)
    check_roundtrip(model, swapped, lambda m: m(x))
    compiled = torch.compile(swapped.eval(), backend='eager')
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), swapped(x))
    # full-size models: every block found, parameters drop (structure only; forward at full width with
    # the default bound is slow on CPU, so resnet18 runs with the cheap rigorous settings)
    r18 = tv.models.resnet18(num_classes=5).eval()
    s18, rep18 = swap_blocks(r18, **CHEAP)
    assert len(rep18.swapped) == 8 and rep18.params_after < 0.6 * rep18.params_before
    with torch.no_grad():
        assert s18(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    _, rep50 = swap_blocks(tv.models.resnet50(num_classes=5))
    assert len(rep50.swapped) == 16 and rep50.params_after < rep50.params_before


# ------------------------------------------------------------------------------------------- smp

def test_smp_unet_decoder():
    smp = pytest.importorskip('segmentation_models_pytorch')
    torch.manual_seed(0)
    model = smp.Unet('resnet18', encoder_weights=None, encoder_depth=3, decoder_channels=(16, 8, 8),
                     classes=2).eval()
    x = torch.randn(2, 3, 32, 32)
    swapped, report = swap_blocks(model, include='decoder')
    assert [r.path for r in report.swapped] == [f'decoder.blocks.{i}' for i in range(3)]
    assert {r.new_class for r in report.swapped} == {'SwappedUnetDecoderBlock'}
    with torch.no_grad():
        assert swapped(x).shape == model(x).shape == (2, 2, 32, 32)
    # conv2 (C→C) is replaced by one K of the same shape: the count drops by the norm's 2C less the
    # step's θ (ReLU flux has no parameters)
    for r in report.swapped:
        c = model.get_submodule(r.path).conv2[0].out_channels
        assert r.params_before - r.params_after == 2 * c - 1
    swapped.train()
    check_backward(swapped, swapped(x), report)
    check_roundtrip(model, swapped, lambda m: m(x), include='decoder')
    compiled = torch.compile(swapped.eval(), backend='eager')
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), swapped(x))
    # without include the encoder's (torchvision) BasicBlocks are swapped too
    from torchvision.models.resnet import BasicBlock
    _, rep_all = swap_blocks(model, **CHEAP)
    n_basic = sum(isinstance(m, BasicBlock) for m in model.encoder.modules())
    assert n_basic > 0 and len(rep_all.swapped) == 3 + n_basic


# ----------------------------------------------------------------------------------------- MONAI

@pytest.mark.parametrize('dims', [2, 3])
def test_monai_unet_residual_units(dims):
    pytest.importorskip('monai')
    from monai.networks.blocks import ResidualUnit
    from monai.networks.nets import UNet
    torch.manual_seed(0)
    model = UNet(spatial_dims=dims, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2),
                 num_res_units=2).eval()
    x = torch.randn(1, 1, *([16] * dims))
    swapped, report = swap_blocks(model)
    n_units = sum(isinstance(m, ResidualUnit) for m in model.modules())
    assert len(report.swapped) == n_units == 5
    assert all(swapped.get_submodule(p).dim == dims for p in report.step_paths)
    with torch.no_grad():
        assert swapped(x).shape == model(x).shape
    assert report.params_after < report.params_before
    swapped.train()
    check_backward(swapped, swapped(x), report)
    check_roundtrip(model, swapped, lambda m: m(x))
    if dims == 2:
        compiled = torch.compile(swapped.eval(), backend='eager')
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), swapped(x))
    # num_res_units=0 has no residual units: nothing to swap, no exception
    plain = UNet(spatial_dims=dims, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,), num_res_units=0)
    _, rep0 = swap_blocks(plain)
    assert not rep0.changed


# -------------------------------------------------------------------------------------- diffusers

def test_diffusers_unet2d():
    diffusers = pytest.importorskip('diffusers')
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                  layers_per_block=1, down_block_types=('DownBlock2D', 'DownBlock2D'),
                                  up_block_types=('UpBlock2D', 'UpBlock2D'), norm_num_groups=4).eval()
    x = torch.randn(2, 3, 16, 16)
    swapped, report = swap_blocks(model)
    n_res = sum(type(m).__name__ == 'ResnetBlock2D' for m in model.modules())
    assert len(report.swapped) == n_res == 8
    with torch.no_grad():
        out1, out2 = swapped(x, 1).sample, swapped(x, 500).sample
        assert out1.shape == model(x, 1).sample.shape == x.shape
        assert not torch.allclose(out1, out2)     # the time embedding still conditions the blocks
    assert report.params_after < 0.7 * report.params_before
    swapped.train()
    check_backward(swapped, swapped(x, 10).sample, report)
    check_roundtrip(model, swapped, lambda m: m(x, 3).sample)
    compiled = torch.compile(swapped.eval(), backend='eager')
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, 3).sample, swapped(x, 3).sample)


def test_diffusers_unsupported_variant_is_reported():
    pytest.importorskip('diffusers')
    from diffusers.models.resnet import ResnetBlock2D
    model = nn.ModuleList([ResnetBlock2D(in_channels=8, temb_channels=16, groups=4,
                                         time_embedding_norm='scale_shift'),
                           ResnetBlock2D(in_channels=8, temb_channels=16, groups=4, down=True),
                           ResnetBlock2D(in_channels=8, temb_channels=16, groups=4)])
    swapped, report = swap_blocks(model)
    assert [r.path for r in report.swapped] == ['2']
    reasons = {s.path: s.reason for s in report.skipped}
    assert 'scale_shift' in reasons['0'] and 'down' in reasons['1']
    assert type(swapped[0]).__name__ == 'ResnetBlock2D'


def test_diffusers_unet1d_both_block_kinds():
    diffusers = pytest.importorskip('diffusers')
    torch.manual_seed(0)
    dance = diffusers.UNet1DModel(block_out_channels=(32, 32, 64), extra_in_channels=16, time_embedding_dim=16,
                                  sample_size=32, in_channels=2, out_channels=2, flip_sin_to_cos=True,
                                  use_timestep_embedding=False, time_embedding_type='fourier').eval()
    rl = diffusers.UNet1DModel(sample_size=16, in_channels=4, out_channels=4, extra_in_channels=0,
                               time_embedding_type='positional', flip_sin_to_cos=False, freq_shift=1.0,
                               block_out_channels=(8, 8, 16, 16), down_block_types=('DownResnetBlock1D',) * 4,
                               up_block_types=('UpResnetBlock1D',) * 3, mid_block_type='MidResTemporalBlock1D',
                               out_block_type='OutConv1DBlock', act_fn='swish', use_timestep_embedding=True).eval()
    for model, x, kind in ((dance, torch.randn(2, 2, 32), 'ResConvBlock'),
                           (rl, torch.randn(2, 4, 16), 'ResidualTemporalBlock1D')):
        swapped, report = swap_blocks(model)
        n = sum(type(m).__name__ == kind for m in model.modules())
        assert len(report.swapped) == n > 0 and {r.old_class for r in report.swapped} == {kind}
        assert all(swapped.get_submodule(p).dim == 1 for p in report.step_paths)
        with torch.no_grad():
            assert swapped(x, 5).sample.shape == model(x, 5).sample.shape == x.shape
        assert report.params_after < 0.7 * report.params_before
        swapped.train()
        check_backward(swapped, swapped(x, 5).sample, report)
        check_roundtrip(model, swapped, lambda m, x=x: m(x, 5).sample)


def test_scheme_blocks_take_the_certification_keywords():
    """Every registered stable scheme forwards the certificate settings (FED used to reject bound_refresh)."""
    model = timm.create_model('resnet18', num_classes=10)
    for name in ('symmetric', 'fed', 'fsi', 'implicit'):
        swapped, report = pdeblocks.swap_blocks(model, name, bound_refresh=0.25, certification='all')
        steps = [m for m in swapped.modules() if isinstance(m, SymmetricResidual)]
        assert len(steps) == 8 and all(s.bound.settings.refresh == 0.25 and s.bound.strict for s in steps), name


def test_settle_step_size_keeps_tau_for_every_parameterisation():
    """settle_step_size re-parameterises τ through the block's own step_fraction: an implicit step at 50×
    the explicit limit keeps its τ (it used to be written as a sigmoid logit, capping it near 14×)."""
    from pdeblocks.layers import ImplicitBlock
    from pdeblocks.swap.calibrate import settle_step_size
    for block in (ImplicitBlock(4, dim=2, relative_step=50.0), SymmetricResidual(4, dim=2)):
        block.train()
        with torch.no_grad():
            tau_fit = float(block.step_size())
        settle_step_size(block)
        block.eval()
        with torch.no_grad():
            assert float(block.step_size()) == pytest.approx(tau_fit, rel=1e-5)
    assert float(block.step_fraction()) < 1.0 and float(ImplicitBlock(4, dim=2, relative_step=50.0).step_fraction()) == \
        pytest.approx(50.0)
