"""The detectors package's exceptions."""
from __future__ import annotations


class DetectorError(Exception):
    """Base class of every error raised by :mod:`detectors`."""


class UnknownDetector(DetectorError):
    """No detector is registered under the requested name."""


class DetectorConfigError(DetectorError):
    """A detector configuration key is unknown or has a bad value (the message names both)."""


class BackboneError(DetectorError):
    """A backbone name is unknown, or pretrained weights were asked for and cannot be had."""


class ImageSetError(DetectorError):
    """An image set is empty, unreadable, or its images have the wrong size or channel count."""


class ModelDirectoryError(DetectorError):
    """A model directory is missing files, was written by another method, or its weights are corrupt."""
