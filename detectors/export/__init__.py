"""Exported models: a fitted detector's whole inference path on ONNX Runtime and OpenVINO, with parity.

Public API::

    from detectors.export import export_model, load_exported, resolve_exported
    manifest = export_model(detector, "models/simplenet/exported/onnx", "onnx")   # atomic, parity-checked
    runner = load_exported("models/simplenet/exported/onnx")                        # onnxruntime session
    prediction = runner.predict(images)          # (B, 3, S, S) in [0, 1] -> Prediction(score, anomaly_map)

Lower level: :func:`export_onnx` (one .onnx file), :func:`export_openvino` (model.xml + model.bin). The
runtime packages are optional (``pip install '.[export]'``); a missing one is a :class:`RuntimeMissing`
naming it. Nothing here imports :mod:`cell`.
"""
from __future__ import annotations

import importlib
from typing import Any

from detectors.export.errors import ExportError, RuntimeMissing

_LAZY = {
    "export_model": "detectors.export.directory", "resolve_exported": "detectors.export.directory",
    "default_out": "detectors.export.directory",
    "export_onnx": "detectors.export.onnx_export", "export_openvino": "detectors.export.openvino_export",
    "load_exported": "detectors.export.runner", "ExportedModel": "detectors.export.runner",
    "RUNTIMES": "detectors.export.runner", "FORMATS": "detectors.export.manifest",
    "read_manifest": "detectors.export.manifest",
}

__all__ = ["ExportError", "RuntimeMissing", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'detectors.export' has no attribute {name!r}")
