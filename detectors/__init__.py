"""Anomaly detectors: images in, scores and maps out. Knows nothing of robots, stores or the CLI.

Public API::

    import detectors
    detectors.available()                      # ['simplenet', ...]
    det = detectors.create("simplenet", image_size=256)
    det.fit(train_set); pred = det.predict(images)   # images (B, 3, H, W) float in [0, 1]
    model = detectors.load_model("models/sn")   # a trained model directory: .detector, .spec, .threshold
"""
from __future__ import annotations

import importlib
from typing import Any

from detectors.errors import DetectorError

#: Public name -> defining module, imported on first access (PEP 562) so that importing
#: ``detectors.errors`` (as the CLI does for its error handling) does not import torch.
_LAZY = {
    "Detector": "detectors.base", "DetectorConfig": "detectors.base", "Prediction": "detectors.base",
    "available": "detectors.registry", "create": "detectors.registry", "register": "detectors.registry",
    "load_model": "detectors.model_dir", "TrainedModel": "detectors.model_dir",
}

__all__ = [
    "Detector", "DetectorConfig", "DetectorError", "Prediction", "TrainedModel", "available", "create", "load_model",
    "register",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'detectors' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
