"""Part-level metrics of ``cell eval`` (and ``benchmarks/bench_parts.py``): parts judged on their fused part maps
against the old per-image rule (a part's score = its worst view), and defect localisation in mm.

* part AUROC of each rule, and its false-reject rate of good parts at zero missed defective parts (the
  threshold just below the lowest defective part's score: what the line must pay to miss nothing);
* at the model's part threshold: missed defective parts and false rejects;
* localisation against the truth projected onto the same part grid (:meth:`StoredPartMaps.truth`): the share of
  true defects that a reported defect overlaps, false defects per good part, centroid error in mm (between the
  true defect's centroid and the reported defect's ``x_mm``, ``y_mm``: what the line reports).

A true defect is a group of labelled cells, not each connected fragment: a thin defect (a broken thread, a
fold's crease) projected onto the 0.5 mm grid falls apart into a main region and one-cell fragments beside it,
and counting each fragment as a defect of its own made a found defect count as several missed ones. Labelled
cells less than ``2 * group_mm`` apart (default 1 mm: 2 mm) are one defect; the simulation keeps distinct defects
more than 4 mm apart (``scene.defects.margin_mm``), so no two of its defects merge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from cell.part_map import PartMap
from detectors.metrics import just_below


@dataclass
class PartOutcome:
    """One evaluated part: its truth ``label`` (``good`` / ``defective``), fused ``part_map`` and
    ``max_image_score`` (the old rule's score), and ``truth`` (its labelled regions on the same grid, or None)."""

    part_id: str
    campaign: str
    label: str
    part_map: PartMap
    max_image_score: float
    truth: Optional[PartMap] = None

    @property
    def score(self) -> float:
        return float(self.part_map.score) if self.part_map.score is not None else float("nan")


def zero_miss(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The highest threshold that misses no defective part and the share of good parts it rejects."""
    if not labels.any() or labels.all():
        return {"threshold": None, "false_reject_rate": None}
    threshold = just_below(float(scores[labels].min()), np.float64)
    return {"threshold": threshold, "false_reject_rate": float(np.mean(scores[~labels] > threshold)),
            "false_rejects": int(np.sum(scores[~labels] > threshold)), "good_parts": int((~labels).sum())}


def _auroc(scores: np.ndarray, labels: np.ndarray) -> Optional[float]:
    if not labels.any() or labels.all():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


#: labelled cells closer than twice this (mm) belong to one true defect (see the module docstring)
GROUP_MM = 1.0


def _regions(mask: np.ndarray) -> list[np.ndarray]:
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return [labels == k for k in range(1, count)]


def true_defects(mask: np.ndarray, cell_mm: float, group_mm: float = GROUP_MM) -> list[np.ndarray]:
    """The true defects of a labelled (rows, cols) bool ``mask`` on a grid of ``cell_mm`` cells: each a bool mask
    of its labelled cells; cells less than ``2 * group_mm`` apart are one defect (0: each connected region)."""
    radius = int(round(group_mm / cell_mm))
    if radius <= 0:
        return _regions(mask)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    grown = cv2.dilate(mask.astype(np.uint8), kernel)
    return [group & mask for group in _regions(grown) if (group & mask).any()]


def localisation(outcomes: Sequence[PartOutcome], threshold: float, group_mm: float = GROUP_MM) -> dict[str, Any]:
    """Hit rate of true defects (:func:`true_defects`), false defects and centroid errors at ``threshold``: a
    true defect is hit when a reported defect's region overlaps it; its centroid error is the distance from its
    centroid to the reported ``x_mm``, ``y_mm`` of the defect overlapping it most."""
    true_count = hits = false_on_good = false_on_defective = fragments = 0
    errors: list[float] = []
    good = 0
    for o in outcomes:
        pm = o.part_map
        reported = pm.defect_regions(threshold)
        if o.label == "good":
            good += 1
            false_on_good += len(reported)
            continue
        if o.truth is None:
            continue
        labelled = pm.covered & (np.nan_to_num(o.truth.fused, nan=0.0) > 0.5)
        fragments += len(_regions(labelled))
        truths = true_defects(labelled, pm.grid.cell_m * 1e3, group_mm)
        centres = pm.grid.cell_centres() * 1e3
        matched = set()
        for region in truths:
            true_count += 1
            overlaps = [int((region & r).sum()) for r, _ in reported]
            if overlaps and max(overlaps) > 0:
                hits += 1
                best = int(np.argmax(overlaps))
                matched.add(best)
                found = reported[best][1]
                errors.append(float(np.linalg.norm(centres[region].mean(axis=0) - np.array([found.x_mm, found.y_mm]))))
        false_on_defective += sum(1 for i, (r, _) in enumerate(reported)
                                  if i not in matched and not any((r & t).any() for t in truths))
    return {
        "threshold": threshold,
        "true_defects": true_count,
        "true_defect_grouping_mm": group_mm,
        "labelled_fragments": fragments,
        "hit": hits,
        "hit_rate": hits / true_count if true_count else None,
        "false_defects_per_good_part": false_on_good / good if good else None,
        "false_defects_on_defective_parts": false_on_defective,
        "centroid_error_mm": None if not errors else {
            "median": float(np.median(errors)), "mean": float(np.mean(errors)), "max": float(np.max(errors))},
    }


def part_level_metrics(outcomes: Sequence[PartOutcome], part_threshold: Optional[float],
                       describe: dict[str, Any]) -> dict[str, Any]:
    """The ``part_level`` section of ``metrics.json``. ``part_threshold``: the model's (None when it has none:
    localisation is then measured at this data's zero-miss threshold, for information only)."""
    labels = np.array([o.label == "defective" for o in outcomes])
    fused = np.array([o.score for o in outcomes])
    old = np.array([o.max_image_score for o in outcomes])
    rules = {}
    for name, scores in (("part_map", fused), ("max_image", old)):
        rules[name] = {"auroc": _auroc(scores, labels), "at_zero_miss": zero_miss(scores, labels)}
    section: dict[str, Any] = {
        **describe,
        "n_good_parts": int((~labels).sum()), "n_defective_parts": int(labels.sum()),
        "rules": rules, "part_threshold": part_threshold,
    }
    threshold = part_threshold
    section["localisation_threshold_source"] = "model part threshold"
    if threshold is None:
        threshold = rules["part_map"]["at_zero_miss"]["threshold"]
        section["localisation_threshold_source"] = "zero-miss threshold of this data (no part threshold in the model)"
    if part_threshold is not None:
        nok = fused > part_threshold
        section["at_part_threshold"] = {
            "missed_defective_parts": int(np.sum(~nok & labels)), "false_rejects": int(np.sum(nok & ~labels)),
            "false_reject_rate": float(np.mean(nok[~labels])) if (~labels).any() else None,
            "defective_caught_rate": float(np.mean(nok[labels])) if labels.any() else None,
        }
    section["localisation"] = localisation(outcomes, threshold) if threshold is not None else None
    section["parts"] = [
        {"part_id": o.part_id, "campaign": o.campaign, "label": o.label, "score": o.score,
         "max_image_score": o.max_image_score, "coverage": o.part_map.coverage,
         "defects": None if threshold is None else [d.to_dict() for d in o.part_map.defects(threshold)]}
        for o in outcomes
    ]
    return section
