"""Synthetic board views for calibration tests: exact projections of the board corners plus noise.

No renderer involved: corners are projected with :meth:`CameraModel.project` (lens distortion included),
Gaussian pixel noise is added, and the TCP poses get small position/rotation noise like a real robot's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calibration.camera_model import CameraModel
from calibration.charuco import BoardDetection, CharucoBoardSpec
from calibration.transforms import Transform
from cell.calibrate import CalibrationPlanConfig, CapturedView, plan_calibration_views

#: A 1280x1024 camera with a 16 mm lens on 5.5 um pixels, barrel distortion, offset principal point.
TRUE_CAMERA = CameraModel.from_lens(1280, 1024, 0.016, 5.5e-6, dist=(-0.12, 0.08, 0.0006, -0.0004, 0.0),
                                    principal_offset_px=(7.0, -5.0))
#: Camera 90 mm along the flange z, slightly offset and rotated (metres, radians).
TRUE_T_FLANGE_CAM = Transform.from_pose([0.032, -0.018, 0.090, 0.02, -0.03, 1.58])
#: Board lying on the table, printed face up (board z points down into the table).
T_BASE_BOARD = Transform.from_pose([0.35, -0.25, 0.02, np.pi, 0.0, 0.0])
SPEC = CharucoBoardSpec(squares_x=9, squares_y=7, square_length_m=0.02, marker_length_m=0.015)


@dataclass
class SyntheticSetup:
    camera: CameraModel
    T_flange_cam: Transform
    T_base_board: Transform
    spec: CharucoBoardSpec


def synthetic_views(n_views: int, seed: int = 0, pixel_noise: float = 0.05, pos_noise_m: float = 2e-5,
                    rot_noise_rad: float = np.radians(0.005), setup: SyntheticSetup | None = None,
                    plan_config: CalibrationPlanConfig | None = None) -> list[CapturedView]:
    """``n_views`` planned views of the board with noisy corner projections (``pixel_noise`` px std) and
    reported TCP poses off by ``pos_noise_m`` (m std per axis) and ``rot_noise_rad`` (rad std per axis)."""
    s = setup or SyntheticSetup(TRUE_CAMERA, TRUE_T_FLANGE_CAM, T_BASE_BOARD, SPEC)
    rng = np.random.default_rng(seed)
    config = plan_config or CalibrationPlanConfig(views=n_views, seed=seed)
    plan = plan_calibration_views(s.spec, s.T_base_board, s.camera, s.T_flange_cam, config)
    corners = s.spec.corner_points()
    out = []
    for view in plan:
        T_base_cam = Transform.from_pose(view.pose) @ s.T_flange_cam
        px = s.camera.project((T_base_cam.inverse() @ s.T_base_board).apply(corners))
        px = px + rng.normal(0.0, pixel_noise, px.shape)
        inside = (px[:, 0] >= 0) & (px[:, 0] < s.camera.width) & (px[:, 1] >= 0) & (px[:, 1] < s.camera.height)
        ids = np.flatnonzero(inside)
        det = BoardDetection(px[ids], ids, corners[ids], (s.camera.width, s.camera.height), n_markers=0)
        noisy = Transform.from_pose(view.pose) @ Transform.from_rt(
            rng.normal(0.0, rot_noise_rad, 3), rng.normal(0.0, pos_noise_m, 3))
        out.append(CapturedView(view.view_id, view.pose, noisy.to_pose(), det, len(out), "SYN-1"))
    return out
