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
3. **Nuisance ablation** (``--ablate all``): the first ``--ablate-parts`` good sweep sheets captured again with one
   normal variation switched off at a time (glints, density shading, lighting drift, waviness, illumination
   gradient; the same sheets, poses and placements, so each image's score is paired with itself): which
   variation raises the good images' scores (the false alarms).
4. **Part level** at the preset's own strength (the value in the cell file, i.e. the tuned one; when it is not
   in the sweep, the swept strength nearest AUROC 0.9). Every setting from training-side data only: the held-out
   good parts (the model's own 2 plus ``--holdout-parts`` extra good sheets never trained on) set each rule's
   unjudged edge band (``cell.part_map.choose_edge_mm``) and part threshold (their 0.99 quantile); VALIDATION
   sheets (``--val-good`` + ``--val-defective``, other seeds) choose the fusion rule (lowest false-reject rate at
   zero miss, then highest part AUROC); the reported TEST parts are the sweep's own good and defective sheets at
   that strength. For the old rule (a part is as bad as its worst view, at the model's image threshold) and
   each rule (``--rules``, e.g. ``kth:3``): part AUROC, false-reject rate at zero miss and the ROC points.
   Scoring and fusion are :mod:`benchmarks.bench_parts`' own (``score_parts``, ``accumulate``).
5. **Normal variation** present and not learnt away: the spread of the good sheets' mean brightness across
   parts, and the rank correlation of the good images' scores with their mean brightness.

``--work DIR`` keeps every captured store and every score under DIR and reuses them: a store is keyed by the
cell config, plan, campaign, seed, count and the simulator's source files (defect code only for defective
sheets), scores by the model's provenance, so a change of the scene code re-captures what it changes.

Plan: ``configs/campaigns/demo_overlap.yaml`` (the demo's 2 x 2 raster, three shifted shots per point: 12
overlapping views per 0.12 x 0.10 m sheet) by default, because sheet_raster's 75 views per sheet cost six times
the scoring on the shared 2-core CPU; ``--plan configs/campaigns/sheet_raster.yaml`` runs the production plan.
Camera: ``small`` (bench_parts' 320 x 256 sensor with 4x larger pixels: the default camera's field of view, and
the model resizes every capture to its 256 px square either way) or ``full``.

Run:  nice -n 5 .venv/bin/python -m benchmarks.bench_hard_preset [--contrasts 0.6,0.8,1.0]
      [--train-parts 8] [--good-parts 24] [--defective-parts 24] [--holdout-parts 12] [--val-good 12]
      [--val-defective 12] [--ablate all] [--model-dir DIR | --keep-model DIR] [--work DIR]
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

from benchmarks.bench_parts import (DETECTOR, accumulate, capture_with, hotspot, log, missed_truth,  # noqa: E402
                                    score_parts)
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


def sheet_bootstrap(good: dict[str, list], defective: dict[str, list], masks: dict[int, Any], reps: int = 1000,
                    seed: int = 0) -> Optional[list[float]]:
    """95 % interval of the per-image AUROC when the SHEETS are resampled (the images of one sheet are not
    independent: they share its weave, lighting and defects), from ``reps`` bootstrap draws."""
    from sklearn.metrics import roc_auc_score

    g = [[s for _, s, _ in v] for v in good.values()]
    d = [[s for r, s, _ in v if r.id in masks and masks[r.id].area_px > 0] for v in defective.values()]
    d = [x for x in d if x]
    if not g or not d:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        gs = [s for i in rng.integers(0, len(g), len(g)) for s in g[i]]
        ds = [s for i in rng.integers(0, len(d), len(d)) for s in d[i]]
        values.append(roc_auc_score([0] * len(gs) + [1] * len(ds), gs + ds))
    return [float(q) for q in np.quantile(values, [0.025, 0.975])]


def parse_rules(text: str, k: int) -> list[tuple[str, int]]:
    """``max,mean,median,kth,kth:3`` -> [(rule, k)]: ``kth`` takes ``--k``, ``kth:N`` the N-th highest view."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        rule, _, n = item.partition(":")
        out.append((rule, int(n) if n else k))
    return out


def _part_rows(groups: Sequence[tuple[Any, dict[str, list]]], base: Any) -> list[dict[str, Any]]:
    """Every part of ``groups`` ((store, views) pairs) projected once (``base``: edge band 0): its label, old-rule
    score (worst view), accumulator and truth map (defective parts)."""
    from cell.part_scoring import StoredPartMaps

    rows = []
    for store, views in groups:
        labels = {p.part_id: p.label for p in store.parts()}
        masks = store.mask_infos()
        maps = StoredPartMaps(store, base)
        for part_id, pv in views.items():
            records = [v[0] for v in pv]
            rows.append({"part_id": part_id, "campaign": records[0].campaign, "label": labels[part_id],
                         "old": max(v[1] for v in pv), "acc": accumulate(maps, pv, base),
                         "truth": maps.truth(records, masks) if labels[part_id] == "defective" else None})
    return rows


def _outcomes(rows: list[dict[str, Any]], config: Any) -> list[Any]:
    from cell.part_evaluation import PartOutcome

    return [PartOutcome(r["part_id"], r["campaign"], r["label"], r["acc"].finish(config), r["old"], r["truth"])
            for r in rows]


def _old_rule(rows: list[dict[str, Any]], image_threshold: float) -> dict[str, Any]:
    from cell.part_evaluation import _auroc, zero_miss

    scores = np.array([r["old"] for r in rows])
    labels = np.array([r["label"] == "defective" for r in rows])
    return {"image_threshold": image_threshold, "auroc": _auroc(scores, labels), "at_zero_miss": zero_miss(scores, labels),
            "false_rejects_at_image_threshold": int(np.sum(scores[~labels] > image_threshold)),
            "missed_at_image_threshold": int(np.sum(scores[labels] <= image_threshold)),
            "roc": roc_points(scores, labels)}


def part_level(held: Sequence[tuple[Any, dict[str, list]]], validation: Sequence[tuple[Any, dict[str, list]]],
               tests: Sequence[tuple[Any, dict[str, list]]], image_threshold: float, rules: Sequence[tuple[str, int]],
               quantile: float = 0.99) -> dict[str, Any]:
    """The old rule and each fusion rule, every setting chosen on training-side data only.

    ``held``: held-out good training-side parts: per rule the unjudged edge band (``choose_edge_mm`` on them) and
    the part threshold (their ``quantile``); ``validation``: further good AND defective parts, never the reported
    ones: the rule is chosen on them (lowest false-reject rate at zero miss, then highest part AUROC);
    ``tests``: the reported parts. Each group: (store, views) pairs (good and defective parts may lie in different
    stores). Returns the old rule and every rule on validation and test parts, the test ROC points, the chosen
    rule."""
    from cell.part_evaluation import part_level_metrics
    from cell.part_map import PartMapConfig, choose_edge_mm
    from detectors.thresholds import choose_threshold

    base = PartMapConfig(edge_mm=0.0)
    held_rows, val_rows, test_rows = (_part_rows(g, base) for g in (held, validation, tests))
    size_m = held_rows[0]["acc"].part.size_m
    out: dict[str, Any] = {"held_out_good_parts": len(held_rows),
                           "validation_parts": {"good": sum(r["label"] == "good" for r in val_rows),
                                                "defective": sum(r["label"] == "defective" for r in val_rows)},
                           "old_rule": _old_rule(test_rows, image_threshold),
                           "old_rule_validation": _old_rule(val_rows, image_threshold), "fusion": {}}
    out["old_rule_validation"].pop("roc")
    for rule, k in rules:
        unbanded = base.model_copy(update={"fusion": rule, "k": k})
        edge = choose_edge_mm([r["acc"].finish(unbanded) for r in held_rows], size_m)
        config = unbanded.model_copy(update={"edge_mm": edge["edge_mm"]})
        held_scores = np.array([r["acc"].finish(config).score for r in held_rows])
        threshold = choose_threshold("good_quantile", held_scores, quantile=quantile).value
        val = part_level_metrics(_outcomes(val_rows, config), threshold, {})
        outcomes = _outcomes(test_rows, config)
        section = part_level_metrics(outcomes, threshold, {"fusion": config.describe(), "edge_mm": edge["edge_mm"]})
        section["edge_band_chosen_on_held_out_good"] = edge
        section["held_out_part_scores"] = sorted(float(v) for v in held_scores)
        section["validation"] = {"auroc": val["rules"]["part_map"]["auroc"],
                                 "at_zero_miss": val["rules"]["part_map"]["at_zero_miss"],
                                 "at_part_threshold": val.get("at_part_threshold")}
        labels = np.array([o.label == "defective" for o in outcomes])
        section["roc"] = roc_points(np.array([o.score for o in outcomes]), labels)
        section["part_scores"] = {o.part_id: o.score for o in outcomes}
        section["truth_regions"] = missed_truth(outcomes, threshold)
        weakest = sorted((o for o in outcomes if o.label == "defective"), key=lambda o: o.score)[:3]
        worst = sorted((o for o in outcomes if o.label == "good"), key=lambda o: -o.score)[:3]
        section["weakest_defective_parts"] = [{"part_id": o.part_id, "score": o.score, **hotspot(o.part_map)} for o in weakest]
        section["worst_good_parts"] = [{"part_id": o.part_id, "score": o.score, **hotspot(o.part_map)} for o in worst]
        section.pop("parts")
        out["fusion"][config.describe()] = section

    out["chosen_on_validation"] = choose_rule(out["fusion"])
    return out


def choose_rule(sections: dict[str, dict[str, Any]]) -> str:
    """The fusion rule to report, from the VALIDATION parts only (``section["validation"]``): the lowest
    false-reject rate at zero miss, then the highest part AUROC, then the first listed."""
    def rank(item: tuple[int, str]) -> tuple[float, float, int]:
        v = sections[item[1]]["validation"]
        frr = v["at_zero_miss"]["false_reject_rate"]
        return (1.0 if frr is None else frr, -(v["auroc"] or 0.0), item[0])

    return min(enumerate(sections), key=rank)[1]


def image_scores(views: dict[str, list], masks: dict[int, Any]) -> list[list]:
    """[part id, pose id, image score, defect pixels in the capture's mask, defect kinds] of every capture."""
    return [[p, r.pose_id, float(sc), int(masks[r.id].area_px) if r.id in masks else 0,
             list(masks[r.id].types or (masks[r.id].defect_type,)) if r.id in masks and masks[r.id].area_px else []]
            for p, v in views.items() for r, sc, _ in v]


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The detector config's overrides: the CPU, plus ``--overrides`` (smoke tests only; the measurement uses none)."""
    return {"device": "cpu", **json.loads(args.overrides)}


#: ``--ablate``: each nuisance of the hard scene switched off (to the default scene's value) without changing
#: the sheets' random stream (the same sheets, poses and placements: per-image scores are paired)
NUISANCES = {"glints": {"glint_gain": 0.0}, "density": {"density_variation": 0.0}, "lighting": {"lighting_drift": 0.0},
             "waviness": {"waviness_m": 0.12e-3}, "gradient": {"illumination_gradient": 0.08}}
_SIM_SOURCES = ("defects.py", "scene.py", "fabric.py", "render.py", "camera.py")


def scene_digest(config: Any, plan_file: Path, sources: Sequence[str], *extra: Any) -> str:
    """A key for a cached store: the cell config, the plan, ``extra`` (campaign, seed, parts, defect rate) and the
    ``sources`` of the simulator (acquisition/sim/ files: a change of the scene code invalidates the captures)."""
    import hashlib

    h = hashlib.sha256(config.model_dump_json().encode())
    h.update(Path(plan_file).read_bytes())
    h.update(repr(extra).encode())
    for name in sources:
        h.update((REPO / "acquisition" / "sim" / name).read_bytes())
    return h.hexdigest()[:12]


class Sheets:
    """Captured and scored groups of sheets under ``work`` (kept between runs when ``--work`` is given): a group is
    captured once per scene digest and scored once per model (``bench_parts.score_parts``' cache)."""

    def __init__(self, work: Path, plan: Path, model: Any, model_key: str, stack: contextlib.ExitStack) -> None:
        self.work, self.plan, self.model, self.model_key, self.stack = work, plan, model, model_key, stack
        self.capture_s = 0.0
        self.score_s = 0.0

    def store(self, name: str, config: Any, parts: int, seed: int, rate: float, campaign: Optional[str] = None) -> Any:
        """The store of group ``name`` (captured as ``campaign``, default ``name``: the campaign names the part ids,
        so the same campaign and seed give the same sheets)."""
        import shutil

        from acquisition.store import CaptureStore

        campaign = campaign or name
        # good sheets never reach the defect code: its changes keep their captures (and scores)
        sources = _SIM_SOURCES if rate > 0 else tuple(n for n in _SIM_SOURCES if n != "defects.py")
        path = self.work / "stores" / f"{name}_{scene_digest(config, self.plan, sources, campaign, seed, parts, rate)}"
        done = path / "bench_complete.json"
        if path.exists() and not done.is_file():
            shutil.rmtree(path)  # an interrupted capture
        if not path.exists():
            with CaptureStore(path, create=True) as store:
                self.capture_s += capture(store, config, self.plan, campaign, parts, seed, rate)
            done.write_text(json.dumps({"parts": parts}))
        return self.stack.enter_context(CaptureStore(path))

    def group(self, name: str, config: Any, parts: int, seed: int, rate: float,
              campaign: Optional[str] = None) -> tuple[Any, dict[str, list]]:
        """(store, part id -> scored views) of group ``name``."""
        store = self.store(name, config, parts, seed, rate, campaign)
        started = time.perf_counter()
        cache = self.work / "scores" / self.model_key / store.root.name
        views = score_parts(store, self.model, [campaign or name], cache=cache, log=log)
        self.score_s += time.perf_counter() - started
        return store, views


def hard_config_with(base: Any, **hard: Any) -> Any:
    """``base`` (a cell config) with some ``scene.hard`` values replaced."""
    scene = base.scene
    return base.model_copy(update={"scene": scene.model_copy(update={"hard": type(scene.hard).model_validate(
        {**scene.hard.model_dump(), **hard})})})


def ablation(sheets: Sheets, base: Any, good: dict[str, list], names: Sequence[str], parts: int, seed: int,
             image_threshold: float, defective: dict[str, list], masks: dict[int, Any]) -> dict[str, Any]:
    """Which nuisance makes the false alarms: the first ``parts`` good sweep sheets re-captured with one nuisance
    off at a time (same sheets, poses, placements), scored by the same model. Paired per image: how much each
    nuisance raises the good images' scores, how many good images pass the image threshold with and without it,
    and the per-image AUROC against the sweep's defective images (which keep every nuisance)."""
    ids = sorted(good)[:parts]
    ref = {(p, r.pose_id): s for p in ids for r, s, _ in good[p]}
    def stats(scores: dict[tuple[str, str], float]) -> dict[str, Any]:
        values = np.array([scores[k] for k in ref])
        return {"above_image_threshold": int(np.sum(values > image_threshold)), "images": len(values),
                "quantiles_50_95_max": [float(np.quantile(values, 0.5)), float(np.quantile(values, 0.95)),
                                        float(values.max())],
                "auroc_vs_defective": image_auroc({p: [(None, scores[(p, pose)], None) for (q, pose) in ref if q == p]
                                                   for p in ids}, defective, masks)["auroc"]}
    out = {"parts": len(ids), "with_every_nuisance": stats(ref)}
    for name in names:
        config = hard_config_with(base, **NUISANCES[name])
        _, views = sheets.group(f"sweep_good_no_{name}", config, len(ids), seed, 0.0, campaign="sweep_good")
        got = {(p, r.pose_id): s for p, v in views.items() for r, s, _ in v}
        diff = np.array([ref[k] - got[k] for k in ref])
        out[f"without_{name}"] = {**stats(got), "score_drop_mean": float(diff.mean()),
                                  "score_drop_of_top_decile": float(np.mean(
                                      [ref[k] - got[k] for k in sorted(ref, key=ref.get)[-max(1, len(ref) // 10):]]))}
    return out


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from cell.training import load_train_config, train_model
    from detectors.model_dir import load_model

    base = hard_cell_config(args.plan, args.camera)
    preset = base.scene.hard
    model_dir = args.model_dir or args.keep_model or work / "model"
    report: dict[str, Any] = {"preset": preset.model_dump()}
    with contextlib.ExitStack() as stack:
        sheets = Sheets(work, args.plan, None, "", stack)
        train_store = sheets.store("train", base, args.train_parts, args.seed, 0.0)
        train_s = 0.0
        if args.model_dir is None:
            print(f"training {DETECTOR.name} on {args.train_parts} good hard sheets", flush=True)
            started = time.perf_counter()
            train_model(load_train_config(DETECTOR, overrides(args)), Path(train_store.root), model_dir,
                        campaigns=["train"], force=args.keep_model is not None, log=lambda m: print(m, flush=True))
            train_s = time.perf_counter() - started
        import hashlib

        provenance_text = (Path(model_dir) / "provenance.json").read_bytes()
        sheets.model = load_model(model_dir, device="cpu")
        sheets.model_key = hashlib.sha256(provenance_text).hexdigest()[:12]
        model = sheets.model
        provenance = json.loads(provenance_text)
        holdout = {e["source"].split("/")[1] for e in provenance["threshold_holdout_good"]}
        report.update({"model_dir": str(model_dir), "train_images": len(provenance["train"]),
                       "held_out_good_parts_of_training": len(holdout), "image_threshold": model.threshold.value})
        held_train = score_parts(train_store, model, ["train"], holdout,
                                 cache=work / "scores" / sheets.model_key / Path(train_store.root).name)
        if not held_train:
            raise SystemExit(f"{model_dir}: none of its held-out parts {sorted(holdout)} are in this run's store "
                             "(use the same --seed and --train-parts as the run that trained it)")
        good_store, good = sheets.group("sweep_good", base, args.good_parts, args.seed + 1, 0.0)
        report["variation"] = variation(good_store, good)
        report["good_image_scores"] = image_scores(good, {})
        sweep: dict[str, Any] = {}
        defective: dict[str, tuple[Any, dict[str, list]]] = {}
        for contrast in args.contrasts:
            started = time.perf_counter()
            # one store per strength, the same campaign name and seed: the same part ids, sheets and defects
            store, views = sheets.group("sweep_defective", hard_cell_config(args.plan, args.camera, contrast),
                                        args.defective_parts, args.seed + 2, 1.0)
            masks = store.mask_infos()
            key = f"{contrast:g}"
            defective[key] = (store, views)
            sweep[key] = {**image_auroc(good, views, masks), "auroc_95_interval_sheet_bootstrap":
                          sheet_bootstrap(good, views, masks), "defect_image_scores": image_scores(views, masks)}
            print(f"defect_contrast {key}: per-image AUROC {sweep[key]['auroc']:.3f} "
                  f"{sweep[key]['auroc_95_interval_sheet_bootstrap']} ({time.perf_counter() - started:.0f} s)", flush=True)
        report["sweep"] = sweep
        # ablation and part level at the preset's strength when it is in the sweep, else at the one nearest 0.9
        key = f"{preset.defect_contrast:g}"
        if defective and key not in defective:
            key = min(sweep, key=lambda c: abs((sweep[c]["auroc"] or 0.0) - 0.9))
        if args.ablate and key in defective:
            store, views = defective[key]
            report["nuisance_ablation"] = ablation(sheets, base, good, args.ablate, args.ablate_parts, args.seed + 1,
                                                   model.threshold.value, views, store.mask_infos())
            report["nuisance_ablation"]["defect_contrast"] = float(key)
        if defective and not args.no_part_level:
            report["part_level_contrast"] = float(key)
            report["part_level_contrast_is_preset"] = key == f"{preset.defect_contrast:g}"
            report["poses_per_part"] = len(next(iter(good.values())))
            config = hard_cell_config(args.plan, args.camera, float(key))
            held = [(train_store, held_train)]
            if args.holdout_parts:
                held.append(sheets.group("holdout", base, args.holdout_parts, args.seed + 3, 0.0))
            validation = [sheets.group("val_good", config, args.val_good, args.seed + 4, 0.0),
                          sheets.group("val_defective", config, args.val_defective, args.seed + 5, 1.0)]
            started = time.perf_counter()
            report["part_level"] = part_level(held, validation, [(good_store, good), defective[key]],
                                              model.threshold.value, args.rules, args.part_quantile)
            report["part_level_s"] = time.perf_counter() - started
        report["timings_s"] = {"train_s": train_s, "capture_s": sheets.capture_s, "score_s": sheets.score_s,
                               "part_level_s": report.pop("part_level_s", 0.0)}
    return report


def table(report: dict[str, Any]) -> str:
    """Markdown tables (README): the sweep, and the part-level comparison."""
    lines = ["| defect_contrast | per-image AUROC (95 % interval, sheets resampled) | by kind |", "|---|---|---|"]
    for contrast, s in report["sweep"].items():
        kinds = ", ".join(f"{k} {v['auroc']:.2f}" for k, v in s["by_kind"].items() if v["auroc"] is not None)
        ci = s.get("auroc_95_interval_sheet_bootstrap") or [float("nan")] * 2
        lines.append(f"| {contrast} | {s['auroc']:.3f} ({ci[0]:.2f}-{ci[1]:.2f}; {s['defect_images']} / "
                     f"{s['good_images']} images) | {kinds} |")
    ab = report.get("nuisance_ablation")
    if ab:
        lines += ["", "| good sheets | good images above image threshold | score 50 % / 95 % / max | AUROC vs defective "
                  "| mean score drop (top decile) |", "|---|---|---|---|---|"]
        for name, v in ab.items():
            if not isinstance(v, dict):
                continue
            q = v["quantiles_50_95_max"]
            drop = f"{v['score_drop_mean']:.3f} ({v['score_drop_of_top_decile']:.3f})" if "score_drop_mean" in v else "-"
            lines.append(f"| {name.replace('_', ' ')} | {v['above_image_threshold']}/{v['images']} | {q[0]:.2f} / "
                         f"{q[1]:.2f} / {q[2]:.2f} | {v['auroc_vs_defective']:.3f} | {drop} |")
    pl = report.get("part_level")
    if pl:
        lines += ["", "| rule | edge band | validation: AUROC, FRR at zero miss | test: part AUROC | test: false rejects "
                  "at zero miss | test at training-side threshold: missed / false rejects |", "|---|---|---|---|---|---|"]
        old, ov = pl["old_rule"], pl["old_rule_validation"]
        zm = old["at_zero_miss"]
        lines.append(f"| worst view (old rule, image threshold) | - | {ov['auroc']:.3f}, "
                     f"{ov['at_zero_miss']['false_reject_rate']:.2f} | {old['auroc']:.3f} | {zm['false_rejects']}/"
                     f"{zm['good_parts']} | {old['missed_at_image_threshold']} / {old['false_rejects_at_image_threshold']} |")
        for rule, r in pl["fusion"].items():
            zm = r["rules"]["part_map"]["at_zero_miss"]
            at = r["at_part_threshold"]
            v = r["validation"]
            mark = " (chosen)" if rule == pl["chosen_on_validation"] else ""
            lines.append(f"| fused, {rule}{mark} | {r['edge_mm']:g} mm | {v['auroc']:.3f}, "
                         f"{v['at_zero_miss']['false_reject_rate']:.2f} | {r['rules']['part_map']['auroc']:.3f} | "
                         f"{zm['false_rejects']}/{zm['good_parts']} | {at['missed_defective_parts']} / {at['false_rejects']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=DEFAULT_PLAN)
    parser.add_argument("--camera", choices=("small", "full"), default="small")
    parser.add_argument("--contrasts", default="0.6,0.8,1.0",
                        help="defect_contrast values of the sweep, comma-separated ('' skips the sweep)")
    parser.add_argument("--no-part-level", action="store_true", help="only the sweep")
    parser.add_argument("--train-parts", type=int, default=8)
    parser.add_argument("--good-parts", type=int, default=24)
    parser.add_argument("--defective-parts", type=int, default=24)
    parser.add_argument("--holdout-parts", type=int, default=12,
                        help="extra held-out good sheets (never trained on): edge band and part thresholds")
    parser.add_argument("--val-good", type=int, default=12, help="validation good sheets (the rule is chosen on them)")
    parser.add_argument("--val-defective", type=int, default=12, help="validation defective sheets")
    parser.add_argument("--rules", default="max,mean,median,kth:2,kth:3",
                        help="fusion rules to compare (kth:N: the N-th highest view of a cell)")
    parser.add_argument("--k", type=int, default=2, help="k of a plain 'kth' in --rules")
    parser.add_argument("--part-quantile", type=float, default=0.99,
                        help="part threshold: this quantile of the held-out good parts' fused scores")
    parser.add_argument("--ablate", default="", help="nuisances to switch off one at a time on the good sweep sheets "
                        f"(comma-separated of {', '.join(NUISANCES)}; 'all')")
    parser.add_argument("--ablate-parts", type=int, default=12, help="good sheets of the ablation")
    parser.add_argument("--seed", type=int, default=300)
    parser.add_argument("--work", type=Path, default=None,
                        help="keep stores and scores here and reuse them (keyed by the scene code and settings)")
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
    args.rules = parse_rules(args.rules, args.k)
    args.ablate = list(NUISANCES) if args.ablate == "all" else [a for a in args.ablate.split(",") if a]
    unknown = [a for a in args.ablate if a not in NUISANCES]
    if unknown:
        parser.error(f"--ablate: unknown nuisance(s) {unknown}; known: {', '.join(NUISANCES)}")
    args.plan = args.plan.resolve()
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        tmp = args.work or stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_hard_"))
        report = {"benchmark": "hard_preset", "cell": str(HARD_CELL.relative_to(REPO)),
                  "plan": str(args.plan.relative_to(REPO)) if args.plan.is_relative_to(REPO) else str(args.plan),
                  "camera": args.camera, "detector": {"config": str(DETECTOR.relative_to(REPO)), "overrides": overrides(args)},
                  "seed": args.seed, "torch_threads": args.threads, "train_parts": args.train_parts, "good_parts": args.good_parts,
                  "defective_parts": args.defective_parts, "holdout_parts": args.holdout_parts,
                  "validation_parts": [args.val_good, args.val_defective], **run(args, Path(tmp))}
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
