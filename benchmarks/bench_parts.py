"""Benchmark of part-level inspection: the old rule (a part is as bad as its worst view) against part maps
fused by each rule, on the simulated cell (issue 18, item 7).

Per scenario (a pose plan, a scene difficulty): capture ``--train-parts`` good sheets, train the detector on
them with ``cell train``'s code (its image threshold and its held-out good parts come from there; or score with
a trained ``--model-dir``), capture ``--holdout-parts`` further good sheets that are never trained on (training
side: the part threshold's held-out parts), ``--good-parts`` new good and ``--defective-parts`` new defective
sheets, score every capture ONCE (``--runtime onnx``: the model exported with ``cell export``'s code and run
on ONNX Runtime, the line's CPU runtime), project every view onto the part grid once, then fuse the same views by
every rule of ``--rules``. Every threshold and setting is chosen on training-side data only: per rule, the
unjudged edge band (``--edge-mm auto``: :func:`cell.part_map.choose_edge_mm` on the held-out good parts) and the
part threshold (the ``good_quantile`` ``--part-quantile``, 0.99, of the held-out good parts fused by that rule);
the old rule uses the model's image threshold (``threshold.json``). Measured on the new sheets: part AUROC,
false-reject rate of good sheets at zero missed defective sheets (threshold-free), missed / false rejects at
the training-side threshold, and the defect hit rate and centroid error (mm) against the simulation's exact
defect regions projected onto the part grid (:mod:`cell.part_evaluation`), with the worst good parts' and the
weakest defective parts' hot spots (where, how far from the edge, seen by how many views, which pose) and the
true defects missed. ``--select-parts N``: N defective sheets of another seed (campaign ``select``), never the
test set, on which every centroid placement is measured per rule (``selection`` in the JSON): the data the
defaults were chosen on.

Camera: ``--camera small`` (default) is the test cell's 320x256 sensor with 4x larger pixels: the default
camera's field of view (the same plans, the same poses) at a 16th of the pixels; ``--camera full`` is
configs/cells/sim.yaml's 1280x1024 camera. The detector is configs/detectors/simplenet.yaml with the overrides
in :data:`FAST_SIMPLENET` (fewer, smaller features: CPU time) or, ``--model demo``, the model ``cell demo``
trains; said in the JSON.

``--work DIR`` keeps the stores, models and per-part scores (``<scenario>_scores_<runtime>/``) and reuses them:
an interrupted run resumes, and a run with other fusion settings re-fuses without scoring again; a store
captured for more parts serves a run for fewer (the first N of each campaign).

Run:  nice -n 5 .venv/bin/python -m benchmarks.bench_parts [--scenario demo,sheet_raster] [--difficulty default]
      [--camera full] [--model demo] [--runtime onnx] [--train-parts 10] [--holdout-parts 0] [--good-parts 12]
      [--defective-parts 12] [--select-parts 0] [--centroid peak_weighted] [--edge-mm auto] [--work DIR]
Writes benchmarks/results/parts[_<difficulty>].json (numbers with the machine's load average), after each scenario.
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
    cell = make_cell(scenario, camera, difficulty, seed, defect_rate)
    return capture_with(cell, SCENARIOS[scenario][0], store, campaign, parts)


def capture_with(cell: Any, plan_file: Any, store: Any, campaign: str, parts: int) -> float:
    """Capture ``parts`` parts with the built ``cell`` along ``plan_file``'s plan into ``store`` as ``campaign``
    (the capture command's campaign identity); returns wall seconds."""
    from cell.campaign import run_campaign
    from cell.cell_factory import load_campaign_file
    from cell.commands.capture import campaign_identity

    campaign_file = load_campaign_file(plan_file)
    plan = cell.plan(campaign_file.plan)
    started = time.perf_counter()
    with cell:
        run_campaign(cell.robot, cell.camera, store, plan, parts, campaign=campaign, envelope=cell.envelope,
                     speed=campaign_file.plan.speed, accel=campaign_file.plan.accel, on_new_part=cell.on_new_part,
                     config=campaign_identity(cell, campaign_file))
    return time.perf_counter() - started


def score_parts(store: Any, model: Any, campaigns: list[str], part_ids: set[str] | None = None,
                cache: Path | None = None, log: Any = None) -> dict[str, list]:
    """part id -> [(record, image score, anomaly map at the detector's working resolution)], every capture scored
    once. The working-resolution map is what the line's full-size map is interpolated from (the projection reads
    it at the same points: :func:`calibration.plane_projection.sample_onto_grid`). ``cache``: a folder where each
    part's scores and maps are kept (``<campaign>/<part>.npz``) and read back by a later run (resume, re-fusion
    with other settings); ``log(message)``: progress per part."""
    from detectors.input_prep import score_working

    out: dict[str, list] = {}
    for campaign in campaigns:
        parts: dict[str, list] = {}
        for record in store.captures(campaign=campaign):
            if part_ids is None or record.part_id in part_ids:
                parts.setdefault(record.part_id, []).append(record)
        for n, (part_id, records) in enumerate(parts.items(), 1):
            started = time.perf_counter()
            file = None if cache is None else cache / campaign / f"{part_id}.npz"
            if file is not None and file.is_file():
                with np.load(file) as data:
                    if [str(p) for p in data["pose_ids"]] == [r.pose_id for r in records]:
                        out[part_id] = [(r, float(v), m) for r, v, m in zip(records, data["scores"], data["maps"])]
                        continue
            views = []
            for record in records:
                score, amap = score_working(model.detector, store.load_image(record), model.spec)
                views.append((record, float(score), np.asarray(amap, dtype=np.float32)))
            out[part_id] = views
            if file is not None:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_suffix(".tmp.npz")
                np.savez(tmp, pose_ids=np.array([r.pose_id for r in records]), scores=np.array([v[1] for v in views]),
                         maps=np.stack([v[2] for v in views]))
                os.replace(tmp, file)
            if log is not None:
                log(f"scored {campaign}/{part_id} ({n}/{len(parts)}, {len(records)} views) in "
                    f"{time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.1f}")
    return out


def accumulate(maps: Any, views: list, config: Any) -> Any:
    """The part's :class:`~cell.part_map.PartMapAccumulator` with every scored view added (``finish(config)``
    fuses it by any rule and edge band)."""
    from cell.part_map import PoseResult

    acc = maps.accumulator(views[0][0], config)
    for record, score, amap in views:
        acc.add(PoseResult(record.pose_id, score, amap, np.asarray(record.actual_pose, float), (record.height, record.width)))
    return acc


def fuse(maps: Any, views: list, config: Any) -> Any:
    """The part's fused :class:`~cell.part_map.PartMap` by ``config``."""
    return accumulate(maps, views, config).finish()


def log(message: str) -> None:
    """A progress line on stderr with the UTC time."""
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} {message}", file=sys.stderr, flush=True)


def hotspot(part_map: Any) -> dict[str, Any]:
    """Where a part map peaks: the cell's centre (mm, part frame), its distance to the outline's edge (mm), how
    many views see it, and the pose whose view is highest there (to tell border rows and single-view false
    alarms from defects)."""
    covered = part_map.covered
    if not covered.any():
        return {}
    values = np.where(covered, np.nan_to_num(part_map.fused, nan=-np.inf), -np.inf)
    r, c = np.unravel_index(int(np.argmax(values)), values.shape)
    x, y = (part_map.grid.cell_centres()[r, c] * 1e3).tolist()
    half_w, half_h = part_map.grid.shape[1] * part_map.grid.cell_m * 500.0, part_map.grid.shape[0] * part_map.grid.cell_m * 500.0
    best_pose, best = None, -np.inf
    for pose, patch in part_map.footprints.items():
        rr, cc = r - patch.row0, c - patch.col0
        h, w = patch.values.shape
        if 0 <= rr < h and 0 <= cc < w and np.isfinite(patch.values[rr, cc]) and patch.values[rr, cc] > best:
            best_pose, best = pose, float(patch.values[rr, cc])
    return {"x_mm": round(x, 1), "y_mm": round(y, 1), "edge_distance_mm": round(min(half_w - abs(x), half_h - abs(y)), 1),
            "views": int(part_map.views[r, c]), "worst_pose": best_pose, "worst_view_value": best}


def missed_truth(outcomes: list, threshold: float) -> dict[str, Any]:
    """True defects of the defective parts (:func:`cell.part_evaluation.true_defects` of the truth map over the
    WHOLE plan outline): how many lie entirely in the unjudged edge band (``part_map.edge_mm``), and for each
    judged one that no reported region overlaps: its part, centre, area and the highest fused value inside it."""
    from cell.part_evaluation import true_defects

    in_band, missed, total = 0, [], 0
    for o in outcomes:
        if o.label != "defective" or o.truth is None:
            continue
        pm = o.part_map
        truth = (o.truth.views > 0) & (np.nan_to_num(o.truth.fused, nan=0.0) > 0.5)
        reported = pm.covered & (np.nan_to_num(pm.fused, nan=-np.inf) > threshold)
        centres = pm.grid.cell_centres() * 1e3
        for region in true_defects(truth, pm.grid.cell_m * 1e3):
            total += 1
            judged = region & pm.covered
            if not judged.any():
                in_band += 1
                continue
            if not (judged & reported).any():
                x, y = centres[region].mean(axis=0).tolist()
                missed.append({"part_id": o.part_id, "x_mm": round(x, 1), "y_mm": round(y, 1),
                               "area_mm2": round(float(region.sum()) * (pm.grid.cell_m * 1e3) ** 2, 1),
                               "peak_inside": round(float(np.nanmax(np.where(judged, pm.fused, np.nan))), 4)})
    return {"true_defects_on_outline": total, "entirely_in_unjudged_band": in_band, "missed": missed}


def selection_metrics(accs: dict[str, Any], truths: dict[str, Any], config: Any, threshold: float,
                      views: dict[str, list]) -> dict[str, Any]:
    """On the selection parts (defective parts of another seed, never the test set): missed parts at the
    training-side ``threshold`` and the localisation of each centroid placement (``part_map.centroid``), for
    choosing the rule and the centroid."""
    from cell.part_evaluation import PartOutcome, localisation
    from cell.part_map import CENTROIDS

    out: dict[str, Any] = {"parts": len(accs)}
    for centroid in CENTROIDS:
        placed = config.model_copy(update={"centroid": centroid})
        outcomes = [PartOutcome(p, "select", "defective", a.finish(placed), max(v[1] for v in views[p]), truths.get(p))
                    for p, a in accs.items()]
        out["missed_defective_parts"] = int(sum(1 for o in outcomes if not o.score > threshold))
        loc = localisation(outcomes, threshold)
        out[centroid] = {k: loc[k] for k in ("true_defects", "labelled_fragments", "hit", "hit_rate",
                                             "false_defects_on_defective_parts", "centroid_error_mm")}
    return out


def load_scoring_model(model_dir: Path, runtime: str, device: str) -> Any:
    """The trained model on ``runtime``: ``torch`` (the model directory), ``onnx`` (exported once into
    ``model_dir/exported/onnx`` with ``cell export``'s code and its parity check, then ONNX Runtime: the line's
    CPU runtime)."""
    from cell.runtime_models import export_trained_model, load_model_for_runtime

    if runtime == "onnx" and not (model_dir / "exported" / "onnx" / "manifest.json").is_file():
        export_trained_model(model_dir, "onnx")
    return load_model_for_runtime(model_dir, runtime=runtime, device="cpu" if runtime != "torch" else device)


def run_scenario(args: argparse.Namespace, scenario: str, work: Path) -> dict[str, Any]:
    """Capture, train, score and fuse one scenario in ``work`` (each step is skipped when ``work`` already holds
    its result: ``--work DIR`` resumes an interrupted run and re-fuses stored scores with other settings)."""
    from acquisition.store import CaptureStore
    from cell.part_evaluation import PartOutcome, part_level_metrics
    from cell.part_map import PartMapConfig
    from cell.part_scoring import StoredPartMaps
    from cell.training import TrainPartMapConfig, edge_band_for, load_train_config, train_model
    from detectors.thresholds import choose_threshold

    store_path, model_dir = work / f"{scenario}_store", work / f"{scenario}_model"
    cache = work / f"{scenario}_scores_{args.runtime}{'' if args.model_dir is None else '_' + args.model_dir.name}"
    timings: dict[str, float] = {}
    captured = store_path / "bench_captured.json"
    counts = {"train": args.train_parts, "holdout": args.holdout_parts, "good": args.good_parts,
              "defective": args.defective_parts, "select": args.select_parts}
    have = json.loads(captured.read_text()) if captured.is_file() else {}
    if have.get("train") != counts["train"] or any(0 < have.get(k, 0) < v for k, v in counts.items()):
        import shutil

        for old in (store_path, model_dir):  # another training side or too few parts: start again
            if old.exists():
                shutil.rmtree(old)
        have = {}
    seeds = {"train": (args.seed, 0.0), "holdout": (args.seed + 3, 0.0), "good": (args.seed + 1, 0.0),
             "defective": (args.seed + 2, 1.0), "select": (args.seed + 4, 1.0)}
    with CaptureStore(store_path, create=not store_path.exists()) as store:
        for campaign, n in counts.items():  # a campaign missing from the store is captured (e.g. a new holdout)
            if n and not have.get(campaign):
                log(f"{scenario}: capturing {n} {campaign} parts ({args.camera} camera)")
                key = "capture_test_s" if campaign in ("good", "defective") else "capture_train_s"
                timings[key] = timings.get(key, 0.0) + capture(store, scenario, args.camera, args.difficulty, campaign,
                                                               n, *seeds[campaign])
            have[campaign] = have.get(campaign) or n
            captured.write_text(json.dumps(have))
    overrides = dict(FAST_SIMPLENET if args.model == "fast" else DEMO_SIMPLENET)
    if args.model_dir is not None:  # a model trained elsewhere (e.g. by the demo scenario): no training here
        model_dir = args.model_dir
        log(f"{scenario}: scoring with the model in {model_dir} (not trained on this scenario)")
    elif not (model_dir / "provenance.json").is_file():
        train_config = load_train_config(DETECTOR, overrides)
        train_config.threshold.holdout_fraction = args.holdout_fraction
        log(f"{scenario}: training ({args.model} model, {args.holdout_fraction:.0%} of the training parts held out)")
        started = time.perf_counter()
        train_model(train_config, store_path, model_dir, campaigns=["train"], log=log)
        timings["train_s"] = time.perf_counter() - started
        log(f"{scenario}: trained in {timings['train_s']:.0f} s")
    started = time.perf_counter()
    model = load_scoring_model(model_dir, args.runtime, "cpu" if args.model == "fast" else "auto")
    timings["load_or_export_s"] = time.perf_counter() - started
    provenance = json.loads((model_dir / "provenance.json").read_text())
    holdout = ({e["source"].split("/")[1] for e in provenance["threshold_holdout_good"]} if args.model_dir is None
               else set())
    started = time.perf_counter()
    with CaptureStore(store_path) as store:
        # the first N parts of each campaign (a store captured for more parts serves a smaller run)
        first = {c: sorted({r.part_id for r in store.captures(campaign=c)})[:n] for c, n in counts.items() if c != "train"}
        held = score_parts(store, model, ["train"], holdout, cache=cache, log=log)
        held.update(score_parts(store, model, ["holdout"], set(first["holdout"]), cache=cache, log=log))
        test = score_parts(store, model, ["defective", "good"], set(first["good"]) | set(first["defective"]),
                           cache=cache, log=log)
        select = (score_parts(store, model, ["select"], set(first["select"]), cache=cache, log=log)
                  if counts["select"] else {})
        timings["score_s"] = time.perf_counter() - started
        labels = {p.part_id: p.label for p in store.parts()}
        masks = store.mask_infos()
        results: dict[str, Any] = {}
        # every view is projected once (edge_mm 0); each rule and edge band is a finish() of the same views
        base = PartMapConfig(k=args.k, edge_mm=0.0, border_px=args.border_px,
                             **({} if args.centroid is None else {"centroid": args.centroid}))
        maps = StoredPartMaps(store, base)
        started = time.perf_counter()
        held_acc = {p: accumulate(maps, views, base) for p, views in held.items()}
        test_acc = {p: accumulate(maps, views, base) for p, views in test.items()}
        truths = {p: maps.truth([v[0] for v in views], masks) for p, views in test.items() if labels[p] == "defective"}
        select_acc = {p: accumulate(maps, views, base) for p, views in select.items()}
        select_truths = {p: maps.truth([v[0] for v in views], masks) for p, views in select.items()}
        timings["projection_s"] = time.perf_counter() - started
        log(f"{scenario}: projected {len(held_acc) + len(test_acc)} parts in {timings['projection_s']:.0f} s")
        size_m = next(iter(held_acc.values())).part.size_m
        for rule in args.rules:
            started = time.perf_counter()
            unbanded = base.model_copy(update={"fusion": rule})
            # the band as `cell train` chooses it (part_map.edge_mm: auto), on the same held-out good parts
            edge = edge_band_for(TrainPartMapConfig(**{**unbanded.model_dump(), "edge_mm": "auto"}), held_acc)
            edge_mm = edge["edge_mm"] if args.edge_mm == "auto" else float(args.edge_mm)
            config = unbanded.model_copy(update={"edge_mm": edge_mm})
            held_maps = {p: a.finish(config) for p, a in held_acc.items()}
            held_scores = np.array([m.score for m in held_maps.values()])
            threshold = choose_threshold("good_quantile", held_scores, quantile=args.part_quantile).value
            outcomes = [PartOutcome(p, test[p][0][0].campaign, labels[p], a.finish(config), max(v[1] for v in test[p]),
                                    truths.get(p)) for p, a in test_acc.items()]
            section = part_level_metrics(outcomes, threshold, {"fusion": config.describe(), "edge_mm": edge_mm})
            section["edge_band_chosen_on_held_out_good"] = edge
            section["judged_share_of_outline"] = (max(size_m[0] * 1e3 - 2 * edge_mm, 0.0) * max(size_m[1] * 1e3 - 2 * edge_mm, 0.0)
                                                  / (size_m[0] * size_m[1] * 1e6))
            section["seconds_per_part_fusion"] = (time.perf_counter() - started) / max(len(held) + len(test), 1)
            section["held_out_part_scores"] = sorted(float(v) for v in held_scores)
            good = sorted((o for o in outcomes if o.label == "good"), key=lambda o: -o.score)
            defective = sorted((o for o in outcomes if o.label == "defective"), key=lambda o: o.score)
            section["worst_good_parts"] = [{"part_id": o.part_id, "score": o.score, **hotspot(o.part_map)} for o in good[:5]]
            section["weakest_defective_parts"] = [{"part_id": o.part_id, "score": o.score, **hotspot(o.part_map)}
                                                  for o in defective[:5]]
            section["truth_regions"] = missed_truth(outcomes, threshold)
            if select_acc:
                section["selection"] = selection_metrics(select_acc, select_truths, config, threshold, select)
            section.pop("parts")
            results[config.describe()] = section
            log(f"{scenario}: fused by {config.describe()}, edge band {edge_mm:g} mm: part AUROC "
                f"{section['rules']['part_map']['auroc']}")
            del outcomes, held_maps
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
            "model_dir": None if args.model_dir is None else str(args.model_dir),
            "held_out_good_parts": len(held), "held_out_from_train": len(holdout),
            "holdout_parts": args.holdout_parts, "good_parts": args.good_parts, "defective_parts": args.defective_parts,
            "runtime": args.runtime, "part_threshold": {"policy": "good_quantile", "quantile": args.part_quantile},
            "part_map": {"edge_mm": args.edge_mm, "border_px": args.border_px, "cell_mm": 0.5, "centroid": base.centroid},
            "test_parts_scored_first": "defective, then good",
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
    for name, s in report["scenarios"].items():
        first = next(iter(s["fusion"].values()))
        if "selection" not in first:
            continue
        lines += ["", f"selection parts ({name}, {first['selection']['parts']} defective parts of another seed): "
                  "missed parts at the training-side threshold, hit rate / median centroid error per centroid",
                  "| rule | missed | region | peak_weighted | core |", "|---|---|---|---|---|"]
        for rule, r in s["fusion"].items():
            sel = r["selection"]
            cells = [f"{sel[c]['hit_rate']:.2f} ({sel[c]['hit']}/{sel[c]['true_defects']}) / "
                     f"{(sel[c]['centroid_error_mm'] or {}).get('median', float('nan')):.2f} mm"
                     for c in ("region", "peak_weighted", "core")]
            lines.append(f"| {rule} | {sel['missed_defective_parts']}/{sel['parts']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="demo,sheet_raster", help="comma-separated: demo, sheet_raster")
    parser.add_argument("--difficulty", default="default", help="the scene's difficulty preset")
    parser.add_argument("--camera", choices=("small", "full"), default="small")
    parser.add_argument("--model", choices=("fast", "demo"), default="fast",
                        help="fast: FAST_SIMPLENET (CPU minutes); demo: the model `cell demo` trains")
    parser.add_argument("--train-parts", type=int, default=10)
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="score with this trained model directory instead of training one (--train-parts may be 0;"
                             " the part threshold then comes from --holdout-parts alone)")
    parser.add_argument("--holdout-parts", type=int, default=0,
                        help="extra good parts captured for the part threshold only (never trained on), fused with "
                             "the training's held-out parts")
    parser.add_argument("--good-parts", type=int, default=12)
    parser.add_argument("--select-parts", type=int, default=0,
                        help="defective parts of another seed, never the test set: the localisation rule is chosen "
                             "on them (campaign 'select')")
    parser.add_argument("--defective-parts", type=int, default=12)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--k", type=int, default=2, help="k of the kth rule")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                        help="scoring runtime: torch (the model directory) or onnx (exported, ONNX Runtime: the line's)")
    parser.add_argument("--holdout-fraction", type=float, default=0.2,
                        help="share of the training parts held out for the thresholds (threshold.holdout_fraction)")
    parser.add_argument("--part-quantile", type=float, default=0.99,
                        help="good_quantile of the held-out parts' fused scores: the part threshold")
    parser.add_argument("--edge-mm", default="auto",
                        help="part_map.edge_mm, the unjudged band inside the outline: mm, or auto (chosen per rule on "
                             "the held-out good parts: cell.part_map.choose_edge_mm)")
    parser.add_argument("--centroid", default=None,
                        help="part_map.centroid of the test numbers (default: PartMapConfig's; the selection parts "
                             "are measured with every placement)")
    parser.add_argument("--border-px", type=float, default=0.0, help="part_map.border_px: unjudged image border")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the stores, models and scores here and reuse them (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.rules = [r for r in args.rules.split(",") if r]
    scenarios = [s for s in args.scenario.split(",") if s]
    load_before = os.getloadavg()
    started = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "parts", "camera": args.camera, "difficulty": args.difficulty,
                              "runtime": args.runtime, "argv": sys.argv[1:] if argv is None else argv,
                              "detector": {"config": str(DETECTOR.relative_to(REPO)),
                                           "overrides": FAST_SIMPLENET if args.model == "fast" else DEMO_SIMPLENET},
                              "k": args.k, "seed": args.seed, "scenarios": {}}
    suffix = "" if args.difficulty == "default" else f"_{args.difficulty}"
    out = args.out or REPO / "benchmarks" / "results" / f"parts{suffix}.json"

    def finish() -> None:
        report["wall_s"] = time.perf_counter() - started
        report["loadavg_before"] = load_before
        report["loadavg_after"] = os.getloadavg()
        report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
        write_json(out, report)

    with tempfile.TemporaryDirectory(prefix="bench_parts_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for scenario in scenarios:
            print(f"== {scenario}", flush=True)
            report["scenarios"][scenario] = run_scenario(args, scenario, work)
            finish()  # partial results after each scenario
    print(table(report))
    print(f"written {out} (load average {report['loadavg_before']} -> {report['loadavg_after']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
