"""Benchmark of the simulated camera: render time per frame at the default resolution, and part generation.

Run: ``.venv/bin/python benchmarks/bench_render.py [--frames 30] [--out benchmarks/results/render.json]``.
Renders ``--frames`` captures of a defective default part (0.30 x 0.25 m sheet at 0.1 mm texels) from
slightly different poses for each pixel format (1280 x 1024, 25 mm lens, 0.35 m working distance) and a
ChArUco-like fine board (pre-filtered from a pyramid level); reports the median and 90th percentile wall
time per ``capture()`` (render + sensor model + mask), and the time to generate one part. Writes JSON.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make the benchmarks package importable

from acquisition.sim.camera import SimCamera, SimCameraConfig  # noqa: E402
from acquisition.sim.scene import Scene, SceneConfig  # noqa: E402
from benchmarks.timing import Stopwatch, summary_ms, write_json  # noqa: E402
from calibration.transforms import Transform  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "render.json"
WORKING_DISTANCE_M = 0.35


class _FixedRobot:
    """A robot stand-in whose TCP pose the benchmark sets directly (no motion cost in the numbers)."""

    def __init__(self) -> None:
        self.pose = np.zeros(6)

    def tcp_pose(self) -> np.ndarray:
        return self.pose


def _poses(camera: SimCamera, target: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """TCP poses that put the camera 0.35 m above points within +-20 mm of ``target``, tilted <= 2 deg."""
    out = []
    for _ in range(n):
        tilt = np.deg2rad(rng.uniform(-2, 2, 2))
        R = Transform.from_rt(np.array([np.pi, 0, 0]), np.zeros(3)) @ Transform.from_rt(np.r_[tilt, 0.0], np.zeros(3))
        p = target + np.r_[rng.uniform(-0.02, 0.02, 2), 0.0] - R.rotation[:, 2] * WORKING_DISTANCE_M
        T_base_cam = Transform.from_rt(R.rotation, p)
        out.append((T_base_cam @ camera.T_flange_cam.inverse()).to_pose())
    return out


def _time_captures(camera: SimCamera, robot: _FixedRobot, poses: list[np.ndarray]) -> dict[str, float | int]:
    """Milliseconds per ``capture()`` from each of ``poses`` (after one warm-up capture): wall and CPU."""
    camera.capture()  # warm-up: caches, scratch buffers, pyramid levels
    samples = []
    for pose in poses:
        robot.pose = pose
        with Stopwatch() as sw:
            camera.capture()
        samples.append(sw.sample)
    return {"frames": len(samples), **summary_ms(samples, ("median", "p90", "min", "cpu_median"), count_key=None)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    scene = Scene(SceneConfig(), seed=args.seed)
    with Stopwatch() as sw:
        part = scene.new_part("bench-0001", kind="defective")
    generate_s = sw.wall_s
    with Stopwatch() as sw:
        scene.new_part("bench-0002", kind="good", load=False)
    generate_good_s = sw.wall_s

    robot = _FixedRobot()
    camera = SimCamera(SimCameraConfig(), robot, scene, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    target = part.part_to_base(np.array([list(part.defects[0].center_m)]))[0]
    poses = _poses(camera, target, args.frames, rng)
    results: dict[str, Any] = {}
    with camera:
        for fmt in ("Mono8", "RGB8", "BayerRG8"):
            camera.configure(pixel_format=fmt)
            results[f"part_{fmt}"] = _time_captures(camera, robot, poses)
        camera.configure(pixel_format="Mono8")
        # a fine printed board (0.05 mm per texel): rendered from a pre-filtered pyramid level
        board = np.tile(np.kron(np.array([[0, 255], [255, 0]], np.uint8), np.ones((300, 300), np.uint8)), (7, 9))
        board = np.ascontiguousarray(board[:3600, :4800])
        T_base_board = Transform.from_rt(np.array([np.pi, 0, 0]), target + [-0.12, 0.09, 0.0])
        scene.set_board(board, 0.05e-3, T_base_board)
        results["board_Mono8"] = _time_captures(camera, robot, poses)

    record = {
        "benchmark": "sim camera render",
        "resolution": [camera.camera_model.width, camera.camera_model.height],
        "working_distance_m": WORKING_DISTANCE_M,
        "texture_texels": list(part.grid.shape),
        "part_generation_s": {"defective": generate_s, "good": generate_good_s},
        "capture": results,
        "target_ms": 50.0,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "opencv": cv2.__version__,
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "opencv_threads": cv2.getNumThreads(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
    }
    write_json(args.out, record)
    for name, r in results.items():
        print(f"{name:>14}: median {r['median_ms']:.1f} ms (min {r['min_ms']:.1f}, p90 {r['p90_ms']:.1f}; "
              f"CPU {r['cpu_median_ms']:.1f} ms) per capture, {r['frames']} frames")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (timings are wall-clock)")
    print(f"part generation: {generate_s:.2f} s defective, {generate_good_s:.2f} s good; wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
