"""The ONE way a capture (or an image file) becomes a detector's input, for every caller.

``cell train`` / ``cell eval`` / ``cell inspect``, the labeller's review mode and ``benchmarks.bench_detectors``
all go through these functions, so a model sees the same pixels wherever it runs. A model directory records
the :class:`InputSpec` it was trained with (``input.json``, read and written by :mod:`detectors.model_dir`).

Two modes:

* ``resize``: each image is resized to the detector's ``image_size`` square (the MVTec protocol).
* ``tile``: each capture is first scaled by ``scale`` (e.g. 0.25: 1280x1024 -> 320x256; never below one
  tile), then cut into ``image_size`` tiles with ``overlap``; tile maps are stitched back
  (:func:`detectors.tiling.predict_tiled`). This keeps small defects visible on large captures.

The path, step by step: pixels (H, W) mono or (H, W, 3) RGB, uint8 / uint16 / float in [0, 1]
-> float32 (3, H, W) in [0, 1] (:func:`detectors.imagesets.to_image_tensor`, so a uint16 capture keeps its
precision) -> :func:`resize_for_model` to the working size -> the detector (whole image or tiles). Masks go to
the working size by nearest neighbour (:func:`detectors.imagesets.resize_mask`). :func:`score_capture` brings
the map back to the capture's resolution by bilinear interpolation.

**Which resize** (:data:`RESIZE`): OpenCV's area interpolation (``cv2.INTER_AREA``) on float32 pixels when
shrinking, bilinear when enlarging. Chosen by measurement (``benchmarks/bench_input_prep.py``: CFA,
``configs/detectors/cfa.yaml`` with 2 epochs, trained and tested once per resize on ``../shared/data/bottle``
brought from its stored 256 px to 128 px): area gave image / pixel AUROC 0.9952 / 0.9678, torch's antialiased
bilinear (``F.interpolate(..., antialias=True)``, what the benchmark used before) 0.9929 / 0.9673: equal
within the benchmark's 0.005, and area resized in 41 ms per image against 116 ms (medians, load average
18-20 on 2 shared cores), so the rule "the faster when equal" picks area. On ``../shared/data/magnetic_tile``
(128 px, first 200 training files) torch's was ahead on pixel AUROC by 0.006 (0.7478 vs 0.7419, one seed,
image AUROC equal), just past the tolerance: area is kept as twice as fast, and the question is open (see the
README's "The model directory and the one input path" section for both tables).
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from detectors.errors import ImageSetError
from detectors.imagesets import (ImageSet, InMemoryImageSet, MVTecImageSet, integer_to_float, resize_mask, rgb_pixels,
                                 to_image_tensor)

#: Name of the resize every caller uses (recorded in benchmark results): see the module docstring.
RESIZE = "cv2_area"


class InputSpec(BaseModel):
    """How captures become inputs of one model (see the module docstring). Stored as ``input.json``."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["resize", "tile"] = "resize"
    scale: float = Field(0.25, gt=0.0, le=1.0, description="capture downscale before tiling (tile mode)")
    overlap: float = Field(0.25, ge=0.0, lt=1.0, description="tile overlap fraction (tile mode)")

    def working_size(self, height: int, width: int, image_size: int) -> tuple[int, int]:
        """(h, w) in px of the image the detector (or its tiler) sees for a (height, width) capture.

        ``resize``: (image_size, image_size). ``tile``: the capture scaled by ``scale``, but never a side below
        ``image_size`` (a capture smaller than one tile is enlarged to one tile).
        """
        if self.mode == "resize":
            return image_size, image_size
        factor = max(self.scale, image_size / min(height, width))
        return max(image_size, round(height * factor)), max(image_size, round(width * factor))


def resize_for_model(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] -> (3, h, w) float32 in [0, 1]: ``cv2.INTER_AREA`` when shrinking a side,
    ``cv2.INTER_LINEAR`` otherwise (area interpolation equals bilinear when enlarging). ``size`` = (h, w) px.
    The same image at the same size is returned unchanged."""
    if tuple(image.shape[-2:]) == (int(size[0]), int(size[1])):
        return image
    return _resize_pixels(np.ascontiguousarray(image.detach().cpu().permute(1, 2, 0).numpy(), dtype=np.float32), size)


def _resize_pixels(array: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) float32 C-contiguous in [0, 1] -> (3, h, w) float32 in [0, 1], as :func:`resize_for_model`
    (the resize itself, on the HWC layout OpenCV works on; clamped with NumPy on one thread)."""
    height, width = int(size[0]), int(size[1])
    if array.shape[:2] == (height, width):
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()
    shrinking = height < array.shape[0] or width < array.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(array, (width, height), interpolation=interpolation)
    return torch.from_numpy(np.clip(out.transpose(2, 0, 1), 0.0, 1.0, order="C"))


def working_image(pixels: Any, spec: InputSpec, image_size: int) -> torch.Tensor:
    """The image the detector (or its tiler) sees: (3, h, w) float32 in [0, 1], (h, w) from
    :meth:`InputSpec.working_size`.

    ``pixels``: (H, W) / (H, W, 1) mono or (H, W, 3) RGB array, uint8, uint16 or float in [0, 1], or a
    (3, H, W) float tensor in [0, 1] (an :class:`~detectors.imagesets.ImageSet` sample). Bad pixels raise a
    one-line :class:`~detectors.errors.ImageSetError`.

    Integer pixels (what cameras deliver) are converted and resized in their (H, W, 3) layout, without the
    (3, H, W) tensor of the whole capture and its transposes (the same values: per pixel the same
    conversion, the same resize; tests/detectors/test_input_prep.py checks they are equal).
    """
    if not isinstance(pixels, torch.Tensor):
        array = rgb_pixels(pixels, source="capture")
        if array.dtype in (np.uint8, np.uint16):
            size = spec.working_size(int(array.shape[0]), int(array.shape[1]), int(image_size))
            return _resize_pixels(integer_to_float(array), size)
    image = _as_float_image(pixels)
    size = spec.working_size(int(image.shape[1]), int(image.shape[2]), int(image_size))
    return resize_for_model(image, size)


def working_mask(mask: Any, spec: InputSpec, image_size: int) -> np.ndarray:
    """A capture's (H, W) bool mask brought to the working image's size: (h, w) bool (nearest neighbour)."""
    mask = torch.as_tensor(np.asarray(mask, dtype=bool))
    if mask.ndim != 2:
        raise ImageSetError(f"mask: expected shape (H, W), got {tuple(mask.shape)}")
    size = spec.working_size(int(mask.shape[0]), int(mask.shape[1]), int(image_size))
    return resize_mask(mask, size).numpy()


def training_tiles(image: torch.Tensor, image_size: int, overlap: float) -> list[torch.Tensor]:
    """Cut a working image (3, h, w) into the tiles (3, S, S) the tiler will score at inspection time."""
    from detectors.tiling import tile_starts

    _, height, width = image.shape
    return [
        image[:, y : y + image_size, x : x + image_size]
        for y in tile_starts(height, image_size, overlap)
        for x in tile_starts(width, image_size, overlap)
    ]


def fit_inputs(pixels: Any, spec: InputSpec, image_size: int) -> list[torch.Tensor]:
    """The training inputs one capture gives: ``[working image]`` (resize mode) or its tiles (tile mode),
    each (3, image_size, image_size) float32 in [0, 1]."""
    image = working_image(pixels, spec, image_size)
    if spec.mode == "tile":
        return training_tiles(image, image_size, spec.overlap)
    return [image]


def score_working(detector: Any, pixels: Any, spec: InputSpec) -> tuple[float, np.ndarray]:
    """Score one capture at the working resolution: (image score, anomaly map (h, w) float32).

    ``detector``: a fitted :class:`~detectors.base.Detector` (its ``config.image_size`` sets the input size).
    This is the map the pixel metrics of ``cell eval`` and the benchmark are computed on.
    """
    from detectors.tiling import predict_tiled

    image_size = int(detector.config.image_size)
    image = working_image(pixels, spec, image_size)[None]
    if spec.mode == "resize":
        prediction = detector.predict(image)
    else:
        prediction = predict_tiled(detector, image, image_size, overlap=spec.overlap)
    return float(prediction.score[0]), np.asarray(prediction.anomaly_map[0], dtype=np.float32)


def to_capture_size(anomaly_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """A working-resolution map (h, w) -> (height, width) float32 by bilinear interpolation."""
    anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
    if anomaly_map.shape != (height, width):
        anomaly_map = cv2.resize(anomaly_map, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
    return anomaly_map


def score_capture(detector: Any, pixels: Any, spec: InputSpec) -> tuple[float, np.ndarray]:
    """Score one capture: (image score, anomaly map (H, W) float32 at the capture's resolution)."""
    score, anomaly_map = score_working(detector, pixels, spec)
    height, width = _pixel_size(pixels)
    return score, to_capture_size(anomaly_map, height, width)


def prepare_imageset(images: ImageSet, spec: InputSpec, image_size: int) -> InMemoryImageSet:
    """An image set read at its files' own size (e.g. ``MVTecImageSet(root, split, image_size=None)``) brought
    to the working size through this module's path: images and masks, with labels, defect types, sources
    and hashes kept. Resize mode only (a tiled set has several inputs per image: use :func:`fit_inputs`).
    Holds the prepared set in memory (N x 3 x S x S float32)."""
    if spec.mode != "resize":
        raise ImageSetError(f"{images.describe()}: prepare_imageset needs input mode 'resize', got {spec.mode!r}")
    prepared, masks, labels, types, sources, hashes = [], [], [], [], [], []
    for sample in images:
        prepared.append(working_image(sample.image, spec, image_size))
        masks.append(None if sample.mask is None else torch.from_numpy(working_mask(sample.mask, spec, image_size)))
        labels.append(sample.label)
        types.append(sample.defect_type)
        sources.append(sample.source)
        hashes.append(sample.sha256)
    return InMemoryImageSet(prepared, masks=masks, labels=labels, sources=sources, defect_types=types, sha256s=hashes)


def prepared_mvtec_split(root: Any, split: str, image_size: int) -> InMemoryImageSet:
    """``root/<split>`` of an MVTec-layout folder prepared as ``cell train`` / ``cell eval`` prepare it (resize
    mode): files decoded at their own size, then :func:`prepare_imageset`. What the benchmarks score."""
    files = MVTecImageSet(root, split, image_size=None, cache=False)
    return prepare_imageset(files, InputSpec(mode="resize"), image_size)


def _as_float_image(pixels: Any) -> torch.Tensor:
    if isinstance(pixels, torch.Tensor):
        if pixels.ndim != 3 or pixels.shape[0] != 3 or not pixels.is_floating_point():
            raise ImageSetError(f"image: expected a (3, H, W) float tensor, got {tuple(pixels.shape)} {pixels.dtype}")
        return pixels.detach().float()
    return to_image_tensor(pixels, source="capture")


def _pixel_size(pixels: Any) -> tuple[int, int]:
    if isinstance(pixels, torch.Tensor):
        return int(pixels.shape[-2]), int(pixels.shape[-1])
    shape: Sequence[int] = np.shape(pixels)
    return int(shape[0]), int(shape[1])
