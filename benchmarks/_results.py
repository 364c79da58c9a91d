"""Where the benchmarks write their tables: ``benchmarks/results/<stem>.md`` and ``.json``, atomically.

Scripts run as ``python benchmarks/<script>.py`` have this folder on ``sys.path``, so they import it as
``from _results import save_results``.
"""
import json
import os
from pathlib import Path
from typing import Any, Union

RESULTS = Path(__file__).resolve().parent / 'results'


def write_atomic(path: Union[str, Path], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``: a reader
    (or an interrupted run) sees the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'{path.name}.tmp{os.getpid()}')
    tmp.write_text(text, encoding='utf-8')
    os.replace(tmp, path)
    return path


def save_results(stem: str, markdown: str, data: Any, folder: Union[str, Path] = RESULTS, indent: int = 2) -> None:
    """``folder/<stem>.md`` (the printed table) and ``folder/<stem>.json`` (the numbers behind it)."""
    folder = Path(folder)
    write_atomic(folder / f'{stem}.md', markdown if markdown.endswith('\n') else markdown + '\n')
    write_atomic(folder / f'{stem}.json', json.dumps(data, indent=indent) + '\n')
