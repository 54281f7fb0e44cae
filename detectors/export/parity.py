"""Parity of an exported model with its torch model: the measure, the tolerance, and the probe images.

Errors are relative to the magnitude of what is compared, per image:

* score: ``|s_exported - s_torch| / max(|s_torch|, max |map_torch|)``: relative to the score, with the map's
  magnitude as the floor so that a score near zero (SimpleNet's scores are negated discriminator outputs and
  can cross 0) is not judged by an arbitrarily small denominator;
* map: ``max |m_exported - m_torch| / max |m_torch|``.

Tolerance: relative 1e-3 on both (:data:`SCORE_RTOL`, :data:`MAP_RTOL`), the issue's bound for scores. Both
runtimes compute in float32 with other kernels and fusion orders than torch eager; what the parity tests
measure on real bottle images is written in each export's manifest (``parity``) and in the README.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

SCORE_RTOL = 1e-3
MAP_RTOL = 1e-3


def relative_errors(ref_scores: np.ndarray, ref_maps: np.ndarray, scores: np.ndarray, maps: np.ndarray) -> tuple[float, float]:
    """(max score error, max map error) over a batch, relative as in the module docstring; ``ref_*`` are
    the torch model's scores (B,) and maps (B, S, S). A non-finite value anywhere gives ``inf``."""
    ref_scores, scores = np.asarray(ref_scores, np.float64), np.asarray(scores, np.float64)
    ref_maps, maps = np.asarray(ref_maps, np.float64), np.asarray(maps, np.float64)
    if not (np.isfinite(scores).all() and np.isfinite(maps).all() and np.isfinite(ref_maps).all()):
        return float("inf"), float("inf")
    scale = np.abs(ref_maps).reshape(len(ref_maps), -1).max(axis=1)
    scale = np.maximum(scale, np.finfo(np.float32).tiny)
    score_err = np.abs(scores - ref_scores) / np.maximum(np.abs(ref_scores), scale)
    map_err = np.abs(maps - ref_maps).reshape(len(maps), -1).max(axis=1) / scale
    return float(score_err.max()), float(map_err.max())


def probe_images(image_size: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    """(n, 3, S, S) float32 in [0, 1]: the woven test texture, every other image with a synthetic defect:
    the images an export's own parity check runs (the parity tests use real images)."""
    from detectors.synthetic import DEFECT_KINDS, add_defect, textured_images

    images = textured_images(n, size=image_size, seed=seed)
    for i in range(1, n, 2):
        images[i] = add_defect(images[i], DEFECT_KINDS[i % len(DEFECT_KINDS)], seed=seed + i)[0]
    return images


def measure(detector: Any, exported: Any, images: torch.Tensor) -> dict[str, float]:
    """``{"score_rel_err", "map_rel_err", "n_images"}`` of ``exported.predict`` against ``detector.predict``
    on ``images`` (B, 3, S, S)."""
    ref = detector.predict(images)
    got = exported.predict(images)
    score_err, map_err = relative_errors(ref.score, ref.anomaly_map, got.score, got.anomaly_map)
    return {"score_rel_err": score_err, "map_rel_err": map_err, "n_images": int(images.shape[0])}
