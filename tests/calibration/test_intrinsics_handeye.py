"""Intrinsic and hand-eye calibration on synthetic correspondences (exact projections + noise)."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.charuco import BoardDetection
from calibration.errors import CalibrationError, NotEnoughViews
from calibration.handeye import HAND_EYE_METHODS, board_pose_pnp, calibrate_hand_eye
from calibration.intrinsics import calibrate_intrinsics, image_coverage
from calibration.transforms import Transform, rotation_angle_between
from cell.calibrate import CalibrationPlanConfig, calibrate_from_views
from tests.calibration.synthetic import SPEC, TRUE_CAMERA, TRUE_T_FLANGE_CAM, synthetic_views


def _errors(run) -> tuple[float, float, float, float]:  # noqa: ANN001
    cam, T = run.intrinsics.camera, run.hand_eye.T_flange_cam
    return (
        abs(cam.fx / TRUE_CAMERA.fx - 1.0) * 100.0,
        float(np.hypot(cam.cx - TRUE_CAMERA.cx, cam.cy - TRUE_CAMERA.cy)),
        float(np.linalg.norm(T.translation - TRUE_T_FLANGE_CAM.translation) * 1e3),
        float(np.degrees(rotation_angle_between(T.rotation, TRUE_T_FLANGE_CAM.rotation))),
    )


def test_exact_correspondences_recover_the_truth() -> None:
    views = synthetic_views(12, seed=3, pixel_noise=0.0, pos_noise_m=0.0, rot_noise_rad=0.0)
    run = calibrate_from_views(views, SPEC, camera_serial="SYN-1", method="park")
    fx_pct, pp_px, mm, deg = _errors(run)
    assert fx_pct < 1e-4 and pp_px < 1e-3 and mm < 1e-3 and deg < 1e-4
    assert np.allclose(run.intrinsics.camera.dist_array, TRUE_CAMERA.dist_array, atol=1e-5)
    assert run.intrinsics.rms_px < 1e-3 and run.hand_eye.spread_mm < 1e-3


@pytest.mark.parametrize("method", sorted(HAND_EYE_METHODS))
def test_noisy_views_meet_the_accuracy_targets_for_every_method(method: str) -> None:
    views = synthetic_views(20, seed=1)
    run = calibrate_from_views(views, SPEC, camera_serial="SYN-1", method=method)
    fx_pct, pp_px, mm, deg = _errors(run)
    assert fx_pct < 0.5 and pp_px < 2.0, (fx_pct, pp_px)
    assert mm < 1.0 and deg < 0.1, (method, mm, deg)
    assert run.calibration.method == method and run.calibration.n_views == 20
    assert 0.03 < run.intrinsics.rms_px < 0.1  # ~ sqrt(2) * 0.05 px of noise, not zero


def test_the_method_reaches_opencv() -> None:
    """Passed positionally, ``method`` would be swallowed and Tsai would always run: results must differ."""
    views = synthetic_views(10, seed=2, pixel_noise=0.2, pos_noise_m=5e-4, rot_noise_rad=np.radians(0.05))
    results = {m: calibrate_from_views(views, SPEC, camera_serial="S", method=m).hand_eye.T_flange_cam.matrix
               for m in ("tsai", "andreff")}
    assert not np.allclose(results["tsai"], results["andreff"], atol=1e-9)


def test_too_few_views_says_found_and_needed() -> None:
    views = synthetic_views(6, seed=0)
    dets = [v.detection for v in views]
    dets[0] = BoardDetection(dets[0].corners[:5], dets[0].ids[:5], dets[0].object_points[:5], dets[0].image_size)
    with pytest.raises(NotEnoughViews, match=r"found 5 usable views .* of 6, need at least 7"):
        calibrate_intrinsics(dets, min_views=7)
    with pytest.raises(NotEnoughViews, match=r"found 2 usable views, need at least 3"):
        calibrate_hand_eye([v.actual_pose for v in views[:2]], [Transform.identity()] * 2)
    result = calibrate_intrinsics(dets)
    assert 0 not in result.used_views and result.rejected_views[0] == "5 corners < 8"


def test_coverage_and_diversity_warnings() -> None:
    views = synthetic_views(8, seed=4, plan_config=CalibrationPlanConfig(
        views=8, seed=4, tilt_min_deg=2.0, tilt_max_deg=4.0, fill=0.4, aim_spread=0.0))
    result = calibrate_intrinsics([v.detection for v in views])
    assert any("poor image coverage" in w for w in result.warnings)
    assert any("poor view diversity" in w for w in result.warnings)
    good = calibrate_intrinsics([v.detection for v in synthetic_views(20, seed=1)])
    assert good.warnings == [] and good.coverage > 0.7


def test_image_coverage_counts_grid_cells() -> None:
    det = BoardDetection(np.array([[10.0, 10.0], [630.0, 470.0], [15.0, 12.0]]), np.array([0, 1, 2]),
                         np.zeros((3, 3)), (640, 480))
    assert image_coverage([det], (640, 480), grid=4) == pytest.approx(2 / 16)


def test_outlier_view_is_reported() -> None:
    views = synthetic_views(15, seed=5)
    poses = [v.actual_pose.copy() for v in views]
    poses[7][:3] += [0.004, -0.003, 0.0]  # the robot misreported one pose by 5 mm
    boards = [board_pose_pnp(v.detection, TRUE_CAMERA) for v in views]
    result = calibrate_hand_eye(poses, boards, "park", view_ids=[v.view_id for v in views])
    assert result.outlier_views == [views[7].view_id]
    assert result.report()["outlier_views"] == [views[7].view_id]
    clean = calibrate_hand_eye([v.actual_pose for v in views], boards, "park")
    assert clean.outlier_views == [] and clean.spread_mm < 0.2


def test_unknown_method_lists_the_choices() -> None:
    with pytest.raises(CalibrationError, match="unknown hand-eye method 'fast'.*tsai, park"):
        calibrate_hand_eye([[0] * 6] * 3, [Transform.identity()] * 3, "fast")
