"""Homographies induced by a plane between two camera poses (carrying masks across poses).

A plane is given in the world (robot base) frame by a point on it and its normal. Camera poses are
``T_world_cam`` transforms (camera frame -> world frame). Homographies act on UNDISTORTED pixel
coordinates; :func:`warp_image_between_poses` handles lens distortion on both sides.
"""
from __future__ import annotations

import cv2
import numpy as np

from calibration.camera_model import CameraModel
from calibration.transforms import Transform


def plane_homography(
    camera_1: CameraModel,
    camera_2: CameraModel,
    T_world_cam1: Transform,
    T_world_cam2: Transform,
    plane_point_world: np.ndarray,
    plane_normal_world: np.ndarray,
) -> np.ndarray:
    """3x3 homography mapping undistorted pixels of camera 1 to undistorted pixels of camera 2.

    For a world point X on the plane: ``[u2, v2, 1] ~ H @ [u1, v1, 1]``.
    """
    T_c2_c1 = T_world_cam2.inverse() @ T_world_cam1
    T_c1_world = T_world_cam1.inverse()
    n1 = T_c1_world.rotation @ np.asarray(plane_normal_world, dtype=float)
    p1 = T_c1_world.apply(np.asarray(plane_point_world, dtype=float))
    d1 = float(n1 @ p1)  # plane in camera-1 coordinates: n1 . X = d1
    if abs(d1) < 1e-12:
        raise ValueError("camera 1 lies on the plane: the homography is undefined")
    R, t = T_c2_c1.rotation, T_c2_c1.translation
    H_norm = R + np.outer(t, n1) / d1
    H = camera_2.K @ H_norm @ np.linalg.inv(camera_1.K)
    return H / H[2, 2]


def warp_image_between_poses(
    image: np.ndarray,
    camera: CameraModel,
    T_world_cam_src: Transform,
    T_world_cam_dst: Transform,
    plane_point_world: np.ndarray,
    plane_normal_world: np.ndarray,
    interpolation: int = cv2.INTER_NEAREST,
) -> np.ndarray:
    """Warp an image (or mask) seen from the source pose to how it appears from the destination pose.

    Lens distortion is honoured on both sides: for every destination pixel, undistort, map through the
    plane homography back to the source's ideal pixel, re-distort, and sample. Pixels that fall outside
    the source image become 0. ``INTER_NEAREST`` keeps binary masks binary.
    """
    H_dst_to_src = plane_homography(
        camera, camera, T_world_cam_dst, T_world_cam_src, plane_point_world, plane_normal_world
    )
    grid = camera.normalized_grid().reshape(-1, 2).astype(np.float64)
    homog = np.concatenate([grid, np.ones((grid.shape[0], 1))], axis=1)
    # normalised dst -> ideal src pixels -> normalised src
    ideal_dst_pixels = homog @ camera.K.T
    src_h = ideal_dst_pixels @ H_dst_to_src.T
    with np.errstate(divide="ignore", invalid="ignore"):
        src_ideal = src_h[:, :2] / src_h[:, 2:3]
    src_norm = (src_ideal - [camera.cx, camera.cy]) / [camera.fx, camera.fy]
    src_dist = camera.distort_normalized(src_norm)
    map_x = (src_dist[:, 0] * camera.fx + camera.cx).reshape(camera.height, camera.width).astype(np.float32)
    map_y = (src_dist[:, 1] * camera.fy + camera.cy).reshape(camera.height, camera.width).astype(np.float32)
    bad = ~np.isfinite(map_x) | ~np.isfinite(map_y) | (src_h[:, 2].reshape(map_x.shape) <= 0)
    map_x[bad] = -1
    map_y[bad] = -1
    return cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
