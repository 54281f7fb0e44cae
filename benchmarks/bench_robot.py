"""Benchmark of the simulated robot: UR5 IK/FK time per call and a 100-move campaign on the sim clock.

Run: ``.venv/bin/python benchmarks/bench_robot.py [--out benchmarks/results/robot.json]``.
Writes a JSON file with wall-clock timings (seconds) and prints a short summary.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make the benchmarks package importable

from acquisition.envelope import SafetyEnvelope  # noqa: E402
from acquisition.plan import PlanConfig, footprint_from_camera, make_plan  # noqa: E402
from acquisition.sim.clock import SimClock  # noqa: E402
from acquisition.sim.kinematics import UR5Kinematics  # noqa: E402
from acquisition.sim.robot import SimRobot  # noqa: E402
from benchmarks.timing import Stopwatch, best_mean_per_call, write_json  # noqa: E402
from calibration.camera_model import CameraModel  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "robot.json"


def bench_kinematics(n: int = 500, seed: int = 0) -> dict[str, Any]:
    """Seconds per FK and per IK call (nearest-solution selection and verification included)."""
    rng = np.random.default_rng(seed)
    kin = UR5Kinematics()
    q = rng.uniform(-np.pi, np.pi, size=(n, 6))
    q[:, 4] = rng.choice([-1.0, 1.0], n) * rng.uniform(0.3, np.pi - 0.3, n)
    poses = [kin.forward(qi) for qi in q]
    fk = best_mean_per_call(kin.forward, list(q))
    ik = best_mean_per_call(lambda p: kin.inverse(p, q_near=np.zeros(6)), poses)
    worst = max(
        float(np.abs(kin.forward_matrix(kin.inverse(p)) - kin.forward_matrix(qi)).max()) for p, qi in zip(poses, q)
    )
    return {"calls": n, "fk_s_per_call": fk, "ik_s_per_call": ik, "ik_roundtrip_max_error": worst}


def bench_campaign(moves: int = 100) -> dict[str, Any]:
    """A ``moves``-move capture raster (default campaign plan, repeated) on an instant sim clock."""
    config = PlanConfig()
    camera = CameraModel.from_lens(1280, 1024, 0.025, 5.3e-6)
    plan = make_plan(config, footprint=footprint_from_camera(camera, config.working_distance_m))
    envelope = SafetyEnvelope()
    envelope.check_plan(plan, speed=config.speed, accel=config.accel)
    clock = SimClock()
    robot = SimRobot(clock=clock, envelope=envelope)
    with Stopwatch() as sw, robot:
        for i in range(moves):
            robot.move_linear(plan[i % len(plan)].pose, config.speed, config.accel)
    wall = sw.wall_s
    durations = [r.duration for r in robot.move_log]
    return {
        "moves": moves,
        "plan_poses": len(plan),
        "speed_m_s": config.speed,
        "accel_m_s2": config.accel,
        "wall_s": wall,
        "wall_s_per_move": wall / moves,
        "sim_s": clock.now(),
        "sim_s_per_move_mean": float(np.mean(durations)),
        "sim_over_wall": clock.now() / wall if wall > 0 else None,
    }


def run(out: Path = DEFAULT_OUT) -> dict[str, Any]:
    """Run both benchmarks, write ``out`` (JSON) and return the results."""
    results = {
        "benchmark": "robot",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "kinematics": bench_kinematics(),
        "campaign": bench_campaign(),
    }
    write_json(out, results)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    args = parser.parse_args(argv)
    r = run(args.out)
    k, c = r["kinematics"], r["campaign"]
    print(
        f"IK {k['ik_s_per_call'] * 1e6:.0f} us/call, FK {k['fk_s_per_call'] * 1e6:.0f} us/call; "
        f"{c['moves']}-move campaign: {c['wall_s']:.3f} s wall for {c['sim_s']:.1f} s sim "
        f"({c['sim_over_wall']:.0f}x real time) -> {args.out}"
    )


if __name__ == "__main__":
    main()
