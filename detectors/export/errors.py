"""The exceptions of :mod:`detectors.export` (part of the :class:`~detectors.errors.DetectorError` family, so
the CLI shows each as one ``error: ...`` line)."""
from __future__ import annotations

from detectors.errors import DetectorError


class ExportError(DetectorError):
    """A model cannot be exported, an exported directory is missing, stale or corrupt, or an exported model
    does not reproduce its torch model within the parity tolerance (the message says which, in one line)."""


class RuntimeMissing(ExportError):
    """The Python package a format or runtime needs is not installed (the message names it)."""
