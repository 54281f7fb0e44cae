"""Benchmark of the capture store and of a capture campaign on the simulated cell.

Measures (written to benchmarks/results/store.json):
- store write time per capture at the sim camera's default resolution (1280x1024 Mono8 PNG, crash-safe
  write with fsync, row commit), split into PNG encoding and the rest; the same with the exact sim mask;
  and the time to store a mask edit (``set_mask``, what the labelling tool does per edit);
- a capture campaign with the shipped configs (configs/cells/sim.yaml + configs/campaigns/sheet_raster.yaml)
  on the sim clock (realtime_factor 0): captures per wall-clock second, and simulated robot seconds per
  capture (what the real cell's motion would take).

Run:  .venv/bin/python benchmarks/bench_store.py [--writes 20] [--parts 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from acquisition.store import CaptureStore, _files  # noqa: E402
from benchmarks.timing import Sample, Stopwatch, summary_ms, time_repeated, write_json  # noqa: E402
from cell.campaign import run_campaign  # noqa: E402
from cell.cell_factory import load_campaign_file, load_cell  # noqa: E402
from cell.commands.capture import campaign_identity  # noqa: E402


def _ms(values: list[Sample]) -> dict[str, float | int]:
    """Wall and CPU (process) milliseconds: on a shared, loaded machine the CPU time is the stable number."""
    return summary_ms(values, ("mean", "median", "max", "cpu_median"))


def bench_writes(n: int, tmp: Path) -> dict:
    cell = load_cell(REPO / "configs" / "cells" / "sim.yaml", defect_rate=1.0)
    plan_cfg = load_campaign_file(REPO / "configs" / "campaigns" / "sheet_raster.yaml").plan
    plan = cell.plan(plan_cfg)
    with cell:
        cell.on_new_part("bench-0001")
        cell.robot.move_linear(plan[0].pose, plan_cfg.speed, plan_cfg.accel)
        frame = cell.camera.capture()
    mask = np.asarray(frame.extra["sim_mask"], dtype=bool)
    encode = time_repeated(lambda: _files.encode_png(frame.pixels, frame.pixel_format, 1), n)
    plain: list[Sample] = []
    with_mask: list[Sample] = []
    mask_edit: list[Sample] = []
    with CaptureStore(tmp / "writes", create=True) as store:
        store.start_campaign("bench", {})
        pose = plan[0].pose
        for i in range(n):
            with Stopwatch() as t:
                store.add_capture("bench", "p1", f"a{i}", frame, pose, pose, np.zeros(6))
            plain.append(t.sample)
        for i in range(n):
            with Stopwatch() as t:
                rec = store.add_capture("bench", "p2", f"b{i}", frame, pose, pose, np.zeros(6),
                                        mask=mask, defect_type="combined", mask_source="sim")
            with_mask.append(t.sample)
        edit = mask.copy()
        for i in range(n):
            edit[100 + i, 100:400] = True
            with Stopwatch() as t:
                store.set_mask(rec.id, edit, "combined", "human")
            mask_edit.append(t.sample)
        image_bytes = store.image_path(rec).stat().st_size
    return {
        "image": {"width": frame.width, "height": frame.height, "pixel_format": frame.pixel_format,
                  "png_bytes": image_bytes, "png_compression": 1, "png_strategy": "RLE"},
        "png_encode": _ms(encode),
        "add_capture": _ms(plain),
        "add_capture_with_mask": _ms(with_mask),
        "set_mask_edit": _ms(mask_edit),
    }


def bench_campaign(parts: int, tmp: Path) -> dict:
    cell = load_cell(REPO / "configs" / "cells" / "sim.yaml")
    campaign_file = load_campaign_file(REPO / "configs" / "campaigns" / "sheet_raster.yaml")
    plan = cell.plan(campaign_file.plan)
    with Stopwatch() as sw, CaptureStore(tmp / "campaign", create=True) as store, cell:
        summary = run_campaign(
            cell.robot, cell.camera, store, plan, parts, campaign="bench", envelope=cell.envelope,
            speed=campaign_file.plan.speed, accel=campaign_file.plan.accel, on_new_part=cell.on_new_part,
            config=campaign_identity(cell, campaign_file), sim_clock=cell.clock.now,
        )
    cpu_s = sw.cpu_s
    return {
        "parts": parts,
        "cpu_s": cpu_s,
        "captures_per_cpu_s": summary.captures_new / cpu_s,
        "poses_per_part": len(plan),
        "captures": summary.captures_new,
        "wall_s": summary.wall_s,
        "captures_per_wall_s": summary.captures_per_s,
        "sim_s": summary.sim_s,
        "sim_s_per_capture": summary.sim_s / summary.captures_new if summary.sim_s else None,
        "note": "sim clock at realtime_factor 0: wall time is rendering + part generation + store; sim_s is "
        "the robot motion time the real cell would spend",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=20, help="captures per write measurement")
    parser.add_argument("--parts", type=int, default=1, help="parts of the campaign measurement")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "store.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp_name:
        tmp = Path(tmp_name)
        results = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_average_1min": os.getloadavg()[0]},
            "fakes_used": False,
            "store_writes": bench_writes(args.writes, tmp),
            "campaign": bench_campaign(args.parts, tmp),
        }
    write_json(args.out, results)
    print(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
