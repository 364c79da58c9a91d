"""What the benchmark scripts share: interleaved timing with means and medians, data loading, results writing.

Scripts run as ``python benchmarks/<script>.py`` have this folder on ``sys.path`` and import it as
``from _common import …``; importing it also puts the checkout first on ``sys.path``.

* Timing: :func:`timed` (one call), :class:`Stopwatch` (elapsed time of a run), :func:`interleaved`
  (every candidate once per round, round after round, so that load on a shared machine hits all of them
  alike; compare candidates as ratios of one run) and :func:`summary` (mean, median, min, stdev).
* Data: :func:`digits` (scikit-learn's 8×8 digits as tensors), :func:`classification_step` (one timed
  cross-entropy step).
* Results: :func:`save_results` writes ``benchmarks/results/<stem>.md`` (the printed table) and ``.json``
  (the numbers behind it), both atomically (:mod:`pdeblocks._io`).
"""
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from pdeblocks._io import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / 'results'
T = TypeVar('T')


# ---------------------------------------------------------------- timing
def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Tuple[T, float]:
    """(fn(*args, **kwargs), its wall-clock seconds)."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


class Stopwatch:
    """Seconds since construction (or the last :meth:`restart`): ``watch = Stopwatch(); …; watch()``."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def interleaved(candidates: Dict[str, Callable[[], Any]], repeats: int,
                after: Optional[Callable[[str], None]] = None) -> Tuple[Dict[str, List[float]], Dict[str, Any]]:
    """Run every candidate once per round, ``repeats`` rounds: (seconds per candidate, last result of each).

    ``after(name)``, if given, runs untimed after each call (e.g. resetting gradients).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}")
    times: Dict[str, List[float]] = {name: [] for name in candidates}
    last: Dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in candidates.items():
            last[name], seconds = timed(fn)
            times[name].append(seconds)
            if after is not None:
                after(name)
    return times, last


def summary(seconds: List[float]) -> Dict[str, float]:
    """Mean, median, min and (sample) standard deviation of a list of timings."""
    if not seconds:
        raise ValueError("summary needs at least one timing, got none")
    return dict(mean=statistics.fmean(seconds), median=statistics.median(seconds), min=min(seconds),
                stdev=statistics.stdev(seconds) if len(seconds) > 1 else 0.0, count=len(seconds))


# ---------------------------------------------------------------- data
def digits() -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8×8 digits (bundled with it, no download): images [N, 1, 8, 8] in [0, 1], labels [N]."""
    from sklearn.datasets import load_digits  # benchmark-only dependency
    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0, torch.tensor(d.target, dtype=torch.long)


def classification_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """One cross-entropy training step (forward, backward, optimizer); returns its seconds."""
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- results
def write_atomic(path: Union[str, Path], text: str) -> Path:
    """``text`` to ``path`` atomically, creating the folder: a reader, or an interrupted run, sees the old
    file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)


def save_results(stem: str, markdown: str, data: Any, folder: Union[str, Path] = RESULTS, indent: int = 2) -> None:
    """``folder/<stem>.md`` (the printed table) and ``folder/<stem>.json`` (the numbers behind it)."""
    folder = Path(folder)
    write_atomic(folder / f'{stem}.md', markdown if markdown.endswith('\n') else markdown + '\n')
    write_atomic(folder / f'{stem}.json', json.dumps(data, indent=indent) + '\n')
