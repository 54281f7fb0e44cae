"""Which resize should the one input-preparation path use? Train and test one detector with each, compare.

    python -m benchmarks.bench_input_prep --dataset ../shared/data/bottle --set image_size=128 \
        [--method cfa] [--config configs/detectors/cfa.yaml] [--set key=value ...] [--max-train N] [--out DIR]

Candidates (the two resizes the project had before :mod:`detectors.input_prep` became the one path):

* ``cv2_area``: :func:`detectors.input_prep.resize_for_model` (OpenCV ``INTER_AREA`` on float32; the CLI's);
* ``torch_antialias_bilinear``: :func:`detectors.imagesets.resize_image` (``F.interpolate(mode="bilinear",
  antialias=True)``; what ``bench_detectors`` used through ``MVTecImageSet(image_size=...)``).

Protocol, per candidate (no test-set selection): the files are decoded at their own size, converted to float
(3, H, W) the same way, resized with the candidate to the config's ``image_size`` (masks: the same nearest
neighbour for both), the detector is trained on ``train/good`` with the config's fixed schedule and seed, and
``test/`` is scored once. Reported: image / pixel AUROC, AUPRO, and the resize time per image (median and
mean over every train and test image, ms, decode excluded), with the load average before and after.
The winner: the better pixel AUROC, unless both AUROCs are within :data:`EQUAL_WITHIN` of each other, in
which case the faster resize. Written to ``benchmarks/results/input_prep_<dataset>_<image_size>.json``.

A dataset whose files are all already at ``image_size`` compares nothing (``../shared/data/bottle`` is stored
at 256 x 256: measure it at another size, e.g. ``--set image_size=128``) and is refused. ``--max-train N``
trains on the first N files of ``train/good`` (sorted names; the test side is always whole).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

import detectors
from detectors.errors import DetectorError
from detectors.imagesets import InMemoryImageSet, MVTecImageSet, resize_image
from detectors.input_prep import InputSpec, resize_for_model, working_mask
from detectors.metrics import evaluate

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Two resizes whose image and pixel AUROC differ by no more than this count as equally good.
EQUAL_WITHIN = 0.005
CANDIDATES: dict[str, Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]] = {
    "cv2_area": resize_for_model,
    "torch_antialias_bilinear": resize_image,
}


def _load_avg() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


class NothingToCompare(DetectorError):
    """Every image of the dataset already has the model's size: no resize happens, nothing is measured."""


def prepare(images: Any, resize: Callable, image_size: int) -> tuple[InMemoryImageSet, list[float]]:
    """``images`` (read at file size) resized by ``resize`` -> (prepared set, resize seconds per image)."""
    spec = InputSpec(mode="resize")
    out, masks, seconds = [], [], []
    if all(tuple(sample.image.shape[-2:]) == (image_size, image_size) for sample in images):
        raise NothingToCompare(
            f"{images.describe()}: every image is already {image_size} x {image_size} px, so no resize happens; "
            "choose another image_size (--set image_size=N)"
        )
    for sample in images:
        started = time.perf_counter()
        out.append(resize(sample.image, (image_size, image_size)))
        seconds.append(time.perf_counter() - started)
        masks.append(torch.from_numpy(working_mask(sample.mask, spec, image_size)) if sample.mask is not None else None)
    prepared = InMemoryImageSet(out, masks=masks, labels=images.labels, sources=images.sources,
                                defect_types=images.defect_types)
    return prepared, seconds


def run_candidate(name: str, method: str, config: dict[str, Any], dataset: Path, log: Callable = print,
                  max_train: Optional[int] = None) -> dict[str, Any]:
    """Train and test ``method`` with the candidate resize ``name``; the metrics and timings as a dict."""
    resize = CANDIDATES[name]
    detector = detectors.create(method, **config)
    image_size = int(detector.config.image_size)
    load_before = _load_avg()
    train_files = MVTecImageSet(dataset, "train", image_size=None, cache=False, max_per_type=max_train)
    train, train_s = prepare(train_files, resize, image_size)
    test, test_s = prepare(MVTecImageSet(dataset, "test", image_size=None, cache=False), resize, image_size)
    log(f"{name}: {len(train)} train, {len(test)} test images at {image_size} px; training {method}")
    started = time.perf_counter()
    detector.fit(train)
    train_seconds = time.perf_counter() - started
    scores, maps = [], []
    images = test.stack_images()
    for start in range(0, len(images), 16):
        prediction = detector.predict(images[start : start + 16])
        scores.append(prediction.score)
        maps.append(prediction.anomaly_map)
    metrics = evaluate(np.concatenate(scores), test.labels, np.concatenate(maps), test.stack_masks().numpy(),
                       defect_types=test.defect_types)
    per_image = np.array(train_s + test_s) * 1000.0
    return {
        "resize": name,
        "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics.get("pixel_auroc"),
        "aupro": metrics.get("aupro"),
        "resize_ms_per_image_median": float(np.median(per_image)),
        "resize_ms_per_image_mean": float(np.mean(per_image)),
        "n_images_resized": int(per_image.size),
        "train_seconds": train_seconds,
        "load_average_before": load_before,
        "load_average_after": _load_avg(),
    }


def choose(results: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """(winning resize, why) from two candidates' results, by the rule of the module docstring."""
    a, b = results
    equal = (abs(a["image_auroc"] - b["image_auroc"]) <= EQUAL_WITHIN
             and abs((a["pixel_auroc"] or 0.0) - (b["pixel_auroc"] or 0.0)) <= EQUAL_WITHIN)
    if equal:
        faster = min(results, key=lambda r: r["resize_ms_per_image_median"])
        return faster["resize"], f"image and pixel AUROC equal within {EQUAL_WITHIN}: the faster resize"
    better = max(results, key=lambda r: (r["pixel_auroc"] or 0.0, r["image_auroc"]))
    return better["resize"], "the higher pixel AUROC"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_input_prep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, type=Path, help="MVTec-layout folder")
    parser.add_argument("--method", default="cfa", help="registered detector (default cfa)")
    parser.add_argument("--config", type=Path, default=None, help="detector config file (default configs/detectors/<method>.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--max-train", type=int, default=None, help="train on the first N train/good files")
    args = parser.parse_args(argv)
    from cell.config import parse_overrides
    from cell.errors import CellError
    from cell.training import load_train_config

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    dataset = Path(args.dataset)
    try:
        if not (dataset / "train" / "good").is_dir() or not (dataset / "test").is_dir():
            raise CellError(f"{dataset}: not an MVTec-layout folder (needs train/good and test/)")
        config_path = args.config or Path(__file__).resolve().parents[1] / "configs" / "detectors" / f"{args.method}.yaml"
        train_config = load_train_config(config_path, parse_overrides(args.overrides))
        if train_config.method != args.method:
            raise CellError(f"{config_path}: is a config for '{train_config.method}', not '{args.method}'")
        results = [run_candidate(name, args.method, train_config.config, dataset, max_train=args.max_train)
                   for name in CANDIDATES]
    except (DetectorError, CellError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    winner, why = choose(results)
    document = {
        "method": args.method,
        "dataset": dataset.name,
        "dataset_path": str(dataset),
        "config": train_config.config,
        "max_train": args.max_train,
        "protocol": "per resize: train on train/good (fixed schedule, seed), test/ scored once; no test-set selection",
        "equal_within": EQUAL_WITHIN,
        "results": results,
        "winner": winner,
        "why": why,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    image_size = int(detectors.create(args.method, **train_config.config).config.image_size)
    path = args.out / f"input_prep_{dataset.name}_{image_size}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=float))
    tmp.replace(path)
    for r in results:
        print(f"{r['resize']}: image AUROC {r['image_auroc']:.4f}, pixel AUROC {r['pixel_auroc']:.4f}, "
              f"resize {r['resize_ms_per_image_median']:.2f} ms/image (median), load {r['load_average_before']:.2f}")
    print(f"winner: {winner} ({why}); wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
