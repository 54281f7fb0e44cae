"""The calibration package's exceptions."""
from __future__ import annotations


class CalibrationError(Exception):
    """Base class of every error raised by :mod:`calibration`."""


class NotEnoughViews(CalibrationError):
    """Too few usable views to calibrate; the message says how many were found and how many are needed."""


class CalibrationFileError(CalibrationError):
    """A calibration file is missing, malformed, of an unsupported format version, or for another camera."""
