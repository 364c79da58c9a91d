"""The 1D model classes: shapes, minimum length, stability of the symmetric steps, parameter budgets,
and the bundled models' quality against independent baselines."""
import math

import numpy as np
import pytest
import torch

from pdeblocks import classical as ref
from pdeblocks.classical import tv_denoise
from pdeblocks.data import make_signals, psnr
from pdeblocks.hub import from_pretrained
from pdeblocks.layers.symmetric import SymmetricResidual
from pdeblocks.models.denoise1d import Denoiser1D, Diffusion1D, StandardResNet1D
from pdeblocks.ops.schedules import fed_step_sizes


@pytest.mark.parametrize('length', [40, 41, 47, 256, 1000])
def test_shapes_any_length_from_minimum(length):
    m = Denoiser1D(scale=8, channels=8, hidden_channels=8, blocks=2, kernel_size=5)
    assert m.min_length == 40
    x = torch.rand(2, 1, length)
    assert m(x).shape == x.shape
    s = StandardResNet1D(scale=8, channels=8, hidden_channels=8, blocks=2, kernel_size=5)
    assert s(x).shape == x.shape


@pytest.mark.parametrize('name', ['denoiser-1d', 'denoiser-1d-piecewise-constant', 'denoiser-1d-multigrid',
                                  'diffusion-1d-perona-malik'])
@pytest.mark.parametrize('chunk_samples', [1, 500, 1 << 17])
def test_predict_equals_forward_in_any_chunks(name, chunk_samples):
    """predict() splits the batch (≥ 1 signal per chunk, a last partial chunk) and gives forward's values."""
    m = from_pretrained(name)
    torch.manual_seed(0)
    x = torch.rand(7, 1, 200, requires_grad=True)
    out = m.predict(x, chunk_samples=chunk_samples)
    assert out.shape == x.shape and not out.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(out, m(x), rtol=1e-6, atol=1e-6)


def test_predict_bad_input():
    m = Denoiser1D(scale=2, channels=4, hidden_channels=4, blocks=1, kernel_size=3)
    with pytest.raises(ValueError, match='chunk_samples must be ≥ 1, got 0'):
        m.predict(torch.rand(2, 1, 64), chunk_samples=0)
    with pytest.raises(ValueError, match=r'expects a float tensor \[batch, 1, length\], got \[2, 64\]'):
        m.predict(torch.rand(2, 64))


def test_minimum_length_and_bad_shapes():
    m = Denoiser1D(scale=4, channels=4, hidden_channels=4, blocks=1, kernel_size=3)
    with pytest.raises(ValueError, match='length ≥ 12'):
        m(torch.rand(1, 1, 11))
    for bad in (torch.rand(4, 100), torch.rand(1, 3, 100), torch.zeros(1, 1, 100, dtype=torch.long),
                torch.zeros(0, 1, 100)):
        with pytest.raises(ValueError):
            m(bad)


def test_initial_model_is_identity():
    m = Denoiser1D(scale=4, channels=8, hidden_channels=8, blocks=2)
    x = torch.rand(3, 1, 123)
    torch.testing.assert_close(m(x), x)


def test_symmetric_steps_are_euclidean_stable_under_adversarial_weights():
    torch.manual_seed(0)
    m = Denoiser1D(scale=4, channels=8, hidden_channels=12, blocks=3, kernel_size=5)
    steps = [b for b in m.blocks if isinstance(b, SymmetricResidual)]
    assert len(steps) == 3 and all(b.stability == 'euclidean' and b.bias is None for b in steps)
    with torch.no_grad():
        for b in steps:
            b.weight.mul_(1e3).add_(torch.randn_like(b.weight) * 50)
            b.step_param.fill_(30.0)  # step at the limit
            b.flux.knot_logits.copy_(torch.randn_like(b.flux.knot_logits) * 10)  # wild nonmonotone flux
    for b in steps:
        u = torch.randn(16, 8, 64) * 100
        with torch.no_grad():
            ratio = torch.linalg.vector_norm(b(u).flatten(1), dim=1) / torch.linalg.vector_norm(u.flatten(1), dim=1)
        assert float(ratio.max()) <= 1.0 + 1e-5
    # optimised inputs: gradient ascent on ‖step(u)‖/‖u‖
    b = steps[0]
    u = (torch.randn(4, 8, 64) * 0.3).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=0.1)
    for _ in range(30):
        r = torch.linalg.vector_norm(b(u).flatten(1), dim=1) / torch.linalg.vector_norm(u.flatten(1), dim=1)
        opt.zero_grad()
        (-r.sum()).backward()
        opt.step()
        assert float(r.detach().max()) <= 1.0 + 1e-5


def _block_params(c, h, k, knots):
    return h * c * k + h * knots + 1  # shared K, flux knots, step parameter


def test_parameter_counts_and_standard_resnet_has_twice_the_block_weights():
    c, h, k, kn, blocks, s = 32, 32, 5, 16, 8, 8
    m = Denoiser1D(scale=s, channels=c, hidden_channels=h, blocks=blocks, kernel_size=k, knots=kn)
    skeleton = (s * c * k + c) + (c * s * k + s)
    assert m.parameter_count() == blocks * _block_params(c, h, k, kn) + skeleton
    std = StandardResNet1D(scale=s, channels=c, hidden_channels=h, blocks=blocks, kernel_size=k, knots=kn)
    std_blocks = blocks * (2 * h * c * k + h + h * kn)
    assert std.parameter_count() == std_blocks + skeleton
    conv_sym = blocks * h * c * k
    assert std_blocks - blocks * (h + h * kn) == 2 * conv_sym


def test_diffusion_model_initialisation_is_the_fed_schedule():
    m = Diffusion1D(layers=12, time=6.0, cycles=3)
    taus = [float(s.step_size().detach()) for s in m.steps]
    expect = fed_step_sizes(4, 3 * 6.0 / (3 * 20)) * 3
    np.testing.assert_allclose(taus, expect, rtol=1e-6)
    assert math.isclose(sum(taus), 6.0, rel_tol=1e-5)
    for s in m.steps:
        assert not s.weight.requires_grad
        torch.testing.assert_close(s.weight, torch.tensor([[[-1.0, 1.0]]]))
    # at initialisation the network is the (non-lagged) FED scheme with a learned-flux approximation of PM
    f = torch.from_numpy(make_signals('piecewise_smooth', 'test', 2, 128, 0.05).noisy).double()[:, None]
    flux = ref.make_flux('perona_malik', 0.1)
    fed = ref.fed(f, flux, 6.0, 4, 3, lagged=False)
    err = ref.relative_error(m(f.float()).double(), fed).max()
    assert float(err.detach()) < 0.05


# ---------------------------------------------------------------- bundled models
@pytest.mark.parametrize('name', ['denoiser-1d-piecewise-constant', 'denoiser-1d-multigrid'])
def test_bundled_denoiser_quality_and_budget(name):
    """Regression guard for the shipped piecewise-constant specialists: at σ = 0.1 both beat TV with its best
    of three weights (chosen on these very signals, which favours TV) by ≥ 0.5 dB. NOTE: the project target
    is +4.5 dB over tuned TV, above this task's Bayes limit (about +3.5 dB, benchmarks/bench_denoise.py); the
    shipped weights reach about +1 to +1.6 dB (see the model cards)."""
    m = from_pretrained(name)
    if name == 'denoiser-1d-piecewise-constant':
        assert m.parameter_count() <= 65_000
    s = make_signals('piecewise_constant', 'test', 8, 1024, 0.1, offset=100)
    with torch.no_grad():
        out = m(torch.from_numpy(s.noisy)[:, None])[:, 0].numpy()
    noisy = psnr(s.noisy, s.clean).mean()
    assert psnr(out, s.clean).mean() > noisy + 10.0
    f = torch.from_numpy(s.noisy).double()
    best_tv = max(psnr(tv_denoise(f, w).numpy(), s.clean).mean() for w in (0.25, 0.35, 0.45))
    assert psnr(out, s.clean).mean() > best_tv + 0.5


@pytest.mark.parametrize('family', ['peaks', 'oscillations', 'smooth_trend'])
def test_bundled_general_denoiser_quality_and_budget(family):
    """Regression guard for the shipped general model (denoiser-1d, blind): within the issue's 150k parameters,
    and on 8 test signals of these families at σ = 0.1 ≥ 2 dB above TV with the best of three weights chosen on
    these very signals (the shipped v2 weights: 2.5–4 dB), unchanged by a change of units (×1000 + 5000)."""
    from pdeblocks.data.families import make_family_signals
    m = from_pretrained('denoiser-1d')
    assert m.parameter_count() <= 150_000
    s = make_family_signals(family, 'test', 8, 1024, 0.1, offset=100)
    x = torch.from_numpy(s.noisy).double()[:, None]
    with torch.no_grad():
        out = m(x)[:, 0].numpy()
        moved = ((m(1000.0 * x + 5000.0) - 5000.0) / 1000.0)[:, 0].numpy()
    f = torch.from_numpy(s.noisy).double()
    best_tv = max(psnr(tv_denoise(f, w).numpy(), s.clean).mean() for w in (0.1, 0.2, 0.35))
    assert psnr(out, s.clean).mean() > best_tv + 2.0
    np.testing.assert_allclose(moved, out, rtol=0, atol=1e-4)


def test_bundled_diffusion_beats_fed_cycle():
    m = from_pretrained('diffusion-1d-perona-malik')
    n, T = len(m.steps), m.time
    flux = ref.make_flux('perona_malik', 0.1)
    f = torch.from_numpy(make_signals('piecewise_constant', 'test', 6, 512, 0.08, offset=200).noisy).double()[:, None]
    r = ref.fine_reference(f, flux, T)
    with torch.no_grad():
        e_model = ref.relative_error(m(f.float()).double(), r).mean()
    e_fed = ref.relative_error(ref.fed(f, flux, T, n), r).mean()
    assert float(e_model) <= 0.5 * float(e_fed)


# ---------------------------------------------------------------- training loss
def test_relative_mse_weighs_every_noise_level_alike():
    """Two signals with noise σ = 0.05 and 0.2, each output removing half of its own noise: the relative
    loss is ¼ for both (so ¼ overall) while the plain MSE is dominated by the noisier one."""
    from pdeblocks.train.recipes import Recipe
    from pdeblocks.train.trainer import training_loss
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 1, 256, generator=g)
    noise = torch.randn(2, 1, 256, generator=g) * torch.tensor([0.05, 0.2]).reshape(2, 1, 1)
    noisy, out = clean + noise, clean + 0.5 * noise
    rel = Recipe(name='r', task='denoise', architecture='denoiser_1d', loss='relative_mse')
    mse = Recipe(name='m', task='denoise', architecture='denoiser_1d')
    assert float(training_loss(rel, out, noisy, clean)) == pytest.approx(0.25, rel=1e-6)
    expected_mse = float(((0.5 * noise) ** 2).mean())
    assert float(training_loss(mse, out, noisy, clean)) == pytest.approx(expected_mse, rel=1e-6)


@pytest.mark.parametrize('task, loss', [('denoise', 'l1'), ('diffusion', 'relative_mse')])
def test_recipe_rejects_unknown_or_misplaced_loss(task, loss):
    from pdeblocks.train.recipes import RECIPES, Recipe, register_recipe
    with pytest.raises(ValueError, match="loss must be one of"):
        register_recipe(Recipe(name='bad-loss', task=task, architecture='denoiser_1d', loss=loss))
    assert 'bad-loss' not in RECIPES


def test_recipe_rejects_bad_steps_and_frequency_ranges():
    """steps < 0, steps = 0 without a source, a max_frequency out of (0, 0.5] or on the specialists' data: each a
    ValueError naming the recipe and what came; none is registered."""
    from pdeblocks.train.recipes import RECIPES, Recipe, register_recipe
    family = dict(task='denoise', architecture='blind_denoiser_1d', data='families', kinds=('peaks',))
    cases = [(dict(family, steps=-1), r"recipe 'bad': steps must be ≥ 0 .*got -1"),
             (dict(family, steps=0), r"recipe 'bad': steps=0 needs a start_from folder"),
             (dict(family, max_frequency=0.7), r"recipe 'bad': max_frequency must be in \(0, 0.5\] .*got 0.7"),
             (dict(task='denoise', architecture='denoiser_1d', max_frequency=0.5),
              r"recipe 'bad': max_frequency is a setting of data='families', got data='signals'")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            register_recipe(Recipe(name='bad', **kwargs))
        assert 'bad' not in RECIPES
