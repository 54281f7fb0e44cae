"""SimpleNet ablation on an MVTec-layout folder: a few config variants under one fixed, reduced protocol.

    python -m benchmarks.ablate_simplenet --dataset ../shared/data/magnetic_tile --train-every 8 \
        --variant base: --variant noise01:noise_std=0.1 [--set meta_epochs=2 ...] [--blur 2,4,8] \
        --out /tmp/sn/ablation

Protocol (no test-set selection): every variant is the config file plus the common ``--set`` overrides plus
its own ``key=value`` overrides; it trains on every ``--train-every``-th image of ``train/good`` (a fixed,
label-free subset, to fit a loaded 2-core CPU) with the config's fixed schedule and seed, and scores every
``--test-every``-th test image exactly once. ``--blur`` re-blurs the same unblurred maps with several Gaussian
sigmas (pixels) through the detector's own blur helper, so the blur is ablated without retraining; the image
score is the map's maximum as in the detector. Writes ``<out>/<dataset>_<variant>.json`` (metrics with the
per-defect-type breakdown, the fit statistics, the load average before and after) and prints one table row
per (variant, sigma).
"""
from __future__ import annotations

import argparse
import json
import re
import os
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
from detectors.image_ops import gaussian_blur
from detectors.imagesets import MVTecImageSet
from detectors.metrics import evaluate

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "detectors" / "simplenet.yaml"


def _variant(text: str) -> tuple[str, list[str]]:
    """``name:key=value,key=value`` (``name:`` for no overrides) -> (name, ["key=value", ...])."""
    name, sep, rest = text.partition(":")
    if not sep or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(f"variant '{text}': expected NAME:key=value,... (NAME alphanumeric)")
    return name, [item for item in re.split(r",(?![^\[]*\])", rest) if item]  # commas inside [...] stay


def _sigmas(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--blur '{text}': expected comma-separated sigmas in pixels") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"--blur '{text}': expected sigmas >= 0")
    return values


def run_variant(
    name: str, config: dict[str, Any], train: Any, test: Any, sigmas: Sequence[float], log: Any = print
) -> dict[str, Any]:
    """Fit SimpleNet with ``config`` on ``train``, score ``test`` once (blur 0), re-blur with each sigma.

    Returns ``{"variant", "config", "fit_stats", "results": {sigma: metrics}, "seconds", "load_average"}``.
    """
    load_before = os.getloadavg()
    detector = detectors.create("simplenet", **{**config, "blur_sigma": 0.0})
    t0 = time.perf_counter()
    stats = detector.fit(train, progress=lambda d, t, m: log(f"  [{time.strftime('%H:%M:%S')}] {name} {m}")
                         if m.startswith("meta-epoch") else None)
    fit_s = time.perf_counter() - t0
    images = test.stack_images()
    masks = test.stack_masks().numpy()
    raw = []
    for start in range(0, len(images), 16):
        raw.append(torch.from_numpy(detector.predict(images[start : start + 16]).anomaly_map))
    raw_maps = torch.cat(raw)  # (N, S, S), upsampled, unblurred
    if not torch.isfinite(raw_maps).all():
        raise DetectorError(f"variant {name}: the anomaly maps contain NaN or inf")
    results = {}
    for sigma in sigmas:
        maps = gaussian_blur(raw_maps, sigma)
        scores = maps.amax(dim=(1, 2)).numpy()
        results[str(sigma)] = evaluate(scores, test.labels, maps.numpy(), masks, defect_types=test.defect_types)
    return {
        "variant": name,
        "config": {**detector.config.model_dump(), "blur_sigma": list(sigmas)},
        "fit_stats": stats,
        "results": results,
        "fit_seconds": fit_s,
        "seconds": time.perf_counter() - t0,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "n_train": len(train),
        "n_test": len(test),
    }


def _row(dataset: str, result: dict[str, Any], sigma: str) -> str:
    m = result["results"][sigma]
    per = m.get("per_defect_type", {})
    types = " ".join(f"{k} {v.get('pixel_auroc', float('nan')):.3f}" for k, v in sorted(per.items()))
    return (f"| {dataset} | {result['variant']} | {sigma} | {m['image_auroc']:.3f} | {m['pixel_auroc']:.3f} | "
            f"{m['aupro']:.3f} | {types} | {result['seconds']:.0f} | {result['load_average_before'][0]:.1f} |")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablate_simplenet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, type=Path, help="MVTec-layout folder")
    parser.add_argument("--config", type=Path, default=CONFIG, help="SimpleNet config file (default: the project's)")
    parser.add_argument("--variant", dest="variants", action="append", type=_variant, required=True,
                        metavar="NAME:KEY=VALUE,...", help="one variant, repeatable")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override common to every variant, repeatable")
    parser.add_argument("--train-every", type=int, default=1, help="use every k-th training image (default 1)")
    parser.add_argument("--test-every", type=int, default=1, help="score every k-th test image (default 1)")
    parser.add_argument("--blur", type=_sigmas, default=[4.0], help="blur sigmas in pixels, comma-separated")
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    args = parser.parse_args(argv)
    try:
        if args.train_every < 1 or args.test_every < 1:
            raise DetectorError("--train-every and --test-every must be >= 1")
        common = parse_overrides(args.overrides)
        first = load_train_config(args.config, common)
        size = int(first.config.get("image_size", 256))
        train_all = MVTecImageSet(args.dataset, "train", image_size=size)
        test_all = MVTecImageSet(args.dataset, "test", image_size=size)
        train = train_all.subset(range(0, len(train_all), args.train_every))
        test = test_all.subset(range(0, len(test_all), args.test_every))
        print(f"{args.dataset.name}: {len(train)}/{len(train_all)} train, {len(test)}/{len(test_all)} test at {size} px")
        args.out.mkdir(parents=True, exist_ok=True)
        print("| dataset | variant | blur sigma | image AUROC | pixel AUROC | AUPRO | pixel AUROC per type | s | load |")
        for name, items in args.variants:
            config = load_train_config(args.config, {**common, **parse_overrides(items)}).config
            result = run_variant(name, config, train, test, args.blur)
            path = args.out / f"{args.dataset.name}_{name}.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(result, indent=2, default=float))
            tmp.replace(path)
            for sigma in result["results"]:
                print(_row(args.dataset.name, result, sigma), flush=True)
    except (DetectorError, CellError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
