"""Scoring captures larger than a detector's input: overlapping tiles, batched, maps stitched back.

A (B, 3, H, W) batch is cut into ``tile_size`` x ``tile_size`` tiles whose starts step by
``round(tile_size * (1 - overlap))`` along each axis, the last tile aligned with the border so the tiles cover
every pixel. Tiles go through ``detector.predict`` ``batch_size`` at a time; each tile's map is added into
a full-resolution (B, H, W) accumulator and divided by how many tiles covered each pixel. The image score
is the maximum of the stitched map (the MVTec convention), not the maximum of the tile scores.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from detectors.base import Prediction
from detectors.errors import DetectorConfigError, ImageSetError
from detectors.imagesets import check_images


def tile_starts(length: int, tile_size: int, overlap: float) -> list[int]:
    """Start offsets (px) of tiles of ``tile_size`` covering ``length`` px with ``overlap`` (fraction in [0, 1)).

    Raises :class:`ImageSetError` when ``length < tile_size``.
    """
    if length < tile_size:
        raise ImageSetError(f"image side of {length} px is smaller than the tile size {tile_size} px")
    step = max(1, int(round(tile_size * (1.0 - overlap))))
    starts = list(range(0, length - tile_size + 1, step))
    if starts[-1] != length - tile_size:
        starts.append(length - tile_size)
    return starts


def predict_tiled(
    detector: Any,
    images: torch.Tensor,
    tile_size: int,
    overlap: float = 0.25,
    batch_size: int = 16,
) -> Prediction:
    """Score ``images`` (B, 3, H, W) float in [0, 1], with H, W >= ``tile_size``, tile by tile.

    Returns a :class:`Prediction` with ``anomaly_map`` (B, H, W) float32 (tile maps averaged where tiles
    overlap) and ``score`` (B,) = max of each stitched map. ``detector``: anything with
    ``predict(tiles (n, 3, tile_size, tile_size)) -> Prediction`` whose maps are (n, tile_size, tile_size).
    Raises :class:`DetectorConfigError` for bad tile parameters, :class:`ImageSetError` for bad images.
    """
    images = check_images(images)
    if int(tile_size) < 1:
        raise DetectorConfigError(f"tile_size must be >= 1 px, got {tile_size}")
    if not 0.0 <= float(overlap) < 1.0:
        raise DetectorConfigError(f"tile overlap must be in [0, 1), got {overlap}")
    if int(batch_size) < 1:
        raise DetectorConfigError(f"batch_size must be >= 1, got {batch_size}")
    tile_size, batch_size = int(tile_size), int(batch_size)
    b, _, height, width = images.shape
    ys = tile_starts(height, tile_size, overlap)
    xs = tile_starts(width, tile_size, overlap)
    positions = [(i, y, x) for i in range(b) for y in ys for x in xs]

    total = np.zeros((b, height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    for y in ys:
        for x in xs:
            count[y : y + tile_size, x : x + tile_size] += 1.0
    for start in range(0, len(positions), batch_size):
        chunk = positions[start : start + batch_size]
        tiles = torch.stack([images[i, :, y : y + tile_size, x : x + tile_size] for i, y, x in chunk])
        maps = detector.predict(tiles).anomaly_map
        if maps.shape != (len(chunk), tile_size, tile_size):
            raise DetectorConfigError(
                f"detector returned tile maps of shape {maps.shape}, expected {(len(chunk), tile_size, tile_size)}"
            )
        for (i, y, x), tile_map in zip(chunk, maps):
            total[i, y : y + tile_size, x : x + tile_size] += tile_map
    stitched = (total / count).astype(np.float32)
    return Prediction(score=stitched.reshape(b, -1).max(axis=1), anomaly_map=stitched)
