"""The real UR backend: :class:`URRobot` on ur_rtde, port probes, and a fake controller for tests.

The public names are imported on first access (PEP 562): the fake controller and the port probes do not
load ur_rtde.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "URRobot": "acquisition.ur.robot",
    "URRobotConfig": "acquisition.ur.robot",
    "probe_controller": "acquisition.ur.probe",
}

__all__ = ["URRobot", "URRobotConfig", "probe_controller"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'acquisition.ur' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
