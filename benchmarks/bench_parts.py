"""Benchmark of part-level inspection: the old rule (a part is as bad as its worst view) against part maps
fused by each rule, on the simulated cell (issue 18, item 7).

Per scenario (a pose plan, a scene difficulty): capture ``--train-parts`` good sheets, train the detector on
them with ``cell train``'s code (its image threshold and its held-out good parts come from there), capture
``--good-parts`` new good and ``--defective-parts`` new defective sheets, score every capture ONCE, then fuse
the same scores by every rule of ``--rules``. Every threshold is chosen on training-side data only: the part
threshold of a rule is the ``good_quantile`` (0.99) of the held-out good training parts fused by that rule,
the old rule uses the model's image threshold (``threshold.json``). Measured on the new sheets: part AUROC,
false-reject rate of good sheets at zero missed defective sheets (threshold-free), missed / false rejects at
the training-side threshold, and the defect hit rate and centroid error (mm) against the simulation's exact
defect regions projected onto the part grid (:mod:`cell.part_evaluation`).

Camera: ``--camera small`` (default) is the test cell's 320x256 sensor with 4x larger pixels: the default
camera's field of view (the same plans, the same poses) at a 16th of the pixels, so the benchmark runs on a
2-core CPU; ``--camera full`` is configs/cells/sim.yaml's 1280x1024 camera. The detector is
configs/detectors/simplenet.yaml with the overrides in :data:`FAST_SIMPLENET` (fewer, smaller features:
CPU time; ``--model demo``: the model ``cell demo`` trains), said in the JSON.

Run:  nice -n 5 .venv/bin/python -m benchmarks.bench_parts [--scenario demo,sheet_raster] [--difficulty default]
      [--train-parts 10] [--good-parts 12] [--defective-parts 12]
Writes benchmarks/results/parts[_<difficulty>].json (numbers with the machine's load average).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.timing import write_json  # noqa: E402

SIM_CELL = REPO / "configs" / "cells" / "sim.yaml"
DETECTOR = REPO / "configs" / "detectors" / "simplenet.yaml"
SCENARIOS = {
    # plan file, sheet size (m)
    "demo": (REPO / "configs" / "campaigns" / "demo.yaml", (0.12, 0.10)),
    "sheet_raster": (REPO / "configs" / "campaigns" / "sheet_raster.yaml", (0.30, 0.25)),
}
FAST_SIMPLENET = {"image_size": 128, "pretrain_dim": 128, "target_dim": 128, "hidden_dim": 128, "meta_epochs": 3,
                  "epochs_per_meta": 2, "device": "cpu"}
#: ``--model demo``: what ``cell demo`` trains (configs/demo.yaml's override of the schedule)
DEMO_SIMPLENET = {"meta_epochs": 3}
RULES = ("max", "mean", "median", "kth")


def make_cell(scenario: str, camera: str, difficulty: str, seed: int, defect_rate: float):  # noqa: ANN201
    from cell.cell_factory import build_cell, load_cell_config

    config = load_cell_config(SIM_CELL)
    if camera == "small":
        config = config.model_copy(update={"camera": config.camera.model_copy(
            update={"width": 320, "height": 256, "pixel_size_um": 21.2})})
    size = SCENARIOS[scenario][1]
    scene = config.scene.model_copy(update={"sheet_width_m": size[0], "sheet_height_m": size[1]})
    if difficulty != "default":
        scene = scene.model_copy(update={"difficulty": difficulty})
    config = config.model_copy(update={"scene": scene})
    return build_cell(config, source=f"bench {scenario} ({camera} camera, {difficulty})", seed=seed,
                      defect_rate=defect_rate)


def capture(store: Any, scenario: str, camera: str, difficulty: str, campaign: str, parts: int, seed: int,
            defect_rate: float) -> float:
    from cell.campaign import run_campaign
    from cell.cell_factory import load_campaign_file
    from cell.commands.capture import campaign_identity

    cell = make_cell(scenario, camera, difficulty, seed, defect_rate)
    campaign_file = load_campaign_file(SCENARIOS[scenario][0])
    plan = cell.plan(campaign_file.plan)
    started = time.perf_counter()
    with cell:
        run_campaign(cell.robot, cell.camera, store, plan, parts, campaign=campaign, envelope=cell.envelope,
                     speed=campaign_file.plan.speed, accel=campaign_file.plan.accel, on_new_part=cell.on_new_part,
                     config=campaign_identity(cell, campaign_file))
    return time.perf_counter() - started


def score_parts(store: Any, model: Any, campaigns: list[str], part_ids: set[str] | None = None) -> dict[str, list]:
    """part id -> [(record, image score, map at half the capture's resolution)], every capture scored once."""
    from detectors.input_prep import score_capture

    out: dict[str, list] = {}
    for campaign in campaigns:
        for record in store.captures(campaign=campaign):
            if part_ids is not None and record.part_id not in part_ids:
                continue
            score, amap = score_capture(model.detector, store.load_image(record), model.spec)
            small = cv2.resize(amap, (record.width // 2, record.height // 2), interpolation=cv2.INTER_AREA)
            out.setdefault(record.part_id, []).append((record, float(score), small))
    return out


def fuse(maps: Any, views: list, config: Any) -> Any:
    from cell.part_map import PoseResult

    acc = maps.accumulator(views[0][0], config)
    for record, score, amap in views:
        acc.add(PoseResult(record.pose_id, score, amap, np.asarray(record.actual_pose, float), (record.height, record.width)))
    return acc.finish()


def run_scenario(args: argparse.Namespace, scenario: str, work: Path) -> dict[str, Any]:
    from acquisition.store import CaptureStore
    from cell.part_evaluation import PartOutcome, part_level_metrics
    from cell.part_map import PartMapConfig
    from cell.part_scoring import StoredPartMaps
    from cell.training import load_train_config, train_model
    from detectors.model_dir import load_model
    from detectors.thresholds import choose_threshold

    store_path, model_dir = work / f"{scenario}_store", work / f"{scenario}_model"
    timings: dict[str, float] = {}
    with CaptureStore(store_path, create=True) as store:
        timings["capture_train_s"] = capture(store, scenario, args.camera, args.difficulty, "train", args.train_parts,
                                             args.seed, 0.0)
        timings["capture_test_s"] = (
            capture(store, scenario, args.camera, args.difficulty, "good", args.good_parts, args.seed + 1, 0.0)
            + capture(store, scenario, args.camera, args.difficulty, "defective", args.defective_parts, args.seed + 2, 1.0))
    overrides = dict(FAST_SIMPLENET if args.model == "fast" else DEMO_SIMPLENET)
    started = time.perf_counter()
    train_model(load_train_config(DETECTOR, overrides), store_path, model_dir, campaigns=["train"])
    timings["train_s"] = time.perf_counter() - started
    model = load_model(model_dir, device="cpu" if args.model == "fast" else "auto")
    provenance = json.loads((model_dir / "provenance.json").read_text())
    holdout = {e["source"].split("/")[1] for e in provenance["threshold_holdout_good"]}
    started = time.perf_counter()
    with CaptureStore(store_path) as store:
        held = score_parts(store, model, ["train"], holdout)
        test = score_parts(store, model, ["good", "defective"])
        timings["score_s"] = time.perf_counter() - started
        labels = {p.part_id: p.label for p in store.parts()}
        masks = store.mask_infos()
        results: dict[str, Any] = {}
        for rule in args.rules:
            config = PartMapConfig(fusion=rule, k=args.k)
            maps = StoredPartMaps(store, config)
            started = time.perf_counter()
            held_scores = np.array([fuse(maps, views, config).score for views in held.values()])
            threshold = choose_threshold("good_quantile", held_scores, quantile=0.99).value
            outcomes = []
            for part_id, views in test.items():
                records = [v[0] for v in views]
                truth = maps.truth(records, masks) if labels[part_id] == "defective" else None
                outcomes.append(PartOutcome(part_id, records[0].campaign, labels[part_id], fuse(maps, views, config),
                                            max(v[1] for v in views), truth))
            section = part_level_metrics(outcomes, threshold, {"fusion": config.describe()})
            section["seconds_per_part_fusion"] = (time.perf_counter() - started) / max(len(held) + len(test), 1)
            section.pop("parts")
            results[config.describe()] = section
    image_threshold = model.threshold.value
    from sklearn.metrics import roc_auc_score

    images = [(score, labels[p] == "defective" and r.id in masks and masks[r.id].area_px > 0)
              for p, views in test.items() for r, score, _ in views
              if labels[p] == "good" or (r.id in masks and masks[r.id].area_px > 0)]
    image_labels = np.array([d for _, d in images])
    image_auroc = float(roc_auc_score(image_labels, [s for s, _ in images])) if 0 < image_labels.sum() < len(images) else None
    old = [(max(v[1] for v in views), labels[p] == "defective") for p, views in test.items()]
    old_scores = np.array([s for s, _ in old])
    old_labels = np.array([d for _, d in old])
    old_rule = {
        "image_threshold": image_threshold,
        "missed_defective_parts": int(np.sum((old_scores <= image_threshold) & old_labels)),
        "false_rejects": int(np.sum((old_scores > image_threshold) & ~old_labels)),
        "false_reject_rate": float(np.mean(old_scores[~old_labels] > image_threshold)),
    }
    return {"plan": str(SCENARIOS[scenario][0].relative_to(REPO)), "sheet_m": SCENARIOS[scenario][1],
            "poses_per_part": len(next(iter(test.values()))), "train_parts": args.train_parts,
            "held_out_good_parts": len(held), "good_parts": args.good_parts, "defective_parts": args.defective_parts,
            "image_auroc": image_auroc, "images": {"good": int((~image_labels).sum()), "defective": int(image_labels.sum())},
            "old_rule_at_image_threshold": old_rule, "fusion": results, "timings_s": timings}


def table(report: dict[str, Any]) -> str:
    """A markdown table (README) of every scenario and rule."""
    lines = ["| plan | rule | part AUROC | false rejects at zero miss | at training-side threshold: missed / false rejects "
             "| defect hit rate | median centroid error |", "|---|---|---|---|---|---|---|"]
    for name, s in report["scenarios"].items():
        print(f"{name}: image AUROC {s['image_auroc']} over {s['images']} images")
        old = s["old_rule_at_image_threshold"]
        first = next(iter(s["fusion"].values()))
        zm = first["rules"]["max_image"]["at_zero_miss"]
        lines.append(f"| {name} | worst view (old rule, image threshold) | {first['rules']['max_image']['auroc']:.3f} | "
                     f"{zm['false_rejects']}/{zm['good_parts']} | {old['missed_defective_parts']} / "
                     f"{old['false_rejects']} | - | - |")
        for rule, r in s["fusion"].items():
            zm = r["rules"]["part_map"]["at_zero_miss"]
            at = r["at_part_threshold"]
            loc = r["localisation"] or {}
            err = (loc.get("centroid_error_mm") or {}).get("median")
            hit = loc.get("hit_rate")
            lines.append(f"| {name} | fused, {rule} | {r['rules']['part_map']['auroc']:.3f} | {zm['false_rejects']}/"
                         f"{zm['good_parts']} | {at['missed_defective_parts']} / {at['false_rejects']} | "
                         f"{'-' if hit is None else f'{hit:.2f}'} | {'-' if err is None else f'{err:.1f} mm'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="demo,sheet_raster", help="comma-separated: demo, sheet_raster")
    parser.add_argument("--difficulty", default="default", help="the scene's difficulty preset")
    parser.add_argument("--camera", choices=("small", "full"), default="small")
    parser.add_argument("--model", choices=("fast", "demo"), default="fast",
                        help="fast: FAST_SIMPLENET (CPU minutes); demo: the model `cell demo` trains")
    parser.add_argument("--train-parts", type=int, default=10)
    parser.add_argument("--good-parts", type=int, default=12)
    parser.add_argument("--defective-parts", type=int, default=12)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--k", type=int, default=2, help="k of the kth rule")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.rules = [r for r in args.rules.split(",") if r]
    scenarios = [s for s in args.scenario.split(",") if s]
    load_before = os.getloadavg()
    started = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "parts", "camera": args.camera, "difficulty": args.difficulty,
                              "detector": {"config": str(DETECTOR.relative_to(REPO)),
                                           "overrides": FAST_SIMPLENET if args.model == "fast" else DEMO_SIMPLENET},
                              "k": args.k, "seed": args.seed, "scenarios": {}}
    with tempfile.TemporaryDirectory(prefix="bench_parts_") as tmp:
        for scenario in scenarios:
            print(f"== {scenario}", flush=True)
            report["scenarios"][scenario] = run_scenario(args, scenario, Path(tmp))
    report["wall_s"] = time.perf_counter() - started
    report["loadavg_before"] = load_before
    report["loadavg_after"] = os.getloadavg()
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    suffix = "" if args.difficulty == "default" else f"_{args.difficulty}"
    out = args.out or REPO / "benchmarks" / "results" / f"parts{suffix}.json"
    write_json(out, report)
    print(table(report))
    print(f"written {out} (load average {report['loadavg_before']} -> {report['loadavg_after']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
