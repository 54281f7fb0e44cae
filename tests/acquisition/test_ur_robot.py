"""URRobot on the REAL ur_rtde client against the fake controller in a subprocess.

ur_rtde hard-codes its ports, so each fake listens on its own 127.0.0.x address; the tests of this
module share one fake and run one after another (ur_rtde constructors hold the GIL).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from acquisition.envelope import SafetyEnvelope
from acquisition.errors import ConnectionLost, EnvelopeViolation, ProtectiveStop, RobotError
from acquisition.robot import Robot
from acquisition.ur import URRobot, URRobotConfig
from tests.acquisition.ur_fixtures import free_loopback_host, start_fake

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def fake():
    proc = start_fake()
    yield proc
    proc.stop()


#: The simulated cell's envelope (configs/cells/sim.yaml); the fake starts at the sim's home pose.
CELL_ENVELOPE = SafetyEnvelope(workspace_min=(-0.30, -0.70, 0.20), workspace_max=(0.30, -0.20, 0.70))


@pytest.fixture(scope="module")
def connected_robot(fake):
    rob = URRobot(URRobotConfig(host=fake.host, tcp_offset=(0.0, 0.0, 0.05, 0.0, 0.0, 0.0), payload_kg=0.8),
                  envelope=CELL_ENVELOPE)
    rob.connect()
    yield rob
    rob.close()


@pytest.fixture()
def robot(connected_robot):
    """The module's connected robot, made ready again if an earlier test left it stopped."""
    if not connected_robot.status().ok:
        connected_robot.recover()
    return connected_robot


def _run_in_thread(fn):
    box: dict = {}

    def target():
        start = time.monotonic()
        try:
            fn()
        except BaseException as exc:  # handed to the test
            box["error"] = exc
        box["elapsed"] = time.monotonic() - start

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def test_connect_reports_state_and_applies_tool(robot, fake):
    assert isinstance(robot, Robot)
    status = robot.status()
    assert status.ok and status.robot_mode == 7 and status.safety_mode == 1
    state = fake.state()
    assert state["tcp_offset"] == pytest.approx([0.0, 0.0, 0.05, 0.0, 0.0, 0.0])
    assert state["payload"] == pytest.approx(0.8)
    assert np.allclose(robot.tcp_pose(), state["pose"], atol=1e-6)
    assert robot.identity()["robot_model"] == "UR5"


def test_move_linear_reaches_target_within_1mm(robot, fake):
    start = robot.tcp_pose()
    target = start.copy()
    target[:3] += [0.03, -0.02, -0.04]
    robot.move_linear(target, 0.25, 1.2)
    assert np.linalg.norm(robot.tcp_pose()[:3] - target[:3]) < 1e-3
    assert np.linalg.norm(np.asarray(fake.state()["pose"])[:3] - target[:3]) < 1e-3
    robot.move_linear(start, 0.25, 1.2)
    assert np.linalg.norm(robot.tcp_pose()[:3] - start[:3]) < 1e-3


def test_move_joints_reaches_target(robot):
    q0 = robot.joint_positions()
    q1 = q0 + np.array([0.05, -0.03, 0.04, 0.0, 0.0, 0.1])
    robot.move_joints(q1, 1.0, 2.0)
    assert np.max(np.abs(robot.joint_positions() - q1)) < 1e-3
    robot.move_joints(q0, 1.0, 2.0)
    assert np.max(np.abs(robot.joint_positions() - q0)) < 1e-3


def test_async_move_then_stop_halts_short_of_target(robot):
    start = robot.tcp_pose()
    target = start.copy()
    target[2] -= 0.15
    robot.move_linear_async(target, 0.05, 0.5)
    time.sleep(0.5)
    assert robot.is_moving()
    robot.stop()
    deadline = time.monotonic() + 5
    while robot.is_moving() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not robot.is_moving()
    z = robot.tcp_pose()[2]
    assert target[2] + 0.05 < z < start[2] - 0.005  # moved, then stopped well before the target
    robot.move_linear(start, 0.25, 1.2)


def test_protective_stop_raises_then_recover_and_move_again(robot, fake):
    start = robot.tcp_pose()
    target = start.copy()
    target[2] -= 0.1
    thread, box = _run_in_thread(lambda: robot.move_linear(target, 0.05, 0.5))
    time.sleep(0.4)
    fake.command("protective_stop")
    thread.join(30)
    assert isinstance(box.get("error"), ProtectiveStop), box
    assert robot.status().protective_stopped
    with pytest.raises(ProtectiveStop):
        robot.move_linear(start, 0.25, 1.2)  # refused at once while stopped
    robot.recover()
    assert robot.status().ok
    robot.move_linear(target, 0.25, 1.2)
    assert np.linalg.norm(robot.tcp_pose()[:3] - target[:3]) < 1e-3
    robot.move_linear(start, 0.25, 1.2)


def test_connect_during_protective_stop_fails_fast_then_recover_completes(fake):
    fake.command("protective_stop")
    rob = URRobot(URRobotConfig(host=fake.host), envelope=CELL_ENVELOPE)
    try:
        start = time.monotonic()
        with pytest.raises(ProtectiveStop, match="recover"):
            rob.connect()
        assert time.monotonic() - start < 4  # not ur_rtde's 5 s script-start timeout
        assert not rob.status().program_running
        rob.recover()
        assert rob.status().ok
        pose = rob.tcp_pose()
        pose[2] -= 0.01
        rob.move_linear(pose, 0.1, 0.5)
    finally:
        rob.close()


def test_envelope_violation_sends_nothing(fake):
    envelope = CELL_ENVELOPE
    with URRobot(URRobotConfig(host=fake.host), envelope=envelope) as rob:
        before = fake.state()
        bad = rob.tcp_pose()
        bad[2] = 0.05  # below the floor
        with pytest.raises(EnvelopeViolation, match="floor"):
            rob.move_linear(bad, 0.1, 0.5, label="p7")
        with pytest.raises(EnvelopeViolation, match="max_speed"):
            rob.move_linear(rob.tcp_pose(), 2.0, 0.5)
        after = fake.state()
        assert after["moves_started"] == before["moves_started"]
        assert rob.moves_sent == 0
        assert np.allclose(after["q"], before["q"])


def _count_probes(monkeypatch) -> list[str]:
    """Wrap URRobot's port probe so that each call records its host (the probe itself still runs)."""
    import acquisition.ur.robot as ur_robot

    calls: list[str] = []
    real = ur_robot.probe_controller

    def counting(host: str, timeout_s: float = 2.0) -> None:
        calls.append(host)
        real(host, timeout_s)

    monkeypatch.setattr(ur_robot, "probe_controller", counting)
    return calls


def test_fresh_connect_probes_the_ports_once(fake, monkeypatch):
    calls = _count_probes(monkeypatch)
    with URRobot(URRobotConfig(host=fake.host), envelope=CELL_ENVELOPE) as rob:
        assert rob.status().ok
        assert calls == [fake.host]
        rob.connect()  # already connected: a no-op
        assert calls == [fake.host]
    host = free_loopback_host()
    with pytest.raises(ConnectionLost, match=rf"{host}.*30004.*refused") as err:
        URRobot(URRobotConfig(host=host, connect_timeout_s=1.0)).connect()
    assert "\n" not in str(err.value)
    assert calls == [fake.host, host]


def test_digital_output_set_and_read_back_and_input(robot, fake):
    robot.set_digital_output(3, True)
    assert robot.digital_output(3) is True
    assert fake.state()["digital_out"] & (1 << 3)
    robot.set_digital_output(3, False)
    assert robot.digital_output(3) is False
    fake.command("set_digital_input", n=5, value=True)
    deadline = time.monotonic() + 2
    while not robot.digital_input(5) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert robot.digital_input(5) is True and robot.digital_input(4) is False
    with pytest.raises(RobotError, match="0-7"):
        robot.set_digital_output(9, True)


def test_nothing_listening_fails_fast_with_clear_message():
    host = free_loopback_host()
    start = time.monotonic()
    with pytest.raises(ConnectionLost, match=rf"{host}.*30004.*refused"):
        URRobot(URRobotConfig(host=host, connect_timeout_s=1.0)).connect()
    assert time.monotonic() - start < 10


def test_silent_controller_fails_fast(fake):
    fake.command("freeze")
    try:
        start = time.monotonic()
        with pytest.raises(ConnectionLost, match="did not answer"):
            URRobot(URRobotConfig(host=fake.host, connect_timeout_s=0.5)).connect()
        assert time.monotonic() - start < 10
    finally:
        fake.command("unfreeze")


def test_link_lost_mid_move_raises_within_seconds():
    fake = start_fake()
    rob = URRobot(URRobotConfig(host=fake.host, stale_timeout_s=0.5), envelope=CELL_ENVELOPE)
    try:
        rob.connect()
        target = rob.tcp_pose()
        target[2] -= 0.1
        thread, box = _run_in_thread(lambda: rob.move_linear(target, 0.02, 0.5))
        time.sleep(0.4)
        fake.command("link_down")
        thread.join(60)
        assert isinstance(box.get("error"), ConnectionLost), box
        assert box["elapsed"] < 30  # not ur_rtde's 300 s execution timeout
        assert not rob.status().connected
        with pytest.raises(ConnectionLost):
            rob.recover()  # still down: the probe fails at once
    finally:
        rob.close()
        fake.stop()


def test_cell_check_prints_robot_and_camera_state(fake, tmp_path, capsys):
    genicam = pytest.importorskip("genicam")
    from pathlib import Path

    from cell.cli import cli, main
    from cell.commands import check

    viky = Path(genicam.__file__).parent / "viky.cti"
    cell = tmp_path / "cell.yaml"
    cell.write_text(
        f"robot: {{backend: ur5, host: '{fake.host}'}}\n"
        f"camera: {{backend: genicam, producer: '{viky}', pixel_format: Mono8}}\n"
        "envelope: {workspace_min: [-0.3, -0.7, 0.2], workspace_max: [0.3, -0.2, 0.7]}\n")
    if "check" not in cli.commands:
        cli.add_command(check.command)
    assert main(["check", "--cell", str(cell)]) == 0
    out = capsys.readouterr().out
    z_mm = fake.state()["pose"][2] * 1000
    assert "safety mode: NORMAL" in out and f"z {z_mm:.1f} mm" in out and "test frame: 400x400 Mono8" in out
    fake.command("protective_stop")
    try:
        assert main(["check", "--cell", str(cell), "--skip-camera"]) == 2
        assert "protective stop" in capsys.readouterr().err
    finally:
        import dashboard_client

        dash = dashboard_client.DashboardClient(fake.host)
        dash.connect(2000)
        dash.unlockProtectiveStop()
        dash.disconnect()
    cell.write_text(cell.read_text().replace(fake.host, free_loopback_host()))
    assert main(["check", "--cell", str(cell)]) == 2
    assert "refused" in capsys.readouterr().err
