"""Round trips of the lead's geometry core (transforms, camera model) and the plane homography."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.camera_model import CameraModel
from calibration.homography import plane_homography
from calibration.transforms import (
    Transform,
    matrix_to_pose,
    matrix_to_rotvec,
    pose_to_matrix,
    rotation_angle_between,
    rotvec_to_matrix,
)

CAMERA = CameraModel.from_lens(1280, 1024, 0.016, 5.5e-6, dist=(-0.12, 0.08, 0.0006, -0.0004, 0.01),
                               principal_offset_px=(7.0, -5.0))


@pytest.mark.parametrize("seed", range(5))
def test_rotvec_matrix_pose_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    rotvec = axis / np.linalg.norm(axis) * rng.uniform(0.01, np.pi - 0.01)
    R = rotvec_to_matrix(rotvec)
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(R), 1.0)
    assert np.allclose(matrix_to_rotvec(R), rotvec, atol=1e-10)
    pose = np.concatenate([rng.uniform(-1, 1, 3), rotvec])
    assert np.allclose(matrix_to_pose(pose_to_matrix(pose)), pose, atol=1e-10)
    T = Transform.from_pose(pose)
    assert np.allclose((T @ T.inverse()).matrix, np.eye(4), atol=1e-12)
    assert np.allclose(T.to_pose(), pose, atol=1e-10)


def test_rotation_angle_between_known_angle() -> None:
    R1 = rotvec_to_matrix([0.0, 0.0, 0.3])
    R2 = rotvec_to_matrix([0.0, 0.0, 0.8])
    assert rotation_angle_between(R1, R2) == pytest.approx(0.5, abs=1e-12)


def test_project_then_unproject_returns_the_points() -> None:
    rng = np.random.default_rng(1)
    pix = np.column_stack([rng.uniform(0, CAMERA.width - 1, 200), rng.uniform(0, CAMERA.height - 1, 200)])
    depth = rng.uniform(0.2, 1.0, 200)
    pts = CAMERA.unproject(pix, depth)
    assert np.allclose(pts[:, 2], depth)
    assert np.max(np.abs(CAMERA.project(pts) - pix)) < 1e-6
    back = CAMERA.unproject(CAMERA.project(pts), pts[:, 2])
    assert np.max(np.linalg.norm(back - pts, axis=1)) < 1e-9


def test_plane_homography_maps_plane_points_between_poses_within_a_pixel() -> None:
    ideal = CameraModel(CAMERA.width, CAMERA.height, CAMERA.fx, CAMERA.fy, CAMERA.cx, CAMERA.cy)
    T_w_c1 = Transform.from_pose([0.40, -0.10, 0.45, np.pi, 0.0, 0.0])
    T_w_c2 = Transform.from_pose([0.43, -0.08, 0.42, np.pi, 0.12, 0.05])
    rng = np.random.default_rng(2)
    plane_pts = np.column_stack([rng.uniform(0.33, 0.47, 100), rng.uniform(-0.16, -0.04, 100), np.full(100, 0.01)])
    p1 = ideal.project(T_w_c1.inverse().apply(plane_pts))
    p2 = ideal.project(T_w_c2.inverse().apply(plane_pts))
    H = plane_homography(ideal, ideal, T_w_c1, T_w_c2, np.array([0, 0, 0.01]), np.array([0, 0, 1.0]))
    mapped = np.column_stack([p1, np.ones(len(p1))]) @ H.T
    mapped = mapped[:, :2] / mapped[:, 2:]
    assert np.max(np.linalg.norm(mapped - p2, axis=1)) < 1.0
    # A wrong plane height breaks the mapping by far more than a pixel: the test can fail.
    H_wrong = plane_homography(ideal, ideal, T_w_c1, T_w_c2, np.array([0, 0, 0.05]), np.array([0, 0, 1.0]))
    wrong = np.column_stack([p1, np.ones(len(p1))]) @ H_wrong.T
    assert np.max(np.linalg.norm(wrong[:, :2] / wrong[:, 2:] - p2, axis=1)) > 5.0


def test_plane_homography_with_distortion_through_undistorted_pixels() -> None:
    T_w_c1 = Transform.from_pose([0.40, -0.10, 0.45, np.pi, 0.0, 0.0])
    T_w_c2 = Transform.from_pose([0.38, -0.12, 0.47, np.pi, -0.1, 0.2])
    rng = np.random.default_rng(3)
    plane_pts = np.column_stack([rng.uniform(0.35, 0.45, 50), rng.uniform(-0.15, -0.05, 50), np.zeros(50)])
    d1 = CAMERA.project(T_w_c1.inverse().apply(plane_pts))
    d2 = CAMERA.project(T_w_c2.inverse().apply(plane_pts))
    H = plane_homography(CAMERA, CAMERA, T_w_c1, T_w_c2, np.zeros(3), np.array([0, 0, 1.0]))
    n1 = CAMERA.undistort_pixels(d1)
    ideal1 = np.column_stack([n1, np.ones(len(n1))]) @ CAMERA.K.T
    m = ideal1 @ H.T
    norm2 = (m[:, :2] / m[:, 2:] - [CAMERA.cx, CAMERA.cy]) / [CAMERA.fx, CAMERA.fy]
    redistorted = CAMERA.distort_normalized(norm2) * [CAMERA.fx, CAMERA.fy] + [CAMERA.cx, CAMERA.cy]
    assert np.max(np.linalg.norm(redistorted - d2, axis=1)) < 1.0
