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
    assert {'pde_resnet18', 'pde_resnet34', 'pde_resnet_tiny'} <= set(timm.list_models('pde_resnet*'))


def test_pde_resnet_is_timms_deprecation_alias_of_pde_resnet18():
    from timm.models import get_deprecated_models
    assert get_deprecated_models()['pde_resnet'] == 'pde_resnet18'
    assert 'pde_resnet' not in timm.list_models('pde_*')          # timm lists current names only
    with torch.device('meta'), pytest.warns(UserWarning, match='deprecated model name pde_resnet'):
        model = timm.create_model('pde_resnet', num_classes=7)
    assert model.pretrained_cfg['architecture'] == 'pde_resnet18' and model.num_classes == 7
    assert [stage_depth(s) for s in model.stages] == [2, 2, 2, 2]


def stage_depth(stage) -> int:
    """The residual steps of a PDEStage: its strided entry step (if any) and its blocks."""
    return len(stage.blocks) + int(isinstance(stage.entry, SymmetricResidual))


def test_resnet18_layout_and_parameter_ratio():
    """Same widths and block counts as resnet18; stages ≤ 0.5× and whole model ≤ 0.5× the parameters."""
    with torch.device('meta'):
        ours = timm.create_model('pde_resnet18')
        ref = timm.create_model('resnet18')
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert [s.blocks[0].channels for s in ours.stages] == [64, 128, 256, 512]
    assert [stage_depth(s) for s in ours.stages] == [2, 2, 2, 2]
    ref_stages = sum(count(getattr(ref, f'layer{i}')) for i in range(1, 5))
    assert count(ours.stages) <= 0.5 * ref_stages
    assert count(ours) <= 0.5 * count(ref)


def test_stage_entry_is_a_strided_step_at_the_incoming_width():
    """Stages 2-4 start as resnet18's do: a stride-2 step whose K maps C_in → C_out ([C_out, C_in, 3, 3],
    conv1's shape and stride), then the connector; with it the model does fewer FLOPs than resnet18
    (forward + backward, counted by torch), without it (strided_entry=False) more."""
    from torch.utils.flop_counter import FlopCounterMode

    from pdeblocks.models import PDEStage
    with torch.device('meta'):
        m = timm.create_model('pde_resnet18', num_classes=10)
    assert isinstance(m.stages[0].entry, torch.nn.Identity) and isinstance(m.stages[0].connector, torch.nn.Identity)
    for stage, (c_in, c_out) in zip(m.stages[1:], [(64, 128), (128, 256), (256, 512)]):
        assert isinstance(stage.entry, SymmetricResidual) and stage.entry.stride == 2
        assert tuple(stage.entry.weight.shape) == (c_out, c_in, 3, 3) and stage.entry.boundary == 'zeros'
        assert stage.connector.conv.in_channels == c_in and stage.connector.conv.out_channels == c_out

    def flops(model):
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(2, 3, 64, 64)).sum().backward()
        return counter.get_total_flops()

    torch.manual_seed(0)
    ref = flops(timm.create_model('resnet18', num_classes=10))
    ours = flops(timm.create_model('pde_resnet18', num_classes=10, block_kwargs=dict(stability='none')))
    old = flops(timm.create_model('pde_resnet18', num_classes=10, block_kwargs=dict(stability='none'),
                                  strided_entry=False))
    assert ours < 0.95 * ref and old > 1.05 * ref

    # the entry step keeps the stage's output resolution and width
    stage = PDEStage(8, 16, depth=2, stride=2).eval()
    assert stage(torch.randn(1, 8, 9, 9)).shape == (1, 16, 5, 5) and len(stage.blocks) == 1


def test_strided_entry_follows_the_block():
    """Blocks that apply K at the input's resolution (the lagged schemes) keep the connector-first layout;
    asking them for a strided entry is an error naming the blocks that take one."""
    with torch.device('meta'):
        fsi = timm.create_model('pde_fsi_resnet_tiny')
        connector_first = timm.create_model('pde_resnet_tiny', strided_entry=False)
    for model in (fsi, connector_first):
        assert all(isinstance(s.entry, torch.nn.Identity) and len(s.blocks) == 1 for s in model.stages)
    with pytest.raises(ValueError, match=r"strided_entry=True needs a block that takes a stride; 'fsi' does not "
                                         r"\(blocks that do: \['symmetric'\]\)"):
        timm.create_model('pde_resnet_tiny', block='fsi', strided_entry=True, device='meta')
    with pytest.raises(ValueError, match=r"strided_entry must be None, True or False, got 'yes'"):
        timm.create_model('pde_resnet_tiny', strided_entry='yes', device='meta')


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
    m = timm.create_model('pde_resnet_tiny').eval()   # the certified τ is the eval passes' (training contract)
    report = pdeblocks.certify(m)
    assert [b.path for b in report.blocks] == ['stages.0.blocks.0'] + [f'stages.{i}.entry' for i in (1, 2, 3)]
    for b, blk in zip(report.blocks, [m.stages[0].blocks[0]] + [m.stages[i].entry for i in (1, 2, 3)]):
        assert b.mode == 'euclidean' and b.norm_factor == 1.0
        assert abs(b.step_size - float(blk.step_size())) < 1e-9
        assert abs(b.step_size - 2 * 0.5 / b.norm_bound ** 2) < 1e-5  # sigmoid(0)·2/(L B²), L = 1
    assert report.composed_norm_factor == 1.0
    text = str(report)
    assert all(b.path in text and b.guarantee in text for b in report.blocks)
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


# every name hubconf.py served when its entrypoints were written by hand
HUB_NAMES = {'pde_resnet', 'pde_resnet18', 'pde_resnet34', 'pde_resnet_tiny', 'pde_fsi_resnet', 'pde_fsi_resnet_tiny',
             'pde_implicit_resnet', 'pde_implicit_resnet_tiny', 'pde_parabolic_cnn', 'pde_hyperbolic_cnn',
             'pde_hamiltonian_cnn', 'pde_gcnn', 'pde_gcnn_small', 'denoiser_1d', 'diffusion_1d',
             'denoiser_1d_multigrid', 'multigrid_unet_1d', 'multigrid_unet_2d'}


def test_torch_hub_local(monkeypatch):
    m = torch.hub.load(REPO, 'pde_resnet_tiny', source='local', num_classes=5)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    # torch.hub.list / help read a GitHub checkout: point their download at this one
    monkeypatch.setattr(torch.hub, '_get_cache_or_reload', lambda *args, **kwargs: REPO)
    entrypoints = set(torch.hub.list('pdeblocks/pdeblocks', trust_repo=True))
    assert HUB_NAMES <= entrypoints
    assert set(timm.list_models('pde_*')) <= entrypoints             # generated from timm's registry
    for name in entrypoints:
        assert torch.hub.help('pdeblocks/pdeblocks', name, trust_repo=True), f'entrypoint {name} has no docstring'
    assert 'pde_resnet18' in torch.hub.help('pdeblocks/pdeblocks', 'pde_resnet', trust_repo=True)
    with pytest.warns(UserWarning, match='deprecated'):
        old = torch.hub.load(REPO, 'pde_resnet', source='local', num_classes=3, layers=(1, 1, 1, 1),
                             widths=(8, 8, 8, 8), stem_width=8)
    assert old.pretrained_cfg['architecture'] == 'pde_resnet18'


def test_cli_certify():
    r = subprocess.run([sys.executable, '-m', 'pdeblocks.cli', 'certify', 'pde_resnet_tiny'],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    report = pdeblocks.certify(timm.create_model('pde_resnet_tiny'))
    assert all(b.path in r.stdout and b.guarantee in r.stdout for b in report.blocks)
    bad = subprocess.run([sys.executable, '-m', 'pdeblocks.cli', 'certify', 'no_such_model'],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and 'Traceback' not in bad.stderr


def test_shared_stage_model_api_on_ruthotto_haber():
    """RuthottoHaberNet's timm API comes from models._stages.StageModelMixin; its units from the block registry."""
    from pdeblocks.layers.hyperbolic import ParabolicBlock
    from pdeblocks.layers.registry import RESIDUAL_BLOCKS
    from pdeblocks.models._stages import StageModelMixin
    assert RESIDUAL_BLOCKS['parabolic'] is ParabolicBlock
    torch.manual_seed(0)
    m = timm.create_model('pde_parabolic_cnn', widths=(4, 6, 8, 8), steps=1).eval()
    assert isinstance(m, StageModelMixin) and isinstance(m.stages[0].unit, ParabolicBlock)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        final, feats = m.forward_intermediates(x)
        assert [tuple(f.shape[1:]) for f in feats] == [(4, 16, 16), (6, 8, 8), (8, 4, 4), (8, 2, 2)]
        torch.testing.assert_close(final, m.forward_features(x))
        early = m.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)
        torch.testing.assert_close(early[0], feats[1])
        m.reset_classifier(5)
        assert not m.head.training and m(x).shape == (2, 5) and m.get_classifier().out_features == 5
        assert m.prune_intermediate_layers(indices=[1]) == [1]
        assert len(m.stages) == 1 and m.num_features == 6 and m.num_classes == 0 and m(x).shape == (2, 6, 8, 8)
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW'"):
        m.forward_intermediates(x, output_fmt='NHWC')


def test_connector_is_one_module_for_every_dim():
    """One Connector serves the 2D and 1D families (the same state-dict keys), and rejects other dims."""
    from pdeblocks.models._stages import Connector
    from pdeblocks.models.symmetric_resnet1d import Connector1d
    two, one = Connector(4, 8, stride=2), Connector1d(4, 8, stride=2)
    assert list(two.state_dict()) == list(one.state_dict())
    assert two(torch.randn(2, 4, 6, 6)).shape == (2, 8, 3, 3)
    assert one(torch.randn(2, 4, 7)).shape == (2, 8, 4)
    with pytest.raises(ValueError, match='dim must be 1, 2 or 3, got 4'):
        Connector(4, 8, dim=4)
