"""Image pixels <-> points on a flat part, and resampling an image-sized map onto a grid on the part.

The part is a plane: the z = 0 plane of its frame ``T_base_part`` (part frame -> robot base frame, metres).
A camera at ``T_base_cam`` (camera frame -> base frame; for a camera on the robot flange
``T_base_tcp @ T_flange_cam``) sees part point ``(x, y)`` at the pixel :meth:`CameraModel.project` gives for
it, lens distortion included; the inverse undistorts the pixel, casts its ray and intersects the plane.

:class:`PlaneGrid` is a regular grid of square cells on the part plane: column ``j`` has its centre at
``x = x_min + (j + 0.5) * cell_m``, row ``i`` at ``y = y_max - (i + 0.5) * cell_m`` (row 0 at the part's +y
edge), so a (rows, cols) grid image shows the part as a camera looking down at it sees it (x right, y up).
:func:`sample_onto_grid` resamples a map seen from one camera pose onto the grid (the inverse map: for each
cell, the pixel that sees its centre, bilinear).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from calibration.camera_model import CameraModel
from calibration.transforms import Transform


def pixels_to_plane(camera: CameraModel, T_base_cam: Transform, T_base_part: Transform,
                    pixels: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) (u, v) -> points (N, 2) (x, y) on the part plane, metres in the part frame.

    A pixel whose ray is parallel to the plane or meets it behind the camera gives NaN.
    """
    rays_cam = np.concatenate([camera.undistort_pixels(np.asarray(pixels, dtype=float).reshape(-1, 2)),
                               np.ones((np.asarray(pixels).reshape(-1, 2).shape[0], 1))], axis=1)
    T_part_cam = T_base_part.inverse() @ T_base_cam
    origin = T_part_cam.translation
    dirs = rays_cam @ T_part_cam.rotation.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -origin[2] / dirs[:, 2]
    points = origin[None, :2] + t[:, None] * dirs[:, :2]
    points[~(np.isfinite(t) & (t > 0))] = np.nan
    return points


def plane_to_pixels(camera: CameraModel, T_base_cam: Transform, T_base_part: Transform,
                    points: np.ndarray) -> np.ndarray:
    """Points (N, 2) (x, y) on the part plane, metres -> pixels (N, 2) (u, v), lens distortion included.

    Points behind the camera give NaN. Pixels may lie outside the image; the caller decides.
    """
    xy = np.asarray(points, dtype=float).reshape(-1, 2)
    T_cam_part = T_base_cam.inverse() @ T_base_part
    in_cam = T_cam_part.apply(np.concatenate([xy, np.zeros((xy.shape[0], 1))], axis=1))
    return camera.project(in_cam)


@dataclass(frozen=True)
class PlaneGrid:
    """A grid of square cells on the part plane (see the module docstring for the layout).

    ``x_min``, ``y_max``: the outer corner of cell (0, 0), metres in the part frame; ``cell_m``: cell edge,
    metres; ``shape``: (rows, cols).
    """

    x_min: float
    y_max: float
    cell_m: float
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        if not (np.isfinite(self.cell_m) and self.cell_m > 0):
            raise ValueError(f"grid cell size must be positive metres, got {self.cell_m}")
        rows, cols = (int(v) for v in self.shape)
        if rows < 1 or cols < 1:
            raise ValueError(f"grid needs at least one row and column, got shape {self.shape}")
        object.__setattr__(self, "shape", (rows, cols))

    @classmethod
    def centred(cls, size_m: Sequence[float], cell_m: float) -> "PlaneGrid":
        """The grid over a ``size_m`` = (width along x, height along y) rectangle centred on the part origin;
        the cell count is rounded up, so the grid covers the whole rectangle."""
        width, height = (float(v) for v in size_m)
        if not (width > 0 and height > 0):
            raise ValueError(f"part size must be positive metres, got {list(size_m)}")
        cols, rows = int(np.ceil(width / cell_m - 1e-9)), int(np.ceil(height / cell_m - 1e-9))
        return cls(x_min=-cols * cell_m / 2.0, y_max=rows * cell_m / 2.0, cell_m=float(cell_m), shape=(rows, cols))

    @property
    def x_max(self) -> float:
        return self.x_min + self.shape[1] * self.cell_m

    @property
    def y_min(self) -> float:
        return self.y_max - self.shape[0] * self.cell_m

    def cell_centres(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """Part-plane centres (r, c, 2) (x, y), metres, of the cells in ``rows`` x ``cols``."""
        r = np.arange(self.shape[0])[rows]
        c = np.arange(self.shape[1])[cols]
        x = self.x_min + (c + 0.5) * self.cell_m
        y = self.y_max - (r + 0.5) * self.cell_m
        xx, yy = np.meshgrid(x, y)
        return np.stack([xx, yy], axis=-1)

    def to_cell(self, points: np.ndarray) -> np.ndarray:
        """Part-plane points (N, 2) (x, y), metres -> fractional (row, col) (N, 2); cell centres at integers."""
        xy = np.asarray(points, dtype=float).reshape(-1, 2)
        return np.stack([(self.y_max - xy[:, 1]) / self.cell_m - 0.5, (xy[:, 0] - self.x_min) / self.cell_m - 0.5], axis=-1)


@dataclass(frozen=True)
class GridPatch:
    """One view resampled onto a window of a :class:`PlaneGrid`: ``values`` (h, w) float32 for the cells
    ``[row0 : row0 + h, col0 : col0 + w]``, NaN where the view does not see the cell."""

    row0: int
    col0: int
    values: np.ndarray

    @property
    def window(self) -> tuple[slice, slice]:
        h, w = self.values.shape
        return slice(self.row0, self.row0 + h), slice(self.col0, self.col0 + w)

    @property
    def seen(self) -> np.ndarray:
        """(h, w) bool: the cells of the window the view sees."""
        return np.isfinite(self.values)


def sample_onto_grid(
    image_map: np.ndarray,
    camera: CameraModel,
    T_base_cam: Transform,
    T_base_part: Transform,
    grid: PlaneGrid,
    *,
    border_px: float = 0.0,
    interpolation: int = cv2.INTER_LINEAR,
) -> Optional[GridPatch]:
    """Resample a map seen from camera pose ``T_base_cam`` onto ``grid`` on the part plane.

    ``image_map``: (h, w) float, the camera's full image (``camera.height`` x ``camera.width`` pixels) or a
    map of the same field of view at another resolution (e.g. a detector's working resolution): pixel
    (u, v) of the camera is read at ((u + 0.5) w / width - 0.5, (v + 0.5) h / height - 0.5). Cells whose
    centre projects outside the image, closer than ``border_px`` camera pixels to its edge, or behind the
    camera stay NaN. Returns the patch of the grid window the image can see, or None when it sees none of
    the grid.
    """
    values = np.asarray(image_map, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"image map must be (h, w), got shape {values.shape}")
    window = _visible_window(camera, T_base_cam, T_base_part, grid)
    if window is None:
        return None
    rows, cols = window
    centres = grid.cell_centres(rows, cols)
    shape = centres.shape[:2]
    px = plane_to_pixels(camera, T_base_cam, T_base_part, centres.reshape(-1, 2))
    u, v = px[:, 0], px[:, 1]
    inside = (np.isfinite(u) & np.isfinite(v) & (u >= border_px - 0.5) & (u <= camera.width - 0.5 - border_px)
              & (v >= border_px - 0.5) & (v <= camera.height - 0.5 - border_px))
    h, w = values.shape
    map_x = ((u + 0.5) * (w / camera.width) - 0.5).astype(np.float32)
    map_y = ((v + 0.5) * (h / camera.height) - 0.5).astype(np.float32)
    map_x[~inside] = -1.0
    map_y[~inside] = -1.0
    sampled = cv2.remap(values, map_x.reshape(shape), map_y.reshape(shape), interpolation,
                        borderMode=cv2.BORDER_REPLICATE)
    sampled[~inside.reshape(shape)] = np.nan
    if not inside.any():
        return None
    return GridPatch(row0=rows.start, col0=cols.start, values=sampled.astype(np.float32))


def _visible_window(camera: CameraModel, T_base_cam: Transform, T_base_part: Transform,
                    grid: PlaneGrid, samples: int = 33) -> Optional[tuple[slice, slice]]:
    """The (rows, cols) window of ``grid`` that holds every cell the camera can see: the image border,
    densely sampled (distortion honoured), cast onto the plane; the whole grid when some border ray misses
    the plane (a view that looks at the horizon)."""
    t = np.linspace(-0.5, 1.0, samples)
    w, h = camera.width - 0.5, camera.height - 0.5
    us = -0.5 + (w + 0.5) * np.clip(t, 0, 1)
    vs = -0.5 + (h + 0.5) * np.clip(t, 0, 1)
    border = np.concatenate([
        np.stack([us, np.full_like(us, -0.5)], 1), np.stack([us, np.full_like(us, h)], 1),
        np.stack([np.full_like(vs, -0.5), vs], 1), np.stack([np.full_like(vs, w), vs], 1),
    ])
    points = pixels_to_plane(camera, T_base_cam, T_base_part, border)
    rows_n, cols_n = grid.shape
    if not np.all(np.isfinite(points)):
        return slice(0, rows_n), slice(0, cols_n)
    rc = grid.to_cell(points)
    r0 = max(int(np.floor(rc[:, 0].min())) - 1, 0)
    r1 = min(int(np.ceil(rc[:, 0].max())) + 2, rows_n)
    c0 = max(int(np.floor(rc[:, 1].min())) - 1, 0)
    c1 = min(int(np.ceil(rc[:, 1].max())) + 2, cols_n)
    if r0 >= r1 or c0 >= c1:
        return None
    return slice(r0, r1), slice(c0, c1)
