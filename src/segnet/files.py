"""Writing files so that nothing is ever half-written: every output goes to a temporary file in
its destination folder and is renamed into place (``os.replace`` is atomic on one filesystem).

The neutral helper at the package top: every layer writes through it, and it imports nothing of
the package but the errors. The CLI checks every output path with ``check_output_*`` before any
work starts, so a bad ``--out`` fails in a second, not after an hour of training.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ArgumentError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Calls ``write(file)`` on a temp file beside ``path`` and renames it into place; on any
    error (or Ctrl-C) the temp file is removed and ``path`` is left as it was."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """The name of a temp file beside ``path``, for writers that need a name rather than a file
    object (a video encoder); renamed into place when the block ends, removed on any error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | Path, payload: Any) -> None:
    """Indented JSON with a final newline, written atomically."""
    write_text(path, json.dumps(payload, indent=2) + "\n")


def check_output_file(
    path: str | Path, *, argument: str, inputs: tuple[str | Path, ...] = ()
) -> Path:
    """Before any work: ``path`` can be written as a file and is none of ``inputs``.

    Raises ``ArgumentError(argument, ...)``: a folder where a file is due, a file where a folder
    is due on the way, a place that cannot be written, or an output that would replace an input.
    """
    path = Path(path)
    if path.is_dir():
        raise ArgumentError(argument, f"{path}: is a folder; give a file name")
    for given in inputs:
        if given is not None and Path(given).exists() and path.exists() and path.samefile(given):
            raise ArgumentError(argument, f"{path}: is an input of this command; write elsewhere")
    _check_writable_parent(path, argument)
    return path


def check_output_dir(path: str | Path, *, argument: str) -> Path:
    """Before any work: ``path`` is, or can be made, a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ArgumentError(argument, f"{path}: is a file; give a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ArgumentError(
                argument, f"{path}: cannot write in this folder (permission denied)"
            )
        return path
    _check_writable_parent(path, argument)
    return path


def _check_writable_parent(path: Path, argument: str) -> None:
    """The nearest existing ancestor is a folder we may create entries in."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ArgumentError(argument, f"{path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ArgumentError(argument, f"{path}: cannot write in {ancestor} (permission denied)")
