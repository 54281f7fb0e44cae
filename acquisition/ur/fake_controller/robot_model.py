"""The simulated UR5 behind the fake controller: joints, safety state, registers, digital I/O, and the
command-register handshake of ur_rtde's control script.

The handshake, as the control script uploaded by ur_rtde runs it: the script writes
``output_int_register_0`` = 1 (ready); the client writes a command code into ``input_int_register_0``
(arguments in ``input_double_register_*`` / ``input_int_register_1``); the script executes it and writes
2 (done); the client writes 0 ("no command"); the script answers 1 again. ``output_int_register_2`` holds
the asynchronous-operation progress word (bit 15 set while an async move runs).

All methods are called with :attr:`RobotModel.lock` held by the caller.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

import numpy as np

from acquisition.sim.kinematics import UR5_HOME_JOINTS
from acquisition.ur.fake_controller.motion import (
    JointPath,
    LinearPath,
    Motion,
    forward,
    pose_matrix,
    solve_ik,
)
from calibration.transforms import matrix_to_pose

# Command codes of ur_rtde's control script (input_int_register_0).
CMD_NONE = 0
CMD_MOVEJ = 1
CMD_MOVEJ_IK = 2
CMD_MOVEL = 3
CMD_MOVEL_FK = 4
CMD_SET_PAYLOAD = 17
CMD_SET_TCP = 29
CMD_PROTECTIVE_STOP = 31
CMD_STOPL = 33
CMD_STOPJ = 34
CMD_IS_POSE_WITHIN_SAFETY_LIMITS = 36
CMD_GET_TCP_OFFSET = 40
CMD_GET_FORWARD_KINEMATICS_DEFAULT = 43
CMD_GET_FORWARD_KINEMATICS_ARGS = 44
CMD_IS_STEADY = 47
CMD_STOP_SCRIPT = 255

SCRIPT_READY = 1
SCRIPT_DONE = 2

# UR numbering.
ROBOT_MODE_POWER_OFF = 3
ROBOT_MODE_RUNNING = 7
SAFETY_NORMAL = 1
SAFETY_PROTECTIVE_STOP = 3
SAFETY_ROBOT_EMERGENCY_STOP = 7
RUNTIME_STOPPED = 1
RUNTIME_PLAYING = 2
# Bits of safety_status_bits / robot_status_bits.
SAFETY_BIT_NORMAL = 1 << 0
SAFETY_BIT_PROTECTIVE = 1 << 2
SAFETY_BIT_ROBOT_ESTOP = 1 << 6
SAFETY_BIT_ESTOPPED = 1 << 7
ROBOT_BIT_POWER_ON = 1 << 0
ROBOT_BIT_PROGRAM_RUNNING = 1 << 1

#: Joints the fake starts at (rad): the simulated UR5's home, as in configs/cells/sim.yaml (TCP 0.50 m
#: above the nominal sheet centre (0, -0.45, 0) m of the simulated cell, tool pointing down), so sim
#: plans run unchanged on the fake.
HOME_Q = np.array(UR5_HOME_JOINTS)

PROTECTIVE_STOP_DECEL = 20.0  # a protective stop halts within a few ms


class RobotModel:
    """State of the fake UR5 and its control script. Advance with :meth:`tick`."""

    def __init__(self, q0: Optional[np.ndarray] = None) -> None:
        self.lock = threading.RLock()
        self.start_time = time.monotonic()
        self.q = np.array(HOME_Q if q0 is None else q0, dtype=float)
        self.qd = np.zeros(6)
        self.T_flange_tcp = np.eye(4)
        self.tcp_offset = np.zeros(6)
        self.payload_mass = 0.0
        self.payload_cog = np.zeros(3)
        self.pose = matrix_to_pose(forward(self.q, self.T_flange_tcp))
        self.tcp_speed = np.zeros(6)
        self.protective_stopped = False
        self.emergency_stopped = False
        self.script_running = False
        self.executing = False
        self.motion: Optional[Motion] = None
        self.path: Any = None
        self.motion_is_async = False
        self.motion_signal_done = False
        self.int_in: dict[int, int] = {}
        self.double_in: dict[int, float] = {}
        self.int_out = {i: 0 for i in range(48)}
        self.double_out = {i: 0.0 for i in range(48)}
        self.digital_out = 0  # bits 0-7 standard, 8-15 configurable, 16-17 tool
        self.digital_in = 0
        self.speed_slider = 1.0
        self.async_op_id = 0
        self.async_wr_count = 0
        self.messages: list[str] = []  # text messages for the RTDE clients ('M')
        self.moves_started = 0
        self.last_input_names: list[str] = []
        self._write_async_progress(-1)

    # --- inputs from RTDE clients ------------------------------------------------------------------
    def apply_inputs(self, names: list[str], values: list[Any]) -> None:
        """Apply one input data package (fields ``names`` with ``values``)."""
        fields = dict(zip(names, values))
        self.last_input_names = list(names)
        for name, value in fields.items():
            if name.startswith("input_int_register_"):
                self.int_in[int(name.rsplit("_", 1)[1])] = int(value)
            elif name.startswith("input_double_register_"):
                self.double_in[int(name.rsplit("_", 1)[1])] = float(value)
            elif name == "speed_slider_fraction" and fields.get("speed_slider_mask", 0):
                self.speed_slider = float(value)
        for bank, shift in (("standard", 0), ("configurable", 8), ("tool", 16)):
            mask = int(fields.get(f"{bank}_digital_output_mask", 0))
            if mask:
                value = int(fields.get(f"{bank}_digital_output", 0))
                self.digital_out = (self.digital_out & ~(mask << shift)) | ((value & mask) << shift)

    # --- script life cycle -------------------------------------------------------------------------
    def start_script(self) -> None:
        """A control script arrived on the script port: it starts and signals ready."""
        if self.protective_stopped or self.emergency_stopped:
            self.messages.append("fake controller: cannot start a program during a safety stop")
            return
        self.script_running = True
        self.executing = False
        self.int_out[0] = SCRIPT_READY
        self._write_async_progress(-1)

    def stop_script(self, reason: str = "") -> None:
        self.script_running = False
        self.executing = False
        if self.motion is not None and not self.motion.done:
            self.motion.stop(PROTECTIVE_STOP_DECEL)
        self.int_out[0] = 0
        if reason:
            self.messages.append(reason)

    def protective_stop(self) -> None:
        """Halt at once, enter protective stop; the running program is aborted."""
        self.protective_stopped = True
        if self.motion is not None:
            self.motion.stop(PROTECTIVE_STOP_DECEL)
            self._finish_motion_immediately()
        self.stop_script("fake controller: protective stop")

    def unlock_protective_stop(self) -> bool:
        was = self.protective_stopped
        self.protective_stopped = False
        return was

    def set_emergency_stop(self, pressed: bool) -> None:
        self.emergency_stopped = pressed
        if pressed:
            if self.motion is not None:
                self.motion.stop(PROTECTIVE_STOP_DECEL)
                self._finish_motion_immediately()
            self.stop_script("fake controller: emergency stop")

    def _finish_motion_immediately(self) -> None:
        self.motion = None
        self.path = None
        self.qd = np.zeros(6)
        self.tcp_speed = np.zeros(6)

    # --- the control script's main loop ----------------------------------------------------------
    def _script_step(self) -> None:
        if not self.script_running:
            return
        cmd = self.int_in.get(0, 0)
        if cmd == CMD_NONE:
            if self.executing:
                self.executing = False
            self.int_out[0] = SCRIPT_READY
            return
        if self.executing:
            return
        self.executing = True
        self._process(cmd)

    def _done(self) -> None:
        self.int_out[0] = SCRIPT_DONE

    def _args(self, n: int) -> np.ndarray:
        return np.array([self.double_in.get(i, 0.0) for i in range(n)], dtype=float)

    def _process(self, cmd: int) -> None:
        if cmd in (CMD_MOVEJ, CMD_MOVEJ_IK, CMD_MOVEL, CMD_MOVEL_FK):
            target = self._args(8)
            asynchronous = self.int_in.get(1, 0) == 1
            self._start_move(cmd, target[:6], target[6], target[7], asynchronous)
        elif cmd in (CMD_STOPL, CMD_STOPJ):
            decel = self.double_in.get(0, 10.0) or 10.0
            if self.motion is not None and not self.motion.done:
                self.motion.stop(decel)
                self.motion_signal_done = True  # 'done' once braked
            else:
                self._done()
        elif cmd == CMD_SET_TCP:
            self.tcp_offset = self._args(6)
            self.T_flange_tcp = pose_matrix(self.tcp_offset)
            self.pose = matrix_to_pose(forward(self.q, self.T_flange_tcp))
            self._done()
        elif cmd == CMD_SET_PAYLOAD:
            args = self._args(4)
            self.payload_mass = float(args[0])
            self.payload_cog = args[1:4]
            self._done()
        elif cmd == CMD_GET_TCP_OFFSET:
            for i, v in enumerate(self.tcp_offset):
                self.double_out[i] = float(v)
            self._done()
        elif cmd == CMD_GET_FORWARD_KINEMATICS_DEFAULT:
            for i, v in enumerate(self.pose):
                self.double_out[i] = float(v)
            self._done()
        elif cmd == CMD_GET_FORWARD_KINEMATICS_ARGS:
            args = self._args(12)
            with_tcp = "input_double_register_11" in self.last_input_names
            T_tcp = pose_matrix(args[6:12]) if with_tcp else self.T_flange_tcp
            for i, v in enumerate(matrix_to_pose(forward(args[:6], T_tcp))):
                self.double_out[i] = float(v)
            self._done()
        elif cmd == CMD_IS_STEADY:
            self.int_out[1] = int(self.motion is None or self.motion.done)
            self._done()
        elif cmd == CMD_IS_POSE_WITHIN_SAFETY_LIMITS:
            ok = solve_ik(pose_matrix(self._args(6)), self.T_flange_tcp, self.q) is not None
            self.int_out[1] = int(ok)
            self._done()
        elif cmd == CMD_PROTECTIVE_STOP:
            self.protective_stop()
        elif cmd == CMD_STOP_SCRIPT:
            self.stop_script()
        else:
            # Commands the fake does not model (servo, force mode, ...) are acknowledged untouched.
            self.messages.append(f"fake controller: command {cmd} not modelled, ignored")
            self._done()

    def _start_move(self, cmd: int, target: np.ndarray, speed: float, accel: float, asynchronous: bool) -> None:
        if self.motion is not None and not self.motion.done:
            self.motion.stop(PROTECTIVE_STOP_DECEL)
            self._finish_motion_immediately()
        if cmd in (CMD_MOVEJ, CMD_MOVEJ_IK):
            if cmd == CMD_MOVEJ_IK:
                q1 = solve_ik(pose_matrix(target), self.T_flange_tcp, self.q)
                if q1 is None:
                    self.stop_script("fake controller: Inverse kinematics failed (moveJ_IK)")
                    return
            else:
                q1 = target
            path: Any = JointPath(self.q, q1)
        else:
            T1 = forward(target, self.T_flange_tcp) if cmd == CMD_MOVEL_FK else pose_matrix(target)
            if solve_ik(T1, self.T_flange_tcp, self.q) is None:
                self.stop_script("fake controller: Inverse kinematics failed (moveL target unreachable)")
                return
            T0 = forward(self.q, self.T_flange_tcp)
            path = LinearPath(T0, T1, lambda T, q: solve_ik(T, self.T_flange_tcp, q))
        self.path = path
        self.motion = Motion(path.length, speed * self.speed_slider, accel)
        self.moves_started += 1
        self.motion_is_async = asynchronous
        if asynchronous:
            self._write_async_progress(0)
            self._done()
            self.motion_signal_done = False
        else:
            self.motion_signal_done = True

    def _write_async_progress(self, value: int) -> None:
        """The progress word: op id bits 24-30, write count 16-22, bit 15 running, progress 0-14."""
        self.async_wr_count = (self.async_wr_count + 1) % 128
        if value == 0:
            self.async_op_id = (self.async_op_id + 1) % 128
        reg = self.async_wr_count * 65536 + self.async_op_id * 16777216
        if value >= 0:
            reg += (value & 0x7FFF) + 32768
        self.int_out[2] = reg

    # --- time ------------------------------------------------------------------------------------
    def tick(self, dt: float) -> None:
        """Advance motion by ``dt`` seconds and run one iteration of the control script."""
        prev_pose, prev_q = self.pose, self.q
        if self.motion is not None:
            self.motion.step(dt)
            q_new = self.path.joints_at(self.motion.s, self.q)
            if q_new is None:
                self._finish_motion_immediately()
                self.stop_script("fake controller: Inverse kinematics failed along the linear path")
            else:
                self.qd = (q_new - self.q) / dt if dt > 0 else np.zeros(6)
                self.q = q_new
                if self.motion.done:
                    if self.motion_signal_done and self.script_running:
                        self._done()
                    if self.motion_is_async:
                        self._write_async_progress(-1)
                    self.motion = None
                    self.path = None
                    self.qd = np.zeros(6)
        if self.q is not prev_q:  # the joints moved (an idle tick leaves the pose as it is)
            self.pose = matrix_to_pose(forward(self.q, self.T_flange_tcp))
        if dt > 0:
            self.tcp_speed = np.concatenate([(self.pose[:3] - prev_pose[:3]) / dt, np.zeros(3)])
        if self.motion is None:
            self.tcp_speed = np.zeros(6)
        self._script_step()

    # --- outputs ---------------------------------------------------------------------------------
    @property
    def safety_mode(self) -> int:
        if self.emergency_stopped:
            return SAFETY_ROBOT_EMERGENCY_STOP
        if self.protective_stopped:
            return SAFETY_PROTECTIVE_STOP
        return SAFETY_NORMAL

    def output_value(self, name: str) -> Any:
        """Current value of an RTDE output variable (types per :data:`protocol.OUTPUT_TYPES`)."""
        if name == "timestamp":
            return time.monotonic() - self.start_time
        if name in ("actual_q", "target_q"):
            return self.q
        if name in ("actual_qd", "target_qd"):
            return self.qd
        if name in ("actual_TCP_pose", "target_TCP_pose"):
            return self.pose
        if name in ("actual_TCP_speed", "target_TCP_speed"):
            return self.tcp_speed
        if name == "robot_mode":
            return ROBOT_MODE_POWER_OFF if self.emergency_stopped else ROBOT_MODE_RUNNING
        if name == "joint_mode":
            return [253] * 6
        if name in ("safety_mode", "safety_status"):
            return self.safety_mode
        if name == "safety_status_bits":
            if self.emergency_stopped:
                return SAFETY_BIT_ROBOT_ESTOP | SAFETY_BIT_ESTOPPED
            return SAFETY_BIT_PROTECTIVE if self.protective_stopped else SAFETY_BIT_NORMAL
        if name == "robot_status_bits":
            bits = 0 if self.emergency_stopped else ROBOT_BIT_POWER_ON
            return bits | (ROBOT_BIT_PROGRAM_RUNNING if self.script_running else 0)
        if name == "runtime_state":
            return RUNTIME_PLAYING if self.script_running else RUNTIME_STOPPED
        if name in ("speed_scaling", "target_speed_fraction"):
            return self.speed_slider
        if name == "actual_digital_input_bits":
            return self.digital_in
        if name == "actual_digital_output_bits":
            return self.digital_out
        if name == "payload":
            return self.payload_mass
        if name == "payload_cog":
            return self.payload_cog
        if name.startswith("output_int_register_"):
            return self.int_out.get(int(name.rsplit("_", 1)[1]), 0)
        if name.startswith("output_double_register_"):
            return self.double_out.get(int(name.rsplit("_", 1)[1]), 0.0)
        if name.startswith("input_int_register_"):
            return self.int_in.get(int(name.rsplit("_", 1)[1]), 0)
        if name.startswith("input_double_register_"):
            return self.double_in.get(int(name.rsplit("_", 1)[1]), 0.0)
        if name in ("actual_main_voltage", "actual_robot_voltage"):
            return 48.0
        return None  # zero of the right type

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able summary for the test control channel."""
        return {
            "q": [float(v) for v in self.q],
            "pose": [float(v) for v in self.pose],
            "tcp_offset": [float(v) for v in self.tcp_offset],
            "payload": self.payload_mass,
            "moving": self.motion is not None,
            "script_running": self.script_running,
            "protective_stopped": self.protective_stopped,
            "emergency_stopped": self.emergency_stopped,
            "digital_out": self.digital_out,
            "digital_in": self.digital_in,
            "moves_started": self.moves_started,
        }
