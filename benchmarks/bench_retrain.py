"""Does retraining a published model from its recipe reproduce its metrics? And how closely?

Runs ``pdeblocks train RECIPE --out OUT --resume`` in a subprocess with ``OMP_NUM_THREADS=THREADS``
(a finished run in OUT is only re-evaluated; an interrupted one resumes), then compares the PSNR of
the retrained model per signal kind and σ (the trainer's own evaluation, ``OUT/eval.json``) with the
bundled model's (``pdeblocks/pretrained/RECIPE/eval.json``), and whether the weights are bitwise equal.

The bundled denoisers were trained with one thread. With the same torch version and thread count the
run repeats bit for bit; another thread count changes the floating-point summation order of the
convolutions, so the weights, and the metrics, drift: this script measures by how much.

A fine-tune (a recipe with ``start_from``) is retrained with the chain of runs it comes from: every stage whose
source is another recipe's run (``runs/<recipe>/model``) is retrained first, in ``OUT/<stage>``, and the next stage
starts from that (``--start-from``), down to the chain's fixed start (a bundled model, e.g. revision v2 of
``denoiser-1d`` for v3). Recipes on the signal families compare the trainer's validation table (``val_psnr``) per
family and σ; each stage is also compared with the run of it in git (``runs/<stage>/eval.json``) where there is one.

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
from pdeblocks.train.recipes import fine_tune_chain, get_recipe  # noqa: E402


def psnr_by_kind(result: dict) -> dict:
    """{kind: {σ: model PSNR}} from an eval.json: the families' validation table, or the test table's model column."""
    if 'val_psnr' in result:
        return result['val_psnr']
    return {kind: {sigma: row['model'] for sigma, row in rows.items()} for kind, rows in result['evaluation']['table'].items()}


def cells(table: dict) -> list:
    """The (kind, σ) cells of a :func:`psnr_by_kind` table, sorted."""
    return sorted((kind, sigma) for kind, row in table.items() for sigma in row)


def drift(new: dict, old: dict) -> list:
    return [dict(kind=kind, sigma=sigma, published=old[kind][sigma], retrained=new[kind][sigma],
                 difference=new[kind][sigma] - old[kind][sigma]) for kind in old for sigma in old[kind]]


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument('--recipe', default='denoiser-1d')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out', default=None, help='run folder (default runs/retrain-RECIPE-THREADSthreads)')
    p.add_argument('--against', default=None, help='the recipe of the bundled model to compare with (default: --recipe; '
                                                  'e.g. denoiser-1d-general-residual for revision v5 of denoiser-1d)')
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
    stages = fine_tune_chain(a.recipe)
    folders = {stage: out.parent / f'{out.name}-{stage}' for stage in stages[:-1]}
    folders[a.recipe] = out
    if not a.evaluated:
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        for i, stage in enumerate(stages):
            start = ['--start-from', str(folders[stages[i - 1]] / 'model')] if i else []
            subprocess.run([sys.executable, '-m', 'pdeblocks.cli', 'train', stage, '--out', str(folders[stage]),
                            '--resume', '--log-every', '250', *start], env=env, check=True)
    mine = json.loads((out / 'eval.json').read_text())
    theirs = json.loads((published / 'eval.json').read_text())
    new, old = psnr_by_kind(mine), psnr_by_kind(theirs)
    if cells(new) != cells(old):
        p.error(f"{out / 'eval.json'} and {published / 'eval.json'} evaluate different cells (kind, σ): expected "
                f"{cells(old)}, got {cells(new)}; is --against the recipe of the model this one should match?")
    w_new, w_old = load_file(str(out / 'model' / 'model.safetensors')), load_file(str(published / 'model.safetensors'))
    bitwise = w_new.keys() == w_old.keys() and all(bool((w_new[k] == w_old[k]).all()) for k in w_new)
    rows = drift(new, old)
    worst = max(abs(r['difference']) for r in rows)
    per_stage = {}   # each stage against its run in git
    for stage in stages:
        committed = ROOT / 'runs' / stage / 'eval.json'
        if committed.is_file() and (folders[stage] / 'eval.json').is_file():
            d = drift(psnr_by_kind(json.loads((folders[stage] / 'eval.json').read_text())),
                      psnr_by_kind(json.loads(committed.read_text())))
            per_stage[stage] = dict(largest=max(abs(r['difference']) for r in d),
                                    mean=sum(r['difference'] for r in d) / len(d))
    seconds = sum(json.loads((folders[st] / 'eval.json').read_text())['train_seconds'] for st in stages
                  if (folders[st] / 'eval.json').is_file())   # --evaluated: the stages that are there
    theirs_threads = theirs.get('threads')   # train() records it; the bundled evaluations predate that
    published_threads = f"{theirs_threads} thread(s)" if theirs_threads else 'thread count not recorded'
    steps = sum(get_recipe(st).steps for st in stages)
    origin = f"`{get_recipe(stages[0]).start_from}`" if get_recipe(stages[0]).start_from else 'scratch'
    lines = [f"Retraining `{a.recipe}` with OMP_NUM_THREADS={a.threads} against the bundled `{published.name}` "
             f"(published: {published_threads}), "
             + (f"the chain {' → '.join(f'`{st}`' for st in stages)} from {origin}, " if len(stages) > 1 else '')
             + f"{steps} steps in {seconds / 60:.1f} min; weights bitwise equal to the "
             f"published ones: {'yes' if bitwise else 'no'}", '',
             '| signals | σ | published PSNR (dB) | retrained PSNR (dB) | difference (dB) |', '|---|---|---|---|---|']
    lines += [f"| {r['kind']} | {r['sigma']} | {r['published']:.2f} | {r['retrained']:.2f} | {r['difference']:+.2f} |"
              for r in rows]
    lines += ['', f"Largest difference: {worst:.2f} dB."]
    if per_stage:
        lines += ['', 'Each stage against its run in git (validation PSNR, dB):', '',
                  '| stage | mean difference | largest difference |', '|---|---|---|']
        lines += [f"| `{st}` | {d['mean']:+.3f} | {d['largest']:.3f} |" for st, d in per_stage.items()]
    text = '\n'.join(lines) + '\n'
    print(text)
    save_results(f'retrain_{a.recipe}_{a.threads}threads', text, dict(
        recipe=a.recipe, against=against, threads=a.threads, published_threads=theirs_threads, bitwise=bitwise, rows=rows,
        largest_difference=worst, train_seconds=seconds, stages=stages, per_stage=per_stage))


if __name__ == '__main__':
    main()
