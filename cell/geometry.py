"""The geometry in force for a view of a part: camera model, camera-on-flange transform and part plane.

One resolver for every tool that maps pixels of stored captures to the part (labelling carry-over, the
part map of ``cell eval``): :class:`GeometryResolver` finds, per capture, the calibration in force, else the
geometry a campaign recorded, else the simulation's nominal geometry. Camera poses come from the recorded
ACTUAL TCP poses: ``T_base_cam = T_base_tcp @ T_flange_cam``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from calibration.camera_model import CameraModel
from calibration.transforms import Transform


class GeometryError(ValueError):
    """The geometry of a view is unknown or invalid: no camera model, a bad pose, a malformed config key."""


@dataclass(frozen=True)
class CellGeometry:
    """What projecting a view needs: the camera model, the camera-on-flange transform and the part plane.

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
            raise GeometryError(f"plane point and normal need 3 values each, got {point.shape} and {normal.shape}")
        norm = float(np.linalg.norm(normal))
        if not np.isfinite(norm) or norm < 1e-12:
            raise GeometryError(f"plane normal {normal.tolist()} has no direction")
        object.__setattr__(self, "plane_point", point)
        object.__setattr__(self, "plane_normal", normal / norm)

    def camera_pose(self, tcp_pose: Sequence[float]) -> Transform:
        """``T_base_cam`` for a recorded TCP pose ``[x, y, z, rx, ry, rz]`` (m, rad)."""
        pose = np.asarray(tcp_pose, dtype=float)
        if pose.shape != (6,) or not np.all(np.isfinite(pose)):
            raise GeometryError(f"a TCP pose needs 6 finite values [x, y, z, rx, ry, rz], got {pose.tolist()}")
        return Transform.from_pose(pose) @ self.T_flange_cam



def geometry_from_mapping(data: Mapping[str, Any], source: str) -> CellGeometry:
    """Build a :class:`CellGeometry` from a mapping (metres and radians).

    Keys: ``camera`` (``CameraModel.to_dict()`` layout), ``T_flange_cam`` (a pose ``[x, y, z, rx, ry, rz]``
    or a 4x4 matrix), ``plane_point`` (3,) and ``plane_normal`` (3,) (default ``[0, 0, 1]``).
    Missing or malformed keys raise GeometryError naming ``source`` and the key.
    """
    try:
        camera = CameraModel.from_dict(data["camera"])
    except KeyError as exc:
        raise GeometryError(f"{source}: missing key 'camera.{exc.args[0]}'" if exc.args[0] != "camera" else f"{source}: missing key 'camera'") from None
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{source}: key 'camera': {exc}") from None
    if "T_flange_cam" not in data:
        raise GeometryError(f"{source}: missing key 'T_flange_cam'")
    raw = np.asarray(data["T_flange_cam"], dtype=float)
    if raw.shape == (6,):
        T = Transform.from_pose(raw)
    elif raw.shape == (4, 4):
        T = Transform(raw)
    else:
        raise GeometryError(f"{source}: key 'T_flange_cam' needs a 6-value pose or a 4x4 matrix, got shape {raw.shape}")
    if "plane_point" not in data:
        raise GeometryError(f"{source}: missing key 'plane_point'")
    return CellGeometry(
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
    """Finds the geometry of each stored capture, caching one answer per campaign.

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
            raise GeometryError("give both the camera model and T_flange_cam, or neither")
        self._campaign_config = campaign_config
        self._camera = camera
        self._T = T_flange_cam
        self._plane_z = plane_z_m
        self._source = source
        self._cache: dict[str, CellGeometry | None] = {}

    def __call__(self, record: Any) -> CellGeometry | None:
        key = f"{record.campaign}:{record.width}x{record.height}"
        if key not in self._cache:
            self._cache[key] = self._resolve(record)
        return self._cache[key]

    def _resolve(self, record: Any) -> CellGeometry | None:
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
        return CellGeometry(camera, T, plane[0], plane[1], source=f"{source}; {plane[2]}")

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
        except (GeometryError, TypeError, ValueError) as exc:
            raise GeometryError(f"campaign {record.campaign}: recorded geometry is invalid: {exc}") from None
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
                raise GeometryError(f"campaign {record.campaign}: camera section of its config is invalid: {exc}") from None
            return sim.camera_model(), sim.flange_to_camera.transform(), f"sim camera config of campaign {record.campaign}"
        T_base_cam = record.extra.get("sim_T_base_cam") if isinstance(record.extra, Mapping) else None
        if T_base_cam is None:
            return None, None, ""
        sim = SimCameraConfig(width=record.width, height=record.height)
        T_flange_cam = Transform.from_pose(record.actual_pose).inverse() @ Transform.from_pose(T_base_cam)
        return sim.camera_model(), T_flange_cam, "default sim camera (T_flange_cam from the recorded sim pose)"
