"""Carrying a defect mask from one pose of a part to its other poses (plane homography of the table).

The part lies flat on the table, so a point of its surface seen at pixel ``p`` from one camera pose
is seen from another pose at ``H p`` (lens distortion handled on both sides by
:func:`calibration.homography.warp_image_between_poses`). Camera poses come from the recorded TCP
poses: ``T_base_cam = T_base_tcp @ T_flange_cam``.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from calibration.homography import plane_homography, warp_image_between_poses
from calibration.transforms import Transform
from cell.geometry import (  # noqa: F401 - the geometry moved to cell.geometry; these names stay importable here
    CellGeometry as CarryGeometry,
    GeometryError as CarryError,
    GeometryResolver,
    geometry_from_mapping,
    plane_from_config,
)


def carry_mask(
    mask: np.ndarray,
    geometry: CarryGeometry,
    src_tcp_pose: Sequence[float],
    dst_tcp_pose: Sequence[float],
) -> np.ndarray:
    """Warp a (H, W) bool mask seen from ``src_tcp_pose`` to how it appears from ``dst_tcp_pose``.

    The mask must have the camera model's size. Pixels whose ray misses the source image stay False.
    Returns (H, W) bool (nearest-neighbour sampling: no grey edges).
    """
    labels = np.not_equal(np.asarray(mask), 0).view(np.uint8)  # 0/1 even for a .view(bool) of a 0/255 image
    return carry_labels(labels, geometry, src_tcp_pose, dst_tcp_pose).view(bool)


def carry_labels(
    labels: np.ndarray,
    geometry: CarryGeometry,
    src_tcp_pose: Sequence[float],
    dst_tcp_pose: Sequence[float],
) -> np.ndarray:
    """Warp a (H, W) uint8 label map (0 = no defect, k = a defect type) from ``src_tcp_pose`` to how it
    appears from ``dst_tcp_pose``, by nearest-neighbour sampling: every carried pixel keeps exactly the
    label of the source pixel it comes from. Pixels whose ray misses the source image get 0.
    Returns (H, W) uint8.
    """
    mask = np.ascontiguousarray(labels, dtype=np.uint8)
    cam = geometry.camera
    if mask.shape != (cam.height, cam.width):
        raise CarryError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} px but the camera model ({geometry.source or 'geometry'}) "
            f"is {cam.width}x{cam.height} px"
        )
    src = geometry.camera_pose(src_tcp_pose)
    dst = geometry.camera_pose(dst_tcp_pose)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return np.zeros(mask.shape, dtype=np.uint8)
    try:
        window = _destination_window(mask, rows, geometry, src, dst)
        if window is None:
            return np.zeros(mask.shape, dtype=np.uint8)
        if window == (0, 0, cam.width, cam.height):
            return warp_image_between_poses(mask, cam, src, dst, geometry.plane_point, geometry.plane_normal)
        return _warp_window(mask, geometry, src, dst, window)
    except ValueError as exc:  # a camera on the plane: no homography
        raise CarryError(f"cannot carry the mask: {exc}") from exc


def _destination_window(mask: np.ndarray, rows: np.ndarray, geometry: CarryGeometry, src: Transform,
                        dst: Transform, pad: int = 6, samples: int = 32) -> tuple[int, int, int, int] | None:
    """A box (x0, y0, x1, y1) of destination pixels that holds every pixel the mask can land on.

    The source mask's bounding box edges (densely sampled, lens distortion honoured) are mapped through
    the plane homography; the box of their images, padded, is clipped to the image. The whole image when
    the mapping is degenerate (points behind the destination camera).
    """
    cam = geometry.camera
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    x0, x1 = cols[0] - 1.0, cols[-1] + 1.0
    y0, y1 = rows[0] - 1.0, rows[-1] + 1.0
    t = np.linspace(0.0, 1.0, samples)
    edge = np.concatenate([
        np.stack([x0 + (x1 - x0) * t, np.full_like(t, y0)], 1), np.stack([x0 + (x1 - x0) * t, np.full_like(t, y1)], 1),
        np.stack([np.full_like(t, x0), y0 + (y1 - y0) * t], 1), np.stack([np.full_like(t, x1), y0 + (y1 - y0) * t], 1),
    ])
    H = plane_homography(cam, cam, src, dst, geometry.plane_point, geometry.plane_normal)
    norm = cam.undistort_pixels(edge)
    ideal = np.concatenate([norm, np.ones((len(norm), 1))], 1) @ cam.K.T
    mapped = ideal @ H.T
    if np.any(mapped[:, 2] <= 0):
        return 0, 0, cam.width, cam.height
    ideal_dst = mapped[:, :2] / mapped[:, 2:3]
    dist = cam.distort_normalized((ideal_dst - [cam.cx, cam.cy]) / [cam.fx, cam.fy])
    px = dist * [cam.fx, cam.fy] + [cam.cx, cam.cy]
    if not np.all(np.isfinite(px)):
        return 0, 0, cam.width, cam.height
    bx0 = max(int(np.floor(px[:, 0].min())) - pad, 0)
    by0 = max(int(np.floor(px[:, 1].min())) - pad, 0)
    bx1 = min(int(np.ceil(px[:, 0].max())) + pad + 1, cam.width)
    by1 = min(int(np.ceil(px[:, 1].max())) + pad + 1, cam.height)
    if bx0 >= bx1 or by0 >= by1:
        return None
    return bx0, by0, bx1, by1


def _warp_window(mask: np.ndarray, geometry: CarryGeometry, src: Transform, dst: Transform,
                 window: tuple[int, int, int, int]) -> np.ndarray:
    """:func:`warp_image_between_poses` of a (H, W) uint8 label map computed only for the destination pixels
    in ``window`` (the same per-pixel mapping: undistort, plane homography back to the source, distort,
    nearest); (H, W) uint8, 0 outside the window."""
    cam = geometry.camera
    x0, y0, x1, y1 = window
    H_dst_to_src = plane_homography(cam, cam, dst, src, geometry.plane_point, geometry.plane_normal)
    grid = cam.normalized_grid()[y0:y1, x0:x1].reshape(-1, 2).astype(np.float64)
    homog = np.concatenate([grid, np.ones((grid.shape[0], 1))], axis=1)
    src_h = (homog @ cam.K.T) @ H_dst_to_src.T
    with np.errstate(divide="ignore", invalid="ignore"):
        src_ideal = src_h[:, :2] / src_h[:, 2:3]
    src_dist = cam.distort_normalized((src_ideal - [cam.cx, cam.cy]) / [cam.fx, cam.fy])
    shape = (y1 - y0, x1 - x0)
    map_x = (src_dist[:, 0] * cam.fx + cam.cx).reshape(shape).astype(np.float32)
    map_y = (src_dist[:, 1] * cam.fy + cam.cy).reshape(shape).astype(np.float32)
    bad = ~np.isfinite(map_x) | ~np.isfinite(map_y) | (src_h[:, 2].reshape(shape) <= 0)
    map_x[bad] = -1
    map_y[bad] = -1
    part = cv2.remap(mask, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = np.zeros(mask.shape, dtype=np.uint8)
    out[y0:y1, x0:x1] = part
    return out
