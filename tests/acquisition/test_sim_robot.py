"""The simulated UR5: sim clock, trapezoidal move timing, status, envelope refusal, injected faults."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from acquisition.envelope import SafetyEnvelope
from acquisition.errors import (
    ConnectionLost,
    EnvelopeViolation,
    MotionFailed,
    ProtectiveStop,
    UnreachablePose,
)
from acquisition.robot import Robot
from acquisition.sim.clock import SimClock
from acquisition.sim.robot import (
    SimRobot,
    SimRobotConfig,
    trapezoid_duration,
    trapezoid_position,
)
from calibration.transforms import Transform, pose_to_matrix

DOWN = [math.pi, 0.0, 0.0]  # rotation vector of a tool pointing straight down
START = np.array([0.0, -0.45, 0.40, *DOWN])


def _robot(**kwargs) -> SimRobot:
    robot = SimRobot(**kwargs)
    robot.connect()
    robot.move_linear(START, 0.25, 1.2)
    return robot


def _same_pose(a: np.ndarray, b: np.ndarray, tol: float = 1e-9) -> bool:
    return float(np.abs(pose_to_matrix(a) - pose_to_matrix(b)).max()) < tol


# --- clock ---------------------------------------------------------------------------------------------
def test_sim_clock_advances_only_when_told():
    clock = SimClock()
    assert clock.now() == 0.0
    clock.sleep(12.5)
    clock.sleep(0.0)
    assert clock.now() == pytest.approx(12.5)
    with pytest.raises(ValueError, match="negative"):
        clock.sleep(-1.0)
    with pytest.raises(ValueError, match="realtime_factor"):
        SimClock(realtime_factor=-2.0)


# --- profile -------------------------------------------------------------------------------------------
def test_trapezoid_and_triangle_durations():
    assert trapezoid_duration(0.5, 0.25, 1.2) == pytest.approx(0.5 / 0.25 + 0.25 / 1.2)
    assert trapezoid_duration(0.01, 0.25, 1.2) == pytest.approx(2 * math.sqrt(0.01 / 1.2))
    assert trapezoid_duration(0.0, 0.25, 1.2) == 0.0
    # the two formulas meet where the cruise phase vanishes (d = v^2 / a)
    d = 0.25**2 / 1.2
    assert trapezoid_duration(d, 0.25, 1.2) == pytest.approx(2 * math.sqrt(d / 1.2))


@pytest.mark.parametrize("distance", [0.5, 0.01])
def test_trapezoid_position_is_monotone_and_ends_at_the_distance(distance):
    total = trapezoid_duration(distance, 0.25, 1.2)
    ts = np.linspace(0, total, 400)
    xs = np.array([trapezoid_position(t, distance, 0.25, 1.2) for t in ts])
    assert xs[0] == 0.0 and xs[-1] == pytest.approx(distance)
    assert np.all(np.diff(xs) >= -1e-15)
    speeds = np.diff(xs) / np.diff(ts)
    assert speeds.max() <= 0.25 + 1e-9  # never above the commanded speed
    assert trapezoid_position(total / 2, distance, 0.25, 1.2) == pytest.approx(distance / 2)


# --- moves -----------------------------------------------------------------------------------------------
def test_sim_robot_satisfies_the_robot_protocol():
    assert isinstance(SimRobot(), Robot)


def test_long_linear_move_follows_the_trapezoid():
    robot = _robot()
    target = START.copy()
    target[0] += 0.2
    t0 = robot.clock.now()
    robot.move_linear(target, 0.1, 0.5)
    expected = 0.2 / 0.1 + 0.1 / 0.5
    assert robot.last_move_duration == pytest.approx(expected)
    assert robot.clock.now() - t0 == pytest.approx(expected)
    assert _same_pose(robot.tcp_pose(), target)
    record = robot.move_log[-1]
    assert record.kind == "linear" and record.outcome == "done"
    assert record.path_length == pytest.approx(0.2)


def test_short_linear_move_is_triangular():
    robot = _robot()
    target = START.copy()
    target[1] += 0.004
    robot.move_linear(target, 0.25, 1.2)
    assert robot.last_move_duration == pytest.approx(2 * math.sqrt(0.004 / 1.2))


def test_linear_move_keeps_the_tcp_on_the_straight_line():
    # stop the robot half-way (a protective stop) and look where it is
    robot = _robot()
    target = np.array([0.12, -0.50, 0.30, *DOWN])
    start, end = START[:3], target[:3]
    direction = (end - start) / np.linalg.norm(end - start)
    robot.inject_fault("protective_stop", on_move=1)
    with pytest.raises(ProtectiveStop):
        robot.move_linear(target, 0.25, 1.2)
    half = robot.tcp_pose()[:3]
    assert _same_pose(np.concatenate([half, DOWN]), robot.tcp_pose())  # orientation unchanged on the way
    off_line = (half - start) - np.dot(half - start, direction) * direction
    assert np.linalg.norm(off_line) < 1e-9
    assert 0.0 < np.dot(half - start, direction) < np.linalg.norm(end - start)


def test_pure_rotation_uses_the_equivalent_radius():
    robot = _robot()
    # 0.5 rad about the tool z-axis, no translation
    rotated = (Transform.from_pose(START) @ Transform.from_rt(np.array([0.0, 0.0, 0.5]), np.zeros(3))).to_pose()
    robot.move_linear(rotated, 0.25, 1.2)
    length = 0.5 * robot.config.rotation_equivalent_radius_m
    assert robot.move_log[-1].path_length == pytest.approx(length)
    assert robot.last_move_duration == pytest.approx(trapezoid_duration(length, 0.25, 1.2))
    assert _same_pose(robot.tcp_pose(), rotated)


def test_joint_move_times_the_leading_joint():
    robot = SimRobot()
    robot.connect()
    q0 = robot.joint_positions()
    q1 = q0 + np.array([0.6, 0.1, -0.2, 0.0, 0.0, -0.3])
    robot.move_joints(q1, 1.0, 2.0)
    assert robot.last_move_duration == pytest.approx(0.6 / 1.0 + 1.0 / 2.0)
    assert np.allclose(robot.joint_positions(), q1)
    assert robot.move_log[-1].kind == "joint"


def test_status_and_connection_lifecycle():
    robot = SimRobot()
    assert not robot.status().connected
    with pytest.raises(ConnectionLost, match="not connected"):
        robot.tcp_pose()
    with robot:
        status = robot.status()
        assert status.ok and status.robot_mode == 7 and status.safety_mode == 1
        assert len(status.tcp_pose) == 6 and len(status.joint_positions) == 6
    assert not robot.status().connected
    with pytest.raises(ConnectionLost):
        robot.move_joints(np.zeros(6), 1.0, 1.0)


def test_bad_arguments_raise_value_error():
    robot = _robot()
    with pytest.raises(ValueError, match="6 values"):
        robot.move_linear([0.1, 0.2, 0.3], 0.1, 0.1)
    with pytest.raises(ValueError, match="speed"):
        robot.move_linear(START, 0.0, 0.1)
    with pytest.raises(MotionFailed, match="joint 1"):
        robot.move_joints([7.0, 0, 0, 0, 0, 0], 1.0, 1.0)


# --- envelope ----------------------------------------------------------------------------------------------
def test_envelope_refusal_leaves_the_robot_where_it_was():
    robot = _robot(envelope=SafetyEnvelope())
    before_pose, before_count, before_time = robot.tcp_pose(), robot.move_count, robot.clock.now()
    below = START.copy()
    below[2] = 0.02
    with pytest.raises(EnvelopeViolation, match="z = 0.020 m is below the workspace floor 0.100 m"):
        robot.move_linear(below, 0.25, 1.2)
    with pytest.raises(EnvelopeViolation, match="linear speed 0.900 m/s exceeds max_speed"):
        robot.move_linear(START, 0.9, 1.2)
    with pytest.raises(EnvelopeViolation, match="joint speed"):
        robot.move_joints(robot.joint_positions(), 3.0, 1.0)
    assert robot.move_count == before_count
    assert robot.clock.now() == before_time
    assert np.array_equal(robot.tcp_pose(), before_pose)


def test_envelope_checks_points_along_a_joint_move():
    # turning the base one full turn ends where it started (inside the box), but the TCP sweeps a
    # circle round the base through y = +0.45 m, beyond the workspace maximum y 0.25 m
    robot = _robot(envelope=SafetyEnvelope())
    q = robot.joint_positions()
    q_turn = q.copy()
    q_turn[0] += -2 * math.pi if q[0] > 0 else 2 * math.pi
    assert _same_pose(robot.kinematics.forward(q_turn), robot.tcp_pose())
    count = robot.move_count
    with pytest.raises(EnvelopeViolation, match=r"pose move_joints path point \d+/\d+: y = .* above the workspace maximum y"):
        robot.move_joints(q_turn, 1.0, 1.0)
    assert robot.move_count == count
    assert np.array_equal(robot.joint_positions(), q)


# --- reachability ------------------------------------------------------------------------------------------
def test_unreachable_target_and_path_do_not_move():
    robot = _robot()
    q = robot.joint_positions()
    with pytest.raises(UnreachablePose, match="leaves the UR5's reach"):
        robot.move_linear([0.0, -0.45, 1.2, *DOWN], 0.25, 1.2)
    # both end points reachable; the straight line crosses the base axis (shoulder singularity)
    robot.move_linear([0.3, -0.3, 0.4, *DOWN], 0.25, 1.2)
    q = robot.joint_positions()
    count = robot.move_count
    with pytest.raises(UnreachablePose, match="singularity|reach"):
        robot.move_linear([-0.3, 0.3, 0.4, *DOWN], 0.25, 1.2)
    assert robot.move_count == count and np.array_equal(robot.joint_positions(), q)


def test_configured_unreachable_pose():
    bad = [0.05, -0.45, 0.40, *DOWN]
    robot = _robot(config=SimRobotConfig(faults={"unreachable_poses": [bad]}))
    count = robot.move_count
    with pytest.raises(UnreachablePose, match="configured as unreachable"):
        robot.move_linear(bad, 0.25, 1.2)
    assert robot.move_count == count
    assert _same_pose(robot.tcp_pose(), START)


# --- faults ------------------------------------------------------------------------------------------------
def test_protective_stop_on_the_nth_move_from_config():
    robot = SimRobot(config=SimRobotConfig(faults={"protective_stop_on_move": 3}))
    robot.connect()
    targets = [START + np.array([dx, 0, 0, 0, 0, 0]) for dx in (0.0, 0.05, 0.10, 0.15)]
    robot.move_linear(targets[0], 0.25, 1.2)
    robot.move_linear(targets[1], 0.25, 1.2)
    with pytest.raises(ProtectiveStop, match="move 3"):
        robot.move_linear(targets[2], 0.25, 1.2)
    status = robot.status()
    assert status.protective_stopped and status.safety_mode == 3 and not status.program_running
    # it stopped part-way between targets 1 and 2
    x = robot.tcp_pose()[0]
    assert targets[1][0] < x < targets[2][0]
    assert robot.move_log[-1].outcome == "protective_stop"
    with pytest.raises(ProtectiveStop, match="recover"):
        robot.move_linear(targets[3], 0.25, 1.2)
    robot.recover()
    assert robot.status().ok
    robot.move_linear(targets[3], 0.25, 1.2)
    assert _same_pose(robot.tcp_pose(), targets[3])


def test_connection_lost_at_run_time_until_reconnect():
    robot = _robot()
    robot.inject_fault("connection_lost", on_move=2)
    first = START + np.array([0.05, 0, 0, 0, 0, 0])
    robot.move_linear(first, 0.25, 1.2)
    with pytest.raises(ConnectionLost, match="connection lost during move"):
        robot.move_linear(START, 0.25, 1.2)
    assert not robot.status().connected
    for call in (robot.tcp_pose, robot.joint_positions, robot.stop):
        with pytest.raises(ConnectionLost):
            call()
    with pytest.raises(ConnectionLost):
        robot.move_linear(first, 0.25, 1.2)
    robot.connect()
    x = robot.tcp_pose()[0]
    assert START[0] < x < first[0]  # stopped part-way back
    robot.move_linear(START, 0.25, 1.2)
    assert _same_pose(robot.tcp_pose(), START)


def test_recover_reconnects_after_a_lost_link_like_the_ur_robot():
    # Issue 17 item 6: recover() raised ConnectionLost, so one lost link ended the simulated line.
    robot = _robot()
    robot.inject_fault("connection_lost", on_move=1)
    target = START + np.array([0.05, 0, 0, 0, 0, 0])
    with pytest.raises(ConnectionLost):
        robot.move_linear(target, 0.25, 1.2)
    assert not robot.status().connected
    robot.recover()
    status = robot.status()
    assert status.connected and status.ok and status.program_running
    x = robot.tcp_pose()[0]
    assert START[0] < x < target[0]  # recovered where the lost link stopped it, not teleported
    robot.move_linear(target, 0.25, 1.2)
    assert _same_pose(robot.tcp_pose(), target)


def test_injected_unreachable_fault_does_not_move():
    robot = _robot()
    robot.inject_fault("unreachable", on_move=1)
    count = robot.move_count
    target = START + np.array([0.05, 0, 0, 0, 0, 0])
    with pytest.raises(UnreachablePose, match="injected"):
        robot.move_linear(target, 0.25, 1.2)
    assert robot.move_count == count and _same_pose(robot.tcp_pose(), START)
    robot.move_linear(target, 0.25, 1.2)  # one-shot: the next try works
    assert _same_pose(robot.tcp_pose(), target)


def test_inject_fault_rejects_bad_arguments():
    robot = SimRobot()
    with pytest.raises(ValueError, match="unknown fault kind"):
        robot.inject_fault("meteor")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_move"):
        robot.inject_fault("protective_stop", on_move=0)


def test_bad_robot_config_names_the_key():
    with pytest.raises(ValidationError, match="protective_stop_on_mov"):
        SimRobotConfig(faults={"protective_stop_on_mov": 2})
    with pytest.raises(ValidationError, match="home_joints"):
        SimRobotConfig(home_joints=[0.0, 1.0])
    with pytest.raises(ValidationError, match="home_joints"):
        SimRobotConfig(home_joints=[0.0, 7.0, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValidationError, match="stop_fraction"):
        SimRobotConfig(faults={"stop_fraction": 1.0})


class _StoppingClock(SimClock):
    """A paced clock (tiny wall sleeps) that calls ``robot.stop()`` after a number of control steps."""

    def __init__(self, steps_before_stop: int) -> None:
        super().__init__(realtime_factor=1e6)
        self.steps_before_stop = steps_before_stop
        self.robot: SimRobot | None = None

    def sleep(self, dt: float) -> None:
        super().sleep(dt)
        if self.robot is not None:
            self.steps_before_stop -= 1
            if self.steps_before_stop == 0:
                self.robot.stop()


def test_stop_interrupts_a_paced_move():
    clock = _StoppingClock(steps_before_stop=10_000)
    robot = SimRobot(clock=clock)
    robot.connect()
    robot.move_linear(START, 0.25, 1.2)
    clock.robot, clock.steps_before_stop = robot, 20
    target = START + np.array([0.2, 0, 0, 0, 0, 0])
    with pytest.raises(MotionFailed, match="interrupted by stop"):
        robot.move_linear(target, 0.25, 1.2)
    record = robot.move_log[-1]
    assert record.outcome == "stopped"
    assert record.duration == pytest.approx(20 * robot.config.control_period_s)
    assert START[0] < robot.tcp_pose()[0] < target[0]
    clock.robot = None
    robot.move_linear(target, 0.25, 1.2)  # a stop does not latch
    assert _same_pose(robot.tcp_pose(), target)


def test_repeatability_noise_is_seeded():
    cfg = SimRobotConfig(repeatability_m=0.0001, seed=5)
    poses = []
    for _ in range(2):
        robot = _robot(config=cfg)
        poses.append(robot.tcp_pose())
    assert np.array_equal(poses[0], poses[1])
    error = np.linalg.norm(poses[0][:3] - START[:3])
    assert 0 < error < 0.001


def test_orientation_is_slerped_with_the_position():
    robot = _robot()
    # 0.2 m along x while turning 0.4 rad about the tool z-axis; stopped at half the duration, a
    # symmetric profile is at half the path: 0.1 m and 0.2 rad
    turned = Transform.from_pose(START) @ Transform.from_rt(np.array([0.0, 0.0, 0.4]), np.zeros(3))
    target = np.concatenate([START[:3] + [0.2, 0.0, 0.0], turned.to_pose()[3:]])
    robot.inject_fault("protective_stop", on_move=1)
    with pytest.raises(ProtectiveStop):
        robot.move_linear(target, 0.25, 1.2)
    halfway = (Transform.from_pose(START) @ Transform.from_rt(np.array([0.0, 0.0, 0.2]), np.zeros(3))).to_pose()
    halfway[:3] = START[:3] + [0.1, 0.0, 0.0]
    assert _same_pose(robot.tcp_pose(), halfway, 1e-9)
