"""Where the benchmarks write their tables: ``benchmarks/results/<stem>.md`` and ``.json``, atomically.

Scripts run as ``python benchmarks/<script>.py`` have this folder on ``sys.path``, so they import it as
``from _results import save_results``.
"""
import json
import sys
from pathlib import Path
from typing import Any, Union

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pdeblocks._io import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / 'results'


def write_atomic(path: Union[str, Path], text: str) -> Path:
    """``text`` to ``path`` through :func:`pdeblocks._io.atomic_write_text`, creating the folder: a reader,
    or an interrupted run, sees the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)


def save_results(stem: str, markdown: str, data: Any, folder: Union[str, Path] = RESULTS, indent: int = 2) -> None:
    """``folder/<stem>.md`` (the printed table) and ``folder/<stem>.json`` (the numbers behind it)."""
    folder = Path(folder)
    write_atomic(folder / f'{stem}.md', markdown if markdown.endswith('\n') else markdown + '\n')
    write_atomic(folder / f'{stem}.json', json.dumps(data, indent=indent) + '\n')
