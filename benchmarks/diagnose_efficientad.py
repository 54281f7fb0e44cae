"""Where EfficientAD's score comes from on the simulated cell: each branch's map scored alone.

EfficientAD's map is the mean of a local (teacher - student) and a global (autoencoder - student) map, each
normalised by its validation quantiles; the image score is the map's max. This captures one scenario of
:mod:`benchmarks.bench_parts` (``--train-parts`` good sheets for training, then new good and defective
sheets), trains EfficientAD with ``cell train``'s code (``--efficientad`` JSON overrides of
configs/detectors/efficientad.yaml) and scores every new view three times: with both branches (the method),
the local branch alone and the global branch alone. Per branch it reports the per-image AUROC (views of
defective sheets that show the defect against good views, as bench_sdu_comparison), the share of those
defective views whose map peaks inside the defect's mask, and the quantiles of good views' scores. With
``--pictures DIR`` it also writes, for the defective views, both branch maps over the view, mask outlined (PNG).

Run:  python -m benchmarks.diagnose_efficientad --difficulty hard --efficientad '{"image_size": 128}'
Writes benchmarks/results/diagnose_efficientad.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.bench_parts import score_parts  # noqa: E402
from benchmarks.bench_sdu_comparison import capture_sets, judged_views  # noqa: E402
from benchmarks.timing import write_json  # noqa: E402

CONFIG = REPO / "configs" / "detectors" / "efficientad.yaml"
BRANCHES = ("both", "local", "global")


def use_branch(detector: Any, branch: str) -> None:
    """Make ``detector`` (a fitted EfficientAD) score with ``branch``'s normalised map alone (or both: the
    method). Same padding, upsampling and max as the method's ``_score_batch``."""
    import torch

    from detectors.efficientad.losses import image_map, normalise_map

    def score_batch(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            local, glob = detector._raw_maps(images)
            q = detector.quantiles
            parts = {"local": normalise_map(local, q[0], q[1]), "global": normalise_map(glob, q[2], q[3])}
            maps = 0.5 * (parts["local"] + parts["global"]) if branch == "both" else parts[branch]
            return image_map(maps, detector.config.image_size)

    detector._score_batch = score_batch


def branch_report(store: Any, model: Any, branch: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(numbers of one branch, {record id: map} of the defective views that show their defect)."""
    from sklearn.metrics import roc_auc_score

    from detectors.input_prep import to_capture_size

    use_branch(model.detector, branch)
    good, bad, peaks_inside, maps = [], [], 0, {}
    for record, score, amap, defective in judged_views(store, score_parts(store, model, ["good", "defective"])):
        if not defective:
            good.append(score)
            continue
        bad.append(score)
        mask = store.get_mask(record.id)[0]
        peaks_inside += bool(mask.flat[int(np.argmax(to_capture_size(amap, *mask.shape)))])
        maps[record.id] = amap
    scores = np.array(good + bad)
    labels_ = np.array([0] * len(good) + [1] * len(bad))
    return {"auroc": float(roc_auc_score(labels_, scores)), "n_good": len(good), "n_defective": len(bad),
            "defective_peak_inside_mask": peaks_inside / max(1, len(bad)),
            "good_quantiles": np.quantile(good, [0.5, 0.9, 1.0]).round(4).tolist(),
            "defective_quantiles": np.quantile(bad, [0.0, 0.5, 1.0]).round(4).tolist()}, maps


def write_pictures(store: Any, maps: dict[str, dict[str, Any]], folder: Path, limit: int = 6) -> None:
    """For up to ``limit`` defective views: the local and the global map over the view (jet colours, each
    from its own min to max), the defect's mask outlined in white, side by side (the line's overlay)."""
    from cell.overlays import heatmap_overlay, write_png
    from detectors.input_prep import to_capture_size

    records = {r.id: r for r in store.captures(campaign="defective")}
    for n, rid in enumerate(list(maps["local"])[:limit]):
        pixels, mask = store.load_image(records[rid]), store.get_mask(rid)[0]
        panels = [heatmap_overlay(pixels, to_capture_size(maps[b][rid], *mask.shape), mask) for b in ("local", "global")]
        write_png(folder / f"defective_{n}.png", np.concatenate(panels, axis=1))


def main(argv: list[str] | None = None) -> int:
    from acquisition.store import CaptureStore
    from cell.training import load_train_config, train_model
    from detectors.model_dir import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="demo")
    parser.add_argument("--difficulty", default="default")
    parser.add_argument("--camera", choices=("small", "full"), default="small")
    parser.add_argument("--train-parts", type=int, default=10)
    parser.add_argument("--good-parts", type=int, default=6)
    parser.add_argument("--defective-parts", type=int, default=6)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--efficientad", default="{}", help="JSON config overrides")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pictures", type=Path, default=None, help="folder for PNGs of defective views and maps")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "diagnose_efficientad.json")
    args = parser.parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    overrides = json.loads(args.efficientad)
    started, load_before = time.perf_counter(), os.getloadavg()
    report: dict[str, Any] = {"benchmark": "diagnose_efficientad", "scenario": args.scenario,
                              "difficulty": args.difficulty, "overrides": overrides, "branches": {}}
    with tempfile.TemporaryDirectory(prefix="diag_ead_") as tmp:
        store_path = Path(tmp) / "store"
        capture_sets(store_path, args)
        model_dir = Path(tmp) / "model"
        t0 = time.perf_counter()
        train_model(load_train_config(CONFIG, overrides), store_path, model_dir, campaigns=["train"])
        report["train_s"] = time.perf_counter() - t0
        model = load_model(model_dir, device="cpu")
        maps: dict[str, dict[str, Any]] = {}
        with CaptureStore(store_path) as store:
            for branch in BRANCHES:
                report["branches"][branch], maps[branch] = branch_report(store, model, branch)
                print(f"{branch}: {json.dumps(report['branches'][branch])}", flush=True)
            if args.pictures is not None:
                write_pictures(store, maps, args.pictures)
    report["wall_s"] = time.perf_counter() - started
    report["loadavg_before"], report["loadavg_after"] = load_before, os.getloadavg()
    write_json(args.out, report)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
