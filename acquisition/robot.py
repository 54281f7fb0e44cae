"""The ``Robot`` interface shared by the simulated and the real (ur_rtde) backends.

Poses are as ur_rtde gives them: ``[x, y, z, rx, ry, rz]``, metres and a rotation vector (radians),
TCP in the robot base frame. Joint vectors are 6 angles in radians. Speeds are m/s (linear) or rad/s
(joint); accelerations m/s^2 or rad/s^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class RobotStatus:
    """A snapshot of the controller state.

    ``robot_mode`` and ``safety_mode`` follow UR's numbering (robot mode 7 = running;
    safety mode 1 = normal, 3 = protective stop, 7 = emergency stop via robot, ...).
    """

    connected: bool
    robot_mode: int
    safety_mode: int
    protective_stopped: bool
    emergency_stopped: bool
    program_running: bool
    tcp_pose: tuple[float, ...] = field(default=())
    joint_positions: tuple[float, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when the robot can move: connected, normal safety, program running."""
        return (
            self.connected
            and not self.protective_stopped
            and not self.emergency_stopped
            and self.program_running
        )


@runtime_checkable
class Robot(Protocol):
    """A 6-axis arm. Failures raise :mod:`acquisition.errors` exceptions; no method returns ``False``."""

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Robot": ...

    def __exit__(self, *exc: object) -> None: ...

    def move_linear(self, pose: Sequence[float], speed: float, accel: float) -> None:
        """Move the TCP in a straight line to ``pose`` (6-vector); blocks until reached."""

    def move_joints(self, q: Sequence[float], speed: float, accel: float) -> None:
        """Move to joint vector ``q`` (6 angles, rad); blocks until reached."""

    def stop(self) -> None: ...

    def tcp_pose(self) -> np.ndarray:
        """The actual TCP pose, shape (6,)."""

    def joint_positions(self) -> np.ndarray:
        """The actual joint angles, shape (6,), radians."""

    def status(self) -> RobotStatus: ...

    def recover(self) -> None:
        """Clear a protective stop / restart the control program, or raise if that is impossible."""


def trapezoid_duration(distance: float, speed: float, accel: float) -> float:
    """Seconds to travel ``distance`` (m or rad; its magnitude) from rest to rest at most at ``speed`` with
    ``accel``: trapezoid ``d / v + v / a`` when ``d >= v^2 / a``, else triangle ``2 sqrt(d / a)``."""
    distance, speed, accel = abs(float(distance)), float(speed), float(accel)
    if distance <= 0:
        return 0.0
    if distance <= speed * speed / accel:
        return 2.0 * math.sqrt(distance / accel)
    return distance / speed + speed / accel
