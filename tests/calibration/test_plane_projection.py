"""Pixels <-> part plane, checked against the simulation's truth (issue 18, item 1): a known point of the
sheet and a rendered defect land within 1 mm of where the scene put them, from straight and tilted views."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.camera_model import CameraModel
from calibration.plane_projection import PlaneGrid, pixels_to_plane, plane_to_pixels, sample_onto_grid
from calibration.transforms import Transform
from cell.cell_factory import build_cell, load_campaign_file, load_cell_config

ROOT = Path(__file__).resolve().parents[2]
SIM_CELL = ROOT / "configs" / "cells" / "sim.yaml"
RASTER = ROOT / "configs" / "campaigns" / "sheet_raster.yaml"

CAMERA = CameraModel.from_lens(1280, 1024, 0.016, 5.5e-6, dist=(-0.12, 0.08, 0.0006, -0.0004, 0.01),
                               principal_offset_px=(7.0, -5.0))


def test_pixel_plane_round_trip_with_distortion() -> None:
    T_base_part = Transform.from_pose([0.01, -0.45, 0.002, 0.0, 0.0, 0.3])
    T_base_cam = Transform.from_pose([0.02, -0.44, 0.35, np.pi - 0.03, 0.02, 0.0])
    rng = np.random.default_rng(0)
    pixels = rng.uniform([0, 0], [1279, 1023], size=(200, 2))
    points = pixels_to_plane(CAMERA, T_base_cam, T_base_part, pixels)
    assert np.all(np.isfinite(points))
    assert np.allclose(plane_to_pixels(CAMERA, T_base_cam, T_base_part, points), pixels, atol=1e-3)


def test_a_ray_that_misses_the_plane_gives_nan() -> None:
    looking_up = Transform.from_pose([0.0, 0.0, 0.35, 0.0, 0.0, 0.0])  # optical axis along +z, away from z = 0
    points = pixels_to_plane(CAMERA, looking_up, Transform.identity(), np.array([[640.0, 512.0]]))
    assert np.all(np.isnan(points))


@pytest.fixture(scope="module")
def sim_view():  # noqa: ANN201
    """The simulated cell at a tilted shot of the raster plan over a defective sheet: (cell, the
    renderer's camera pose, the actual TCP pose, frame, part, plan part frame)."""
    cell = build_cell(load_cell_config(SIM_CELL), source=str(SIM_CELL), seed=3)
    campaign = load_campaign_file(RASTER)
    plan = cell.plan(campaign.plan)
    part = cell.scene.new_part("projection-test", kind="defective")
    T_base_plan = Transform.from_pose(campaign.plan.part_center_pose)
    with cell:
        # a view that sees a defect: the one whose camera axis meets the sheet nearest to the first defect
        target = part.part_to_base(np.array([part.defects[0].center_m]))[0]
        tilted = [p for p in plan if p.shot == 1]
        planned = min(tilted, key=lambda p: np.linalg.norm(np.asarray(p.camera_pose[:2]) - target[:2]))
        cell.robot.move_linear(planned.pose.tolist(), 0.25, 1.2)
        actual = np.asarray(cell.robot.tcp_pose(), dtype=float)
        frame = cell.camera.capture(timeout_s=2.0)
        true_T_base_cam = cell.camera.T_base_cam()  # what the renderer used
    return cell, true_T_base_cam, actual, frame, part, T_base_plan


def _in_plan_frame(T_base_plan: Transform, base_points: np.ndarray) -> np.ndarray:
    return T_base_plan.inverse().apply(base_points)[:, :2]


def test_a_known_sheet_point_lands_within_1mm(sim_view) -> None:  # noqa: ANN001
    cell, true_T_base_cam, actual, _, part, T_base_plan = sim_view
    T_base_cam = Transform.from_pose(actual) @ cell.T_flange_cam  # the ACTUAL TCP pose @ the mount in force
    # true sheet points (part frame of the jittered sheet) -> base frame -> the pixels the renderer shows them at
    below = true_T_base_cam.translation[:2]  # the sheet right under the camera, and points around it
    base_guess = np.array([[0.0, 0.0, 0.0], [0.03, -0.02, 0.0], [-0.035, 0.025, 0.0]]) + [*below, 0.0]
    sheet_points = part.T_base_part.inverse().apply(base_guess)[:, :2]  # texture coordinates of the sheet
    base = part.part_to_base(sheet_points)
    pixels = cell.camera_model.project(true_T_base_cam.inverse().apply(base))
    assert np.all((pixels >= 0) & (pixels < [cell.camera_model.width, cell.camera_model.height]))
    found = pixels_to_plane(cell.camera_model, T_base_cam, T_base_plan, pixels)
    error_mm = np.linalg.norm(found - _in_plan_frame(T_base_plan, base), axis=1) * 1e3
    assert np.all(error_mm < 1.0), error_mm


def test_a_rendered_defect_lands_on_its_true_place_on_the_grid(sim_view) -> None:  # noqa: ANN001
    cell, _, actual, frame, part, T_base_plan = sim_view
    mask = frame.extra["sim_mask"]
    labels = frame.extra["sim_defect_labels"]
    assert mask.any(), "the chosen view must see the defect"
    T_base_cam = Transform.from_pose(actual) @ cell.T_flange_cam
    grid = PlaneGrid.centred((0.31, 0.26), 0.0005)
    patch = sample_onto_grid(mask.astype(np.float32), cell.camera_model, T_base_cam, T_base_plan, grid)
    assert patch is not None
    # the first visible defect: its exact texels, as the scene drew them, in the plan's part frame
    defect = next(d for d in part.defects if np.any(labels > 0))
    rr, cc = np.nonzero(defect.mask)
    texels = np.stack([cc + defect.texel_origin[1], rr + defect.texel_origin[0]], axis=1).astype(float)
    truth = _in_plan_frame(T_base_plan, part.part_to_base(part.grid.to_part(texels))).mean(axis=0)
    region = np.nan_to_num(patch.values) > 0.5
    assert region.sum() > 4
    r, c = np.nonzero(region)
    centres = grid.cell_centres(*patch.window)[r, c]
    if len(part.defects) == 1:
        error_mm = np.linalg.norm(centres.mean(axis=0) - truth) * 1e3
        assert error_mm < 1.0, error_mm
    # every grid cell the view marks as defect lies within 1 mm of a true defect texel
    all_texels = np.argwhere(part.label_map > 0)[:, ::-1].astype(float)
    all_truth = _in_plan_frame(T_base_plan, part.part_to_base(part.grid.to_part(all_texels)))
    from scipy.spatial import cKDTree

    distance_mm = cKDTree(all_truth).query(centres)[0] * 1e3
    assert np.max(distance_mm) < 1.0, np.max(distance_mm)


def test_sample_onto_grid_reads_a_low_resolution_map_at_the_same_place() -> None:
    T_base_part = Transform.identity()
    T_base_cam = Transform.from_pose([0.0, 0.0, 0.35, np.pi, 0.0, 0.0])
    grid = PlaneGrid.centred((0.2, 0.2), 0.001)
    full = np.zeros((1024, 1280), np.float32)
    full[:, 640:] = 1.0  # right half hot
    low = np.zeros((256, 320), np.float32)
    low[:, 160:] = 1.0
    a = sample_onto_grid(full, CAMERA, T_base_cam, T_base_part, grid)
    b = sample_onto_grid(low, CAMERA, T_base_cam, T_base_part, grid)
    assert a is not None and b is not None and a.window == b.window
    both = a.seen & b.seen
    assert both.sum() > 1000
    assert np.mean(np.abs(a.values[both] - b.values[both]) > 0.5) < 0.01


def test_a_view_that_misses_the_grid_gives_none() -> None:
    far = Transform.from_pose([5.0, 5.0, 0.35, np.pi, 0.0, 0.0])
    assert sample_onto_grid(np.zeros((1024, 1280)), CAMERA, far, Transform.identity(),
                            PlaneGrid.centred((0.1, 0.1), 0.001)) is None
