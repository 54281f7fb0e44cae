"""Pose plans: coverage with overlap, serpentine order, shots per point, stable ids, config errors,
and the default campaign plan being reachable by the simulated UR5 inside the default envelope."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from acquisition.envelope import SafetyEnvelope
from acquisition.errors import ConfigError
from acquisition.plan import (
    PlanConfig,
    PlannedPose,
    camera_pose_to_tcp_pose,
    footprint_from_camera,
    grid_centres,
    make_plan,
)
from acquisition.sim.robot import SimRobot
from calibration.camera_model import CameraModel
from calibration.transforms import Transform

REPO = Path(__file__).resolve().parents[2]
CAMPAIGN = REPO / "configs" / "campaigns" / "sheet_raster.yaml"
FOOTPRINT = (0.095, 0.076)  # about a 1280x1024 camera, 25 mm lens, 5.3 um pixels at 0.35 m


def _in_part(plan: list[PlannedPose], part: Transform) -> list[Transform]:
    """Camera poses in the part frame."""
    inv = part.inverse()
    return [inv @ Transform.from_pose(p.camera_pose) for p in plan]


def test_grid_centres_cover_with_the_overlap():
    xs = grid_centres(0.31, 0.095, 0.25)
    assert xs[0] - 0.095 / 2 == pytest.approx(-0.155) and xs[-1] + 0.095 / 2 == pytest.approx(0.155)
    assert np.all(np.diff(xs) <= 0.095 * 0.75 + 1e-12)
    assert len(grid_centres(0.31, 0.095, 0.3)) >= len(grid_centres(0.31, 0.095, 0.0))
    assert len(grid_centres(0.05, 0.095, 0.25)) == 1  # one image covers it


@pytest.mark.parametrize("overlap", [0.2, 0.25, 0.3])
def test_plan_covers_the_part_with_the_requested_overlap(overlap):
    config = PlanConfig(overlap=overlap, footprint_m=FOOTPRINT, margin_m=0.005)
    part = Transform.from_pose(config.part_center_pose)
    plan = make_plan(config)
    nominal = [t for t, p in zip(_in_part(plan, part), plan) if p.shot == 0]
    centres = np.array([t.translation[:2] for t in nominal])
    # every point of the part (with margin) is seen by some nominal shot
    w, h = config.part_size_m[0] + 0.01, config.part_size_m[1] + 0.01
    gx, gy = np.meshgrid(np.linspace(-w / 2, w / 2, 61), np.linspace(-h / 2, h / 2, 61))
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    seen = np.zeros(len(points), bool)
    for c in centres:
        seen |= (np.abs(points[:, 0] - c[0]) <= FOOTPRINT[0] / 2 + 1e-12) & (
            np.abs(points[:, 1] - c[1]) <= FOOTPRINT[1] / 2 + 1e-12
        )
    assert seen.all()
    # neighbours overlap by at least the requested fraction, and not much more than needed
    xs, ys = np.unique(centres[:, 0].round(9)), np.unique(centres[:, 1].round(9))
    assert len(xs) > 1 and len(ys) > 1
    assert (FOOTPRINT[0] - np.diff(xs).max()) / FOOTPRINT[0] >= overlap - 1e-9
    assert (FOOTPRINT[1] - np.diff(ys).max()) / FOOTPRINT[1] >= overlap - 1e-9
    assert len(xs) == math.ceil((w - FOOTPRINT[0]) / (FOOTPRINT[0] * (1 - overlap)) - 1e-9) + 1


def test_plan_is_serpentine_with_n_shots_and_unique_stable_ids():
    config = PlanConfig(footprint_m=FOOTPRINT, shots_per_point=3)
    plan = make_plan(config)
    ids = [p.pose_id for p in plan]
    assert len(set(ids)) == len(ids)
    for p in plan:
        assert re.fullmatch(r"r\d+c\d+s\d+", p.pose_id)
        assert p.pose_id == f"r{p.grid_index[0]}c{p.grid_index[1]}s{p.shot}"
    # shots 0..N-1 come together per grid point
    points = [p.grid_index for p in plan[::3]]
    for i, p in enumerate(plan):
        assert p.shot == i % 3 and p.grid_index == points[i // 3]
    # serpentine: even rows left to right, odd rows right to left, one step at a time
    n_cols = max(c for _, c in points) + 1
    for (r0, c0), (r1, c1) in zip(points, points[1:]):
        if r0 == r1:
            assert c1 - c0 == (1 if r0 % 2 == 0 else -1)
        else:
            assert r1 == r0 + 1 and c1 == c0 and c0 in (0, n_cols - 1)
    assert make_plan(config)[5].pose_id == plan[5].pose_id  # deterministic
    assert np.array_equal(make_plan(config)[5].pose, plan[5].pose)


def test_camera_looks_down_from_the_working_distance_and_shots_move_slightly():
    config = PlanConfig(footprint_m=FOOTPRINT, working_distance_m=0.32, shot_shift_m=0.004, shot_tilt_deg=3.0)
    part = Transform.from_pose(config.part_center_pose)
    plan = make_plan(config)
    cams = _in_part(plan, part)
    for cam, p in zip(cams, plan):
        assert cam.translation[2] == pytest.approx(0.32)
        optical_axis = cam.rotation[:, 2]
        tilt = math.degrees(math.acos(-optical_axis[2]))
        assert tilt == pytest.approx(0.0 if p.shot == 0 else 3.0, abs=1e-9)
        if p.shot == 0:
            assert np.allclose(cam.rotation[:, 0], [1, 0, 0])  # image x along the part's x
    for i in range(0, len(plan), 3):
        base = cams[i].translation
        for k in (1, 2):
            assert np.linalg.norm(cams[i + k].translation - base) == pytest.approx(0.004)
    # with no T_flange_cam the camera sits at the TCP
    assert all(np.array_equal(p.pose, p.camera_pose) for p in plan)


def test_plan_follows_a_rotated_part_frame_and_yaw():
    config = PlanConfig(footprint_m=FOOTPRINT, shots_per_point=1)
    part = Transform.from_rt(np.array([0, 0, math.radians(30)]), [0.05, -0.40, 0.01])
    plan = make_plan(config, part)
    for cam in _in_part(plan, part):
        assert cam.translation[2] == pytest.approx(config.working_distance_m)
        assert np.allclose(cam.rotation, np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    turned = make_plan(PlanConfig(footprint_m=FOOTPRINT, shots_per_point=1, yaw_deg=90.0), part)
    w, h = (s + 2 * config.margin_m for s in config.part_size_m)
    rows = max(p.grid_index[0] for p in plan) + 1
    cols = max(p.grid_index[1] for p in plan) + 1
    assert (rows, cols) == (len(grid_centres(h, FOOTPRINT[1], 0.25)), len(grid_centres(w, FOOTPRINT[0], 0.25)))
    # yawed 90 degrees, the footprint's long side (image width) runs along the part's y
    rows90 = max(p.grid_index[0] for p in turned) + 1
    cols90 = max(p.grid_index[1] for p in turned) + 1
    assert (rows90, cols90) == (len(grid_centres(h, FOOTPRINT[0], 0.25)), len(grid_centres(w, FOOTPRINT[1], 0.25)))
    assert (rows90, cols90) != (rows, cols)
    for cam in _in_part(turned, part):
        assert np.allclose(cam.rotation[:, 0], [0.0, 1.0, 0.0], atol=1e-12)


def test_make_plan_overrides_part_size_and_footprint():
    config = PlanConfig(footprint_m=FOOTPRINT, shots_per_point=1)
    small = make_plan(config, part_size=(0.05, 0.05))
    assert [p.pose_id for p in small] == ["r0c0s0"]
    assert make_plan(PlanConfig(), footprint=(0.2, 0.2), part_size=(0.3, 0.25))[0].pose_id == "r0c0s0"
    with pytest.raises(ConfigError, match="footprint_m is not set"):
        make_plan(PlanConfig())


def test_camera_pose_to_tcp_pose_aims_the_camera():
    T_flange_cam = Transform.from_rt(np.array([0.0, 0.0, math.radians(90)]), [0.04, -0.02, 0.07])
    T_flange_tcp = Transform.from_pose([0.0, 0.0, 0.12, 0.0, 0.0, 0.0])
    want = Transform.from_pose([0.0, -0.45, 0.35, math.pi, 0.0, 0.0])
    tcp = camera_pose_to_tcp_pose(want, T_flange_cam, T_flange_tcp)
    got = Transform.from_pose(tcp) @ T_flange_tcp.inverse() @ T_flange_cam
    assert np.abs(got.matrix - want.matrix).max() < 1e-12
    config = PlanConfig(footprint_m=FOOTPRINT)
    for p in make_plan(config, T_flange_cam=T_flange_cam):
        cam = Transform.from_pose(p.pose) @ T_flange_cam
        assert np.abs(cam.matrix - Transform.from_pose(p.camera_pose).matrix).max() < 1e-12


def test_footprint_from_camera():
    pinhole = CameraModel.from_lens(1280, 1024, 0.025, 5.3e-6)
    w, h = footprint_from_camera(pinhole, 0.35)
    assert (w, h) == pytest.approx(pinhole.field_of_view_at(0.35), rel=1e-9)
    # pincushion distortion (k1 > 0) shows less of the plane at the image border
    cushion = CameraModel.from_lens(1280, 1024, 0.025, 5.3e-6, dist=(0.2, 0.0, 0.0, 0.0, 0.0))
    wc, hc = footprint_from_camera(cushion, 0.35)
    assert wc < w and hc < h
    with pytest.raises(ValueError, match="working_distance"):
        footprint_from_camera(pinhole, 0.0)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"overlapp": 0.2}, "overlapp"),
        ({"overlap": 1.5}, "overlap"),
        ({"shots_per_point": 0}, "shots_per_point"),
        ({"working_distance_m": "far"}, "working_distance_m"),
        ({"part_size_m": [0.3, -0.1]}, "part_size_m"),
        ({"yaw_deg": 45}, "yaw_deg"),
        ({"part_center_pose": [0.1, 0.2]}, "part_center_pose"),
    ],
)
def test_bad_plan_config_names_the_key(data, key):
    with pytest.raises(ValidationError) as info:
        PlanConfig.model_validate(data)
    assert info.value.errors()[0]["loc"][0] == key


def _campaign_plan_config() -> PlanConfig:
    data = yaml.safe_load(CAMPAIGN.read_text(encoding="utf-8"))
    return PlanConfig.model_validate(data["plan"])


def test_campaign_file_is_valid():
    config = _campaign_plan_config()
    assert config.shots_per_point == 3 and 0.3 <= config.working_distance_m <= 0.4
    assert 0.2 <= config.overlap <= 0.3


@pytest.mark.parametrize(
    "T_flange_cam",
    [None, Transform.from_rt(np.array([0.0, 0.0, math.radians(90)]), [0.0, 0.05, 0.06])],
    ids=["camera-at-tcp", "camera-offset"],
)
def test_default_campaign_plan_is_reachable_inside_the_default_envelope(T_flange_cam):
    config = _campaign_plan_config()
    camera = CameraModel.from_lens(1280, 1024, 0.025, 5.3e-6)
    plan = make_plan(config, footprint=footprint_from_camera(camera, config.working_distance_m),
                     T_flange_cam=T_flange_cam)
    assert len(plan) >= 3 * 4
    envelope = SafetyEnvelope()
    envelope.check_plan(plan, speed=config.speed, accel=config.accel)
    robot = SimRobot(envelope=envelope)
    with robot:
        for p in plan:
            robot.move_linear(p.pose, config.speed, config.accel)
            assert np.abs(Transform.from_pose(robot.tcp_pose()).matrix - Transform.from_pose(p.pose).matrix).max() < 1e-9
    assert robot.move_count == len(plan)
    assert all(r.outcome == "done" for r in robot.move_log)


# --- issue 17 item 11: a plan is bounded before it is built, and checked as it is built ------------------

def test_a_huge_plan_is_refused_before_any_pose_is_built():
    import time

    config = PlanConfig(part_size_m=(100.0, 100.0), footprint_m=FOOTPRINT)
    started = time.process_time()
    with pytest.raises(ConfigError, match=r"plan.part_size_m = \[100, 100\] m .* = \d+ poses, more than 5000") as info:
        make_plan(config)
    assert "\n" not in str(info.value)
    assert time.process_time() - started < 5.0  # generous: it used to build millions of poses (a hang)


class CountingEnvelope:
    """Refuses the ``bad_at``-th pose it is asked about; counts the checks."""

    def __init__(self, bad_at: int) -> None:
        self.checked: list[str] = []
        self.bad_at = bad_at

    def check_pose(self, pose, label: str = "") -> None:
        self.checked.append(label)
        if len(self.checked) == self.bad_at:
            from acquisition.errors import EnvelopeViolation

            raise EnvelopeViolation(f"pose {label}: outside")


def test_the_envelope_is_checked_as_poses_are_generated():
    config = PlanConfig(part_size_m=(1.5, 1.5), footprint_m=FOOTPRINT, shots_per_point=3)
    envelope = CountingEnvelope(bad_at=2)
    from acquisition.errors import EnvelopeViolation

    with pytest.raises(EnvelopeViolation, match=r"pose r0c0s1: outside"):
        make_plan(config, envelope=envelope)
    assert envelope.checked == ["r0c0s0", "r0c0s1"]
    every = CountingEnvelope(bad_at=-1)
    plan = make_plan(PlanConfig(footprint_m=FOOTPRINT), envelope=every)
    assert every.checked == [p.pose_id for p in plan]


def test_a_real_envelope_refuses_an_oversized_part_at_its_first_pose():
    from acquisition.errors import EnvelopeViolation

    with pytest.raises(EnvelopeViolation, match=r"pose r0c0s0: x = .* below the workspace minimum x"):
        make_plan(PlanConfig(part_size_m=(2.0, 2.0), footprint_m=FOOTPRINT), envelope=SafetyEnvelope())
