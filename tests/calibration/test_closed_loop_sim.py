"""Closed loop on the simulated cell: plan, move the sim robot, render the board, detect, calibrate, and
compare with the simulation's true camera model and camera-on-flange transform (issue 5, item 5)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acquisition.errors import EnvelopeViolation
from calibration.calibration_file import load_calibration, save_calibration
from calibration.errors import NotEnoughViews
from calibration.transforms import Transform, rotation_angle_between
from cell.calibrate import (
    CalibrationConfig,
    plan_calibration_views,
    run_calibration,
    show_board,
    visible_fraction,
)
from cell.cell_factory import build_cell, load_cell_config
from cell.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SIM_CELL = ROOT / "configs" / "cells" / "sim.yaml"
CALIB_CONFIG = ROOT / "configs" / "calibration" / "charuco.yaml"


@pytest.fixture()
def sim_cell():  # noqa: ANN201
    cell = build_cell(load_cell_config(SIM_CELL), source=str(SIM_CELL))
    with cell:
        yield cell


def _checker(cell):  # noqa: ANN001, ANN202
    def check(pose: np.ndarray, label: str) -> None:
        cell.envelope.check_pose(pose, label)
        cell.robot.kinematics.inverse(pose)
    return check


def test_planned_views_are_safe_reachable_and_see_the_board(sim_cell) -> None:  # noqa: ANN001
    cfg = load_config(CALIB_CONFIG, CalibrationConfig)
    views = plan_calibration_views(cfg.board, cfg.T_base_board, sim_cell.camera_model, sim_cell.T_flange_cam,
                                   cfg.plan, _checker(sim_cell))
    assert len(views) == cfg.plan.views
    for v in views:
        sim_cell.envelope.check_pose(v.pose, v.view_id)
        sim_cell.robot.kinematics.inverse(v.pose)
        T_base_cam = Transform.from_pose(v.pose) @ sim_cell.T_flange_cam
        assert visible_fraction(cfg.board, sim_cell.camera_model, T_base_cam, cfg.T_base_board) >= cfg.plan.min_visible
    rolls = [v.roll_deg for v in views]
    assert max(rolls) - min(rolls) > 30.0  # rotations about the optical axis vary
    assert [v.azimuth_deg for v in views] == sorted(v.azimuth_deg for v in views)


def test_planning_fails_before_moving_when_the_envelope_forbids_every_view(sim_cell) -> None:  # noqa: ANN001
    cfg = load_config(CALIB_CONFIG, CalibrationConfig)

    def nowhere(pose: np.ndarray, label: str) -> None:
        raise EnvelopeViolation(f"{label}: outside the box")

    with pytest.raises(NotEnoughViews, match=r"found 0 acceptable views, need at least 5 .*EnvelopeViolation"):
        plan_calibration_views(cfg.board, cfg.T_base_board, sim_cell.camera_model, sim_cell.T_flange_cam,
                               cfg.plan, nowhere)
    assert sim_cell.robot.move_count == 0


def test_closed_loop_calibration_recovers_the_sim_truth(sim_cell, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = load_config(CALIB_CONFIG, CalibrationConfig)
    plan = cfg.plan.model_copy(update={"views": 16, "settle_s": 0.0})
    show_board(sim_cell.scene, cfg.board, cfg.T_base_board)
    run = run_calibration(
        sim_cell.robot, sim_cell.camera, cfg.board, cfg.T_base_board, sim_cell.camera_model,
        sim_cell.T_flange_cam, plan, camera_serial=sim_cell.camera.serial, method="park",
        pose_check=_checker(sim_cell), sleep=sim_cell.clock.sleep,
        inverse_kinematics=lambda p, q: sim_cell.robot.kinematics.inverse(p, q_near=q),
    )
    truth, cam = sim_cell.camera_model, run.intrinsics.camera
    assert abs(cam.fx / truth.fx - 1.0) < 0.005 and abs(cam.fy / truth.fy - 1.0) < 0.005
    assert np.hypot(cam.cx - truth.cx, cam.cy - truth.cy) < 2.0
    T, T_true = run.hand_eye.T_flange_cam, sim_cell.T_flange_cam
    assert np.linalg.norm(T.translation - T_true.translation) < 1e-3
    assert np.degrees(rotation_angle_between(T.rotation, T_true.rotation)) < 0.1
    assert run.hand_eye.outlier_views == []
    assert sim_cell.robot.move_count == 16
    # the board really was where the config put it
    assert np.linalg.norm(run.hand_eye.T_base_board.translation - cfg.T_base_board.translation) < 1e-3
    path = save_calibration(run.calibration, tmp_path / "calib.yaml")
    loaded = load_calibration(path, expected_serial=sim_cell.camera.serial)
    assert loaded.calibration_id == run.calibration.calibration_id and loaded.n_views == 16


def test_calibration_in_force_is_checked_against_the_camera(sim_cell, tmp_path: Path) -> None:  # noqa: ANN001
    from calibration.calibration_file import CalibrationFile
    from calibration.errors import CalibrationFileError
    from cell.calibrate import load_calibration_for_camera

    mine = CalibrationFile(camera_serial=sim_cell.camera.serial, camera=sim_cell.camera_model,
                           T_flange_cam=sim_cell.T_flange_cam, method="park", n_views=10)
    other = CalibrationFile(camera_serial="CAM-OTHER", camera=sim_cell.camera_model,
                            T_flange_cam=sim_cell.T_flange_cam, method="park", n_views=10)
    good = save_calibration(mine, tmp_path / "mine.yaml")
    bad = save_calibration(other, tmp_path / "other.yaml")
    assert load_calibration_for_camera(good, sim_cell.camera).calibration_id == mine.calibration_id
    with pytest.raises(CalibrationFileError, match="'CAM-OTHER'.*'SIM00001'"):
        load_calibration_for_camera(bad, sim_cell.camera)
