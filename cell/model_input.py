"""How camera captures become detector inputs, the same way at training and at inspection time.

Two modes, recorded in the model directory (``input.json``) by ``cell train`` and replayed by
``cell eval`` and ``cell inspect``:

* ``resize``: each image is resized to the detector's ``image_size`` square (the MVTec protocol).
* ``tile``: each capture is first scaled by ``scale`` (e.g. 0.25: 1280x1024 -> 320x256), then cut into
  ``image_size`` tiles with ``overlap``; tile maps are stitched back (:func:`detectors.tiling.predict_tiled`)
  and the map is upsampled to the capture's full resolution. This keeps small defects visible on large captures.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from cell.errors import ConfigFileError
from detectors.tiling import predict_tiled, tile_starts

INPUT_FILE = "input.json"


class InputSpec(BaseModel):
    """The preprocessing of captures for one model (see module docstring)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["resize", "tile"] = "resize"
    scale: float = Field(0.25, gt=0.0, le=1.0, description="capture downscale before tiling (tile mode)")
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="tile overlap fraction (tile mode)")

    def save(self, model_dir: Path) -> None:
        (Path(model_dir) / INPUT_FILE).write_text(json.dumps(self.model_dump(), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, model_dir: Path) -> "InputSpec":
        path = Path(model_dir) / INPUT_FILE
        if not path.is_file():
            return cls()
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise ConfigFileError(f"{path}: not a valid input spec ({str(exc).splitlines()[0]})") from None


def to_float_rgb(pixels: np.ndarray) -> torch.Tensor:
    """Capture pixels (H, W) mono or (H, W, 3) RGB, uint8/uint16 -> float tensor (3, H, W) in [0, 1]."""
    array = np.asarray(pixels)
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected (H, W) or (H, W, 3) pixels, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float() / scale


def working_image(pixels: np.ndarray, spec: InputSpec, image_size: int) -> torch.Tensor:
    """The image the detector (or its tiler) sees: (3, h, w) float in [0, 1].

    ``resize``: (3, image_size, image_size). ``tile``: scaled by ``spec.scale`` but never below one tile.
    """
    array = np.asarray(pixels)
    height, width = array.shape[:2]
    if spec.mode == "resize":
        size = (image_size, image_size)
    else:
        factor = max(spec.scale, image_size / min(height, width))
        size = (max(image_size, round(width * factor)), max(image_size, round(height * factor)))
    if (width, height) != size:
        interpolation = cv2.INTER_AREA if size[0] < width else cv2.INTER_LINEAR
        array = cv2.resize(array, size, interpolation=interpolation)
    return to_float_rgb(array)


def working_mask(mask: np.ndarray, spec: InputSpec, image_size: int) -> np.ndarray:
    """A capture's (H, W) bool mask brought to the working image's size (nearest neighbour)."""
    mask = np.asarray(mask, dtype=np.uint8)
    height, width = mask.shape
    if spec.mode == "resize":
        size = (image_size, image_size)
    else:
        factor = max(spec.scale, image_size / min(height, width))
        size = (max(image_size, round(width * factor)), max(image_size, round(height * factor)))
    return cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST).astype(bool)


def training_tiles(image: torch.Tensor, image_size: int, overlap: float) -> list[torch.Tensor]:
    """Cut a working image (3, h, w) into the tiles (3, S, S) the tiler will score at inspection time."""
    _, height, width = image.shape
    return [
        image[:, y : y + image_size, x : x + image_size]
        for y in tile_starts(height, image_size, overlap)
        for x in tile_starts(width, image_size, overlap)
    ]


def score_capture(detector, pixels: np.ndarray, spec: InputSpec) -> tuple[float, np.ndarray]:
    """Score one capture. Returns (image score, anomaly map (H, W) float32 at the capture's resolution)."""
    image_size = int(detector.config.image_size)
    image = working_image(pixels, spec, image_size)[None]
    if spec.mode == "resize":
        prediction = detector.predict(image)
    else:
        prediction = predict_tiled(detector, image, image_size, overlap=spec.overlap)
    height, width = np.asarray(pixels).shape[:2]
    anomaly_map = prediction.anomaly_map[0]
    if anomaly_map.shape != (height, width):
        anomaly_map = cv2.resize(anomaly_map, (width, height), interpolation=cv2.INTER_LINEAR)
    return float(prediction.score[0]), anomaly_map.astype(np.float32)
