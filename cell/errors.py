"""The application's exceptions, and the set of exceptions the CLI reports as one plain line."""
from __future__ import annotations

from acquisition.errors import AcquisitionError
from calibration.errors import CalibrationError
from detectors.errors import DetectorError


class CellError(Exception):
    """Base class of errors raised by :mod:`cell` itself."""


class ConfigFileError(CellError):
    """A YAML config file is missing, malformed, or fails validation (names file, key and value)."""


class CampaignError(CellError):
    """A campaign could not run or was stopped by a fault (the message says what happened)."""


class CampaignInterrupted(CampaignError):
    """A campaign was stopped by Ctrl+C or SIGTERM; it was closed as ``interrupted`` (``--resume`` continues).
    ``signum``: the signal (the CLI exits with 128 + signum, as a shell reports a signal)."""

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.signum = signum


class LineStopped(CellError):
    """The line must stop before the next part (the PLC went away or did not answer in time, as configured):
    the inspection loop ends cleanly, the campaign is recorded as stopped with this reason."""


#: Exceptions that are the user's or the environment's, never a bug: shown as one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (CellError, AcquisitionError, CalibrationError, DetectorError)
