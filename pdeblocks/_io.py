"""Atomic file writes: the one place where pdeblocks puts a file on disk.

A writer gets a temporary sibling ``.<name>.tmp<pid><suffix>`` (same folder, so ``os.replace`` is a
rename on one file system; same suffix, so writers that infer the format from it — ``savefig``,
``np.savetxt`` — still do), the data is flushed to disk, then moved onto ``path``. A reader, or an
interrupted run, sees the old file or the new one, never a partial one, and no temporary is left.
"""
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, 'os.PathLike[str]']


def temporary_sibling(path: PathLike) -> Path:
    """``.<name>.tmp<pid><suffix>`` next to ``path``."""
    path = Path(path)
    return path.with_name(f'.{path.name}.tmp{os.getpid()}{path.suffix}')


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and moved onto ``path``, on error removed.

    >>> with atomic_path('table.png') as tmp:
    ...     fig.savefig(tmp)                       # doctest: +SKIP
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        with open(tmp, 'rb+') as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, 'wb') as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode('utf-8'))


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2, sort_keys: bool = True) -> Path:
    """``obj`` as JSON (with a final newline) to ``path`` atomically; returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + '\n')


def save_figure(fig, path: PathLike, dpi: int = 100) -> Path:
    """A matplotlib figure to ``path`` atomically (the format from its suffix), then closed; returns ``path``."""
    import matplotlib.pyplot as plt
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return Path(path)
