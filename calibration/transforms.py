"""Rigid transforms: rotation vectors <-> matrices <-> 4x4 poses.

Conventions: a UR pose is ``[x, y, z, rx, ry, rz]`` (metres, rotation vector in radians). A
:class:`Transform` ``T_a_b`` maps points expressed in frame ``b`` into frame ``a``:
``p_a = T_a_b @ p_b``; composition ``T_a_c = T_a_b @ T_b_c``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation


def rotvec_to_matrix(rotvec: Sequence[float]) -> np.ndarray:
    """Rotation vector (3,) in radians -> rotation matrix (3, 3)."""
    return Rotation.from_rotvec(np.asarray(rotvec, dtype=float)).as_matrix()


def matrix_to_rotvec(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> rotation vector (3,) in radians, angle in [0, pi]."""
    return Rotation.from_matrix(np.asarray(matrix, dtype=float)).as_rotvec()


def pose_to_matrix(pose: Sequence[float]) -> np.ndarray:
    """UR pose ``[x, y, z, rx, ry, rz]`` -> homogeneous matrix (4, 4)."""
    pose = np.asarray(pose, dtype=float)
    if pose.shape != (6,):
        raise ValueError(f"a pose has 6 values [x, y, z, rx, ry, rz], got shape {pose.shape}")
    matrix = np.eye(4)
    matrix[:3, :3] = rotvec_to_matrix(pose[3:])
    matrix[:3, 3] = pose[:3]
    return matrix


def matrix_to_pose(matrix: np.ndarray) -> np.ndarray:
    """Homogeneous matrix (4, 4) -> UR pose (6,)."""
    matrix = np.asarray(matrix, dtype=float)
    return np.concatenate([matrix[:3, 3], matrix_to_rotvec(matrix[:3, :3])])


def rotation_angle_between(r_a: np.ndarray, r_b: np.ndarray) -> float:
    """Angle in radians of the relative rotation between two rotation matrices (3, 3)."""
    relative = np.asarray(r_a, dtype=float).T @ np.asarray(r_b, dtype=float)
    return float(np.linalg.norm(matrix_to_rotvec(relative)))


@dataclass(frozen=True)
class Transform:
    """A rigid transform held as a 4x4 matrix. ``Transform.identity() @ p`` leaves points unchanged."""

    matrix: np.ndarray

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=float)
        if m.shape != (4, 4):
            raise ValueError(f"a Transform needs a 4x4 matrix, got shape {m.shape}")
        object.__setattr__(self, "matrix", m)

    @classmethod
    def identity(cls) -> "Transform":
        return cls(np.eye(4))

    @classmethod
    def from_pose(cls, pose: Sequence[float]) -> "Transform":
        """From a UR pose ``[x, y, z, rx, ry, rz]`` (metres, radians)."""
        return cls(pose_to_matrix(pose))

    @classmethod
    def from_rt(cls, rotation: np.ndarray, translation: Sequence[float]) -> "Transform":
        """From a rotation (3x3 matrix or rotation vector (3,)) and a translation (3,) in metres."""
        rotation = np.asarray(rotation, dtype=float)
        if rotation.shape in ((3,), (3, 1)):
            rotation = rotvec_to_matrix(rotation.reshape(3))
        m = np.eye(4)
        m[:3, :3] = rotation
        m[:3, 3] = np.asarray(translation, dtype=float).reshape(3)
        return cls(m)

    @property
    def rotation(self) -> np.ndarray:
        """Rotation matrix (3, 3)."""
        return self.matrix[:3, :3]

    @property
    def translation(self) -> np.ndarray:
        """Translation (3,), metres."""
        return self.matrix[:3, 3]

    def to_pose(self) -> np.ndarray:
        """UR pose (6,)."""
        return matrix_to_pose(self.matrix)

    def inverse(self) -> "Transform":
        r = self.rotation
        m = np.eye(4)
        m[:3, :3] = r.T
        m[:3, 3] = -r.T @ self.translation
        return Transform(m)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points (N, 3) or (3,) -> same shape."""
        pts = np.asarray(points, dtype=float)
        return pts @ self.rotation.T + self.translation

    def __matmul__(self, other: "Transform") -> "Transform":
        if not isinstance(other, Transform):
            return NotImplemented
        return Transform(self.matrix @ other.matrix)
