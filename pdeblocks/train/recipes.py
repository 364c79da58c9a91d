"""Training recipes of the published 1D models: everything needed to reproduce one, with its seed."""
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any, Dict, List, Optional, Tuple

from ..data.families import FAMILIES, MAX_FREQUENCY, check_max_frequency


@dataclass(frozen=True)
class Recipe:
    """One reproducible training run.

    Data: fresh seeded signals every step from the *train* split (signal index
    ``(data_offset + step)·batch_size + i``), so a run is a deterministic function of the recipe and resuming
    needs only the step counter. Denoising: noise σ log-uniform in [sigma_min, sigma_max] per
    signal (a blind denoiser); ``data='signals'`` draws one kind per step from
    :func:`pdeblocks.data.make_signals` (the specialists' generators), ``data='families'`` a family per signal
    from :func:`pdeblocks.data.families.training_batch`, oscillating up to ``max_frequency`` cycles per sample.
    Diffusion: a fixed set of ``train_signals`` noisy signals and their fine-step reference solutions.

    A fine-tune names the saved model it starts from (``start_from``, a folder; its tensors must fit the model,
    the model's tensors it lacks keep their initialisation, those under a ``restart`` prefix too), starts its
    data at ``data_offset`` (batches its source never saw) and may train only some of the model's children
    (``trainable``; the others are frozen and run in eval mode, so a new stage learns on exactly what the
    frozen ones give at inference).
    """

    name: str
    task: str                      # 'denoise' or 'diffusion'
    architecture: str              # a name in pdeblocks.hub.architectures()
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    steps: int = 3000
    batch_size: int = 32
    length: int = 512
    lr: float = 2e-3
    warmup: int = 100
    kinds: Tuple[str, ...] = ('piecewise_constant',)
    sigma_min: float = 0.04
    sigma_max: float = 0.25
    train_signals: int = 256      # diffusion only
    flux: str = 'perona_malik'    # diffusion only: the flux of the reference solution
    checkpoint_every: int = 200
    loss: str = 'mse'
    description: str = ''
    data: str = 'signals'
    start_from: str = ''
    data_offset: int = 0
    trainable: Tuple[str, ...] = ()
    restart: Tuple[str, ...] = ()
    max_frequency: float = MAX_FREQUENCY   # data='families' only

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        for key in ('kinds', 'trainable', 'restart'):
            d[key] = list(d[key])
        return d


LOSSES = ('mse', 'relative_mse', 'log_relative_mse')
DATA = ('signals', 'families')

RECIPES: Dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Validate ``recipe`` and add it to :data:`RECIPES` (replacing one of the same name)."""
    if recipe.loss not in LOSSES or (recipe.loss != 'mse' and recipe.task != 'denoise'):
        raise ValueError(f"recipe {recipe.name!r}: loss must be one of {LOSSES} (the relative ones for denoising only), "
                         f"got {recipe.loss!r} for task {recipe.task!r}")
    if recipe.data not in DATA or (recipe.data == 'families' and recipe.task != 'denoise'):
        raise ValueError(f"recipe {recipe.name!r}: data must be one of {DATA} ('families' for denoising only), "
                         f"got {recipe.data!r} for task {recipe.task!r}")
    unknown = [k for k in recipe.kinds if k not in FAMILIES]
    if recipe.data == 'families' and (unknown or not recipe.kinds):
        raise ValueError(f"recipe {recipe.name!r}: kinds must be a non-empty subset of {FAMILIES}, got {list(recipe.kinds)}")
    if recipe.max_frequency != MAX_FREQUENCY and recipe.data != 'families':
        raise ValueError(f"recipe {recipe.name!r}: max_frequency is a setting of data='families', got data={recipe.data!r}")
    try:
        check_max_frequency(recipe.max_frequency)
    except ValueError as e:
        raise ValueError(f"recipe {recipe.name!r}: {e}") from None
    if recipe.restart and not recipe.start_from:
        raise ValueError(f"recipe {recipe.name!r}: restart {list(recipe.restart)} needs a start_from folder")
    if recipe.steps < 0:
        raise ValueError(f"recipe {recipe.name!r}: steps must be ≥ 0 (0: the source's weights under this recipe's "
                         f"model, evaluated), got {recipe.steps}")
    if recipe.steps == 0 and not recipe.start_from:
        raise ValueError(f"recipe {recipe.name!r}: steps=0 needs a start_from folder (its weights are the model's)")
    if recipe.data_offset < 0:
        raise ValueError(f"recipe {recipe.name!r}: data_offset must be ≥ 0, got {recipe.data_offset}")
    RECIPES[recipe.name] = recipe
    return recipe


def source_recipe(recipe: Recipe) -> Optional[str]:
    """The recipe whose run a fine-tune starts from (``start_from`` = ``runs/<recipe>/model``), or None (trained
    from scratch, or started from a bundled model or another folder)."""
    parts = PurePosixPath(recipe.start_from).parts
    if len(parts) == 3 and parts[0] == 'runs' and parts[2] == 'model' and parts[1] in RECIPES:
        return parts[1]
    return None


def fine_tune_chain(name: str) -> List[str]:
    """The recipes to train, in order, to reproduce recipe ``name``: the fine-tunes it comes from whose sources are
    runs of other recipes (:func:`source_recipe`), then ``name`` itself."""
    chain = [name]
    while (before := source_recipe(get_recipe(chain[0]))) is not None:
        chain.insert(0, before)
    return chain


def same_recipe(saved: Dict[str, Any], recipe: Recipe) -> bool:
    """Whether ``saved`` (a :meth:`Recipe.to_dict` stored with a run) is ``recipe``; a field that ``saved`` lacks
    (written before the field existed) counts at its default, one that ``Recipe`` no longer has (``published``,
    which nothing read) is ignored."""
    defaults = Recipe(name='', task='', architecture='').to_dict()
    return dict(defaults, **{k: v for k, v in saved.items() if k in defaults}) == recipe.to_dict()


register_recipe(Recipe(
    name='denoiser-1d', task='denoise', architecture='denoiser_1d',
    model_kwargs=dict(scale=8, channels=32, hidden_channels=32, blocks=8, kernel_size=5, knots=16, interp_slack=1.005),
    seed=0, steps=16000, batch_size=32, length=512, lr=3e-3, warmup=50, checkpoint_every=500, loss='relative_mse',
    description='symmetric ResNet denoiser, learned nonmonotone fluxes, blind σ ∈ [0.04, 0.25]'))

register_recipe(Recipe(
    name='denoiser-1d-standard', task='denoise', architecture='standard_resnet_1d',
    model_kwargs=dict(scale=8, channels=32, hidden_channels=32, blocks=8, kernel_size=5, knots=16),
    seed=0, steps=16000, batch_size=32, length=512, lr=3e-3, warmup=50, checkpoint_every=500, loss='relative_mse',
    description='comparison: standard (non-symmetric) ResNet, same skeleton and recipe, 2× block parameters'))

register_recipe(Recipe(
    name='denoiser-1d-free', task='denoise', architecture='denoiser_1d',
    model_kwargs=dict(scale=8, channels=32, hidden_channels=32, blocks=8, kernel_size=5, knots=16, stability='none'),
    seed=0, steps=16000, batch_size=32, length=512, lr=3e-3, warmup=50, checkpoint_every=500, loss='relative_mse',
    description='comparison: denoiser-1d with free step sizes (symmetric form, no stability bound, no guarantee)'))

register_recipe(Recipe(
    name='diffusion-1d-perona-malik', task='diffusion', architecture='diffusion_1d',
    model_kwargs=dict(layers=16, time=10.0, contrast=0.1, order=1, knots=32, support=10.0, cycles=4),
    seed=0, steps=2000, batch_size=32, length=256, lr=3e-3, warmup=50, train_signals=512,
    kinds=('piecewise_constant', 'piecewise_smooth'), sigma_min=0.05, sigma_max=0.1,
    description='16 learned explicit steps (FED-initialised, 4 cycles of 4) reproducing Perona–Malik diffusion (λ = 0.1) to T = 10'))

register_recipe(Recipe(
    name='denoiser-1d-multigrid', task='denoise', architecture='multigrid_denoiser_1d',
    model_kwargs=dict(channels=12, levels=3, kernel_size=5, pre_smooth=2, post_smooth=2, coarse_steps=2, cycle='V',
                      flux='learned', interp_slack=1.005),
    seed=0, steps=4000, batch_size=32, length=512, lr=3e-3, warmup=50, checkpoint_every=200, loss='relative_mse',
    description='multigrid U-net (V-cycle of symmetric steps, 3 grids) as a blind denoiser, σ ∈ [0.04, 0.25]'))

register_recipe(Recipe(
    name='smoke-test', task='diffusion', architecture='diffusion_1d',
    model_kwargs=dict(layers=4, time=2.0, contrast=0.1, order=1, knots=8, support=10.0, cycles=2),
    seed=0, steps=4, batch_size=4, length=64, lr=3e-3, warmup=2, train_signals=8, checkpoint_every=2,
    kinds=('piecewise_constant', 'piecewise_smooth'), sigma_min=0.05, sigma_max=0.1,
    description='a tiny recipe for CI smoke runs of the trainer (checkpoints, resume, torchrun)'))


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {sorted(RECIPES)}")
    return RECIPES[name]
