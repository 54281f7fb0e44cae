"""Rendering a flat textured surface through a camera model with lens distortion.

For every pixel the camera model gives the ideal normalised ray ``r = (x, y, 1)`` (distortion already
removed, :meth:`CameraModel.normalized_grid`). A plane ``z = 0`` of the surface frame maps those rays to
plane points by a homography, and the surface's affine ``surface_to_texel`` maps plane points to texels;
the product is one 3x3 matrix, applied to the cached grid with ``cv2.perspectiveTransform``, and the
texture is sampled with ``cv2.remap``. A mip level of the texture is chosen from the texel footprint of
a pixel so that fine textures (a printed board) are pre-filtered rather than aliased.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from acquisition.sim.scene import Surface
from calibration.camera_model import CameraModel
from calibration.transforms import Transform

#: a pyramid level is used once a pixel spans more than this many of its texels
_MAX_TEXELS_PER_PIXEL = 1.25


def ray_to_plane_homography(T_surface_cam: Transform) -> tuple[np.ndarray, float]:
    """3x3 ``H`` with ``[x, y, w] = H @ [rx, ry, 1]``: normalised camera ray -> point (x/w, y/w) on the
    surface plane z = 0. Also returns ``sign``: a ray hits the plane in front of the camera exactly where
    ``sign * w > 0``."""
    R = T_surface_cam.rotation
    t = T_surface_cam.translation
    H = np.stack([t[0] * R[2] - t[2] * R[0], t[1] * R[2] - t[2] * R[1], R[2]])
    # lambda = -t_z / (R_2 . r) > 0  <=>  -t_z * w > 0
    return H, float(-np.sign(t[2])) if t[2] != 0 else 0.0


@dataclass
class RenderResult:
    """``image``: uint8 (h, w) or (h, w, 3) RGB albedo seen by each pixel, 0..255 (before exposure and
    noise); ``labels``: uint8 (h, w) defect labels (0 = none) or None when the surface has none;
    ``label_rect``: (x0, y0, x1, y1) the only part of ``labels`` that can be non-zero (None: all zero);
    ``level``: the texture pyramid level sampled."""

    image: np.ndarray
    labels: Optional[np.ndarray]
    level: int
    label_rect: Optional[tuple[int, int, int, int]] = None


class PlaneRenderer:
    """Renders surfaces for one camera model and region of interest; caches the pose-independent grid.

    ``roi`` = (x, y, width, height) in sensor pixels, None for the full sensor.
    """

    def __init__(self, camera: CameraModel, roi: Optional[tuple[int, int, int, int]] = None) -> None:
        self.camera = camera
        x, y, w, h = roi if roi is not None else (0, 0, camera.width, camera.height)
        full = camera.normalized_grid()
        self.roi = (int(x), int(y), int(w), int(h))
        self._grid = np.ascontiguousarray(full[y : y + h, x : x + w]).reshape(-1, 1, 2)
        self._shape = (int(h), int(w))
        # the pixel at the sensor centre and its right / lower neighbours: for the texel footprint
        cu, cv = camera.width // 2, camera.height // 2
        self._probe = np.ascontiguousarray(full[[cv, cv, cv + 1], [cu, cu + 1, cu]], dtype=np.float64)
        # extremes of the grid (a linear function of the ray is extreme on the boundary)
        edge = np.concatenate([full[0, :], full[-1, :], full[:, 0], full[:, -1]]).astype(np.float64)
        self._edge = np.concatenate([edge, np.ones((len(edge), 1))], axis=1)

    def texel_matrix(self, surface: Surface, T_base_cam: Transform) -> tuple[np.ndarray, float]:
        """3x3 matrix: normalised ray ``[x, y, 1]`` -> homogeneous level-0 texel coordinates, and the sign
        for rays in front of the camera (see :func:`ray_to_plane_homography`)."""
        T_surface_cam = surface.T_base_surface.inverse() @ T_base_cam
        H, sign = ray_to_plane_homography(T_surface_cam)
        return surface.surface_to_texel @ H, sign

    def texels_per_pixel(self, M: np.ndarray) -> float:
        """Texel footprint of one pixel at the sensor centre under matrix ``M`` (level 0)."""
        p = np.concatenate([self._probe, np.ones((3, 1))], axis=1) @ M.T
        uv = p[:, :2] / p[:, 2:3]
        return float(max(np.linalg.norm(uv[1] - uv[0]), np.linalg.norm(uv[2] - uv[0])))

    def _maps(self, M: np.ndarray, sign: float) -> np.ndarray:
        """Remap map (h, w, 2) float32 of texel coordinates for every pixel; rays missing the plane -> far away."""
        m = cv2.perspectiveTransform(self._grid, M).reshape(*self._shape, 2)
        w_edge = self._edge @ M[2]
        if sign == 0.0 or np.any(sign * w_edge <= 0):
            # the horizon (or the camera's own plane) is in view: mark rays that miss the plane
            g = self._grid.reshape(*self._shape, 2).astype(np.float64)
            w = g[..., 0] * M[2, 0] + g[..., 1] * M[2, 1] + M[2, 2]
            m[~(sign * w > 0)] = -1e6
        return m

    def _label_rect(self, surface: Surface, M: np.ndarray, sign: float) -> Optional[tuple[int, int, int, int]]:
        """The image rectangle (x0, y0, x1, y1), ROI pixels, exclusive ends, that holds every labelled region
        in view; None when none is in view. The full image when the geometry is degenerate (horizon)."""
        h, w = self._shape
        full = (0, 0, w, h)
        if not surface.label_boxes:
            return full
        if sign == 0.0:
            return full
        try:
            M_inv = np.linalg.inv(M)
        except np.linalg.LinAlgError:
            return full
        cam = self.camera
        t = np.linspace(0.0, 1.0, 9)
        rect = None
        for c0, r0, c1, r1 in surface.label_boxes.values():
            u0, v0, u1, v1 = c0 - 1.0, r0 - 1.0, c1 + 1.0, r1 + 1.0
            edge_u = np.concatenate([u0 + (u1 - u0) * t, np.full(9, u1), u1 - (u1 - u0) * t, np.full(9, u0)])
            edge_v = np.concatenate([np.full(9, v0), v0 + (v1 - v0) * t, np.full(9, v1), v1 - (v1 - v0) * t])
            ray = np.stack([edge_u, edge_v, np.ones_like(edge_u)], axis=1) @ M_inv.T
            # a texel maps back to a ray in front of the camera iff its homogeneous w has the right sign
            w_fwd = ray @ M[2]
            if np.any(ray[:, 2] == 0) or np.any(sign * w_fwd / ray[:, 2] <= 0):
                return full
            xy = ray[:, :2] / ray[:, 2:3]
            if np.any(np.abs(xy) > 2.0):  # far outside the field of view: distortion polynomials diverge
                if np.all(xy[:, 0] > 2.0) or np.all(xy[:, 0] < -2.0) or np.all(xy[:, 1] > 2.0) or np.all(xy[:, 1] < -2.0):
                    continue
                return full
            d = cam.distort_normalized(xy)
            px = d[:, 0] * cam.fx + cam.cx - self.roi[0]
            py = d[:, 1] * cam.fy + cam.cy - self.roi[1]
            x0, x1 = int(np.floor(px.min())) - 2, int(np.ceil(px.max())) + 3
            y0, y1 = int(np.floor(py.min())) - 2, int(np.ceil(py.max())) + 3
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if x0 >= x1 or y0 >= y1:
                continue
            rect = (x0, y0, x1, y1) if rect is None else (
                min(rect[0], x0), min(rect[1], y0), max(rect[2], x1), max(rect[3], y1))
        return rect

    def render(self, surface: Optional[Surface], T_base_cam: Transform, color: bool,
               background_rgb: tuple[float, float, float], labels: bool = True) -> RenderResult:
        """Render ``surface`` (None = bare table of ``background_rgb``) seen from ``T_base_cam``.

        ``color``: RGB (h, w, 3) or grey (h, w) output. ``labels``: also render the defect label map
        (nearest neighbour, same mapping) when the surface has one.
        """
        h, w = self._shape
        bg_gray = float(np.dot(background_rgb, (0.299, 0.587, 0.114)))
        if surface is None:
            if color:
                image = np.empty((h, w, 3), dtype=np.uint8)
                image[:] = np.clip(np.round(background_rgb), 0, 255).astype(np.uint8)
            else:
                image = np.full((h, w), int(np.clip(round(bg_gray), 0, 255)), dtype=np.uint8)
            return RenderResult(image, None, 0)
        M, sign = self.texel_matrix(surface, T_base_cam)
        scale = self.texels_per_pixel(M) if sign != 0.0 else 1.0
        level = 0
        while scale / (2 ** level) > _MAX_TEXELS_PER_PIXEL and level < 8:
            level += 1
        tex = surface.level(level, color)
        border = tuple(float(c) for c in background_rgb) if color else bg_gray
        if level == 0:
            map0 = self._maps(M, sign)
            image = cv2.remap(tex, map0, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border)
        else:
            f = 1.0 / (2 ** level)
            map0 = None
            ml = self._maps(np.diag([f, f, 1.0]) @ M, sign)
            image = cv2.remap(tex, ml, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border)
        label_img = None
        rect = None
        if labels and surface.labels is not None:
            label_img = np.zeros((h, w), dtype=np.uint8)
            rect = self._label_rect(surface, M, sign)
            if rect is not None:
                if map0 is None:
                    map0 = self._maps(M, sign)
                x0, y0, x1, y1 = rect
                # nearest texel (cv2.remap's INTER_NEAREST rounds the map coordinates)
                label_img[y0:y1, x0:x1] = cv2.remap(
                    surface.labels, map0[y0:y1, x0:x1], None, cv2.INTER_NEAREST,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0,
                )
        return RenderResult(image, label_img, level, rect)
