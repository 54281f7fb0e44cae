"""Locally aware patch features (PatchCore, Roth et al. CVPR 2022, sec. 3.1), shared by the methods that use them.

:class:`FeatureAggregator` turns the maps of several backbone layers into one feature vector per cell of the
finest layer's grid: every 3 x 3 neighbourhood of each layer (its channels times the 9 positions) is averaged
down by adaptive average pooling, coarser layers are bilinearly upsampled to the finest grid, and the
layers' vectors are pooled together to one ``target_dim`` vector. No learned parameters.
Used by PatchCore (``detectors.patchcore``) and SimpleNet (``detectors.simplenet``), whose reference code
took it from PatchCore's.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FeatureAggregator(nn.Module):
    """PatchCore-style local features from several backbone layers (no learned parameters).

    For each layer: every 3x3 neighbourhood (``patch_size``, stride 1, zero padding) is unfolded into a
    ``C * patch_size**2`` vector; coarser layers are bilinearly upsampled (on the unfolded maps) to the
    grid of the first layer; each layer's vector is adaptive-average-pooled to ``pretrain_dim``; the L
    pooled vectors are concatenated and adaptive-average-pooled to ``target_dim``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        pretrain_dim: int = 1536,
        target_dim: int = 1536,
        patch_size: int = 3,
    ) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("FeatureAggregator needs at least one layer")
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd and >= 1, got {patch_size}")
        self.in_channels = list(in_channels)
        self.pretrain_dim = int(pretrain_dim)
        self.target_dim = int(target_dim)
        self.patch_size = int(patch_size)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features``: L tensors (B, C_l, h_l, w_l), the first the finest -> (B, h, w, target_dim)."""
        if len(features) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(features)}")
        k = self.patch_size
        b, _, h, w = features[0].shape
        pooled = []
        for feat in features:
            feat = feat.float()
            _, c, hl, wl = feat.shape
            patches = F.unfold(feat, kernel_size=k, padding=k // 2, stride=1)  # (B, C*k*k, hl*wl)
            patches = patches.reshape(b, c * k * k, hl, wl)
            if (hl, wl) != (h, w):
                patches = F.interpolate(patches, size=(h, w), mode="bilinear", align_corners=False)
            vectors = patches.permute(0, 2, 3, 1).reshape(b * h * w, 1, c * k * k)
            pooled.append(F.adaptive_avg_pool1d(vectors, self.pretrain_dim))  # (N, 1, P)
        stacked = torch.cat(pooled, dim=2)  # (N, 1, L*P)
        out = F.adaptive_avg_pool1d(stacked, self.target_dim)  # (N, 1, D)
        return out.reshape(b, h, w, self.target_dim)
