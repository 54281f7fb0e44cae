"""``cell check --cell configs/cells/ur5.yaml``: connect to the configured robot and camera, print who
they are and their state, grab one test frame; fail with one line naming what is wrong (exit 2).

The devices are built by :mod:`cell.cell_factory` from the whole cell file (the same validation, the same
calibration file check and the same objects as ``cell capture``), so what passes here is what a campaign
gets. The file must name both devices (``robot:`` and ``camera:`` sections): a check never falls back to a
simulated default.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import click
import numpy as np

from acquisition.errors import ConnectionLost, RobotError
from acquisition.ur.robot import ROBOT_MODE_NAMES, SAFETY_MODE_NAMES
from calibration.transforms import rotvec_to_matrix
from cell.cell_factory import Cell, CellConfig, build_cell, calibration_path
from cell.config import read_yaml_mapping, validate_mapping
from cell.errors import ConfigFileError

#: The device sections a cell file must write out for ``cell check``.
DEVICE_SECTIONS = ("robot", "camera")


def load_checked_cell(cell_path: Path) -> tuple[Cell, Optional[Path]]:
    """``(cell, calibration file or None)``: the cell of ``cell_path`` as :func:`cell.cell_factory.build_cell`
    builds it (devices not connected) but without reading its calibration file, which
    :func:`check_calibration` checks after the devices: a stale calibration (another camera, a first
    commissioning) must not keep the robot and camera from being checked. Missing or non-mapping ``robot:`` /
    ``camera:`` sections, and everything the factory refuses, raise ConfigFileError naming the file and key."""
    data = read_yaml_mapping(cell_path)
    for key in DEVICE_SECTIONS:
        if not isinstance(data.get(key), dict):
            raise ConfigFileError(f"{cell_path}: missing key '{key}' (a mapping with a 'backend')")
    config = validate_mapping(str(cell_path), data, CellConfig)  # as load_cell_config, without re-reading
    calibration = calibration_path(config, str(cell_path))
    return build_cell(config.model_copy(update={"calibration": None}), source=str(cell_path)), calibration


def check_calibration(path: Path, camera_serial: Optional[str], echo=click.echo) -> None:
    """Read the calibration file in force and check it belongs to the camera ``camera_serial``; prints its id.
    Raises the calibration package's one-line error (file missing, corrupt, another camera's serial)."""
    from calibration.calibration_file import load_calibration

    calibration = load_calibration(path, expected_serial=camera_serial)
    echo("calibration:")
    echo(f"  file: {path}")
    echo(f"  id: {calibration.calibration_id}")


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
        identity = dict(getattr(camera, "identity", None) or {"camera_id": camera.camera_id})
        if getattr(camera, "serial", None) and "serial_number" not in identity:
            identity["serial_number"] = camera.serial  # the simulated camera has a serial too (calibration checks it)
        for key, value in identity.items():
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
    if skip_robot and skip_camera:
        raise click.UsageError("--skip-robot and --skip-camera together leave nothing to check")
    cell, calibration = load_checked_cell(cell_path)
    if not skip_robot:
        check_robot(cell.robot)
    if not skip_camera:
        if cell.config.camera.backend == "sim":  # the sim camera renders the scene at the robot's pose
            cell.robot.connect()
            try:
                check_camera(cell.camera)
            finally:
                cell.robot.close()
        else:
            check_camera(cell.camera)
    if calibration is not None:
        check_calibration(calibration, cell.camera_serial)
    click.echo("check: OK")
