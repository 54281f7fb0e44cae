"""Benchmark a registered detector on an MVTec-layout folder: train once, test once, time it.

    python -m benchmarks.bench_detectors --method simplenet --dataset ../shared/data/bottle \
        [--config configs/detectors/simplenet.yaml] [--device auto] [--set key=value ...]

Protocol (no test-set selection): train on ``train/good`` with the config's fixed schedule and seed, then
score ``test/`` exactly once. Images are brought to the config's ``image_size`` by the one input-preparation
path that ``cell train`` / ``cell eval`` / ``cell inspect`` use (:mod:`detectors.input_prep`, resize mode;
masks by nearest neighbour), so a model scores the same here and in ``cell eval``. Reports image AUROC, pixel AUROC, AUPRO (FPR <= 0.3), PG0, F1-max, training time,
batch-1 latency, batch-16 throughput, peak memory and the device, and writes
``benchmarks/results/<method>_<dataset>.json`` plus a row of ``benchmarks/results/detectors.md``.

Timings depend on the machine's load (the development machine's 2 CPU cores are shared): the JSON
records the device, the number of torch threads and the load average at the start.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

import detectors
from cell.config import parse_overrides
from cell.errors import CellError
from cell.training import load_train_config
from detectors.errors import DetectorError
from detectors.input_prep import RESIZE, prepared_mvtec_split
from detectors.metrics import evaluate

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TABLE_NAME = "detectors.md"
TABLE_COLUMNS = (
    "method", "dataset", "device", "image AUROC", "pixel AUROC", "AUPRO", "PG0", "F1-max",
    "train s", "latency b1 ms", "img/s b16", "peak MB", "seed", "date (UTC)",
)


class BenchmarkError(Exception):
    """A benchmark input is wrong (config file, dataset folder); one line."""


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_inference(detector: Any, images: torch.Tensor, device: torch.device, repeats: int) -> dict[str, float]:
    """Median batch-1 latency (ms) and batch-16 throughput (images/s) of ``detector.predict``.

    ``images``: (N, 3, S, S) test images, N >= 1; batches are filled by repetition when N < 16.
    One warm-up call of each batch size is not timed.
    """
    one = images[:1]
    reps = (16 + len(images) - 1) // len(images)
    sixteen = images.repeat(reps, 1, 1, 1)[:16]
    detector.predict(one)
    _sync(device)
    lat = []
    for _ in range(repeats):
        t = time.perf_counter()
        detector.predict(one)
        _sync(device)
        lat.append(time.perf_counter() - t)
    detector.predict(sixteen)
    _sync(device)
    thr = []
    for _ in range(max(1, repeats // 4)):
        t = time.perf_counter()
        detector.predict(sixteen)
        _sync(device)
        thr.append(16 / (time.perf_counter() - t))
    return {"latency_b1_ms": float(np.median(lat) * 1000), "throughput_b16": float(np.median(thr))}


def run_benchmark(
    method: str,
    dataset: Path,
    config: dict[str, Any],
    out_dir: Path = RESULTS_DIR,
    repeats: int = 10,
    log: Any = print,
    save_model: Optional[Path] = None,
) -> dict[str, Any]:
    """Train ``method`` on ``dataset/train/good``, evaluate once on ``dataset/test``; write JSON + table row.
    ``save_model``: also write the trained model directory there (for diagnostics after the run)."""
    dataset = Path(dataset)
    if not (dataset / "train" / "good").is_dir() or not (dataset / "test").is_dir():
        raise BenchmarkError(f"{dataset}: not an MVTec-layout folder (needs train/good and test/)")
    if save_model is not None:  # checked now: a bad folder must not cost a whole training run
        _check_writable_folder(Path(save_model))
    detector = detectors.create(method, **config)
    cfg = detector.config
    image_size = int(cfg.image_size)
    device = getattr(detector, "device", torch.device("cpu"))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    train = prepared_mvtec_split(dataset, "train", image_size)
    test = prepared_mvtec_split(dataset, "test", image_size)
    log(f"{method} on {dataset.name}: {len(train)} train, {len(test)} test images at {image_size} px, device {device}")

    every = None

    def progress(done: int, total: int, message: str) -> None:
        nonlocal every
        every = every or max(1, total // 20)  # about 20 lines per training run
        if message.startswith(("meta-epoch", "resumed", "SLIC")) or done == total or done % every == 0:
            log(f"  [{time.strftime('%H:%M:%S')}] {done}/{total} {message}")

    t0 = time.perf_counter()
    stats = detector.fit(train, progress=progress)
    _sync(device)
    train_s = time.perf_counter() - t0
    if save_model is not None:
        detector.save(save_model)
        log(f"saved the trained model to {save_model}")

    images = test.stack_images()
    masks = test.stack_masks().numpy()
    t0 = time.perf_counter()
    scores, maps = [], []
    for start in range(0, len(images), 16):
        pred = detector.predict(images[start : start + 16])
        scores.append(pred.score)
        maps.append(pred.anomaly_map)
    test_s = time.perf_counter() - t0
    metrics = evaluate(
        np.concatenate(scores), test.labels, np.concatenate(maps), masks, defect_types=test.defect_types
    )
    timing = time_inference(detector, images, device, repeats)

    result = {
        "method": method,
        "dataset": dataset.name,
        "dataset_path": str(dataset),
        "protocol": "train on train/good with a fixed schedule; test/ scored once; no test-set selection",
        "config": cfg.model_dump(),
        "input_preparation": f"detectors.input_prep, resize mode ({RESIZE})",
        "seed": int(getattr(cfg, "seed", 0)),
        "n_train": len(train),
        "n_test": len(test),
        "metrics": metrics,
        "train_seconds": train_s,
        "test_seconds": test_s,
        **timing,
        "peak_memory_mb": _peak_memory_mb(device),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS of the process",
        "device": _device_name(device),
        "torch": torch.__version__,
        "load_average_at_start": load_avg,
        "fit_stats": stats,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{method}_{dataset.name}.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_json_default))
    tmp.replace(json_path)
    update_table(out_dir / TABLE_NAME, result)
    return result


def _check_writable_folder(folder: Path) -> None:
    """Create ``folder`` (a model directory to be) now, or raise BenchmarkError naming it."""
    if folder.exists() and not folder.is_dir():
        raise BenchmarkError(f"--save-model {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchmarkError(f"--save-model {folder}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(folder, os.W_OK):
        raise BenchmarkError(f"--save-model {folder}: not writable")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _fmt(value: Optional[float], digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def table_row(result: dict[str, Any]) -> list[str]:
    m = result["metrics"]
    return [
        result["method"], result["dataset"], result["device"],
        _fmt(m.get("image_auroc")), _fmt(m.get("pixel_auroc")), _fmt(m.get("aupro")), _fmt(m.get("pg0")),
        _fmt(m.get("f1_max")), _fmt(result["train_seconds"], 0), _fmt(result["latency_b1_ms"], 1),
        _fmt(result["throughput_b16"], 1), _fmt(result["peak_memory_mb"], 0), str(result["seed"]),
        result["date_utc"],
    ]


def update_table(path: Path, result: dict[str, Any]) -> None:
    """Insert or replace the (method, dataset, device) row of the markdown table at ``path``."""
    header = "| " + " | ".join(TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    rows: list[list[str]] = []
    if path.exists():
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and len(cells) == len(TABLE_COLUMNS) and cells[0] != "method" and not set(line) <= set("|-"):
                rows.append(cells)
    new = table_row(result)
    rows = [r for r in rows if r[:3] != new[:3]] + [new]
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    text = "# Detector benchmarks\n\nWritten by `python -m benchmarks.bench_detectors`; one row per method, dataset and device.\n"
    text += "Protocol: train on train/good (fixed schedule, seed recorded), test/ scored once.\n\n"
    text += "\n".join([header, rule] + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_detectors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, help="registered detector name, e.g. simplenet")
    parser.add_argument("--dataset", required=True, type=Path, help="MVTec-layout folder")
    parser.add_argument("--config", type=Path, default=None, help="detector config file (default configs/detectors/<method>.yaml when present)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda[:N] (overrides the config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--repeats", type=int, default=10, help="timed batch-1 predictions")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--save-model", type=Path, default=None, metavar="DIR", help="also save the trained model there")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        config_path = args.config
        if config_path is None:
            default = Path(__file__).resolve().parents[1] / "configs" / "detectors" / f"{args.method}.yaml"
            config_path = default if default.exists() else None
        overrides = parse_overrides(args.overrides)
        if args.device is not None:
            overrides["device"] = args.device
        if config_path is None:
            config = overrides
        else:  # the same reading and validation as `cell train --detector FILE --set ...`
            train_config = load_train_config(config_path, overrides)
            if train_config.method != args.method:
                raise BenchmarkError(f"{config_path}: is a config for '{train_config.method}', not '{args.method}'")
            config = train_config.config
        result = run_benchmark(args.method, args.dataset, config, args.out, args.repeats, save_model=args.save_model)
    except (BenchmarkError, DetectorError, CellError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = result["metrics"]
    print(
        f"{result['method']} {result['dataset']}: image AUROC {m['image_auroc']:.4f}, pixel AUROC "
        f"{m.get('pixel_auroc', float('nan')):.4f}, AUPRO {m.get('aupro', float('nan')):.4f}, PG0 {m['pg0']:.3f}, "
        f"F1-max {m['f1_max']:.3f}; train {result['train_seconds']:.0f} s, latency b1 "
        f"{result['latency_b1_ms']:.1f} ms, b16 {result['throughput_b16']:.1f} img/s, peak "
        f"{result['peak_memory_mb']:.0f} MB on {result['device']}"
    )
    print(f"wrote {args.out / (result['method'] + '_' + result['dataset'] + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
