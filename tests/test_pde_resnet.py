"""The pde_resnet timm family, SymmetricBasicBlock inside timm's ResNet, certify, torch.hub, the CLI."""
import os
import subprocess
import sys

import pytest
import timm
import torch

import pdeblocks
from pdeblocks.layers import SymmetricBasicBlock, SymmetricResidual

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_registered_on_import():
    names = timm.list_models('pde_resnet*')
    for name in ('pde_resnet', 'pde_resnet18', 'pde_resnet34', 'pde_resnet_tiny'):
        assert name in names


def test_resnet18_layout_and_parameter_ratio():
    """Same widths and block counts as resnet18; stages ≤ 0.6× and whole model ≤ 0.62× the parameters."""
    with torch.device('meta'):
        ours = timm.create_model('pde_resnet18')
        ref = timm.create_model('resnet18')
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert [s.blocks[0].channels for s in ours.stages] == [64, 128, 256, 512]
    assert [len(s.blocks) for s in ours.stages] == [2, 2, 2, 2]
    ref_stages = sum(count(getattr(ref, f'layer{i}')) for i in range(1, 5))
    assert count(ours.stages) <= 0.6 * ref_stages
    assert count(ours) <= 0.62 * count(ref)


def test_timm_api_tiny():
    m = timm.create_model('pde_resnet_tiny', num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = m(x)
        feats = m.forward_features(x)
        pre = m.forward_head(feats, pre_logits=True)
        final, inter = m.forward_intermediates(x)
    assert logits.shape == (2, 7) and pre.shape == (2, m.num_features) == (2, m.head_hidden_size)
    assert torch.allclose(final, feats)
    assert [t.shape[1] for t in inter] == [i['num_chs'] for i in m.feature_info]
    assert [64 // t.shape[-1] for t in inter] == [i['reduction'] for i in m.feature_info]
    m.reset_classifier(3)
    assert m.get_classifier().out_features == 3 and m(x).shape == (2, 3)
    fo = timm.create_model('pde_resnet_tiny', features_only=True, out_indices=(1, 2, 4))
    outs = fo(x)
    assert [o.shape[1] for o in outs] == [16, 32, 64]
    with pytest.raises(TypeError):
        timm.create_model('pde_resnet_tiny', not_an_argument=1)


def test_grad_checkpointing_matches():
    torch.manual_seed(0)
    m = timm.create_model('pde_resnet_tiny').train()
    x = torch.randn(2, 3, 64, 64)
    a = m(x)
    m.set_grad_checkpointing(True)
    b = m(x)
    b.sum().backward()
    assert torch.allclose(a, b, atol=1e-5)
    assert all(p.grad is not None for p in m.parameters())


def test_block_options_reach_every_block():
    m = timm.create_model('pde_resnet_tiny', block_kwargs=dict(flux='charbonnier', stability='lipschitz'))
    blocks = [b for b in m.modules() if isinstance(b, SymmetricResidual)]
    assert len(blocks) == 4 and all(b.stability == 'lipschitz' and b.boundary == 'zeros' for b in blocks)


def test_certify_reports_every_block_and_composes():
    m = timm.create_model('pde_resnet_tiny')
    report = pdeblocks.certify(m)
    assert [b.path for b in report.blocks] == [f'stages.{i}.blocks.0' for i in range(4)]
    for b, blk in zip(report.blocks, [m.stages[i].blocks[0] for i in range(4)]):
        assert b.mode == 'euclidean' and b.norm_factor == 1.0
        assert abs(b.step_size - float(blk.step_size())) < 1e-9
        assert abs(b.step_size - 2 * 0.5 / b.norm_bound ** 2) < 1e-5  # sigmoid(0)·2/(L B²), L = 1
    assert report.composed_norm_factor == 1.0
    text = str(report)
    assert 'stages.3.blocks.0' in text and 'chain of 4 certified blocks' in text
    lip = timm.create_model('pde_resnet_tiny', block_kwargs=dict(flux='relu', stability='lipschitz'))
    assert pdeblocks.certify(lip).composed_lipschitz == 1.0
    assert len(pdeblocks.certify(torch.nn.Linear(2, 2))) == 0


def test_symmetric_basic_block_in_timm_resnet_trains():
    from timm.models.resnet import ResNet
    torch.manual_seed(0)
    assert len(pdeblocks.certify(ResNet(block=SymmetricBasicBlock, layers=[2, 2, 2, 2], device='meta'))) == 8
    model = ResNet(block=SymmetricBasicBlock, layers=[2, 2, 2, 2], channels=(8, 16, 24, 32), stem_width=8,
                   num_classes=4)
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 4, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match='downsample'):
        SymmetricBasicBlock(64, 128, stride=2)


def test_torch_hub_local():
    m = torch.hub.load(REPO, 'pde_resnet_tiny', source='local', num_classes=5)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    import importlib.util
    spec = importlib.util.spec_from_file_location('hubconf', os.path.join(REPO, 'hubconf.py'))
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entrypoints = {n for n, f in vars(hubconf).items() if callable(f) and not n.startswith('_')}
    assert {'pde_resnet', 'pde_resnet18', 'pde_resnet34', 'pde_resnet_tiny'} <= entrypoints
    for name in entrypoints:
        assert getattr(hubconf, name).__doc__, f'entrypoint {name} has no docstring'


def test_cli_certify():
    r = subprocess.run([sys.executable, '-m', 'pdeblocks.cli', 'certify', 'pde_resnet_tiny'],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'stages.3.blocks.0' in r.stdout and '‖f(u)‖ ≤ ‖u‖' in r.stdout
    bad = subprocess.run([sys.executable, '-m', 'pdeblocks.cli', 'certify', 'no_such_model'],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and 'Traceback' not in bad.stderr
