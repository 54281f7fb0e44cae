"""The part map: every scored view of a part projected onto one grid on the part, fused, and its defects in mm.

Each view's anomaly map is resampled onto a :class:`~calibration.plane_projection.PlaneGrid` over the part
(cell ``cell_mm``, default 0.5 mm) with the camera model and camera-on-flange transform in force and the
view's ACTUAL TCP pose (:mod:`calibration.plane_projection`). The views that see a cell are fused by one rule:

* ``max``: the highest view (what judging each image alone amounts to: one bad view rejects the part);
* ``mean`` / ``median``: the average / median of the views;
* ``kth``: the ``k``-th highest view (a cell seen by fewer than ``k`` views takes its lowest view), so a
  defect must show in ``k`` views, while a false alarm of one view (its border, a glint) is outvoted.

Coverage: only cells inside the part's outline count, and only views that see them. The outline is the plan's
part rectangle (``part_size_m`` centred on ``part_center_pose``), not detected from the images: a production
line knows the format of its parts, the rectangle never fails on a dark defect at the sheet edge or on a glint
that a segmentation would have to reject, and placement jitter (a few mm) is what the plan's margin is for.
The table around the part is never part of the map; a part whose outline was not fully seen is not judged
(:attr:`PartMap.coverage` < ``min_coverage``: the inspection records ``error``).

Defects: connected regions (8-neighbourhood) of covered cells whose fused score exceeds the part threshold,
each with its centroid, area, bounding box in mm in the part frame, its peak and the poses that saw it.

The accumulator is incremental (:meth:`PartMapAccumulator.add` per scored pose, :meth:`~PartMapAccumulator.finish`
after the last), so a worker can feed it while the robot moves on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Sequence

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from calibration.camera_model import CameraModel
from calibration.plane_projection import GridPatch, PlaneGrid, sample_onto_grid
from calibration.transforms import Transform
from cell.errors import CellError
from cell.line_result import PartDefect

FUSION_RULES = ("max", "mean", "median", "kth")
#: where a defect's ``x_mm``, ``y_mm`` lie (its region is always the connected cells above the threshold):
#: ``region``: the region's centroid; ``peak_weighted``: weighted by each cell's height above the threshold;
#: ``core``: the centroid of the region's cells at least halfway from the threshold to its peak
CENTROIDS = ("region", "peak_weighted", "core")


class PartMapError(CellError):
    """A part map cannot be made: a non-finite map (a model fault), a view of the wrong size, no views."""


class PartMapConfig(BaseModel):
    """How the views of a part become its map (stored with the part threshold, which is only valid for it)."""

    model_config = ConfigDict(extra="forbid")

    cell_mm: float = Field(0.5, ge=0.05, le=10.0, description="edge of a grid cell on the part, mm")
    # default by measurement on selection parts (defective sheets of another seed, never the test set;
    # benchmarks/bench_parts.py --select-parts, README "Part maps"): mean missed no selection part on either plan,
    # max and kth missed one demo part each (a faint 105 mm2 defect that every view shows a little)
    fusion: Literal["max", "mean", "median", "kth"] = Field("mean", description="how the views of a cell are fused")
    k: int = Field(2, ge=1, le=50, description="fusion kth: the k-th highest view of a cell")
    border_px: float = Field(0.0, ge=0.0, le=500.0, description="camera pixels at each image edge that do not count")
    edge_mm: float = Field(0.0, ge=0.0, le=100.0, description="band inside the outline's edge that is not judged "
                           "(placement tolerance of the part; 0: the whole outline)")
    min_coverage: float = Field(0.999, gt=0.0, le=1.0, description="share of the outline that must be seen")
    # default by the same measurement: peak_weighted had the lowest median centroid error of mean's regions
    centroid: Literal["region", "peak_weighted", "core"] = Field(
        "peak_weighted", description="where a defect's x_mm, y_mm lie within its region (see CENTROIDS)")

    def describe(self) -> str:
        return f"kth (k={self.k})" if self.fusion == "kth" else self.fusion


@dataclass(frozen=True)
class PoseResult:
    """What scoring one pose yields (the interface between the scoring worker and the part map).

    ``anomaly_map`` (h, w) float: the detector's map over the whole frame, at any resolution (h, w) of the same
    field of view; ``tcp_pose`` (6,): the ACTUAL TCP pose ``[x, y, z, rx, ry, rz]`` (m, rad) the frame was
    taken at; ``frame_size``: the frame's (height, width) in pixels.
    """

    pose_id: str
    score: float
    anomaly_map: np.ndarray
    tcp_pose: np.ndarray
    frame_size: tuple[int, int]


@dataclass(frozen=True)
class PartFrame:
    """The part's frame ``T_base_part`` (origin at the part centre, z up, on its surface) and its outline
    ``size_m`` = (width along x, height along y), metres: from the plan (``part_center_pose``, ``part_size_m``)."""

    T_base_part: Transform
    size_m: tuple[float, float]

    @classmethod
    def from_plan(cls, plan: Any) -> "PartFrame":
        """From a :class:`acquisition.plan.PlanConfig` or its stored dict form (a campaign's ``plan`` key)."""
        get = plan.get if isinstance(plan, Mapping) else lambda key: getattr(plan, key, None)
        pose, size = get("part_center_pose"), get("part_size_m")
        try:
            T = Transform.from_pose(np.asarray(pose, dtype=float))
            width, height = (float(v) for v in size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise PartMapError(f"plan: part_center_pose {pose!r} / part_size_m {size!r} are not a pose and a size") from None
        if not (width > 0 and height > 0 and math.isfinite(width) and math.isfinite(height)):
            raise PartMapError(f"plan: part_size_m must be positive metres, got {size!r}")
        return cls(T, (width, height))


@dataclass
class PartMap:
    """The fused map of one part.

    ``grid``: the cells (rows along -y, cols along x, see :class:`PlaneGrid`); ``fused`` (rows, cols) float32,
    NaN where no view sees the cell; ``views`` (rows, cols) int: how many views saw each cell; ``outline``
    (rows, cols) bool: the part's cells; ``footprints``: pose id -> the grid patch its view saw (its values);
    ``mosaic``: (rows, cols) uint8 grey image of the part from the views' pixels, when they were given.
    """

    grid: PlaneGrid
    fused: np.ndarray
    views: np.ndarray
    outline: np.ndarray
    config: PartMapConfig
    footprints: dict[str, GridPatch] = field(default_factory=dict)
    mosaic: Optional[np.ndarray] = None

    @property
    def covered(self) -> np.ndarray:
        """(rows, cols) bool: outline cells seen by at least one view."""
        return self.outline & (self.views > 0)

    @property
    def coverage(self) -> float:
        """Share of the outline seen by at least one view, 0..1."""
        return float(self.covered.sum() / max(int(self.outline.sum()), 1))

    @property
    def score(self) -> Optional[float]:
        """The part score: the highest fused value on the covered outline (None when nothing is covered)."""
        covered = self.covered
        return float(np.max(self.fused[covered])) if covered.any() else None

    def defects(self, threshold: float) -> list[PartDefect]:
        """Connected regions of covered cells with fused score > ``threshold``, largest first."""
        return [defect for _, defect in self.defect_regions(threshold)]

    def defect_regions(self, threshold: float) -> list[tuple[np.ndarray, PartDefect]]:
        """As :meth:`defects`, each with its region: a (rows, cols) bool mask of its cells. The centroid is
        placed by ``config.centroid`` (:data:`CENTROIDS`)."""
        hot = (self.covered & (np.nan_to_num(self.fused, nan=-np.inf) > threshold)).astype(np.uint8)
        count, labels = cv2.connectedComponents(hot, connectivity=8)
        cell_mm = self.grid.cell_m * 1e3
        all_centres = self.grid.cell_centres() * 1e3
        out: list[tuple[np.ndarray, PartDefect]] = []
        for label in range(1, count):
            region = labels == label
            rows, cols = np.nonzero(region)
            values = self.fused[rows, cols].astype(np.float64)
            x_mm, y_mm = defect_centroid(all_centres[rows, cols], values, threshold, self.config.centroid)
            x0 = self.grid.x_min * 1e3 + cols.min() * cell_mm
            x1 = self.grid.x_min * 1e3 + (cols.max() + 1) * cell_mm
            y1 = self.grid.y_max * 1e3 - rows.min() * cell_mm
            y0 = self.grid.y_max * 1e3 - (rows.max() + 1) * cell_mm
            poses = tuple(pose for pose, patch in self.footprints.items() if _patch_sees(patch, rows, cols))
            out.append((region, PartDefect(
                x_mm=x_mm, y_mm=y_mm,
                area_mm2=float(len(rows) * cell_mm * cell_mm), bbox_mm=(float(x0), float(y0), float(x1), float(y1)),
                peak=float(values.max()), poses=poses,
            )))
        return sorted(out, key=lambda item: -item[1].area_mm2)

    def to_cells(self, x_mm: float, y_mm: float) -> tuple[int, int]:
        """The (row, col) of the cell holding part point (x_mm, y_mm)."""
        rc = self.grid.to_cell(np.array([[x_mm * 1e-3, y_mm * 1e-3]]))[0]
        return int(round(rc[0])), int(round(rc[1]))


def defect_centroid(centres_mm: np.ndarray, values: np.ndarray, threshold: float, how: str) -> tuple[float, float]:
    """A defect's (x_mm, y_mm) from its region's cells: ``centres_mm`` (n, 2) their centres (mm), ``values`` (n,)
    their fused scores (all > ``threshold``); ``how``: one of :data:`CENTROIDS`."""
    if how == "region":
        weights = np.ones(len(values))
    elif how == "peak_weighted":
        weights = np.maximum(values - threshold, 0.0) + 1e-12
    elif how == "core":
        weights = (values >= threshold + 0.5 * (values.max() - threshold)).astype(np.float64)
    else:
        raise PartMapError(f"centroid {how!r} unknown; choose one of {', '.join(CENTROIDS)}")
    x, y = (weights[:, None] * centres_mm).sum(axis=0) / weights.sum()
    return float(x), float(y)


def _patch_sees(patch: GridPatch, rows: np.ndarray, cols: np.ndarray) -> bool:
    r, c = rows - patch.row0, cols - patch.col0
    h, w = patch.values.shape
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    return bool(inside.any() and patch.seen[r[inside], c[inside]].any())


class PartMapAccumulator:
    """Builds the :class:`PartMap` of one part, one scored pose at a time.

    ``camera``, ``T_flange_cam``: the geometry in force (calibration file, else the simulation's nominal
    geometry); ``part``: the plan's part frame and outline. ``add`` raises :class:`PartMapError` for a map with
    NaN or infinite values (a model fault never becomes a verdict) or a frame of another size than the camera.
    """

    def __init__(self, camera: CameraModel, T_flange_cam: Transform, part: PartFrame,
                 config: Optional[PartMapConfig] = None) -> None:
        self.camera = camera
        self.T_flange_cam = T_flange_cam
        self.part = part
        self.config = config or PartMapConfig()
        self.grid = PlaneGrid.centred(part.size_m, self.config.cell_mm * 1e-3)
        self._count = np.zeros(self.grid.shape, dtype=np.int32)
        self._layers: list[np.ndarray] = []
        self._footprints: dict[str, GridPatch] = {}
        self._mosaic_sum: Optional[np.ndarray] = None
        self._mosaic_n: Optional[np.ndarray] = None

    @property
    def poses(self) -> list[str]:
        """Pose ids added so far, in order."""
        return list(self._footprints)

    def camera_pose(self, tcp_pose: Sequence[float]) -> Transform:
        pose = np.asarray(tcp_pose, dtype=float).reshape(-1)
        if pose.shape != (6,) or not np.all(np.isfinite(pose)):
            raise PartMapError(f"a TCP pose needs 6 finite values [x, y, z, rx, ry, rz], got {pose.tolist()}")
        return Transform.from_pose(pose) @ self.T_flange_cam

    def add(self, result: PoseResult, image: Optional[np.ndarray] = None) -> Optional[GridPatch]:
        """Project one scored pose onto the grid; ``image``: the frame's pixels, for the part's mosaic.
        Returns the patch of the grid the view sees (None when it sees none of the part)."""
        amap = np.asarray(result.anomaly_map, dtype=np.float32)
        if amap.ndim != 2:
            raise PartMapError(f"pose {result.pose_id}: anomaly map must be (h, w), got shape {amap.shape}")
        if not np.all(np.isfinite(amap)):
            raise PartMapError(f"pose {result.pose_id}: the model's anomaly map holds NaN or infinite values")
        height, width = (int(v) for v in result.frame_size)
        if (width, height) != (self.camera.width, self.camera.height):
            raise PartMapError(f"pose {result.pose_id}: frame is {width}x{height} px but the camera model is "
                               f"{self.camera.width}x{self.camera.height} px")
        T_base_cam = self.camera_pose(result.tcp_pose)
        patch = sample_onto_grid(amap, self.camera, T_base_cam, self.part.T_base_part, self.grid,
                                 border_px=self.config.border_px)
        if patch is None:
            self._footprints[result.pose_id] = GridPatch(0, 0, np.full((0, 0), np.nan, np.float32))
            return None
        self._scatter(patch)
        self._footprints[result.pose_id] = patch
        if image is not None:
            self._add_mosaic(image, T_base_cam)
        return patch

    def _outline(self, config: Optional[PartMapConfig] = None) -> np.ndarray:
        """(rows, cols) bool: cells whose centre lies inside the part rectangle, ``edge_mm`` in from its edge."""
        centres = self.grid.cell_centres()
        half_w, half_h = self.part.size_m[0] / 2.0, self.part.size_m[1] / 2.0
        inset = (config or self.config).edge_mm * 1e-3
        return ((np.abs(centres[..., 0]) <= half_w - inset + 1e-12) & (np.abs(centres[..., 1]) <= half_h - inset + 1e-12))

    def _scatter(self, patch: GridPatch) -> None:
        window, seen = patch.window, patch.seen
        counts = self._count[window]
        for level in np.unique(counts[seen]):
            while len(self._layers) <= level:
                self._layers.append(np.full(self.grid.shape, np.nan, dtype=np.float32))
            sel = seen & (counts == level)
            self._layers[level][window][sel] = patch.values[sel]
        self._count[window] += seen

    def _add_mosaic(self, image: np.ndarray, T_base_cam: Transform) -> None:
        pixels = np.asarray(image)
        if pixels.ndim == 3:
            pixels = cv2.cvtColor(pixels[:, :, :3], cv2.COLOR_RGB2GRAY)
        patch = sample_onto_grid(pixels.astype(np.float32), self.camera, T_base_cam, self.part.T_base_part,
                                 self.grid)
        if patch is None:
            return
        if self._mosaic_sum is None:
            self._mosaic_sum = np.zeros(self.grid.shape, np.float64)
            self._mosaic_n = np.zeros(self.grid.shape, np.int32)
        seen = patch.seen
        self._mosaic_sum[patch.window][seen] += patch.values[seen]
        self._mosaic_n[patch.window][seen] += 1  # type: ignore[index]

    def finish(self, config: Optional[PartMapConfig] = None) -> PartMap:
        """The fused map of the views added so far (the accumulator stays usable). ``config``: fuse the same
        projected views by another rule, ``k``, ``edge_mm`` or ``min_coverage`` (what the projection depends
        on, ``cell_mm`` and ``border_px``, must be the accumulator's): one projection serves every rule."""
        if not self._footprints:
            raise PartMapError("no scored views: a part map needs at least one")
        config = config or self.config
        if (config.cell_mm, config.border_px) != (self.config.cell_mm, self.config.border_px):
            raise PartMapError(f"part map: cannot finish views projected with cell_mm {self.config.cell_mm}, border_px "
                               f"{self.config.border_px} as cell_mm {config.cell_mm}, border_px {config.border_px}")
        fused = fuse_layers(self._layers, self._count, config.fusion, config.k)
        mosaic = None
        if self._mosaic_sum is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                mosaic = np.where(self._mosaic_n > 0, self._mosaic_sum / np.maximum(self._mosaic_n, 1), 0)
            mosaic = np.clip(mosaic, 0, 255).astype(np.uint8)
        return PartMap(grid=self.grid, fused=fused, views=self._count.copy(), outline=self._outline(config), config=config,
                       footprints=dict(self._footprints), mosaic=mosaic)


def edge_distance_mm(grid: PlaneGrid, size_m: tuple[float, float]) -> np.ndarray:
    """(rows, cols) float: each cell centre's distance (mm) inside the part rectangle ``size_m`` (width, height,
    metres, centred on the part frame) from its nearest edge; negative outside."""
    centres = grid.cell_centres() * 1e3
    return np.minimum(size_m[0] * 500.0 - np.abs(centres[..., 0]), size_m[1] * 500.0 - np.abs(centres[..., 1]))


def choose_edge_mm(good_maps: Sequence[PartMap], size_m: tuple[float, float], *, step_mm: float = 1.0,
                   interior_mm: float = 20.0) -> dict[str, Any]:
    """The unjudged band along the outline's edge (``part_map.edge_mm``), chosen on GOOD training-side parts
    (held-out good parts, fused with ``edge_mm`` 0): the least multiple of ``step_mm`` from which on no band of
    ``step_mm`` holds a fused value above the interior's maximum (cells at least ``interior_mm`` in from the
    edge). Where the sheet's edge lifts good parts' scores (placement jitter shows the table inside the plan's
    outline; the detector's receptive field reaches across the edge) the band ends; beyond it an edge cell is
    judged like any interior cell. Returns ``edge_mm``, the interior maximum and the profile (band -> max).
    A profile that never falls to the interior's level within ``interior_mm`` gives ``edge_mm`` = ``interior_mm``."""
    if not good_maps:
        raise PartMapError("choose_edge_mm: no good part maps to choose the edge band on")
    distance = edge_distance_mm(good_maps[0].grid, size_m)
    def band_max(sel: np.ndarray) -> float:
        values = [float(np.nanmax(np.where(sel & pm.covered, pm.fused, np.nan))) for pm in good_maps
                  if (sel & pm.covered).any()]
        return max(values) if values else -math.inf
    interior = band_max(distance >= interior_mm)
    if not math.isfinite(interior):
        raise PartMapError(f"choose_edge_mm: the parts have no covered cells {interior_mm} mm in from the edge")
    starts = np.arange(0.0, interior_mm, step_mm)
    profile = [band_max((distance >= lo) & (distance < lo + step_mm)) for lo in starts]
    edge = interior_mm
    for i in range(len(starts) - 1, -1, -1):  # walk in from the interior while the bands stay at its level
        if profile[i] > interior:
            break
        edge = float(starts[i])
    return {"edge_mm": edge, "interior_max": interior, "interior_from_mm": interior_mm, "step_mm": step_mm,
            "band_max": {f"{lo:g}-{lo + step_mm:g}": (None if not math.isfinite(v) else round(v, 4))
                         for lo, v in zip(starts, profile)}}


def fuse_layers(layers: Sequence[np.ndarray], count: np.ndarray, rule: str, k: int = 2) -> np.ndarray:
    """Fuse per-cell view values. ``layers``: L arrays (rows, cols), layer l holding each cell's (l+1)-th view
    (NaN beyond the cell's ``count``); ``count`` (rows, cols): views per cell. Returns (rows, cols) float32,
    NaN where ``count`` is 0. Rules: see the module docstring."""
    if rule not in FUSION_RULES:
        raise PartMapError(f"fusion rule {rule!r} unknown; choose one of {', '.join(FUSION_RULES)}")
    if not layers:
        return np.full(count.shape, np.nan, dtype=np.float32)
    stack = np.stack(layers).astype(np.float32)
    n = count.astype(np.int64)
    seen = n > 0
    if rule == "mean":
        out = np.nansum(stack, axis=0) / np.maximum(n, 1)
    else:
        ordered = -np.sort(-np.where(np.isnan(stack), -np.inf, stack), axis=0)  # highest first
        if rule == "max":
            out = ordered[0]
        elif rule == "kth":
            index = np.clip(np.minimum(int(k), n) - 1, 0, None)
            out = np.take_along_axis(ordered, index[None], axis=0)[0]
        else:  # median of the n views of each cell
            lo = np.take_along_axis(ordered, np.clip((n - 1) // 2, 0, None)[None], axis=0)[0]
            hi = np.take_along_axis(ordered, np.clip(n // 2, 0, None)[None], axis=0)[0]
            out = (lo + hi) / 2.0
    out = np.asarray(out, dtype=np.float32)
    out[~seen] = np.nan
    return out


def planned_coverage(plan: Sequence[Any], camera: CameraModel, T_flange_cam: Transform, part: PartFrame,
                     config: Optional[PartMapConfig] = None) -> float:
    """Share of the part's outline the planned poses would see (each view as planned, no robot error):
    checked before the line starts, so a plan that misses parts of the part is reported before any motion."""
    acc = PartMapAccumulator(camera, T_flange_cam, part, (config or PartMapConfig()).model_copy(update={"cell_mm": 2.0}))
    for planned in plan:
        acc.add(PoseResult(str(planned.pose_id), 0.0, np.zeros((8, 8), np.float32),
                           np.asarray(planned.pose, dtype=float), (camera.height, camera.width)))
    return acc.finish().coverage
