"""A small simulated capture store for trying, testing and benchmarking the labelling app.

:func:`make_sim_dataset` runs a real (tiny) campaign on the simulated cell: a defective sheet, the
poses of the raster plan that see one of its defects best (all shots of that grid point, plus the
neighbouring grid points that also see it), stored with the simulation's exact masks (source "sim").
The campaign config records the plan and the camera section, so carry-over finds its geometry.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from acquisition.envelope import SafetyEnvelope
from acquisition.plan import PlanConfig, PlannedPose, footprint_from_camera, make_plan
from acquisition.sim.camera import SimCamera, SimCameraConfig
from acquisition.sim.robot import SimRobot
from acquisition.sim.scene import PartInstance, Scene, SceneConfig
from acquisition.store import CaptureStore
from calibration.transforms import Transform
from cell.campaign import part_ids, run_campaign


def _defect_pixels(part: PartInstance, camera: SimCameraConfig, planned: PlannedPose) -> np.ndarray:
    """Pixel positions (D, 2) of the part's defect centres seen from a planned pose (NaN when behind)."""
    centres = np.array([d.center_m for d in part.defects], dtype=float).reshape(-1, 2)
    points_base = part.part_to_base(centres)
    T_base_cam = Transform.from_pose(planned.pose) @ camera.flange_to_camera.transform()
    return camera.camera_model().project(T_base_cam.inverse().apply(points_base))


def choose_poses(plan: list[PlannedPose], part: PartInstance, camera: SimCameraConfig, max_poses: int) -> list[PlannedPose]:
    """The poses that see a defect best: the grid point whose first shot has a defect centre nearest the
    image centre (all its shots), then other grid points' shots seeing that defect well inside the image."""
    w, h = camera.width, camera.height
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    best: tuple[float, tuple[int, int], int] | None = None
    for planned in plan:
        if planned.shot != 0:
            continue
        px = _defect_pixels(part, camera, planned)
        for k, p in enumerate(px):
            if np.all(np.isfinite(p)):
                dist = float(np.linalg.norm(p - centre))
                if best is None or dist < best[0]:
                    best = (dist, planned.grid_index, k)
    if best is None:
        raise ValueError("no planned pose sees a defect of the part")
    _, grid, k = best
    chosen = [p for p in plan if p.grid_index == grid]
    margin = 0.2
    for planned in plan:
        if len(chosen) >= max_poses:
            break
        if planned.grid_index == grid:
            continue
        p = _defect_pixels(part, camera, planned)[k]
        if np.all(np.isfinite(p)) and margin * w < p[0] < (1 - margin) * w and margin * h < p[1] < (1 - margin) * h:
            chosen.append(planned)
    return chosen[:max_poses]


def make_sim_dataset(
    root: str | Path,
    *,
    parts: int = 1,
    max_poses: int = 4,
    width: int = 1280,
    height: int = 1024,
    seed: int = 7,
    campaign: str = "sim",
    texel_size_m: float = 2e-4,
) -> Path:
    """Create a capture store at ``root`` with ``parts`` defective simulated sheets, ``max_poses`` poses each.

    ``width`` x ``height``: the simulated camera's resolution (the pixel pitch is scaled so the field of
    view stays the default camera's). Returns ``root``. Noise is on, as in the cell.
    """
    root = Path(root)
    base = SimCameraConfig()
    camera_cfg = SimCameraConfig(width=width, height=height, pixel_size_um=base.pixel_size_um * base.width / width,
                                 principal_offset_px=(base.principal_offset_px[0] * width / base.width,
                                                      base.principal_offset_px[1] * height / base.height))
    scene = Scene(SceneConfig(texel_size_m=texel_size_m, defects={"probability": 1.0, "count": (1, 2)}), seed=seed)
    plan_cfg = PlanConfig()
    T_flange_cam = camera_cfg.flange_to_camera.transform()
    plan = make_plan(plan_cfg, footprint=footprint_from_camera(camera_cfg.camera_model(), plan_cfg.working_distance_m),
                     T_flange_cam=T_flange_cam)
    first = part_ids(campaign, parts)[0]
    part = scene.new_part(first, kind="defective", load=False)
    poses = choose_poses(plan, part, camera_cfg, max_poses)
    config: dict[str, Any] = {"plan": plan_cfg.model_dump(mode="json"), "camera": camera_cfg.model_dump(mode="json"),
                              "scene_seed": seed}

    def on_new_part(part_id: str) -> str:
        scene.new_part(part_id, kind="defective")
        return "defective"

    with SimRobot() as robot, CaptureStore(root, create=True) as store:
        with SimCamera(camera_cfg, robot, scene, seed=seed) as camera:
            run_campaign(robot, camera, store, poses, parts, campaign=campaign, envelope=SafetyEnvelope(),
                         speed=plan_cfg.speed, accel=plan_cfg.accel, on_new_part=on_new_part, config=config)
    return root
