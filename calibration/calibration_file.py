"""The versioned calibration file (YAML): camera model + camera-on-flange transform + how they were obtained.

Layout (format_version 1)::

    format_version: 1
    calibration_id: calib-20261123T041500Z-1a2b3c4d
    created: '2026-11-23T04:15:00+00:00'
    camera: {serial: SIM-0001, width: 1280, height: 1024}
    intrinsics: {fx, fy, cx, cy (px), dist: [k1, k2, p1, p2, k3]}
    T_flange_cam: {matrix: 4x4 (m), pose_m_rad: [x, y, z, rx, ry, rz], pose_mm_deg: [...]}
    method: park
    n_views: 20
    board: {squares_x, ...}
    report: {intrinsics: {...}, hand_eye: {...}}

Loading checks the format version and, when asked, the camera serial.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from calibration._atomic import atomic_write
from calibration.camera_model import CameraModel
from calibration.errors import CalibrationFileError
from calibration.transforms import Transform
from calibration.yaml_io import describe_yaml_error, load_yaml

#: The format this code writes and reads. Older or newer files are refused.
FORMAT_VERSION = 1


def _content_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]


@dataclass
class CalibrationFile:
    """One calibration of one camera on one robot.

    ``T_flange_cam``: camera frame -> robot TCP/flange frame (metres). ``created``: ISO 8601 UTC.
    ``calibration_id``: stable id ``calib-<UTC timestamp>-<8 hex of the content hash>`` that campaigns record.
    """

    camera_serial: str
    camera: CameraModel
    T_flange_cam: Transform
    method: str
    n_views: int
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).replace(microsecond=0).isoformat())
    board: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    calibration_id: str = ""

    def __post_init__(self) -> None:
        if not self.calibration_id:
            self.calibration_id = self._make_id()

    def _make_id(self) -> str:
        stamp = datetime.fromisoformat(self.created).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        payload = {
            "serial": self.camera_serial,
            "camera": self.camera.to_dict(),
            "T": np.round(self.T_flange_cam.matrix, 12).tolist(),
            "created": self.created,
            "method": self.method,
        }
        return f"calib-{stamp}-{_content_hash(payload)}"

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping (plain Python types)."""
        cam = self.camera
        pose = self.T_flange_cam.to_pose()
        return {
            "format_version": FORMAT_VERSION,
            "calibration_id": self.calibration_id,
            "created": self.created,
            "camera": {"serial": self.camera_serial, "width": cam.width, "height": cam.height},
            "intrinsics": {
                "fx": float(cam.fx), "fy": float(cam.fy), "cx": float(cam.cx), "cy": float(cam.cy),
                "dist": [float(d) for d in cam.dist],
            },
            "T_flange_cam": {
                "matrix": [[float(x) for x in row] for row in self.T_flange_cam.matrix],
                "pose_m_rad": [float(x) for x in pose],
                "pose_mm_deg": [float(x) for x in np.concatenate([pose[:3] * 1e3, np.degrees(pose[3:])])],
            },
            "method": self.method,
            "n_views": int(self.n_views),
            "board": dict(self.board),
            "report": _plain(self.report),
        }


def _plain(value: Any) -> Any:
    """Numpy scalars/arrays -> Python types, recursively (so YAML stays readable)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_calibration(calibration: CalibrationFile, path: str | Path) -> Path:
    """Write atomically (temporary file in the same folder, fsync, rename). Returns the path."""
    text = yaml.safe_dump(calibration.to_dict(), sort_keys=False, default_flow_style=None, width=120)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _get(data: dict[str, Any], dotted: str, path: Path) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise CalibrationFileError(f"{path}: missing key '{dotted}'")
        node = node[part]
    return node


def load_calibration(path: str | Path, expected_serial: str | None = None) -> CalibrationFile:
    """Read a calibration file; refuse another format version or (if ``expected_serial``) another camera.

    Every problem -> CalibrationFileError naming the file (and the key, versions or serials involved).
    """
    path = Path(path)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationFileError(f"{path}: calibration file not found") from None
    except yaml.YAMLError as exc:
        raise CalibrationFileError(f"{path}: cannot read calibration file: {describe_yaml_error(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationFileError(f"{path}: cannot read calibration file: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise CalibrationFileError(f"{path}: not a calibration file (expected a mapping of keys)")
    version = data.get("format_version")
    if version is None:
        raise CalibrationFileError(
            f"{path}: no 'format_version' (an older, unversioned calibration file); "
            f"this software reads format {FORMAT_VERSION}: recalibrate with `cell calibrate`"
        )
    if not isinstance(version, int) or isinstance(version, bool):
        raise CalibrationFileError(f"{path}: key 'format_version' = {version!r}: expected an integer")
    if version < FORMAT_VERSION:
        raise CalibrationFileError(
            f"{path}: calibration format version {version} is older than the supported version {FORMAT_VERSION}; "
            "recalibrate with `cell calibrate`"
        )
    if version > FORMAT_VERSION:
        raise CalibrationFileError(
            f"{path}: calibration format version {version} is newer than this software supports "
            f"({FORMAT_VERSION}); update the software"
        )
    serial = str(_get(data, "camera.serial", path))
    if expected_serial is not None and serial != str(expected_serial):
        raise CalibrationFileError(
            f"{path}: calibration is for camera serial {serial!r} but the connected camera is "
            f"{str(expected_serial)!r}; calibrate this camera or use its own file"
        )
    try:
        camera = CameraModel.from_dict(
            {
                "width": _get(data, "camera.width", path),
                "height": _get(data, "camera.height", path),
                **{k: _get(data, f"intrinsics.{k}", path) for k in ("fx", "fy", "cx", "cy", "dist")},
            }
        )
        matrix = np.asarray(_get(data, "T_flange_cam.matrix", path), dtype=float)
        T = Transform(matrix)
        if not np.allclose(T.rotation @ T.rotation.T, np.eye(3), atol=1e-6) or not np.allclose(
            matrix[3], [0, 0, 0, 1]
        ):
            raise CalibrationFileError(f"{path}: key 'T_flange_cam.matrix' is not a rigid transform")
        return CalibrationFile(
            camera_serial=serial,
            camera=camera,
            T_flange_cam=T,
            method=str(_get(data, "method", path)),
            n_views=int(_get(data, "n_views", path)),
            created=str(_get(data, "created", path)),
            board=dict(data.get("board") or {}),
            report=dict(data.get("report") or {}),
            calibration_id=str(_get(data, "calibration_id", path)),
        )
    except CalibrationFileError:
        raise
    except (TypeError, ValueError) as exc:
        raise CalibrationFileError(f"{path}: invalid calibration values: {exc}") from None
