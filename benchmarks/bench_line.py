"""Benchmark of the line at robot speed: the part cycle of ``run_inspection`` on the simulated cell in real time
(``clock.realtime_factor: 1``), sequential (``pipeline_depth: 0``) vs pipelined (scoring behind the motion),
against the motion-and-capture time alone, for the demo and sheet_raster plans.

The cell is configs/cells/sim.yaml (1280 x 1024 camera) at real time; the demo plan runs on the demo's small
sheets (0.12 x 0.10 m, as configs/demo.yaml), sheet_raster on the cell's 0.30 x 0.25 m sheet. Each mode gets
a fresh cell with the same seed (the same parts) and a fresh store in a temporary folder.

* motion + capture: per part, what the robot side does with nothing behind it: ``on_new_part`` (the sim
  loads the next sheet), then per pose move, read back the TCP pose and joints, capture.
* part cycle: seconds per part of the real ``run_inspection`` (store, score, decide, record), the mean of
  the intervals between consecutive parts' verdicts (steady state), and the run's wall time per part; with
  the worker's wall and thread-CPU seconds and the process CPU seconds per part.
* ``idle_2core_lower_bound_s`` is NOT a measurement: the cycle the pipelined loop cannot beat on 2 idle cores
  given this run's CPU seconds (max of the motion + capture time, the worker's CPU per part, and the process
  CPU per part / 2). On a loaded machine the measured cycles say how much CPU the run got, not the design.

The model: ``--model DIR`` (a model directory of ``cell train``), or a small SimpleNet
(configs/detectors/simplenet.yaml, ``--train-epochs`` meta epochs x 1) trained here on a few good parts
captured on the fast (not real-time) simulated cell with the demo plan. A model trained on the demo's sheets
scores the sheet_raster captures too: what is measured is time, not accuracy.

Results: benchmarks/results/line.json (with the load average before and after each measurement) and a
markdown table on stdout. Structured as functions (:func:`measure_motion_capture`,
:func:`measure_part_cycle`, :func:`part_cycle_section`) so that other sections (e.g. the per-pose cost of
each runtime) can be added to the same file and JSON.

Run:  nice -n 5 .venv/bin/python -m benchmarks.bench_line [--plans demo,sheet_raster] [--parts 4]
          [--raster-parts 2] [--model DIR] [--depth 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.timing import write_json  # noqa: E402

SIM_CELL = REPO / "configs" / "cells" / "sim.yaml"
CAMPAIGNS = {"demo": REPO / "configs" / "campaigns" / "demo.yaml",
             "sheet_raster": REPO / "configs" / "campaigns" / "sheet_raster.yaml"}
DEMO_SHEET_M = (0.12, 0.10)  # configs/demo.yaml: the demo plan covers small sheets
SIMPLENET = REPO / "configs" / "detectors" / "simplenet.yaml"


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def sim_cell(plan_name: str, *, realtime_factor: float, seed: int = 0, defect_rate: float = 0.5):
    """The simulated cell (sim.yaml, full 1280 x 1024 camera) for ``plan_name`` on the given clock, and its plan
    and campaign file."""
    from cell.cell_factory import build_cell, load_campaign_file, load_cell_config

    config = load_cell_config(SIM_CELL)
    config = config.model_copy(update={"clock": config.clock.model_copy(update={"realtime_factor": realtime_factor})})
    if plan_name == "demo":
        config = config.model_copy(update={"scene": config.scene.model_copy(
            update={"sheet_width_m": DEMO_SHEET_M[0], "sheet_height_m": DEMO_SHEET_M[1]})})
    cell = build_cell(config, source=f"bench_line {plan_name}", seed=seed, defect_rate=defect_rate)
    campaign = load_campaign_file(CAMPAIGNS[plan_name])
    return cell, cell.plan(campaign.plan), campaign


def train_small_simplenet(folder: Path, *, parts: int, meta_epochs: int) -> Path:
    """A small SimpleNet model directory trained on ``parts`` good parts captured with the demo plan on the
    fast simulated cell. Returns the model directory."""
    from acquisition.store import CaptureStore
    from cell.campaign import run_campaign
    from cell.training import load_train_config, train_model

    cell, plan, campaign = sim_cell("demo", realtime_factor=0.0, defect_rate=0.0)
    store_dir, model_dir = folder / "train_store", folder / "model"
    with CaptureStore(store_dir, create=True) as store, cell:
        run_campaign(cell.robot, cell.camera, store, plan, parts, campaign="train", envelope=cell.envelope,
                     speed=campaign.plan.speed, accel=campaign.plan.accel, on_new_part=cell.on_new_part)
    config = load_train_config(SIMPLENET, {"meta_epochs": meta_epochs, "epochs_per_meta": 1, "device": "cpu"})
    train_model(config, store_dir, model_dir, campaigns=["train"])
    return model_dir


def measure_motion_capture(plan_name: str, parts: int) -> dict[str, Any]:
    """Seconds per part of the robot side alone (new part, then move + read back + capture per pose)."""
    cell, plan, campaign = sim_cell(plan_name, realtime_factor=1.0)
    load_before = load_average()
    per_part = []
    cpu0 = time.process_time()
    with cell:
        for index in range(1, parts + 1):
            t0 = time.perf_counter()
            cell.on_new_part(f"mc-{index:04d}")
            for planned in plan:
                cell.robot.move_linear(np.asarray(planned.pose, dtype=float).tolist(), campaign.plan.speed,
                                       campaign.plan.accel)
                cell.robot.tcp_pose()
                cell.robot.joint_positions()
                cell.camera.capture(timeout_s=cell.config.capture.timeout_s)
            per_part.append(time.perf_counter() - t0)
    return {"poses": len(plan), "parts": parts, "s_per_part": float(np.mean(per_part)),
            "cpu_s_per_part": (time.process_time() - cpu0) / parts,
            "s_per_part_each": [round(s, 3) for s in per_part], "load_before": load_before,
            "load_after": load_average()}


def measure_part_cycle(plan_name: str, parts: int, model: Any, *, depth: int, folder: Path) -> dict[str, Any]:
    """The part cycle of the real inspection loop with ``pipeline_depth = depth`` (0 = sequential)."""
    from acquisition.store import CaptureStore
    from cell.inspection import InspectConfig, run_inspection

    cell, plan, campaign = sim_cell(plan_name, realtime_factor=1.0)
    store_dir = folder / f"store_{plan_name}_{depth}"
    shutil.rmtree(store_dir, ignore_errors=True)
    verdict_times: list[float] = []
    load_before = load_average()
    config = InspectConfig(pipeline_depth=depth, camera_retries=cell.config.capture.camera_retries,
                           capture_timeout_s=cell.config.capture.timeout_s)
    with CaptureStore(store_dir, create=True) as store, cell:
        t0, cpu0 = time.perf_counter(), time.process_time()
        summary = run_inspection(
            robot=cell.robot, camera=cell.camera, store=store, plan=plan, speed=campaign.plan.speed,
            accel=campaign.plan.accel, envelope=cell.envelope, parts=parts, campaign="bench",
            detector=model.detector, spec=model.spec, threshold=model.threshold, config=config,
            on_new_part=cell.on_new_part, on_part=lambda r, i, n: verdict_times.append(time.perf_counter()),
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    shutil.rmtree(store_dir, ignore_errors=True)
    intervals = np.diff(verdict_times) if len(verdict_times) > 1 else np.array([])
    return {
        "pipeline_depth": depth, "parts": parts, "poses": len(plan),
        "verdicts": summary.counts(),
        "s_per_part_run": wall / parts,
        "s_per_part_steady": float(np.mean(intervals)) if intervals.size else None,
        "first_verdict_s": verdict_times[0] - t0 if verdict_times else None,
        "worker": summary.pipeline,  # busy_s / busy_cpu_s: store + score + decide, per run
        "worker_busy_s_per_part": summary.pipeline.get("busy_s", 0.0) / parts,
        "worker_cpu_s_per_part": summary.pipeline.get("busy_cpu_s", 0.0) / parts,
        "process_cpu_s_per_part": cpu / parts,
        "load_before": load_before, "load_after": load_average(),
    }


def warm_up(model: Any) -> float:
    """Score one capture of the demo plan (the first call of a model pays its one-off set-up, seconds on a
    loaded CPU), so that neither mode pays it inside the measurement. Returns the seconds it took."""
    from detectors.input_prep import score_capture

    cell, plan, campaign = sim_cell("demo", realtime_factor=0.0)
    with cell:
        cell.on_new_part("warm-up")
        cell.robot.move_linear(np.asarray(plan[0].pose, dtype=float).tolist(), campaign.plan.speed, campaign.plan.accel)
        frame = cell.camera.capture(timeout_s=cell.config.capture.timeout_s)
    t0 = time.perf_counter()
    score_capture(model.detector, frame.pixels, model.spec)
    return time.perf_counter() - t0


def part_cycle_section(plans: list[str], parts: dict[str, int], model: Any, depth: int, folder: Path) -> dict:
    """Per plan: motion + capture alone, sequential and pipelined cycles, and their ratios."""
    out: dict[str, Any] = {"warm_up_s": round(warm_up(model), 3)}
    for plan_name in plans:
        n = parts[plan_name]
        motion = measure_motion_capture(plan_name, n)
        sequential = measure_part_cycle(plan_name, n, model, depth=0, folder=folder)
        pipelined = measure_part_cycle(plan_name, n, model, depth=depth, folder=folder)
        base = motion["s_per_part"]

        def ratio(cycle: dict, key: str) -> Optional[float]:
            return None if cycle[key] is None else round(cycle[key] / base, 3)

        # NOT a measurement: what the pipelined cycle cannot beat on 2 idle cores, from this run's CPU seconds:
        # the robot's real-time motion + capture, the worker's CPU per part, the whole process's CPU over 2 cores
        bound = max(base, pipelined["worker_cpu_s_per_part"], pipelined["process_cpu_s_per_part"] / 2)
        out[plan_name] = {
            "motion_capture": motion, "sequential": sequential, "pipelined": pipelined,
            "idle_2core_lower_bound_s": round(bound, 3), "idle_2core_lower_bound_ratio": round(bound / base, 3),
            "ratio_sequential_run": ratio(sequential, "s_per_part_run"),
            "ratio_pipelined_run": ratio(pipelined, "s_per_part_run"),
            "ratio_sequential_steady": ratio(sequential, "s_per_part_steady"),
            "ratio_pipelined_steady": ratio(pipelined, "s_per_part_steady"),
        }
        print(f"{plan_name}: motion+capture {base:.2f} s/part, sequential {sequential['s_per_part_run']:.2f}, "
              f"pipelined {pipelined['s_per_part_run']:.2f} s/part (run), load {load_average()}", flush=True)
    return out


def markdown_table(section: dict[str, Any]) -> str:
    def fmt(v: Optional[float]) -> str:
        return "-" if v is None else f"{v:.2f}"

    rows = ["| plan | poses | motion+capture s/part | sequential s/part (x) | pipelined s/part (x) | load 1 min |",
            "|---|---:|---:|---:|---:|---:|"]
    for plan_name, r in section.items():
        if not isinstance(r, dict):
            continue
        seq, pipe = r["sequential"], r["pipelined"]
        key = "s_per_part_steady" if pipe["s_per_part_steady"] is not None else "s_per_part_run"
        rows.append(
            f"| {plan_name} | {r['motion_capture']['poses']} | {r['motion_capture']['s_per_part']:.2f} | "
            f"{fmt(seq[key])} ({fmt(r['ratio_sequential_' + key.split('_')[-1]])}) | "
            f"{fmt(pipe[key])} ({fmt(r['ratio_pipelined_' + key.split('_')[-1]])}) | "
            f"{pipe['load_before'][0]:.1f}-{pipe['load_after'][0]:.1f} |")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", default="demo,sheet_raster", help="comma-separated: demo, sheet_raster")
    parser.add_argument("--parts", type=int, default=4, help="parts per measurement, demo plan")
    parser.add_argument("--raster-parts", type=int, default=2, help="parts per measurement, sheet_raster plan")
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: train a small SimpleNet)")
    parser.add_argument("--train-parts", type=int, default=4, help="good parts to train the small SimpleNet on")
    parser.add_argument("--train-epochs", type=int, default=1, help="meta epochs of the small SimpleNet")
    parser.add_argument("--depth", type=int, default=2, help="pipeline depth of the pipelined runs")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch.set_num_threads for every mode (0: torch's default). On a loaded machine, 2 "
                             "OpenMP threads in the main thread were measured ~10x slower than 1 (see README)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "line.json")
    args = parser.parse_args(argv)
    plans = [p.strip() for p in args.plans.split(",") if p.strip()]
    unknown = [p for p in plans if p not in CAMPAIGNS]
    if unknown:
        parser.error(f"unknown plan(s) {unknown}; known: {', '.join(CAMPAIGNS)}")
    import torch

    from detectors.model_dir import load_model

    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)

    with tempfile.TemporaryDirectory(prefix="bench_line_") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = args.model
        trained_here = model_dir is None
        if trained_here:
            print("training a small SimpleNet on simulated good parts ...", flush=True)
            model_dir = train_small_simplenet(tmp, parts=args.train_parts, meta_epochs=args.train_epochs)
        model = load_model(model_dir, device="cpu")
        results = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "torch_threads": torch.get_num_threads(), "device": "cpu",
                        "load_average_start": load_average()},
            "model": {"dir": None if trained_here else str(model_dir), "trained_here": trained_here,
                      "method": type(model.detector).__name__, "input": model.spec.model_dump(),
                      "image_size": int(model.detector.config.image_size)},
            "part_cycle": part_cycle_section(plans, {"demo": args.parts, "sheet_raster": args.raster_parts}, model,
                                             args.depth, tmp),
        }
        results["machine"]["load_average_end"] = load_average()
    write_json(args.out, results)
    print(markdown_table(results["part_cycle"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
