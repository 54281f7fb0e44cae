"""The geometry of the cell: poses and transforms, the camera model, ChArUco boards, intrinsic and
hand-eye calibration, plane homographies. Imports nothing of this project's other packages.

The public names below are imported on first access (PEP 562), so that ``import calibration.errors`` or
``calibration.transforms`` does not also load OpenCV, YAML and the ChArUco machinery.
"""
from __future__ import annotations

import importlib
from typing import Any

from calibration.errors import CalibrationError

_LAZY = {
    "BoardDetection": "calibration.charuco",
    "CharucoBoardSpec": "calibration.charuco",
    "CharucoDetector": "calibration.charuco",
    "CalibrationFile": "calibration.calibration_file",
    "load_calibration": "calibration.calibration_file",
    "save_calibration": "calibration.calibration_file",
    "CameraModel": "calibration.camera_model",
    "Transform": "calibration.transforms",
}

__all__ = [
    "BoardDetection", "CalibrationError", "CalibrationFile", "CameraModel", "CharucoBoardSpec", "CharucoDetector",
    "Transform", "load_calibration", "save_calibration",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'calibration' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
