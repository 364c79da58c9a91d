"""The walker: :func:`swap_blocks` finds the modules of a model that have a swap rule, applies the
rules, installs the new modules and, given calibration data, fits them (:mod:`.calibrate`)."""
import copy
import fnmatch
import importlib
import pkgutil
import time
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from torch import nn

from .. import layers
from ..layers.registry import RESIDUAL_BLOCKS
from .calibrate import Call, batch_size, calibrate_swaps, checked_calibration
from .registry import CannotSwap, class_key, rule_for
from .report import SkipRecord, SwapRecord, SwapReport
from .spec import SwapSpec

Replacement = Tuple[str, nn.Module]             # (module path, new module)


def load_block_modules(stacklevel: int = 3) -> None:
    """Import every module of :mod:`pdeblocks.layers` so that all residual blocks have registered
    (a module that fails to import warns, ``stacklevel`` frames up, and is skipped)."""
    for info in pkgutil.iter_modules(layers.__path__):
        try:
            importlib.import_module(f"{layers.__name__}.{info.name}")
        except Exception as err:  # a broken optional module must not hide the valid names
            warnings.warn(f"could not import pdeblocks.layers.{info.name}: {err}", stacklevel=stacklevel)


def count_params(module: nn.Module) -> int:
    """Number of scalar parameters of a module."""
    return sum(p.numel() for p in module.parameters())


def _patterns(value: Union[None, str, Iterable[str]], name: str) -> Optional[List[str]]:
    """A glob or list of globs as a list (None stays None); anything else is a ValueError naming ``name``."""
    if value is None:
        return None
    pats = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(p, str) for p in pats):
        raise ValueError(f"{name} must be a glob pattern or a list of them (e.g. 'layer4.*'), got {value!r}")
    return pats


def _matches(path: str, pattern: str) -> bool:
    """A module path matches a glob if it or one of its ancestors does ('layer1' covers 'layer1.0')."""
    parts = path.split('.')
    return any(fnmatch.fnmatchcase('.'.join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def _candidates(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(path, module) of modules with a rule, outermost first; the inside of a candidate is not searched."""
    found: List[Tuple[str, nn.Module]] = []
    if rule_for(model) is not None:     # the model is itself one block
        return [('', model)]

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if rule_for(child) is not None:
                found.append((path, child))
            walk(child, path)

    walk(model, '')
    return found



def _check_arguments(model: nn.Module, block: Union[str, Callable[..., nn.Module]], init: str) -> None:
    """ValueError for a non-module model, an unknown block name or constructor, an unknown init."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(block, str):
        if block not in RESIDUAL_BLOCKS:
            load_block_modules(stacklevel=4)         # warn at swap_blocks' caller
        if block not in RESIDUAL_BLOCKS:
            raise ValueError(f"unknown block {block!r}; valid names: {sorted(RESIDUAL_BLOCKS)}")
    elif not callable(block):
        raise ValueError(f"block must be a registered name {sorted(RESIDUAL_BLOCKS)} or a constructor, got {block!r}")
    if init not in ('auto', 'random'):
        raise ValueError(f"init must be 'auto' or 'random', got {init!r}")


def _warn_unmatched(paths: List[str], inc: Optional[List[str]], exc: Optional[List[str]]) -> None:
    """Warn (at swap_blocks' caller) for every include/exclude pattern that matches no swappable path."""
    for kind, pats in (('include', inc), ('exclude', exc)):
        for pat in pats or []:
            if not any(_matches(p, pat) for p in paths):
                examples = ', '.join(paths[:4]) + (', …' if len(paths) > 4 else '') if paths else 'none'
                warnings.warn(f"{kind} pattern {pat!r} matches no swappable module (swappable: {examples})",
                              stacklevel=3)


def _apply_rule(module: nn.Module, spec: SwapSpec) -> Tuple[nn.Module, str]:
    """(new module, init note) from the module's rule; its new parts take the module's train/eval mode.
    A rule's :class:`CannotSwap` passes through; a result that is no module is a ValueError."""
    result = rule_for(module)(module, spec)
    new, note = result if isinstance(result, tuple) else (result, 'by user rule')
    if not isinstance(new, nn.Module):
        raise ValueError(f"the swap rule for {class_key(type(module))} returned {type(new).__name__}, "
                         f"expected an nn.Module")
    reused = {id(m) for m in module.modules()}
    for m in new.modules():
        if id(m) not in reused:
            m.training = module.training
    return new, note


def _replacements(candidates: List[Tuple[str, nn.Module]], spec: SwapSpec, inc: Optional[List[str]],
                  exc: Optional[List[str]], report: SwapReport) -> Tuple[List[Replacement], Dict[str, set]]:
    """Run the rule of every selected candidate (outermost first, nothing inside a replaced block);
    record swaps and skips in ``report``. Returns the replacements and, per path, the ids of the
    original's parameters (kept inside the new module or not: calibration leaves them as they are)."""
    replacements: List[Replacement] = []
    reused_by_path: Dict[str, set] = {}
    for path, module in candidates:
        if any(path.startswith(taken + '.') for taken, _ in replacements):
            continue
        cls = type(module).__name__
        if inc is not None and not any(_matches(path, p) for p in inc):
            continue
        hit = next((p for p in exc or [] if _matches(path, p)), None)
        if hit is not None:
            report.skipped.append(SkipRecord(path, cls, f"excluded by pattern {hit!r}"))
            continue
        try:
            new, note = _apply_rule(module, spec)
        except CannotSwap as why:
            report.skipped.append(SkipRecord(path, cls, str(why)))
            continue
        replacements.append((path, new))
        reused_by_path[path] = {id(q) for q in module.parameters()}
        report.swapped.append(SwapRecord(path, cls, type(new).__name__, count_params(module),
                                         count_params(new), note))
    return replacements, reused_by_path


def _install(target: nn.Module, replacements: List[Replacement]) -> nn.Module:
    """Set every new module at its path; the root path '' replaces ``target`` itself (returned)."""
    for path, new in replacements:
        if not path:
            target = new
            continue
        parent_path, _, name = path.rpartition('.')
        parent = target.get_submodule(parent_path) if parent_path else target
        setattr(parent, name, new)
    return target


def _calibrate(teacher: nn.Module, target: nn.Module, batches: List[Call], reused: Dict[str, set],
               steps: int, lr: float, report: SwapReport) -> None:
    """Fit every swapped block (:func:`calibrate_swaps`) and write the fits, inputs and seconds into ``report``."""
    t0 = time.perf_counter()
    fits = calibrate_swaps(teacher, target, [r.path for r in report.swapped], batches,
                           steps=steps, lr=lr, reused=reused)
    for r in report.swapped:
        r.calibration = fits.get(r.path)
    report.calibration_samples = sum(batch_size(c) for c in batches)
    report.calibration_seconds = time.perf_counter() - t0


def swap_blocks(
        model: nn.Module,
        block: Union[str, Callable[..., nn.Module]] = 'symmetric',
        *,
        include: Union[None, str, Sequence[str]] = None,
        exclude: Union[None, str, Sequence[str]] = None,
        init: str = 'auto',
        inplace: bool = False,
        calibration: Any = None,
        calibration_steps: int = 200,
        calibration_lr: float = 1e-3,
        **block_kwargs,
) -> Tuple[nn.Module, SwapReport]:
    """Replace every supported residual block of ``model`` by a PDE block; return (model, report).

    Args:
        model: any ``nn.Module``; modules whose class has a rule (:data:`SWAP_RULES`) are swapped.
        block: name of a residual PDE block in :data:`pdeblocks.layers.registry.RESIDUAL_BLOCKS`
            (``'symmetric'``, …) or a constructor ``(channels, dim=2, **kwargs) -> nn.Module``.
        include / exclude: glob patterns on module paths (``'layer4.*'``, ``'decoder.blocks.0'``); a
            path matches if it or an ancestor does. A pattern matching no swappable module warns.
        init: ``'auto'`` (K from the replaced convolution where shapes allow) or ``'random'``.
        inplace: modify ``model`` itself; by default a deep copy is swapped and ``model`` is untouched.
        calibration: optional unlabelled inputs (a tensor batch, or an iterable of batches: tensors,
            tuples of positional inputs or dicts of keyword inputs). After the swap each new module is
            fitted to reproduce the replaced block's output on the activations that reach it
            (:func:`calibrate_swaps`: ``calibration_steps`` Adam steps at ``calibration_lr`` per block,
            one batch per step). Cost: per block, two forward passes of the model over the data plus
            ``calibration_steps`` forward/backward passes of the block (and its norm-bound updates:
            for wide layers use cheaper settings such as ``gram_steps=2, bound_refresh=0.25``; a
            coarser grid, ``interp_slack=2.0``, is cheaper still, but its looser B can cut the largest
            certified τ = 2/(L·B²) by up to 4×).
            The report gives the relative error of every block before and after, the inputs used and
            the seconds spent. With ``inplace=True`` a copy of the original is kept during the fit.
        **block_kwargs: passed to every block, overriding the swap defaults (``boundary='zeros'``, the
            replaced kernel size and width, ``flux='relu'`` where the original used ReLU, ...).

    Shapes, strides, dtype, device and train/eval mode are preserved; every swapped module is
    ``SwappedResidual``-like with the PDE step at ``<path>.step`` (the module that carries
    ``stability_certificate()``). A model with nothing to swap comes back unchanged with a report
    saying so. Nothing is modified unless every rule succeeded.
    """
    _check_arguments(model, block, init)
    inc, exc = _patterns(include, 'include'), _patterns(exclude, 'exclude')
    batches = checked_calibration(model, calibration, calibration_steps, calibration_lr)
    teacher = copy.deepcopy(model) if batches and inplace else model
    target = model if inplace else copy.deepcopy(model)
    spec = SwapSpec(block=block, init=init, block_kwargs=dict(block_kwargs))
    block_name = block if isinstance(block, str) else getattr(block, '__name__', repr(block))
    report = SwapReport(block=block_name, params_before=count_params(target))
    candidates = _candidates(target)
    _warn_unmatched([p for p, _ in candidates], inc, exc)
    replacements, reused = _replacements(candidates, spec, inc, exc, report)
    target = _install(target, replacements)
    report.params_after = count_params(target)
    if batches and report.swapped:
        _calibrate(teacher, target, batches, reused, calibration_steps, calibration_lr, report)
    return target, report
