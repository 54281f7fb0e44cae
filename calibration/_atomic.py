"""Crash-safe file writes for calibration outputs (calibration files, printable boards)."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` crash-safely and return it.

    ``write(tmp)`` writes the content to a temporary path in the same folder (any writer that takes a path:
    ``Path.write_text``, PIL's ``save``, matplotlib's ``savefig``); the file is then fsynced and renamed over
    ``path``. On any failure the temporary file is removed and ``path`` keeps its previous content.
    The file gets the mode any new file gets (0666 less the umask: 0644 under umask 022), not
    :func:`tempfile.mkstemp`'s private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _create_temporary(path: Path) -> Path:
    """Create a new empty file beside ``path`` (exclusively, mode 0666 less the umask) and return its path."""
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}{path.suffix}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {path}")
