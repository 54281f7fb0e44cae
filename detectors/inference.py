"""A fitted detector's inference path as one ``nn.Module``: what export (ONNX / OpenVINO) and compilation
(``torch.compile``, CUDA graphs) start from.

``InferenceModule(detector)(images)`` returns exactly what ``detector.predict(images)`` computes for a batch
of at most ``inference_batch_size`` images, as tensors on the detector's device: the clamp to [0, 1] and the
method's pure-tensor ``_score_batch``. It does not validate its input (``predict`` does): it expects
(B, 3, S, S) float32 in [0, 1] on the detector's device, S = ``config.image_size``.
"""
from __future__ import annotations

import torch
from torch import nn

from detectors.base import Detector


class InferenceModule(nn.Module):
    """``forward(images (B, 3, S, S) float32)`` -> ``(scores (B,), maps (B, S, S))`` float32, no gradients.

    The detector's modules (every ``nn.Module`` attribute, the frozen backbone included) are registered as
    submodules, so ``parameters()``, ``buffers()`` and exporters see them; its plain tensors (memory banks,
    normalisation statistics) enter a trace as constants. Raises :class:`~detectors.errors.DetectorError`
    for a detector that is not fitted.
    """

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        detector._require_fitted("InferenceModule")
        self.detector = detector  # a plain attribute (Detector is no nn.Module)
        for attribute, value in vars(detector).items():
            if isinstance(value, nn.Module):
                self.add_module(attribute.lstrip("_"), value)
        self.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return self.detector._score_batch(images.clamp(0, 1))
