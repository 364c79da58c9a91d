"""The ``pdeblocks`` command line.

Subcommands: ``demo``, ``denoise IN OUT``, ``diffuse IN OUT --time T``, ``train RECIPE``,
``publish NAME --repo-id ORG/NAME``, ``list``, ``certify MODEL_NAME``. Bad input (unreadable,
empty, ragged, non-numeric, NaN, too short, absurd scale, unknown model) prints one line
``pdeblocks: error: …`` to stderr and exits with status 2; no partial output file is left.

``denoise`` with a blind model (:class:`~pdeblocks.models.blind.BlindDenoiser1D`) runs every signal
through :func:`~pdeblocks.models.blind.denoise_signals` (normalised by its own median and noise
estimate σ̂, so any units work) and prints σ̂ in the signal's units: per signal for up to
:data:`SIGMA_LINES` signals, else a summary. Signals with σ̂ = 0 (constant or noise-free) are written
unchanged, and the output says which. ``--sigma`` gives the noise level in the input's units instead of σ̂ (for
noise that is not white Gaussian, where σ̂ reads low); ``--correlation`` the lag-one correlation of AR(1) noise, which
the model whitens first.
"""
import argparse
import json
import math
import os
import sys
from typing import List, Optional

import numpy as np
import torch

from . import classical
from ._io import save_figure
from .classical import perona_malik_denoise, tv_denoise
from .data.families import FAMILIES, make_family_signals
from .data.signals import SIGMAS, bayes_segment_means, make_signals, oracle_segment_means, psnr
from .hub import BUNDLED_DIR, bundled_revisions, from_pretrained, list_pretrained, published_name, recipe_of
from .models.blind import BlindDenoiser1D, DenoiseResult, denoise_signals
from .ops.noise import noise_sigma
from .ops.schedules import fed_cycle_length
from .publish import assemble, hub_tag, upload
from .signal_io import read_signals, write_signals
from .stability import certify
from .train.evaluate import tuned_baselines
from .train.recipes import get_recipe
from .train.trainer import train

DEFAULT_DENOISER = 'denoiser-1d'          # the general blind denoiser (BlindDenoiser1D): any units, σ̂ printed
DEFAULT_DIFFUSION = 'diffusion-1d-perona-malik'
SIGMA_LINES = 10            # denoise: σ̂ per signal up to this many signals, a summary beyond


class UsageError(ValueError):
    """A user error: reported in one line, exit status 2."""


def _load_model(name: str, allowed_tasks=('denoise',)):
    try:
        model = from_pretrained(name)
    except ValueError as exc:
        raise UsageError(f"cannot load model {name!r}: {exc}") from None
    task = 'diffusion' if getattr(model, 'architecture', '') == 'diffusion_1d' else 'denoise'
    if task not in allowed_tasks:
        raise UsageError(f"model {name!r} is a {task} model; here a {'/'.join(allowed_tasks)} model is needed "
                         f"(bundled: {list_pretrained()})")
    return model


def _check_length(model, signals: np.ndarray, source: str = 'the input') -> None:
    """A one-line UsageError naming the array's shape when its rows are shorter than the model's minimum."""
    if signals.shape[-1] < model.min_length:
        raise UsageError(f"{source} holds an array of shape {signals.shape}, read as {signals.shape[0]} signal(s) "
                         f"of length {signals.shape[-1]} (one signal per row); the model needs at least "
                         f"{model.min_length} samples per signal")


def _apply(model, signals: np.ndarray, repeat: int = 1, source: str = 'the input') -> np.ndarray:
    _check_length(model, signals, source)
    x = torch.from_numpy(signals.astype(np.float32))[:, None]
    for _ in range(repeat):
        x = model.predict(x)
    if not bool(torch.isfinite(x).all()):
        raise UsageError(f"the model produced NaN or Inf (input max |f| = {np.abs(signals).max():.3g}); it is not "
                         f"scale-free: rescale the signals to its training range or use a blind model")
    return x[:, 0].double().numpy()


def _sigma_report(results: List[DenoiseResult], unit: str = "in the signals' units", given: bool = False) -> str:
    """σ̂ per signal (up to :data:`SIGMA_LINES` signals) or its median and range, and the unchanged signals; the σ
    that was ``given`` (``--sigma``) instead."""
    sigmas = np.array([r.noise_sigma for r in results])
    unchanged = [i + 1 for i, r in enumerate(results) if r.noise_sigma == 0.0]
    if len(results) == 1:
        return results[0].note
    if given:
        constant = [i + 1 for i, r in enumerate(results) if r.note.startswith('constant')]
        return (f"given noise σ = {sigmas[0]:.4g} ({unit}; not estimated) for all {len(results)} signals"
                + (f"; {len(constant)} constant signal(s) returned unchanged: {constant[:SIGMA_LINES]}"
                   f"{'…' if len(constant) > SIGMA_LINES else ''}" if constant else ''))
    if len(results) <= SIGMA_LINES:
        lines = [f"  signal {i + 1}: " + (f"σ̂ = {r.noise_sigma:.4g}" if r.noise_sigma > 0 else r.note)
                 for i, r in enumerate(results)]
        return f"noise estimates ({unit}):\n" + '\n'.join(lines)
    found = sigmas[sigmas > 0]
    text = (f"estimated noise σ̂ ({unit}): median {np.median(found):.4g}, range [{found.min():.4g}, "
            f"{found.max():.4g}] over {found.size} signals" if found.size else "no noise found in any signal")
    if unchanged:
        text += (f"; {len(unchanged)} signal(s) with σ̂ = 0 (constant or noise-free) returned unchanged: "
                 f"{unchanged[:SIGMA_LINES]}{'…' if len(unchanged) > SIGMA_LINES else ''}")
    return text


def _tv_weight(sigma: float) -> float:
    """TV weight for noise level σ: interpolated (log–log) between the validation-tuned weights."""
    table = _bundled_eval(DEFAULT_DENOISER)
    ws = []
    for s in SIGMAS:
        row = (table or {}).get('evaluation', {}).get('table', {}).get('piecewise_constant', {}).get(str(s))
        ws.append(row['tuned']['tv_weight'] if row else tuned_baselines('piecewise_constant', s)['tv_weight'])
    return float(np.exp(np.interp(np.log(sigma), np.log(SIGMAS), np.log(ws))))


def _bundled_eval(name: str):
    p = BUNDLED_DIR / name / 'eval.json'
    return json.loads(p.read_text()) if p.is_file() else None


def _plot(path: str, curves, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for label, y, style in curves:
        ax.plot(y, style, label=label, lw=1.0 if style != ':' else 0.8)
    ax.set_title(title)
    ax.set_xlabel('sample')
    ax.legend(loc='upper right', fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def cmd_denoise(args) -> int:
    if args.sigma is not None and not (args.sigma > 0 and math.isfinite(args.sigma)):
        raise UsageError(f"--sigma must be a positive number, got {args.sigma}")
    if args.correlation is not None and not abs(args.correlation) < 1:
        raise UsageError(f"--correlation must be in (−1, 1), got {args.correlation}")
    if args.plot and not args.plot.lower().endswith('.png'):
        raise UsageError(f"--plot must name a .png file, got {args.plot}")
    signals = read_signals(args.input)
    model = _load_model(args.model)
    if isinstance(model, BlindDenoiser1D):
        return _denoise_blind(args, model, signals)
    if args.correlation is not None:
        raise UsageError(f"--correlation needs a blind model (a BlindDenoiser1D, e.g. {DEFAULT_DENOISER}); "
                         f"{args.model} is a {type(model).__name__}")
    out = _apply(model, signals, source=args.input)
    write_signals(args.output, out, one_dimensional=signals.shape[0] == 1)
    sigma = args.sigma if args.sigma is not None else float(noise_sigma(torch.from_numpy(signals)[:, None],
                                                                         spectral=True).median())
    if args.plot:
        tv = tv_denoise(torch.from_numpy(signals[:1]), _tv_weight(sigma)).numpy()[0]
        _plot(args.plot, [('noisy', signals[0], ':'), (f'TV (w for σ={sigma:.3g})', tv, '-'),
                          (args.model, out[0], '-')], f'{args.input}: signal 1 of {len(signals)}')
    print(f"denoised {len(signals)} signal(s) of length {signals.shape[1]} with {args.model} "
          f"(noise level {'given' if args.sigma is not None else 'estimated'} σ ≈ {sigma:.3g}) → {args.output}")
    return 0


def _denoise_blind(args, model: BlindDenoiser1D, signals: np.ndarray) -> int:
    """``denoise`` with a blind model: every signal through :func:`denoise_signals`, σ̂ printed in its units."""
    _check_length(model, signals, args.input)
    try:
        results = denoise_signals(signals, model, sigma=args.sigma, correlation=args.correlation)
    except ValueError as exc:
        raise UsageError(f"{args.input}: {exc}") from None
    out = np.stack([r.denoised for r in results])
    write_signals(args.output, out, one_dimensional=signals.shape[0] == 1)
    if args.plot:
        curves = [('noisy', signals[0], ':')]
        sigma = args.sigma if args.sigma is not None else results[0].noise_sigma
        if sigma > 0:   # TV weight tuned for unit-range piecewise-constant signals: a reference curve only
            tv = tv_denoise(torch.from_numpy(signals[:1]), _tv_weight(sigma)).numpy()[0]
            curves.append((f'TV (w for σ={sigma:.3g})', tv, '-'))
        _plot(args.plot, curves + [(args.model, out[0], '-')], f'{args.input}: signal 1 of {len(signals)}')
    unit = "in the signal's units" if len(signals) == 1 else "in the signals' units"
    print(f"denoised {len(signals)} signal(s) of length {signals.shape[1]} with {args.model} (blind) → "
          f"{args.output}\n{_sigma_report(results, unit, given=args.sigma is not None)}")
    return 0


def cmd_diffuse(args) -> int:
    if not (args.time > 0 and math.isfinite(args.time)):
        raise UsageError(f"--time must be a positive number, got {args.time}")
    signals = read_signals(args.input)
    if args.method == 'model':
        model = _load_model(args.model, allowed_tasks=('diffusion',))
        k = args.time / model.time
        if abs(k - round(k)) > 1e-9 or round(k) < 1:
            raise UsageError(f"model {args.model} diffuses to T = {model.time:g}; --time must be a positive multiple "
                             f"of it (got {args.time:g}), or use --method fed/implicit/reference")
        out = _apply(model, signals, repeat=int(round(k)), source=args.input)
    else:
        if signals.shape[1] < 2:
            raise UsageError(f"signals have length {signals.shape[1]}, diffusion needs at least 2 samples")
        flux = classical.make_flux('perona_malik', args.contrast)
        f = torch.from_numpy(signals)
        if args.method == 'fed':
            # one cycle with τ_max ≤ 2/(L‖D‖²) = 1/2 (Perona–Malik L = 1, ‖D‖² ≤ 4)
            u = classical.fed(f, flux, args.time, fed_cycle_length(args.time, classical.stable_step(flux)))
        elif args.method == 'implicit':
            u = classical.implicit(f, flux, args.time, max(1, math.ceil(args.time)))
        else:
            u = classical.fine_reference(f, flux, args.time)
        out = u.numpy()
    write_signals(args.output, out, one_dimensional=signals.shape[0] == 1)
    print(f"diffused {len(signals)} signal(s) to T = {args.time:g} ({args.method}) → {args.output}")
    return 0


def _plot_panels(path: str, panels, title: str, per_row: int = 3) -> None:
    """One small plot per (title, [(label, y, style)]) in ``panels``, ``per_row`` to a row, written atomically."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows = -(-len(panels) // per_row)
    fig, axes = plt.subplots(rows, per_row, figsize=(4.2 * per_row, 2.8 * rows), squeeze=False)
    for ax, (name, curves) in zip(axes.flat, panels):
        for label, y, style in curves:
            ax.plot(y, style, label=label, lw=1.0 if style != ':' else 0.6)
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    axes.flat[0].legend(loc='upper right', fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def _demo_families(args, model: BlindDenoiser1D, sigma: float = 0.1) -> int:
    """The blind model on ``args.count`` test signals of every training family, against TV with its weight tuned
    on 4 validation signals of the same family and σ (an advantage the blind model does not have)."""
    panels = []
    print(f"Denoising {args.count} test signals of each family, length 1024, σ = {sigma} of the range; TV tuned "
          f"per family on 4 validation signals, {args.model} blind (σ̂ estimated):\n")
    print(f"| family | noisy input | total variation (tuned) | {args.model} | {args.model} − TV |\n|---|---|---|---|---|")
    for fam in FAMILIES:
        val = make_family_signals(fam, 'val', 4, 1024, sigma)
        weight, _ = classical.tune_tv(val.noisy, val.clean)
        s = make_family_signals(fam, 'test', args.count, 1024, sigma)
        tv = tv_denoise(torch.from_numpy(s.noisy).double(), weight).numpy()
        out = _apply(model, s.noisy)
        p_noisy, p_tv, p_model = (float(psnr(x, s.clean).mean()) for x in (s.noisy, tv, out))
        print(f"| {fam.replace('_', ' ')} | {p_noisy:.2f} | {p_tv:.2f} (w = {weight:.3g}) | {p_model:.2f} | "
              f"{p_model - p_tv:+.2f} |")
        panels.append((fam.replace('_', ' '), [('noisy', s.noisy[0], ':'), ('clean', s.clean[0], '-'),
                                                ('TV', tv[0], '-'), (args.model, out[0], '-')]))
    _plot_panels(args.plot, panels, f'pdeblocks demo: {args.model}, σ = {sigma}, test signal 0 of each family')
    print(f"\nPSNR in dB (mean over the signals). Piecewise-constant signals on [0, 1]: also try "
          f"`pdeblocks demo --model denoiser-1d-piecewise-constant`.\nwrote {args.plot}")
    return 0


def cmd_demo(args) -> int:
    if args.count < 1:
        raise UsageError(f"--count must be ≥ 1, got {args.count}")
    model = _load_model(args.model)
    if isinstance(model, BlindDenoiser1D):
        return _demo_families(args, model)
    sigma = 0.1
    s = make_signals('piecewise_constant', 'test', args.count, 1024, sigma, seed=0)
    ev = _bundled_eval(args.model) or _bundled_eval(DEFAULT_DENOISER)
    tuned = ev['evaluation']['table']['piecewise_constant'][str(sigma)]['tuned'] if ev else None
    if tuned is None:
        tuned = tuned_baselines('piecewise_constant', sigma)
    f = torch.from_numpy(s.noisy).double()
    results = {
        'noisy input': s.noisy,
        f"total variation (w = {tuned['tv_weight']:.3g}, tuned)": tv_denoise(f, tuned['tv_weight']).numpy(),
        f"Perona–Malik (λ = {tuned['pm_contrast']:.3g}, T = {tuned['pm_time']:g}, tuned)":
            perona_malik_denoise(f, tuned['pm_contrast'], tuned['pm_time']).numpy(),
        f"{args.model} ({model.parameter_count():,} parameters)": _apply(model, s.noisy.astype(np.float64)),
        'Bayes limit (posterior mean under the signals\' prior: no denoiser does better on average)':
            bayes_segment_means(s.noisy, sigma),
        'oracle (knows the jumps, segment means)': oracle_segment_means(s.noisy, s.starts),
    }
    print(f"Denoising {args.count} piecewise-constant test signals, length 1024, σ = {sigma}:\n")
    print('| method | PSNR (dB) |\n|---|---|')
    for name, est in results.items():
        print(f"| {name} | {psnr(est, s.clean).mean():.2f} |")
    keys = list(results)
    _plot(args.plot, [('clean', s.clean[0], '-'), ('noisy', s.noisy[0], ':'), ('TV', results[keys[1]][0], '-'),
                      (args.model, results[keys[3]][0], '-')], f'pdeblocks demo: σ = {sigma}, test signal 0')
    print(f"\nwrote {args.plot}")
    return 0


def cmd_train(args) -> int:
    get_recipe(args.recipe)  # validates the name
    note = recipe_note(args.recipe)
    if note:
        print(note, file=sys.stderr)
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be ≥ 1, got {args.steps}")
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be ≥ 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.log_every < 0:
        raise UsageError(f"--log-every must be ≥ 0, got {args.log_every}")
    result = train(args.recipe, out=args.out, resume=args.resume, steps=args.steps, evaluate=not args.no_eval,
                   eval_count=args.eval_count, start_from=args.start_from, log_every=args.log_every)
    if int(os.environ.get('RANK', '0')) == 0:
        loss = 'no step taken' if result['final_loss'] is None else f"final loss {result['final_loss']:.4g}"
        print(f"trained {args.recipe}: {result['steps']} steps, {loss}; "
              f"results in {args.out or 'runs/' + args.recipe}/eval.json")
    return 0


def cmd_publish(args) -> int:
    tag = args.tag if args.tag is not None else hub_tag(args.name, args.repo_id)
    folder = assemble(args.name, args.out)
    print(f"assembled {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}"
          + (f"; Hub tag {tag!r}" if tag else ''))
    if args.dry_run:
        return 0
    url = upload(folder, args.repo_id, tag)
    print(f"uploaded to {url}" + (f", tagged {tag!r}" if tag else ''))
    return 0


def recipe_note(recipe: str) -> str:
    """A one-line note where a recipe's name is also the name of a bundled model it does not train (the recipe
    ``denoiser-1d`` trained revision v1, the specialist); empty otherwise."""
    if recipe not in list_pretrained() or recipe_of(recipe) == recipe:
        return ''
    try:
        target = f"the bundled {published_name(recipe)!r}"
    except ValueError:
        target = 'no bundled model'
    source = recipe_of(recipe)
    return (f"note: recipe {recipe!r} trains {target}; the bundled {recipe!r} comes from "
            + (f"recipe {source!r}" if source else 'no recipe'))


def cmd_list(args) -> int:
    """Each bundled model, the recipe that trained it, and its revision where a Hub repo's revisions map has it."""
    names = list_pretrained()
    tags = {}
    for name in names:
        table = bundled_revisions(name)
        for tag, target in (table['revisions'].items() if table else ()):
            tags[target] = f"{table['repo_id']} revision {tag}" + (' (current)' if tag == table['current'] else '')
    width = max(map(len, names), default=0)
    for name in names:
        recipe = recipe_of(name)
        print(f"{name:<{width}}  " + ', '.join([f"recipe {recipe}" if recipe else 'no recipe']
                                               + ([tags[name]] if name in tags else [])))
    return 0


def cmd_certify(args) -> int:
    import timm


    try:
        model = timm.create_model(args.model)
    except RuntimeError as exc:
        raise UsageError(str(exc).splitlines()[0]) from None
    print(certify(model))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='pdeblocks', description='PDE schemes as stable neural-network blocks.')
    sub = p.add_subparsers(dest='command', required=True)
    d = sub.add_parser('demo', help='denoise example signals of every kind, print a PSNR table, write a PNG')
    d.add_argument('--model', default=DEFAULT_DENOISER)
    d.add_argument('--plot', default='pdeblocks-demo.png', help='PNG to write (default: %(default)s)')
    d.add_argument('--count', type=int, default=16, help='number of example signals (default: %(default)s)')
    d.set_defaults(func=cmd_demo)
    d = sub.add_parser('denoise', help='denoise signals from .npy/.csv/.txt (one signal per row)')
    d.add_argument('input')
    d.add_argument('output')
    d.add_argument('--model', default=DEFAULT_DENOISER, help='bundled name, Hub repo id or folder (default: '
                   '%(default)s, the general blind denoiser: any units, σ̂ estimated and printed)')
    d.add_argument('--sigma', type=float, default=None,
                   help="the noise's standard deviation in the input's units where it is known (a blind model "
                        "uses it instead of its estimate σ̂, which assumes white Gaussian noise; also the TV curve "
                        "of --plot); estimated when omitted")
    d.add_argument('--correlation', type=float, default=None,
                   help="the noise's lag-one correlation ρ in (−1, 1) where the noise is AR(1) (e.g. measured on a blank "
                        "run); a blind model whitens the input, denoises it and colours it back")
    d.add_argument('--plot', default=None, help='write a PNG of the first signal')
    d.set_defaults(func=cmd_denoise)
    d = sub.add_parser('diffuse', help='Perona–Malik diffusion of signals to time T')
    d.add_argument('input')
    d.add_argument('output')
    d.add_argument('--time', type=float, required=True)
    d.add_argument('--method', choices=('model', 'fed', 'implicit', 'reference'), default='model')
    d.add_argument('--model', default=DEFAULT_DIFFUSION)
    d.add_argument('--contrast', type=float, default=0.1, help='λ for the classical methods (default: %(default)s)')
    d.set_defaults(func=cmd_diffuse)
    d = sub.add_parser('train', help='train a recipe (works under torchrun)')
    d.add_argument('recipe')
    d.add_argument('--out', default=None)
    d.add_argument('--resume', action='store_true')
    d.add_argument('--steps', type=int, default=None, help='stop after this many steps (smoke runs)')
    d.add_argument('--no-eval', action='store_true')
    d.add_argument('--eval-count', type=int, default=None)
    d.add_argument('--start-from', default=None, metavar='FOLDER',
                   help="a fine-tune's source model folder, in place of the recipe's (e.g. to retrain a chain of runs)")
    d.add_argument('--threads', type=int, default=None, help="torch's intra-op threads (default: torch's choice)")
    d.add_argument('--log-every', type=int, default=0, metavar='N',
                   help='print a JSON line (step, loss, lr, seconds) every N steps instead of the progress bar')
    d.set_defaults(func=cmd_train)
    d = sub.add_parser('publish', help='assemble a model folder and upload it with HfApi.upload_folder')
    d.add_argument('name')
    d.add_argument('--repo-id', required=True)
    d.add_argument('--out', default=None, help='folder to assemble in (default: a new temporary folder)')
    d.add_argument('--dry-run', action='store_true', help='assemble only, do not upload')
    d.add_argument('--tag', default=None, help="tag the uploaded commit (default: the model's tag in the bundled "
                   "revisions map of the repo, e.g. v2 for denoiser-1d in pdeblocks/denoiser-1d; none if it has none)")
    d.set_defaults(func=cmd_publish)
    d = sub.add_parser('list', help='list the bundled pretrained models, the recipe of each and its Hub revision')
    d.set_defaults(func=cmd_list)
    d = sub.add_parser('certify', help='print the stability certificate of a timm model')
    d.add_argument('model')
    d.set_defaults(func=cmd_certify)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        msg = ' '.join(str(exc).split())
        print(f"pdeblocks: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pdeblocks: interrupted", file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
