"""Intrinsic calibration (pinhole + 5 distortion coefficients) from ChArUco board views.

``calibrate_intrinsics`` keeps the views with enough corners, runs ``cv2.calibrateCamera`` and reports the
RMS reprojection error, per-view errors, how much of the image the corners covered and how varied the
views' tilts were, with warnings when coverage or diversity is poor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

from calibration.camera_model import CameraModel
from calibration.charuco import BoardDetection
from calibration.errors import CalibrationError, NotEnoughViews
from calibration.transforms import Transform

#: Fewest usable views intrinsic calibration accepts.
MIN_VIEWS_INTRINSICS = 5


@dataclass
class IntrinsicsResult:
    """Result of :func:`calibrate_intrinsics`.

    ``used_views``: indices (into the input sequence) of the views used; ``rejected_views``: index ->
    reason; ``per_view_rms_px`` aligned with ``used_views``; ``T_cam_board``: board pose in the camera
    frame per used view (from the calibration itself); ``tilts_deg``: angle between the board normal and
    the optical axis per used view; ``coverage``: fraction of the ``coverage_grid`` x ``coverage_grid``
    image cells containing at least one corner.
    """

    camera: CameraModel
    rms_px: float
    per_view_rms_px: list[float]
    used_views: list[int]
    rejected_views: dict[int, str]
    T_cam_board: list[Transform]
    tilts_deg: list[float]
    coverage: float
    coverage_grid: int
    std_fx_px: float
    std_cx_px: float
    warnings: list[str] = field(default_factory=list)

    @property
    def tilt_range_deg(self) -> float:
        return float(max(self.tilts_deg) - min(self.tilts_deg)) if self.tilts_deg else 0.0

    def report(self) -> dict[str, Any]:
        """Plain-data summary (pixels, degrees) for files and printing."""
        return {
            "rms_px": round(self.rms_px, 5),
            "per_view_rms_px": {str(v): round(e, 5) for v, e in zip(self.used_views, self.per_view_rms_px)},
            "views_used": len(self.used_views),
            "views_rejected": {str(k): v for k, v in self.rejected_views.items()},
            "coverage": round(self.coverage, 4),
            "coverage_grid": self.coverage_grid,
            "tilt_deg_min": round(min(self.tilts_deg), 3) if self.tilts_deg else None,
            "tilt_deg_max": round(max(self.tilts_deg), 3) if self.tilts_deg else None,
            "std_fx_px": round(self.std_fx_px, 4),
            "std_cx_px": round(self.std_cx_px, 4),
            "warnings": list(self.warnings),
        }


def image_coverage(detections: Sequence[BoardDetection], image_size: tuple[int, int], grid: int = 8) -> float:
    """Fraction of a ``grid`` x ``grid`` partition of the image (width, height) holding at least one corner."""
    if grid < 1:
        raise CalibrationError(f"coverage grid must be >= 1, got {grid}")
    width, height = image_size
    occupied = np.zeros((grid, grid), dtype=bool)
    for det in detections:
        if det.count == 0:
            continue
        col = np.clip((det.corners[:, 0] / width * grid).astype(int), 0, grid - 1)
        row = np.clip((det.corners[:, 1] / height * grid).astype(int), 0, grid - 1)
        occupied[row, col] = True
    return float(occupied.mean())


def board_tilt_deg(T_cam_board: Transform) -> float:
    """Angle in degrees between the board normal and the camera's optical axis (0 = fronto-parallel)."""
    normal_cam = T_cam_board.rotation @ np.array([0.0, 0.0, 1.0])
    return float(np.degrees(np.arccos(np.clip(abs(normal_cam[2]), -1.0, 1.0))))


def calibrate_intrinsics(
    detections: Sequence[BoardDetection],
    image_size: tuple[int, int] | None = None,
    *,
    min_corners: int = 8,
    min_views: int = MIN_VIEWS_INTRINSICS,
    coverage_grid: int = 8,
    min_coverage: float = 0.5,
    min_tilt_range_deg: float = 15.0,
    flags: int = 0,
) -> IntrinsicsResult:
    """Calibrate a camera (fx, fy, cx, cy, k1, k2, p1, p2, k3) from board detections.

    ``detections``: one per view (empty detections allowed; they are rejected). ``image_size`` (width,
    height) defaults to the detections'. Views with fewer than ``min_corners`` corners are rejected (a
    homography and pose need at least 4 non-collinear points; 8+ is safer). Fewer than ``min_views``
    usable views -> NotEnoughViews with the counts. Warnings (in the result) when the corners cover less
    than ``min_coverage`` of the image cells or the view tilts span less than ``min_tilt_range_deg``.
    """
    if min_corners < 6:
        raise CalibrationError(f"min_corners must be >= 6 for a stable board pose, got {min_corners}")
    if image_size is None:
        sizes = {d.image_size for d in detections}
        if len(sizes) != 1:
            raise CalibrationError(f"views have different image sizes {sorted(sizes)}; pass image_size")
        image_size = sizes.pop()
    image_size = (int(image_size[0]), int(image_size[1]))

    used: list[int] = []
    rejected: dict[int, str] = {}
    for i, det in enumerate(detections):
        if det.image_size != image_size:
            rejected[i] = f"image size {det.image_size} differs from {image_size}"
        elif det.count < min_corners:
            rejected[i] = f"{det.count} corners < {min_corners}"
        else:
            used.append(i)
    if len(used) < min_views:
        raise NotEnoughViews(
            f"intrinsic calibration: found {len(used)} usable views (>= {min_corners} corners each) "
            f"of {len(detections)}, need at least {min_views}"
        )

    object_points = [detections[i].object_points.astype(np.float32).reshape(-1, 1, 3) for i in used]
    image_points = [detections[i].corners.astype(np.float32).reshape(-1, 1, 2) for i in used]
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    try:
        rms, K, dist, rvecs, tvecs, std_intr, _std_extr, per_view = cv2.calibrateCameraExtended(
            object_points, image_points, image_size, None, None, flags=flags, criteria=criteria
        )
    except cv2.error as exc:
        raise CalibrationError(f"cv2.calibrateCamera failed on {len(used)} views: {str(exc).strip()}") from None
    dist = np.asarray(dist, dtype=float).reshape(-1)[:5]
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CalibrationError(f"calibrateCamera returned an invalid camera matrix {K.tolist()}")
    camera = CameraModel(
        width=image_size[0], height=image_size[1],
        fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]),
        dist=tuple(float(d) for d in dist),  # type: ignore[arg-type]
    )
    poses = [Transform.from_rt(np.asarray(r).reshape(3), np.asarray(t).reshape(3)) for r, t in zip(rvecs, tvecs)]
    tilts = [board_tilt_deg(T) for T in poses]
    coverage = image_coverage([detections[i] for i in used], image_size, coverage_grid)
    std = np.asarray(std_intr, dtype=float).reshape(-1)

    warnings: list[str] = []
    if coverage < min_coverage:
        warnings.append(
            f"poor image coverage: corners fall in {coverage:.0%} of the {coverage_grid}x{coverage_grid} image cells "
            f"(want >= {min_coverage:.0%}); add views with the board near the image edges and corners"
        )
    tilt_range = max(tilts) - min(tilts)
    if tilt_range < min_tilt_range_deg:
        warnings.append(
            f"poor view diversity: board tilts span only {tilt_range:.1f} deg ({min(tilts):.1f}-{max(tilts):.1f}), "
            f"want >= {min_tilt_range_deg:.0f} deg; tilt the camera more to constrain the focal length"
        )
    return IntrinsicsResult(
        camera=camera,
        rms_px=float(rms),
        per_view_rms_px=[float(e) for e in np.asarray(per_view).reshape(-1)],
        used_views=used,
        rejected_views=rejected,
        T_cam_board=poses,
        tilts_deg=tilts,
        coverage=coverage,
        coverage_grid=coverage_grid,
        std_fx_px=float(std[0]) if std.size else float("nan"),
        std_cx_px=float(std[2]) if std.size > 2 else float("nan"),
        warnings=warnings,
    )
