"""The pinhole camera model with OpenCV's lens distortion (k1, k2, p1, p2, k3).

Camera frame: x right, y down, z along the optical axis, metres. Pixel (u, v): u along the image
width, v along the height; the centre of the top-left pixel is (0, 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import cv2
import numpy as np


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics, distortion and image size of one camera.

    ``fx, fy, cx, cy`` in pixels; ``dist`` = (k1, k2, p1, p2, k3) as OpenCV orders them.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    dist: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        dist = tuple(float(d) for d in self.dist)
        if len(dist) != 5:
            raise ValueError(f"dist needs 5 coefficients (k1, k2, p1, p2, k3), got {len(dist)}")
        object.__setattr__(self, "dist", dist)

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def from_lens(
        cls,
        width: int,
        height: int,
        focal_length_m: float,
        pixel_size_m: float,
        dist: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
        principal_offset_px: tuple[float, float] = (0.0, 0.0),
    ) -> "CameraModel":
        """From a lens focal length and sensor pixel pitch (e.g. 25 mm lens, 4.8 um pixels)."""
        f = focal_length_m / pixel_size_m
        return cls(
            width=width,
            height=height,
            fx=f,
            fy=f,
            cx=(width - 1) / 2.0 + principal_offset_px[0],
            cy=(height - 1) / 2.0 + principal_offset_px[1],
            dist=tuple(dist),  # type: ignore[arg-type]
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CameraModel":
        return cls(
            width=int(data["width"]),
            height=int(data["height"]),
            fx=float(data["fx"]),
            fy=float(data["fy"]),
            cx=float(data["cx"]),
            cy=float(data["cy"]),
            dist=tuple(float(d) for d in data.get("dist", (0, 0, 0, 0, 0))),  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "dist": list(self.dist),
        }

    # --- matrices ----------------------------------------------------------------------------------
    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the conventional name
        """Intrinsic matrix (3, 3)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def dist_array(self) -> np.ndarray:
        """Distortion coefficients (5,) for OpenCV calls."""
        return np.asarray(self.dist, dtype=float)

    @property
    def has_distortion(self) -> bool:
        return any(abs(d) > 0 for d in self.dist)

    def field_of_view_at(self, distance_m: float) -> tuple[float, float]:
        """Width and height in metres of the area seen on a fronto-parallel plane at ``distance_m``."""
        return self.width * distance_m / self.fx, self.height * distance_m / self.fy

    # --- distortion --------------------------------------------------------------------------------
    def distort_normalized(self, xy: np.ndarray) -> np.ndarray:
        """Ideal normalised coordinates (N, 2) -> distorted normalised coordinates (N, 2)."""
        k1, k2, p1, p2, k3 = self.dist
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        return np.stack([xd, yd], axis=-1)

    def undistort_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Observed pixels (N, 2) -> ideal normalised coordinates (N, 2) (iterative inverse)."""
        pts = np.asarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
        if not self.has_distortion:
            out = (pts.reshape(-1, 2) - [self.cx, self.cy]) / [self.fx, self.fy]
            return out
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)
        out = cv2.undistortPointsIter(pts, self.K, self.dist_array, None, None, criteria)
        return out.reshape(-1, 2)

    # --- projection --------------------------------------------------------------------------------
    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Points in the camera frame (N, 3), metres -> pixels (N, 2), with lens distortion.

        Points behind the camera (z <= 0) give NaN.
        """
        pts = np.asarray(points_cam, dtype=float).reshape(-1, 3)
        z = pts[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = pts[:, :2] / z[:, None]
        xy[z <= 0] = np.nan
        d = self.distort_normalized(xy)
        return np.stack([d[:, 0] * self.fx + self.cx, d[:, 1] * self.fy + self.cy], axis=-1)

    def unproject(self, pixels: np.ndarray, depth: np.ndarray | float) -> np.ndarray:
        """Pixels (N, 2) and depth along the optical axis (N,) or scalar, metres -> points (N, 3)."""
        xy = self.undistort_pixels(pixels)
        z = np.broadcast_to(np.asarray(depth, dtype=float), (xy.shape[0],))
        return np.concatenate([xy * z[:, None], z[:, None]], axis=1)

    def normalized_grid(self) -> np.ndarray:
        """Ideal normalised coordinates of every pixel centre, (H, W, 2) float32, computed once."""
        grid = self._cache.get("normalized_grid")
        if grid is None:
            u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
            pix = np.stack([u.ravel(), v.ravel()], axis=-1)
            grid = self.undistort_pixels(pix).reshape(self.height, self.width, 2).astype(np.float32)
            grid.setflags(write=False)
            self._cache["normalized_grid"] = grid
        return grid

    def undistort_image(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Remove lens distortion from an image of this camera (same size and K)."""
        if not self.has_distortion:
            return image.copy()
        maps = self._cache.get("undistort_maps")
        if maps is None:
            maps = cv2.initUndistortRectifyMap(
                self.K, self.dist_array, None, self.K, (self.width, self.height), cv2.CV_32FC1
            )
            self._cache["undistort_maps"] = maps
        return cv2.remap(image, maps[0], maps[1], interpolation)
