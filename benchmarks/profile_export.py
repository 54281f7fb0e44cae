"""Where a detector's predict spends its time: the exported ONNX graph per node on ONNX Runtime and the torch
eager predict per op (issue 19: the exported SimpleNet is far from 4 x torch eager).

    python -m benchmarks.profile_export [--method simplenet] [--repeats 30] [--threads 2]
        [--data /work/shared/data/bottle] [--model-dir DIR]

The detector is the one :mod:`benchmarks.bench_runtimes` times (its config file's architecture and input size,
a few training steps, 8 real bottle training images; or ``--model-dir``), exported to ONNX, and one working
image (B=1, 3, S, S) is scored ``--repeats`` times after warm-up:

* ONNX Runtime with ``SessionOptions.enable_profiling`` at the runner's real settings
  (:func:`detectors.export.runner.session_options`); the JSON trace's ``Node`` events are summed per op type
  and per node name (kernel time, microseconds), divided by the repeats;
* torch eager ``predict`` under ``torch.profiler`` (CPU), self CPU time per op, divided by the repeats.

Writes ``benchmarks/results/profile_<method>.json`` and ``.md`` (the top ops of each, with the share of the
total and the load average).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from benchmarks.bench_runtimes import DEFAULT_DATA, RESULTS_DIR, _capture, _quick_detector, _load_avg
from benchmarks.timing import write_json


def profile_onnx(onnx_file: Path, image: np.ndarray, repeats: int, threads: int) -> dict[str, Any]:
    """Per-op-type and per-node kernel microseconds (mean per run) of ``onnx_file`` on ``image`` (1, 3, S, S)."""
    import onnxruntime as ort

    from detectors.export.runner import session_options

    options = session_options(threads)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="ortprof_") as scratch:
        options.profile_file_prefix = str(Path(scratch) / "ort")
        session = ort.InferenceSession(str(onnx_file), sess_options=options, providers=["CPUExecutionProvider"])
        for _ in range(3):  # warm-up; its events are left out below
            session.run(None, {"images": image})
        walls = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            session.run(None, {"images": image})
            walls.append(time.perf_counter() - t0)
        trace = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run"]
    timed_from = runs[3]["ts"] if len(runs) > 3 else 0
    by_type: dict[str, float] = defaultdict(float)
    by_node: dict[str, float] = defaultdict(float)
    node_type: dict[str, str] = {}
    for event in trace:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time") or event["ts"] < timed_from:
            continue
        op = event.get("args", {}).get("op_name", "?")
        node = event["name"][: -len("_kernel_time")]
        by_type[op] += event["dur"] / repeats
        by_node[node] += event["dur"] / repeats
        node_type[node] = op
    total = sum(by_type.values())
    return {
        "wall_ms_median": round(1e3 * float(np.median(walls)), 2),
        "kernel_ms_total": round(total / 1e3, 2),
        "by_op_type_ms": {k: round(v / 1e3, 3) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
        "top_nodes_ms": [
            {"node": k, "op": node_type[k], "ms": round(v / 1e3, 3)}
            for k, v in sorted(by_node.items(), key=lambda kv: -kv[1])[:25]
        ],
    }


def profile_torch(detector: Any, image: torch.Tensor, repeats: int) -> dict[str, Any]:
    """Self CPU milliseconds per torch op (mean per predict) of ``detector.predict(image)``."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        detector.predict(image)
    walls = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            t0 = time.perf_counter()
            detector.predict(image)
            walls.append(time.perf_counter() - t0)
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in rows)
    return {
        "wall_ms_median_profiled": round(1e3 * float(np.median(walls)), 2),
        "self_cpu_ms_total": round(total / repeats / 1e3, 2),
        "by_op_ms": {e.key: round(e.self_cpu_time_total / repeats / 1e3, 3) for e in rows[:25]},
    }


def write_md(result: dict[str, Any], path: Path, top: int = 12) -> Path:
    """A short table: the top ONNX op types and torch ops, ms per predict and share."""
    onnx, eager = result["onnx"], result["torch"]
    lines = [f"{result['method']} S={result['image_size']} batch 1, {result['threads']} threads, "
             f"load avg {result['load_avg']}, {result['date']}", "",
             f"ONNX Runtime: wall {onnx['wall_ms_median']} ms, kernels {onnx['kernel_ms_total']} ms", "",
             "| ONNX op type | ms | share |", "|---|---|---|"]
    for op, ms in list(onnx["by_op_type_ms"].items())[:top]:
        lines.append(f"| {op} | {ms:.2f} | {100 * ms / max(onnx['kernel_ms_total'], 1e-9):.0f}% |")
    lines += ["", "| ONNX node | op | ms |", "|---|---|---|"]
    for row in onnx["top_nodes_ms"][:top]:
        lines.append(f"| {row['node']} | {row['op']} | {row['ms']:.2f} |")
    lines += ["", f"torch eager: wall {eager['wall_ms_median_profiled']} ms (profiled), self CPU {eager['self_cpu_ms_total']} ms",
              "", "| torch op | self CPU ms | share |", "|---|---|---|"]
    for op, ms in list(eager["by_op_ms"].items())[:top]:
        lines.append(f"| {op} | {ms:.2f} | {100 * ms / max(eager['self_cpu_ms_total'], 1e-9):.0f}% |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="simplenet")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--onnx", type=Path, default=None, help="an ONNX export of this detector to profile (skips exporting)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from detectors.export import export_model
    from detectors.input_prep import InputSpec, working_image

    if args.model_dir is not None:
        from cell.runtime_models import load_model_for_runtime

        trained = load_model_for_runtime(args.model_dir, runtime="torch", device="cpu")
        detector, spec = trained.detector, trained.spec
    else:
        detector, spec = _quick_detector(args.method, args.data), InputSpec()
    size = int(detector.config.image_size)
    image = working_image(_capture(args.data, 1280, 1024), spec, size)[None]
    array = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
    with tempfile.TemporaryDirectory(prefix="profile_") as scratch:
        onnx_file = args.onnx
        if onnx_file is None:
            export_model(detector, Path(scratch) / "onnx", "onnx")
            onnx_file = Path(scratch) / "onnx" / "model.onnx"
        threads = torch.get_num_threads()
        result: dict[str, Any] = {
            "method": args.method, "image_size": size, "threads": threads, "repeats": args.repeats,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_avg": _load_avg(),
            "onnx": profile_onnx(onnx_file, array, args.repeats, threads),
            "torch": profile_torch(detector, torch.from_numpy(array), args.repeats),
        }
    result["load_avg_end"] = _load_avg()
    write_json(args.out / f"profile_{args.method}.json", result)
    print(write_md(result, args.out / f"profile_{args.method}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
