"""EfficientAD's teacher: what the student regresses, (B, 3, S, S) images in [0, 1] -> (B, C, s, s), s = S/4 - 8.

The paper's teacher is a small/medium PDN distilled from a WideResNet-101's layer-2 + layer-3 patch features
(384 channels) on ImageNet. Neither ImageNet nor WideResNet-101 weights are available offline here, so two
teachers exist (``EfficientADConfig.teacher_weights`` / ``teacher`` choose):

* :class:`PDNTeacher`: a frozen PDN, fed ImageNet-normalised images as in the paper: from a state dict in the
  public teacher format (``teacher_weights`` = ``teacher_small.pth``: ``conv1.weight`` ..), or distilled from
  the backbone teacher below at fit time (``teacher: distilled``, :mod:`detectors.efficientad.distillation`).
* :class:`BackboneTeacher` (``teacher: backbone``, the class default): the frozen offline backbone itself
  (tf_efficientnet_lite0 with its ImageNet weights), timm levels 2 + 3 (strides 8 and 16), turned into
  locally aware patch features by :class:`detectors.patch_features.FeatureAggregator` (3 x 3 neighbourhoods,
  adaptive average pooling to 384 channels: the construction the paper's teacher was distilled from, with
  Lite0 in place of WideResNet-101), bilinearly resampled from the stride-8 grid to the stride-4 grid of the
  PDN's output (S/4 cells, cell k centred on pixel 4k + 2) and centre-cropped to s = S/4 - 8 (cell i of the
  crop centred on pixel 4i + 18, the centre of the PDN's receptive field of output i to within 2 px).
  It is also the distillation target of the distilled teacher.

Both teachers' outputs are then standardised per channel with the training images' mean and std (in
:mod:`detectors.efficientad.detector`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detectors.backbones import FeatureExtractor, imagenet_normalise
from detectors.efficientad.pdn import PDN, pdn_output_side
from detectors.patch_features import FeatureAggregator



class PDNTeacher(nn.Module):
    """A frozen PDN teacher (public teacher format): images in [0, 1] -> (B, C, S/4 - 8, S/4 - 8)."""

    def __init__(self, pdn: PDN) -> None:
        super().__init__()
        self.pdn = pdn
        for p in self.pdn.parameters():
            p.requires_grad_(False)
        self.pdn.eval()

    def train(self, mode: bool = True) -> "PDNTeacher":
        """Frozen: always stays in eval mode."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pdn(imagenet_normalise(images))


class BackboneTeacher(nn.Module):
    """The frozen backbone's aggregated layer features on the PDN's output grid (see the module doc)."""

    def __init__(self, backbone: FeatureExtractor, image_size: int, out_channels: int = 384) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregator = FeatureAggregator(backbone.channels, out_channels, out_channels, 3)
        self.grid = image_size // 4
        self.side = pdn_output_side(image_size)

    def train(self, mode: bool = True) -> "BackboneTeacher":
        """Frozen: always stays in eval mode."""
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, out_channels, S/4 - 8, S/4 - 8) float32."""
        feats = self.aggregator([m.float() for m in self.backbone(images)])  # (B, h, w, C)
        feats = feats.permute(0, 3, 1, 2)
        feats = F.interpolate(feats, size=(self.grid, self.grid), mode="bilinear", align_corners=False)
        lo = (self.grid - self.side) // 2
        return feats[:, :, lo : lo + self.side, lo : lo + self.side]
