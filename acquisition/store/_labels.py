"""Per-region defect types of a stored mask: validation of a type label map and the masks row's type.

A type label map is an (H, W) uint8 array: 0 = no defect, ``k`` = the region's defect type ``types[k-1]``.
The binary mask of the same revision is exactly ``labels > 0``.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from acquisition.errors import StoreError
from acquisition.store._files import check_name
from acquisition.store._schema import COMBINED_TYPE

#: At most this many types in one mask (the label map is 8-bit).
MAX_TYPES = 255


def normalize_labels(labels: np.ndarray, types: Sequence[str], what: str) -> tuple[np.ndarray, list[str], int]:
    """Validate a type label map and its types, and drop the types that no pixel uses.

    ``labels``: (H, W) integer array with values in 0..len(types). ``types``: distinct defect type names
    (safe names, see :func:`~acquisition.store._files.check_name`). ``what`` names the mask in errors.
    Returns ``(labels (H, W) uint8, types present, defect pixel count)``: the kept types in their given
    order, the pixels renumbered 1..K to match. Anything invalid raises StoreError naming ``what``.
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise StoreError(f"{what}: a type label map must be a 2-D (H, W) array, got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise StoreError(f"{what}: a type label map must hold integers (0 = no defect, k = types[k-1]), got dtype {arr.dtype}")
    names = list(types)
    for name in names:
        check_name("defect type", name)
    if len(set(names)) != len(names):
        raise StoreError(f"{what}: defect types {names} contain a duplicate")
    if len(names) > MAX_TYPES:
        raise StoreError(f"{what}: {len(names)} defect types, at most {MAX_TYPES} per mask")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > len(names)):
        raise StoreError(
            f"{what}: type label map values must lie in 0..{len(names)} (one per type of {names}), "
            f"got {int(arr.min())}..{int(arr.max())}"
        )
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    present = label_histogram(arr) > 0
    used = [k for k in range(1, len(names) + 1) if present[k]]
    area = int(np.count_nonzero(arr))
    if len(used) == len(names):
        return arr, names, area
    lut = np.zeros(256, dtype=np.uint8)
    lut[used] = np.arange(1, len(used) + 1, dtype=np.uint8)
    return cv2.LUT(arr, lut), [names[k - 1] for k in used], area


def label_histogram(labels: np.ndarray) -> np.ndarray:
    """Pixel counts (256,) float32 of each value of a (H, W) uint8 label map (exact up to 2**24 per value,
    and always > 0 for a value present; cv2.calcHist is several times faster than np.bincount here)."""
    return cv2.calcHist([np.ascontiguousarray(labels, dtype=np.uint8)], [0], None, [256], [0, 256]).ravel()


def row_defect_type(types: Sequence[str], empty_type: str) -> str:
    """The masks row's defect type: the one type, ``combined`` for several, ``empty_type`` for none."""
    if not types:
        return empty_type
    return types[0] if len(types) == 1 else COMBINED_TYPE
