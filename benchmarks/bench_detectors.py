"""Benchmark a registered detector on an MVTec-layout folder: train once, test once, time it.

    python -m benchmarks.bench_detectors --method simplenet --dataset ../shared/data/bottle \
        [--config configs/detectors/simplenet.yaml] [--device auto] [--set key=value ...]

Protocol (no test-set selection): train on ``train/good`` with the config's fixed schedule and seed, then
score ``test/`` exactly once. Images are brought to the config's ``image_size`` by the one input-preparation
path that ``cell train`` / ``cell eval`` / ``cell inspect`` use (:mod:`detectors.input_prep`, resize mode;
masks by nearest neighbour), so a model scores the same here and in ``cell eval``. Reports image AUROC,
pixel AUROC, AUPRO (FPR <= 0.3), PG0, F1-max, training time, batch-1 latency (median and p99), throughput
at batch 1, 16 and 64 (``--batches``), peak memory and the device (``--profile B`` adds a torch-profiler
table of one batch-B predict), and writes
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
    "train s", "latency b1 ms", "p99 b1 ms", "img/s b16", "img/s b64", "peak MB", "seed", "date (UTC)",
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


BATCH_SIZES = (1, 16, 64)


def time_inference(
    detector: Any, images: torch.Tensor, device: torch.device, repeats: int, batch_sizes: Sequence[int] = BATCH_SIZES,
) -> dict[str, Any]:
    """Latency at batch 1 (median and p99, ms) and throughput (images/s) at each of ``batch_sizes``.

    ``images``: (N, 3, S, S) test images, N >= 1; a batch larger than N is filled by repetition. Each batch
    size gets one untimed warm-up call; batch 1 is timed ``repeats`` times, larger batches
    ``max(2, repeats // 4)`` times (median). Every timed call ends with a device synchronisation, so GPU
    numbers include the whole ``predict`` up to scores and maps on the host.
    Returns ``latency_b1_ms``, ``latency_b1_p99_ms``, ``throughput_b<B>`` per batch size and, for the
    table, ``throughput_b16`` (None when 16 was not measured).
    """
    def batch_of(size: int) -> torch.Tensor:
        reps = (size + len(images) - 1) // len(images)
        return images.repeat(reps, 1, 1, 1)[:size]

    out: dict[str, Any] = {"batch_sizes": [int(b) for b in batch_sizes]}
    for size in batch_sizes:
        batch = batch_of(int(size))
        detector.predict(batch)
        _sync(device)
        runs = repeats if size == 1 else max(2, repeats // 4)
        seconds = []
        for _ in range(max(1, runs)):
            t = time.perf_counter()
            detector.predict(batch)
            _sync(device)
            seconds.append(time.perf_counter() - t)
        if size == 1:
            out["latency_b1_ms"] = float(np.median(seconds) * 1000)
            out["latency_b1_p99_ms"] = float(np.percentile(seconds, 99) * 1000)
        out[f"throughput_b{int(size)}"] = float(size / np.median(seconds))
    out.setdefault("latency_b1_ms", None)
    out.setdefault("latency_b1_p99_ms", None)
    out.setdefault("throughput_b16", None)
    return out


def profile_inference(detector: Any, images: torch.Tensor, device: torch.device, batch_size: int, path: Path) -> Path:
    """Write a torch-profiler table of one ``predict`` of ``batch_size`` images (after one warm-up) to ``path``:
    the operators sorted by their own device time (CUDA) or CPU time, so a reader sees where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    reps = (batch_size + len(images) - 1) // len(images)
    batch = images.repeat(reps, 1, 1, 1)[:batch_size]
    detector.predict(batch)
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        detector.predict(batch)
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(prof.key_averages().table(sort_by=key, row_limit=40))
    tmp.replace(path)
    return path


def run_benchmark(
    method: str,
    dataset: Path,
    config: dict[str, Any],
    out_dir: Path = RESULTS_DIR,
    repeats: int = 10,
    log: Any = print,
    save_model: Optional[Path] = None,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    profile_batch: Optional[int] = None,
) -> dict[str, Any]:
    """Train ``method`` on ``dataset/train/good``, evaluate once on ``dataset/test``; write JSON + table row.
    ``save_model``: also write the trained model directory there (for diagnostics after the run).
    ``batch_sizes``: the batch sizes timed (see :func:`time_inference`); ``profile_batch``: also write a
    profiler table of one predict at that batch size to ``<method>_<dataset>_<device>_profile.txt``."""
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
    timing = time_inference(detector, images, device, repeats, batch_sizes)
    if profile_batch is not None:
        profile_path = profile_inference(detector, images, device, profile_batch,
                                         out_dir / f"{method}_{dataset.name}_{device.type}_profile.txt")
        log(f"wrote the profile of one batch-{profile_batch} predict to {profile_path}")

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


def _batch_sizes(text: str) -> tuple[int, ...]:
    """``--batches 1,16,64`` -> (1, 16, 64); BenchmarkError naming the value otherwise."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise BenchmarkError(f"--batches {text!r}: expected positive batch sizes separated by commas, e.g. 1,16,64")
    return sizes


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
        _fmt(m.get("f1_max")), _fmt(result["train_seconds"], 0), _fmt(result.get("latency_b1_ms"), 1),
        _fmt(result.get("latency_b1_p99_ms"), 1), _fmt(result.get("throughput_b16"), 1),
        _fmt(result.get("throughput_b64"), 1), _fmt(result["peak_memory_mb"], 0), str(result["seed"]),
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
    parser.add_argument("--batches", default="1,16,64", help="batch sizes timed, comma-separated (default 1,16,64)")
    parser.add_argument("--profile", type=int, default=None, metavar="B", help="also write a torch-profiler table of one batch-B predict")
    parser.add_argument("--save-model", type=Path, default=None, metavar="DIR", help="also save the trained model there")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    try:
        batch_sizes = _batch_sizes(args.batches)
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
        result = run_benchmark(args.method, args.dataset, config, args.out, args.repeats, save_model=args.save_model,
                               batch_sizes=batch_sizes, profile_batch=args.profile)
    except (BenchmarkError, DetectorError, CellError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = result["metrics"]
    print(
        f"{result['method']} {result['dataset']}: image AUROC {m['image_auroc']:.4f}, pixel AUROC "
        f"{m.get('pixel_auroc', float('nan')):.4f}, AUPRO {m.get('aupro', float('nan')):.4f}, PG0 {m['pg0']:.3f}, "
        f"F1-max {m['f1_max']:.3f}; train {result['train_seconds']:.0f} s, latency b1 {_fmt(result['latency_b1_ms'], 1)} "
        f"ms (p99 {_fmt(result['latency_b1_p99_ms'], 1)}), "
        + ", ".join(f"b{b} {result[f'throughput_b{b}']:.1f} img/s" for b in result["batch_sizes"]) + ", peak "
        f"{result['peak_memory_mb']:.0f} MB on {result['device']}"
    )
    print(f"wrote {args.out / (result['method'] + '_' + result['dataset'] + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
