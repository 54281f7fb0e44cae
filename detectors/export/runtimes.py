"""The optional runtime packages (``pip install '.[export]'``), imported on first use.

``require(package, why)`` imports ``onnx`` / ``onnxruntime`` / ``openvino`` / ``onnxscript`` or raises
:class:`RuntimeMissing` naming the package and the extra that installs it; ``versions()`` reports what is
installed (recorded in every manifest).
"""
from __future__ import annotations

import importlib
from importlib import metadata
from types import ModuleType
from typing import Optional

from detectors.export.errors import RuntimeMissing

#: import name -> distribution name on PyPI
PACKAGES = {"onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime", "openvino": "openvino"}
INSTALL_HINT = "pip install '.[export]'"


def require(package: str, why: str) -> ModuleType:
    """Import ``package`` (a key of :data:`PACKAGES`); ``why`` says what needs it ("ONNX export",
    "--runtime openvino"). Raises :class:`RuntimeMissing`: ``"<why> needs the Python package '<dist>', which
    is not installed (pip install '.[export]')"``."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or package
        dist = PACKAGES.get(package, package)
        detail = "" if missing in (package, dist) else f" (import of '{missing}' failed)"
        raise RuntimeMissing(
            f"{why} needs the Python package '{dist}', which is not installed{detail} ({INSTALL_HINT})"
        ) from None


def version(dist: str) -> Optional[str]:
    """The installed version of distribution ``dist``, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Optional[str]]:
    """``{"torch": ..., "onnx": ..., "onnxscript": ..., "onnxruntime": ..., "openvino": ...}`` (None: absent)."""
    return {dist: version(dist) for dist in ("torch", *PACKAGES.values())}
