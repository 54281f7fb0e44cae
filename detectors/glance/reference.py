"""The straightforward Glance inference, kept as the parity reference of the fast path (tests, benchmarks).

Every masked view of every image goes whole through :meth:`GlobalNet.forward` (N_p views of G x G, one
batch per image) and the patches are cut one by one: what ``Glance._patch_scores`` computed before the
incremental :class:`~detectors.glance.masked_views.MaskedViews` replaced it. ``predict`` never calls this
module; ``tests/detectors/test_glance_speedup_parity.py`` and ``benchmarks/bench_glance_cpu.py`` do.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from detectors.glance.model import crop_patches, iad_score, joint_score

if TYPE_CHECKING:
    from detectors.glance.detector import Glance


@torch.no_grad()
def reference_patch_scores(detector: "Glance", images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(b, 3, S, S) float32 in [0, 1] on the detector's device -> (s_IAD, s_DAD, joint score), each (b, N_p)."""
    assert detector.dad is not None
    cfg = detector.config
    boxes = detector._boxes
    n_p = len(boxes)
    global_images = detector._to_global(images)
    geometry = detector._view_geometry(boxes)
    out: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] = ([], [], [])
    for b in range(images.shape[0]):
        z_l = detector._local_features(crop_patches(images, boxes, cfg.patch_size, [b] * n_p))
        z_g = detector._global_features(global_images, [b] * n_p, boxes, geometry)
        with detector._autocast():
            logits = detector.dad(z_l, z_g).float()
        s_iad = iad_score(z_l, z_g)
        s_dad = logits.softmax(dim=1)[:, 1]
        for scores, value in zip(out, (s_iad, s_dad, joint_score(s_iad, s_dad, cfg.lambda_s))):
            scores.append(value)
    iad, dad, score = (torch.stack(v) for v in out)
    return iad, dad, score


@torch.no_grad()
def reference_score_batch(detector: "Glance", images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``Glance._score_batch`` computes, the straightforward way: (b, 3, S, S) -> (scores (b,), maps (b, S, S))."""
    anomaly_map = torch.einsum("bp,pyx->byx", reference_patch_scores(detector, images)[2], detector.idw)
    return anomaly_map.amax(dim=(1, 2)), anomaly_map
