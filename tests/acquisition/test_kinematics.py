"""UR5 kinematics: forward against the DH model, inverse round trips, branch choice, TCP offset."""
from __future__ import annotations

import numpy as np
import pytest
import ur_analytic_ik

from acquisition.errors import UnreachablePose
from acquisition.sim.kinematics import (
    UR5_DH,
    UR5Kinematics,
    dh_forward_matrices,
    fast_matrix_to_rotvec,
    fast_pose_to_matrix,
)
from calibration.transforms import pose_to_matrix, rotvec_to_matrix


def _random_joints(rng: np.random.Generator, n: int) -> np.ndarray:
    """Joint vectors away from the wrist singularity (|sin q5| > 0.2) and fully stretched arms."""
    q = rng.uniform(-np.pi, np.pi, size=(n, 6))
    q[:, 4] = np.sign(rng.uniform(-1, 1, n)) * rng.uniform(0.25, np.pi - 0.25, n)
    q[:, 2] = np.sign(rng.uniform(-1, 1, n)) * rng.uniform(0.2, np.pi - 0.2, n)
    return q


def _assert_same_pose(p: np.ndarray, q: np.ndarray, tol: float) -> None:
    """Poses equal as transforms (rotation vectors near pi may differ in sign)."""
    assert np.abs(pose_to_matrix(p) - pose_to_matrix(q)).max() < tol


def test_dh_constants_are_the_ur5():
    assert UR5_DH.d == pytest.approx((0.089159, 0.0, 0.0, 0.10915, 0.09465, 0.0823))
    assert UR5_DH.a == pytest.approx((0.0, -0.425, -0.39225, 0.0, 0.0, 0.0))


def test_zero_configuration_matches_the_dh_geometry():
    # all joints at 0: the arm lies along -x; flange at x = a2 + a3, y = -(d4 + d6), z = d1 - d5
    pose = UR5Kinematics().forward(np.zeros(6))
    assert pose[:3] == pytest.approx([-0.81725, -0.19145, -0.005491], abs=1e-9)


def test_forward_matches_the_compiled_solver_and_batch():
    rng = np.random.default_rng(0)
    q = rng.uniform(-2 * np.pi, 2 * np.pi, size=(50, 6))
    kin = UR5Kinematics()
    batch = kin.forward_matrix(q)
    assert batch.shape == (50, 4, 4)
    for qi, mi in zip(q, batch):
        assert np.abs(mi - ur_analytic_ik.ur5.forward_kinematics(*qi)).max() < 1e-12
        assert np.abs(kin.forward_matrix(qi) - mi).max() < 1e-12
    assert np.abs(dh_forward_matrices(q) - batch).max() < 1e-12


def test_fk_of_ik_returns_the_pose_for_many_random_poses():
    rng = np.random.default_rng(1)
    kin = UR5Kinematics()
    for q in _random_joints(rng, 300):
        pose = kin.forward(q)
        solved = kin.inverse(pose, q_near=rng.uniform(-np.pi, np.pi, 6))
        _assert_same_pose(kin.forward(solved), pose, 1e-9)


def test_ik_picks_the_solution_nearest_q_near():
    rng = np.random.default_rng(2)
    kin = UR5Kinematics()
    for q in _random_joints(rng, 50):
        pose = kin.forward(q)
        solved = kin.inverse(pose, q_near=q + rng.normal(0, 0.01, 6))
        assert np.abs(solved - q).max() < 1e-7
        # every other branch is farther from q
        others = [s for s in kin.inverse_all(pose) if np.abs(np.angle(np.exp(1j * (s - q)))).max() > 1e-6]
        assert len(others) >= 1


def test_ik_unwraps_joints_towards_q_near_within_limits():
    kin = UR5Kinematics()
    q = np.array([1.0, -1.5, 1.2, -1.3, -1.57, -0.5])
    pose = kin.forward(q)
    q_near = q.copy()
    q_near[5] += 2 * np.pi  # wrist 3 one turn further: the same pose, the solution follows
    solved = kin.inverse(pose, q_near=q_near)
    assert solved[5] == pytest.approx(q[5] + 2 * np.pi, abs=1e-7)
    assert np.all(np.abs(solved) <= 2 * np.pi + 1e-9)
    # beyond the limit the nearest copy is not allowed: the next copy inwards is used
    q_near[5] = 2 * np.pi + 3.0
    solved = kin.inverse(pose, q_near=q_near)
    assert solved[5] == pytest.approx(q[5] + 2 * np.pi, abs=1e-7)  # 12.07 rad is beyond the limit


def test_all_eight_branches_reach_the_pose():
    kin = UR5Kinematics()
    pose = np.array([0.0, -0.45, 0.45, np.pi, 0.0, 0.0])
    sols = kin.inverse_all(pose)
    assert len(sols) == 8
    for s in sols:
        _assert_same_pose(kin.forward(s), pose, 1e-9)


@pytest.mark.parametrize("pose", [[1.2, 0.0, 0.3, np.pi, 0, 0], [0.0, 0.0, 1.5, 0, 0, 0]])
def test_out_of_reach_pose_raises_unreachable(pose):
    with pytest.raises(UnreachablePose, match="out of the UR5's reach"):
        UR5Kinematics().inverse(pose)


def test_tcp_offset_is_applied_in_forward_and_inverse():
    offset = np.array([0.01, -0.02, 0.15, 0.0, 0.0, np.pi / 2])
    plain, tool = UR5Kinematics(), UR5Kinematics(tcp_offset=offset)
    q = np.array([1.3, -1.7, 1.5, -1.4, -1.57, 2.9])
    expected = pose_to_matrix(plain.forward(q)) @ pose_to_matrix(offset)
    assert np.abs(pose_to_matrix(tool.forward(q)) - expected).max() < 1e-12
    solved = tool.inverse(tool.forward(q), q_near=q)
    assert np.abs(solved - q).max() < 1e-7


def test_bad_inputs_are_rejected():
    kin = UR5Kinematics()
    with pytest.raises(ValueError, match="6 joint angles"):
        kin.forward([0.0, 1.0])
    with pytest.raises(ValueError, match="non-finite"):
        kin.inverse([0.1, 0.2, np.nan, 0, 0, 0])


def test_fast_rotation_helpers_agree_with_scipy():
    rng = np.random.default_rng(3)
    for _ in range(200):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = rng.uniform(0, np.pi)
        pose = np.concatenate([rng.normal(size=3), axis * angle])
        assert np.abs(fast_pose_to_matrix(pose) - pose_to_matrix(pose)).max() < 1e-12
        back = fast_matrix_to_rotvec(rotvec_to_matrix(axis * angle))
        assert np.abs(rotvec_to_matrix(back) - rotvec_to_matrix(axis * angle)).max() < 1e-12
    for angle in (0.0, 1e-10, np.pi - 1e-9, np.pi):
        rv = fast_matrix_to_rotvec(rotvec_to_matrix(np.array([0.0, 0.6, 0.8]) * angle))
        assert np.linalg.norm(rv) == pytest.approx(angle, abs=1e-9)
