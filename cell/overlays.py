"""Heatmap overlays for people: an anomaly map blended over its image, the truth mask outlined."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np


def heatmap_overlay(
    pixels: np.ndarray,
    anomaly_map: np.ndarray,
    mask: Optional[np.ndarray] = None,
    *,
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    alpha: float = 0.45,
    max_side: int = 640,
) -> np.ndarray:
    """RGB uint8 (h, w, 3): the image with the map (jet colours, ``vmin``..``vmax``) blended in and the truth
    ``mask`` (H, W) bool outlined in white. Downscaled so the longer side is at most ``max_side`` px.

    ``pixels``: (H, W) or (H, W, 3) uint8/uint16; ``anomaly_map``: (H, W) float at the same resolution.
    """
    image = np.asarray(pixels)
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    amap = cv2.resize(np.asarray(anomaly_map, dtype=np.float32), size, interpolation=cv2.INTER_LINEAR)
    lo = float(np.min(amap)) if vmin is None else vmin
    hi = float(np.max(amap)) if vmax is None else vmax
    norm = np.clip((amap - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    colours = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    blended = cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0)
    if mask is not None and np.any(mask):
        small = cv2.resize(np.asarray(mask, dtype=np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(blended, contours, -1, (255, 255, 255), 1)
    return blended


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB uint8 image as PNG bytes."""
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(rgb))
    return path
