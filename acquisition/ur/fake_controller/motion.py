"""Timed motion of the fake UR5: a path parameter driven by an online trapezoid speed profile.

A :class:`Motion` moves a scalar ``s`` from 0 to ``length`` (metres for linear moves, radians of the
leading joint for joint moves) with speed limit ``speed`` and acceleration ``accel``; ``stop(decel)``
brakes along the same path. :class:`LinearPath` and :class:`JointPath` map ``s`` to a joint vector.

Forward kinematics and the straight-line pose interpolation are those of the simulated UR5
(:mod:`acquisition.sim.kinematics`). What stays here differs from the simulation on purpose:

* :class:`Motion` integrates the speed profile tick by tick at the controller rate, so that a move can
  be braked along its path at any tick (``stopL``/``stopJ`` with their deceleration, protective stop);
  the simulation evaluates the closed-form trapezoid of the whole move
  (:func:`acquisition.sim.robot.trapezoid_position`) and an interrupted sim move halts where that
  profile is at the instant, without braking;
* :func:`inverse` mimics URScript's ``get_inverse_kin(pose, qnear)``: it keeps every finite closed-form
  branch, moves each joint to the copy nearest ``q_near`` with no joint-limit check and no forward
  verification, and returns None when there is none; :meth:`UR5Kinematics.inverse` drops branches that
  miss the pose by more than 1e-8, keeps joints within +-2 pi, and raises ``UnreachablePose``;
* :func:`inverse_near` (Newton steps that stay on the current arm configuration along a linear path) has
  no counterpart in the simulation, which plans whole paths with the closed-form solver ahead of time.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import ur_analytic_ik

from acquisition.sim.kinematics import flange_matrix, interpolate_pose_matrix
from calibration.transforms import matrix_to_rotvec, pose_to_matrix


def forward(q: np.ndarray, T_flange_tcp: np.ndarray) -> np.ndarray:
    """Base -> TCP homogeneous matrix (4, 4) of the UR5 at joints ``q`` (6,) rad (metres)."""
    return flange_matrix(q) @ T_flange_tcp


def inverse(T_base_tcp: np.ndarray, T_flange_tcp: np.ndarray, q_near: np.ndarray) -> Optional[np.ndarray]:
    """Joint vector (6,) reaching ``T_base_tcp`` closest to ``q_near``, or None when unreachable."""
    T_base_flange = np.ascontiguousarray(T_base_tcp @ np.linalg.inv(T_flange_tcp))
    solutions = ur_analytic_ik.ur5.inverse_kinematics(T_base_flange)
    best: Optional[np.ndarray] = None
    for sol in solutions:
        q = np.asarray(sol, dtype=float)
        if not np.all(np.isfinite(q)):
            continue
        # Each joint on the branch nearest to where it is (UR joints turn +-2 pi).
        q = q_near + (q - q_near + math.pi) % (2 * math.pi) - math.pi
        if best is None or np.sum((q - q_near) ** 2) < np.sum((best - q_near) ** 2):
            best = q
    return best


def _pose_error(T_target: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Position error (3,) m and rotation error (3,) rad as a base-frame rotation vector."""
    return np.concatenate([T_target[:3, 3] - T[:3, 3], matrix_to_rotvec(T_target[:3, :3] @ T[:3, :3].T)])


def inverse_near(T_base_tcp: np.ndarray, T_flange_tcp: np.ndarray, q_near: np.ndarray,
                 tol: float = 1e-10, max_iter: int = 8) -> Optional[np.ndarray]:
    """Joints (6,) reaching ``T_base_tcp`` found by Newton steps from ``q_near`` (a nearby solution).

    Used along linear paths, where each step is small: it stays on the current arm configuration,
    which the closed-form solver does not guarantee. None when it does not converge (singularity).
    """
    q = np.asarray(q_near, dtype=float).copy()
    h = 1e-7
    for _ in range(max_iter):
        T = forward(q, T_flange_tcp)
        err = _pose_error(T_base_tcp, T)
        if float(np.max(np.abs(err))) < tol:
            return q
        J = np.empty((6, 6))
        for i in range(6):
            dq = q.copy()
            dq[i] += h
            J[:, i] = _pose_error(forward(dq, T_flange_tcp), T) / h
        try:
            step = np.linalg.solve(J, err)
        except np.linalg.LinAlgError:
            return None
        q = q + np.clip(step, -0.3, 0.3)
    T = forward(q, T_flange_tcp)
    return q if float(np.max(np.abs(_pose_error(T_base_tcp, T)))) < 1e-7 else None


class Motion:
    """Scalar trapezoid profile: ``s`` in [0, length], speed <= ``speed``, |acceleration| <= ``accel``."""

    def __init__(self, length: float, speed: float, accel: float) -> None:
        self.length = max(0.0, float(length))
        self.speed = max(1e-9, float(speed))
        self.accel = max(1e-9, float(accel))
        self.s = 0.0
        self.v = 0.0
        self.stopping = False
        self.done = self.length <= 0.0

    def stop(self, decel: float) -> None:
        """Brake at ``decel`` from the current speed; the motion ends where the speed reaches 0."""
        self.accel = max(1e-9, float(decel))
        self.length = min(self.length, self.s + self.v * self.v / (2 * self.accel))
        self.stopping = True
        if self.v <= 0.0:
            self.done = True

    def step(self, dt: float) -> None:
        """Advance the profile by ``dt`` seconds."""
        if self.done:
            return
        remaining = self.length - self.s
        brake_distance = self.v * self.v / (2 * self.accel)
        if remaining <= brake_distance + 1e-12:
            new_v = max(0.0, self.v - self.accel * dt)
        else:
            new_v = min(self.speed, self.v + self.accel * dt)
        self.s += 0.5 * (self.v + new_v) * dt
        self.v = new_v
        if self.s >= self.length - 1e-9 or (self.v <= 0.0 and remaining <= brake_distance + 1e-9):
            self.s = self.length
            self.v = 0.0
            self.done = True


class JointPath:
    """Straight line in joint space from ``q0`` to ``q1``; ``s`` = angle of the leading joint (rad)."""

    def __init__(self, q0: np.ndarray, q1: np.ndarray) -> None:
        self.q0 = np.asarray(q0, dtype=float)
        self.dq = np.asarray(q1, dtype=float) - self.q0
        self.length = float(np.max(np.abs(self.dq)))

    def joints_at(self, s: float, q_now: np.ndarray) -> Optional[np.ndarray]:
        if self.length <= 0:
            return self.q0 + self.dq
        return self.q0 + self.dq * (s / self.length)


class LinearPath:
    """Straight TCP line (position lerp, rotation slerp) between two base-frame TCP matrices.

    ``s`` is metres of TCP travel; a pure rotation uses radians of tool rotation instead.
    ``solve(T)`` returns joints for a TCP matrix near the current joints, or None if unreachable.
    """

    def __init__(self, T0: np.ndarray, T1: np.ndarray, solve: Callable[[np.ndarray, np.ndarray], Optional[np.ndarray]]) -> None:
        self.T0 = T0.copy()
        self.T1 = T1.copy()
        self.w = matrix_to_rotvec(T0[:3, :3].T @ T1[:3, :3])
        lin = float(np.linalg.norm(T1[:3, 3] - T0[:3, 3]))
        self.length = lin if lin > 1e-6 else float(np.linalg.norm(self.w))
        self.solve = solve

    def matrix_at(self, s: float) -> np.ndarray:
        """TCP matrix (4, 4) after ``s`` (metres, or radians for a pure rotation) along the path."""
        f = 1.0 if self.length <= 0 else s / self.length
        return interpolate_pose_matrix(self.T0, self.T1, self.w, f)

    def joints_at(self, s: float, q_now: np.ndarray) -> Optional[np.ndarray]:
        return self.solve(self.matrix_at(s), q_now)


def pose_matrix(pose: np.ndarray) -> np.ndarray:
    """UR pose (6,) -> 4x4."""
    return pose_to_matrix(pose)


def solve_ik(T_base_tcp: np.ndarray, T_flange_tcp: np.ndarray, q_near: np.ndarray) -> Optional[np.ndarray]:
    """Joints for ``T_base_tcp`` near ``q_near``: Newton from ``q_near`` first (same arm configuration),
    the closed-form solver second. None when neither finds a solution."""
    q = inverse_near(T_base_tcp, T_flange_tcp, q_near, max_iter=30)
    if q is not None:
        return q
    return inverse(T_base_tcp, T_flange_tcp, q_near)
