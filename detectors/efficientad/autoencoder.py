"""EfficientAD's autoencoder: images (B, 3, S, S) -> a reconstruction of the teacher's features (B, C, s, s).

Encoder: six strided convolutions to a 64-d latent (1 x 1): conv 4x4/2 (32), conv 4x4/2 (32), conv 4x4/2
(64), conv 4x4/2 (64), conv 4x4/2 (64) (ReLU after each), conv (S/32 x S/32) (64), i.e. 8 x 8 at 256 px.
Decoder: six blocks of bilinear upsampling + conv 4x4 (64, padding 2) + ReLU + dropout 0.2 (the
upsampling sizes scale with S: 3, 8, 15, 32, 63, 127 at 256 px), upsampling to the PDN grid s = S/4 - 8
(56), conv 3x3 (64) + ReLU, conv 3x3 (C). Input: ImageNet-normalised images, as the PDNs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from detectors.efficientad.pdn import pdn_output_side


def decoder_sizes(image_size: int) -> list[int]:
    """The bilinear upsampling sizes of the decoder for S x S inputs (3, 8, 15, 32, 63, 127, 56 at S = 256)."""
    s = image_size
    sizes = [s // 64 - 1, s // 32, s // 16 - 1, s // 8, s // 4 - 1, s // 2 - 1]
    return [max(1, v) for v in sizes] + [pdn_output_side(s)]


class Autoencoder(nn.Module):
    """Encoder to a 64-d latent and decoder to ``out_channels`` features on the PDN grid of ``image_size``."""

    def __init__(self, image_size: int = 256, out_channels: int = 384) -> None:
        super().__init__()
        if image_size % 32 or image_size < 64:
            raise ValueError(f"the autoencoder needs image_size a multiple of 32 and >= 64, got {image_size}")
        self.sizes = decoder_sizes(image_size)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, image_size // 32),
        )
        self.decoder_convs = nn.ModuleList(nn.Conv2d(64, 64, 4, stride=1, padding=2) for _ in range(6))
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) ImageNet-normalised -> (B, out_channels, S/4 - 8, S/4 - 8)."""
        z = self.encoder(x)
        for i, size in enumerate(self.sizes[:-1]):
            z = F.interpolate(z, size=(size, size), mode="bilinear", align_corners=False)
            z = self.dropout(F.relu(self.decoder_convs[i](z)))
        z = F.interpolate(z, size=(self.sizes[-1],) * 2, mode="bilinear", align_corners=False)
        return self.head(z)
