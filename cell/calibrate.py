"""The calibration workflow of the cell: plan views of a ChArUco board, move, capture, detect, calibrate, save.

Works with any :class:`acquisition.robot.Robot` and :class:`acquisition.camera.Camera` (simulated or real).
Planning needs where the board lies (``T_base_board``, nominal to a few centimetres), a nominal camera
model and a nominal camera-on-flange transform (design values; the calibration then measures the true
ones). Views sit on a sphere cap around the board: tilted 10-30 degrees from the board normal at spread
azimuths, rolled about the optical axis, aimed at varied points of the board so the corners cover the
image. Every view is checked (``pose_check``: safety envelope, reachability) before anything moves.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from acquisition.errors import AcquisitionError, StoreError
from acquisition.store._files import atomic_write, encode_png
from calibration.calibration_file import CalibrationFile, load_calibration
from calibration.camera_model import CameraModel
from calibration.charuco import BoardDetection, CharucoBoardSpec, CharucoDetector
from calibration.errors import CalibrationError, NotEnoughViews
from calibration.handeye import MIN_VIEWS_HAND_EYE, HandEyeResult, board_pose_pnp, calibrate_hand_eye, hand_eye_method
from calibration.intrinsics import MIN_VIEWS_INTRINSICS, IntrinsicsResult, calibrate_intrinsics
from calibration.transforms import Transform

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


class CalibrationPlanConfig(BaseModel):
    """How to place the calibration views (angles in degrees, lengths in metres, speeds m/s and m/s^2)."""

    model_config = ConfigDict(extra="forbid")

    views: int = Field(20, ge=5, le=500, description="number of views to capture (>= 5, the fewest intrinsics accept)")
    tilt_min_deg: float = Field(10.0, ge=0.0, le=60.0, description="smallest angle between optical axis and board normal")
    tilt_max_deg: float = Field(30.0, ge=0.0, le=60.0, description="largest angle between optical axis and board normal")
    roll_max_deg: float = Field(40.0, ge=0.0, le=180.0, description="largest rotation about the optical axis")
    distance_m: float | None = Field(
        None, gt=0.0, description="camera to aim point; default: the board spans `fill` of the image"
    )
    fill: float = Field(1.1, gt=0.1, le=1.5, description="board size / image size at the default distance")
    aim_spread: float = Field(
        0.3, ge=0.0, le=0.5, description="aim points spread over this fraction of the board around its centre"
    )
    min_visible: float = Field(0.6, gt=0.0, le=1.0, description="fraction of board corners that must fall in the image")
    speed: float = Field(0.1, gt=0.0, le=1.0, description="linear speed between views, m/s")
    accel: float = Field(0.5, gt=0.0, le=5.0, description="linear acceleration, m/s^2")
    joint_speed: float = Field(0.5, gt=0.0, le=3.0, description="joint speed when moving by joints, rad/s")
    joint_accel: float = Field(1.0, gt=0.0, le=40.0, description="joint acceleration when moving by joints, rad/s^2")
    settle_s: float = Field(0.2, ge=0.0, le=10.0, description="wait after each move before the capture, s")
    seed: int = 0

    @model_validator(mode="after")
    def _tilts_ordered(self) -> "CalibrationPlanConfig":
        if self.tilt_min_deg > self.tilt_max_deg:
            raise ValueError(f"tilt_min_deg {self.tilt_min_deg} > tilt_max_deg {self.tilt_max_deg}")
        return self


@dataclass(frozen=True)
class CalibrationView:
    """One planned view: ``pose`` (6,) TCP pose in the base frame; the angles (deg) it was built from."""

    view_id: str
    pose: np.ndarray
    tilt_deg: float
    azimuth_deg: float
    roll_deg: float


def _look_at(position: np.ndarray, target: np.ndarray, ref_x: np.ndarray, roll: float) -> Transform:
    """Camera pose at ``position`` with z towards ``target``, x near ``ref_x`` turned by ``roll`` about z."""
    z = target - position
    z = z / np.linalg.norm(z)
    x = ref_x - (ref_x @ z) * z
    if np.linalg.norm(x) < 1e-9:  # reference parallel to the optical axis: pick any perpendicular
        x = np.cross(z, [1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.cross(z, [0.0, 1.0, 0.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = math.cos(roll), math.sin(roll)
    x, y = c * x + s * y, -s * x + c * y
    return Transform.from_rt(np.column_stack([x, y, z]), position)


def default_distance(spec: CharucoBoardSpec, camera: CameraModel, fill: float) -> float:
    """Distance (m) at which the board spans ``fill`` of the image in its tighter direction."""
    w, h = spec.size_m
    return max(camera.fx * w / (fill * camera.width), camera.fy * h / (fill * camera.height))


def visible_fraction(spec: CharucoBoardSpec, camera: CameraModel, T_base_cam: Transform, T_base_board: Transform,
                     border_px: float = 10.0) -> float:
    """Fraction of the board's inner corners that project inside the image (``border_px`` from the edges)."""
    pts_cam = (T_base_cam.inverse() @ T_base_board).apply(spec.corner_points())
    if np.any(pts_cam[:, 2] <= 0):
        return 0.0
    px = camera.project(pts_cam)
    inside = (
        (px[:, 0] >= border_px) & (px[:, 0] <= camera.width - 1 - border_px)
        & (px[:, 1] >= border_px) & (px[:, 1] <= camera.height - 1 - border_px)
    )
    return float(inside.mean())


def plan_calibration_views(
    spec: CharucoBoardSpec,
    T_base_board: Transform,
    camera: CameraModel,
    T_flange_cam: Transform,
    config: CalibrationPlanConfig,
    pose_check: Callable[[np.ndarray, str], None] | None = None,
    max_attempts_per_view: int = 40,
) -> list[CalibrationView]:
    """Plan ``config.views`` TCP poses looking at the board; ordered by azimuth for a short path.

    ``camera`` and ``T_flange_cam`` are nominal (design) values. ``pose_check(pose, label)`` raises an
    :class:`AcquisitionError` (envelope violation, unreachable pose) for a pose the robot must not take;
    such candidates are replaced by new random ones. Too few acceptable poses -> NotEnoughViews.
    """
    rng = np.random.default_rng(config.seed)
    distance = config.distance_m or default_distance(spec, camera, config.fill)
    R_board = T_base_board.rotation
    board_x, board_y, normal = R_board[:, 0], R_board[:, 1], -R_board[:, 2]  # printed face looks along -z_board
    w, h = spec.size_m
    T_cam_flange = T_flange_cam.inverse()
    tilts = np.linspace(config.tilt_min_deg, config.tilt_max_deg, config.views)
    rng.shuffle(tilts)
    views: list[CalibrationView] = []
    rejections: dict[str, int] = {}
    azimuth0 = rng.uniform(0.0, 2 * math.pi)
    for k in range(config.views):
        tilt_deg = float(tilts[k])
        for attempt in range(max_attempts_per_view):
            if attempt:  # retry: another azimuth and a smaller tilt (a safety envelope may cap the tool tilt)
                tilt_deg = float(rng.uniform(0.5, 1.0) * tilt_deg)
            tilt = math.radians(tilt_deg)
            azimuth = azimuth0 + k * _GOLDEN_ANGLE + (0.0 if attempt == 0 else rng.uniform(-0.5, 0.5))
            roll = math.radians(rng.uniform(-config.roll_max_deg, config.roll_max_deg))
            aim_board = spec.center_board + np.array(
                [rng.uniform(-1, 1) * config.aim_spread * w, rng.uniform(-1, 1) * config.aim_spread * h, 0.0]
            )
            aim = T_base_board.apply(aim_board)
            direction = (
                math.cos(tilt) * normal
                + math.sin(tilt) * (math.cos(azimuth) * board_x + math.sin(azimuth) * board_y)
            )
            T_base_cam = _look_at(aim + distance * direction, aim, board_x, roll)
            if visible_fraction(spec, camera, T_base_cam, T_base_board) < config.min_visible:
                rejections["board not in view"] = rejections.get("board not in view", 0) + 1
                continue
            pose = (T_base_cam @ T_cam_flange).to_pose()
            label = f"calib-{k:02d}"
            if pose_check is not None:
                try:
                    pose_check(pose, label)
                except AcquisitionError as exc:
                    kind = type(exc).__name__
                    rejections[kind] = rejections.get(kind, 0) + 1
                    continue
            views.append(CalibrationView(label, pose, math.degrees(tilt), math.degrees(azimuth) % 360.0,
                                         math.degrees(roll)))
            break
    needed = max(MIN_VIEWS_INTRINSICS, MIN_VIEWS_HAND_EYE)
    if len(views) < needed:
        why = ", ".join(f"{n} {k}" for k, n in sorted(rejections.items())) or "none"
        raise NotEnoughViews(
            f"calibration plan: found {len(views)} acceptable views, need at least {needed} "
            f"(rejected candidates: {why}); check the board placement, the envelope and the distance"
        )
    views.sort(key=lambda v: v.azimuth_deg)
    return [CalibrationView(f"calib-{i:02d}", v.pose, v.tilt_deg, v.azimuth_deg, v.roll_deg) for i, v in enumerate(views)]


@dataclass
class CapturedView:
    """One executed view: the commanded and actual TCP pose (6,), the detection, the frame's metadata."""

    view_id: str
    commanded_pose: np.ndarray
    actual_pose: np.ndarray
    detection: BoardDetection
    frame_id: int
    camera_id: str


@dataclass
class CalibrationRun:
    """Everything one calibration produced: the file to save plus the detailed results."""

    calibration: CalibrationFile
    intrinsics: IntrinsicsResult
    hand_eye: HandEyeResult
    views: list[CapturedView]
    warnings: list[str] = field(default_factory=list)


def capture_views(
    robot: Any,
    camera: Any,
    detector: CharucoDetector,
    views: Sequence[CalibrationView],
    config: CalibrationPlanConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
    image_dir: Path | None = None,
    progress: Callable[[int, int, CapturedView], None] | None = None,
    inverse_kinematics: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> list[CapturedView]:
    """Move to each view, let the arm settle, capture, detect. Robot/camera faults propagate unchanged.

    Moves are linear unless ``inverse_kinematics(pose, q_near) -> q`` is given: then joint moves, which
    cannot cross a singularity between two views far apart in orientation.
    """
    captured: list[CapturedView] = []
    for i, view in enumerate(views):
        if inverse_kinematics is None:
            robot.move_linear(view.pose, config.speed, config.accel)
        else:
            q = inverse_kinematics(np.asarray(view.pose, dtype=float), np.asarray(robot.joint_positions(), dtype=float))
            robot.move_joints(q, config.joint_speed, config.joint_accel)
        if config.settle_s > 0:
            sleep(config.settle_s)
        actual = np.asarray(robot.tcp_pose(), dtype=float).reshape(6)
        frame = camera.capture()
        detection = detector.detect(frame.pixels)
        if image_dir is not None:
            save_view_image(image_dir, view.view_id, frame.pixels, frame.pixel_format)
        record = CapturedView(view.view_id, np.asarray(view.pose, dtype=float), actual, detection,
                              int(frame.frame_id), str(frame.camera_id))
        captured.append(record)
        if progress is not None:
            progress(i + 1, len(views), record)
    return captured


def save_view_image(folder: Path, view_id: str, pixels: np.ndarray, pixel_format: str = "") -> Path:
    """Write a captured view as ``folder/<view_id>.png`` with the capture store's lossless PNG encoder
    (crash-safe write, missing folders created); returns the path.

    ``pixels``: (H, W) mono or (H, W, 3) RGB, uint8 or uint16, as a :class:`~acquisition.camera.Frame`
    holds them; the file reads back with the same values, channel order and dtype. Other shapes or dtypes,
    or a failed write, raise StoreError naming the file.
    """
    path = Path(folder) / f"{view_id}.png"
    try:
        data = encode_png(pixels, pixel_format or "calibration view")
    except StoreError as exc:
        raise StoreError(f"{path}: {exc}") from None
    atomic_write(path, data)
    return path


def calibrate_from_views(
    captured: Sequence[CapturedView],
    spec: CharucoBoardSpec,
    *,
    camera_serial: str,
    method: str = "park",
    min_corners: int = 8,
    image_size: tuple[int, int] | None = None,
) -> CalibrationRun:
    """Intrinsics from all views, then board poses by PnP with those intrinsics, then hand-eye."""
    hand_eye_method(method)  # fail on a bad name before any work
    detections = [c.detection for c in captured]
    intr = calibrate_intrinsics(detections, image_size, min_corners=min_corners)
    used = [captured[i] for i in intr.used_views]
    board_poses, tcp, ids = [], [], []
    for view in used:
        T = board_pose_pnp(view.detection, intr.camera, min_corners=min_corners)
        if T is not None:
            board_poses.append(T)
            tcp.append(view.actual_pose)
            ids.append(view.view_id)
    he = calibrate_hand_eye(tcp, board_poses, method, view_ids=ids)
    report = {
        "intrinsics": intr.report(),
        "hand_eye": he.report(),
        "views": {
            c.view_id: {
                "corners": c.detection.count,
                "actual_pose_m_rad": [round(float(x), 7) for x in c.actual_pose],
                "pose_error_mm": round(float(np.linalg.norm(c.actual_pose[:3] - c.commanded_pose[:3]) * 1e3), 4),
            }
            for c in captured
        },
    }
    calibration = CalibrationFile(
        camera_serial=camera_serial,
        camera=intr.camera,
        T_flange_cam=he.T_flange_cam,
        method=he.method,
        n_views=len(ids),
        board=spec.model_dump(),
        report=report,
    )
    return CalibrationRun(calibration, intr, he, list(captured), warnings=intr.warnings + he.warnings)


def run_calibration(
    robot: Any,
    camera: Any,
    spec: CharucoBoardSpec,
    T_base_board: Transform,
    nominal_camera: CameraModel,
    nominal_T_flange_cam: Transform,
    config: CalibrationPlanConfig,
    *,
    camera_serial: str,
    method: str = "park",
    min_corners: int = 8,
    pose_check: Callable[[np.ndarray, str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    image_dir: Path | None = None,
    progress: Callable[[int, int, CapturedView], None] | None = None,
    inverse_kinematics: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> CalibrationRun:
    """Plan, check every pose, move/capture/detect, calibrate. Nothing moves if planning fails."""
    hand_eye_method(method)
    views = plan_calibration_views(spec, T_base_board, nominal_camera, nominal_T_flange_cam, config, pose_check)
    captured = capture_views(robot, camera, CharucoDetector(spec), views, config, sleep=sleep,
                             image_dir=image_dir, progress=progress, inverse_kinematics=inverse_kinematics)
    try:
        run = calibrate_from_views(captured, spec, camera_serial=camera_serial, method=method,
                                   min_corners=min_corners)
        if len(views) < config.views:
            run.warnings.insert(0, f"only {len(views)} of the {config.views} requested views were safe and reachable")
        return run
    except NotEnoughViews as exc:
        counts = ", ".join(f"{c.view_id}: {c.detection.count}" for c in captured)
        raise NotEnoughViews(f"{exc} (corners per view: {counts})") from None


class CalibrationConfig(BaseModel):
    """A calibration config file (``configs/calibration/*.yaml``): the board, where it lies, how to plan.

    ``board_center_mm`` (base frame) and ``board_yaw_deg`` place the board printed face up on the table;
    they are nominal for the real cell and exact for the simulated one.
    """

    model_config = ConfigDict(extra="forbid")

    board: CharucoBoardSpec = Field(default_factory=CharucoBoardSpec)
    board_center_mm: tuple[float, float, float] = (450.0, -100.0, 0.0)
    board_yaw_deg: float = Field(0.0, ge=-180.0, le=180.0)
    method: str = "park"
    min_corners: int = Field(8, ge=6)
    plan: CalibrationPlanConfig = Field(default_factory=CalibrationPlanConfig)

    @model_validator(mode="after")
    def _known_method(self) -> "CalibrationConfig":
        try:
            hand_eye_method(self.method)
        except CalibrationError as exc:  # turned into a validation error naming the key
            raise ValueError(str(exc)) from None
        return self

    @property
    def T_base_board(self) -> Transform:
        """Board frame in the base frame: face up (z down), x along base x turned by the yaw, centred as given."""
        return board_pose_from_center(self.board, np.asarray(self.board_center_mm) * 1e-3,
                                      math.radians(self.board_yaw_deg))


def board_pose_from_center(spec: CharucoBoardSpec, center_m: np.ndarray, yaw_rad: float) -> Transform:
    """``T_base_board`` of a board lying printed face up with its grid centre at ``center_m`` (3,) metres."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, -1.0, -1.0])  # face up: z down
    origin = np.asarray(center_m, dtype=float) - R @ spec.center_board
    return Transform.from_rt(R, origin)


def show_board(scene: Any, spec: CharucoBoardSpec, T_base_board: Transform, texel_size_m: float = 5e-5,
               margin_squares: float = 0.5) -> None:
    """Put the board on the simulated table: its image at <= ``texel_size_m`` per pixel, with a white margin."""
    pixels_per_square = max(16, int(math.ceil(spec.square_length_m / texel_size_m)))
    image = spec.render(pixels_per_square=pixels_per_square, margin_squares=margin_squares)
    margin = int(round(margin_squares * pixels_per_square))
    scene.set_board(image, spec.square_length_m / pixels_per_square, T_base_board,
                    origin_px=(float(margin), float(margin)))


def camera_serial(camera: Any) -> str:
    """The serial a calibration file is tied to: ``camera.serial`` when the backend has one, else ``camera_id``."""
    serial = getattr(camera, "serial", None)
    return str(serial) if serial else str(camera.camera_id)


def load_calibration_for_camera(path: str | Path, camera: Any) -> CalibrationFile:
    """The calibration in force for ``camera``: the file at ``path``, refused (CalibrationFileError naming both
    serials) if it was made for another camera. Campaigns record its ``calibration_id``."""
    return load_calibration(path, expected_serial=camera_serial(camera))
