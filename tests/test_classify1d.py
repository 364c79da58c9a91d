"""The 1D symmetric ResNet family (pdeblocks.models.symmetric_resnet1d): timm-style API tests in the spirit of
timm's own model suite (forward, backward, reset_classifier, features, TorchScript, torch.fx), the registry,
bad input, parameter counts and certify()."""
import math

import pytest
import timm
import torch
from torch import nn

import pdeblocks
from pdeblocks.layers import SymmetricResidual
from pdeblocks.models.symmetric_resnet1d import (
    MODELS_1D,
    ChannelScale,
    SymmetricResNet1d,
    create_model_1d,
    list_models_1d,
)

NAMES = list_models_1d()
# a length every variant accepts: the flatten-head variants need theirs, the others any length ≥ 2
LENGTH = {n: create_model_1d(n).default_cfg['input_size'][1] or 24 for n in NAMES}


def _input(name: str, batch: int = 2, in_chans: int = 1) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(batch, in_chans, LENGTH[name])


def test_registry_is_separate_from_timm():
    assert len(NAMES) >= 4 and set(NAMES) == set(MODELS_1D)
    assert not set(NAMES) & set(timm.list_models())  # timm's image suite never sees them
    assert list_models_1d('symresnet1d_mnist1d*') == ['symresnet1d_mnist1d', 'symresnet1d_mnist1d_free']


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown 1D model 'resnet1d_huge'.*symresnet1d_tiny"):
        create_model_1d('resnet1d_huge')


@pytest.mark.parametrize('name', NAMES)
def test_forward_backward(name):
    m = create_model_1d(name, num_classes=7).train()
    x = _input(name, batch=3)
    out = m(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    out.mean().backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if p.requires_grad), \
        [n for n, p in m.named_parameters() if p.grad is None]
    assert m.num_classes == 7 and m.in_chans == 1


@pytest.mark.parametrize('name', NAMES)
def test_reset_classifier_and_pre_logits(name):
    m = create_model_1d(name).eval()
    x = _input(name)
    feats = m.forward_features(x)
    assert feats.dim() == 3 and feats.shape[1] == m.final_width
    assert m.forward_head(feats, pre_logits=True).shape == (2, m.num_features)
    m.reset_classifier(3)
    assert m.get_classifier().out_features == 3 and m(x).shape == (2, 3)
    m.reset_classifier(0)
    assert m(x).shape == (2, m.num_features)
    m.reset_classifier(0, '')
    assert torch.equal(m(x), m.forward_features(x))


def test_pooling_choices():
    m = create_model_1d('symresnet1d_tiny', num_classes=4, global_pool='max')
    assert m(torch.randn(2, 1, 17)).shape == (2, 4)
    with pytest.raises(ValueError, match='global_pool must be one of'):
        create_model_1d('symresnet1d_tiny', global_pool='attn')
    with pytest.raises(ValueError, match="needs the fixed input length"):
        create_model_1d('symresnet1d_tiny', global_pool='flatten')
    m = create_model_1d('symresnet1d_tiny', global_pool='flatten', input_length=9)
    # stages (1, 2): the second halves the length with ceil_mode, 9 → 5, so 32 · 5 flattened features
    assert m.num_features == 32 * 5 and m(torch.randn(2, 1, 9)).shape == (2, 10)


@pytest.mark.parametrize('name', NAMES)
def test_features_and_intermediates(name):
    m = create_model_1d(name).eval()
    x = _input(name)
    final, inter = m.forward_intermediates(x)
    assert torch.allclose(final, m.forward_features(x))
    assert [t.shape[1] for t in inter] == [i['num_chs'] for i in m.feature_info]
    assert [math.ceil(x.shape[-1] / t.shape[-1]) for t in inter] == [i['reduction'] for i in m.feature_info]
    last = m.forward_intermediates(x, indices=1, intermediates_only=True)
    assert len(last) == 1 and torch.allclose(last[0], final)


def test_prune_intermediate_layers():
    m = create_model_1d('symresnet1d_small').eval()
    kept = m.prune_intermediate_layers(indices=[1, 2])
    assert kept == [1, 2] and len(m.stages) == 2
    out = m(torch.randn(2, 1, 32))
    assert out.shape == (2, 64, 16)  # the head was pruned: stage-2 features pass through


@pytest.mark.parametrize('name', ['symresnet1d_tiny', 'symresnet1d_mnist1d'])
def test_torchscript_matches_eager(name):
    m = create_model_1d(name).eval()
    x = _input(name)
    scripted = torch.jit.script(m)
    with torch.no_grad():
        assert torch.allclose(scripted(x), m(x), atol=1e-6)
    with pytest.raises(Exception, match=r'expected a signal batch \[B, C, L\]'):
        scripted(torch.randn(2, 1, 4, 4))


def test_fx_trace_matches_eager():
    from timm.models._features_fx import create_feature_extractor
    m = create_model_1d('symresnet1d_tiny').eval()
    x = torch.randn(2, 1, 20)
    fx = create_feature_extractor(m, return_nodes={'stages.1': 'out'})
    with torch.no_grad():
        assert torch.allclose(fx(x)['out'], m.forward_features(x), atol=1e-6)


@pytest.mark.parametrize('bad, match', [
    (torch.randn(2, 1, 8, 8), r'expected a signal batch \[B, C, L\] with C = 1, got a 4D tensor of shape \[2, 1, 8, 8\]'),
    (torch.randn(2, 40), r'expected a signal batch \[B, C, L\] with C = 1, got a 2D tensor of shape \[2, 40\]'),
    (torch.randn(2, 3, 40), r'expected a signal batch \[B, C, L\] with C = 1 channels, got shape \[2, 3, 40\]'),
    (torch.randn(2, 1, 39), r'with L = 40 .*got shape \[2, 1, 39\]'),
])
def test_bad_input_names_expected_and_got(bad, match):
    m = create_model_1d('symresnet1d_mnist1d')
    with pytest.raises(ValueError, match=match):
        m(bad)


def test_parameter_counts():
    """The issue's MNIST-1D layout: lift 1×5 → 32 (192), 6 blocks × (32·32·3 weights + 32 contrasts + 1 step),
    flatten head 32·40 → 10 (12,810); the free twin adds 32 biases per block (stability='none' allows them); the
    default gains between blocks add 32 per block."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(create_model_1d('symresnet1d_mnist1d', between='')) == 192 + 6 * (3072 + 32 + 1) + 12810 == 31632
    assert count(create_model_1d('symresnet1d_mnist1d_free', between='')) == 31632 + 6 * 32 == 31824
    assert count(create_model_1d('symresnet1d_mnist1d')) == 31632 + 6 * 32 == 31824
    assert count(create_model_1d('symresnet1d_mnist1d')) <= 1.5 * 22314   # issue 20's budget: 1.5× the plain CNN
    tiny = create_model_1d('symresnet1d_tiny', in_chans=2, num_classes=3)
    # stem 2→16 ×5 (+bias) | block 16 + gain 16 | connector 16→32 1×1 + BN(32) | block 32 + gain 32 | head 32→3
    expected = (2 * 16 * 5 + 16) + (16 * 16 * 3 + 16 + 1 + 16) + (16 * 32 + 64) + (32 * 32 * 3 + 32 + 1 + 32) \
        + (32 * 3 + 3)
    assert count(tiny) == expected


def test_certify_every_block():
    m = create_model_1d('symresnet1d_mnist1d', between='')
    report = pdeblocks.certify(m)
    assert [b.path for b in report.blocks] == [f'stages.0.blocks.{i}' for i in range(6)]
    assert all(b.mode == 'euclidean' and b.norm_factor == 1.0 for b in report.blocks)
    assert report.composed_norm_factor == 1.0
    # the guarantee the report states holds on the chain of blocks for random inputs
    u = torch.randn(16, 32, 40)
    with torch.no_grad():
        assert (m.stages(u).flatten(1).norm(dim=1) <= u.flatten(1).norm(dim=1) * (1 + 1e-5)).all()
    free = pdeblocks.certify(create_model_1d('symresnet1d_mnist1d_free'))
    assert free.composed_norm_factor is None and {b.mode for b in free.blocks} == {'none', 'scale'}
    default = pdeblocks.certify(create_model_1d('symresnet1d_mnist1d'))
    assert [b.block for b in default.blocks] == ['SymmetricResidual', 'ChannelScale'] * 6
    assert default.composed_norm_factor == 1.0   # gains start at 1


def test_block_kwargs_and_custom_block():
    m = create_model_1d('symresnet1d_mnist1d', block_kwargs=dict(flux='charbonnier', stability='lipschitz'))
    blocks = [b for b in m.modules() if isinstance(b, SymmetricResidual)]
    assert len(blocks) == 6 and all(b.stability == 'lipschitz' and b.boundary == 'zeros' and b.dim == 1
                                    for b in blocks)
    assert m.default_cfg['block_kwargs'] == dict(flux='charbonnier', stability='lipschitz')

    class Scale(nn.Module):
        def __init__(self, channels, dim=1, boundary='zeros'):
            super().__init__()
            self.a = nn.Parameter(torch.ones(channels, 1))

        def forward(self, x):
            return x * self.a

    m = SymmetricResNet1d(layers=(2,), widths=(8,), block=Scale)
    assert sum(isinstance(b, Scale) for b in m.modules()) == 2 and m(torch.randn(1, 1, 5)).shape == (1, 10)


def test_no_weight_decay_names_step_and_contrast():
    m = create_model_1d('symresnet1d_tiny')
    names = m.no_weight_decay()
    assert names and all(n.endswith(('step_param', 'raw_contrast', 'gain')) for n in names)
    assert 'stages.0.blocks.0.step_param' in names and 'stages.0.blocks.0.weight' not in names


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match='one entry per stage'):
        SymmetricResNet1d(layers=(1, 1), widths=(8,))
    with pytest.raises(ValueError, match='stem_kernel must be odd'):
        SymmetricResNet1d(stem_kernel=4)
    with pytest.raises(ValueError, match="needs num_classes=0"):
        SymmetricResNet1d(global_pool='')


def test_channel_scale_between_blocks_is_composed_by_certify():
    m = create_model_1d('symresnet1d_mnist1d')   # between='scale' is the default
    gains = [b for b in m.modules() if isinstance(b, ChannelScale)]
    assert len(gains) == 6
    with torch.no_grad():
        gains[0].gain[3] = -2.5   # max |a| = 2.5 for the first, 1 for the others
        gains[4].gain.fill_(0.5)
    report = pdeblocks.certify(m)
    assert [b.block for b in report.blocks] == ['SymmetricResidual', 'ChannelScale'] * 6
    assert report.composed_norm_factor == pytest.approx(2.5 * 0.5)
    u = torch.randn(8, 32, 40)
    with torch.no_grad():
        ratio = m.stages(u).flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)
    assert (ratio <= 1.25 * (1 + 1e-5)).all()
    assert {'stages.0.blocks.1.gain'} <= m.no_weight_decay()


def test_batchnorm_between_blocks():
    m = create_model_1d('symresnet1d_mnist1d', between='batchnorm')
    kinds = [type(b).__name__ for b in m.stages[0].blocks]
    assert kinds == ['SymmetricResidual', 'BatchNorm1d'] * 6
    assert len(pdeblocks.certify(m)) == 6   # the norms are not certified; each block keeps its certificate
    assert m(torch.randn(3, 1, 40)).shape == (3, 10)
    with pytest.raises(ValueError, match=r"between must be one of \('', 'batchnorm', 'scale'\), got 'layernorm'"):
        create_model_1d('symresnet1d_tiny', between='layernorm')


def test_certified_blocks_carry_the_sigma_max_gradient_by_default():
    """The finding of docs/certified_accuracy.md is the default: every certified block of the 1D models tracks
    σ_max's maximiser (Certification.gradient='auto' on narrow blocks), and τ's gradient reaches K."""
    model = create_model_1d('symresnet1d_mnist1d')
    blocks = [m for m in model.modules() if isinstance(m, SymmetricResidual)]
    assert blocks and all(b.bound.settings.gradient == 'auto' and b.bound.tracks_maximiser(b.weight) for b in blocks)
    tau = blocks[0].step_size()
    (grad,) = torch.autograd.grad(tau, blocks[0].weight)
    assert float(grad.abs().max()) > 0
