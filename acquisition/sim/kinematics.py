"""UR5 forward and inverse kinematics on the standard Denavit-Hartenberg model.

Frames: the robot base frame of the UR controller (the frame ur_rtde reports poses in), the flange
frame at the end of joint 6, and the TCP frame ``T_flange_tcp`` (ur_rtde's ``setTcp`` pose) on top of
it. Poses are UR poses ``[x, y, z, rx, ry, rz]`` (metres, rotation vector in radians) of the TCP in the
base frame; joint vectors are 6 angles in radians.

Forward kinematics follows :data:`UR5_DH` (:func:`dh_forward_matrices`; single joint vectors go through
the compiled forward kinematics of the PyPI package ``ur-analytic-ik``, the same model, for speed).
Inverse kinematics uses that package's closed-form solver, then every candidate is verified with
forward kinematics, shifted by multiples of 2 pi to lie within the joint limits and as close as
possible to ``q_near``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import ur_analytic_ik

from acquisition.errors import UnreachablePose

#: Largest accepted mismatch of a verified IK solution (entries of the 4x4 flange transform, metres or unitless).
_IK_VERIFY_TOL = 1e-8


@dataclass(frozen=True)
class DHParameters:
    """Standard DH parameters of a 6-axis arm: ``d`` and ``a`` in metres, ``alpha`` in radians, each (6,)."""

    d: tuple[float, float, float, float, float, float]
    a: tuple[float, float, float, float, float, float]
    alpha: tuple[float, float, float, float, float, float]


#: Universal Robots' published DH parameters of the UR5 (CB series).
UR5_DH = DHParameters(
    d=(0.089159, 0.0, 0.0, 0.10915, 0.09465, 0.0823),
    a=(0.0, -0.425, -0.39225, 0.0, 0.0, 0.0),
    alpha=(np.pi / 2, 0.0, 0.0, np.pi / 2, -np.pi / 2, 0.0),
)

#: Joint limits of the UR5: every joint turns +-360 degrees.
UR5_JOINT_LIMIT = 2.0 * np.pi

#: Joint angles (rad) of the default home: TCP 0.50 m above the default part centre (0, -0.45, 0) m
#: (the simulated scene's nominal sheet placement), tool pointing down, elbow up. The simulated robot
#: and the fake UR controller both start here (and configs/cells/sim.yaml repeats it).
UR5_HOME_JOINTS: tuple[float, float, float, float, float, float] = (
    1.3258, -1.6744, 1.4939, -1.3903, -1.5708, 2.8966
)


def _as_joint_array(q: Sequence[float] | np.ndarray, name: str = "q") -> np.ndarray:
    arr = np.asarray(q, dtype=float)
    if arr.shape[-1:] != (6,):
        raise ValueError(f"{name} needs 6 joint angles (rad), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains a non-finite value: {arr.tolist()}")
    return arr


def _as_pose_array(pose: Sequence[float] | np.ndarray, name: str = "pose") -> np.ndarray:
    arr = np.asarray(pose, dtype=float)
    if arr.shape != (6,):
        raise ValueError(f"{name} needs 6 values [x, y, z, rx, ry, rz], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains a non-finite value: {arr.tolist()}")
    return arr


def fast_pose_to_matrix(pose: np.ndarray) -> np.ndarray:
    """UR pose (6,) -> 4x4 matrix (Rodrigues' formula; same result as calibration.transforms, ~10x faster)."""
    x, y, z, rx, ry, rz = (float(v) for v in pose)
    theta = math.sqrt(rx * rx + ry * ry + rz * rz)
    m = np.eye(4)
    if theta > 1e-12:
        kx, ky, kz = rx / theta, ry / theta, rz / theta
        c, s = math.cos(theta), math.sin(theta)
        v = 1.0 - c
        m[0, 0], m[0, 1], m[0, 2] = c + kx * kx * v, kx * ky * v - kz * s, kx * kz * v + ky * s
        m[1, 0], m[1, 1], m[1, 2] = ky * kx * v + kz * s, c + ky * ky * v, ky * kz * v - kx * s
        m[2, 0], m[2, 1], m[2, 2] = kz * kx * v - ky * s, kz * ky * v + kx * s, c + kz * kz * v
    m[0, 3], m[1, 3], m[2, 3] = x, y, z
    return m


def fast_matrix_to_rotvec(r: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> rotation vector (3,), angle in [0, pi], via the quaternion (robust near pi)."""
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    # Shepperd's method: pick the largest quaternion component for numerical stability
    if trace > max(r[0, 0], r[1, 1], r[2, 2]):
        w = 0.5 * math.sqrt(max(1.0 + trace, 0.0))
        f = 0.25 / w
        qx, qy, qz = (r[2, 1] - r[1, 2]) * f, (r[0, 2] - r[2, 0]) * f, (r[1, 0] - r[0, 1]) * f
    elif r[0, 0] >= r[1, 1] and r[0, 0] >= r[2, 2]:
        qx = 0.5 * math.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 0.0))
        f = 0.25 / qx
        w, qy, qz = (r[2, 1] - r[1, 2]) * f, (r[0, 1] + r[1, 0]) * f, (r[0, 2] + r[2, 0]) * f
    elif r[1, 1] >= r[2, 2]:
        qy = 0.5 * math.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], 0.0))
        f = 0.25 / qy
        w, qx, qz = (r[0, 2] - r[2, 0]) * f, (r[0, 1] + r[1, 0]) * f, (r[1, 2] + r[2, 1]) * f
    else:
        qz = 0.5 * math.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], 0.0))
        f = 0.25 / qz
        w, qx, qy = (r[1, 0] - r[0, 1]) * f, (r[0, 2] + r[2, 0]) * f, (r[1, 2] + r[2, 1]) * f
    if w < 0:
        w, qx, qy, qz = -w, -qx, -qy, -qz
    sin_half = math.sqrt(qx * qx + qy * qy + qz * qz)
    if sin_half < 1e-12:
        return np.zeros(3)
    angle = 2.0 * math.atan2(sin_half, w)
    scale = angle / sin_half
    return np.array([qx * scale, qy * scale, qz * scale])


def fast_matrix_to_pose(m: np.ndarray) -> np.ndarray:
    """4x4 matrix -> UR pose (6,)."""
    out = np.empty(6)
    out[:3] = m[:3, 3]
    out[3:] = fast_matrix_to_rotvec(m[:3, :3])
    return out


def flange_matrix(q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Flange transform (4, 4) in the base frame (metres) for one joint vector ``q`` (6,) in radians.

    The compiled forward kinematics of ``ur-analytic-ik``: the :data:`UR5_DH` model (checked against
    :func:`dh_forward_matrices` in the tests), about 15x faster for a single joint vector. No input checks.
    """
    return np.asarray(ur_analytic_ik.ur5.forward_kinematics(*(float(v) for v in q)))


def interpolate_pose_matrix(
    start_m: np.ndarray, target_m: np.ndarray, relative_rotvec: np.ndarray, s: float
) -> np.ndarray:
    """Pose matrix (4, 4) at fraction ``s`` in [0, 1] of the straight path from ``start_m`` to ``target_m``.

    The position (metres) is interpolated linearly, the orientation by slerp: ``relative_rotvec`` (3,)
    radians is ``log(R_start^T R_target)`` as a rotation vector, computed once per path by the caller.
    """
    out = np.eye(4)
    out[:3, 3] = (1.0 - s) * start_m[:3, 3] + s * target_m[:3, 3]
    step = fast_pose_to_matrix(np.concatenate([np.zeros(3), s * relative_rotvec]))
    out[:3, :3] = start_m[:3, :3] @ step[:3, :3]
    return out


def dh_forward_matrices(q: np.ndarray, dh: DHParameters = UR5_DH) -> np.ndarray:
    """Flange transforms in the base frame for joint vectors ``q`` (..., 6) -> (..., 4, 4)."""
    q = np.asarray(q, dtype=float)
    batch = q.shape[:-1]
    out = np.broadcast_to(np.eye(4), batch + (4, 4)).copy()
    for i in range(6):
        ct, st = np.cos(q[..., i]), np.sin(q[..., i])
        ca, sa = np.cos(dh.alpha[i]), np.sin(dh.alpha[i])
        link = np.zeros(batch + (4, 4))
        link[..., 0, 0] = ct
        link[..., 0, 1] = -st * ca
        link[..., 0, 2] = st * sa
        link[..., 0, 3] = dh.a[i] * ct
        link[..., 1, 0] = st
        link[..., 1, 1] = ct * ca
        link[..., 1, 2] = -ct * sa
        link[..., 1, 3] = dh.a[i] * st
        link[..., 2, 1] = sa
        link[..., 2, 2] = ca
        link[..., 2, 3] = dh.d[i]
        link[..., 3, 3] = 1.0
        out = out @ link
    return out


class UR5Kinematics:
    """Forward and inverse kinematics of a UR5 with a TCP offset.

    ``tcp_offset``: the TCP in the flange frame as a UR pose (6,) (metres, rotation vector), as given
    to ur_rtde's ``setTcp``; zeros (default) puts the TCP at the flange.
    ``joint_limit``: each joint must stay in ``[-joint_limit, +joint_limit]`` radians.
    """

    def __init__(
        self,
        tcp_offset: Sequence[float] | None = None,
        joint_limit: float = UR5_JOINT_LIMIT,
    ) -> None:
        offset = np.zeros(6) if tcp_offset is None else _as_pose_array(tcp_offset, "tcp_offset")
        self.tcp_offset = offset
        self._T_flange_tcp = fast_pose_to_matrix(offset)
        self._T_tcp_flange = np.linalg.inv(self._T_flange_tcp)
        if not joint_limit > 0:
            raise ValueError(f"joint_limit must be positive, got {joint_limit!r}")
        self.joint_limit = float(joint_limit)
        self.dh = UR5_DH

    # --- forward ----------------------------------------------------------------------------------
    def forward_matrix(self, q: Sequence[float] | np.ndarray) -> np.ndarray:
        """TCP transform(s) in the base frame: ``q`` (6,) or (N, 6) -> (4, 4) or (N, 4, 4)."""
        q = _as_joint_array(q)
        if q.shape == (6,):
            return flange_matrix(q) @ self._T_flange_tcp
        return dh_forward_matrices(q, self.dh) @ self._T_flange_tcp

    def forward(self, q: Sequence[float] | np.ndarray) -> np.ndarray:
        """TCP pose (6,) ``[x, y, z, rx, ry, rz]`` in the base frame for joint angles ``q`` (6,), radians."""
        q = _as_joint_array(q)
        if q.shape != (6,):
            raise ValueError(f"forward() takes one joint vector (6,), got shape {q.shape}")
        return fast_matrix_to_pose(self.forward_matrix(q))

    # --- inverse ----------------------------------------------------------------------------------
    def inverse_all(self, pose: Sequence[float] | np.ndarray) -> list[np.ndarray]:
        """Every verified IK solution (each (6,), radians, wrapped to [-pi, pi)) for a TCP pose (6,).

        Empty when the pose is out of reach. Solutions whose forward kinematics misses the pose by
        more than 1e-8 (near singular configurations) are dropped.
        """
        return list(self._solution_array(fast_pose_to_matrix(_as_pose_array(pose))))

    def _solution_array(self, target_tcp: np.ndarray) -> np.ndarray:
        """Verified IK solutions (K, 6) wrapped to [-pi, pi) for a TCP transform (4, 4)."""
        flange = np.ascontiguousarray(target_tcp @ self._T_tcp_flange)
        raw = ur_analytic_ik.ur5.inverse_kinematics(flange)
        if len(raw) == 0:
            return np.zeros((0, 6))
        cands = np.asarray(raw, dtype=float).reshape(-1, 6)
        cands = cands[np.all(np.isfinite(cands), axis=1)]
        wrapped = np.mod(cands + np.pi, 2.0 * np.pi) - np.pi
        fk = ur_analytic_ik.ur5.forward_kinematics
        keep = [
            float(np.abs(fk(*row.tolist()) - flange).max()) <= _IK_VERIFY_TOL for row in wrapped
        ]
        return wrapped[np.asarray(keep, dtype=bool)] if keep else np.zeros((0, 6))

    def inverse(
        self, pose: Sequence[float] | np.ndarray, q_near: Sequence[float] | np.ndarray | None = None
    ) -> np.ndarray:
        """Joint angles (6,) that put the TCP at ``pose`` (6,), the solution closest to ``q_near``.

        ``q_near`` (6,) radians, default all zeros. Each joint is shifted by a multiple of 2 pi to lie
        within the joint limits and as close as possible to ``q_near``; among the IK branches the one
        with the smallest Euclidean joint distance wins. Raises :class:`UnreachablePose` when no
        solution exists.
        """
        pose_arr = _as_pose_array(pose)
        near = np.zeros(6) if q_near is None else _as_joint_array(q_near, "q_near")
        solutions = self._solution_array(fast_pose_to_matrix(pose_arr))
        best: np.ndarray | None = None
        if len(solutions):
            shifted, valid = self._shift_towards(solutions, near)
            if valid.any():
                dist = np.linalg.norm(shifted - near, axis=1)
                dist[~valid] = np.inf
                best = shifted[int(np.argmin(dist))]
        if best is None:
            shown = ", ".join(f"{v:.4f}" for v in pose_arr)
            raise UnreachablePose(f"pose [{shown}] is out of the UR5's reach (no inverse kinematics solution)")
        return best

    def _shift_towards(self, sols: np.ndarray, near: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shift each joint of ``sols`` (K, 6) by 2 pi k to be nearest ``near`` within the joint limits.

        Returns the shifted solutions (K, 6) and a (K,) bool mask of those that fit the limits.
        """
        two_pi = 2.0 * np.pi
        out = sols + np.round((near - sols) / two_pi) * two_pi
        limit = self.joint_limit + 1e-12
        # the nearest copy may lie beyond a limit: take the next copy inwards instead
        out = np.where(out > limit, out - two_pi, out)
        out = np.where(out < -limit, out + two_pi, out)
        valid = np.all(np.abs(out) <= limit, axis=1)
        return out, valid
