"""The straightforward SimpleNet scoring, kept as the parity reference of the folded head (tests, benchmarks).

Step by step as the paper writes it and as ``SimpleNet._score_batch`` computed it before
:class:`~detectors.simplenet.folded.FoldedHead` replaced it (commit eafeafc~1): backbone maps ->
:class:`~detectors.patch_features.FeatureAggregator` (3 x 3 unfold, bilinear upsampling of the coarser layers'
unfolded maps, two adaptive average poolings) -> the optional standardisation -> adaptor -> discriminator
(patch score = ``-D(adaptor(feature))``) -> bilinear upsampling of the (h, w) patch map to S x S
(``align_corners=False``) -> :func:`detectors.image_ops.gaussian_blur` -> image score = the map's maximum.

``predict`` never calls this module; ``tests/detectors/test_simplenet.py`` (folded == step by step) and
``benchmarks/bench_runtimes.py`` (the row "torch eager, step by step (as the issue measured)") do.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import torch
import torch.nn.functional as F

from detectors.image_ops import gaussian_blur
from detectors.patch_features import FeatureAggregator
from detectors.simplenet.model import Adaptor, Discriminator

if TYPE_CHECKING:
    from detectors.simplenet.detector import SimpleNet


@torch.no_grad()
def reference_patch_scores(
    aggregator: FeatureAggregator,
    norm: Optional[tuple[torch.Tensor, torch.Tensor]],
    adaptor: Adaptor,
    discriminator: Discriminator,
    maps: Sequence[torch.Tensor],
) -> torch.Tensor:
    """L backbone maps (B, C_l, h_l, w_l), the first the finest -> patch scores (B, h, w) float32: aggregate,
    standardise with ``norm`` = (mean (D,), std (D,)) when given, adapt, discriminate, negate. The modules
    must be in eval mode (the discriminator's BatchNorm uses its running statistics)."""
    feats = aggregator([m.float() for m in maps])  # (B, h, w, D)
    if norm is not None:
        feats = (feats - norm[0]) / norm[1]
    b, h, w, d = feats.shape
    return -discriminator(adaptor(feats.reshape(-1, d))).float().reshape(b, h, w)


def reference_anomaly_map(patch: torch.Tensor, image_size: int, blur_sigma: float) -> torch.Tensor:
    """Patch scores (B, h, w) -> the map (B, S, S): bilinear upsampling to S = ``image_size`` px
    (``align_corners=False``), then the Gaussian blur of ``blur_sigma`` px."""
    up = F.interpolate(patch[:, None], size=(int(image_size), int(image_size)), mode="bilinear",
                       align_corners=False)[:, 0]
    return gaussian_blur(up, float(blur_sigma))


@torch.no_grad()
def reference_score_batch(detector: "SimpleNet", images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``SimpleNet._score_batch`` computes, step by step: (b, 3, S, S) float32 in [0, 1] -> (scores (b,),
    maps (b, S, S)) float32 on the detector's device. The detector must be fitted."""
    assert detector.adaptor is not None and detector.discriminator is not None
    cfg = detector.config
    with detector._autocast():
        maps = detector.backbone(images.to(detector.device, dtype=torch.float32))
    patch = reference_patch_scores(detector.aggregator, detector._norm, detector.adaptor, detector.discriminator, maps)
    anomaly_map = reference_anomaly_map(patch, cfg.image_size, cfg.blur_sigma)
    return anomaly_map.amax(dim=(1, 2)), anomaly_map


class ReferencePredictor:
    """A fitted SimpleNet scored by :func:`reference_score_batch` behind the detector's ``predict`` interface
    (``name``, ``config``, ``predict(images) -> Prediction``, same input checks): what a benchmark times as
    the step-by-step torch eager baseline."""

    def __init__(self, detector: "SimpleNet") -> None:
        detector._require_fitted("ReferencePredictor")
        self.detector = detector
        self.name = detector.name
        self.config = detector.config
        self.fitted = True

    def predict(self, images: torch.Tensor):
        """(B, 3, S, S) float in [0, 1] -> :class:`~detectors.base.Prediction` (score (B,), anomaly_map
        (B, S, S) float32 numpy): the detector's own checks and chunking, step-by-step scoring."""
        from detectors.base import Prediction

        det = self.detector
        scores, maps = det._in_batches(images, lambda chunk: reference_score_batch(det, chunk), call="predict")
        return Prediction(score=scores.cpu().numpy(), anomaly_map=maps.cpu().numpy())
