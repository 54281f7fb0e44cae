"""``cell eval``: score a test split once and write metrics (JSON, CSV) and an HTML report.

The test split is an MVTec folder's ``test/`` or the labelled captures of a capture store (optionally some
campaigns). Nothing here feeds back into training or the threshold: the model directory's threshold is
applied as it is, and PG0 reports the threshold the test data would have needed (for information only).
On a capture store, ``metrics.json`` also gets a ``part_level`` section (:mod:`cell.part_evaluation`): every
fully scored part's views fused into its part map, as the line fuses them, judged with the model's part
threshold and compared with the old per-image rule; ``report.html`` shows the part maps of the worst parts.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np

from cell.datasets import LabelledImage, is_capture_store, open_images
from cell.errors import CellError
from cell.overlays import heatmap_overlay, write_png
from cell.report import write_eval_report
from cell.runtime_models import load_model_for_runtime
from detectors.input_prep import score_working, to_capture_size, working_mask
from detectors.metrics import evaluate

Progress = Callable[[int, int, str], None]


@dataclass
class ScoredImage:
    item: LabelledImage
    score: float
    eval_map: np.ndarray  # (h, w) float32 at the working resolution (pixel metrics)
    eval_mask: np.ndarray  # (h, w) bool at the working resolution


def training_side_hashes(model_dir: Path) -> set[str]:
    """sha256 of every image the model was trained or thresholded on (from ``provenance.json``)."""
    path = Path(model_dir) / "provenance.json"
    if not path.is_file():
        return set()
    try:
        provenance = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CellError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    keys = ("train", "threshold_holdout_good", "threshold_validation_defects")
    return {entry["sha256"] for key in keys for entry in provenance.get(key, []) if entry.get("sha256")}


def exclude_training_side(items: Sequence[LabelledImage], model_dir: Path) -> tuple[list[LabelledImage], int]:
    """Drop test images that the model saw while training or choosing its threshold (honest evaluation):
    -> (remaining images, how many were dropped)."""
    seen = training_side_hashes(model_dir)
    if not seen:
        return list(items), 0
    kept = [item for item in items if item.file_sha256() not in seen]
    return kept, len(items) - len(kept)


def _working_size_map(anomaly_map: np.ndarray, mask_shape: tuple[int, int]) -> np.ndarray:
    h, w = mask_shape
    if anomaly_map.shape == (h, w):
        return anomaly_map
    return cv2.resize(anomaly_map, (w, h), interpolation=cv2.INTER_AREA)


#: The file that marks a folder as a ``cell eval`` report (which the next evaluation may replace).
REPORT_MARKER = ".cell-eval"


def check_report_folder(out: Path) -> None:
    """Refuse ``out`` when it is an existing non-empty folder that is not a previous report (as ``cell train``
    and ``dataset export`` refuse theirs): an evaluation never overwrites unrelated files."""
    if out.exists() and not out.is_dir():
        raise CellError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_MARKER).is_file():
        raise CellError(f"{out}: exists, is not empty and is not a previous `cell eval` report (no {REPORT_MARKER}); "
                        "choose another --out")


def evaluate_model(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    campaigns: Optional[Sequence[str]] = None,
    n_overlays: int = 6,
    progress: Optional[Progress] = None,
    device: str = "auto",
    runtime: str = "torch",
) -> dict[str, Any]:
    """Score the test split of ``data`` with the model in ``model_dir``; write ``out``/metrics.json,
    scores.csv, roc.png, overlays/*.png and report.html. Returns the metrics dict.
    ``device``: where the model runs (``auto``, ``cpu``, ``cuda[:N]``), whatever it was trained on.
    ``runtime``: ``torch`` | ``onnx`` | ``openvino`` (an exported model: :mod:`cell.runtime_models`)."""
    check_report_folder(Path(out))
    model_dir, out = Path(model_dir), Path(out)
    model = load_model_for_runtime(model_dir, runtime=runtime, device=device)
    detector, spec, threshold = model.detector, model.spec, model.threshold
    image_size = int(detector.config.image_size)
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_MARKER).write_text("written by `cell eval`; replaced by the next `cell eval` into this folder\n",
                                     encoding="utf-8")
    started = time.perf_counter()
    scored: list[ScoredImage] = []
    with open_images(data, "test", campaigns) as all_items:
        items, excluded = exclude_training_side(all_items, model.directory)
        if not items:
            raise CellError(
                f"{data}: no labelled test images"
                + (f" left: all {excluded} were used to train or threshold this model" if excluded else "")
            )
        for index, item in enumerate(items):
            pixels = item.load()
            score, working_map = score_working(detector, pixels, spec)
            mask = item.load_mask()
            if mask is None:
                mask = np.zeros(pixels.shape[:2], dtype=bool)
            if mask.shape != pixels.shape[:2]:
                raise CellError(f"{item.source}: mask {mask.shape} does not match image {pixels.shape[:2]}")
            eval_mask = working_mask(mask, spec, image_size)
            scored.append(ScoredImage(item, score, working_map, eval_mask))
            if progress:
                progress(index + 1, len(items), item.source)
        seconds = time.perf_counter() - started
        scores = np.array([s.score for s in scored])
        labels = np.array([s.item.label for s in scored])
        if len(set(labels.tolist())) < 2:
            raise CellError(f"{data}: the test split needs both good and defective images (found only label {labels[0]})")
        metrics = _metrics(scored, scores, labels)
        verdicts = threshold.is_anomalous(scores)
        metrics["threshold"] = threshold.to_dict()
        metrics["at_threshold"] = _confusion(labels, verdicts)
        metrics["model_dir"] = str(model_dir.resolve())
        metrics["data"] = str(Path(data).resolve())
        metrics["seconds_per_image"] = seconds / len(scored)
        metrics["excluded_training_side_images"] = excluded
        overlays = _write_overlays(scored, threshold.value, out / "overlays", n_overlays)
        if is_capture_store(data):
            metrics["part_level"] = _part_level(model_dir, Path(data), scored, out)
    _write_scores_csv(out / "scores.csv", scored, verdicts)
    _write_roc(out / "roc.png", scores, labels, threshold.value)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float), encoding="utf-8")
    write_eval_report(out / "report.html", metrics, overlays)
    return metrics


def _part_level(model_dir: Path, data: Path, scored: list[ScoredImage], out: Path, n_figures: int = 3) -> dict[str, Any]:
    """The ``part_level`` section: parts whose every capture was scored here, fused with the model's part-map
    settings (``part_threshold.json``; the defaults without one) from the working-resolution maps."""
    from acquisition.store import CaptureStore
    from cell.part_evaluation import PartOutcome, part_level_metrics
    from cell.part_map import PartMapConfig, PartMapError, PoseResult
    from cell.part_map_overlay import part_map_overlay
    from cell.part_scoring import StoredPartMaps
    from cell.part_threshold import PART_THRESHOLD_FILE, read_part_threshold

    stored = read_part_threshold(model_dir) if (model_dir / PART_THRESHOLD_FILE).is_file() else None
    try:
        config = PartMapConfig.model_validate(stored.part_map if stored is not None else {})
    except ValueError as exc:
        raise CellError(f"{model_dir / PART_THRESHOLD_FILE}: key 'part_map': {str(exc).splitlines()[-1]}") from None
    groups: dict[tuple[str, str], list[ScoredImage]] = {}
    for s in scored:
        if s.item.capture_id is not None and s.item.part_id is not None:
            groups.setdefault((s.item.source.split("/")[0], s.item.part_id), []).append(s)
    outcomes: list[PartOutcome] = []
    skipped: dict[str, int] = {}
    with CaptureStore(data) as store:
        maps = StoredPartMaps(store, config)
        masks = store.mask_infos()
        labels = {p.part_id: p.label for p in store.parts()}
        for (campaign, part_id), items in groups.items():
            records = store.captures(campaign=campaign, part_id=part_id)
            if len(records) != len(items) or labels.get(part_id) not in ("good", "defective"):
                skipped["not every capture of the part was scored"] = skipped.get("not every capture of the part was scored", 0) + 1
                continue
            by_id = {r.id: r for r in records}
            try:
                acc = maps.accumulator(records[0])
                for s in items:
                    record = by_id[int(s.item.capture_id)]  # type: ignore[arg-type]
                    acc.add(PoseResult(record.pose_id, s.score, s.eval_map, np.asarray(record.actual_pose, dtype=float),
                                       (record.height, record.width)), image=s.item.load())
                part_map = acc.finish()
                truth = maps.truth(records, masks) if labels[part_id] == "defective" else None
            except PartMapError as exc:
                reason = str(exc).split(":", 1)[-1].strip()
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            outcomes.append(PartOutcome(part_id, campaign, labels[part_id], part_map,
                                        max(s.score for s in items), truth))
    if not outcomes:
        return {"n_parts": 0, "skipped_parts": skipped}
    threshold = None if stored is None else stored.value
    section = part_level_metrics(outcomes, threshold, {
        "fusion": config.describe(), "cell_mm": config.cell_mm, "edge_mm": config.edge_mm,
        "edge_band": None if stored is None else stored.provenance.get("edge_band"), "skipped_parts": skipped,
        "part_threshold_policy": None if stored is None else stored.policy})
    shown = section["localisation"]["threshold"] if section.get("localisation") else (threshold or 0.0)
    worst_good = sorted((o for o in outcomes if o.label == "good"), key=lambda o: -o.score)[:n_figures]
    worst_defective = sorted((o for o in outcomes if o.label == "defective"), key=lambda o: o.score)[:n_figures]
    figures = []
    for kind, group in (("good parts with the highest part scores", worst_good),
                        ("defective parts with the lowest part scores", worst_defective)):
        for o in group:
            name = f"part_maps/{o.campaign}_{o.part_id}.png"
            truth = None if o.truth is None else np.nan_to_num(o.truth.fused) > 0.5
            write_png(out / name, part_map_overlay(o.part_map, shown, truth=truth))
            figures.append({"file": name, "part_id": o.part_id, "label": o.label, "score": o.score, "group": kind})
    section["figures"] = figures
    return section


def _metrics(scored: list[ScoredImage], scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    shapes = {s.eval_map.shape for s in scored}
    if len(shapes) == 1:
        maps = np.stack([s.eval_map for s in scored])
        masks = np.stack([s.eval_mask for s in scored])
    else:  # images of different sizes: bring all to the most common working size for pixel metrics
        target = max(shapes, key=lambda shape: sum(s.eval_map.shape == shape for s in scored))
        maps = np.stack([_working_size_map(s.eval_map, target) for s in scored])
        masks = np.stack(
            [cv2.resize(s.eval_mask.astype(np.uint8), target[::-1], interpolation=cv2.INTER_NEAREST) > 0 for s in scored]
        )
    return evaluate(scores, labels, maps, masks, defect_types=[s.item.defect_type for s in scored])


def _confusion(labels: np.ndarray, verdicts: np.ndarray) -> dict[str, Any]:
    tp = int(np.sum(verdicts & (labels == 1)))
    fn = int(np.sum(~verdicts & (labels == 1)))
    fp = int(np.sum(verdicts & (labels == 0)))
    tn = int(np.sum(~verdicts & (labels == 0)))
    return {
        "true_nok": tp,
        "missed_defects": fn,
        "false_alarms": fp,
        "true_ok": tn,
        "good_pass_rate": tn / max(tn + fp, 1),
        "defect_catch_rate": tp / max(tp + fn, 1),
    }


def _write_scores_csv(path: Path, scored: list[ScoredImage], verdicts: np.ndarray) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "label", "defect_type", "score", "verdict"])
        for s, nok in zip(scored, verdicts):
            writer.writerow([s.item.source, s.item.label, s.item.defect_type, f"{s.score:.6g}", "NOK" if nok else "OK"])


def _write_roc(path: Path, scores: np.ndarray, labels: np.ndarray, threshold: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    op_fpr = float(np.mean(scores[labels == 0] > threshold))
    op_tpr = float(np.mean(scores[labels == 1] > threshold))
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot(fpr, tpr, lw=2, label=f"image ROC (AUROC {roc_auc_score(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.scatter([op_fpr], [op_tpr], c="red", zorder=3, label=f"model threshold {threshold:.4g}")
    ax.set_xlabel("false alarm rate (good parts rejected)")
    ax.set_ylabel("defect catch rate")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_overlays(scored: list[ScoredImage], threshold: float, folder: Path, n: int) -> dict[str, list[dict]]:
    """Heatmaps of the worst misses (defective, lowest scores) and false alarms (good, highest scores)."""
    defective = sorted((s for s in scored if s.item.label == 1), key=lambda s: s.score)[:n]
    good = sorted((s for s in scored if s.item.label == 0), key=lambda s: -s.score)[:n]
    # one colour scale for every overlay: from the lowest map value to the highest image score
    vmin = float(min(np.min(s.eval_map) for s in scored))
    vmax = float(max(s.score for s in scored))
    result: dict[str, list[dict]] = {"worst_misses": [], "false_alarms": []}
    for key, group in (("worst_misses", defective), ("false_alarms", good)):
        for rank, s in enumerate(group):
            pixels = s.item.load()
            mask = s.item.load_mask()
            amap = to_capture_size(s.eval_map, pixels.shape[0], pixels.shape[1])
            name = f"{key}_{rank:02d}.png"
            write_png(folder / name, heatmap_overlay(pixels, amap, mask, vmin=vmin, vmax=vmax))
            result[key].append(
                {
                    "file": f"overlays/{name}",
                    "source": s.item.source,
                    "defect_type": s.item.defect_type,
                    "score": s.score,
                    "verdict": "NOK" if s.score > threshold else "OK",
                }
            )
    return result
