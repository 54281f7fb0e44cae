"""``URRobot``: the :class:`~acquisition.robot.Robot` interface on a real UR controller through ur_rtde.

What ur_rtde does on its own (measured, see ``shared/notes/hardware.md``) and what this class adds:

* constructors block ~134 s on an unreachable host, forever on a silent peer, holding the GIL ->
  :func:`~acquisition.ur.probe.probe_controller` first, with a short timeout;
* motion calls return ``False`` (protective stop, script stopped) or wait 300 s on a dead link ->
  every move runs ``asynchronous=True`` and is watched here with a deadline from the expected duration,
  the controller timestamp (stale data = lost link), safety and program state; every failure becomes an
  :mod:`acquisition.errors` exception; the reached pose is compared with the commanded one;
* a lost link leaves getters returning stale values -> :meth:`URRobot.tcp_pose` and friends check that
  the controller clock still advances;
* destroying an ur_rtde object whose link died can abort the process (a C++ exception in a destructor)
  -> such objects are kept alive in :data:`_UNSAFE_TO_DESTROY` instead of being freed.

Units: metres, radians, seconds (m/s, rad/s for speeds). Poses ``[x, y, z, rx, ry, rz]`` of the TCP in
the base frame.
"""
from __future__ import annotations

import ctypes
import math
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from acquisition.envelope import SafetyEnvelope
from acquisition.errors import (
    ConnectionLost,
    EmergencyStop,
    MotionFailed,
    ProgramNotRunning,
    ProtectiveStop,
    RobotError,
)
from acquisition.robot import RobotStatus, trapezoid_duration
from acquisition.ur.probe import probe_controller
from calibration.transforms import rotation_angle_between, rotvec_to_matrix

#: ur_rtde objects whose link died: their C++ destructors write to the dead socket and a C++ exception
#: escaping a destructor aborts the whole process (std::terminate). They are kept alive for the life of
#: the process: listed here and given an extra reference so that even interpreter shutdown never frees them.
_UNSAFE_TO_DESTROY: list[Any] = []


def _never_destroy(obj: Any) -> None:
    _UNSAFE_TO_DESTROY.append(obj)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))

SAFETY_MODE_NAMES = {1: "NORMAL", 2: "REDUCED", 3: "PROTECTIVE_STOP", 4: "RECOVERY", 5: "SAFEGUARD_STOP",
                     6: "SYSTEM_EMERGENCY_STOP", 7: "ROBOT_EMERGENCY_STOP", 8: "VIOLATION", 9: "FAULT",
                     10: "VALIDATE_JOINT_ID", 11: "UNDEFINED_SAFETY_MODE"}
ROBOT_MODE_NAMES = {-1: "NO_CONTROLLER", 0: "DISCONNECTED", 1: "CONFIRM_SAFETY", 2: "BOOTING", 3: "POWER_OFF",
                    4: "POWER_ON", 5: "IDLE", 6: "BACKDRIVE", 7: "RUNNING", 8: "UPDATING_FIRMWARE"}
_EMERGENCY_SAFETY_MODES = (6, 7)


class URRobotConfig(BaseModel):
    """The ``robot:`` section of a real cell config (``backend: ur5``).

    ur_rtde always uses the controller's fixed ports (RTDE 30004, dashboard 29999, script 30003).
    """

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="controller IP address or host name")
    frequency_hz: Optional[float] = Field(default=None, gt=0, le=500,
                                          description="RTDE rate; None = controller default (125 CB3, 500 e-Series)")
    tcp_offset: tuple[float, float, float, float, float, float] = Field(
        default=(0.0, 0.0, 0.0, 0.0, 0.0, 0.0), description="TCP in the flange frame: m and rotation vector (rad)")
    payload_kg: float = Field(default=0.0, ge=0, le=5.0, description="tool + camera mass, kg (UR5 max 5 kg)")
    payload_cog: tuple[float, float, float] = Field(default=(0.0, 0.0, 0.0),
                                                    description="payload centre of gravity in the flange frame, m")
    position_tolerance_m: float = Field(default=0.001, gt=0, description="reached vs commanded TCP position")
    rotation_tolerance_deg: float = Field(default=0.2, gt=0, description="reached vs commanded TCP orientation")
    joint_tolerance_rad: float = Field(default=0.002, gt=0, description="reached vs commanded joints (moveJ)")
    connect_timeout_s: float = Field(default=2.0, gt=0, le=30, description="socket probe timeout per port")
    stale_timeout_s: float = Field(default=1.0, gt=0, le=30,
                                   description="controller data older than this means the link is lost")
    move_timeout_factor: float = Field(default=2.0, ge=1.0, description="deadline = factor * expected + margin")
    move_timeout_margin_s: float = Field(default=3.0, ge=0.0)
    stop_decel: float = Field(default=2.0, gt=0, description="deceleration of stop(), m/s^2 or rad/s^2")
    settle_s: float = Field(default=0.0, ge=0, description="wait after a move before it counts as finished")
    recover_timeout_s: float = Field(default=10.0, gt=0, description="how long recover() retries an unlock")
    poll_interval_s: float = Field(default=0.005, gt=0, le=0.1)


def _as_vector6(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.shape != (6,) or not np.all(np.isfinite(arr)):
        raise MotionFailed(f"{what} needs 6 finite values, got {list(np.asarray(values).reshape(-1))}")
    return arr


def _import_ur_rtde() -> tuple[Any, Any, Any, Any]:
    try:
        import dashboard_client
        import rtde_control
        import rtde_io
        import rtde_receive
    except ImportError as exc:  # pragma: no cover - the package is a dependency
        raise RobotError(f"the ur-rtde package is not installed ({exc}); pip install ur-rtde") from None
    return rtde_control, rtde_receive, rtde_io, dashboard_client


class URRobot:
    """A UR5 through ur_rtde. Use as a context manager; every failure raises an acquisition error.

    ``envelope``: every commanded pose, speed and acceleration is checked against it before anything
    is sent (default :class:`SafetyEnvelope()` limits).
    """

    def __init__(self, config: URRobotConfig, envelope: Optional[SafetyEnvelope] = None) -> None:
        self.config = config
        self.envelope = envelope if envelope is not None else SafetyEnvelope()
        self._control: Any = None
        self._receive: Any = None
        self._io: Any = None
        self._dashboard: Any = None
        self._last_timestamp: Optional[float] = None
        self._last_timestamp_wall = 0.0
        self._last_move_joint = False
        self._lost_at: Optional[float] = None  # when a lost link was first noticed (monotonic s)
        self.moves_sent = 0  # motions handed to the controller (tests check that refused moves send nothing)

    # --- connection ------------------------------------------------------------------------------
    def __enter__(self) -> "URRobot":
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def host(self) -> str:
        return self.config.host

    def connect(self) -> None:
        """Probe the controller's ports, then build the ur_rtde interfaces, set TCP and payload.

        In a protective or emergency stop the control script cannot start: connect() then raises
        ProtectiveStop / EmergencyStop at once (not after ur_rtde's 5 s script timeout) and stays half
        connected (dashboard + state), so that :meth:`recover` can unlock and finish the connection.
        """
        if self._control is not None:
            return
        just_probed = self._receive is None
        if just_probed:
            self._connect_base()  # probes the ports first
        self._check_fresh()
        r = self._receive
        if r.isEmergencyStopped() or int(r.getSafetyMode()) in _EMERGENCY_SAFETY_MODES:
            raise EmergencyStop(f"UR controller {self.host}: emergency stop "
                                f"({SAFETY_MODE_NAMES.get(int(r.getSafetyMode()), r.getSafetyMode())}); "
                                f"release it, then recover()")
        if r.isProtectiveStopped():
            raise ProtectiveStop(f"UR controller {self.host}: in protective stop, the control script cannot start; "
                                 f"recover() unlocks it")
        self._connect_control(probe=not just_probed)

    def _connect_base(self) -> None:
        """Probe, then the dashboard and the receive interface (state only, no control script)."""
        cfg = self.config
        probe_controller(cfg.host, cfg.connect_timeout_s)
        _, rtde_receive, _, dashboard_client = _import_ur_rtde()
        freq = float(cfg.frequency_hz) if cfg.frequency_hz else -1.0
        try:
            self._dashboard = dashboard_client.DashboardClient(cfg.host)
            self._dashboard.connect(int(cfg.connect_timeout_s * 1000))
            self._receive = rtde_receive.RTDEReceiveInterface(cfg.host, freq)
        except RuntimeError as exc:
            self._release()
            raise ConnectionLost(f"UR controller {cfg.host}: ur_rtde could not connect: {exc}") from None
        self._last_timestamp = None
        self._lost_at = None
        deadline = time.monotonic() + cfg.stale_timeout_s + 1.0
        while not self._fresh():  # first data package
            if time.monotonic() > deadline:
                self._release()
                raise ConnectionLost(f"UR controller {cfg.host}: connected but no RTDE data arrives")
            time.sleep(0.01)

    def _connect_control(self, probe: bool = True) -> None:
        """Upload ur_rtde's control script (control interface) and open the I/O interface.

        ``probe``: probe the ports first (ur_rtde's constructor cannot time out); False only right after
        :meth:`_connect_base` probed them within the same call.
        """
        cfg = self.config
        rtde_control, _, rtde_io, _ = _import_ur_rtde()
        freq = float(cfg.frequency_hz) if cfg.frequency_hz else -1.0
        if probe:
            probe_controller(cfg.host, cfg.connect_timeout_s)
        try:
            self._control = rtde_control.RTDEControlInterface(cfg.host, freq)
            self._io = rtde_io.RTDEIOInterface(cfg.host)
        except RuntimeError as exc:
            self._release()
            raise ConnectionLost(f"UR controller {cfg.host}: ur_rtde could not start the control interface: "
                                 f"{exc}") from None
        self._check_fresh()
        self._apply_tool()

    def _apply_tool(self) -> None:
        cfg = self.config
        self._call("setTcp", lambda: self._control.setTcp(list(cfg.tcp_offset)))
        self._call("setPayload", lambda: self._control.setPayload(cfg.payload_kg, list(cfg.payload_cog)))

    def close(self) -> None:
        """Stop the control script and disconnect; never raises for a link that is already gone."""
        if self._control is not None:
            try:
                if self._control.isConnected() and self._fresh():
                    self._control.stopScript()
            except RuntimeError:
                pass
        self._release()

    def _release(self) -> None:
        # After a lost link even a clean disconnect() may leave a socket a destructor writes to.
        link_was_lost = self._lost_at is not None or not self._fresh()
        for name in ("_io", "_control", "_receive", "_dashboard"):
            obj = getattr(self, name)
            setattr(self, name, None)
            if obj is None:
                continue
            try:
                obj.disconnect()
            except (RuntimeError, OSError):
                link_was_lost = True
            if link_was_lost:
                _never_destroy(obj)
        self._lost_at = None

    def reconnect(self) -> None:
        """Drop every ur_rtde object and connect again (probing first)."""
        self._release()
        self.connect()

    #: ur_rtde's control interface makes one reconnect attempt of its own when its link drops; that
    #: attempt ends within the dashboard connect timeout (~2.5 s). Disconnecting it meanwhile can hang.
    AUTO_RECONNECT_WINDOW_S = 3.0

    def _restore_link(self) -> None:
        """After a lost link: probe, then reuse ur_rtde's own reconnection or rebuild every interface.

        Known limit (ur_rtde 1.6.5): when the link comes back while the control interface's own
        background reconnect loop is still running (within about a second of the loss), that loop can
        crash the process (segfault inside ur_rtde). Links restored later recover cleanly.
        """
        probe_controller(self.host, self.config.connect_timeout_s)  # still down -> ConnectionLost at once
        if self._control is not None:
            # Let ur_rtde's own reconnect attempt finish either way before touching anything.
            lost_at = self._lost_at or time.monotonic()
            while time.monotonic() - lost_at < self.AUTO_RECONNECT_WINDOW_S:
                time.sleep(0.05)
        if self._control is None or not self._control.isConnected():
            # Rebuild from scratch; recover() then unlocks and starts the control interface.
            self._release()
            self._connect_base()
            return
        # The control interface reconnected itself: keep it, and give it new receive and I/O interfaces.
        # The old ones are neither disconnected nor freed: after a lost link ur_rtde can crash in both.
        _, rtde_receive, rtde_io, dashboard_client = _import_ur_rtde()
        freq = float(self.config.frequency_hz) if self.config.frequency_hz else -1.0
        for name in ("_receive", "_io"):
            old = getattr(self, name)
            setattr(self, name, None)
            if old is not None:
                _never_destroy(old)
        try:
            self._receive = rtde_receive.RTDEReceiveInterface(self.host, freq)
            self._last_timestamp = None
            self._io = rtde_io.RTDEIOInterface(self.host)
            if not self._dashboard.isConnected():
                self._dashboard.connect(int(self.config.connect_timeout_s * 1000))
        except RuntimeError as exc:
            raise ConnectionLost(f"UR controller {self.host}: reconnecting failed: {exc}") from None
        self._lost_at = None
        deadline = time.monotonic() + self.config.stale_timeout_s + 1.0
        while not self._fresh():
            if time.monotonic() > deadline:
                raise ConnectionLost(f"UR controller {self.host}: reconnected but no data arrives")
            time.sleep(0.02)

    # --- state -----------------------------------------------------------------------------------
    def _require_connected(self) -> None:
        if self._receive is None:
            raise ConnectionLost(f"UR controller {self.host}: not connected (call connect() or recover())")

    def _require_control(self) -> None:
        if self._control is None:
            raise ProgramNotRunning(f"UR controller {self.host}: the control interface is not connected "
                                    f"(connect() failed in a safety stop?); recover() completes the connection")

    def _fresh(self) -> bool:
        """True when the controller clock advanced within ``stale_timeout_s``."""
        if self._receive is None:
            return False
        try:
            ts = float(self._receive.getTimestamp())
        except RuntimeError:
            return False
        now = time.monotonic()
        if self._last_timestamp is None or ts != self._last_timestamp:
            self._last_timestamp = ts
            self._last_timestamp_wall = now
            return True
        return now - self._last_timestamp_wall < self.config.stale_timeout_s

    def _check_fresh(self) -> None:
        self._require_connected()
        if not self._fresh() or not self._receive.isConnected():
            self._lost_at = self._lost_at or time.monotonic()
            raise ConnectionLost(
                f"UR controller {self.host}: no data from the controller for over "
                f"{self.config.stale_timeout_s:g} s (link lost)")
        if self._control is not None and not self._control.isConnected():
            self._lost_at = self._lost_at or time.monotonic()
            raise ConnectionLost(f"UR controller {self.host}: the RTDE control connection is down")

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one ur_rtde call; a C++ exception (RuntimeError) means the link failed."""
        try:
            result = fn()
        except RuntimeError as exc:
            raise ConnectionLost(f"UR controller {self.host}: {what} failed: {exc}") from None
        if result is False:
            self._raise_for_state(f"{what} was refused by the controller")
        return result

    def _raise_for_state(self, context: str) -> None:
        """Raise the exception that explains why the controller is not usable; MotionFailed if none does."""
        self._check_fresh()
        r, c = self._receive, self._control
        safety = int(r.getSafetyMode())
        if r.isEmergencyStopped() or safety in _EMERGENCY_SAFETY_MODES:
            raise EmergencyStop(f"UR controller {self.host}: emergency stop ({SAFETY_MODE_NAMES.get(safety, safety)}); "
                                f"release it, then recover()")
        if r.isProtectiveStopped() or safety == 3:
            raise ProtectiveStop(f"UR controller {self.host}: protective stop ({context}); recover() unlocks it")
        if safety not in (1, 2):
            raise RobotError(f"UR controller {self.host}: safety mode {SAFETY_MODE_NAMES.get(safety, safety)} ({context})")
        mode = int(r.getRobotMode())
        if mode != 7:
            raise RobotError(f"UR controller {self.host}: robot mode {ROBOT_MODE_NAMES.get(mode, mode)}, "
                             f"expected RUNNING ({context}); power on and release the brakes")
        if c is None or not c.isProgramRunning():
            raise ProgramNotRunning(f"UR controller {self.host}: the ur_rtde control script is not running "
                                    f"({context}); recover() re-uploads it")
        raise MotionFailed(f"UR controller {self.host}: {context}")

    def _require_ready(self, context: str) -> None:
        self._check_fresh()
        self._require_control()
        r, c = self._receive, self._control
        safety = int(r.getSafetyMode())
        if (r.isEmergencyStopped() or r.isProtectiveStopped() or safety not in (1, 2)
                or int(r.getRobotMode()) != 7 or not c.isProgramRunning()):
            self._raise_for_state(context)

    def ensure_ready(self, context: str = "") -> None:
        """Raise the acquisition error that stops the robot from moving now (nothing if it can move)."""
        self._require_ready(context or "ready check")

    def tcp_pose(self) -> np.ndarray:
        """Actual TCP pose (6,), m and rotation vector; raises ConnectionLost on stale data."""
        self._check_fresh()
        return np.asarray(self._receive.getActualTCPPose(), dtype=float)

    def joint_positions(self) -> np.ndarray:
        """Actual joint angles (6,), rad."""
        self._check_fresh()
        return np.asarray(self._receive.getActualQ(), dtype=float)

    def status(self) -> RobotStatus:
        """Controller snapshot; ``connected`` is False (other fields zero) when the link is down."""
        try:
            self._check_fresh()
        except ConnectionLost:
            return RobotStatus(False, 0, 0, False, False, False)
        r = self._receive
        return RobotStatus(
            connected=True,
            robot_mode=int(r.getRobotMode()),
            safety_mode=int(r.getSafetyMode()),
            protective_stopped=bool(r.isProtectiveStopped()),
            emergency_stopped=bool(r.isEmergencyStopped()),
            program_running=self._control is not None and bool(self._control.isProgramRunning()),
            tcp_pose=tuple(float(v) for v in r.getActualTCPPose()),
            joint_positions=tuple(float(v) for v in r.getActualQ()),
        )

    def identity(self) -> dict[str, str]:
        """Controller identity from the dashboard: PolyScope version, serial number, robot model."""
        self._require_connected()
        info: dict[str, str] = {"host": self.host}
        for key, method in (("polyscope_version", "polyscopeVersion"), ("serial_number", "getSerialNumber"),
                            ("robot_model", "getRobotModel")):
            try:
                info[key] = str(getattr(self._dashboard, method)()).strip()
            except (RuntimeError, AttributeError) as exc:
                info[key] = f"unavailable ({exc})"
        return info

    # --- motion ----------------------------------------------------------------------------------
    def move_linear(self, pose: Sequence[float], speed: float, accel: float, *, label: str = "") -> None:
        """Straight-line TCP move to ``pose`` (6,) at ``speed`` m/s, ``accel`` m/s^2; blocks until reached.

        Raises EnvelopeViolation (nothing sent), ProtectiveStop, EmergencyStop, ProgramNotRunning,
        ConnectionLost (within ``stale_timeout_s`` of a dead link) or MotionFailed (not reached in time or
        off by more than the tolerances).
        """
        target = np.asarray(pose, dtype=float).reshape(-1)
        self.envelope.check_pose(target, label)
        self.envelope.check_motion(speed, accel, joint=False)
        target = _as_vector6(target, "move_linear pose")
        self._require_ready("before moveL")
        start_pose = self.tcp_pose()
        distance = float(np.linalg.norm(target[:3] - start_pose[:3]))
        angle = rotation_angle_between(rotvec_to_matrix(start_pose[3:]), rotvec_to_matrix(target[3:]))
        expected = trapezoid_duration(distance if distance > 1e-6 else angle, speed, accel)
        self._last_move_joint = False
        self.moves_sent += 1
        self._call("moveL", lambda: self._control.moveL(list(target), float(speed), float(accel), True))
        self._watch_move("moveL", expected)
        self._verify_pose(target, label)

    def move_joints(self, q: Sequence[float], speed: float, accel: float) -> None:
        """Joint move to ``q`` (6,) rad at ``speed`` rad/s, ``accel`` rad/s^2; blocks until reached.

        The TCP pose at ``q`` is checked against the envelope (through the controller's forward
        kinematics with the configured TCP) before the move is sent.
        """
        target = _as_vector6(q, "move_joints q")
        self.envelope.check_motion(speed, accel, joint=True)
        self._require_ready("before moveJ")
        tcp_at_target = self._call("getForwardKinematics",
                                   lambda: self._control.getForwardKinematics(list(target), list(self.config.tcp_offset)))
        if len(tcp_at_target) != 6:
            raise MotionFailed(f"UR controller {self.host}: forward kinematics of the moveJ target failed")
        self.envelope.check_pose(np.asarray(tcp_at_target, dtype=float), "moveJ target")
        start_q = self.joint_positions()
        expected = trapezoid_duration(float(np.max(np.abs(target - start_q))), speed, accel)
        self._last_move_joint = True
        self.moves_sent += 1
        self._call("moveJ", lambda: self._control.moveJ(list(target), float(speed), float(accel), True))
        self._watch_move("moveJ", expected)
        reached = self.joint_positions()
        err = float(np.max(np.abs(reached - target)))
        if err > self.config.joint_tolerance_rad:
            raise MotionFailed(f"UR controller {self.host}: moveJ ended {math.degrees(err):.3f} deg from the target "
                               f"(tolerance {math.degrees(self.config.joint_tolerance_rad):.3f} deg)")

    def _watch_move(self, what: str, expected_s: float) -> None:
        """Poll an asynchronous move until done; raise on any fault or at the deadline."""
        cfg = self.config
        deadline = time.monotonic() + cfg.move_timeout_factor * expected_s + cfg.move_timeout_margin_s
        # The async flag is raised by the controller within a cycle; give it a moment before trusting 'done'.
        started = time.monotonic()
        while True:
            time.sleep(cfg.poll_interval_s)
            self._check_fresh()
            r, c = self._receive, self._control
            if r.isProtectiveStopped() or r.isEmergencyStopped() or int(r.getSafetyMode()) not in (1, 2) \
                    or not c.isProgramRunning():
                self._raise_for_state(f"during {what}")
            progress = int(c.getAsyncOperationProgress())
            if progress < 0 and time.monotonic() - started > 2.0 / (cfg.frequency_hz or 125.0):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise MotionFailed(f"UR controller {self.host}: {what} did not finish within "
                                   f"{deadline - started:.1f} s (expected {expected_s:.1f} s); the robot was stopped")
        if cfg.settle_s:
            time.sleep(cfg.settle_s)
        # Fault right at the end of the move?
        self._require_ready(f"after {what}")

    def _verify_pose(self, target: np.ndarray, label: str) -> None:
        reached = self.tcp_pose()
        pos_err = float(np.linalg.norm(reached[:3] - target[:3]))
        rot_err = math.degrees(rotation_angle_between(rotvec_to_matrix(reached[3:]), rotvec_to_matrix(target[3:])))
        if pos_err > self.config.position_tolerance_m or rot_err > self.config.rotation_tolerance_deg:
            who = f"pose {label}" if label else "moveL"
            raise MotionFailed(
                f"UR controller {self.host}: {who} reached {pos_err * 1000:.2f} mm / {rot_err:.3f} deg from the target "
                f"(tolerance {self.config.position_tolerance_m * 1000:.2f} mm / {self.config.rotation_tolerance_deg:.3f} deg)")

    def move_linear_async(self, pose: Sequence[float], speed: float, accel: float, *, label: str = "") -> None:
        """Start a linear move and return at once (envelope and state checked first); see :meth:`wait_steady`."""
        target = np.asarray(pose, dtype=float).reshape(-1)
        self.envelope.check_pose(target, label)
        self.envelope.check_motion(speed, accel, joint=False)
        self._require_ready("before moveL")
        self._last_move_joint = False
        self.moves_sent += 1
        self._call("moveL", lambda: self._control.moveL(list(target), float(speed), float(accel), True))

    def is_moving(self) -> bool:
        """True while an asynchronous move runs on the controller."""
        self._check_fresh()
        self._require_control()
        return int(self._control.getAsyncOperationProgress()) >= 0

    def stop(self) -> None:
        """Decelerate any motion to rest (``stop_decel``); raises ConnectionLost if the link is down."""
        self._check_fresh()
        self._require_control()
        decel = self.config.stop_decel
        try:
            if self._last_move_joint:
                self._control.stopJ(decel)
            else:
                self._control.stopL(decel)
        except RuntimeError as exc:
            raise ConnectionLost(f"UR controller {self.host}: stop failed: {exc}") from None

    # --- recovery --------------------------------------------------------------------------------
    def recover(self) -> None:
        """Make the robot ready to move again, or raise what a person must fix.

        Lost link -> reconnect (probing first); emergency stop -> EmergencyStop; protective stop ->
        close the safety popup and unlock through the dashboard (retried up to ``recover_timeout_s``:
        UR refuses an unlock during the first 5 s); control script stopped -> re-upload it; then the
        TCP offset and payload are set again.
        """
        if self._receive is None:
            self._connect_base()
        else:
            try:
                self._check_fresh()
            except ConnectionLost:
                self._restore_link()
        r, d = self._receive, self._dashboard
        if r.isEmergencyStopped() or int(r.getSafetyMode()) in _EMERGENCY_SAFETY_MODES:
            raise EmergencyStop(f"UR controller {self.host}: emergency stop pressed; release it before recover()")
        deadline = time.monotonic() + self.config.recover_timeout_s
        if r.isProtectiveStopped():
            while True:
                try:
                    d.closeSafetyPopup()
                    d.unlockProtectiveStop()
                except RuntimeError as exc:
                    raise ConnectionLost(f"UR controller {self.host}: dashboard failed during unlock: {exc}") from None
                wait_until = time.monotonic() + 0.5
                while r.isProtectiveStopped() and time.monotonic() < wait_until:
                    time.sleep(0.02)
                if not r.isProtectiveStopped():
                    break
                if time.monotonic() > deadline:
                    raise ProtectiveStop(f"UR controller {self.host}: protective stop could not be unlocked within "
                                         f"{self.config.recover_timeout_s:g} s")
        if self._control is None:
            self._connect_control()
        c = self._control
        if not c.isProgramRunning():
            try:
                c.reuploadScript()
            except RuntimeError as exc:
                raise ConnectionLost(f"UR controller {self.host}: re-uploading the control script failed: {exc}") from None
            while not c.isProgramRunning():
                if time.monotonic() > deadline:
                    raise ProgramNotRunning(f"UR controller {self.host}: the control script did not start within "
                                            f"{self.config.recover_timeout_s:g} s after re-upload")
                time.sleep(0.02)
        self._apply_tool()
        self._require_ready("after recover()")

    # --- digital I/O -----------------------------------------------------------------------------
    def set_digital_output(self, n: int, value: bool, *, timeout_s: float = 1.0) -> None:
        """Set standard digital output ``n`` (0-7) and wait until the controller reports it."""
        n = self._io_index(n, "output")
        self._check_fresh()
        if self._io is None:
            raise ConnectionLost(f"UR controller {self.host}: the I/O interface is not connected; recover() first")
        self._call(f"setStandardDigitalOut({n})", lambda: self._io.setStandardDigitalOut(n, bool(value)))
        deadline = time.monotonic() + timeout_s
        while self.digital_output(n) != bool(value):
            if time.monotonic() > deadline:
                raise RobotError(f"UR controller {self.host}: digital output {n} did not become {bool(value)} "
                                 f"within {timeout_s:g} s")
            time.sleep(0.005)

    def digital_output(self, n: int) -> bool:
        """State of standard digital output ``n`` (0-7) as the controller reports it."""
        n = self._io_index(n, "output")
        self._check_fresh()
        return bool(self._receive.getDigitalOutState(n))

    def digital_input(self, n: int) -> bool:
        """State of standard digital input ``n`` (0-7)."""
        n = self._io_index(n, "input")
        self._check_fresh()
        return bool(self._receive.getDigitalInState(n))

    @staticmethod
    def _io_index(n: int, what: str) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= int(n) <= 7:
            raise RobotError(f"standard digital {what} number must be 0-7, got {n!r}")
        return int(n)
