"""Anomaly detectors: images in, scores and maps out. Knows nothing of robots, stores or the CLI.

Public API::

    import detectors
    detectors.available()                      # ['simplenet', ...]
    det = detectors.create("simplenet", image_size=256)
    det.fit(train_set); pred = det.predict(images)   # images (B, 3, H, W) float in [0, 1]
"""
from detectors.base import Detector, Prediction
from detectors.errors import DetectorError
from detectors.registry import available, create, register

__all__ = ["Detector", "DetectorError", "Prediction", "available", "create", "register"]
