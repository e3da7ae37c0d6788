"""Errors a user can act on, with messages that name the file and say what happened.

The command line prints such an error as one line (exit code 2); anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import errno
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["WriteError", "write_error"]


class WriteError(OSError):
    """A result or cache file could not be written. An OSError, so ``errno`` still tells a
    full disk from an unwritable folder; its text is the whole one-line explanation."""

    def __str__(self) -> str:
        return str(self.strerror)


def _megabytes(n_bytes: int) -> str:
    """``n_bytes`` for a message: ``0.01 MB``, ``12.3 MB``, ``2,048.0 MB``."""
    return f"{n_bytes / 1e6:,.1f} MB" if n_bytes >= 1e5 else f"{n_bytes / 1e6:.2g} MB"


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest folder of ``path`` that exists as a file instead (so nothing can go in it)."""
    for parent in path.parents:
        if parent.is_file():
            return parent
    return None


class _Tally(io.RawIOBase):
    """A seekable file that keeps only its length."""

    def __init__(self) -> None:
        super().__init__()
        self.position = self.size = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = memoryview(data).nbytes
        self.position += n
        self.size = max(self.size, self.position)
        return n

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = offset + (0, self.position, self.size)[whence]
        return self.position


def _written_size(write: Callable[[IO[bytes]], None]) -> int:
    """How many bytes ``write`` writes, counted without keeping them (a full disk stops a
    write partway, and holding a second copy of a large model in memory could fail too)."""
    tally = _Tally()
    write(tally)
    return tally.size


def write_error(path: Path, cause: OSError, write: Callable[[IO[bytes]], None]) -> WriteError:
    """``cause``, raised while ``write`` wrote ``path``, as a WriteError naming ``path``; for a
    full disk, ``write`` is run once more into a tally to say how much space it needed."""
    if cause.errno == errno.ENOSPC:
        parent = next(p for p in (path, *path.parents) if p.exists())
        free = shutil.disk_usage(parent).free
        text = (
            f"disk full writing {path}: needed about {_megabytes(_written_size(write))}, "
            f"{_megabytes(free)} free on that disk; free some space and rerun"
        )
    elif (in_the_way := _file_in_the_way(path)) is not None:
        text = f"cannot write {path}: {in_the_way} is a file, not a folder"
    else:
        text = f"cannot write {path}: {cause.strerror or cause}"
    return WriteError(cause.errno, text, str(path))
