"""The acquisition package's exceptions.

Every failure of a robot, camera or store is an exception of this hierarchy, never a ``False`` return
to be forgotten. The CLI turns :class:`AcquisitionError` into one plain line and a non-zero exit.
"""
from __future__ import annotations


class AcquisitionError(Exception):
    """Base class of every error raised by :mod:`acquisition`."""


class ConfigError(AcquisitionError):
    """A cell, camera, robot or campaign configuration is invalid (names the file, key and value)."""


# --- robot -----------------------------------------------------------------------------------------
class RobotError(AcquisitionError):
    """Base class of robot failures."""


class ConnectionLost(RobotError):
    """The link to the controller is down (refused, timed out, or dropped mid-session)."""


class ProtectiveStop(RobotError):
    """The controller is in a protective stop; ``Robot.recover()`` may clear it."""


class EmergencyStop(RobotError):
    """The emergency stop is pressed; a person must release it."""


class ProgramNotRunning(RobotError):
    """The control script on the controller is not running (RTDE control interface)."""


class MotionFailed(RobotError):
    """A move was not executed or did not reach its target within tolerance."""


class UnreachablePose(MotionFailed):
    """Inverse kinematics has no solution for the commanded pose."""


class EnvelopeViolation(RobotError):
    """A commanded pose, speed or acceleration lies outside the safety envelope; nothing was moved."""


# --- camera ----------------------------------------------------------------------------------------
class CameraError(AcquisitionError):
    """Base class of camera failures."""


class CameraNotFound(CameraError):
    """No camera matches the configured serial number or index, or the producer file is missing."""


class CameraTimeout(CameraError):
    """No frame arrived within the timeout."""


class CameraLost(CameraError):
    """The device disappeared or stopped answering."""


class CameraConfigError(CameraError):
    """A feature (exposure, gain, pixel format, ROI) could not be set to the requested value."""


# --- store -----------------------------------------------------------------------------------------
class StoreError(AcquisitionError):
    """The capture store could not be read or written (the store itself stays consistent)."""


class UnknownCapture(StoreError):
    """The store holds no capture of that id (an id that cannot be a row id included)."""
