"""The picture of a part map: the part's mosaic with the fused scores blended in and each defect outlined and
labelled in millimetres (what ``cell inspect`` stores per part and ``cell eval``'s report shows)."""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from cell.line_result import PartDefect
from cell.overlays import heatmap_overlay
from cell.part_map import PartMap


def part_map_overlay(part_map: PartMap, threshold: float, defects: Optional[Sequence[PartDefect]] = None,
                     *, truth: Optional[np.ndarray] = None, max_side: int = 1200,
                     min_side: int = 720) -> np.ndarray:
    """RGB uint8 (h, w, 3) of the whole part, x to the right and y up as seen from above. Colours: the fused
    score from its lowest value to 1.5 x ``threshold`` (jet); unseen cells black; each defect (default: the
    map's defects at ``threshold``) outlined in white with ``#n (x, y) mm, A mm2``; ``truth`` (rows, cols) bool
    regions outlined in green."""
    fused = part_map.fused
    seen = np.isfinite(fused)
    lo = float(np.min(fused[seen])) if seen.any() else 0.0
    hi = max(float(threshold) * 1.5, lo + 1e-6)
    base = part_map.mosaic if part_map.mosaic is not None else np.full(fused.shape, 128, np.uint8)
    image = heatmap_overlay(base, np.where(seen, fused, lo), vmin=lo, vmax=hi, max_side=max_side)
    zoom = max(1, int(min_side // max(image.shape[:2])))  # a small part is drawn larger, so labels stay legible
    if zoom > 1:
        image = cv2.resize(image, (image.shape[1] * zoom, image.shape[0] * zoom), interpolation=cv2.INTER_NEAREST)
    scale = image.shape[1] / fused.shape[1]
    size = (image.shape[1], image.shape[0])
    unseen = cv2.resize((~seen).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    image[unseen] = 0
    if truth is not None and np.any(truth):
        _outline(image, cv2.resize(truth.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST), (60, 255, 60))
    hot = (seen & (np.nan_to_num(fused, nan=-np.inf) > threshold)).astype(np.uint8)
    _outline(image, cv2.resize(hot, size, interpolation=cv2.INTER_NEAREST), (255, 255, 255))
    for n, d in enumerate(defects if defects is not None else part_map.defects(threshold), start=1):
        row, col = part_map.to_cells(d.x_mm, d.bbox_mm[3])
        x, y = int(col * scale), max(int(row * scale) - 6, 12)
        label = f"#{n} ({d.x_mm:.1f}, {d.y_mm:.1f}) mm, {d.area_mm2:.{1 if d.area_mm2 < 10 else 0}f} mm2"
        cv2.putText(image, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def _outline(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, colour, 2)
