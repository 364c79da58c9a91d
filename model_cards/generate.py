"""Regenerate model_cards/<name>/README.md (+ examples.png, flux.png) for every bundled model from its
evaluation JSON (pdeblocks/pretrained/<name>/eval.json, written by `pdeblocks train`).

Usage:  python model_cards/generate.py [NAME ...]

Install a trained run first:  python model_cards/generate.py --install RUN_DIR NAME
(copies RUN_DIR/model/{config.json,model.safetensors} and RUN_DIR/eval.json into pdeblocks/pretrained/NAME/).
"""
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pdeblocks.hub import BUNDLED_DIR, list_pretrained, load_folder  # noqa: E402
from pdeblocks.publish import write_card  # noqa: E402


def install(run_dir: str, name: str) -> None:
    run = Path(run_dir)
    load_folder(run / 'model')  # must load strictly
    dest = BUNDLED_DIR / name
    dest.mkdir(parents=True, exist_ok=True)
    for src in (run / 'model' / 'config.json', run / 'model' / 'model.safetensors', run / 'eval.json'):
        shutil.copy2(src, dest / src.name)
    print(f"installed {run} as {dest}")


def main(argv):
    if argv[:1] == ['--install']:
        install(argv[1], argv[2])
        argv = argv[3:] or [argv[2]]
    for name in argv or list_pretrained():
        print('wrote', write_card(name) / 'README.md')


if __name__ == '__main__':
    main(sys.argv[1:])
