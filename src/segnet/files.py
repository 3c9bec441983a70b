"""Writing files so that nothing is ever half-written: every output goes to a temporary file in
its destination folder and is renamed into place (``os.replace`` is atomic on one filesystem).

The one neutral helper at the package top: every layer writes through it, and it imports no
other part of the package.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Calls ``write(file)`` on a temp file beside ``path`` and renames it into place; on any
    error (or Ctrl-C) the temp file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
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
