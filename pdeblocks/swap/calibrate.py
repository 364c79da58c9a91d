"""Block-wise feature distillation: fit each swapped module to the output of the module it replaced.

For a swapped path p: x_p = the inputs reaching the new module in the swapped model, y_p = the outputs
of the original module in the original model (both captured by forward hooks on unlabelled
calibration batches); Adam minimises ‖new(x_p) − y_p‖² / ‖y_p‖² over the parameters the swap
created, and the report gives e = (Σ‖new(x) − y‖² / Σ‖y‖²)^½ before and after (:func:`relative_error`).
"""
import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..layers.certificate import NormCertificate
from ..layers.symmetric import SymmetricResidual
from .report import CalibrationRecord

Call = Tuple[tuple, Dict[str, Any]]                  # positional and keyword arguments of one call


def calibration_batches(calibration: Any) -> List[Call]:
    """Normalise ``calibration`` to a list of model calls (args, kwargs).

    A tensor is one batch, run as ``model(x)``; any other iterable yields batches, each a tensor
    (``model(x)``), a tuple/list of positional arguments (``model(*args)``, e.g. a diffusion U-net's
    (sample, timestep)) or a dict of keyword arguments (``model(**kw)``). Labels are never needed.
    """
    if isinstance(calibration, torch.Tensor):
        items: List[Any] = [calibration]
    elif isinstance(calibration, (str, bytes, dict)) or not isinstance(calibration, Iterable):
        raise ValueError(f"calibration must be an input batch (a tensor [B, ...]) or an iterable of batches; "
                         f"got {type(calibration).__name__}")
    else:
        items = list(calibration)
    if not items:
        raise ValueError("calibration is empty: expected at least one input batch (a tensor [B, ...])")
    calls: List[Call] = []
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            call: Call = ((item,), {})
        elif isinstance(item, (tuple, list)):
            call = (tuple(item), {})
        elif isinstance(item, dict):
            call = ((), dict(item))
        else:
            raise ValueError(f"calibration batch {i} must be a tensor [B, ...], a tuple of positional inputs or a "
                             f"dict of keyword inputs; got {type(item).__name__}")
        tensors = [t for t in list(call[0]) + list(call[1].values()) if isinstance(t, torch.Tensor)]
        if not tensors or tensors[0].dim() == 0:
            raise ValueError(f"calibration batch {i} needs a batched input tensor [B, ...] first; got "
                             f"{describe_call(call)}")
        calls.append(call)
    return calls


def describe_call(call: Call) -> str:
    def one(v: Any) -> str:
        return f"tensor {list(v.shape)} {v.dtype}" if isinstance(v, torch.Tensor) else type(v).__name__
    parts = [one(a) for a in call[0]] + [f"{k}={one(v)}" for k, v in call[1].items()]
    return '(' + ', '.join(parts) + ')'


def batch_size(call: Call) -> int:
    first = next(t for t in list(call[0]) + list(call[1].values()) if isinstance(t, torch.Tensor))
    return int(first.shape[0])


def detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(detached(v) for v in value)
    if isinstance(value, dict):
        return {k: detached(v) for k, v in value.items()}
    return value


def run_calibration_batch(model: nn.Module, call: Call, index: int) -> None:
    """model(*args, **kwargs) without gradients; a batch the model cannot take is a ValueError."""
    try:
        with torch.no_grad():
            model(*call[0], **call[1])
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as err:
        raise ValueError(f"calibration batch {index} {describe_call(call)} could not be run through the model; "
                         f"expected the model's own input (e.g. [B, C, H, W] with its channels, dtype and "
                         f"device): {err}") from err


def captured_calls(model: nn.Module, module: nn.Module, batches: List[Call]) -> List[Tuple[Call, Any]]:
    """((args, kwargs), output) of every call of ``module`` while ``model`` runs on each batch."""
    calls: List[Tuple[Call, Any]] = []

    def hook(_m: nn.Module, args: tuple, kwargs: Dict[str, Any], output: Any) -> None:
        calls.append(((detached(args), detached(kwargs)), detached(output)))

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        for i, call in enumerate(batches):
            run_calibration_batch(model, call, i)
    finally:
        handle.remove()
    return calls


def execution_order(model: nn.Module, modules: Dict[str, nn.Module], call: Call) -> List[str]:
    """Paths of ``modules`` in the order ``model`` first calls them on one batch (uncalled ones last)."""
    order: List[str] = []
    handles = []
    for path, module in modules.items():
        def pre_hook(_m: nn.Module, _args: tuple, path: str = path) -> None:
            if path not in order:
                order.append(path)
        handles.append(module.register_forward_pre_hook(pre_hook))
    try:
        run_calibration_batch(model, call, 0)
    finally:
        for h in handles:
            h.remove()
    return order + [p for p in modules if p not in order]


def relative_error(module: nn.Module, data: List[Tuple[Call, torch.Tensor]]) -> float:
    """e = (Σ‖module(x) − y‖² / Σ‖y‖²)^½ over the captured (input, target) pairs."""
    num = den = 0.0
    with torch.no_grad():
        for (args, kwargs), y in data:
            out = module(*args, **kwargs)
            num += float((out.float() - y.float()).square().sum())
            den += float(y.float().square().sum())
    return math.sqrt(num / max(den, 1e-30))


def settle_step_size(step: nn.Module) -> None:
    """Recompute the rigorous bound of a fitted :class:`SymmetricResidual` (or subclass) at its final
    weight and re-parameterise its step so that τ is unchanged: fraction' = fraction·(B_new/B_fit)²
    (:meth:`~SymmetricResidual.set_step_fraction` caps it where the parameterisation is bounded).

    B_fit is the B of the fit's passes (the training contract's estimate, or the strict mode's cached
    B(W₀) + drift); after settling, eval passes and fine-tuning start from the full bound at the
    fitted weight with the τ the fit ended with.
    """
    if not isinstance(step, SymmetricResidual) or step.stability == 'none':
        return
    with torch.no_grad():
        b_fit = float(step.norm_bound())
        step.bound.clear()
        b_new = float(step.bound.rigorous(step.weight))
        step.set_step_fraction(float(step.step_fraction()) * (b_new / b_fit) ** 2)


def checked_calibration(model: nn.Module, calibration: Any, steps: int, lr: float) -> List[Call]:
    """The calibration calls of :func:`~pdeblocks.swap.swap_blocks`, each run once through ``model``
    (in eval mode, restored afterwards) so that a batch the model cannot take fails before any change;
    [] when ``calibration`` is None."""
    if calibration is None:
        return []
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"calibration_steps must be an int ≥ 1, got {steps!r}")
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"calibration_lr must be a finite number > 0, got {lr!r}")
    batches = calibration_batches(calibration)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        for i, call in enumerate(batches):
            run_calibration_batch(model, call, i)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return batches


def fit_block(new: nn.Module, params: List[torch.Tensor], data: List[Tuple[Call, torch.Tensor]],
              steps: int, lr: float, before: float) -> CalibrationRecord:
    """``steps`` Adam steps on ‖new(x) − y‖² / ‖y‖² over ``params``, one captured pair per step
    (cycling), then τ settled (:func:`settle_step_size`); the starting parameters come back if the
    error e did not drop below ``before``."""
    start = [q.detach().clone() for q in params]
    opt = torch.optim.Adam(params, lr=lr)
    for m in new.modules():   # the fit is training: certificates use their training passes
        if isinstance(m, NormCertificate):
            m.train()
    with torch.enable_grad():
        for i in range(steps):
            (args, kwargs), y = data[i % len(data)]
            loss = (new(*args, **kwargs) - y).square().sum() / y.square().sum().clamp_min(1e-30)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for q, g in zip(params, grads):
                q.grad = g
            opt.step()
    for q in params:
        q.grad = None
    for m in new.modules():
        settle_step_size(m)
    after = relative_error(new, data)
    note = ''
    if not after <= before:            # also catches NaN
        with torch.no_grad():
            for q, q0 in zip(params, start):
                q.copy_(q0)
        after, note = relative_error(new, data), 'fit did not help: initial parameters kept'
    return CalibrationRecord(steps, before, after, note)


def calibrate_block(teacher: nn.Module, original: nn.Module, student: nn.Module, new: nn.Module,
                    batches: List[Call], keep: set, steps: int, lr: float) -> CalibrationRecord:
    """Capture (x, y) for one swapped module ``new`` of ``student`` against ``original`` of ``teacher``
    and fit it (:func:`fit_block`) over its parameters whose ids are not in ``keep``; a record with a
    note where it cannot be fitted."""
    targets = captured_calls(teacher, original, batches)
    inputs = captured_calls(student, new, batches)
    if not targets or len(targets) != len(inputs):
        return CalibrationRecord(0, float('nan'), float('nan'),
                                 f'not fitted: called {len(targets)}× in the original, '
                                 f'{len(inputs)}× after the swap')
    if not all(isinstance(y, torch.Tensor) and y.is_floating_point() for _, y in targets):
        return CalibrationRecord(0, float('nan'), float('nan'), 'not fitted: output is not a tensor')
    data = [(call, y) for (call, _), (_, y) in zip(inputs, targets)]
    params = [q for q in new.parameters() if id(q) not in keep and q.requires_grad]
    before = relative_error(new, data)
    if not params:
        return CalibrationRecord(0, before, before, 'not fitted: no new trainable parameters')
    return fit_block(new, params, data, steps, lr, before)


def calibrate_swaps(teacher: nn.Module, student: nn.Module, paths: Sequence[str], batches: List[Call], *,
                    steps: int = 200, lr: float = 1e-3, reused: Optional[Dict[str, set]] = None
                    ) -> Dict[str, CalibrationRecord]:
    """Block-wise feature distillation: fit each swapped module to the module it replaced.

    For every path p, in the order the model runs them: x_p = the inputs reaching the swapped module
    in ``student`` (whose earlier swaps are already fitted, so the fit also absorbs their residual
    error), y_p = the outputs of the original module in ``teacher``; ``steps`` Adam steps (lr ``lr``,
    one calibration batch per step, cycling) minimise ‖new(x_p) − y_p‖² / ‖y_p‖² over the parameters
    the swap created (``reused[p]``: ids of the original's parameters kept inside, e.g. the
    connector, which stay as they are). No labels. If the fit ends above its starting error the
    starting parameters are restored, so the error never grows. τ is then settled
    (:func:`settle_step_size`). Both models run in eval mode (BatchNorm statistics are not updated);
    the modes are restored afterwards. Returns the fit of every path.
    """
    modes = {m: m.training for model in (teacher, student) for m in model.modules()}
    teacher.eval()
    student.eval()
    records: Dict[str, CalibrationRecord] = {}
    try:
        originals = {p: teacher.get_submodule(p) if p else teacher for p in paths}
        for path in execution_order(teacher, originals, batches[0]):
            new = student.get_submodule(path) if path else student
            records[path] = calibrate_block(teacher, originals[path], student, new, batches,
                                            (reused or {}).get(path, set()), steps, lr)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return records
