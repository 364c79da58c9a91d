"""``pdeblocks train RECIPE``: progress bar, atomic checkpoints, ``--resume``, final evaluation JSON.

Runs unchanged under ``torchrun --nproc_per_node=N``: with ``WORLD_SIZE > 1`` it initialises
``torch.distributed`` (gloo on CPU, nccl on GPU), wraps the model in DistributedDataParallel and
gives rank r the signals ``step·B·N + r·B … + B − 1`` of the train split; rank 0 alone writes
checkpoints, progress and results.

Checkpoint (in ``OUT/``): ``checkpoint.safetensors`` holds the model and Adam tensors and, in its
safetensors metadata, the JSON training state (step, recipe, optimizer scalars); it is written to
a temporary file and moved into place with ``os.replace`` (atomic), then ``checkpoint.json`` (a
readable copy of the state) likewise. ``--resume`` reads the safetensors file only, so the pair
can never disagree. The checkpoint also holds the anchors W₀, B(W₀) of the norm-bound caches
(:class:`~pdeblocks.layers.symmetric.OperatorNormBound`), so a resumed run computes the same τ as an
uninterrupted one. At the end: ``OUT/model/`` (``save_pretrained``) and ``OUT/eval.json``.

A fine-tune (``recipe.start_from``) copies the saved model's weights in first (:func:`load_start`), freezes the
children outside ``recipe.trainable`` and draws its data from step ``recipe.data_offset`` on; ``start_from=`` here
(``--start-from`` in the CLI) replaces the source folder, e.g. to retrain a chain of fine-tunes from its own runs.
"""
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

from .._io import atomic_path, atomic_write_json
from ..hub import architecture_class, load_folder
from ..layers.certificate import NormCertificate
from .batches import denoise_batch, diffusion_pairs  # noqa: F401  (the trainer's data; importable here)
from .evaluate import evaluate_model
from .recipes import Recipe, get_recipe, same_recipe, source_recipe

CHECKPOINT = 'checkpoint.safetensors'
STATE = 'checkpoint.json'
ANCHOR = 'bound_anchor.'   # checkpoint keys of the certificates' anchors (W₀, B(W₀), the estimate's state)


def build_model(recipe: Recipe) -> torch.nn.Module:
    return architecture_class(recipe.architecture)(**recipe.model_kwargs)


def learning_rate(recipe: Recipe, step: int) -> float:
    """Linear warm-up, then cosine decay to 2 % of ``lr`` at the last step."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    t = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0))))


def training_loss(recipe: Recipe, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The recipe's loss of the output ``out`` for input ``x`` and target ``y`` (all ``[B, 1, L]``):
    ``'mse'`` mean((out − y)²); ``'relative_mse'`` mean over signals of ‖out − y‖² / ‖x − y‖²;
    ``'log_relative_mse'`` mean over signals of log(‖out − y‖² / ‖x − y‖²): −ln 10/10 × the mean PSNR gain in
    dB, so that a dB gained on an easy signal counts as much as one on a hard signal."""
    err = (out - y).pow(2).flatten(1).sum(1)
    if recipe.loss in ('relative_mse', 'log_relative_mse'):
        ratio = err / (x - y).pow(2).flatten(1).sum(1).clamp_min(1e-12)
        return ratio.clamp_min(1e-12).log().mean() if recipe.loss == 'log_relative_mse' else ratio.mean()
    return err.mean() / y[0].numel()


def save_checkpoint(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
    """``out/checkpoint.safetensors`` (model state_dict, the certificates' anchors, optimizer tensors; the JSON
    ``state`` and optimizer scalars as metadata) and its readable copy ``out/checkpoint.json``, each atomically."""
    tensors = {f'model.{k}': v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for name, m in model.named_modules():   # anchors of the certificates: resume = uninterrupted run
        anchor = m.anchor() if isinstance(m, NormCertificate) else None
        for key, value in (anchor or {}).items():
            tensors[f'{ANCHOR}{name}.{key}'] = value.contiguous().cpu()
    opt_scalars = {}
    for idx, st in opt.state_dict()['state'].items():
        for key, val in st.items():
            if torch.is_tensor(val) and val.dim() > 0:
                tensors[f'opt.{idx}.{key}'] = val.detach().contiguous().cpu()
            else:
                opt_scalars[f'{idx}.{key}'] = float(val)
    state = dict(state, optimizer_scalars=opt_scalars)
    with atomic_path(out / CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata={'state': json.dumps(state)})
    atomic_write_json(out / STATE, state)


def load_checkpoint(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> Dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into ``model`` and ``opt``; returns the JSON state. A ValueError
    if the file is unreadable. (Checkpoints without anchors or optimizer scalars, as the general denoiser's first
    training loop wrote them, load too: optimizer scalars then come as 0-d tensors.)"""
    path = out / CHECKPOINT
    try:
        with safe_open(str(path), framework='pt') as fh:
            state = json.loads(fh.metadata()['state'])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # corrupted or truncated checkpoint
        raise ValueError(f"cannot resume from {path}: {exc}") from None
    model_sd = {k[len('model.'):]: v for k, v in tensors.items() if k.startswith('model.')}
    model.load_state_dict(model_sd, strict=True)
    for name, m in model.named_modules():
        prefix = f'{ANCHOR}{name}.'
        anchor = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and '.' not in k[len(prefix):]}
        if isinstance(m, NormCertificate) and anchor:
            m.restore_anchor(anchor)   # B checked against the full bound, not trusted
    opt_sd = opt.state_dict()
    new_state = {}
    for idx in range(len(opt_sd['param_groups'][0]['params'])):
        st = {}
        for k, v in tensors.items():
            if k.startswith(f'opt.{idx}.'):
                st[k.split('.', 2)[2]] = v
        for k, v in state.get('optimizer_scalars', {}).items():
            i, name = k.split('.', 1)
            if int(i) == idx:
                st[name] = torch.tensor(v)
        if st:
            new_state[idx] = st
    opt_sd['state'] = new_state
    opt.load_state_dict(opt_sd)
    return state


def resume_from(outdir: Path, model: torch.nn.Module, opt: torch.optim.Optimizer,
                recipe: Recipe) -> Tuple[int, float, Optional[float]]:
    """Load the checkpoint in ``outdir`` into ``model`` and ``opt``: (next step, seconds trained, loss EMA), or
    (0, 0.0, None) where there is none. A ValueError if another recipe wrote it."""
    if not (outdir / CHECKPOINT).exists():
        return 0, 0.0, None
    state = load_checkpoint(outdir, model, opt)
    if not same_recipe(state['recipe'], recipe):
        raise ValueError(f"checkpoint in {outdir} was written by a different recipe; refusing to resume")
    return int(state['step']), float(state.get('elapsed', 0.0)), state.get('loss')


def load_start(model: torch.nn.Module, folder: str, restart: Tuple[str, ...] = ()) -> Dict[str, Any]:
    """Copy the weights of the saved model in ``folder`` into ``model`` (a fine-tune's start). Every source tensor
    must fit ``model``; the model's tensors the source lacks (a new stage) and those whose names start with one of
    ``restart`` (a stage rebuilt with other shapes) keep their initialisation. Returns {'source', 'new'}: the
    folder and the names of the tensors it did not set."""
    source = {k: v for k, v in load_folder(folder).state_dict().items() if not (restart and k.startswith(restart))}
    missing, unexpected = model.load_state_dict(source, strict=False)
    if unexpected:
        raise ValueError(f"{folder} holds tensors the model lacks: {sorted(unexpected)[:8]}")
    return dict(source=str(folder), new=sorted(missing))


def frozen_children(model: torch.nn.Module, recipe: Recipe) -> List[torch.nn.Module]:
    """The children of ``model`` that ``recipe.trainable`` leaves out (none when it names none)."""
    children = dict(model.named_children())
    unknown = [name for name in recipe.trainable if name not in children]
    if unknown:
        raise ValueError(f"recipe {recipe.name!r}: trainable names {unknown}, not children of "
                         f"{type(model).__name__} (expected some of {sorted(children)})")
    return [child for name, child in children.items() if recipe.trainable and name not in recipe.trainable]


def optimization_step(recipe: Recipe, step: int, net: torch.nn.Module, opt: torch.optim.Optimizer,
                      x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimizer step at the scheduled learning rate on the recipe's loss of ``net(x)`` against ``y``, the
    gradient clipped to norm 1; returns the loss."""
    for g in opt.param_groups:
        g['lr'] = learning_rate(recipe, step)
    loss = training_loss(recipe, net(x), x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return float(loss.detach())


def train(recipe_name: str, out: Optional[str] = None, resume: bool = False, steps: Optional[int] = None,
          evaluate: bool = True, progress: bool = True, eval_count: Optional[int] = None,
          start_from: Optional[str] = None, log_every: int = 0) -> Dict[str, Any]:
    """Train a recipe (optionally only ``steps`` steps, e.g. a smoke run) and return the final metrics.
    ``start_from`` replaces a fine-tune's source folder; ``log_every`` > 0 prints one JSON line (step, loss EMA,
    learning rate, seconds) every that many steps instead of the progress bar (for logs of background runs)."""
    from tqdm import tqdm
    recipe = get_recipe(recipe_name)
    if start_from is not None and not recipe.start_from:
        raise ValueError(f"recipe {recipe.name!r} trains from scratch; start_from={start_from!r} replaces the source "
                         "of a fine-tune only")
    source = start_from or recipe.start_from
    if source and not Path(source).is_dir():
        before = source_recipe(recipe) if start_from is None else None
        hint = f": train it first (`pdeblocks train {before} --out runs/{before}`) or pass another source" if before else ''
        raise ValueError(f"recipe {recipe.name!r} fine-tunes the saved model in {source}, which does not exist{hint}")
    world = int(os.environ.get('WORLD_SIZE', '1'))
    distributed = world > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')
    rank = dist.get_rank() if distributed else 0
    device = torch.device(f'cuda:{int(os.environ.get("LOCAL_RANK", 0))}' if torch.cuda.is_available() and distributed
                          else 'cpu')
    total = recipe.steps if steps is None else steps
    outdir = Path(out or f'runs/{recipe.name}')
    if rank == 0:
        outdir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(recipe.seed)
    model = build_model(recipe)
    started = load_start(model, source, recipe.restart) if source else None
    frozen = frozen_children(model, recipe)
    for child in frozen:
        child.requires_grad_(False)
    model.to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=recipe.lr)
    start, elapsed, loss_ema = resume_from(outdir, model, opt, recipe) if resume else (0, 0.0, None)
    model.train()
    for child in frozen:     # a frozen stage computes what it computes at inference
        child.eval()
    net = model
    if distributed:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model)

    pairs = None
    if recipe.task == 'diffusion':
        pairs = diffusion_pairs(recipe, recipe.train_signals, recipe.length, 'train', recipe.seed)
        pairs = (pairs[0].float(), pairs[1].float())

    bar = tqdm(range(start, total), initial=start, total=total, desc=recipe.name,
               disable=not progress or log_every > 0 or rank != 0, dynamic_ncols=True)
    t0 = time.time()
    for step in bar:
        if recipe.task == 'denoise':
            x, y = denoise_batch(recipe, step, rank, world)
        else:
            rng = np.random.default_rng(np.random.SeedSequence([recipe.seed, 13, step, rank]))
            idx = torch.from_numpy(rng.integers(0, pairs[0].shape[0], size=recipe.batch_size))
            x, y = pairs[0][idx], pairs[1][idx]
        lv = optimization_step(recipe, step, net, opt, x.to(device), y.to(device))
        loss_ema = lv if loss_ema is None else 0.98 * loss_ema + 0.02 * lv
        if rank == 0:
            bar.set_postfix(loss=f'{loss_ema:.3g}')
            done = step + 1
            if log_every > 0 and done % log_every == 0:
                print(json.dumps(dict(step=done, loss_ema=round(loss_ema, 5), lr=round(learning_rate(recipe, step), 6),
                                      seconds=round(elapsed + time.time() - t0, 1))), flush=True)
            if done % recipe.checkpoint_every == 0 or done == total:
                save_checkpoint(outdir, model, opt, dict(step=done, recipe=recipe.to_dict(), loss=loss_ema,
                                                          elapsed=elapsed + time.time() - t0, world_size=world))
    bar.close()
    result: Dict[str, Any] = dict(recipe=recipe.to_dict(), steps=total, world_size=world,
                                  train_seconds=elapsed + time.time() - t0, threads=torch.get_num_threads(),
                                  final_loss=loss_ema, parameters=sum(p.numel() for p in model.parameters()),
                                  trained_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad))
    if started:
        result['fine_tuned_from'] = dict(started, data_offset=recipe.data_offset)
    if rank == 0:
        model.eval()
        model.save_pretrained(outdir / 'model')
        if evaluate:
            evaluation = evaluate_model(model, recipe, count=eval_count)
            if recipe.data == 'families':   # validation per family at the top level; 'evaluation' is the test table
                result.update(val_psnr=evaluation['val_psnr'], val_psnr_mean=evaluation['val_psnr_mean'])
            else:
                result['evaluation'] = evaluation
        atomic_write_json(outdir / 'eval.json', result)
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return result
