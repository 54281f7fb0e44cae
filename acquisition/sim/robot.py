"""A simulated UR5 implementing :class:`acquisition.robot.Robot` on a :class:`SimClock`.

Moves follow a trapezoidal time profile (triangular when too short to reach the speed): a linear move
on the Cartesian path length with the orientation interpolated by slerp, a joint move on the largest
joint displacement with all joints synchronised (as URScript's ``movel``/``movej``). Before anything
moves, a move is checked: argument shapes, the safety envelope (when given: speed, acceleration, the
target and points along the path), and reachability of every sampled point of the path (inverse
kinematics, joint limits, no branch flip near a singularity). A refused move leaves the robot where it
was and is not logged.

Faults can be armed from the config or at run time (:meth:`SimRobot.inject_fault`); a fault fires on
the N-th move *that passed those checks*, counted from when it was armed:

- ``protective_stop``: the robot stops part-way (``stop_fraction`` of the move's duration), the status
  shows a protective stop, :class:`ProtectiveStop` is raised; every move raises it until :meth:`recover`.
- ``connection_lost``: the robot stops part-way, :class:`ConnectionLost` is raised, and every call but
  :meth:`status`, :meth:`connect` and :meth:`recover` raises it until one of those two reconnects
  (:meth:`recover` reconnects after a lost link, as ``URRobot.recover`` does).
- ``unreachable``: :class:`UnreachablePose` is raised and nothing moves (as poses listed in
  ``faults.unreachable_poses`` always do).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from acquisition.envelope import SafetyEnvelope
from acquisition.errors import ConnectionLost, MotionFailed, ProtectiveStop, UnreachablePose
from acquisition.robot import RobotStatus, trapezoid_duration
from acquisition.sim.clock import SimClock
from acquisition.sim.kinematics import (
    UR5_HOME_JOINTS,
    UR5_JOINT_LIMIT,
    UR5Kinematics,
    fast_matrix_to_pose,
    fast_matrix_to_rotvec,
    fast_pose_to_matrix,
    interpolate_pose_matrix,
)

#: UR robot modes and safety modes reported by :meth:`SimRobot.status`.
ROBOT_MODE_DISCONNECTED = 0
ROBOT_MODE_RUNNING = 7
SAFETY_MODE_NORMAL = 1
SAFETY_MODE_PROTECTIVE_STOP = 3

FaultKind = Literal["protective_stop", "connection_lost", "unreachable"]
_FAULT_KINDS: tuple[str, ...] = ("protective_stop", "connection_lost", "unreachable")

Pose6 = tuple[float, float, float, float, float, float]


# --- time profile ------------------------------------------------------------------------------------
def trapezoid_position(t: float, distance: float, speed: float, accel: float) -> float:
    """Distance covered at time ``t`` (s) of the profile of :func:`trapezoid_duration`; clamped to [0, d]."""
    total = trapezoid_duration(distance, speed, accel)
    if distance <= 0 or t <= 0:
        return 0.0
    if t >= total:
        return distance
    peak = min(speed, math.sqrt(distance * accel))
    t_acc = peak / accel
    if t <= t_acc:
        return 0.5 * accel * t * t
    if t >= total - t_acc:
        rest = total - t
        return distance - 0.5 * accel * rest * rest
    return 0.5 * accel * t_acc * t_acc + peak * (t - t_acc)


# --- config ------------------------------------------------------------------------------------------
class SimRobotFaults(BaseModel):
    """Faults armed when the robot is made (move numbers count from 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protective_stop_on_move: int | None = Field(default=None, ge=1)
    connection_lost_on_move: int | None = Field(default=None, ge=1)
    unreachable_on_move: int | None = Field(default=None, ge=1)
    unreachable_poses: list[Pose6] = Field(
        default_factory=list, description="TCP poses the sim refuses as unreachable (matched within 1e-4 m/rad)"
    )
    stop_fraction: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="fraction of a move's duration done when a fault stops it"
    )


class SimRobotConfig(BaseModel):
    """The simulated robot's section of a cell config. Metres, radians, seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home_joints: Pose6 = Field(default=UR5_HOME_JOINTS, description="joint angles at start, rad")
    tcp_offset: Pose6 = Field(
        default=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0), description="TCP in the flange frame (ur_rtde setTcp), m + rotvec"
    )
    path_step_m: float = Field(default=0.005, gt=0.0, le=0.1, description="sampling of a linear path, m")
    path_step_rad: float = Field(default=0.02, gt=0.0, le=0.5, description="sampling of rotations/joint paths, rad")
    max_joint_step_rad: float = Field(
        default=0.2, gt=0.0, le=3.0,
        description="largest joint change between path samples of a linear move before it counts as "
        "passing a singularity, rad",
    )
    rotation_equivalent_radius_m: float = Field(
        default=0.1, gt=0.0, le=1.0,
        description="linear moves: a tool rotation of 1 rad costs as much path as this many metres",
    )
    control_period_s: float = Field(
        default=0.008, gt=0.0, le=1.0, description="step of a paced move (realtime_factor > 0), s"
    )
    repeatability_m: float = Field(
        default=0.0, ge=0.0, le=0.005, description="std of the actual vs commanded position after a linear move, m"
    )
    seed: int = Field(default=0, description="seed of the repeatability noise")
    faults: SimRobotFaults = Field(default_factory=SimRobotFaults)

    @field_validator("home_joints")
    @classmethod
    def _within_joint_limits(cls, value: Pose6) -> Pose6:
        if not all(math.isfinite(v) and abs(v) <= UR5_JOINT_LIMIT for v in value):
            raise ValueError(f"joint angles must be finite and within +-{UR5_JOINT_LIMIT:.4f} rad, got {list(value)}")
        return value

    @field_validator("tcp_offset")
    @classmethod
    def _finite(cls, value: Pose6) -> Pose6:
        if not all(math.isfinite(v) for v in value):
            raise ValueError(f"values must be finite, got {list(value)}")
        return value


@dataclass(frozen=True)
class MoveRecord:
    """One executed (or part-executed) move. Poses (6,) in the base frame, joints (6,) rad, times s."""

    index: int
    kind: Literal["linear", "joint"]
    start_pose: np.ndarray
    target_pose: np.ndarray
    end_pose: np.ndarray
    start_joints: np.ndarray
    target_joints: np.ndarray
    end_joints: np.ndarray
    path_length: float  # m for linear moves (rotation included via rotation_equivalent_radius_m), rad for joint
    speed: float
    accel: float
    planned_duration: float
    t_start: float
    duration: float
    outcome: Literal["done", "protective_stop", "connection_lost", "stopped"]


@dataclass
class _Trajectory:
    """A checked move ready to execute: ``state_at(s)`` gives (pose, joints) at path fraction s in [0, 1]."""

    kind: Literal["linear", "joint"]
    length: float
    speed: float
    accel: float
    target_pose: np.ndarray
    target_joints: np.ndarray
    samples_s: np.ndarray  # (K,) path fractions of the checked samples
    samples_q: np.ndarray  # (K, 6) joints at those samples


# --- the robot ---------------------------------------------------------------------------------------
class SimRobot:
    """A simulated UR5 (see the module docstring). Starts at ``config.home_joints``, not connected."""

    def __init__(
        self,
        config: SimRobotConfig | None = None,
        clock: SimClock | None = None,
        envelope: SafetyEnvelope | None = None,
    ) -> None:
        self.config = config if config is not None else SimRobotConfig()
        self.clock = clock if clock is not None else SimClock()
        self.envelope = envelope
        self.kinematics = UR5Kinematics(tcp_offset=self.config.tcp_offset)
        self._q = np.asarray(self.config.home_joints, dtype=float).copy()
        self._lock = threading.RLock()
        self._stop_event = threading.Event()
        self._rng = np.random.default_rng(self.config.seed)
        self._connected = False
        self._link_lost = False
        self._protective_stop = False
        self._commands = 0  # moves that passed the checks (fault counter)
        self._log: list[MoveRecord] = []
        self._armed: dict[str, int] = {}
        faults = self.config.faults
        for kind, n in (
            ("protective_stop", faults.protective_stop_on_move),
            ("connection_lost", faults.connection_lost_on_move),
            ("unreachable", faults.unreachable_on_move),
        ):
            if n is not None:
                self._armed[kind] = n
        self._unreachable = [np.asarray(p, dtype=float) for p in faults.unreachable_poses]

    # --- connection --------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the (simulated) link; also restores a lost connection. The robot keeps its pose."""
        with self._lock:
            self._connected = True
            self._link_lost = False

    def close(self) -> None:
        """Close the link; later calls raise :class:`ConnectionLost` until :meth:`connect`."""
        with self._lock:
            self._connected = False

    def __enter__(self) -> "SimRobot":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- faults ------------------------------------------------------------------------------------
    def inject_fault(self, kind: FaultKind, on_move: int = 1) -> None:
        """Arm a fault on the ``on_move``-th checked move from now (1 = the next one)."""
        if kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(_FAULT_KINDS)}")
        if int(on_move) < 1:
            raise ValueError(f"on_move counts moves from 1, got {on_move!r}")
        with self._lock:
            self._armed[kind] = self._commands + int(on_move)

    def clear_faults(self) -> None:
        """Disarm every pending fault (a stop or lost link already in effect stays)."""
        with self._lock:
            self._armed.clear()

    # --- state -------------------------------------------------------------------------------------
    def _require_link(self) -> None:
        if not self._connected:
            raise ConnectionLost("sim robot: not connected (call connect())")
        if self._link_lost:
            raise ConnectionLost("sim robot: connection lost; call connect() to reconnect")

    def _require_ready(self) -> None:
        self._require_link()
        if self._protective_stop:
            raise ProtectiveStop("sim robot: in a protective stop; call recover() to clear it")

    def tcp_pose(self) -> np.ndarray:
        """Actual TCP pose (6,) ``[x, y, z, rx, ry, rz]`` in the base frame (m, rad)."""
        with self._lock:
            self._require_link()
            return self.kinematics.forward(self._q)

    def joint_positions(self) -> np.ndarray:
        """Actual joint angles (6,), rad."""
        with self._lock:
            self._require_link()
            return self._q.copy()

    def status(self) -> RobotStatus:
        """Controller state; never raises (a lost link shows as ``connected=False``)."""
        with self._lock:
            linked = self._connected and not self._link_lost
            return RobotStatus(
                connected=linked,
                robot_mode=ROBOT_MODE_RUNNING if linked else ROBOT_MODE_DISCONNECTED,
                safety_mode=SAFETY_MODE_PROTECTIVE_STOP if self._protective_stop else SAFETY_MODE_NORMAL,
                protective_stopped=self._protective_stop,
                emergency_stopped=False,
                program_running=linked and not self._protective_stop,
                tcp_pose=tuple(float(v) for v in self.kinematics.forward(self._q)) if linked else (),
                joint_positions=tuple(float(v) for v in self._q) if linked else (),
            )

    def recover(self) -> None:
        """Make the robot ready to move again, as ``URRobot.recover`` does: a lost (or closed) link is
        reconnected, a protective stop cleared and the control program restarted; a no-op when the robot
        is fine. The robot keeps its pose (where a lost link stopped it)."""
        with self._lock:
            self._connected = True
            self._link_lost = False
            self._protective_stop = False

    def stop(self) -> None:
        """Stop a move in progress (from another thread, while paced); idle robot: no-op."""
        self._require_link()
        self._stop_event.set()

    @property
    def move_log(self) -> tuple[MoveRecord, ...]:
        """Every executed or part-executed move, oldest first."""
        with self._lock:
            return tuple(self._log)

    @property
    def move_count(self) -> int:
        """Number of moves that started moving."""
        return len(self._log)

    @property
    def last_move_duration(self) -> float | None:
        """Sim seconds the last move took (None before any move)."""
        with self._lock:
            return self._log[-1].duration if self._log else None

    # --- moves -------------------------------------------------------------------------------------
    def move_linear(self, pose: Sequence[float], speed: float, accel: float) -> None:
        """Straight-line TCP move to ``pose`` (6,) at ``speed`` m/s, ``accel`` m/s^2; blocks (sim time)."""
        target = _finite_vector(pose, "pose")
        speed, accel = _positive(speed, "speed"), _positive(accel, "accel")
        with self._lock:
            self._require_ready()
            if self.envelope is not None:
                self.envelope.check_motion(speed, accel, joint=False)
                self.envelope.check_pose(target, label="move_linear target")
            self._refuse_listed(target)
            trajectory = self._plan_linear(target, speed, accel)
            self._execute(trajectory)

    def move_joints(self, q: Sequence[float], speed: float, accel: float) -> None:
        """Joint move to ``q`` (6,) rad at ``speed`` rad/s, ``accel`` rad/s^2 (leading joint); blocks."""
        target_q = _finite_vector(q, "q")
        speed, accel = _positive(speed, "speed"), _positive(accel, "accel")
        with self._lock:
            self._require_ready()
            beyond = np.flatnonzero(np.abs(target_q) > UR5_JOINT_LIMIT)
            if beyond.size:
                j = int(beyond[0])
                raise MotionFailed(
                    f"move_joints: joint {j + 1} target {target_q[j]:.4f} rad is beyond the limit "
                    f"+-{UR5_JOINT_LIMIT:.4f} rad"
                )
            target_pose = self.kinematics.forward(target_q)
            if self.envelope is not None:
                self.envelope.check_motion(speed, accel, joint=True)
                self.envelope.check_pose(target_pose, label="move_joints target")
            self._refuse_listed(target_pose)
            trajectory = self._plan_joint(target_q, target_pose, speed, accel)
            self._execute(trajectory)

    def _refuse_listed(self, target: np.ndarray) -> None:
        for bad in self._unreachable:
            if np.all(np.abs(bad - target) <= 1e-4):
                shown = ", ".join(f"{v:.4f}" for v in target)
                raise UnreachablePose(f"sim robot: pose [{shown}] is configured as unreachable")

    def _plan_linear(self, target: np.ndarray, speed: float, accel: float) -> _Trajectory:
        start_m = fast_pose_to_matrix(self.kinematics.forward(self._q))
        target_m = fast_pose_to_matrix(target)
        translation = float(np.linalg.norm(target_m[:3, 3] - start_m[:3, 3]))
        relative = fast_matrix_to_rotvec(start_m[:3, :3].T @ target_m[:3, :3])
        angle = float(np.linalg.norm(relative))
        length = max(translation, angle * self.config.rotation_equivalent_radius_m)
        n = max(2, int(math.ceil(translation / self.config.path_step_m)), int(math.ceil(angle / self.config.path_step_rad)))
        fractions = np.linspace(0.0, 1.0, n + 1)
        joints = np.empty((n + 1, 6))
        joints[0] = self._q
        shown = ", ".join(f"{v:.4f}" for v in target)
        for i in range(1, n + 1):
            point = interpolate_pose_matrix(start_m, target_m, relative, fractions[i])
            pose = fast_matrix_to_pose(point)
            if self.envelope is not None:
                self.envelope.check_pose(pose, label=f"move_linear path point {i}/{n}")
            try:
                joints[i] = self.kinematics.inverse(pose, q_near=joints[i - 1])
            except UnreachablePose:
                raise UnreachablePose(
                    f"move_linear to [{shown}]: the straight path leaves the UR5's reach at "
                    f"{100 * fractions[i]:.0f} % of the way"
                ) from None
            jump = np.abs(joints[i] - joints[i - 1])
            if float(jump.max()) > self.config.max_joint_step_rad:
                j = int(np.argmax(jump))
                raise UnreachablePose(
                    f"move_linear to [{shown}]: the straight path passes a singularity at "
                    f"{100 * fractions[i]:.0f} % of the way (joint {j + 1} would jump {jump[j]:.2f} rad)"
                )
        return _Trajectory("linear", length, speed, accel, target, joints[-1].copy(), fractions, joints)

    def _plan_joint(self, target_q: np.ndarray, target_pose: np.ndarray, speed: float, accel: float) -> _Trajectory:
        delta = target_q - self._q
        length = float(np.abs(delta).max())
        n = max(2, int(math.ceil(length / self.config.path_step_rad)))
        fractions = np.linspace(0.0, 1.0, n + 1)
        joints = self._q[None, :] + fractions[:, None] * delta[None, :]
        if self.envelope is not None:
            positions = self.kinematics.forward_matrix(joints)[:, :3, 3]
            for i, point in enumerate(positions[1:-1], start=1):
                self.envelope.check_position(point, label=f"move_joints path point {i}/{n}")
        return _Trajectory("joint", length, speed, accel, target_pose, target_q.copy(), fractions, joints)

    def _state_at(self, trajectory: _Trajectory, fraction: float) -> np.ndarray:
        """Joints (6,) at a path fraction in [0, 1] of a checked trajectory."""
        if fraction >= 1.0:
            return trajectory.target_joints.copy()
        s, qs = trajectory.samples_s, trajectory.samples_q
        i = int(np.clip(np.searchsorted(s, fraction, side="right") - 1, 0, len(s) - 2))
        w = (fraction - s[i]) / (s[i + 1] - s[i])
        q = (1.0 - w) * qs[i] + w * qs[i + 1]
        if trajectory.kind == "linear":
            # exact pose on the straight path, joints from IK near the sampled neighbour
            start_m = fast_pose_to_matrix(self.kinematics.forward(qs[0]))
            target_m = fast_pose_to_matrix(trajectory.target_pose)
            relative = fast_matrix_to_rotvec(start_m[:3, :3].T @ target_m[:3, :3])
            pose = fast_matrix_to_pose(interpolate_pose_matrix(start_m, target_m, relative, fraction))
            q = self.kinematics.inverse(pose, q_near=q)
        return q

    def _execute(self, trajectory: _Trajectory) -> None:
        """Run a checked trajectory on the clock, firing armed faults; updates state and the log."""
        self._commands += 1
        fired = [kind for kind, n in self._armed.items() if n == self._commands]
        for kind in fired:
            del self._armed[kind]
        if "unreachable" in fired:
            shown = ", ".join(f"{v:.4f}" for v in trajectory.target_pose)
            raise UnreachablePose(f"sim robot: injected fault: pose [{shown}] is unreachable (move {self._commands})")
        fault = next((k for k in ("connection_lost", "protective_stop") if k in fired), None)

        planned = trapezoid_duration(trajectory.length, trajectory.speed, trajectory.accel)
        stop_at = planned * self.config.faults.stop_fraction if fault else planned
        start_q = self._q.copy()
        start_pose = self.kinematics.forward(start_q)
        t_start = self.clock.now()
        self._stop_event.clear()
        elapsed, interrupted = self._run_clock(stop_at)
        outcome: str = fault or ("stopped" if interrupted else "done")

        if outcome == "done":
            q = trajectory.target_joints.copy()
            if trajectory.kind == "linear" and self.config.repeatability_m > 0:
                noisy = trajectory.target_pose.copy()
                noisy[:3] += self._rng.normal(0.0, self.config.repeatability_m, 3)
                q = self.kinematics.inverse(noisy, q_near=q)
        else:
            moved = trapezoid_position(elapsed, trajectory.length, trajectory.speed, trajectory.accel)
            fraction = moved / trajectory.length if trajectory.length > 0 else 1.0
            q = self._state_at(trajectory, fraction)
        self._q = q
        self._log.append(
            MoveRecord(
                index=len(self._log) + 1,
                kind=trajectory.kind,
                start_pose=start_pose,
                target_pose=trajectory.target_pose.copy(),
                end_pose=self.kinematics.forward(q),
                start_joints=start_q,
                target_joints=trajectory.target_joints.copy(),
                end_joints=q.copy(),
                path_length=trajectory.length,
                speed=trajectory.speed,
                accel=trajectory.accel,
                planned_duration=planned,
                t_start=t_start,
                duration=elapsed,
                outcome=outcome,  # type: ignore[arg-type]
            )
        )
        where = ", ".join(f"{v:.4f}" for v in self.kinematics.forward(q))
        if outcome == "protective_stop":
            self._protective_stop = True
            raise ProtectiveStop(
                f"sim robot: protective stop during move {self._commands} at [{where}]; call recover()"
            )
        if outcome == "connection_lost":
            self._link_lost = True
            raise ConnectionLost(f"sim robot: connection lost during move {self._commands} at [{where}]")
        if outcome == "stopped":
            raise MotionFailed(f"sim robot: move {self._commands} interrupted by stop() at [{where}]")

    def _run_clock(self, duration: float) -> tuple[float, bool]:
        """Advance the clock by ``duration`` s (in control periods when paced); (elapsed s, interrupted)."""
        if self.clock.realtime_factor <= 0:
            self.clock.sleep(duration)
            return duration, False
        elapsed = 0.0
        period = self.config.control_period_s
        while elapsed < duration:
            if self._stop_event.is_set():
                return elapsed, True
            step = min(period, duration - elapsed)
            self.clock.sleep(step)
            elapsed += step
        return elapsed, False


# --- helpers -----------------------------------------------------------------------------------------
def _finite_vector(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.shape != (6,):
        raise ValueError(f"{name} needs 6 values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains a non-finite value: {arr.tolist()}")
    return arr.copy()


def _positive(value: float, name: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v
