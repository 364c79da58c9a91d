"""Regenerate model_cards/<name>/README.md (+ examples.png, flux.png) for every bundled model from its
evaluation JSON (pdeblocks/pretrained/<name>/eval.json, written by `pdeblocks train`).

Usage:  python model_cards/generate.py [NAME ...]

Install trained runs first:  python model_cards/generate.py --install RUN_DIR NAME [--install ...] [--standard RUN_DIR]
copies RUN_DIR/model/{config.json,model.safetensors} and RUN_DIR/eval.json into pdeblocks/pretrained/NAME/.
A run trained with ``--no-eval`` is evaluated here first (the same ``evaluate_model`` the trainer calls).
``--standard RUN_DIR``: a standard-ResNet run of the same recipe; its test PSNR is added to eval.json as
the ``comparison`` block (the "half the parameters" check) and its model is kept for
``benchmarks/bench_denoise.py`` in benchmarks/models/<its recipe>/.

Re-evaluate bundled models (after a change to the evaluation or its baselines, weights untouched):
python model_cards/generate.py --reevaluate NAME [NAME ...] recomputes eval.json's ``evaluation`` (and the
``comparison`` block from the kept standard model) with the current ``evaluate_model``, then writes the cards.
"""
import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pdeblocks._io import atomic_write_json  # noqa: E402
from pdeblocks.hub import BUNDLED_DIR, list_pretrained, load_folder  # noqa: E402
from pdeblocks.publish import write_card  # noqa: E402
from pdeblocks.train.evaluate import evaluate_model, standard_comparison  # noqa: E402
from pdeblocks.train.recipes import get_recipe  # noqa: E402

STANDARD_MODELS = Path(__file__).resolve().parent.parent / 'benchmarks' / 'models'
CARDS = Path(__file__).resolve().parent   # model_cards/<name>/ of this checkout


def evaluated(run: Path) -> dict:
    """RUN/eval.json with its ``evaluation`` (computed and written back when the run skipped it)."""
    result = json.loads((run / 'eval.json').read_text())
    if 'evaluation' not in result:
        model = load_folder(run / 'model')
        result['evaluation'] = evaluate_model(model, get_recipe(result['recipe']['name']))
        atomic_write_json(run / 'eval.json', result)
    return result


def install(run_dir: str, name: str, standard_dir: str = None) -> None:
    run = Path(run_dir)
    load_folder(run / 'model')  # must load strictly
    result = evaluated(run)
    if standard_dir:
        std = Path(standard_dir)
        std_result = json.loads((std / 'eval.json').read_text())
        result['comparison'] = standard_comparison(result['evaluation'], load_folder(std / 'model'),
                                                   std_result['recipe']['name'])
        keep = STANDARD_MODELS / std_result['recipe']['name']
        keep.mkdir(parents=True, exist_ok=True)
        for src in (std / 'model' / 'config.json', std / 'model' / 'model.safetensors', std / 'eval.json'):
            shutil.copy2(src, keep / src.name)
    dest = BUNDLED_DIR / name
    dest.mkdir(parents=True, exist_ok=True)
    for src in (run / 'model' / 'config.json', run / 'model' / 'model.safetensors'):
        shutil.copy2(src, dest / src.name)
    atomic_write_json(dest / 'eval.json', result)
    print(f"installed {run} as {dest}")


def reevaluate(name: str) -> None:
    """Recompute the bundled model's ``evaluation`` (and ``comparison``) in its eval.json; training fields kept."""
    dest = BUNDLED_DIR / name
    result = json.loads((dest / 'eval.json').read_text())
    result['evaluation'] = evaluate_model(load_folder(dest), get_recipe(result['recipe']['name']))
    if 'comparison' in result:
        std_recipe = result['comparison']['standard_recipe']
        result['comparison'] = standard_comparison(result['evaluation'], load_folder(STANDARD_MODELS / std_recipe),
                                                   std_recipe)
    atomic_write_json(dest / 'eval.json', result)
    print(f"re-evaluated {dest}")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('names', nargs='*', help='bundled models whose cards to write (default: all)')
    p.add_argument('--install', nargs=2, action='append', metavar=('RUN_DIR', 'NAME'),
                   help='install a trained run first (repeatable: one process shares the baseline evaluations)')
    p.add_argument('--standard', metavar='RUN_DIR', help="with --install: the standard-ResNet comparison run "
                   "(for the installed run named 'denoiser-1d')")
    p.add_argument('--reevaluate', nargs='+', default=[], metavar='NAME',
                   help='recompute the evaluation of these bundled models (one process shares the baselines)')
    a = p.parse_args(argv)
    names = a.names
    for name in a.reevaluate:
        reevaluate(name)
    for run_dir, name in a.install or []:
        install(run_dir, name, a.standard if name == 'denoiser-1d' else None)
    names = names or [name for _, name in a.install or []] + a.reevaluate
    for name in names or list_pretrained():
        print('wrote', write_card(name, CARDS / name) / 'README.md')


if __name__ == '__main__':
    main(sys.argv[1:])
