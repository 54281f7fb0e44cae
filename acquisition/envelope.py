"""The safety envelope: where the TCP may go and how fast, checked BEFORE any motion.

A pose, a move's speed and acceleration, or a whole pose plan is refused with
:class:`~acquisition.errors.EnvelopeViolation` whose one-line message names the pose and the limit, e.g.
``pose r2c3s1: z = 0.012 m is below the workspace floor 0.050 m``. Nothing moves when a check fails.

Units: metres, m/s, m/s^2 for the TCP; rad/s, rad/s^2 for joints; the tool-down tolerance in degrees
(typed by a person). The workspace box lives in the robot base frame and bounds the TCP position.
"""
from __future__ import annotations

import math
from typing import Iterable, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from acquisition.errors import EnvelopeViolation

_AXES = ("x", "y", "z")


class _HasPose(Protocol):
    pose_id: str
    pose: np.ndarray


def tool_down_angle(pose: Sequence[float] | np.ndarray) -> float:
    """Angle (radians, in [0, pi]) between the TCP z-axis of ``pose`` (6,) and the base -z direction."""
    rx, ry, rz = (float(v) for v in np.asarray(pose, dtype=float)[3:6])
    theta = math.sqrt(rx * rx + ry * ry + rz * rz)
    # R[2, 2] by Rodrigues' formula: the z-component of the tool z-axis in the base frame
    r22 = 1.0 if theta < 1e-15 else math.cos(theta) + (rz / theta) ** 2 * (1.0 - math.cos(theta))
    return math.acos(max(-1.0, min(1.0, -r22)))


def _describe(label: str, pose: np.ndarray) -> str:
    if label:
        return f"pose {label}"
    return "pose [" + ", ".join(f"{v:.4f}" for v in pose) + "]"


class SafetyEnvelope(BaseModel):
    """Workspace box, speed and acceleration limits, and how far the tool may tilt from pointing down.

    Defaults fit the simulated UR5 cell: the table (z = 0) area in front of the robot, parts centred
    near (0, -0.45, 0) m (the scene's default) or (0.45, -0.10, 0) m, the TCP at least 0.10 m above the
    table and at most 0.75 m.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace_min: tuple[float, float, float] = Field(
        default=(-0.45, -0.75, 0.10), description="lower corner of the TCP box in the base frame, m"
    )
    workspace_max: tuple[float, float, float] = Field(
        default=(0.75, 0.25, 0.75), description="upper corner of the TCP box in the base frame, m"
    )
    max_speed: float = Field(default=0.5, gt=0, le=3.0, description="largest TCP speed of a linear move, m/s")
    max_accel: float = Field(default=2.0, gt=0, le=15.0, description="largest TCP acceleration, m/s^2")
    max_joint_speed: float = Field(default=1.5, gt=0, le=3.2, description="largest joint speed, rad/s")
    max_joint_accel: float = Field(default=3.0, gt=0, le=40.0, description="largest joint acceleration, rad/s^2")
    tool_down_tolerance_deg: float = Field(
        default=15.0, ge=0, le=180, description="largest angle between the tool z-axis and base -z, degrees"
    )

    @model_validator(mode="after")
    def _box_is_ordered(self) -> "SafetyEnvelope":
        for axis, lo, hi in zip(_AXES, self.workspace_min, self.workspace_max):
            if not lo < hi:
                raise ValueError(
                    f"workspace_min.{axis} = {lo} must be below workspace_max.{axis} = {hi}"
                )
        return self

    # --- checks -----------------------------------------------------------------------------------
    def check_pose(self, pose: Sequence[float] | np.ndarray, label: str = "") -> None:
        """Raise :class:`EnvelopeViolation` if the TCP pose (6,) leaves the box or tilts too far.

        ``label`` names the pose in the message (a plan's pose id such as ``r2c3s1``).
        """
        arr = np.asarray(pose, dtype=float)
        if arr.shape != (6,):
            raise EnvelopeViolation(f"{_describe(label, np.zeros(0))}: a pose needs 6 values, got shape {arr.shape}")
        who = _describe(label, arr)
        if not np.all(np.isfinite(arr)):
            raise EnvelopeViolation(f"{who}: contains a non-finite value {arr.tolist()}")
        self._check_position(arr, who)
        angle_deg = math.degrees(tool_down_angle(arr))
        if angle_deg > self.tool_down_tolerance_deg:
            raise EnvelopeViolation(
                f"{who}: the tool z-axis is {angle_deg:.1f} deg from pointing down, beyond the "
                f"tolerance tool_down_tolerance_deg = {self.tool_down_tolerance_deg:.1f} deg"
            )

    def check_position(self, pose: Sequence[float] | np.ndarray, label: str = "") -> None:
        """Like :meth:`check_pose` but only the workspace box: ``pose`` is a pose (6,) or a point (3,), m."""
        arr = np.asarray(pose, dtype=float)
        who = _describe(label, arr.reshape(-1))
        if arr.shape not in ((3,), (6,)) or not np.all(np.isfinite(arr)):
            raise EnvelopeViolation(f"{who}: not a finite pose (6,) or position (3,)")
        self._check_position(arr, who)

    def _check_position(self, arr: np.ndarray, who: str) -> None:
        for i, axis in enumerate(_AXES):
            value, lo, hi = float(arr[i]), self.workspace_min[i], self.workspace_max[i]
            if value < lo:
                where = "below the workspace floor" if axis == "z" else f"below the workspace minimum {axis}"
                raise EnvelopeViolation(f"{who}: {axis} = {value:.3f} m is {where} {lo:.3f} m")
            if value > hi:
                where = "above the workspace ceiling" if axis == "z" else f"above the workspace maximum {axis}"
                raise EnvelopeViolation(f"{who}: {axis} = {value:.3f} m is {where} {hi:.3f} m")

    def check_motion(self, speed: float, accel: float, joint: bool = False) -> None:
        """Raise :class:`EnvelopeViolation` if a move's speed/acceleration is not positive or over the limit.

        Linear moves (``joint=False``): m/s and m/s^2 against ``max_speed``/``max_accel``; joint moves:
        rad/s and rad/s^2 against ``max_joint_speed``/``max_joint_accel``.
        """
        kind = "joint" if joint else "linear"
        unit = "rad/s" if joint else "m/s"
        limits = (
            (("speed", speed, "max_joint_speed", self.max_joint_speed, unit),
             ("acceleration", accel, "max_joint_accel", self.max_joint_accel, unit + "^2"))
            if joint
            else (("speed", speed, "max_speed", self.max_speed, unit),
                  ("acceleration", accel, "max_accel", self.max_accel, unit + "^2"))
        )
        for what, value, key, limit, u in limits:
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise EnvelopeViolation(f"{kind} {what} {value!r} is not a number") from None
            if not math.isfinite(value) or value <= 0:
                raise EnvelopeViolation(f"{kind} {what} must be a positive number, got {value!r} {u}")
            if value > limit:
                raise EnvelopeViolation(f"{kind} {what} {value:.3f} {u} exceeds {key} {limit:.3f} {u}")

    def check_plan(
        self,
        poses: Iterable[_HasPose],
        speed: float | None = None,
        accel: float | None = None,
    ) -> None:
        """Check every planned pose (objects with ``pose_id`` and ``pose`` (6,)) and, when given, the
        plan's linear speed (m/s) and acceleration (m/s^2). Raises on the first violation, before any motion.
        """
        if speed is not None or accel is not None:
            self.check_motion(
                self.max_speed if speed is None else speed,
                self.max_accel if accel is None else accel,
                joint=False,
            )
        for planned in poses:
            self.check_pose(planned.pose, label=planned.pose_id)
