"""Eye-in-hand calibration: the camera's pose on the robot flange from TCP poses paired with board poses.

Frames: ``T_base_tcp`` = the robot's reported TCP pose (UR ``[x, y, z, rx, ry, rz]``); ``T_cam_board`` = the
board in the camera frame (``solvePnP``); the result ``T_flange_cam`` is the camera in the TCP frame (the
flange when the robot's TCP offset is zero). The board never moves, so for every view
``T_base_board = T_base_tcp @ T_flange_cam @ T_cam_board`` should be the same; its spread is the
consistency report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from calibration.camera_model import CameraModel
from calibration.charuco import BoardDetection
from calibration.errors import CalibrationError, NotEnoughViews
from calibration.transforms import Transform

#: Hand-eye methods by name -> OpenCV flag.
HAND_EYE_METHODS: dict[str, int] = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}

#: Fewest views hand-eye calibration accepts (two relative motions with distinct axes is the theory's minimum).
MIN_VIEWS_HAND_EYE = 3


def hand_eye_method(name: str) -> int:
    """OpenCV flag for a method name (case-insensitive); unknown -> CalibrationError listing the choices."""
    key = name.strip().lower()
    if key not in HAND_EYE_METHODS:
        raise CalibrationError(f"unknown hand-eye method {name!r}; choose one of {', '.join(HAND_EYE_METHODS)}")
    return HAND_EYE_METHODS[key]


def board_pose_pnp(detection: BoardDetection, camera: CameraModel, min_corners: int = 6) -> Transform | None:
    """Board pose in the camera frame from one detection (planar PnP then Levenberg-Marquardt refinement).

    Returns None when the detection has fewer than ``min_corners`` corners or PnP fails.
    """
    if detection.count < max(min_corners, 4):
        return None
    obj = detection.object_points.reshape(-1, 1, 3).astype(np.float64)
    img = detection.corners.reshape(-1, 1, 2).astype(np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, camera.K, camera.dist_array, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, camera.K, camera.dist_array, rvec, tvec)
    if float(tvec.reshape(3)[2]) <= 0:
        return None
    return Transform.from_rt(rvec.reshape(3), tvec.reshape(3))


@dataclass
class HandEyeResult:
    """Result of :func:`calibrate_hand_eye`.

    ``T_base_board_views``: the board pose in the base frame reconstructed from each view;
    ``T_base_board``: their consensus (median position, mean rotation); ``deviation_mm`` /
    ``deviation_deg`` per view from the consensus; ``outlier_views``: positions (into the input
    sequences, or ``view_ids`` when given) whose deviation exceeds the median by more than
    ``outlier_mads`` scaled median absolute deviations (and the floors).
    """

    T_flange_cam: Transform
    method: str
    view_ids: list[Any]
    T_base_board_views: list[Transform]
    T_base_board: Transform
    deviation_mm: list[float]
    deviation_deg: list[float]
    outlier_views: list[Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def spread_mm(self) -> float:
        """RMS distance of the reconstructed board origins from their consensus, millimetres."""
        return float(np.sqrt(np.mean(np.square(self.deviation_mm))))

    @property
    def spread_deg(self) -> float:
        """RMS angle of the reconstructed board orientations from their consensus, degrees."""
        return float(np.sqrt(np.mean(np.square(self.deviation_deg))))

    def report(self) -> dict[str, Any]:
        """Plain-data summary (mm, degrees)."""
        return {
            "method": self.method,
            "views": len(self.view_ids),
            "board_spread_rms_mm": round(self.spread_mm, 4),
            "board_spread_max_mm": round(max(self.deviation_mm), 4),
            "board_spread_rms_deg": round(self.spread_deg, 5),
            "board_spread_max_deg": round(max(self.deviation_deg), 5),
            "per_view_mm": {str(v): round(d, 4) for v, d in zip(self.view_ids, self.deviation_mm)},
            "per_view_deg": {str(v): round(d, 5) for v, d in zip(self.view_ids, self.deviation_deg)},
            "outlier_views": [str(v) for v in self.outlier_views],
            "T_base_board_pose": [round(float(x), 7) for x in self.T_base_board.to_pose()],
            "warnings": list(self.warnings),
        }


def _outliers(values: np.ndarray, k: float, floor: float) -> np.ndarray:
    """Boolean mask of values above median + k * 1.4826 * MAD and above ``floor``."""
    median = np.median(values)
    mad = 1.4826 * np.median(np.abs(values - median))
    return (values > median + k * mad) & (values > floor)


def board_consistency(
    tcp_poses: Sequence[Sequence[float]],
    T_cam_board: Sequence[Transform],
    T_flange_cam: Transform,
) -> tuple[list[Transform], Transform, np.ndarray, np.ndarray]:
    """Board pose in the base frame from every view, their consensus, and each view's deviation (mm, deg)."""
    views = [Transform.from_pose(p) @ T_flange_cam @ Tcb for p, Tcb in zip(tcp_poses, T_cam_board)]
    positions = np.array([T.translation for T in views])
    rotations = Rotation.from_matrix(np.array([T.rotation for T in views]))
    center_rot = rotations.mean()
    consensus = Transform.from_rt(center_rot.as_matrix(), np.median(positions, axis=0))
    dev_mm = np.linalg.norm(positions - consensus.translation, axis=1) * 1e3
    dev_deg = np.degrees((center_rot.inv() * rotations).magnitude())
    return views, consensus, dev_mm, dev_deg


def calibrate_hand_eye(
    tcp_poses: Sequence[Sequence[float]],
    T_cam_board: Sequence[Transform],
    method: str = "park",
    *,
    view_ids: Sequence[Any] | None = None,
    min_views: int = MIN_VIEWS_HAND_EYE,
    outlier_mads: float = 3.0,
    outlier_floor_mm: float = 0.5,
    outlier_floor_deg: float = 0.05,
) -> HandEyeResult:
    """Solve ``T_flange_cam`` (eye-in-hand) from N TCP poses (N, 6) and N board poses in the camera frame.

    ``method``: tsai | park | horaud | andreff | daniilidis. Fewer than ``min_views`` pairs ->
    NotEnoughViews with the counts. Outliers: a view whose reconstructed board deviates from the consensus
    by more than ``outlier_mads`` MADs beyond the median and by more than the floors (mm or deg).
    """
    flag = hand_eye_method(method)
    poses = np.asarray(tcp_poses, dtype=float).reshape(-1, 6)
    if len(T_cam_board) != poses.shape[0]:
        raise CalibrationError(f"{poses.shape[0]} TCP poses but {len(T_cam_board)} board poses; they must pair up")
    ids = list(view_ids) if view_ids is not None else list(range(poses.shape[0]))
    if len(ids) != poses.shape[0]:
        raise CalibrationError(f"{len(ids)} view ids for {poses.shape[0]} views")
    if poses.shape[0] < min_views:
        raise NotEnoughViews(
            f"hand-eye calibration: found {poses.shape[0]} usable views, need at least {min_views}"
        )
    R_g2b, t_g2b, R_t2c, t_t2c = [], [], [], []
    for pose, T in zip(poses, T_cam_board):
        T_bt = Transform.from_pose(pose)
        R_g2b.append(T_bt.rotation.copy())
        t_g2b.append(T_bt.translation.reshape(3, 1).copy())
        R_t2c.append(T.rotation.copy())
        t_t2c.append(T.translation.reshape(3, 1).copy())
    try:
        R, t = cv2.calibrateHandEye(R_g2b, t_g2b, R_t2c, t_t2c, method=flag)
    except cv2.error as exc:
        raise CalibrationError(f"cv2.calibrateHandEye ({method}) failed: {str(exc).strip()}") from None
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        raise CalibrationError(
            f"hand-eye ({method}) gave no finite solution: the robot motions are degenerate "
            "(rotate about at least two different axes between views)"
        )
    # Re-orthonormalise (some methods return a slightly non-orthogonal matrix).
    u, _, vt = np.linalg.svd(np.asarray(R, dtype=float))
    R = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    T_flange_cam = Transform.from_rt(R, np.asarray(t, dtype=float).reshape(3))

    views, consensus, dev_mm, dev_deg = board_consistency(poses, T_cam_board, T_flange_cam)
    mask = _outliers(dev_mm, outlier_mads, outlier_floor_mm) | _outliers(dev_deg, outlier_mads, outlier_floor_deg)
    outliers = [ids[i] for i in np.flatnonzero(mask)]
    warnings = []
    if outliers:
        warnings.append(
            f"{len(outliers)} outlier view(s) {', '.join(map(str, outliers))}: their board pose disagrees with the "
            f"others (max {dev_mm.max():.2f} mm, {dev_deg.max():.3f} deg); check the robot pose and the detection"
        )
    return HandEyeResult(
        T_flange_cam=T_flange_cam,
        method=method.strip().lower(),
        view_ids=ids,
        T_base_board_views=views,
        T_base_board=consensus,
        deviation_mm=[float(x) for x in dev_mm],
        deviation_deg=[float(x) for x in dev_deg],
        outlier_views=outliers,
        warnings=warnings,
    )

