"""Carrying a defect mask from one pose of a part to its other poses (plane homography of the table).

The part lies flat on the table, so a point of its surface seen at pixel ``p`` from one camera pose
is seen from another pose at ``H p`` (lens distortion handled on both sides by
:func:`calibration.homography.warp_image_between_poses`). Camera poses come from the recorded TCP
poses: ``T_base_cam = T_base_tcp @ T_flange_cam``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from calibration.camera_model import CameraModel
from calibration.homography import plane_homography, warp_image_between_poses
from calibration.transforms import Transform


class CarryError(ValueError):
    """Carry-over is impossible: no geometry known, a pose is missing, or the image sizes differ."""


@dataclass(frozen=True)
class CarryGeometry:
    """What carry-over needs: the camera model, the camera-on-flange transform and the table plane.

    ``T_flange_cam``: camera frame -> TCP frame (metres). ``plane_point`` (3,) metres and
    ``plane_normal`` (3,) unit vector: the surface of the part, in the robot base frame.
    ``source``: where this came from (shown to the user).
    """

    camera: CameraModel
    T_flange_cam: Transform
    plane_point: np.ndarray
    plane_normal: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        point = np.asarray(self.plane_point, dtype=float).reshape(-1)
        normal = np.asarray(self.plane_normal, dtype=float).reshape(-1)
        if point.shape != (3,) or normal.shape != (3,):
            raise CarryError(f"plane point and normal need 3 values each, got {point.shape} and {normal.shape}")
        norm = float(np.linalg.norm(normal))
        if not np.isfinite(norm) or norm < 1e-12:
            raise CarryError(f"plane normal {normal.tolist()} has no direction")
        object.__setattr__(self, "plane_point", point)
        object.__setattr__(self, "plane_normal", normal / norm)

    def camera_pose(self, tcp_pose: Sequence[float]) -> Transform:
        """``T_base_cam`` for a recorded TCP pose ``[x, y, z, rx, ry, rz]`` (m, rad)."""
        pose = np.asarray(tcp_pose, dtype=float)
        if pose.shape != (6,) or not np.all(np.isfinite(pose)):
            raise CarryError(f"a TCP pose needs 6 finite values [x, y, z, rx, ry, rz], got {pose.tolist()}")
        return Transform.from_pose(pose) @ self.T_flange_cam


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


def geometry_from_mapping(data: Mapping[str, Any], source: str) -> CarryGeometry:
    """Build a :class:`CarryGeometry` from a mapping (metres and radians).

    Keys: ``camera`` (``CameraModel.to_dict()`` layout), ``T_flange_cam`` (a pose ``[x, y, z, rx, ry, rz]``
    or a 4x4 matrix), ``plane_point`` (3,) and ``plane_normal`` (3,) (default ``[0, 0, 1]``).
    Missing or malformed keys raise CarryError naming ``source`` and the key.
    """
    try:
        camera = CameraModel.from_dict(data["camera"])
    except KeyError as exc:
        raise CarryError(f"{source}: missing key 'camera.{exc.args[0]}'" if exc.args[0] != "camera" else f"{source}: missing key 'camera'") from None
    except (TypeError, ValueError) as exc:
        raise CarryError(f"{source}: key 'camera': {exc}") from None
    if "T_flange_cam" not in data:
        raise CarryError(f"{source}: missing key 'T_flange_cam'")
    raw = np.asarray(data["T_flange_cam"], dtype=float)
    if raw.shape == (6,):
        T = Transform.from_pose(raw)
    elif raw.shape == (4, 4):
        T = Transform(raw)
    else:
        raise CarryError(f"{source}: key 'T_flange_cam' needs a 6-value pose or a 4x4 matrix, got shape {raw.shape}")
    if "plane_point" not in data:
        raise CarryError(f"{source}: missing key 'plane_point'")
    return CarryGeometry(
        camera=camera,
        T_flange_cam=T,
        plane_point=np.asarray(data["plane_point"], dtype=float),
        plane_normal=np.asarray(data.get("plane_normal", (0.0, 0.0, 1.0)), dtype=float),
        source=source,
    )


# --- where the geometry of a stored capture comes from ------------------------------------------------
def _find_key(data: Any, key: str, depth: int = 0) -> Any:
    """The first value stored under ``key`` anywhere in nested mappings/lists (breadth of a config)."""
    if depth > 8:
        return None
    if isinstance(data, Mapping):
        if key in data:
            return data[key]
        children = list(data.values())
    elif isinstance(data, (list, tuple)):
        children = list(data)
    else:
        return None
    for child in children:
        found = _find_key(child, key, depth + 1)
        if found is not None:
            return found
    return None


def _find_mapping_with(data: Any, key: str, depth: int = 0) -> Mapping[str, Any] | None:
    """The first nested mapping that has ``key`` among its keys."""
    if depth > 8:
        return None
    if isinstance(data, Mapping):
        if key in data:
            return data
        children = list(data.values())
    elif isinstance(data, (list, tuple)):
        children = list(data)
    else:
        return None
    for child in children:
        found = _find_mapping_with(child, key, depth + 1)
        if found is not None:
            return found
    return None


def plane_from_config(config: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The part plane from a campaign config: ``plan.part_center_pose`` (its origin and its z axis)."""
    pose = _find_key(config or {}, "part_center_pose")
    if pose is None:
        return None
    try:
        T = Transform.from_pose(np.asarray(pose, dtype=float))
    except (TypeError, ValueError):
        return None
    return T.translation.copy(), T.rotation[:, 2].copy(), "campaign plan part_center_pose"


class GeometryResolver:
    """Finds the carry-over geometry of each stored capture, caching one answer per campaign.

    Order: an explicit ``camera`` + ``T_flange_cam`` (the calibration in force, e.g. from ``--calibration``);
    else a simulated camera section found in the campaign's stored config (``flange_to_camera`` key,
    validated as :class:`acquisition.sim.camera.SimCameraConfig`); else, for simulated captures, the
    default simulated camera of the capture's size with ``T_flange_cam`` recovered from the recorded
    ``sim_T_base_cam`` and TCP pose. The plane: ``plane_z_m`` when given (horizontal plane), else the
    campaign plan's ``part_center_pose``, else the table plane z = 0.
    """

    def __init__(
        self,
        campaign_config: "Callable[[str], Mapping[str, Any] | None]",
        camera: CameraModel | None = None,
        T_flange_cam: Transform | None = None,
        plane_z_m: float | None = None,
        source: str = "calibration",
    ) -> None:
        if (camera is None) != (T_flange_cam is None):
            raise CarryError("give both the camera model and T_flange_cam, or neither")
        self._campaign_config = campaign_config
        self._camera = camera
        self._T = T_flange_cam
        self._plane_z = plane_z_m
        self._source = source
        self._cache: dict[str, CarryGeometry | None] = {}

    def __call__(self, record: Any) -> CarryGeometry | None:
        key = f"{record.campaign}:{record.width}x{record.height}"
        if key not in self._cache:
            self._cache[key] = self._resolve(record)
        return self._cache[key]

    def _resolve(self, record: Any) -> CarryGeometry | None:
        config = self._campaign_config(record.campaign) or {}
        plane = plane_from_config(config)
        if self._plane_z is not None:
            plane = (np.array([0.0, 0.0, self._plane_z]), np.array([0.0, 0.0, 1.0]), f"plane z = {self._plane_z} m")
        elif plane is None:
            plane = (np.zeros(3), np.array([0.0, 0.0, 1.0]), "table plane z = 0")
        camera, T, source = self._camera, self._T, self._source
        if camera is None:
            camera, T, source = self._from_recorded_geometry(config, record)
        if camera is None:
            camera, T, source = self._from_sim_config(config, record)
        if camera is None or T is None:
            return None
        return CarryGeometry(camera, T, plane[0], plane[1], source=f"{source}; {plane[2]}")

    @staticmethod
    def _from_recorded_geometry(config: Mapping[str, Any], record: Any) -> tuple[Any, Any, str]:
        """``camera_model`` + ``T_flange_cam`` recorded in the campaign config (what `cell capture` stores)."""
        section = _find_mapping_with(config, "camera_model")
        if section is None or "T_flange_cam" not in section:
            return None, None, ""
        try:
            geometry = geometry_from_mapping(
                {"camera": section["camera_model"], "T_flange_cam": section["T_flange_cam"], "plane_point": (0, 0, 0)},
                f"campaign {record.campaign} config",
            )
        except (CarryError, TypeError, ValueError) as exc:
            raise CarryError(f"campaign {record.campaign}: recorded geometry is invalid: {exc}") from None
        return geometry.camera, geometry.T_flange_cam, f"geometry recorded by campaign {record.campaign}"

    @staticmethod
    def _from_sim_config(config: Mapping[str, Any], record: Any) -> tuple[Any, Any, str]:
        from acquisition.sim.camera import SimCameraConfig

        section = _find_mapping_with(config, "flange_to_camera")
        if section is not None:
            known = {k: v for k, v in section.items() if k in SimCameraConfig.model_fields}
            try:
                sim = SimCameraConfig.model_validate(known)
            except ValueError as exc:
                raise CarryError(f"campaign {record.campaign}: camera section of its config is invalid: {exc}") from None
            return sim.camera_model(), sim.flange_to_camera.transform(), f"sim camera config of campaign {record.campaign}"
        T_base_cam = record.extra.get("sim_T_base_cam") if isinstance(record.extra, Mapping) else None
        if T_base_cam is None:
            return None, None, ""
        sim = SimCameraConfig(width=record.width, height=record.height)
        T_flange_cam = Transform.from_pose(record.actual_pose).inverse() @ Transform.from_pose(T_base_cam)
        return sim.camera_model(), T_flange_cam, "default sim camera (T_flange_cam from the recorded sim pose)"
