"""Model cards and their figures for the bundled pretrained models.

:func:`write_card` renders ``<dest>/README.md`` plus :data:`FIGURES` (``examples.png``, ``flux.png``) from the
bundled ``pdeblocks/pretrained/<name>/eval.json`` (the output of ``pdeblocks train``, or for the general blind
denoiser ``model_cards/generate.py --install``, which adds the per-family ``families`` block) and the bundled
weights. The Hub metadata goes through :class:`huggingface_hub.ModelCardData`, with ``model-index`` results built
from that JSON, never typed by hand (:func:`card_data`). Three bodies:

* the general blind denoiser (an eval.json with ``families``, :func:`_general_body`): which bundled denoiser to
  use for what (:func:`_which_model`, from the numbers of every bundled denoiser's eval.json), per-family,
  classic-signal and other-noise tables;
* a specialist denoiser (:func:`_denoise_body`): the test-split tables against tuned TV and Perona–Malik, the
  project's target (:func:`target_status`) and a pointer to the general model (:func:`pointer_note`);
* a diffusion model (:func:`_diffusion_body`): errors against the fine reference and the FED cycles.

``model_cards/generate.py`` writes the checkout's copies in ``model_cards/<name>/``; :mod:`pdeblocks.publish`
puts a card into the folder it uploads. The bundled folder is ``pdeblocks.hub.BUNDLED_DIR``, read at call
time. The module runs to about 660 lines because most of them are the cards' prose; it holds that one idea.
"""
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import hub
from ._io import atomic_write_text, save_figure
from .classical import PM_CONTRASTS, PM_MAX_TIME, fed, fine_reference, make_flux
from .data.families import FAMILIES, MAX_FREQUENCY, NYQUIST, make_family_signals
from .data.signals import SignalSet, make_signals
from .hub import HUB_ORG, bundled_revisions, list_pretrained, load_folder
from .layers.flux import LearnedFlux

FIGURES = ('examples.png', 'flux.png')   # a card's pictures, next to its README.md


def _bundled(name: str) -> Path:
    """The bundled folder of ``name``: ``hub.BUNDLED_DIR / name``, looked up at call time."""
    return hub.BUNDLED_DIR / name


def read_eval(name: str) -> Dict[str, Any]:
    path = _bundled(name) / 'eval.json'
    if not path.is_file():
        raise ValueError(f"no evaluation for {name!r} at {path}; run `pdeblocks train {name}` and install it")
    return json.loads(path.read_text())


def flux_curves(model: torch.nn.Module, s_max: float, points: int = 400):
    """(s, [(label, Φ(s) [channels, points])]) for every learned flux module of ``model``."""
    s = torch.linspace(-s_max, s_max, points)
    curves = []
    for name, mod in model.named_modules():
        if isinstance(mod, LearnedFlux):
            c = mod.knot_logits.shape[0]
            with torch.no_grad():
                phi = mod(s.reshape(1, 1, -1).expand(1, c, -1))[0]
            curves.append((name.replace('.flux', ''), phi.numpy()))
    return s.numpy(), curves


def _plot_example(ax, model: torch.nn.Module, name: str, signals: SignalSet, lw: Tuple[float, float, float]) -> None:
    """One panel: the first of ``signals`` noisy (grey), clean (black) and denoised by ``model`` (red), with line
    widths ``lw``."""
    with torch.no_grad():
        den = model(torch.from_numpy(signals.noisy)[:, None])[0, 0].numpy()
    ax.plot(signals.noisy[0], color='0.7', lw=lw[0], label='noisy')
    ax.plot(signals.clean[0], 'k', lw=lw[1], label='clean')
    ax.plot(den, 'C3', lw=lw[2], label=name)


def make_figures(name: str, folder: Path) -> List[Path]:
    """Draw the card's :data:`FIGURES` of the bundled ``name`` into ``folder``; returns their paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    model = load_folder(_bundled(name))
    ev = read_eval(name)
    recipe = ev['recipe']
    folder.mkdir(parents=True, exist_ok=True)
    if 'families' in ev:
        _general_examples(name, model, ev, folder)
        _flux_grid(model, folder, per_row=8)
    elif recipe['task'] == 'denoise':
        fig, axes = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True)
        for ax, sigma in zip(axes, (0.05, 0.1, 0.2)):
            _plot_example(ax, model, name, make_signals('piecewise_constant', 'test', 1, 512, sigma, seed=0, offset=3),
                          lw=(0.7, 1.2, 1.0))
            ax.set_title(f'σ = {sigma}', fontsize=9)
            ax.legend(loc='upper right', fontsize=7)
        axes[-1].set_xlabel('sample')
        fig.tight_layout()
        save_figure(fig, folder / 'examples.png')
        _flux_grid(model, folder, per_row=None, panel=(2.2, 2.4), lw=0.8, fontsize=8, xlabel='s')
    else:
        kw = recipe['model_kwargs']
        flux = make_flux(recipe['flux'], kw['contrast'])
        s = make_signals('piecewise_smooth', 'test', 1, 512, 0.08, seed=0, offset=3)
        f = torch.from_numpy(s.noisy).double()[:, None]
        ref = fine_reference(f, flux, kw['time'])[0, 0].numpy()
        fd = fed(f, flux, kw['time'], kw['layers'])[0, 0].numpy()
        with torch.no_grad():
            um = model(f.float())[0, 0].numpy()
        fig, ax = plt.subplots(figsize=(10, 3.5))
        ax.plot(s.noisy[0], color='0.7', lw=0.7, label='input f')
        ax.plot(ref, 'k', lw=1.4, label=f'reference u(T = {kw["time"]:g})')
        ax.plot(fd, 'C0--', lw=1.0, label=f'FED cycle, {kw["layers"]} steps')
        ax.plot(um, 'C3', lw=1.0, label=f'{name} ({kw["layers"]} layers)')
        ax.legend(loc='upper right', fontsize=7)
        ax.set_xlabel('sample')
        fig.tight_layout()
        save_figure(fig, folder / 'examples.png')
        lam = kw['contrast']
        s_grid, curves = flux_curves(model, 12 * lam)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, phi in curves:
            ax.plot(s_grid, phi[0], lw=0.9, label=label)
        pm = s_grid / (1 + (s_grid / lam) ** 2)
        ax.plot(s_grid, pm, 'k--', lw=1.4, label=f'Perona–Malik, λ = {lam:g}')
        ax.set_xlabel('s = (Du)ᵢ')
        ax.set_ylabel('Φᵢ(s)')
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        save_figure(fig, folder / 'flux.png')
    return [folder / f for f in FIGURES]


EXAMPLE_SIGMA = 0.1   # the general card's examples: one test signal per family at this σ


def _general_examples(name: str, model: torch.nn.Module, ev: Dict[str, Any], folder: Path) -> None:
    """examples.png: one test signal (length 512) of each family of the evaluation at σ = EXAMPLE_SIGMA, and of the
    oscillations drawn up to Nyquist where the evaluation has them."""
    import matplotlib.pyplot as plt
    panels = [(fam, MAX_FREQUENCY) for fam in _family_order(ev['families'])]
    if 'oscillations' in ev['families'].get('nyquist', {}):
        panels.append(('oscillations', NYQUIST))
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(12, 2.4 * rows), squeeze=False)
    for ax, (fam, top) in zip(axes.flat, panels):
        _plot_example(ax, model, name, make_family_signals(fam, 'test', 1, 512, EXAMPLE_SIGMA, offset=3,
                                                           max_frequency=top), lw=(0.6, 1.1, 0.9))
        ax.set_title(f"{fam.replace('_', ' ')}{'' if top == MAX_FREQUENCY else ' up to Nyquist'}, σ = {EXAMPLE_SIGMA}",
                     fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    axes.flat[0].legend(loc='upper right', fontsize=7)
    fig.tight_layout()
    save_figure(fig, folder / 'examples.png')


def _flux_grid(model: torch.nn.Module, folder: Path, per_row: Optional[int], panel: Tuple[float, float] = (2.0, 2.1),
               lw: float = 0.7, fontsize: float = 7, xlabel: Optional[str] = None) -> None:
    """flux.png: Φ(s), s ∈ [−4, 4], of every flux module of ``model`` (its first 8 channels), one panel each,
    ``per_row`` panels a row (None: all in one row), each ``panel`` (width, height) inches, a shared y axis;
    ``xlabel`` under every panel, or without one smaller tick labels."""
    import matplotlib.pyplot as plt
    s_grid, curves = flux_curves(model, 4.0)
    per_row = per_row or len(curves)
    rows = -(-len(curves) // per_row)
    cols = min(per_row, len(curves))
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), sharey=True, squeeze=False)
    for ax, (label, phi) in zip(axes.flat, curves):
        for c in range(min(8, phi.shape[0])):
            ax.plot(s_grid, phi[c], lw=lw)
        ax.set_title(label, fontsize=fontsize)
        if xlabel:
            ax.set_xlabel(xlabel, fontsize=fontsize)
        else:
            ax.tick_params(labelsize=fontsize - 1)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis('off')
    axes[0, 0].set_ylabel('Φ(s) (8 channels)', fontsize=fontsize)
    fig.tight_layout()
    save_figure(fig, folder / 'flux.png')


def card_data(name: str, ev: Dict[str, Any]):
    """Hub metadata with model-index results taken from the evaluation JSON."""
    from huggingface_hub import EvalResult, ModelCardData
    e = ev['evaluation']
    results = []
    for fam, rows in ev.get('families', {}).get('table', {}).items():
        for sigma, row in rows.items():
            results.append(EvalResult(
                task_type='signal-denoising', task_name='1D signal denoising (blind)',
                dataset_type=f'pdeblocks/families-{fam.replace("_", "-")}-1d', dataset_name=f'{fam.replace("_", " ")} '
                f'signals (families), length {ev["families"]["length"]}, σ = {sigma}', dataset_config=f'sigma-{sigma}',
                dataset_split='test', metric_type='psnr', metric_name='PSNR (dB)', metric_value=round(row['model'], 2)))
    if e['task'] == 'denoise':
        for kind, rows in e['table'].items():
            for sigma, row in rows.items():
                results.append(EvalResult(
                    task_type='signal-denoising', task_name='1D signal denoising',
                    dataset_type=f'pdeblocks/{kind.replace("_", "-")}-1d', dataset_name=f'{kind.replace("_", " ")} '
                    f'signals, length {e["length"]}, σ = {sigma}', dataset_config=f'sigma-{sigma}',
                    dataset_split='test', metric_type='psnr', metric_name='PSNR (dB)',
                    metric_value=round(row['model'], 2)))
        tags = ['pdeblocks', 'denoising', '1d-signal'] + (['blind-denoising'] if 'families' in ev else []) + [
            'symmetric-resnet', 'nonlinear-diffusion', 'pytorch']
    else:
        results.append(EvalResult(
            task_type='pde-solution', task_name='Perona–Malik diffusion to fixed time',
            dataset_type='pdeblocks/piecewise-1d', dataset_name=f'noisy piecewise signals, length {e["length"]}',
            dataset_split='test', metric_type='relative_l2_error', metric_name='relative L2 error vs fine reference',
            metric_value=round(e['errors']['model']['mean'], 5)))
        tags = ['pdeblocks', 'nonlinear-diffusion', 'perona-malik', 'fed', '1d-signal', 'pytorch']
    return ModelCardData(library_name='pdeblocks', license='apache-2.0', tags=tags, model_name=name,
                         eval_results=results)


LIMIT_NAMES = {'bayes': 'Bayes limit', 'oracle': 'oracle'}
LOSS_NAMES = {'mse': 'mean squared error', 'relative_mse': '‖net(f) − u‖² / ‖f − u‖² per signal (residual noise '
              'energy relative to the input noise, so every σ counts alike)',
              'log_relative_mse': 'log(‖net(f) − u‖² / ‖f − u‖²) per signal (−ln 10/10 × the PSNR gain in dB, so a dB '
              'gained on an easy signal counts as much as one on a hard signal)'}
DENOISER_INTROS = {
    'denoiser_1d': "A symmetric residual network for denoising 1D signals: every residual step is an explicit "
                   "step u ↦ u − τKᵀΦ(Ku) of a learned nonlinear diffusion (Alt et al., JMIV 2022), with one "
                   "weight shared by K and Kᵀ (half the parameters of a standard residual block) and learned "
                   "nonmonotone flux functions Φ with 0 ≤ Φ(s)/s ≤ 1. Each step is Euclidean-stable "
                   "(‖step(u)‖ ≤ ‖u‖, τ ≤ 2/‖K‖² with a rigorous bound on ‖K‖).\n",
    'multigrid_denoiser_1d': "A multigrid U-net for denoising 1D signals (Alt et al., JMIV 2022: multigrid cycles "
                             "are U-nets): f ↦ f − U(f), U a V-cycle whose smoothers are symmetric steps "
                             "u ↦ u − τKᵀΦ(Ku) with learned nonmonotone fluxes (0 ≤ Φ(s)/s ≤ 1), learned "
                             "restriction (stride-2 convolution) and its adjoint as prolongation, and coarse-grid "
                             "corrections; widths double per grid. Each smoothing step is Euclidean-stable "
                             "(‖step(u)‖ ≤ ‖u‖, τ ≤ 2/‖K‖² with a rigorous bound on ‖K‖); the grid transfers are "
                             "not covered.\n",
}
MIN_LENGTH_RULES = {'denoiser_1d': 'scale × kernel size', 'multigrid_denoiser_1d': 'the coarsest grid must still fit '
                    'the kernel'}


TARGET_GAIN_DB = 4.5   # the project's target for the piecewise-constant denoiser: dB above tuned TV at σ = 0.1


UNREACHABLE_TARGET = ": no denoiser can be expected to meet the target on this data"   # the card's verdict


def target_status(row: Dict[str, Any], steps: int) -> str:
    """The card's line on the piecewise-constant denoiser's target, from one σ = 0.1 row of the evaluation."""
    gain = row['model'] - row['tv']
    head = (f"**Status against the project's target for the piecewise-constant denoiser** (≥ {TARGET_GAIN_DB} dB "
            f"above tuned TV at σ = 0.1 on piecewise-constant signals): {gain:+.2f} dB")
    if gain >= TARGET_GAIN_DB:
        return head + " — met.\n"
    text = (head + f" — **not met** by these weights ({steps} steps on a shared CPU); the oracle is "
            f"{row['oracle'] - row['model']:.2f} dB above the model.")
    if 'bayes' not in row:
        return (text + " The Bayes limit of this task (the least expected MSE of any denoiser, "
                f"`benchmarks/bench_denoise.py`) is itself less than {TARGET_GAIN_DB} dB above TV{UNREACHABLE_TARGET}.\n")
    limit = row['bayes'] - row['tv']
    return (text + f" The Bayes limit, the least expected MSE of any denoiser on these signals, is "
            f"{row['bayes'] - row['model']:.2f} dB above the model and {limit:+.2f} dB above TV"
            + (UNREACHABLE_TARGET if limit < TARGET_GAIN_DB else "") + ".\n")


def pm_grid_edges(evaluation: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(kind, σ) of every table row whose tuned Perona–Malik λ is the lowest of :data:`PM_CONTRASTS`."""
    return [(kind, s) for kind, rows in evaluation['table'].items() for s, row in rows.items()
            if row.get('tuned', {}).get('pm_contrast', np.inf) <= min(PM_CONTRASTS) * (1 + 1e-9)]


def _evaluation_tables(name: str, e: Dict[str, Any]) -> List[str]:
    """Markdown tables of an ``evaluate_denoiser`` evaluation: per kind, PSNR per σ of noisy, tuned TV and
    Perona–Malik, the model and the limits (Bayes, oracle) where present."""
    lines = []
    for kind, rows in e['table'].items():
        lines.append(f"\n**{kind.replace('_', ' ')}**, {e['count']} signals of length {e['length']}:\n")
        limits = [k for k in ('bayes', 'oracle') if k in next(iter(rows.values()))]
        lines.append('| ' + ' | '.join(['σ', 'noisy', 'TV (tuned)', 'Perona–Malik (tuned)', name]
                                        + [LIMIT_NAMES[k] for k in limits]) + ' |\n' + '|---' * (5 + len(limits)) + '|')
        for sigma, row in rows.items():
            lines.append('| ' + ' | '.join([sigma] + [f"{row[k]:.2f}" for k in ('noisy', 'tv', 'perona_malik')]
                                           + [f"**{row['model']:.2f}**"] + [f"{row[k]:.2f}" for k in limits]) + ' |')
    return lines


def general_model() -> Optional[str]:
    """The bundled general blind denoiser (the one evaluated per family), or None."""
    for name in list_pretrained():
        path = _bundled(name) / 'eval.json'
        if path.is_file() and 'families' in json.loads(path.read_text()):
            return name
    return None


def revision_of(name: str) -> Optional[Tuple[str, str]]:
    """(repo id, tag) when the bundled ``name`` is an earlier revision of another bundled model's Hub repo."""
    for other in list_pretrained():
        table = bundled_revisions(other)
        for tag, target in (table['revisions'].items() if table else ()):
            if target == name and other != name:
                return table['repo_id'], tag
    return None


def _revision_rank() -> Dict[str, int]:
    """Bundled name → its position in the revisions map of a Hub repo (v1 first), for the models that have one."""
    for other in list_pretrained():
        table = bundled_revisions(other)
        if table:
            return {target: i for i, target in enumerate(table['revisions'].values())}
    return {}


def pointer_note(name: str) -> str:
    """The line of a specialist's card that points to the general model (empty for the general model itself)."""
    general = general_model()
    if general is None or general == name:
        return ''
    old = revision_of(name)
    head = (f"**This is revision `{old[1]}` of `{old[0]}`**, kept under its own name: "
            f"`from_pretrained('{old[0]}', revision='{old[1]}')` gives it too. " if old else '')
    return (head + f"For signals of other kinds, of unknown noise level or in other units, use the general blind "
            f"denoiser [`{general}`](https://huggingface.co/{HUB_ORG}/{general}); its card's table *Which model to "
            f"use* compares them.\n")


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _which_model(name: str, ev: Dict[str, Any]) -> List[str]:
    """The general card's 'Which model to use' table and advice, from the bundled denoisers' evaluations."""
    fam = ev['families']
    sigmas = list(next(iter(fam['table'].values())))
    others = list(next(iter(next(iter(fam['table'].values())).values()))['others'])
    evals = dict({other: read_eval(other) for other in others}, **{name: ev})
    todays = {m: e['evaluation']['table']['piecewise_constant'] for m, e in evals.items()}
    recipes = {m: e['recipe'] for m, e in evals.items()}

    def fam_mean(model: str, sigma: str) -> float:
        return float(np.mean([rows[sigma]['model'] if model == name else rows[sigma]['others'][model]
                              for rows in fam['table'].values()]))
    pc = todays[name]['0.1']
    lines = ["## Which model to use\n",
             f"Mean PSNR (dB) over the {len(fam['table'])} signal families (test split, {fam['count']} signals each, "
             f"length {fam['length']}) and on the piecewise-constant test signals of the specialists' training "
             f"generator (mean segment 64, {ev['evaluation']['count']} signals, σ = 0.1):\n",
             '| model | input | ' + ' | '.join(f'families, σ = {s}' for s in sigmas)
             + ' | piecewise constant, σ = 0.1 |\n' + '|---' * (3 + len(sigmas)) + '|']
    def blind(model: str) -> bool:
        return recipes[model].get('architecture') == 'blind_denoiser_1d'
    for model in [name] + others:
        what = ('any units, any noise level (blind)' if blind(model) else
                f"[0, 1] scale, σ ∈ [{recipes[model]['sigma_min']}, {recipes[model]['sigma_max']}]")
        label = f'**{model}**' if model == name else f'`{model}`'
        lines.append(f'| {label} | {what} | ' + ' | '.join(_fmt(fam_mean(model, s)) for s in sigmas)
                     + f" | {_fmt(todays[model]['0.1']['model'])} |")
    peer = max(('tv', 'perona_malik'), key=lambda k: pc[k])
    lines.append(f"| tuned {PEER_NAMES[peer]} (reference) | tuned per σ on clean data | "
                 + ' | '.join(_fmt(float(np.mean([rows[s][peer] for rows in fam['table'].values()]))) for s in sigmas)
                 + f" | {_fmt(pc[peer])} |")
    lines.append('')
    lines.append(f"* **{name}**: signals of any kind (the families above: piecewise constant or smooth, peaks, "
                 "oscillations, smooth trends and their sums), in any units (D(a·f + b) = a·D(f) + b for a > 0), "
                 "with white noise of unknown level: it estimates σ itself.")
    rank = _revision_rank()

    def classic_mean(e: Dict[str, Any]) -> Optional[float]:
        rows = e.get('families', {}).get('classics', {})
        return float(np.mean([r['model'] for by in rows.values() for r in by.values()])) if rows else None
    for other in others:
        gain = todays[other]['0.1']['model'] - pc['model']
        loss = fam_mean(name, sigmas[-1]) - fam_mean(other, sigmas[-1])
        # earlier or later: by the revisions map where both are in it, else by the figures
        ranked = other in rank and name in rank
        earlier = rank[other] < rank[name] if ranked else (gain <= 0 and loss >= 0)
        later = rank[other] > rank[name] if ranked else (gain > 0 and loss < 0)
        mine, theirs = classic_mean(ev), classic_mean(evals[other])
        classic, classic_other = (('', '') if mine is None or theirs is None else
                                  (f" and {_signed(d)} dB on the classic test signals (mean over the signals and σ)"
                                   for d in (mine - theirs, theirs - mine)))
        if blind(other) and earlier:
            lines.append(f"* `{other}`: an earlier general blind model, kept for reproducibility; {name} − it: "
                         f"{_signed(loss)} dB averaged over the families at σ = {sigmas[-1]}, {_signed(-gain)} dB on "
                         f"piecewise-constant signals at σ = 0.1{classic}.")
        elif blind(other):
            lines.append(f"* `{other}`: {'a later' if later else 'another'} general blind model, it − {name}: "
                         f"{_signed(-loss)} dB averaged over the families at σ = {sigmas[-1]}, {_signed(gain)} dB on "
                         f"piecewise-constant signals at σ = 0.1{classic_other}{'; use it instead' if later else ''}.")
        elif gain > 0:
            lines.append(f"* `{other}`: piecewise-constant signals already on the [0, 1] scale with σ in "
                         f"[{recipes[other]['sigma_min']}, {recipes[other]['sigma_max']}]: {gain:+.2f} dB over "
                         f"{name} there at σ = 0.1, but {loss:.2f} dB below it averaged over the families at "
                         f"σ = {sigmas[-1]}, and not scale-free.")
        else:
            lines.append(f"* `{other}`: kept for reproducibility; {name} is at least as good on its own data "
                         f"({-gain:.2f} dB ahead of it on piecewise-constant signals at σ = 0.1).")
    best = max(todays[m]['0.1']['model'] for m in todays)
    if pc[peer] > best:
        lines.append(f"* On piecewise-constant signals a tuned {PEER_NAMES[peer]} ({_fmt(pc[peer])} dB at σ = 0.1, "
                     f"its parameter chosen on clean validation signals of that σ) is still ahead of every model "
                     f"here (best {_fmt(best)} dB).")
    return lines + ['']


def _signed(x: float) -> str:
    """x in dB with its sign and two decimals; what rounds to zero is +0.00 (never −0.00)."""
    return f"{x if round(x, 2) != 0 else 0.0:+.2f}"


PEER_NAMES = {'tv': 'TV', 'perona_malik': 'Perona–Malik', 'bayes_shrink': 'wavelet BayesShrink'}


def _family_order(fam: Dict[str, Any]) -> List[str]:
    """The evaluated families in the order of :data:`~pdeblocks.data.families.FAMILIES` (others after them)."""
    return sorted(fam['table'], key=lambda f: (FAMILIES.index(f) if f in FAMILIES else len(FAMILIES), f))


def _family_tables(name: str, fam: Dict[str, Any]) -> List[str]:
    """Per σ: PSNR per family of the noisy input, the tuned peers and the model, its margin and edges."""
    peers = fam['peers']
    sigmas = list(next(iter(fam['table'].values())))
    lines = []
    for sigma in sigmas:
        lines += [f"\n**σ = {sigma}**:\n",
                  '| family | noisy | ' + ' | '.join(PEER_NAMES[p] + ' (tuned)' for p in peers)
                  + f' | {name} | − best peer | first / last {fam["edge"]} samples |\n' + '|---' * (5 + len(peers)) + '|']
        margins = []
        for f in _family_order(fam):
            r = fam['table'][f][sigma]
            margins.append((r['model'] - r['best_peer'], f))
            lines.append(f"| {f.replace('_', ' ')} | {_fmt(r['noisy'])} | " + ' | '.join(_fmt(r[p]) for p in peers)
                         + f" | **{_fmt(r['model'])}** | {r['model'] - r['best_peer']:+.2f} | "
                           f"{_fmt(r['model_first32'])} / {_fmt(r['model_last32'])} |")
        mean = {k: float(np.mean([rows[sigma][k] for rows in fam['table'].values()])) for k in ['noisy', 'model'] + peers}
        lines.append(f"| **mean** | {_fmt(mean['noisy'])} | " + ' | '.join(_fmt(mean[p]) for p in peers)
                     + f" | **{_fmt(mean['model'])}** | **{np.mean([m for m, _ in margins]):+.2f}** | |")
        below = [f"{f.replace('_', ' ')} ({m:+.2f} dB)" for m, f in margins if m < 0]
        lines.append(f"\nAhead of the best tuned peer in {len(margins) - len(below)} of {len(margins)} families"
                     + (f"; behind in {', '.join(below)}." if below else '.'))
    return lines


def _classic_table(name: str, fam: Dict[str, Any]) -> List[str]:
    if not fam.get('classics'):
        return []
    peers = fam['peers']
    lines = [f"\n**Classic test signals** (Donoho–Johnstone's Blocks, Bumps, Doppler, HeaviSine, a quadratic chirp "
             f"and a real ECG recording, each scaled to [0, 1], length {fam['length']}, {fam['draws']} noise draws; "
             f"the peers tuned on other draws of the same signal, an oracle advantage):\n"]
    sigmas = list(next(iter(fam['classics'].values())))
    lines.append('| signal | σ | noisy | ' + ' | '.join(PEER_NAMES[p] for p in peers) + f' | {name} | − best peer |\n'
                 + '|---' * (5 + len(peers)) + '|')
    worse = []
    for sigma in sigmas:
        for sig, rows in fam['classics'].items():
            r = rows[sigma]
            lines.append(f"| {sig} | {sigma} | {_fmt(r['noisy'])} | " + ' | '.join(_fmt(r[p]) for p in peers)
                         + f" | **{_fmt(r['model'])}** | {r['model'] - r['best_peer']:+.2f} |")
            if r['model'] < r['noisy']:
                worse.append(f"{sig} at σ = {sigma}")
    if worse:
        lines.append(f"\nBelow the noisy input on {', '.join(worse)}: frequencies beyond the training families' "
                     "are smoothed away. Do not use it on such signals.")
    return lines


def _nyquist_table(name: str, fam: Dict[str, Any]) -> List[str]:
    """The oscillating families drawn up to Nyquist (``families.nyquist``, where the benchmark has them)."""
    rows = fam.get('nyquist')
    if not rows:
        return []
    peers = fam['peers']
    lines = [f"\n**Oscillations up to Nyquist** (the families with oscillations drawn up to {NYQUIST} cycles per sample; "
             f"the families above stop at {MAX_FREQUENCY}; peers tuned likewise; for information):\n",
             '| family | σ | noisy | ' + ' | '.join(PEER_NAMES[p] for p in peers) + f' | {name} | − best peer |\n'
             + '|---' * (5 + len(peers)) + '|']
    for key, by_sigma in rows.items():
        for sigma, r in by_sigma.items():
            lines.append(f"| {key.replace('_', ' ')} | {sigma} | {_fmt(r['noisy'])} | "
                         + ' | '.join(_fmt(r[p]) for p in peers)
                         + f" | **{_fmt(r['model'])}** | {r['model'] - r['best_peer']:+.2f} |")
    return lines


def _other_noise_table(name: str, fam: Dict[str, Any]) -> List[str]:
    first = next(iter(next(iter(fam['table'].values())).values()))
    noises = list(first.get('other_noise', {}))
    if not noises:
        return []
    names = {'laplace': 'Laplacian', 'ar1': 'AR(1), ρ = 0.5'}
    lines = ["\n**Other noise, for information** (same test signals and σ; the peers keep their Gaussian tuning). "
             "Mean PSNR over the families:\n",
             '| noise | σ | noisy | best tuned peer (per family) | ' + name + ' |\n|---|---|---|---|---|']
    for noise in noises:
        for sigma in next(iter(fam['table'].values())):
            rows = [r[sigma]['other_noise'][noise] for r in fam['table'].values()]
            lines.append(f"| {names.get(noise, noise)} | {sigma} | {_fmt(np.mean([r['noisy'] for r in rows]))} | "
                         f"{_fmt(np.mean([max(r[p] for p in fam['peers']) for r in rows]))} | "
                         f"{_fmt(np.mean([r['model'] for r in rows]))} |")
    return lines


def _denoiser_pictures(examples_caption: str, flux_caption: str) -> List[str]:
    """A denoiser card's closing section: examples.png and flux.png under their captions, and why no pipeline tag."""
    return ["## Pictures\n", examples_caption, "![examples](examples.png)\n", flux_caption, "![flux](flux.png)\n",
            "No Hub pipeline tag fits 1D signal denoising, so none is set.\n"]


def _general_body(name: str, ev: Dict[str, Any]) -> str:
    """The card of the general blind denoiser (an eval.json with a ``families`` block)."""
    e, r, fam = ev['evaluation'], ev['recipe'], ev['families']
    model = load_folder(_bundled(name))
    cfg = model.config()
    table = bundled_revisions(name)
    retracted = cfg.get('stability') == 'retracted'
    certified = ("certified by retraction: a free τ, and each step's output y scaled to y·min(1, ‖u‖/‖y‖) per signal, "
                 "so ‖step(u)‖ ≤ ‖u‖ for every input" if retracted else
                 "τ ≤ 2/(L‖K‖²) with a rigorous bound on ‖K‖, so ‖step(u)‖ ≤ ‖u‖")
    scheme = (f"{cfg['blocks']} explicit {'' if retracted else 'certified '}symmetric steps u ↦ u − τKᵀΦ(Ku) "
              f"({certified}) with learned nonmonotone fluxes{' and a bias' if retracted else ''}, between a "
              f"pixel-unshuffle by {cfg['scale']} and its inverse" if cfg['scheme'] == 'explicit' else
              f"the certified '{cfg['scheme']}' scheme of `pdeblocks.models.blind` ({cfg['blocks']} blocks)")
    if cfg.get('refine_cycles'):
        scheme += (f", then {cfg['refine_cycles']} FED cycles of {cfg['refine_steps']} edge-preserving diffusion "
                   f"steps on the samples themselves")
    if cfg.get('tail_steps'):
        scheme += (f", then an implicit tail on the samples: {cfg['tail_steps']} exact tridiagonal solves of "
                   "(I + τDᵀg(Du)D)u⁺ = u, g ∈ [0, 1] (‖u⁺‖ ≤ ‖u‖ and min u ≤ u⁺ ≤ max u for every τ ≥ 0; τ per signal "
                   "from a gate)")
    if cfg.get('irls_steps'):
        scheme += (f", and a variational tail: {cfg['irls_steps']} exact IRLS solves of (I + τDᵀω(Dw/λ)D)w⁺ = r "
                   "for a log-type penalty, ω ∈ (0, 1], r = (1 − β)v + βu⁰ the convex mixture of the network's output v "
                   "and its input u⁰ (τ, λ, β per signal from a gate; certified for every τ ≥ 0), blended with v by a "
                   "selector from a residual test")
    if cfg.get('segment_select'):
        h = cfg['segment_hazard']
        hazard = f"1/{round(1 / h)}" if abs(1 / h - round(1 / h)) < 1e-9 else f"{h:g}"
        scheme += (", then a Bayesian segmentation tail: w = E[s | u⁰], the posterior mean of a piecewise-constant s "
                   f"given the input (boundaries a Bernoulli({hazard}) process, segments of at most "
                   f"{cfg['segment_max_length']} samples, levels flat over the input's range; a sum over all "
                   "segmentations, so w is a convex combination of the input's segment means), blended with the output "
                   "so far by a selector that reads the IRLS selector's evidence")
    if cfg.get('residual_threshold'):
        scheme += (", and last a residual tail: what the network took for noise but stands "
                   f"{cfg['residual_threshold']:g} times above the noise floor in some short-time Fourier coefficient of "
                   f"the residual u⁰ − v (a Parseval frame of {cfg['residual_frame']}-sample windows over the signal's "
                   "own samples) is put back by a power-subtraction gain in [0, 1], so ‖f − v‖ ≤ ‖u⁰ − v‖ (no "
                   "parameter)")
    sigma_hat = ("the noise estimate 1.4826·median|h∗f − median(h∗f)|, h = (1, −3, 3, −1)/√20"
                 if not cfg.get('spectral_noise') else
                 "the noise estimate min(σ̂_D, σ̂_S): σ̂_D = 1.4826·median|h∗f − median(h∗f)|, h = (1, −3, 3, −1)/√20, "
                 "and σ̂_S = (median|X|²/ln 2)^½ over the short-time Fourier coefficients X of f − c (Hann windows of 64 "
                 "samples), which tones near Nyquist do not inflate as they inflate σ̂_D")
    bench = fam['benchmark_model']
    source = (f"Peers from `{fam['source']}` (`benchmarks/bench_denoise_general.py` in the project's repository"
              + (", run on these weights" if bench['same_weights'] else
                 f"; its own model column is of other weights ({bench['folder']}), so the column here was computed "
                 f"for these weights on the same signals") + ").")
    lines = [f"# {name}\n",
             "A general-purpose **blind** denoiser for 1D signals: any kind of signal, any units, noise level "
             "unknown. For a signal f it computes D(f) = c + σ̂·N((f − c)/σ̂), with c the median of f and σ̂ "
             f"{sigma_hat}, so D(a·f + b) = a·D(f) + b "
             f"for a > 0 (a trace in millivolts or in counts works unchanged). N is {scheme}; it sees the "
             f"normalised signal with {cfg['pad']} reflected samples on each side.\n",
             f"Parameters: {e['parameters']:,}. Input `[batch, 1, length]` float, output the same shape; minimum "
             f"length {model.min_length} samples.\n",
             "## How to load\n",
             "```python\nimport pdeblocks\nmodel = pdeblocks.from_pretrained('" + name + "')  # bundled; or "
             f"'{HUB_ORG}/{name}' from the Hub\ndenoised = model(noisy)  # noisy: [batch, 1, length]\n\n"
             "from pdeblocks.models.blind import denoise_signal\nresult = denoise_signal(trace)  # a 1-D array in its "
             "own units\nresult.denoised, result.noise_sigma  # the signal and σ̂ in the same units\n"
             "denoise_signal(trace, sigma=0.02)  # a known noise level, in the same units, instead of σ̂\n```\n",
             "or `pdeblocks denoise noisy.csv clean.csv` on the command line (this model is the default; it prints "
             "σ̂ per signal).\n"]
    if table:
        older = [(tag, target) for tag, target in sorted(table['revisions'].items()) if target != name]
        lines.append(f"This is revision `{table['current']}` of `{table['repo_id']}`. "
                     + ' '.join(f"`from_pretrained('{table['repo_id']}', revision='{tag}')` gives the earlier "
                                f"`{target}` (also bundled under that name)." for tag, target in older) + '\n')
    lines += _which_model(name, ev)
    lines += [f"## Results per signal family (test split, mean PSNR in dB, {fam['count']} signals of length "
              f"{fam['length']} per family and σ)\n",
              "TV, Perona–Malik and wavelet BayesShrink (scikit-image, soft thresholds, σ from the finest wavelet "
              "scale, the wavelet chosen among db1, db2, sym4, sym8) are tuned on validation signals of the same "
              "family and σ: an advantage the blind model does not have. " + source]
    lines += _family_tables(name, fam)
    lines += _classic_table(name, fam)
    lines += _nyquist_table(name, fam)
    lines += _other_noise_table(name, fam)
    lines += [f"\n**The specialists' piecewise-constant and piecewise-smooth test signals** (the table of every "
              f"bundled denoiser's card; baselines from the bundled `{e.get('baselines_from', '')}` evaluation):\n"]
    lines += _evaluation_tables(name, e)
    if r['steps'] == 0:
        training = (f"Recipe `{r['name']}` (`pdeblocks train {r['name']}`): no training step of its own. The weights are "
                    f"those of the run `{ev['fine_tuned_from']['source']}`, under a configuration that differs from "
                    "that run's only in settings without parameters (`config.json`); `pdeblocks/train/general.py` names "
                    "the run's own recipe and what was tried on the way.\n")
    else:
        training = (
            f"Recipe `{r['name']}` (`pdeblocks train {r['name']}`, seed {r['seed']}): "
            f"{r['steps']} Adam steps, batch {r['batch_size']}, crops of {r['length']} samples, learning rate "
            f"{r['lr']} (cosine), loss {LOSS_NAMES[r.get('loss', 'mse')]}. Every step draws fresh seeded signals "
            f"from the train split of the families {', '.join(k.replace('_', ' ') for k in r['kinds'])} (family "
            f"uniform per signal, each scaled to [0, 1]) with white Gaussian noise, σ log-uniform in "
            f"[{r['sigma_min']}, {r['sigma_max']}]. Training took {ev['train_seconds'] / 60:.0f} min on "
            f"{ev.get('threads', 1)} CPU thread(s)"
            + (f", fine-tuning the run `{ev['fine_tuned_from']['source']}` (each recipe of the chain names its "
               "source in `start_from`, `pdeblocks/train/general.py`; the chain starts from revision v2's weights)"
               if ev.get('fine_tuned_from') else '')
            + ". Data, initialisation and schedule are seeded: the same code, torch version and thread count "
            "repeat the run bit for bit; later versions of the library's kernels and other thread counts change the "
            "floating-point summation, so the weights and the metrics move slightly (`benchmarks/bench_retrain.py` "
            "in the project's repository retrains a recipe, with the chain of runs it fine-tunes, and reports by "
            "how much).\n")
    lines += ["\n## Training data and recipe\n", training,
              "## Intended use and limits\n",
              "Denoising measured 1D traces with additive white noise, at any offset and scale, any length from the "
              "minimum (the tables give the PSNR of the first and last samples apart). The σ̂ estimate assumes white "
              "Gaussian noise: heavy-tailed noise is under-estimated a little and coloured noise more (see the "
              "Laplacian and AR(1) rows). Where the noise's standard deviation is known (a blank run, a detector's "
              "specification), give it: `denoise_signal(trace, sigma=…)`, `model.predict(x, sigma=…)` or "
              "`pdeblocks denoise --sigma …` use it instead of σ̂. For AR(1) noise of known lag-one correlation ρ "
              "(a blank run's), `correlation=ρ` (`--correlation`) whitens the trace, denoises it and colours it back. "
              "Constant or noise-free signals (σ̂ = 0) are returned unchanged. The stability certificate covers each symmetric step of N and the tails "
              "(`pdeblocks.certify`); the normalisation is exact affine arithmetic, the lifting and projection "
              "layers are not covered.\n"]
    lines += _denoiser_pictures(f"Clean / noisy / denoised test signals of each family (σ = {EXAMPLE_SIGMA})"
                                + (", and of the oscillations drawn up to Nyquist" if fam.get('nyquist') else '') + ":\n",
                                "Learned flux functions Φ(s) of each symmetric step (8 channels each):\n")
    return '\n'.join(lines)


def _denoise_body(name: str, ev: Dict[str, Any]) -> str:
    e, r = ev['evaluation'], ev['recipe']
    arch = r['architecture']
    min_length = load_folder(_bundled(name)).min_length
    lines = [f"# {name}\n", DENOISER_INTROS.get(arch, ''), pointer_note(name),
             f"Parameters: {e['parameters']:,}. Input `[batch, 1, length]` float, output the same shape; "
             f"minimum length {min_length} samples ({MIN_LENGTH_RULES.get(arch, '')}).\n",
             "## How to load\n",
             "```python\nimport pdeblocks, torch\nmodel = pdeblocks.from_pretrained('" + name + "')  # bundled; or "
             f"'pdeblocks/{name}' from the Hub\n"
             "denoised = model(noisy)  # noisy: [batch, 1, length]\n```\n",
             f"or `pdeblocks denoise noisy.csv clean.csv --model {name}` on the command line.\n",
             "## Results (test split, mean PSNR in dB, from `eval.json`)\n"]
    lines += _evaluation_tables(name, e)
    cmp_ = ev.get('comparison')
    if cmp_:
        lines.append(f"\n**Symmetric vs standard ResNet** (Alt et al.: the symmetric form does as well with half the "
                     f"parameters). Same skeleton, recipe and seed; standard blocks u + W₂Φ(W₁u + b) with two "
                     f"independent convolutions: {cmp_['standard_parameters']:,} parameters vs "
                     f"{cmp_['symmetric_parameters']:,} (exactly twice the convolution weights per block). "
                     f"Piecewise constant, test split:\n")
        lines.append('| σ | standard ResNet (2× block weights) | ' + name + ' | difference |\n|---|---|---|---|')
        for sigma, row in e['table']['piecewise_constant'].items():
            st = cmp_['standard_table']['piecewise_constant'][sigma]
            lines.append(f"| {sigma} | {st:.2f} | {row['model']:.2f} | {row['model'] - st:+.2f} |")
        verdict = ('confirmed' if cmp_['symmetric_psnr'] >= cmp_['standard_psnr'] - 0.1 else 'not confirmed')
        lines.append(f"\nAt this training budget the claim is **{verdict}** (σ = 0.1: "
                     f"{cmp_['symmetric_psnr'] - cmp_['standard_psnr']:+.2f} dB for the symmetric network).\n")
    row = e['table']['piecewise_constant'].get('0.1')
    if row:
        lines.append('\n' + target_status(row, r['steps']))   # a blank line ends the table above
    at_edge = [f"{kind.replace('_', ' ')} signals at σ = {s}" for kind, s in pm_grid_edges(e)]
    edge_note = (f" For {'; '.join(at_edge)} the best λ is the grid's lowest, so Perona–Malik could be marginally "
                 f"stronger there with a smaller λ and a longer run." if at_edge else '')
    lines += ["\nTV: min ½‖u − f‖² + w‖Du‖₁ solved to a duality gap ≤ 1e-7 per sample, w tuned per σ on "
              f"the validation split. Perona–Malik: explicit (τ = 1/4), λ on a log grid of {len(PM_CONTRASTS)} values "
              f"{min(PM_CONTRASTS):g}–{max(PM_CONTRASTS):g}, each λ's path followed to its PSNR peak (T ≤ "
              f"{PM_MAX_TIME:g}), tuned per σ on the validation split.{edge_note} Bayes limit: the posterior mean E[u | f] "
              "under the generator's own prior (`pdeblocks.data.bayes_segment_means`); no denoiser has a lower expected "
              "MSE. Oracle: knows the jump positions and returns the noisy segment means.\n",
              "## Training data and recipe\n",
              f"Recipe `{r['name']}` (`pdeblocks train {r['name']}`, seed {r['seed']}): {r['steps']} Adam steps, "
              f"batch {r['batch_size']}, crops of {r['length']} samples, learning rate {r['lr']} (cosine), "
              f"loss {LOSS_NAMES[r.get('loss', 'mse')]}, "
              f"fresh seeded piecewise-constant signals from the train split every step, values in [0, 1], "
              f"Gaussian noise σ log-uniform in [{r['sigma_min']}, {r['sigma_max']}] (a blind denoiser). "
              f"Training took {ev['train_seconds'] / 60:.1f} min on a shared CPU. Data, initialisation and schedule are "
              "seeded, so rerunning the recipe with the same torch version and thread count repeats the run (the test "
              "suite checks that resuming from a checkpoint gives bitwise the uninterrupted weights); across machines "
              "and thread counts the floating-point summation order differs, so the weights differ and the metrics "
              "move: `benchmarks/bench_retrain.py` in the project's repository retrains with another thread count "
              "and reports by how much.\n",
              "## Intended use and limits\n",
              "Denoising 1D signals with jumps (piecewise constant or nearly so) on the [0, 1] scale with additive "
              "white Gaussian noise of σ ≈ 0.04–0.25. Not trained on other scales (rescale your data to "
              "[0, 1]), other noise models, or smooth oscillatory signals: on piecewise-smooth signals it is "
              "evaluated above but was not trained for them. The stability guarantee covers each symmetric "
              "step, not the other layers (lifting, projection, grid transfers).\n"]
    lines += _denoiser_pictures("Clean / noisy / denoised test signals:\n",
                                "Learned flux functions Φ(s) of each symmetric step (8 of the hidden channels):\n")
    return '\n'.join(lines)


def _diffusion_body(name: str, ev: Dict[str, Any]) -> str:
    e, r = ev['evaluation'], ev['recipe']
    err = e['errors']
    lines = [f"# {name}\n",
             f"A {e['layers']}-layer network of explicit steps u ↦ u − τᵢDᵀΦᵢ(Du) (D the forward difference, "
             "Neumann boundaries) that reproduces Perona–Malik diffusion ∂ₜu = −Dᵀ(Du/(1 + (Du)²/λ²)) with "
             f"λ = {e['contrast']} to the stopping time T = {e['time']:g}. Each layer has its own learned flux "
             "Φᵢ and step τᵢ, initialised with the Perona–Malik flux and the FED step sizes of "
             f"{e.get('cycles', 1)} cycle(s) of {e['layers'] // e.get('cycles', 1)} steps (τ_max ≤ 1/2 per cycle).\n",
             f"Parameters: {e['parameters']}. Input `[batch, 1, length]`, length ≥ 2.\n",
             "**Stability, honestly.** FED steps are far beyond the explicit limit τ ≤ 1/2, so the layers "
             "are free steps (`stability='none'`) and carry no per-step certificate; a FED cycle is provably "
             "stable only for a frozen linear operator. On the test split the output leaves the input's "
             f"[min, max] range for {100 * e['max_min_violation_fraction']:.0f} % of the signals "
             "(a max–min principle is observed there, not guaranteed).\n",
             "## How to load\n",
             "```python\nimport pdeblocks\nmodel = pdeblocks.from_pretrained('" + name + "')\n"
             "u_T = model(f)  # f: [batch, 1, length]\n```\n",
             f"or `pdeblocks diffuse in.csv out.csv --time {e['time']:g}`.\n",
             f"## Results (test split, {e['count']} signals of length {e['length']}, relative L2 error "
             "against the fine reference, from `eval.json`)\n",
             "| method (same number of operator applications) | mean | max |\n|---|---|---|"]
    c = e.get('cycles', 1)
    names = {'model': f'**{name}**', 'fed_cycle': f'one FED cycle of {e["layers"]} steps (diffusivity frozen per cycle)',
             'fed_cycle_nonlagged': f'one FED cycle of {e["layers"]} steps (flux re-evaluated every step)',
             'fed_model_init': f'{c} FED cycles of {e["layers"] // c} steps, flux re-evaluated (the initialisation)',
             'fed_model_init_lagged': f'{c} FED cycles of {e["layers"] // c} steps, diffusivity frozen per cycle',
             'explicit_same_steps': f'explicit, τ = T/{e["layers"]} = {e["time"] / e["layers"]:.3g} '
                                      f'(above the limit 1/2)',
             'implicit_same_steps': f'semi-implicit, {e["layers"]} steps (a banded solve per step)'}
    for k, v in err.items():
        lines.append(f"| {names.get(k, k)} | {v['mean']:.4f} | {v['max']:.4f} |")
    best = min(v['mean'] for k, v in err.items() if k != 'model')
    lines += [f"\nRatio model / one {e['layers']}-step FED cycle: **{e['ratio_model_to_fed']:.3f}**; model / best "
              f"classical scheme in this table: {err['model']['mean'] / best:.2f}. Reference: RK4, τ = 0.02, "
              f"float64; its own estimated relative error (step halving) is {e['reference_error']:.1e}.\n",
              "## Training data and recipe\n",
              f"Recipe `{r['name']}` (seed {r['seed']}): {r['steps']} Adam steps on {r['train_signals']} noisy "
              f"train-split signals (piecewise constant and piecewise smooth, length {r['length']}, σ uniform in "
              f"[{r['sigma_min']}, {r['sigma_max']}]) and their fine-step reference solutions, MSE loss.\n",
              "## Intended use and limits\n",
              f"Fast approximation of this one diffusion (λ = {e['contrast']}, T = {e['time']:g}) for signals on "
              "the [0, 1] scale; for other λ, T or flux use the classical solvers in "
              "`pdeblocks.classical`. Not a certified-stable scheme (see above).\n",
              "## Pictures\n", "![examples](examples.png)\n", "Learned per-layer fluxes Φᵢ vs Perona–Malik:\n",
              "![flux](flux.png)\n", "No Hub pipeline tag fits, so none is set.\n"]
    return '\n'.join(lines)


def render_card(name: str) -> str:
    ev = read_eval(name)
    data = card_data(name, ev)
    if 'families' in ev:
        body = _general_body(name, ev)
    else:
        body = _denoise_body(name, ev) if ev['evaluation']['task'] == 'denoise' else _diffusion_body(name, ev)
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def write_card(name: str, dest: Path) -> Path:
    """Render ``dest/README.md`` and its figures; returns ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    make_figures(name, dest)
    atomic_write_text(dest / 'README.md', render_card(name))
    return dest
