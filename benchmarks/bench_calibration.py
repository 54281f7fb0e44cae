"""Benchmark of calibration on the simulated cell: accuracy against the simulation's truth and time, as the
number of views grows (5, 10, 20, 40), for every hand-eye method.

Run: ``.venv/bin/python -m benchmarks.bench_calibration [--views 5 10 20 40] [--seeds 3]
[--out benchmarks/results/calibration.json]``.

For each envelope setting (the cell's own tool-down tolerance, and a wider one that lets the planned
10-30 degree tilts through), each seed and each number of views: plan, move the sim robot, render, detect
(timed as ``capture_s``), calibrate the intrinsics (``intrinsics_s``), then solve hand-eye with each method
(``hand_eye_s``). Errors: focal length (% of fx), principal point (px), hand-eye translation (mm) and
rotation (deg). Writes per-run rows and a summary (mean and max over seeds) to JSON.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make the benchmarks package importable

from benchmarks.timing import Stopwatch, write_json  # noqa: E402
from calibration.errors import CalibrationError  # noqa: E402
from calibration.handeye import HAND_EYE_METHODS, board_pose_pnp, calibrate_hand_eye  # noqa: E402
from calibration.intrinsics import calibrate_intrinsics  # noqa: E402
from calibration.transforms import rotation_angle_between  # noqa: E402
from calibration.charuco import CharucoDetector  # noqa: E402
from cell.calibrate import CalibrationConfig, capture_views, plan_calibration_views, show_board  # noqa: E402
from cell.cell_factory import build_cell, load_cell_config  # noqa: E402
from cell.config import load_config  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "calibration.json"


def run_one(cell_config: Any, cfg: CalibrationConfig, n_views: int, seed: int) -> list[dict[str, Any]]:
    """One capture of ``n_views`` views, then intrinsics and every hand-eye method; one row per method."""
    cell = build_cell(cell_config, seed=seed)
    plan = cfg.plan.model_copy(update={"views": n_views, "seed": seed, "settle_s": 0.0})
    with cell:
        show_board(cell.scene, cfg.board, cfg.T_base_board)

        def check(pose: np.ndarray, label: str) -> None:
            cell.envelope.check_pose(pose, label)
            cell.robot.kinematics.inverse(pose)

        with Stopwatch() as sw:
            views = plan_calibration_views(cfg.board, cfg.T_base_board, cell.camera_model, cell.T_flange_cam,
                                           plan, check)
            captured = capture_views(cell.robot, cell.camera, CharucoDetector(cfg.board), views, plan,
                                     sleep=cell.clock.sleep,
                                     inverse_kinematics=lambda p, q: cell.robot.kinematics.inverse(p, q_near=q))
        capture_s = sw.wall_s
    truth, T_true = cell.camera_model, cell.T_flange_cam
    with Stopwatch() as sw:
        intr = calibrate_intrinsics([c.detection for c in captured], min_corners=cfg.min_corners)
    intrinsics_s = sw.wall_s
    cam = intr.camera
    used = [captured[i] for i in intr.used_views]
    with Stopwatch() as sw:
        boards = [board_pose_pnp(c.detection, cam) for c in used]
    pnp_s = sw.wall_s
    pairs = [(c.actual_pose, b) for c, b in zip(used, boards) if b is not None]
    base = {
        "views": n_views, "seed": seed, "views_used": len(used),
        "tilt_deg_max": round(max(intr.tilts_deg), 2), "coverage": round(intr.coverage, 3),
        "rms_px": round(intr.rms_px, 4),
        "fx_error_pct": abs(cam.fx / truth.fx - 1.0) * 100.0,
        "pp_error_px": float(np.hypot(cam.cx - truth.cx, cam.cy - truth.cy)),
        "capture_s": round(capture_s, 3), "intrinsics_s": round(intrinsics_s, 4), "pnp_s": round(pnp_s, 4),
    }
    rows = []
    for method in HAND_EYE_METHODS:
        try:
            with Stopwatch() as sw:
                he = calibrate_hand_eye([p for p, _ in pairs], [b for _, b in pairs], method)
        except CalibrationError as exc:
            rows.append({**base, "method": method, "error": str(exc)})
            continue
        hand_eye_s = sw.wall_s
        T = he.T_flange_cam
        rows.append({
            **base, "method": method, "hand_eye_s": round(hand_eye_s, 5),
            "hand_eye_mm": float(np.linalg.norm(T.translation - T_true.translation) * 1e3),
            "hand_eye_deg": float(np.degrees(rotation_angle_between(T.rotation, T_true.rotation))),
            "board_spread_mm": round(he.spread_mm, 4), "outliers": len(he.outlier_views),
        })
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and max over seeds per (envelope, views, method)."""
    keys = sorted({(r["envelope"], r["views"], r["method"]) for r in rows})
    out = []
    for env, n, method in keys:
        group = [r for r in rows if (r["envelope"], r["views"], r["method"]) == (env, n, method) and "error" not in r]
        if not group:
            out.append({"envelope": env, "views": n, "method": method, "failed": True})
            continue
        entry: dict[str, Any] = {"envelope": env, "views": n, "method": method, "runs": len(group)}
        for k in ("fx_error_pct", "pp_error_px", "hand_eye_mm", "hand_eye_deg", "intrinsics_s", "hand_eye_s",
                  "capture_s"):
            vals = np.array([r[k] for r in group], dtype=float)
            entry[f"{k}_mean"] = round(float(vals.mean()), 5)
            entry[f"{k}_max"] = round(float(vals.max()), 5)
        out.append(entry)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cell", type=Path, default=ROOT / "configs" / "cells" / "sim.yaml")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "calibration" / "charuco.yaml")
    parser.add_argument("--wide-tolerance-deg", type=float, default=35.0,
                        help="tool-down tolerance of the second, wider envelope")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    cell_config = load_cell_config(args.cell)
    cfg = load_config(args.config, CalibrationConfig)
    envelopes = {
        f"cell ({cell_config.envelope.tool_down_tolerance_deg:g} deg tool tilt)": cell_config,
        f"wide ({args.wide_tolerance_deg:g} deg tool tilt)": cell_config.model_copy(update={
            "envelope": cell_config.envelope.model_copy(update={"tool_down_tolerance_deg": args.wide_tolerance_deg})
        }),
    }
    rows: list[dict[str, Any]] = []
    with Stopwatch() as total:
        for env_name, cc in envelopes.items():
            for n in args.views:
                for seed in range(args.seeds):
                    for row in run_one(cc, cfg, n, seed):
                        rows.append({"envelope": env_name, **row})
                    print(f"{env_name}: {n} views, seed {seed} done", flush=True)
        summary = summarise(rows)
    result = {
        "benchmark": "calibration",
        "platform": platform.platform(), "python": platform.python_version(),
        "board": cfg.board.describe(),
        "targets": {"fx_error_pct": 0.5, "pp_error_px": 2.0, "hand_eye_mm": 1.0, "hand_eye_deg": 0.1},
        "total_s": round(total.wall_s, 1),
        "summary": summary,
        "runs": rows,
    }
    write_json(args.out, result)
    print(f"{'envelope':28s} {'views':>5s} {'method':>10s} {'fx%max':>8s} {'pp px max':>9s} {'mm max':>7s} "
          f"{'deg max':>8s} {'he ms':>6s}")
    for s in summary:
        if s.get("failed"):
            print(f"{s['envelope']:28s} {s['views']:5d} {s['method']:>10s} failed")
            continue
        print(f"{s['envelope']:28s} {s['views']:5d} {s['method']:>10s} {s['fx_error_pct_max']:8.4f} "
              f"{s['pp_error_px_max']:9.3f} {s['hand_eye_mm_max']:7.3f} {s['hand_eye_deg_max']:8.4f} "
              f"{s['hand_eye_s_mean'] * 1e3:6.2f}")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
