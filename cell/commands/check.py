"""``cell check --cell configs/cells/ur5.yaml``: connect to the configured robot and camera, print who
they are and their state, grab one test frame; fail with one line naming what is wrong (exit 2).

Real backends (``robot.backend: ur5``, ``camera.backend: genicam``) are built here by
:func:`robot_from_section` / :func:`camera_from_section`; a ``sim`` section is built through
:mod:`cell.cell_factory`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import click
import numpy as np

from acquisition.envelope import SafetyEnvelope
from acquisition.errors import ConnectionLost, RobotError
from acquisition.genicam.camera import GenICamCamera, GenICamCameraConfig
from acquisition.ur.robot import ROBOT_MODE_NAMES, SAFETY_MODE_NAMES, URRobot, URRobotConfig
from calibration.transforms import rotvec_to_matrix
from cell.config import read_yaml_mapping, validate_mapping
from cell.errors import ConfigFileError

REAL_ROBOT_BACKENDS = ("ur5",)
REAL_CAMERA_BACKENDS = ("genicam",)


def _section(source: str, data: dict[str, Any], key: str) -> dict[str, Any]:
    section = data.get(key)
    if not isinstance(section, dict):
        raise ConfigFileError(f"{source}: missing key '{key}' (a mapping with a 'backend')")
    return dict(section)


def robot_from_section(source: str, section: dict[str, Any], envelope: SafetyEnvelope) -> URRobot:
    """A URRobot from a cell file's ``robot:`` mapping (``backend: ur5``); errors name file and key."""
    fields = {k: v for k, v in section.items() if k != "backend"}
    cfg = validate_mapping(f"{source} [robot]", fields, URRobotConfig)
    return URRobot(cfg, envelope=envelope)


def camera_from_section(source: str, section: dict[str, Any]) -> GenICamCamera:
    """A GenICamCamera from a cell file's ``camera:`` mapping (``backend: genicam``)."""
    fields = {k: v for k, v in section.items() if k != "backend"}
    return GenICamCamera(validate_mapping(f"{source} [camera]", fields, GenICamCameraConfig))


def _envelope(source: str, data: dict[str, Any]) -> SafetyEnvelope:
    env = data.get("envelope", {})
    if not isinstance(env, dict):
        raise ConfigFileError(f"{source}: key 'envelope' must be a mapping")
    return validate_mapping(f"{source} [envelope]", env, SafetyEnvelope)


def format_pose_mm_deg(pose: np.ndarray) -> str:
    """A TCP pose for people: position in mm, orientation as the rotation vector in degrees."""
    p = np.asarray(pose, dtype=float)
    angle = math.degrees(float(np.linalg.norm(p[3:])))
    rv = np.degrees(p[3:])
    return (f"x {p[0] * 1000:.1f} mm, y {p[1] * 1000:.1f} mm, z {p[2] * 1000:.1f} mm, "
            f"rotation vector [{rv[0]:.2f}, {rv[1]:.2f}, {rv[2]:.2f}] deg (|r| = {angle:.2f} deg)")


def _tool_down_deg(pose: np.ndarray) -> float:
    z_axis = rotvec_to_matrix(np.asarray(pose, dtype=float)[3:]) @ np.array([0.0, 0.0, 1.0])
    return math.degrees(math.acos(max(-1.0, min(1.0, -float(z_axis[2])))))


def check_robot(robot: Any, echo=click.echo) -> dict[str, Any]:
    """Connect, print identity and state; returns what was printed as a dict."""
    with robot:
        ident = robot.identity() if hasattr(robot, "identity") else {}
        status = robot.status()
        if not status.connected:
            raise ConnectionLost(f"robot: connected but no state arrives from {getattr(robot, 'host', 'the robot')}")
        pose = np.asarray(status.tcp_pose, dtype=float)
        echo("robot:")
        for key, value in ident.items():
            echo(f"  {key}: {value}")
        echo(f"  robot mode: {ROBOT_MODE_NAMES.get(status.robot_mode, status.robot_mode)}")
        echo(f"  safety mode: {SAFETY_MODE_NAMES.get(status.safety_mode, status.safety_mode)}")
        echo(f"  program running: {status.program_running}")
        echo(f"  TCP: {format_pose_mm_deg(pose)}; tool {_tool_down_deg(pose):.1f} deg from pointing down")
        echo(f"  joints: [{', '.join(f'{math.degrees(q):.2f}' for q in status.joint_positions)}] deg")
        if hasattr(robot, "ensure_ready"):
            robot.ensure_ready("cell check")
        elif not status.ok:
            raise RobotError(f"robot: not ready to move ({status})")
        return {"identity": ident, "status": status}


def check_camera(camera: Any, echo=click.echo) -> dict[str, Any]:
    """Open, print identity, features and one test frame's statistics."""
    with camera:
        echo("camera:")
        for key, value in getattr(camera, "identity", {"camera_id": camera.camera_id}).items():
            echo(f"  {key}: {value}")
        for line in getattr(camera, "feature_report", []):
            echo(f"  feature {line}")
        for key, value in (camera.features() if hasattr(camera, "features") else {}).items():
            echo(f"  {key} = {value}")
        frame = camera.capture()
        px = frame.pixels
        echo(f"  test frame: {px.shape[1]}x{px.shape[0]} {frame.pixel_format} {px.dtype}, min {int(px.min())}, "
             f"max {int(px.max())}, mean {float(px.mean()):.1f}, std {float(px.std()):.1f}, "
             f"device timestamp {'none' if frame.device_timestamp_ns is None else frame.device_timestamp_ns}")
        saturated = float(np.mean(px >= np.iinfo(px.dtype).max))
        if saturated > 0.5:
            echo(f"  warning: {saturated:.0%} of the pixels are saturated (exposure too long?)")
        return {"frame": frame}


@click.command("check")
@click.option("--cell", "cell_path", required=True, type=click.Path(path_type=Path),
              help="cell config, e.g. configs/cells/ur5.yaml")
@click.option("--skip-robot", is_flag=True, help="check the camera only")
@click.option("--skip-camera", is_flag=True, help="check the robot only")
def command(cell_path: Path, skip_robot: bool, skip_camera: bool) -> None:
    """Connect to the configured robot and camera, print their identity and state and a test frame."""
    source = str(cell_path)
    data = read_yaml_mapping(cell_path)
    robot_sec = _section(source, data, "robot")
    camera_sec = _section(source, data, "camera")
    robot_backend, camera_backend = robot_sec.get("backend", "sim"), camera_sec.get("backend", "sim")
    sim_cell: Optional[Any] = None
    if robot_backend == "sim" or camera_backend == "sim":
        from cell.cell_factory import load_cell

        sim_cell = load_cell(cell_path)
    if not skip_robot:
        if robot_backend in REAL_ROBOT_BACKENDS:
            robot = robot_from_section(source, robot_sec, _envelope(source, data))
        elif robot_backend == "sim":
            robot = sim_cell.robot  # type: ignore[union-attr]
        else:
            raise ConfigFileError(f"{source}: key 'robot.backend' = {robot_backend!r}: expected one of "
                                  f"{', '.join(('sim',) + REAL_ROBOT_BACKENDS)}")
        check_robot(robot)
    if not skip_camera:
        if camera_backend in REAL_CAMERA_BACKENDS:
            camera = camera_from_section(source, camera_sec)
        elif camera_backend == "sim":
            camera = sim_cell.camera  # type: ignore[union-attr]
            sim_cell.robot.connect()  # type: ignore[union-attr]  # the sim camera renders at the robot pose
        else:
            raise ConfigFileError(f"{source}: key 'camera.backend' = {camera_backend!r}: expected one of "
                                  f"{', '.join(('sim',) + REAL_CAMERA_BACKENDS)}")
        check_camera(camera)
    click.echo("check: OK")
