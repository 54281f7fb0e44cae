"""Setting the HARD simulated scene by measurement, and the part-level ROC on it (issue 18, item 6).

1. **Train once** a full-size SimpleNet (configs/detectors/simplenet.yaml as it is: the settings the real line
   uses, not bench_parts' ``FAST_SIMPLENET``) with ``cell train``'s code on ``--train-parts`` good sheets of the
   hard scene (configs/cells/sim_hard.yaml). The model sees good sheets only, so the defect strength
   (``scene.hard.defect_contrast``) cannot change it: one model serves the whole sweep.
2. **Sweep** (``--contrasts``): capture ``--defective-parts`` defective sheets once per strength (the same
   parts: same seed, same defects at the same places, only their visibility differs) and ``--good-parts``
   good sheets once; the per-image AUROC per strength (images of defective sheets that show a defect against
   images of good sheets), also per defect kind. This sets the SIMULATOR (how visible its defects are) so
   that the full-size model's AUROC is near 0.9 as on real data; it tunes no detector setting and no
   threshold.
3. **Part level** at the preset's own strength (the value in the cell file, i.e. the tuned one; when it is not
   in the sweep, the swept strength nearest AUROC 0.9), on the sweep's own good and defective sheets at that
   strength (no second scoring: the CPU budget): the old rule (a part is as bad as its worst view, at
   the model's image threshold) and part maps fused by each rule (part threshold: 0.99 quantile of the
   held-out good training parts fused by that rule), part AUROC, false-reject rate at zero miss and the ROC
   points of each. Scoring and fusion are :mod:`benchmarks.bench_parts`' own (``score_parts``, ``fuse``).
4. **Normal variation** present and not learnt away: the spread of the good sheets' mean brightness across
   parts, and the rank correlation of the good images' scores with their mean brightness.

Plan: ``configs/campaigns/demo_overlap.yaml`` (the demo's 2 x 2 raster, three shifted shots per point: 12
overlapping views per 0.12 x 0.10 m sheet) by default, because sheet_raster's 75 views per sheet cost six times
the scoring on the shared 2-core CPU; ``--plan configs/campaigns/sheet_raster.yaml`` runs the production plan.
Camera: ``small`` (bench_parts' 320 x 256 sensor with 4x larger pixels: the default camera's field of view, and
the model resizes every capture to its 256 px square either way) or ``full``.

Run:  nice -n 5 .venv/bin/python -m benchmarks.bench_hard_preset [--contrasts 0.2,0.3,0.4,0.5,0.7,1.0]
      [--train-parts 8] [--good-parts 12] [--defective-parts 12] [--model-dir DIR] [--keep-model DIR]
Writes benchmarks/results/hard_preset.json (numbers, ROC points, load average, wall time).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.bench_parts import DETECTOR, RULES, capture_with, fuse, score_parts  # noqa: E402
from benchmarks.timing import write_json  # noqa: E402

HARD_CELL = REPO / "configs" / "cells" / "sim_hard.yaml"
DEFAULT_PLAN = REPO / "configs" / "campaigns" / "demo_overlap.yaml"


def hard_cell_config(plan_file: Path, camera: str, defect_contrast: Optional[float] = None) -> Any:
    """configs/cells/sim_hard.yaml with sheets of the plan's part size, the chosen camera and, when given, another
    ``scene.hard.defect_contrast``."""
    from cell.cell_factory import load_campaign_file, load_cell_config

    config = load_cell_config(HARD_CELL)
    if config.scene.difficulty != "hard":
        raise ValueError(f"{HARD_CELL}: scene.difficulty is {config.scene.difficulty!r}, expected 'hard'")
    if camera == "small":
        config = config.model_copy(update={"camera": config.camera.model_copy(
            update={"width": 320, "height": 256, "pixel_size_um": 21.2})})
    width, height = load_campaign_file(plan_file).plan.part_size_m
    hard = config.scene.hard
    if defect_contrast is not None:
        hard = type(hard).model_validate({**hard.model_dump(), "defect_contrast": defect_contrast})
    scene = config.scene.model_copy(update={"sheet_width_m": width, "sheet_height_m": height, "hard": hard})
    return config.model_copy(update={"scene": scene})


def capture(store: Any, config: Any, plan_file: Path, campaign: str, parts: int, seed: int, defect_rate: float) -> float:
    """Capture ``parts`` sheets of ``config``'s cell along the plan into ``store``; returns wall seconds."""
    from cell.cell_factory import build_cell

    cell = build_cell(config, source=f"bench_hard_preset {campaign}", seed=seed, defect_rate=defect_rate)
    return capture_with(cell, plan_file, store, campaign, parts)


def image_auroc(good: dict[str, list], defective: dict[str, list], masks: dict[int, Any]) -> dict[str, Any]:
    """Per-image AUROC: images of defective parts whose mask is not empty against every image of good parts;
    also per defect kind (images showing that kind against the same good images)."""
    from sklearn.metrics import roc_auc_score

    good_scores = [s for views in good.values() for _, s, _ in views]
    shown = [(s, masks[r.id].types or (masks[r.id].defect_type,)) for views in defective.values()
             for r, s, _ in views if r.id in masks and masks[r.id].area_px > 0]

    def auroc(scores: Sequence[float]) -> Optional[float]:
        if not scores or not good_scores:
            return None
        return float(roc_auc_score([0] * len(good_scores) + [1] * len(scores), list(good_scores) + list(scores)))

    kinds = sorted({k for _, ks in shown for k in ks})
    return {"auroc": auroc([s for s, _ in shown]), "good_images": len(good_scores), "defect_images": len(shown),
            "by_kind": {k: {"auroc": auroc([s for s, ks in shown if k in ks]),
                            "images": sum(1 for _, ks in shown if k in ks)} for k in kinds}}


def roc_points(scores: np.ndarray, labels: np.ndarray) -> list[list[float]]:
    """The part-level ROC as [false-positive rate, true-positive rate, threshold] points."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(labels.astype(int), scores)
    return [[float(a), float(b), float(c) if np.isfinite(c) else None] for a, b, c in zip(fpr, tpr, thr)]


def variation(store: Any, good: dict[str, list]) -> dict[str, Any]:
    """Is the normal variation there, and does the model see it? Spread of the good sheets' mean grey level
    across parts (0..255) and Spearman's rank correlation of good images' scores with their mean grey level."""
    from scipy.stats import spearmanr

    means, scores, per_part = [], [], []
    for views in good.values():
        part = []
        for record, score, _ in views:
            image = np.asarray(store.load_image(record), dtype=np.float64)
            means.append(float(image.mean()))
            scores.append(score)
            part.append(means[-1])
        per_part.append(float(np.mean(part)))
    rho = spearmanr(means, scores)
    return {"part_mean_grey_std": float(np.std(per_part)), "part_mean_grey_range": [min(per_part), max(per_part)],
            "score_vs_brightness_spearman": float(rho.statistic), "score_vs_brightness_p": float(rho.pvalue),
            "good_image_score_quantiles": [float(q) for q in np.quantile(scores, [0.05, 0.5, 0.95])]}


def part_level(held: tuple[Any, dict[str, list]], tests: Sequence[tuple[Any, dict[str, list]]],
               image_threshold: float, rules: Sequence[str], k: int) -> dict[str, Any]:
    """Old rule and each fusion rule on the test parts: AUROC, zero-miss false rejects, ROC points.
    ``held``: (store, views) of the held-out good training parts (the part thresholds); ``tests``: (store,
    views) groups of test parts (good and defective sheets may lie in different stores)."""
    from cell.part_evaluation import PartOutcome, part_level_metrics
    from cell.part_map import PartMapConfig
    from cell.part_scoring import StoredPartMaps
    from detectors.thresholds import choose_threshold

    labelled = [(store, {p.part_id: p.label for p in store.parts()}, store.mask_infos(), views)
                for store, views in tests]
    truth_labels = np.array([labels[p] == "defective" for _, labels, _, views in labelled for p in views])
    old_scores = np.array([max(v[1] for v in pv) for _, _, _, views in labelled for pv in views.values()])
    good = ~truth_labels
    out: dict[str, Any] = {"old_rule": {
        "image_threshold": image_threshold,
        "false_rejects_at_image_threshold": int(np.sum(old_scores[good] > image_threshold)),
        "missed_at_image_threshold": int(np.sum(old_scores[truth_labels] <= image_threshold)),
        "roc": roc_points(old_scores, truth_labels)}, "fusion": {}}
    for rule in rules:
        config = PartMapConfig(fusion=rule, k=k)
        held_maps = StoredPartMaps(held[0], config)
        threshold = choose_threshold("good_quantile", np.array([fuse(held_maps, v, config).score
                                                                for v in held[1].values()]), quantile=0.99).value
        outcomes = []
        for store, labels, masks, views in labelled:
            maps = StoredPartMaps(store, config)
            for part_id, pv in views.items():
                records = [v[0] for v in pv]
                truth = maps.truth(records, masks) if labels[part_id] == "defective" else None
                outcomes.append(PartOutcome(part_id, records[0].campaign, labels[part_id], fuse(maps, pv, config),
                                            max(v[1] for v in pv), truth))
        section = part_level_metrics(outcomes, threshold, {"fusion": config.describe()})
        section["roc"] = roc_points(np.array([o.score for o in outcomes]), truth_labels)
        section["part_scores"] = {o.part_id: o.score for o in outcomes}
        section.pop("parts")
        out["fusion"][config.describe()] = section
        if "auroc" not in out["old_rule"]:
            out["old_rule"].update(section["rules"]["max_image"])
    return out


def image_scores(views: dict[str, list], masks: dict[int, Any]) -> list[list]:
    """[part id, pose id, image score, defect pixels in the capture's mask] of every capture (for re-analysis)."""
    return [[p, r.pose_id, float(sc), int(masks[r.id].area_px) if r.id in masks else 0]
            for p, v in views.items() for r, sc, _ in v]


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The detector config's overrides: the CPU, plus ``--overrides`` (smoke tests only; the measurement uses none)."""
    return {"device": "cpu", **json.loads(args.overrides)}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from acquisition.store import CaptureStore
    from cell.training import load_train_config, train_model
    from detectors.model_dir import load_model

    timings: dict[str, float] = {}
    preset = hard_cell_config(args.plan, args.camera).scene.hard
    store_path = work / "store"
    model_dir = args.model_dir or args.keep_model or work / "model"
    with CaptureStore(store_path, create=True) as store:
        timings["capture_train_s"] = capture(store, hard_cell_config(args.plan, args.camera), args.plan, "train",
                                             args.train_parts, args.seed, 0.0)
    if args.model_dir is None:
        print(f"training {DETECTOR.name} on {args.train_parts} good hard sheets", flush=True)
        started = time.perf_counter()
        train_model(load_train_config(DETECTOR, overrides(args)), store_path, model_dir, campaigns=["train"],
                    force=args.keep_model is not None, log=lambda m: print(m, flush=True))
        timings["train_s"] = time.perf_counter() - started
    model = load_model(model_dir, device="cpu")
    provenance = json.loads((Path(model_dir) / "provenance.json").read_text())
    holdout = {e["source"].split("/")[1] for e in provenance["threshold_holdout_good"]}
    report: dict[str, Any] = {"preset": preset.model_dump(), "model_dir": str(model_dir),
                              "train_images": len(provenance["train"]), "held_out_good_parts": len(holdout)}
    with CaptureStore(store_path) as store:
        started = time.perf_counter()
        held = score_parts(store, model, ["train"], holdout)
        timings["score_held_out_s"] = time.perf_counter() - started
        if not held:
            raise SystemExit(f"{model_dir}: none of its held-out parts {sorted(holdout)} are in this run's store "
                             "(use the same --seed and --train-parts as the run that trained it)")
    sweep: dict[str, Any] = {}
    with contextlib.ExitStack() as open_stores:
        store = open_stores.enter_context(CaptureStore(store_path))
        held = (store, held)
        capture(store, hard_cell_config(args.plan, args.camera), args.plan, "sweep_good", args.good_parts,
                args.seed + 1, 0.0)
        good = score_parts(store, model, ["sweep_good"])
        report["variation"] = variation(store, good)
        report["good_image_scores"] = image_scores(good, {})
        defective: dict[str, tuple[Any, dict[str, list]]] = {}
        for contrast in args.contrasts:
            started = time.perf_counter()
            # one store per strength, the same campaign name: the same part ids, so the same sheets and defects
            sweep_store = open_stores.enter_context(CaptureStore(work / f"sweep_{contrast:g}", create=True))
            capture(sweep_store, hard_cell_config(args.plan, args.camera, contrast), args.plan, "sweep_defective",
                    args.defective_parts, args.seed + 2, 1.0)
            views = score_parts(sweep_store, model, ["sweep_defective"])
            masks = sweep_store.mask_infos()
            defective[f"{contrast:g}"] = (sweep_store, views)
            sweep[f"{contrast:g}"] = {**image_auroc(good, views, masks), "defect_image_scores": image_scores(views, masks)}
            print(f"defect_contrast {contrast:g}: per-image AUROC {sweep[f'{contrast:g}']['auroc']:.3f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
        report["sweep"] = sweep
        if defective and not args.no_part_level:
            # part level at the preset's strength when it is in the sweep, else at the strength nearest 0.9 AUROC
            key = f"{preset.defect_contrast:g}"
            if key not in defective:
                key = min(sweep, key=lambda c: abs((sweep[c]["auroc"] or 0.0) - 0.9))
            started = time.perf_counter()
            report["part_level_contrast"] = float(key)
            report["part_level_contrast_is_preset"] = key == f"{preset.defect_contrast:g}"
            report["poses_per_part"] = len(next(iter(good.values())))
            report["part_level"] = part_level(held, [(store, good), defective[key]], model.threshold.value,
                                              args.rules, args.k)
            timings["part_level_s"] = time.perf_counter() - started
    report["timings_s"] = timings
    return report


def table(report: dict[str, Any]) -> str:
    """Markdown tables (README): the sweep, and the part-level comparison."""
    lines = ["| defect_contrast | per-image AUROC | by kind |", "|---|---|---|"]
    for contrast, s in report["sweep"].items():
        kinds = ", ".join(f"{k} {v['auroc']:.2f}" for k, v in s["by_kind"].items() if v["auroc"] is not None)
        lines.append(f"| {contrast} | {s['auroc']:.3f} ({s['defect_images']} / {s['good_images']} images) | {kinds} |")
    pl = report.get("part_level")
    if pl:
        lines += ["", "| rule | part AUROC | false rejects at zero miss | at training-side threshold: missed / false "
                  "rejects |", "|---|---|---|---|"]
        old = pl["old_rule"]
        zm = old["at_zero_miss"]
        lines.append(f"| worst view (old rule, image threshold) | {old['auroc']:.3f} | {zm['false_rejects']}/"
                     f"{zm['good_parts']} | {old['missed_at_image_threshold']} / {old['false_rejects_at_image_threshold']} |")
        for rule, r in pl["fusion"].items():
            zm = r["rules"]["part_map"]["at_zero_miss"]
            at = r["at_part_threshold"]
            lines.append(f"| fused, {rule} | {r['rules']['part_map']['auroc']:.3f} | {zm['false_rejects']}/"
                         f"{zm['good_parts']} | {at['missed_defective_parts']} / {at['false_rejects']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=DEFAULT_PLAN)
    parser.add_argument("--camera", choices=("small", "full"), default="small")
    parser.add_argument("--contrasts", default="0.2,0.3,0.4,0.5,0.7,1.0",
                        help="defect_contrast values of the sweep, comma-separated ('' skips the sweep)")
    parser.add_argument("--no-part-level", action="store_true", help="only the sweep")
    parser.add_argument("--train-parts", type=int, default=8)
    parser.add_argument("--good-parts", type=int, default=12)
    parser.add_argument("--defective-parts", type=int, default=12)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--k", type=int, default=2, help="k of the kth rule")
    parser.add_argument("--seed", type=int, default=300)
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="reuse this trained model (from --keep-model of a run with the same --seed/--train-parts)")
    parser.add_argument("--keep-model", type=Path, default=None, help="train into (and keep) this model directory")
    parser.add_argument("--overrides", default="{}",
                        help="JSON detector-config overrides for a quick smoke run (the measurement uses none)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: on a shared, oversubscribed CPU two threads only spin)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "hard_preset.json")
    args = parser.parse_args(argv)
    args.contrasts = [float(c) for c in args.contrasts.split(",") if c.strip()]
    args.rules = [r for r in args.rules.split(",") if r]
    args.plan = args.plan.resolve()
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_hard_") as tmp:
        report = {"benchmark": "hard_preset", "cell": str(HARD_CELL.relative_to(REPO)),
                  "plan": str(args.plan.relative_to(REPO)) if args.plan.is_relative_to(REPO) else str(args.plan),
                  "camera": args.camera, "detector": {"config": str(DETECTOR.relative_to(REPO)), "overrides": overrides(args)},
                  "seed": args.seed, "torch_threads": args.threads, "train_parts": args.train_parts, "good_parts": args.good_parts,
                  "defective_parts": args.defective_parts, **run(args, Path(tmp))}
    report["wall_s"] = time.perf_counter() - started
    report["loadavg_before"] = load_before
    report["loadavg_after"] = os.getloadavg()
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    write_json(args.out, report)
    print(table(report))
    print(f"written {args.out} (load average {report['loadavg_before']} -> {report['loadavg_after']}, "
          f"{report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
