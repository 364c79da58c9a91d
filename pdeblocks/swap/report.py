"""What :func:`~pdeblocks.swap.swap_blocks` did: :class:`SwapReport` with one record per swapped or
skipped module and, after calibration, each block's fit."""
from dataclasses import dataclass, field
from typing import List, Optional

from .registry import SWAP_RULES


@dataclass
class CalibrationRecord:
    """Block-wise fit of one swapped module: relative error e = ‖new(x) − old(x)‖ / ‖old(x)‖ over the
    calibration data before and after ``steps`` Adam steps (``note`` says why a block was not fitted)."""

    steps: int
    error_before: float
    error_after: float
    note: str = ''


@dataclass
class SwapRecord:
    path: str
    old_class: str
    new_class: str
    params_before: int
    params_after: int
    init: str
    calibration: Optional[CalibrationRecord] = None


@dataclass
class SkipRecord:
    path: str
    old_class: str
    reason: str


@dataclass
class SwapReport:
    """What :func:`swap_blocks` did: every swapped path, what could not be swapped and why."""

    block: str
    swapped: List[SwapRecord] = field(default_factory=list)
    skipped: List[SkipRecord] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    calibration_samples: int = 0       # inputs in the calibration data (0: no calibration)
    calibration_seconds: float = 0.0   # wall time of the block-wise fit, captures included

    @property
    def changed(self) -> bool:
        return bool(self.swapped)

    @property
    def step_paths(self) -> List[str]:
        """Module paths of the PDE steps, the modules carrying ``stability_certificate()``."""
        return [f"{r.path}.step" if r.path else 'step' for r in self.swapped]

    def __str__(self) -> str:
        lines = [f"swap_blocks(block={self.block!r}): {len(self.swapped)} swapped, {len(self.skipped)} skipped"]
        if not self.swapped:
            lines.append("nothing swapped: the model is returned unchanged"
                         + ("" if self.skipped else " (no module with a swap rule was found; "
                            f"rules exist for {len(SWAP_RULES)} classes, see pdeblocks.swap.SWAP_RULES)"))
        if self.swapped:
            w = max(len(r.path or '(root)') for r in self.swapped)
            lines.append(f"  {'path':<{w}}  {'old → new':<40} {'params':>21}  init")
            for r in self.swapped:
                change = f"{r.old_class} → {r.new_class}"
                c = r.calibration
                fit = '' if c is None else (f"; calibrated: error {c.error_before:.3g} → {c.error_after:.3g} "
                                            f"({c.steps} steps{', ' + c.note if c.note else ''})")
                lines.append(f"  {r.path or '(root)':<{w}}  {change:<40} {r.params_before:>9,} → {r.params_after:>9,}  "
                             f"{r.init}{fit}")
        for s in self.skipped:
            lines.append(f"  not swapped: {s.path} ({s.old_class}): {s.reason}")
        if self.params_before:
            drop = 1.0 - self.params_after / self.params_before
            change = f"{drop:.1%} fewer" if drop >= 0 else f"{-drop:.1%} more"
            lines.append(f"  parameters: {self.params_before:,} → {self.params_after:,} ({change})")
        if self.calibration_samples:
            lines.append(f"  calibration: {self.calibration_samples:,} inputs, {self.calibration_seconds:.1f} s "
                         f"(relative error of each swapped block's output against the replaced block's)")
        return '\n'.join(lines)
