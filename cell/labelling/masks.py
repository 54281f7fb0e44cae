"""Pure mask logic of the labelling app: every edit a user can make, on (H, W) bool arrays, and on
:class:`TypedMask` (a defect type per pixel: what the app edits and stores).

Coordinates are image pixels: ``x`` along the width, ``y`` along the height, the centre of the
top-left pixel at (0, 0). A pixel belongs to a brush stroke when the distance from its centre to the
stroke's polyline is at most ``radius`` (pixels). Nothing is antialiased: every operation returns or
changes a boolean mask, so what is drawn is exactly what is stored. The browser client previews
strokes with the same rule; the server applies the edits with these functions and sends back the
result. Painting (brush, superpixel add, polygon and flood fill) gives the painted pixels the selected
defect type, re-typing pixels of another type; erasing and removing clear pixels whatever their type.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import cv2
import numpy as np

BBox = tuple[int, int, int, int]  # (x0, y0, x1, y1), half-open: columns x0..x1-1, rows y0..y1-1


class MaskEditError(ValueError):
    """An edit's parameters are invalid (empty polygon, seed outside the image, bad radius...)."""


# --- geometry helpers ------------------------------------------------------------------------------
def _as_points(points: Sequence[Sequence[float]] | np.ndarray, name: str = "points") -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
        raise MaskEditError(f"{name} must be a non-empty list of [x, y] pairs, got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise MaskEditError(f"{name} contain a non-finite coordinate")
    return pts


def changed_bbox(before: np.ndarray, after: np.ndarray) -> BBox | None:
    """Smallest box holding every pixel that differs between two (H, W) masks, or None if equal."""
    diff = before != after
    rows = np.flatnonzero(diff.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(diff[rows[0] : rows[-1] + 1].any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks of one shape; 1.0 when both are empty."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes {a.shape} and {b.shape}")
    union = np.count_nonzero(a | b)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(a & b)) / float(union)


# --- brush / eraser --------------------------------------------------------------------------------
def stroke_footprint(shape: tuple[int, int], points: Sequence[Sequence[float]] | np.ndarray, radius: float) -> np.ndarray:
    """Pixels within ``radius`` px of the polyline through ``points`` ((N, 2) x, y), as an (H, W) bool mask.

    One point gives a disc. ``radius`` must be > 0 (0.5 paints exactly the pixel under a point).
    """
    height, width = int(shape[0]), int(shape[1])
    pts = _as_points(points)
    radius = float(radius)
    if not np.isfinite(radius) or radius <= 0 or radius > 4096:
        raise MaskEditError(f"brush radius must be in (0, 4096] px, got {radius}")
    out = np.zeros((height, width), dtype=bool)
    r2 = radius * radius
    segments = [(pts[0], pts[0])] if len(pts) == 1 else list(zip(pts[:-1], pts[1:]))
    for p0, p1 in segments:
        x0 = max(int(np.floor(min(p0[0], p1[0]) - radius)), 0)
        x1 = min(int(np.ceil(max(p0[0], p1[0]) + radius)) + 1, width)
        y0 = max(int(np.floor(min(p0[1], p1[1]) - radius)), 0)
        y1 = min(int(np.ceil(max(p0[1], p1[1]) + radius)) + 1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        qx = np.arange(x0, x1, dtype=np.float64)[None, :]
        qy = np.arange(y0, y1, dtype=np.float64)[:, None]
        dx, dy = p1[0] - p0[0], p1[1] - p0[1]
        length2 = dx * dx + dy * dy
        if length2 > 0:
            t = np.clip(((qx - p0[0]) * dx + (qy - p0[1]) * dy) / length2, 0.0, 1.0)
        else:
            t = np.zeros((y1 - y0, x1 - x0))
        ex = qx - (p0[0] + t * dx)
        ey = qy - (p0[1] + t * dy)
        out[y0:y1, x0:x1] |= ex * ex + ey * ey <= r2
    return out


def apply_region(mask: np.ndarray, region: np.ndarray, value: bool) -> np.ndarray:
    """A new mask: ``mask`` with ``region`` set (value True) or cleared (value False)."""
    if region.shape != mask.shape:
        raise MaskEditError(f"region shape {region.shape} differs from mask shape {mask.shape}")
    return (mask | region) if value else (mask & ~region)


# --- polygon ----------------------------------------------------------------------------------------
def polygon_region(shape: tuple[int, int], points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Filled polygon (vertices rounded to the nearest pixel, 8-connected edges, no antialiasing), (H, W) bool."""
    pts = _as_points(points, "polygon vertices")
    if len(pts) < 3:
        raise MaskEditError(f"a polygon needs at least 3 vertices, got {len(pts)}")
    canvas = np.zeros((int(shape[0]), int(shape[1])), dtype=np.uint8)
    vertices = np.rint(pts).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(canvas, [vertices], 1, lineType=cv2.LINE_8)
    return canvas.astype(bool)


# --- flood fill ---------------------------------------------------------------------------------------
def flood_region(image: np.ndarray, seed: Sequence[float], tolerance: float, limit: np.ndarray | None = None) -> np.ndarray:
    """Pixels 4-connected to ``seed`` (x, y) whose value differs from the seed's by at most ``tolerance``.

    ``image``: (H, W) or (H, W, 3), uint8 or uint16; for colour, every channel must be within tolerance
    (grey levels of the image's own dtype). ``limit`` (H, W) bool, optional: the fill never leaves it.
    Returns (H, W) bool.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise MaskEditError(f"flood fill needs an (H, W) or (H, W, 3) image, got shape {img.shape}")
    height, width = img.shape[:2]
    sx, sy = (int(round(float(v))) for v in seed)
    if not (0 <= sx < width and 0 <= sy < height):
        raise MaskEditError(f"flood seed ({sx}, {sy}) lies outside the {width}x{height} image")
    tolerance = float(tolerance)
    if not np.isfinite(tolerance) or tolerance < 0:
        raise MaskEditError(f"flood tolerance must be >= 0, got {tolerance}")
    work = np.ascontiguousarray(img.astype(np.float32))
    if limit is not None and not limit[sy, sx]:
        return np.zeros((height, width), dtype=bool)
    ff_mask = np.zeros((height + 2, width + 2), dtype=np.uint8)
    if limit is not None:
        ff_mask[1:-1, 1:-1][~limit] = 1  # non-zero mask pixels are walls for cv2.floodFill
    channels = 1 if work.ndim == 2 else work.shape[2]
    diff = (tolerance,) * channels
    flags = 4 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (2 << 8)
    cv2.floodFill(work, ff_mask, (sx, sy), 0, diff, diff, flags)
    return ff_mask[1:-1, 1:-1] == 2


# --- superpixels ------------------------------------------------------------------------------------
def estimate_part_region(image: np.ndarray, min_fraction: float = 0.05) -> np.ndarray:
    """Where the part is in an image, when nothing better is known: (H, W) bool.

    Otsu threshold of the smoothed grey image, keep the side holding the image centre, largest
    connected component, holes filled. When the result covers less than ``min_fraction`` or more than
    ``1 - min_fraction`` of the image (part fills the view, or no contrast), the whole image is the region.
    """
    grey = _grey_uint8(image)
    height, width = grey.shape
    small = cv2.resize(grey, (max(width // 4, 1), max(height // 4, 1)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 3)
    _, binary = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    centre = binary[binary.shape[0] // 2, binary.shape[1] // 2]
    fg = (binary == centre).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=4)
    whole = np.ones((height, width), dtype=bool)
    if n <= 1:
        return whole
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == biggest).astype(np.uint8)
    # fill holes: everything not reachable from the border through background
    inv = 1 - region
    n_bg, bg_labels = cv2.connectedComponents(inv, connectivity=4)
    border = set(np.unique(np.concatenate([bg_labels[0], bg_labels[-1], bg_labels[:, 0], bg_labels[:, -1]])).tolist())
    holes = (inv == 1) & ~np.isin(bg_labels, list(border))
    region = (region == 1) | holes
    fraction = float(region.mean())
    if fraction < min_fraction or fraction > 1.0 - min_fraction:
        return whole
    return cv2.resize(region.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def _grey_uint8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise MaskEditError(f"expected a uint8 or uint16 image, got dtype {img.dtype}")
    return img


def compute_superpixels(
    image: np.ndarray,
    region: np.ndarray | None = None,
    target_size_px: int = 32,
    compactness: float = 0.1,
    max_iter: int = 5,
    work_scale: int | None = None,
) -> np.ndarray:
    """SLIC superpixels of ``image`` restricted to ``region``: (H, W) int32 labels, 0 outside the region.

    ``target_size_px``: the typical superpixel edge length in pixels (the number of segments is the
    region's area over its square). SLIC runs on the region's bounding box, on an image reduced by
    ``work_scale`` (None: 2 above 0.6 megapixels, else 1; labels are scaled back by nearest neighbour,
    so boundaries are ``work_scale``-pixel steps). Labels are then cut to the region and every
    connected piece gets its own id: labels 1..N, each one connected set of region pixels.
    (skimage's own ``mask=`` mode is avoided: it takes tens of seconds on a megapixel image.)
    """
    from skimage.measure import label as connected_label
    from skimage.segmentation import slic

    grey = _grey_uint8(image)
    height, width = grey.shape
    if region is None:
        region = np.ones((height, width), dtype=bool)
    if region.shape != (height, width):
        raise MaskEditError(f"part region shape {region.shape} differs from image shape {(height, width)}")
    if target_size_px < 4:
        raise MaskEditError(f"superpixel size must be >= 4 px, got {target_size_px}")
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return np.zeros((height, width), dtype=np.int32)
    cols = np.flatnonzero(region[rows[0] : rows[-1] + 1].any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = grey[y0:y1, x0:x1]
    if work_scale is None:
        work_scale = 2 if height * width > 600_000 else 1
    work_scale = max(int(work_scale), 1)
    small = crop[::work_scale, ::work_scale] if work_scale > 1 else crop
    if work_scale > 1:
        small = cv2.resize(crop, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
    area = int(np.count_nonzero(region))
    n_segments = max(area // (target_size_px * target_size_px), 1)
    coarse = slic(small, n_segments=n_segments, compactness=compactness, max_num_iter=max_iter,
                  channel_axis=None, start_label=1, enforce_connectivity=True)
    coarse = np.asarray(coarse, dtype=np.int32)
    if work_scale > 1:
        coarse = np.repeat(np.repeat(coarse, work_scale, axis=0), work_scale, axis=1)[: y1 - y0, : x1 - x0]
    labels = np.zeros((height, width), dtype=np.int32)
    labels[y0:y1, x0:x1] = coarse
    labels[~region] = 0
    return connected_label(labels, background=0, connectivity=1).astype(np.int32)


def superpixel_ids_along(labels: np.ndarray, points: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Sorted unique superpixel ids (> 0) crossed by the 1-px-wide path through ``points`` (x, y)."""
    path = stroke_footprint(labels.shape, points, 0.5)
    ids = np.unique(labels[path])
    return ids[ids > 0]


def superpixel_region(
    mask: np.ndarray,
    labels: np.ndarray,
    points: Sequence[Sequence[float]] | np.ndarray,
    value: bool | Literal["toggle"],
) -> tuple[np.ndarray, bool]:
    """The whole superpixels touched by the path ``points`` ((N, 2) x, y), as an (H, W) bool region, and
    whether to add (True) or remove (False) them.

    ``value`` True adds, False removes; ``"toggle"`` removes when the superpixel under the first point
    is already at least half inside ``mask`` (H, W) bool, and adds otherwise.
    """
    if labels.shape != mask.shape:
        raise MaskEditError(f"superpixel labels shape {labels.shape} differs from mask shape {mask.shape}")
    pts = _as_points(points)
    ids = superpixel_ids_along(labels, pts)
    if ids.size == 0:
        return np.zeros(mask.shape, dtype=bool), True
    if value == "toggle":
        fx, fy = int(round(pts[0][0])), int(round(pts[0][1]))
        first = labels[fy, fx] if 0 <= fy < labels.shape[0] and 0 <= fx < labels.shape[1] else 0
        if first > 0:
            members = labels == first
            value = bool(np.count_nonzero(mask & members) * 2 < np.count_nonzero(members))
        else:
            value = True
    return np.isin(labels, ids), bool(value)


def superpixel_edit(
    mask: np.ndarray,
    labels: np.ndarray,
    points: Sequence[Sequence[float]] | np.ndarray,
    value: bool | Literal["toggle"],
) -> np.ndarray:
    """A new mask with the whole superpixels touched by the path ``points`` added or removed.

    ``value`` True adds, False removes; ``"toggle"`` removes when the superpixel under the first point
    is already at least half masked, and adds otherwise (so a click on a masked superpixel clears it).
    """
    region, add = superpixel_region(mask, labels, points, value)
    return apply_region(mask, region, add)


def encode_labels_rgb(labels: np.ndarray) -> np.ndarray:
    """Superpixel labels (H, W) int -> (H, W, 3) uint8 RGB with ``id = R + 256*G + 65536*B``."""
    lab = np.asarray(labels, dtype=np.int64)
    if lab.min(initial=0) < 0 or lab.max(initial=0) >= 1 << 24:
        raise MaskEditError("superpixel labels must lie in [0, 2**24)")
    return np.stack([lab & 255, (lab >> 8) & 255, (lab >> 16) & 255], axis=-1).astype(np.uint8)


def decode_labels_rgb(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_labels_rgb`: (H, W, 3) uint8 -> (H, W) int32."""
    rgb = np.asarray(rgb, dtype=np.int32)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


# --- typed masks: a defect type per region -------------------------------------------------------------
MAX_TYPES = 255


@dataclass(frozen=True)
class TypedMask:
    """A defect mask with a type per pixel: ``labels`` (H, W) uint8, 0 = no defect, ``k`` = ``types[k-1]``.

    Immutable by convention: every edit returns a new TypedMask. The binary mask is ``labels > 0``.
    Two TypedMasks are the same mask when every pixel has the same type name (index order may differ).
    """

    labels: np.ndarray
    types: tuple[str, ...] = ()

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> "TypedMask":
        """No defect anywhere in an (H, W) image."""
        return cls(np.zeros((int(shape[0]), int(shape[1])), dtype=np.uint8), ())

    @classmethod
    def from_mask(cls, mask: np.ndarray, defect_type: str) -> "TypedMask":
        """An (H, W) bool mask whose every pixel has ``defect_type``."""
        labels = np.asarray(mask, dtype=bool).astype(np.uint8)
        return cls(labels, (defect_type,)).compact()

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: the binary mask."""
        return self.labels > 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape  # type: ignore[return-value]

    def with_types(self, extra: Sequence[str]) -> "TypedMask":
        """The same mask with ``extra`` types appended to its list (those not already in it)."""
        more = tuple(t for t in dict.fromkeys(extra) if t not in self.types)
        if len(self.types) + len(more) > MAX_TYPES:
            raise MaskEditError(f"a mask can hold at most {MAX_TYPES} defect types")
        return self if not more else TypedMask(self.labels, self.types + more)

    def labels_in(self, types: Sequence[str]) -> np.ndarray:
        """``labels`` renumbered for the list ``types`` (which holds every type of this mask), (H, W) uint8."""
        types = tuple(types)
        if types[: len(self.types)] == self.types:
            return self.labels
        lut = np.zeros(256, dtype=np.uint8)
        for k, name in enumerate(self.types, start=1):
            lut[k] = types.index(name) + 1
        return cv2.LUT(self.labels, lut)

    def paint(self, region: np.ndarray, defect_type: str) -> "TypedMask":
        """``region`` (H, W) bool gets ``defect_type`` (pixels of another type are re-typed)."""
        if region.shape != self.labels.shape:
            raise MaskEditError(f"region shape {region.shape} differs from mask shape {self.labels.shape}")
        grown = self.with_types([defect_type])
        labels = grown.labels.copy()
        labels[region] = grown.types.index(defect_type) + 1
        return TypedMask(labels, grown.types).compact()

    def erase(self, region: np.ndarray) -> "TypedMask":
        """``region`` (H, W) bool is cleared, whatever its types."""
        if region.shape != self.labels.shape:
            raise MaskEditError(f"region shape {region.shape} differs from mask shape {self.labels.shape}")
        labels = self.labels.copy()
        labels[region] = 0
        return TypedMask(labels, self.types).compact()

    def edit(self, region: np.ndarray, value: bool, defect_type: str) -> "TypedMask":
        """:meth:`paint` ``region`` with ``defect_type`` when ``value``, else :meth:`erase` it."""
        return self.paint(region, defect_type) if value else self.erase(region)

    def overlay(self, other: "TypedMask") -> "TypedMask":
        """This mask with every defect pixel of ``other`` (same shape) painted with its type from ``other``."""
        if other.shape != self.shape:
            raise MaskEditError(f"mask shapes {other.shape} and {self.shape} differ")
        grown = self.with_types(other.types)
        labels = np.where(other.labels > 0, other.labels_in(grown.types), grown.labels).astype(np.uint8)
        return TypedMask(labels, grown.types).compact()

    def retype(self, defect_type: str) -> "TypedMask":
        """Every defect pixel gets ``defect_type``."""
        return TypedMask.from_mask(self.mask, defect_type)

    def compact(self) -> "TypedMask":
        """The same mask with only the types some pixel uses (kept in order, pixels renumbered 1..K)."""
        if not self.types:
            return self
        counts = cv2.calcHist([self.labels], [0], None, [256], [0, 256]).ravel()  # > 0 exactly where present
        used = [k for k in range(1, len(self.types) + 1) if counts[k] > 0]
        if len(used) == len(self.types):
            return self
        lut = np.zeros(256, dtype=np.uint8)
        lut[used] = np.arange(1, len(used) + 1, dtype=np.uint8)
        return TypedMask(cv2.LUT(self.labels, lut), tuple(self.types[k - 1] for k in used))

    def same_as(self, other: "TypedMask") -> bool:
        """True when both masks give every pixel the same type name (or none)."""
        union = self.with_types(other.types).types
        return np.array_equal(self.labels_in(union), other.labels_in(union))


def typed_changed_bbox(before: TypedMask, after: TypedMask) -> BBox | None:
    """Smallest box holding every pixel whose type name (or defect state) differs, or None if none does."""
    union = before.with_types(after.types).types
    return changed_bbox(before.labels_in(union), after.labels_in(union))


def label_runs(labels: np.ndarray) -> list[int]:
    """Run-length code of the type labels of the defect pixels of ``labels`` (h, w) uint8, in row-major
    order: ``[k1, n1, k2, n2, ...]`` (n1 defect pixels of label k1, then n2 of k2...). Pixels without a
    defect are skipped: the binary mask says where the runs go."""
    values = labels[labels > 0]
    if values.size == 0:
        return []
    starts = np.concatenate([[0], np.flatnonzero(np.diff(values)) + 1])
    lengths = np.diff(np.concatenate([starts, [values.size]]))
    return np.stack([values[starts].astype(np.int64), lengths], axis=1).ravel().tolist()


def labels_from_runs(mask: np.ndarray, runs: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`label_runs`: the (h, w) uint8 labels of a (h, w) bool ``mask`` from its runs."""
    runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    if np.any(runs[:, 1] <= 0) or np.any(runs[:, 0] <= 0) or np.any(runs[:, 0] > MAX_TYPES):
        raise MaskEditError(f"type runs need labels in 1..{MAX_TYPES} and positive lengths")
    if int(runs[:, 1].sum()) != int(np.count_nonzero(mask)):
        raise MaskEditError(f"type runs cover {int(runs[:, 1].sum())} pixels, the mask has {int(np.count_nonzero(mask))}")
    out = np.zeros(mask.shape, dtype=np.uint8)
    out[mask] = np.repeat(runs[:, 0], runs[:, 1]).astype(np.uint8)
    return out


# --- undo / redo ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Patch:
    """The pixels one edit changed: the box ``bbox`` (x0, y0, x1, y1) before and after, (h, w) each.

    For bool masks the boxes are bool; for :class:`TypedMask` they are uint8 labels of the type list
    ``types`` (every type of both states), so undo and redo restore the types by name.
    """

    bbox: BBox
    before: np.ndarray
    after: np.ndarray
    types: tuple[str, ...] | None = None

    @classmethod
    def between(cls, before: "np.ndarray | TypedMask", after: "np.ndarray | TypedMask") -> "Patch | None":
        types = None
        if isinstance(before, TypedMask) and isinstance(after, TypedMask):
            types = before.with_types(after.types).types
            before, after = before.labels_in(types), after.labels_in(types)
        box = changed_bbox(before, after)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        return cls(box, before[y0:y1, x0:x1].copy(), after[y0:y1, x0:x1].copy(), types)

    @property
    def nbytes(self) -> int:
        return int(self.before.nbytes + self.after.nbytes)

    def apply(self, mask: "np.ndarray | TypedMask", forward: bool) -> "np.ndarray | TypedMask":
        x0, y0, x1, y1 = self.bbox
        values = self.after if forward else self.before
        if isinstance(mask, TypedMask):
            grown = mask.with_types(self.types or ())
            labels = grown.labels.copy()
            labels[y0:y1, x0:x1] = TypedMask(values, self.types or ()).labels_in(grown.types)
            return TypedMask(labels, grown.types).compact()
        out = mask.copy()
        out[y0:y1, x0:x1] = values
        return out


class EditHistory:
    """Undo and redo stacks of one mask (bool (H, W) arrays or :class:`TypedMask`, one kind per history).

    ``record(before, after)`` after every edit (a new edit clears the redo stack); ``undo(mask)`` and
    ``redo(mask)`` return the mask one step back or forward, or None when there is nothing to undo or
    redo. At most ``max_steps`` edits and ``max_bytes`` of patches are kept (the oldest are dropped).
    """

    def __init__(self, max_steps: int = 200, max_bytes: int = 64 << 20) -> None:
        self.max_steps = max_steps
        self.max_bytes = max_bytes
        self._undo: list[Patch] = []
        self._redo: list[Patch] = []

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()

    def record(self, before: np.ndarray | TypedMask, after: np.ndarray | TypedMask) -> bool:
        """Remember an edit; returns False (and records nothing) when it changed no pixel."""
        patch = Patch.between(before, after)
        if patch is None:
            return False
        self._undo.append(patch)
        self._redo.clear()
        while len(self._undo) > self.max_steps or (
            len(self._undo) > 1 and sum(p.nbytes for p in self._undo) > self.max_bytes
        ):
            self._undo.pop(0)
        return True

    def undo(self, mask: np.ndarray | TypedMask) -> np.ndarray | TypedMask | None:
        if not self._undo:
            return None
        patch = self._undo.pop()
        self._redo.append(patch)
        return patch.apply(mask, forward=False)

    def redo(self, mask: np.ndarray | TypedMask) -> np.ndarray | TypedMask | None:
        if not self._redo:
            return None
        patch = self._redo.pop()
        self._undo.append(patch)
        return patch.apply(mask, forward=True)


# --- wire format -----------------------------------------------------------------------------------------
def pack_bits(mask: np.ndarray) -> bytes:
    """(h, w) bool -> row-major bits, most significant bit first, padded only at the very end."""
    return np.packbits(np.asarray(mask, dtype=bool).ravel(), bitorder="big").tobytes()


def unpack_bits(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`pack_bits` for a mask of ``shape`` (h, w)."""
    count = int(shape[0]) * int(shape[1])
    if len(data) != (count + 7) // 8:
        raise MaskEditError(f"packed mask has {len(data)} bytes, expected {(count + 7) // 8} for shape {tuple(shape)}")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count, bitorder="big")
    return bits.reshape(shape).astype(bool)
