"""Evaluation metrics for anomaly detection, as defined in ``../shared/notes/methods.md``.

Conventions (used across the project): higher scores are more anomalous, and a part / image / pixel is
called defective (NOK) when its score is strictly greater than the threshold: ``score > threshold``.
Thresholds returned here are therefore placed *just below* the score at which the cut happens (the next
representable value below it in the scores' own precision: float32 for float32 scores), so that comparing
``score > threshold`` in float32 or float64 gives the same verdicts.

* :func:`image_auroc`: ROC AUC of per-image scores against labels (scikit-learn).
* :func:`pixel_auroc`: ROC AUC over all pixels of all images against the binary masks (scikit-learn).
* :func:`aupro`: the MVTec AD per-region-overlap curve integrated over FPR in [0, fpr_limit], divided by
  fpr_limit. Exact and vectorised: one sort of all pixels (see the function's doc).
* :func:`f1_max`: the best F1 over all thresholds and the threshold reaching it.
* :func:`pg0`: the share of good parts passed at the highest threshold that still misses no defective part.

Undefined values (e.g. AUROC with only one class present) are ``nan``; shapes that do not match are a
``ValueError``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def _as_numpy(values: Any, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype in (torch.bfloat16, torch.float16):
            values = values.float()
        values = values.numpy()
    return np.asarray(values)


def _scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _as_numpy(scores, "scores")
    y = _as_numpy(labels, "labels")
    if s.ndim != 1 or y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and labels must both be (N,), got {s.shape} and {y.shape}")
    if not np.isfinite(s.astype(np.float64)).all():
        raise ValueError("scores hold NaN or infinite values")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise ValueError(f"labels must be 0 (good) or 1 (defective), got {y[bad][0]!r}")
    return s, y.astype(bool)


def _work_dtype(values: np.ndarray) -> type:
    """float32 for scores of at most 32 bits, else float64: thresholds live in the scores' precision."""
    return np.float32 if values.dtype.kind in "fiub" and values.dtype.itemsize <= 4 else np.float64


def just_below(value: float, dtype: type = np.float32) -> float:
    """The largest ``dtype`` number strictly below ``value`` (as a Python float).

    Scores ``s`` of that dtype then satisfy ``s > just_below(v)`` exactly when ``s >= v``.
    """
    v = dtype(value)
    return float(np.nextafter(v, dtype(-np.inf)))


def image_auroc(scores: Any, labels: Any) -> float:
    """ROC AUC of per-image ``scores`` (N,) against ``labels`` (N,) 0 good / 1 defective; nan if one class only."""
    s, y = _scores_labels(scores, labels)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s.astype(np.float64)))


def _maps_masks(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    m = _as_numpy(maps, "maps")
    g = _as_numpy(masks, "masks")
    if m.ndim == 2 and g.ndim == 2:  # a single image
        m, g = m[None], g[None]
    if m.ndim != 3 or m.shape != g.shape:
        raise ValueError(f"maps and masks must both be (N, H, W) of the same shape, got {m.shape} and {g.shape}")
    if not np.isfinite(m.astype(np.float64)).all():
        raise ValueError("anomaly maps hold NaN or infinite values")
    return m, g.astype(bool)


def pixel_auroc(maps: Any, masks: Any) -> float:
    """ROC AUC over every pixel of ``maps`` (N, H, W) against ``masks`` (N, H, W) bool; nan if one class only."""
    m, g = _maps_masks(maps, masks)
    flat_g = g.reshape(-1)
    if flat_g.all() or not flat_g.any():
        return float("nan")
    return float(roc_auc_score(flat_g, m.reshape(-1).astype(np.float64)))


def pro_curve(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap curve: (fpr, pro), both (T+1,) increasing, starting at (0, 0).

    For every distinct value t of the maps (descending), a pixel is "above" when its value >= t.
    fpr(t) = share of all good pixels (mask False, in every image) above t; pro(t) = mean over all connected
    components (8-connectivity) of all masks of the share of the component's pixels above t.
    Computed exactly with one sort: each good pixel weighs 1 / n_good in fpr, each defect pixel
    1 / (area of its component * number of components) in pro, and both are cumulated in score order.
    Returns nan arrays when there are no good pixels or no defect pixels.
    """
    from skimage.measure import label as label_components

    m, g = _maps_masks(maps, masks)
    n_good = int((~g).sum())
    weights_pro = np.zeros(g.shape, dtype=np.float64)
    n_components = 0
    areas: list[np.ndarray] = []
    labelled: list[np.ndarray] = []
    for i in range(g.shape[0]):
        if not g[i].any():
            labelled.append(np.zeros(g.shape[1:], dtype=np.int64))
            areas.append(np.zeros(1, dtype=np.int64))
            continue
        lab = label_components(g[i], connectivity=2)
        labelled.append(lab)
        areas.append(np.bincount(lab.reshape(-1)))
        n_components += int(lab.max())
    if n_good == 0 or n_components == 0:
        nan = np.array([np.nan])
        return nan, nan
    for i, (lab, area) in enumerate(zip(labelled, areas)):
        if area.size > 1:
            inv = np.zeros(area.shape, dtype=np.float64)
            inv[1:] = 1.0 / (area[1:] * n_components)
            weights_pro[i] = inv[lab]
    scores = m.reshape(-1)
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    good = ~g.reshape(-1)
    order = np.argsort(-scores)  # ties are grouped below, so the order inside a tie does not matter
    sorted_scores = scores[order]
    fpr = np.cumsum(good[order]) / n_good
    pro = np.cumsum(weights_pro.reshape(-1)[order])
    # keep the last index of every run of equal scores (all pixels with value >= t are above t)
    last = np.append(np.diff(sorted_scores) != 0, True)
    fpr = np.concatenate([[0.0], fpr[last]])
    pro = np.concatenate([[0.0], np.minimum(pro[last], 1.0)])
    return fpr, pro


def aupro(maps: Any, masks: Any, fpr_limit: float = 0.3) -> float:
    """Area under the PRO curve for FPR in [0, ``fpr_limit``], divided by ``fpr_limit`` (1.0 = perfect).

    ``maps`` (N, H, W) float, ``masks`` (N, H, W) bool. The curve (:func:`pro_curve`) is integrated with the
    trapezoid rule, linearly interpolated at ``fpr_limit``. nan when there are no good or no defect pixels.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro = pro_curve(maps, masks)
    if np.isnan(fpr).any():
        return float("nan")
    inside = fpr <= fpr_limit
    x = fpr[inside]
    y = pro[inside]
    if x[-1] < fpr_limit and inside.sum() < fpr.size:
        j = int(inside.sum())  # first point past the limit; the one before it is inside
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        x = np.append(x, fpr_limit)
        y = np.append(y, y_limit)
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return area / fpr_limit


def f1_max(scores: Any, labels: Any) -> tuple[float, float]:
    """Best F1 over all thresholds -> (f1, threshold) with defective meaning ``score > threshold``.

    Candidate cuts are the distinct scores: cut at value v flags every image with score >= v; the returned
    threshold is just below v (in the scores' precision). Ties at the best F1 go to the highest cut.
    (nan, nan) when there are no defective images.
    """
    s, y = _scores_labels(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan"), float("nan")
    values = s.astype(np.float64)
    order = np.argsort(-values, kind="stable")
    tp = np.cumsum(y[order])
    fp = np.cumsum(~y[order])
    last = np.append(np.diff(values[order]) != 0, True)
    tp, fp, cut = tp[last], fp[last], values[order][last]
    f1 = 2.0 * tp / (tp + fp + n_pos)  # = 2PR / (P + R)
    best = int(np.argmax(f1))
    return float(f1[best]), just_below(cut[best], _work_dtype(s))


def pg0(scores: Any, labels: Any) -> tuple[float, float]:
    """Pass rate of good parts at zero misses -> (pg0, threshold).

    threshold = just below the lowest score of any defective part (so ``score > threshold`` flags every
    defective part); a good part passes when ``score <= threshold``, i.e. when its score is strictly lower
    than every defective score. A good part tied with the lowest defective score is rejected.
    pg0 = passed good / all good. (nan, nan) without defective parts; (nan, threshold) without good ones.
    """
    s, y = _scores_labels(scores, labels)
    if not y.any():
        return float("nan"), float("nan")
    lowest_defect = s[y].astype(np.float64).min()
    threshold = just_below(lowest_defect, _work_dtype(s))
    good = s[~y].astype(np.float64)
    if good.size == 0:
        return float("nan"), threshold
    return float(np.mean(good < lowest_defect)), threshold


def evaluate(
    scores: Any,
    labels: Any,
    maps: Any = None,
    masks: Any = None,
    defect_types: Optional[Sequence[str]] = None,
    fpr_limit: float = 0.3,
) -> dict[str, Any]:
    """All metrics in one dict (floats; nan where undefined).

    ``scores`` (N,), ``labels`` (N,); optional ``maps`` (N, H, W) and ``masks`` (N, H, W) for the pixel
    metrics; optional ``defect_types`` (N,) ("good" for good images) adds ``per_defect_type``: for each defect
    type, the metrics on the good images plus that type's images. Keys: n_images, n_good, n_defective,
    image_auroc, f1_max, f1_threshold, pg0, pg0_threshold, and with maps pixel_auroc, aupro.
    """
    s, y = _scores_labels(scores, labels)
    result: dict[str, Any] = {
        "n_images": int(y.size),
        "n_good": int((~y).sum()),
        "n_defective": int(y.sum()),
        "image_auroc": image_auroc(s, y.astype(int)),
    }
    result["f1_max"], result["f1_threshold"] = f1_max(s, y.astype(int))
    result["pg0"], result["pg0_threshold"] = pg0(s, y.astype(int))
    m = g = None
    if maps is not None or masks is not None:
        if maps is None or masks is None:
            raise ValueError("pixel metrics need both maps and masks")
        m, g = _maps_masks(maps, masks)
        if m.shape[0] != y.size:
            raise ValueError(f"{m.shape[0]} maps for {y.size} scores")
        result["pixel_auroc"] = pixel_auroc(m, g)
        result["aupro"] = aupro(m, g, fpr_limit=fpr_limit)
    if defect_types is not None:
        types = [str(t) for t in defect_types]
        if len(types) != y.size:
            raise ValueError(f"{len(types)} defect types for {y.size} scores")
        per_type: dict[str, Any] = {}
        good_idx = np.flatnonzero(~y)
        for name in sorted({t for t, is_def in zip(types, y) if is_def}):
            idx = np.concatenate([good_idx, [i for i, t in enumerate(types) if t == name and y[i]]]).astype(int)
            per_type[name] = evaluate(
                s[idx], y[idx].astype(int),
                None if m is None else m[idx], None if g is None else g[idx],
                fpr_limit=fpr_limit,
            )
        result["per_defect_type"] = per_type
    return result
