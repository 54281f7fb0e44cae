"""The fake UR controller speaks RTDE v2 and the dashboard protocol (raw sockets, no ur_rtde)."""
from __future__ import annotations

import socket
import struct

import numpy as np
import pytest

from acquisition.ur.fake_controller import protocol as P
from acquisition.ur.fake_controller.robot_model import CMD_MOVEL, SCRIPT_DONE, SCRIPT_READY, RobotModel
from tests.acquisition.ur_fixtures import start_fake

pytestmark = pytest.mark.timeout(60)


def _recv(sock):
    size, kind = P.HEADER.unpack(sock.recv(3, socket.MSG_WAITALL))
    return kind, sock.recv(size - 3, socket.MSG_WAITALL) if size > 3 else b""


def test_rtde_handshake_recipes_and_data_packages():
    fake = start_fake()
    try:
        with socket.create_connection((fake.host, 30004), timeout=5) as s:
            s.sendall(P.pack_message(P.REQUEST_PROTOCOL_VERSION, struct.pack(">H", 2)))
            assert _recv(s) == (P.REQUEST_PROTOCOL_VERSION, b"\x01")
            s.sendall(P.pack_message(P.GET_URCONTROL_VERSION))
            kind, body = _recv(s)
            assert struct.unpack(">IIII", body)[:2] == (3, 15)
            s.sendall(P.pack_message(P.SETUP_OUTPUTS, struct.pack(">d", 125.0) + b"timestamp,no_such_thing"))
            kind, body = _recv(s)
            assert body[0] == 0 and body[1:].decode() == "DOUBLE,NOT_FOUND"
            s.sendall(P.pack_message(P.SETUP_OUTPUTS, struct.pack(">d", 125.0) + b"timestamp,actual_TCP_pose,robot_mode"))
            kind, body = _recv(s)
            out_id = body[0]
            assert body[1:].decode() == "DOUBLE,VECTOR6D,INT32"
            ids = []
            for names in (b"input_int_register_0", b"standard_digital_output_mask,standard_digital_output"):
                s.sendall(P.pack_message(P.SETUP_INPUTS, names))
                ids.append(_recv(s)[1][0])
            assert ids == [1, 2]  # input recipes numbered 1..N in order
            s.sendall(P.pack_message(P.START))
            assert _recv(s) == (P.START, b"\x01")
            s.sendall(P.pack_message(P.DATA_PACKAGE, struct.pack(">BBB", 2, 0b100, 0b100)))
            stamps = []
            for _ in range(10):
                kind, body = _recv(s)
                assert kind == P.DATA_PACKAGE and body[0] == out_id
                values = struct.unpack(">d6di", body[1:])
                stamps.append(values[0])
                assert values[7] == 7  # RUNNING
            assert all(b > a for a, b in zip(stamps, stamps[1:]))
        assert fake.state()["digital_out"] == 0b100
    finally:
        fake.stop()


def test_dashboard_answers_and_unlocks_protective_stop():
    fake = start_fake()
    try:
        fake.command("protective_stop")
        with socket.create_connection((fake.host, 29999), timeout=5) as s:
            f = s.makefile("rwb")
            assert f.readline().startswith(b"Connected: Universal Robots Dashboard Server")
            for cmd, expected in ((b"PolyscopeVersion", b"URSoftware 3.15"), (b"safetystatus", b"Safetystatus: PROTECTIVE_STOP"),
                                  (b"unlock protective stop", b"Protective stop releasing"),
                                  (b"safetystatus", b"Safetystatus: NORMAL"), (b"bogus", b"could not understand")):
                f.write(cmd + b"\n")
                f.flush()
                assert f.readline().startswith(expected)
    finally:
        fake.stop()


def test_register_handshake_and_timed_linear_motion():
    m = RobotModel()
    m.start_script()
    assert m.int_out[0] == SCRIPT_READY
    target = m.pose.copy()
    target[2] -= 0.10
    m.int_in[0], m.int_in[1] = CMD_MOVEL, 0
    for i, v in enumerate(list(target) + [0.25, 1.2]):
        m.double_in[i] = v
    dt, ticks = 0.008, 0
    while m.int_out[0] != SCRIPT_DONE and ticks < 1000:
        m.tick(dt)
        ticks += 1
    # trapezoid: 0.1 m at 0.25 m/s, 1.2 m/s^2 takes 0.1/0.25 + 0.25/1.2 = 0.61 s
    assert ticks * dt == pytest.approx(0.608, abs=0.05)
    assert np.linalg.norm(m.pose[:3] - target[:3]) < 1e-6
    m.int_in[0] = 0
    m.tick(dt)
    assert m.int_out[0] == SCRIPT_READY


def test_fake_uses_the_sim_kinematics_and_home():
    """The fake starts at the sim robot's home; its FK is the UR5 DH model and its linear paths move the
    position linearly and the orientation by slerp (checked against the formulas written out, not against
    the shared code the fake calls)."""
    from acquisition.sim.kinematics import dh_forward_matrices
    from acquisition.sim.robot import SimRobotConfig
    from acquisition.ur.fake_controller.motion import LinearPath, forward
    from calibration.transforms import matrix_to_rotvec, pose_to_matrix, rotvec_to_matrix

    m = RobotModel()
    assert m.q.tolist() == list(SimRobotConfig().home_joints)
    tcp = pose_to_matrix(np.array([0.01, -0.02, 0.05, 0.1, 0.0, -0.2]))
    rng = np.random.default_rng(0)
    for q in rng.uniform(-np.pi, np.pi, (20, 6)):
        assert np.abs(forward(q, tcp) - dh_forward_matrices(q) @ tcp).max() < 1e-12
    T0, T1 = forward(m.q, np.eye(4)), forward(m.q + 0.2, np.eye(4))
    path = LinearPath(T0, T1, lambda T, q: None)
    w = matrix_to_rotvec(T0[:3, :3].T @ T1[:3, :3])
    for f in (0.0, 0.3, 0.5, 1.0):
        expected = np.eye(4)
        expected[:3, :3] = T0[:3, :3] @ rotvec_to_matrix(w * f)
        expected[:3, 3] = T0[:3, 3] + f * (T1[:3, 3] - T0[:3, 3])
        assert np.abs(path.matrix_at(f * path.length) - expected).max() < 1e-12
    assert np.abs(path.matrix_at(path.length) - T1).max() < 1e-12
