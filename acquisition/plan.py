"""Pose plans: a serpentine raster of camera poses over a flat part, N slightly shifted shots per point.

The camera looks straight down at the part (optical axis along the part's -z), from ``working_distance_m``
above the part surface, its image x-axis along the part's x-axis (rotated by ``yaw_deg``). Grid points
are spaced so neighbouring footprints overlap by at least ``overlap``; rows are traversed alternately
left-to-right and right-to-left (serpentine) so consecutive moves are short. Each grid point gets
``shots_per_point`` shots: shot 0 at the nominal pose, the others shifted by ``shot_shift_m`` in the part
plane and tilted by ``shot_tilt_deg`` (as the reference cell took three images per setup with slight
movements between them).

Frames: the part frame has its origin at the sheet centre, z up, on the table; the plan returns TCP poses
``[x, y, z, rx, ry, rz]`` in the robot base frame. When the camera-to-flange transform ``T_flange_cam``
is given, the TCP poses are computed so that the CAMERA sits at the planned pose
(:func:`camera_pose_to_tcp_pose`); without it the camera is taken to sit at the TCP.

Pose ids are ``r{row}c{col}s{shot}`` with ``row``/``col`` the grid indices (not the visiting order), so
an id names the same place on the part whatever the traversal: stable across runs and resumes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from acquisition.errors import ConfigError
from calibration.camera_model import CameraModel
from calibration.transforms import Transform

#: The camera looking straight down in the part frame: x along part x, y along part -y, z along part -z.
_R_PART_CAM_DOWN = np.diag([1.0, -1.0, -1.0])

#: The most poses one plan may have (per part). The reference campaign has 75; a plan past this is a mistake
#: (a size typed in millimetres, a tiny footprint) and is refused before a single pose is built.
MAX_PLAN_POSES = 5000


class PoseChecker(Protocol):
    """What :func:`make_plan` needs of :class:`acquisition.envelope.SafetyEnvelope` to check poses as it goes."""

    def check_pose(self, pose: np.ndarray, label: str = "") -> None: ...


class PlanConfig(BaseModel):
    """The ``plan:`` section of ``configs/campaigns/*.yaml``. Metres, m/s, m/s^2; angles in degrees."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    part_center_pose: tuple[float, float, float, float, float, float] = Field(
        default=(0.0, -0.45, 0.0, 0.0, 0.0, 0.0),
        description="part frame (origin at the sheet centre, z up) in the robot base frame, UR pose (m, rad); "
        "the default is the simulated scene's nominal sheet placement",
    )
    part_size_m: tuple[float, float] = Field(default=(0.30, 0.25), description="part extent along its x and y, m")
    margin_m: float = Field(default=0.005, ge=0.0, le=0.1, description="extra border covered around the part, m")
    working_distance_m: float = Field(default=0.35, ge=0.1, le=1.0, description="camera to part surface, m")
    footprint_m: tuple[float, float] | None = Field(
        default=None,
        description="area seen by one image at the working distance (image width, height), m; "
        "None: the caller passes footprint_from_camera(...) to make_plan",
    )
    overlap: float = Field(default=0.25, ge=0.0, le=0.9, description="least overlap of neighbouring images, fraction")
    shots_per_point: int = Field(default=3, ge=1, le=12, description="images per grid point")
    shot_shift_m: float = Field(default=0.003, ge=0.0, le=0.02, description="in-plane shift of shots 1.., m")
    shot_tilt_deg: float = Field(default=2.0, ge=0.0, le=10.0, description="tilt of shots 1.., degrees")
    yaw_deg: float = Field(default=0.0, description="camera x-axis relative to part x: -90, 0, 90 or 180 degrees")
    speed: float = Field(default=0.25, gt=0.0, le=3.0, description="linear move speed, m/s")
    accel: float = Field(default=1.2, gt=0.0, le=15.0, description="linear move acceleration, m/s^2")

    @field_validator("part_size_m", "footprint_m")
    @classmethod
    def _positive_pair(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not all(math.isfinite(v) and v > 0 for v in value):
            raise ValueError(f"both sizes must be positive metres, got {list(value)}")
        return value

    @field_validator("part_center_pose")
    @classmethod
    def _finite_pose(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not all(math.isfinite(v) for v in value):
            raise ValueError(f"pose values must be finite, got {list(value)}")
        return value

    @field_validator("yaw_deg")
    @classmethod
    def _quarter_turn(cls, value: float) -> float:
        if value not in (-90.0, 0.0, 90.0, 180.0):
            raise ValueError(f"must be one of -90, 0, 90, 180 (degrees), got {value}")
        return value


@dataclass(frozen=True)
class PlannedPose:
    """One planned capture pose.

    ``pose``: TCP pose (6,) in the base frame (m, rotation vector). ``grid_index``: (row, col) of the
    grid point (row along the part's y, col along its x). ``shot``: 0..shots_per_point-1.
    ``camera_pose``: the intended camera pose (6,) in the base frame (equal to ``pose`` when no
    camera-to-flange transform was given).
    """

    pose_id: str
    pose: np.ndarray
    grid_index: tuple[int, int]
    shot: int
    camera_pose: np.ndarray = field(default=None, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        pose = np.asarray(self.pose, dtype=float)
        if pose.shape != (6,):
            raise ValueError(f"planned pose {self.pose_id}: needs 6 values, got shape {pose.shape}")
        object.__setattr__(self, "pose", pose)
        cam = pose if self.camera_pose is None else np.asarray(self.camera_pose, dtype=float)
        object.__setattr__(self, "camera_pose", cam)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (lists of floats)."""
        return {
            "pose_id": self.pose_id,
            "pose": [float(v) for v in self.pose],
            "grid_index": list(self.grid_index),
            "shot": self.shot,
            "camera_pose": [float(v) for v in self.camera_pose],
        }


def footprint_from_camera(camera_model: CameraModel, working_distance: float) -> tuple[float, float]:
    """Width and height (m) of the rectangle of a plane at ``working_distance`` (m) surely seen by the camera.

    The camera looks straight at the plane; with lens distortion the largest centred rectangle inside
    the (distorted) image border is returned, so coverage computed from it is never optimistic.
    """
    if not working_distance > 0:
        raise ValueError(f"working_distance must be positive metres, got {working_distance!r}")
    w, h = camera_model.width, camera_model.height
    us = np.linspace(-0.5, w - 0.5, 65)
    vs = np.linspace(-0.5, h - 0.5, 65)
    left = np.stack([np.full_like(vs, -0.5), vs], axis=1)
    right = np.stack([np.full_like(vs, w - 0.5), vs], axis=1)
    top = np.stack([us, np.full_like(us, -0.5)], axis=1)
    bottom = np.stack([us, np.full_like(us, h - 0.5)], axis=1)
    d = float(working_distance)
    x_left = camera_model.unproject(left, d)[:, 0]
    x_right = camera_model.unproject(right, d)[:, 0]
    y_top = camera_model.unproject(top, d)[:, 1]
    y_bottom = camera_model.unproject(bottom, d)[:, 1]
    width = 2.0 * min(float(np.min(-x_left)), float(np.min(x_right)))
    height = 2.0 * min(float(np.min(-y_top)), float(np.min(y_bottom)))
    if width <= 0 or height <= 0:
        raise ValueError(f"camera model gives an empty footprint at {d} m: {width} x {height} m")
    return width, height


def camera_pose_to_tcp_pose(
    T_base_cam: Transform | Sequence[float] | np.ndarray,
    T_flange_cam: Transform,
    T_flange_tcp: Transform | None = None,
) -> np.ndarray:
    """The TCP pose (6,) in the base frame that puts the camera at ``T_base_cam``.

    ``T_base_cam``: desired camera pose (Transform or UR pose (6,)); ``T_flange_cam``: camera in the
    flange frame; ``T_flange_tcp``: the robot's TCP offset (None = TCP at the flange).
    ``T_base_tcp = T_base_cam @ inv(T_flange_cam) @ T_flange_tcp``.
    """
    cam = T_base_cam if isinstance(T_base_cam, Transform) else Transform.from_pose(T_base_cam)
    tcp = cam @ T_flange_cam.inverse()
    if T_flange_tcp is not None:
        tcp = tcp @ T_flange_tcp
    return tcp.to_pose()


def grid_count(extent: float, footprint: float, overlap: float) -> int:
    """How many centres :func:`grid_centres` places along one axis (computed without building them).

    ``n = 1`` when one footprint covers the extent; otherwise the smallest n whose even spacing
    ``(extent - footprint) / (n - 1)`` is at most ``footprint * (1 - overlap)``.
    """
    if extent <= footprint:
        return 1
    step = footprint * (1.0 - overlap)
    return int(math.ceil((extent - footprint) / step - 1e-9)) + 1


def grid_centres(extent: float, footprint: float, overlap: float) -> np.ndarray:
    """Centres (n,) along one axis, symmetric about 0, so footprints cover ``extent`` with >= ``overlap``
    (``n`` as :func:`grid_count` says)."""
    n = grid_count(extent, footprint, overlap)
    if n == 1:
        return np.zeros(1)
    half = (extent - footprint) / 2.0
    return np.linspace(-half, half, n)


def _shot_offsets(config: PlanConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per shot: in-plane shift (3,) in the part frame, m, and a rotation (3, 3) applied to the camera."""
    offsets: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(3), np.eye(3))]
    others = config.shots_per_point - 1
    tilt = math.radians(config.shot_tilt_deg)
    for k in range(others):
        phi = 2.0 * math.pi * k / others
        direction = np.array([math.cos(phi), math.sin(phi), 0.0])
        shift = config.shot_shift_m * direction
        # tilt about the in-plane axis perpendicular to the shift: the view leans along the shift
        axis = np.array([-math.sin(phi), math.cos(phi), 0.0])
        offsets.append((shift, Transform.from_rt(axis * tilt, np.zeros(3)).rotation))
    return offsets


def make_plan(
    config: PlanConfig,
    part_frame: Transform | Sequence[float] | np.ndarray | None = None,
    *,
    footprint: tuple[float, float] | None = None,
    part_size: tuple[float, float] | None = None,
    T_flange_cam: Transform | None = None,
    T_flange_tcp: Transform | None = None,
    envelope: PoseChecker | None = None,
    max_poses: int = MAX_PLAN_POSES,
) -> list[PlannedPose]:
    """The serpentine raster of planned poses over the part, in visiting order.

    ``part_frame``: the part frame in the base frame (Transform or UR pose (6,)); None = the config's
    ``part_center_pose``. ``footprint``: (w, h) m seen by one image (e.g. :func:`footprint_from_camera`);
    None = the config's ``footprint_m``. ``part_size``: (w, h) m overriding ``part_size_m`` (e.g. a
    scene part's ``size_m``). ``T_flange_cam`` (with the robot's ``T_flange_tcp``, None = TCP at the
    flange): aim the camera rather than the TCP; without it the camera is taken to sit at the TCP.
    ``envelope``: each TCP pose is checked (``check_pose``, raising its
    :class:`~acquisition.errors.EnvelopeViolation`) as it is generated, so a plan that leaves the workspace
    fails at its first bad pose. Raises :class:`ConfigError` when no footprint is known or when the plan
    would have more than ``max_poses`` poses (counted before any pose is built).
    """
    if part_frame is None:
        T_base_part = Transform.from_pose(config.part_center_pose)
    elif isinstance(part_frame, Transform):
        T_base_part = part_frame
    else:
        T_base_part = Transform.from_pose(part_frame)
    fp = footprint if footprint is not None else config.footprint_m
    if fp is None:
        raise ConfigError(
            "plan.footprint_m is not set and no camera footprint was given "
            "(set plan.footprint_m or pass footprint_from_camera(camera_model, working_distance))"
        )
    fp_w, fp_h = (float(v) for v in fp)
    if not (fp_w > 0 and fp_h > 0):
        raise ConfigError(f"plan footprint must be positive metres, got {list(fp)}")
    size_w, size_h = (float(v) for v in (part_size if part_size is not None else config.part_size_m))
    if not (size_w > 0 and size_h > 0):
        raise ConfigError(f"plan part size must be positive metres, got {[size_w, size_h]}")

    yaw = math.radians(config.yaw_deg)
    quarter = abs(round(config.yaw_deg / 90.0)) % 2 == 1
    along_x, along_y = (fp_h, fp_w) if quarter else (fp_w, fp_h)
    extent_x, extent_y = size_w + 2 * config.margin_m, size_h + 2 * config.margin_m
    n_x, n_y = grid_count(extent_x, along_x, config.overlap), grid_count(extent_y, along_y, config.overlap)
    n_poses = n_x * n_y * config.shots_per_point
    if n_poses > max_poses:
        raise ConfigError(
            f"plan.part_size_m = [{size_w:g}, {size_h:g}] m with a footprint of {fp_w:.3g} x {fp_h:.3g} m needs "
            f"{n_x} x {n_y} grid points x {config.shots_per_point} shots = {n_poses} poses, more than {max_poses}; "
            "sizes are in metres"
        )
    xs = grid_centres(extent_x, along_x, config.overlap)
    ys = grid_centres(extent_y, along_y, config.overlap)

    R_down = Transform.from_rt(np.array([0.0, 0.0, yaw]), np.zeros(3)).rotation @ _R_PART_CAM_DOWN
    shots = _shot_offsets(config)
    plan: list[PlannedPose] = []
    for row, y in enumerate(ys):
        cols = range(len(xs)) if row % 2 == 0 else range(len(xs) - 1, -1, -1)
        for col in cols:
            centre = np.array([xs[col], y, config.working_distance_m])
            for shot, (shift, tilt) in enumerate(shots):
                T_part_cam = Transform.from_rt(tilt @ R_down, centre + shift)
                T_base_cam = T_base_part @ T_part_cam
                if T_flange_cam is None:
                    tcp = T_base_cam.to_pose()  # the camera sits at the TCP
                else:
                    tcp = camera_pose_to_tcp_pose(T_base_cam, T_flange_cam, T_flange_tcp)
                if envelope is not None:
                    envelope.check_pose(tcp, label=f"r{row}c{col}s{shot}")
                plan.append(
                    PlannedPose(
                        pose_id=f"r{row}c{col}s{shot}",
                        pose=tcp,
                        grid_index=(row, col),
                        shot=shot,
                        camera_pose=T_base_cam.to_pose(),
                    )
                )
    return plan
