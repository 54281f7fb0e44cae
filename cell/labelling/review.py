"""Review mode: a trained model's anomaly maps next to the labels, and the largest disagreements first.

A :class:`ScoreProvider` turns an image into an anomaly map at the image's resolution and holds the
decision threshold. :class:`DetectorScoreProvider` wraps a model directory written by ``cell train``
(:func:`detectors.model_dir.load_model`: detector, input spec, ``threshold.json``). :func:`disagreement` compares the
thresholded map with a mask; the app ranks captures by it so the user can jump to likely label errors
(predicted defect where nothing is masked) and misses (masked defect the model does not flag).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np


class ReviewError(ValueError):
    """A model directory or its threshold cannot be used for review (the message names the file)."""


@runtime_checkable
class ScoreProvider(Protocol):
    """Anomaly maps for review. ``threshold``: map values above it are predicted defect."""

    name: str
    threshold: float

    def anomaly_map(self, image: np.ndarray) -> np.ndarray:
        """``image`` (H, W) or (H, W, 3) uint8/uint16 -> anomaly map (H, W) float32, same H, W."""
        ...


@dataclass(frozen=True)
class Disagreement:
    """How a thresholded prediction and a mask differ on one capture (pixel counts)."""

    capture_id: int
    false_positive_px: int  # predicted defect, not masked
    false_negative_px: int  # masked, not predicted
    max_score: float

    @property
    def total_px(self) -> int:
        return self.false_positive_px + self.false_negative_px

    def as_dict(self) -> dict:
        return {
            "capture_id": self.capture_id,
            "false_positive_px": self.false_positive_px,
            "false_negative_px": self.false_negative_px,
            "total_px": self.total_px,
            "max_score": self.max_score,
        }


def disagreement(capture_id: int, anomaly_map: np.ndarray, threshold: float, mask: np.ndarray | None) -> Disagreement:
    """Compare ``anomaly_map > threshold`` with ``mask`` (None = nothing masked); both (H, W)."""
    predicted = np.asarray(anomaly_map) > threshold
    truth = np.zeros_like(predicted) if mask is None else np.asarray(mask, dtype=bool)
    if truth.shape != predicted.shape:
        raise ReviewError(f"capture {capture_id}: anomaly map {predicted.shape} and mask {truth.shape} differ in shape")
    return Disagreement(
        capture_id=int(capture_id),
        false_positive_px=int(np.count_nonzero(predicted & ~truth)),
        false_negative_px=int(np.count_nonzero(truth & ~predicted)),
        max_score=float(np.max(anomaly_map)) if anomaly_map.size else 0.0,
    )


def rank_disagreements(items: list[Disagreement]) -> list[Disagreement]:
    """Largest disagreement first (ties: higher max score first, then capture id)."""
    return sorted(items, key=lambda d: (-d.total_px, -d.max_score, d.capture_id))


def heatmap_rgba(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """Colour an anomaly map for overlay: (H, W, 4) uint8 RGBA, JET colours scaled so that the threshold
    sits at the middle of the scale, alpha growing with the score (transparent at the map's minimum)."""
    amap = np.asarray(anomaly_map, dtype=np.float32)
    lo = float(np.min(amap)) if amap.size else 0.0
    hi = max(float(np.max(amap)) if amap.size else 1.0, 2.0 * threshold - lo, lo + 1e-6)
    norm = np.clip((amap - lo) / (hi - lo), 0.0, 1.0)
    grey = (norm * 255).astype(np.uint8)
    bgr = cv2.applyColorMap(grey, cv2.COLORMAP_JET)
    rgba = np.empty(amap.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = bgr[..., ::-1]
    rgba[..., 3] = (norm * 200).astype(np.uint8)
    return rgba


class DetectorScoreProvider:
    """Anomaly maps from a model directory written by ``cell train``.

    The capture is scored exactly as ``cell inspect`` scores it (:func:`detectors.input_prep.score_capture`
    with the directory's ``input.json``), and the decision threshold is ``threshold.json``'s value
    (:func:`detectors.model_dir.load_model`); a pixel is predicted defect when its map value exceeds it.
    """

    def __init__(self, model_dir: str | Path) -> None:
        from detectors.model_dir import load_model

        model = load_model(model_dir, device="auto")
        self.model_dir = model.directory
        self.detector, self.spec, self.threshold = model.detector, model.spec, float(model.threshold.value)
        self.name = f"{getattr(self.detector, 'name', 'model')} ({self.model_dir.name})"

    def anomaly_map(self, image: np.ndarray) -> np.ndarray:
        import torch

        from detectors.input_prep import score_capture

        with torch.no_grad():
            _, amap = score_capture(self.detector, image, self.spec)
        return np.asarray(amap, dtype=np.float32)
