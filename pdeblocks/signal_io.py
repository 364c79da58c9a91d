"""Reading and writing 1D signals for the command line: ``.npy``, ``.csv``, ``.txt``.

A file holds one or many signals of equal length: ``.npy`` a 1D array (one signal) or a 2D array
(one signal per row), never pickled objects; ``.csv`` comma-separated and ``.txt``
whitespace-separated rows, one signal per row (a file with a single column is read as one
signal). Empty files, ragged rows, non-numeric cells, NaN/Inf raise a ValueError naming the
problem. Writing is atomic (:func:`pdeblocks._io.atomic_path`): no partial output is ever left.
"""
from pathlib import Path
from typing import Union

import numpy as np

from ._io import atomic_path

FORMATS = ('.npy', '.csv', '.txt')


def _suffix(path: Union[str, Path]) -> str:
    suf = Path(path).suffix.lower()
    if suf not in FORMATS:
        raise ValueError(f"unsupported file type {suf or '(none)'!r} for {path}; expected one of {FORMATS}")
    return suf


def read_signals(path: Union[str, Path]) -> np.ndarray:
    """``[count, length]`` float64 signals from a file (see the module docstring)."""
    suf = _suffix(path)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"input file {path} does not exist")
    if suf == '.npy':
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ValueError(f"cannot read {path} as a .npy array: {exc}") from None
        if arr.dtype.kind not in 'iuf':
            raise ValueError(f"{path} holds dtype {arr.dtype}; expected a numeric array")
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"{path} holds an array of shape {arr.shape}; expected [length] or [count, length]")
        arr = arr.astype(np.float64)
    else:
        text = path.read_text(encoding='utf-8', errors='replace')
        rows = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith('#')]
        cells = [[c.strip() for c in (r.split(',') if suf == '.csv' else r.split())] for r in rows]
        widths = {len(r) for r in cells}
        if len(widths) > 1:
            raise ValueError(f"{path} has ragged rows (row lengths {sorted(widths)}); every signal needs the same length")
        values = []
        for i, r in enumerate(cells):
            row = []
            for j, c in enumerate(r):
                try:
                    row.append(float(c))
                except ValueError:
                    raise ValueError(f"{path}, row {i + 1}, column {j + 1}: {c!r} is not a number") from None
            values.append(row)
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 2 and arr.shape[1] == 1 and arr.shape[0] > 1:
            arr = arr.T  # a single column is one signal
    if arr.size == 0:
        raise ValueError(f"{path} holds no signal (empty file)")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{path} contains NaN or Inf (first at signal {bad[0] + 1}, sample {bad[1] + 1})")
    return arr


def write_signals(path: Union[str, Path], signals: np.ndarray, one_dimensional: bool = False) -> None:
    """Write ``[count, length]`` signals atomically in the format of ``path``'s extension."""
    suf = _suffix(path)
    path = Path(path)
    arr = np.asarray(signals, dtype=np.float64)
    with atomic_path(path) as tmp:
        if suf == '.npy':
            with open(tmp, 'wb') as fh:
                np.save(fh, arr[0] if one_dimensional and arr.shape[0] == 1 else arr, allow_pickle=False)
        else:
            np.savetxt(tmp, arr, delimiter=',' if suf == '.csv' else ' ', fmt='%.9g')
