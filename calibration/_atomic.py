"""Crash-safe file writes for calibration outputs (calibration files, printable boards)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` crash-safely and return it.

    ``write(tmp)`` writes the content to a temporary path in the same folder (any writer that takes a path:
    ``Path.write_text``, PIL's ``save``, matplotlib's ``savefig``); the file is then fsynced and renamed over
    ``path``. On any failure the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
