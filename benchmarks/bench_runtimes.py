"""Per-pose CPU cost of every detector on each runtime (torch eager, ONNX Runtime, OpenVINO), batch 1, at
the line's input: a 1280 x 1024 capture through the model's input spec (the per-runtime half of issue 19's
``bench_line``).

    python -m benchmarks.bench_runtimes [--methods simplenet,cfa,...] [--repeats 50] [--threads N]
        [--capture 1280x1024] [--data ../shared/data/bottle] [--model-dir DIR ...]

For each method: its config from ``configs/detectors/<method>.yaml`` (the architecture and input size the
line runs) with a few training steps only (:data:`QUICK_FIT`; timing does not depend on how well a model is
trained), fitted on 8 real bottle training images; or a trained model directory (``--model-dir``). It is
exported to ONNX and OpenVINO (:mod:`detectors.export`; OpenVINO converted from the ONNX graph), then timed:

* ``predict``: the model's whole predict of one working image (B=1, 3, S, S): backbone, head, upsampling,
  blur, score (what the issue's 4x target is about);
* ``per_pose``: the line's whole scoring of one capture (uint8 1280 x 1024 RGB) through the input spec
  (resize to S, predict, map back to the capture's size), :func:`score_capture`.

Rows per method: ``torch`` (the detector's eager predict), ``onnx``, ``openvino``, and for SimpleNet also
``torch_step_by_step``: torch eager through :mod:`detectors.simplenet.reference` (unfold, aggregator,
standardisation, adaptor, discriminator, upsampling, blur: the predict the issue measured before the folded
head), so the table shows both baselines. Each number is the median and the minimum of ``--repeats`` runs
after warm-up (wall time; the process-CPU median too), with the load average beside it (the development machine's 2 cores are shared: load changes wall times a lot). Parity on
the bottle test capture (relative error of score and map, detectors.export.parity) is recorded per runtime.
Writes ``benchmarks/results/runtimes.json`` and ``benchmarks/results/runtimes.md``.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np
import torch

from benchmarks.timing import summary_ms, time_repeated, write_json
from cell.runtime_models import load_model_for_runtime
from detectors.input_prep import InputSpec, score_capture, working_image

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bottle"
METHODS = ("simplenet", "cfa", "tsdn", "slsg", "glance", "patchcore")
RUNTIMES = ("torch", "onnx", "openvino")
#: The extra SimpleNet row: torch eager, step by step (detectors.simplenet.reference), as the issue measured.
STEP_BY_STEP = "torch_step_by_step"
#: Training-length overrides: a few steps, the architecture of the config untouched.
QUICK_FIT: dict[str, dict[str, Any]] = {
    "simplenet": {"meta_epochs": 1, "epochs_per_meta": 1},
    "cfa": {"epochs": 1},
    "tsdn": {"epochs": 1},
    "slsg": {"gpt_epochs": 1, "seg_iterations": 2},
    "glance": {"local_steps": 2, "global_steps": 2, "distill_patches": 256},
    # PatchCore has no training steps; its scoring cost grows with the memory bank, so the 8 quick-fit images
    # keep as many bank entries as the config's 1 % of a whole bottle training set (209 images) would
    "patchcore": {"coreset_ratio": 0.26},
}


def _load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _quick_detector(method: str, data: Path, n_train: int = 8):
    import detectors
    from detectors.imagesets import MVTecImageSet

    from cell.training import load_train_config  # the same reading and validation as `cell train --detector`

    config = load_train_config(ROOT / "configs" / "detectors" / f"{method}.yaml",
                               {**QUICK_FIT.get(method, {}), "device": "cpu"}).config
    detector = detectors.create(method, **config)
    train = MVTecImageSet(data, "train", image_size=detector.config.image_size).subset(range(n_train))
    detector.fit(train)
    return detector


def _capture(data: Path, width: int, height: int) -> np.ndarray:
    """A real bottle test image (a defective one) brought to the line camera's size: (H, W, 3) uint8 RGB."""
    path = sorted((data / "test" / "broken_large").glob("*.png"))[0]
    image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def bench_method(method: str, models: dict[str, Any], spec: InputSpec, capture: np.ndarray, repeats: int) -> dict[str, Any]:
    """Time each runtime's model of one method; ``models``: runtime -> detector-like (``predict``)."""
    from detectors.export.parity import relative_errors

    size = int(models["torch"].config.image_size)
    image = working_image(capture, spec, size)[None]
    reference = models["torch"].predict(image)
    ref_score, ref_map = score_capture(models["torch"], capture, spec)
    rows: dict[str, Any] = {}
    for runtime, model in models.items():
        predict = time_repeated(lambda: model.predict(image), repeats, warmup=3)
        load_predict = _load_avg()
        per_pose = time_repeated(lambda: score_capture(model, capture, spec), repeats, warmup=2)
        load_pose = _load_avg()
        got = model.predict(image)
        score, amap = score_capture(model, capture, spec)
        score_err, map_err = relative_errors(reference.score, reference.anomaly_map, got.score, got.anomaly_map)
        pose_err, pose_map_err = relative_errors(np.array([ref_score]), ref_map[None], np.array([score]), amap[None])
        rows[runtime] = {
            "predict": {**summary_ms(predict, ("median", "min", "cpu_median")), "load_avg": load_predict},
            "per_pose": {**summary_ms(per_pose, ("median", "min", "cpu_median")), "load_avg": load_pose},
            "parity": {"score_rel_err": score_err, "map_rel_err": map_err,
                       "per_pose_score_rel_err": pose_err, "per_pose_map_rel_err": pose_map_err},
        }
    for runtime in rows:
        for baseline, suffix in (("torch", ""), (STEP_BY_STEP, "_step_by_step")):
            if baseline not in rows:
                continue
            for part in ("predict", "per_pose"):
                for stat in ("median", "min"):
                    rows[runtime][f"speedup_{part}_{stat}_vs_torch{suffix}"] = round(
                        rows[baseline][part][f"{stat}_ms"] / rows[runtime][part][f"{stat}_ms"], 2)
    return {"image_size": size, "input_spec": spec.model_dump(), "runtimes": rows}


def _models_for(method: str, model_dir: Optional[Path], data: Path, scratch: Path) -> tuple[dict[str, Any], InputSpec, dict]:
    from detectors.export import export_model, load_exported

    info: dict[str, Any] = {}
    if model_dir is not None:
        trained = load_model_for_runtime(model_dir, runtime="torch", device="cpu")
        detector, spec = trained.detector, trained.spec
        info["model_dir"] = str(model_dir)
    else:
        started = time.perf_counter()
        detector, spec = _quick_detector(method, data), InputSpec()
        info["quick_fit_s"] = round(time.perf_counter() - started, 1)
        info["quick_fit"] = QUICK_FIT.get(method, {})
    models: dict[str, Any] = {"torch": detector}
    if method == "simplenet":
        from detectors.simplenet.reference import ReferencePredictor

        models[STEP_BY_STEP] = ReferencePredictor(detector)
    started = time.perf_counter()
    export_model(detector, scratch / "onnx", "onnx")
    info["onnx_export_s"] = round(time.perf_counter() - started, 1)
    export_model(detector, scratch / "openvino", "openvino", onnx_file=scratch / "onnx" / "model.onnx")
    models["onnx"] = load_exported(scratch / "onnx")
    models["openvino"] = load_exported(scratch / "openvino")
    info["batch_axis"] = models["onnx"].manifest["input"]["shape"][0]
    return models, spec, info


def write_table(results: dict[str, Any], path: Path) -> Path:
    """The README table: per method and runtime, median and min ms of predict and per pose, the speedups of the
    medians against torch eager (and against the step-by-step torch eager where there is one), parity."""
    lines = [
        f"device: {results['device']}, torch threads {results['threads']}, {results['repeats']} runs each, load "
        f"average at start {results['load_avg_start']}, at end {results.get('load_avg_end', '?')}, {results['date']}",
        "",
        "| method | S | runtime | predict ms median (min) | per pose ms median (min) | predict speedup vs torch "
        "(vs step by step) | score rel err | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, entry in results["methods"].items():
        if "error" in entry:
            lines.append(f"| {method} | | | {entry['error']} | | | | |")
            continue
        for runtime, row in entry["runtimes"].items():
            vs_step = row.get("speedup_predict_median_vs_torch_step_by_step")
            lines.append(
                f"| {method} | {entry['image_size']} | {runtime} | {row['predict']['median_ms']:.1f} "
                f"({row['predict']['min_ms']:.1f}) | {row['per_pose']['median_ms']:.1f} ({row['per_pose']['min_ms']:.1f}) | "
                f"{row['speedup_predict_median_vs_torch']:.2f}x" + (f" ({vs_step:.2f}x)" if vs_step is not None else "")
                + f" | {row['parity']['score_rel_err']:.1e} | {row['predict']['load_avg'][0]}-{row['per_pose']['load_avg'][0]} |"
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--model-dir", action="append", default=[], help="METHOD=DIR: a trained model instead of a quick fit")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch (and runtime) threads; default torch's")
    parser.add_argument("--capture", default="1280x1024", help="capture size WxH")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.capture.lower().split("x"))
    model_dirs = dict(item.split("=", 1) for item in args.model_dir)
    capture = _capture(args.data, width, height)
    results: dict[str, Any] = {
        "device": f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
        "threads": torch.get_num_threads(), "load_avg_start": _load_avg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "capture": [width, height],
        "repeats": args.repeats, "torch": torch.__version__, "methods": {},
    }
    for method in [m for m in args.methods.split(",") if m]:
        print(f"{method}: preparing (fit + export)", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"bench_{method}_") as scratch:
            try:
                model_dir = Path(model_dirs[method]) if method in model_dirs else None
                models, spec, info = _models_for(method, model_dir, args.data, Path(scratch))
                entry = {**info, **bench_method(method, models, spec, capture, args.repeats)}
            except Exception as exc:  # one method's failure is recorded, the others still run
                entry = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
        results["methods"][method] = entry
        print(method, {r: (v["predict"]["median_ms"], v["per_pose"]["median_ms"]) for r, v in entry.get("runtimes", {}).items()}
              or entry.get("error"), flush=True)
        results["load_avg_end"] = _load_avg()
        write_json(args.out / "runtimes.json", results)
        write_table(results, args.out / "runtimes.md")
    print(f"wrote {args.out / 'runtimes.json'} and {args.out / 'runtimes.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
