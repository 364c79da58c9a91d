"""Does retraining a published model from its recipe reproduce its metrics? And how closely?

Runs ``pdeblocks train RECIPE --out OUT --resume`` in a subprocess with ``OMP_NUM_THREADS=THREADS``
(a finished run in OUT is only re-evaluated; an interrupted one resumes), then compares the PSNR of
the retrained model per signal kind and σ (the trainer's own evaluation, ``OUT/eval.json``) with the
bundled model's (``pdeblocks/pretrained/RECIPE/eval.json``), and whether the weights are bitwise equal.

The bundled denoisers were trained with one thread. With the same torch version and thread count the
run repeats bit for bit; another thread count changes the floating-point summation order of the
convolutions, so the weights, and the metrics, drift: this script measures by how much.

Run: ``python benchmarks/bench_retrain.py [--recipe denoiser-1d] [--threads 2] [--out runs/retrain-...]``;
writes ``benchmarks/results/retrain_<recipe>_<threads>threads.md`` and ``.json`` atomically. ``--against NAME``
compares with another bundled model (e.g. a comparison recipe such as ``denoiser-1d-free``, which is not
published, against the model it is the twin of), and ``--evaluated`` takes OUT's finished evaluation as it is.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import save_results  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from pdeblocks.hub import BUNDLED_DIR, published_name  # noqa: E402


def psnr_by_kind(evaluation: dict) -> dict:
    """{kind: {σ: model PSNR}} from an eval.json's evaluation table."""
    return {kind: {sigma: row['model'] for sigma, row in rows.items()} for kind, rows in evaluation['table'].items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--recipe', default='denoiser-1d')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out', default=None, help='run folder (default runs/retrain-RECIPE-THREADSthreads)')
    p.add_argument('--against', default=None, help='the bundled model to compare with (default: the recipe\'s own)')
    p.add_argument('--evaluated', action='store_true', help='compare OUT/eval.json as it is (no training run)')
    a = p.parse_args(argv)
    against = a.against or a.recipe
    published = BUNDLED_DIR / published_name(against)
    if not (published / 'eval.json').is_file():
        p.error(f"no published model named {against!r} (expected {published / 'eval.json'})")
    out = Path(a.out or ROOT / 'runs' / f'retrain-{a.recipe}-{a.threads}threads')
    if a.evaluated:
        if not (out / 'eval.json').is_file():
            p.error(f"--evaluated needs a finished run: expected {out / 'eval.json'}")
    else:
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        subprocess.run([sys.executable, '-m', 'pdeblocks.cli', 'train', a.recipe, '--out', str(out), '--resume'],
                       env=env, check=True)
    mine = json.loads((out / 'eval.json').read_text())
    theirs = json.loads((published / 'eval.json').read_text())
    new, old = psnr_by_kind(mine['evaluation']), psnr_by_kind(theirs['evaluation'])
    w_new, w_old = load_file(str(out / 'model' / 'model.safetensors')), load_file(str(published / 'model.safetensors'))
    bitwise = w_new.keys() == w_old.keys() and all(bool((w_new[k] == w_old[k]).all()) for k in w_new)
    rows = [dict(kind=kind, sigma=sigma, published=old[kind][sigma], retrained=new[kind][sigma],
                 difference=new[kind][sigma] - old[kind][sigma]) for kind in old for sigma in old[kind]]
    worst = max(abs(r['difference']) for r in rows)
    theirs_threads = theirs.get('threads')   # train() records it; the bundled evaluations predate that
    published_threads = f"{theirs_threads} thread(s)" if theirs_threads else 'thread count not recorded'
    lines = [f"Retraining `{a.recipe}` with OMP_NUM_THREADS={a.threads} against the bundled `{published.name}` "
             f"(published: {published_threads}), "
             f"{mine['steps']} steps in {mine['train_seconds'] / 60:.1f} min; weights bitwise equal to the "
             f"published ones: {'yes' if bitwise else 'no'}", '',
             '| signals | σ | published PSNR (dB) | retrained PSNR (dB) | difference (dB) |', '|---|---|---|---|---|']
    lines += [f"| {r['kind']} | {r['sigma']} | {r['published']:.2f} | {r['retrained']:.2f} | {r['difference']:+.2f} |"
              for r in rows]
    lines += ['', f"Largest difference: {worst:.2f} dB."]
    text = '\n'.join(lines) + '\n'
    print(text)
    save_results(f'retrain_{a.recipe}_{a.threads}threads', text, dict(
        recipe=a.recipe, against=against, threads=a.threads, published_threads=theirs_threads, bitwise=bitwise, rows=rows,
        largest_difference=worst, train_seconds=mine['train_seconds']))


if __name__ == '__main__':
    main()
