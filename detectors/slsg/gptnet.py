"""SLSG stage 1, GPT-Net: generative pre-training of the encoder by masked inpainting (paper section 3.1).

Masks (S x S images): an ``grid`` x ``grid`` grid of cells of which ``ratio`` (80 %) are masked, plus 1..n
large rectangles whose sides are 40-150 px at 256 px (scaled with S). Masked pixels are set to 0.
GPT-Net = encoder (5 levels, strides 2..32) + symmetric U-Net decoder with skips -> reconstruction
(B, 3, S, S); an auxiliary head reconstructs directly from the bottleneck. D-Net = a patch (Markov)
discriminator of four convolution groups -> (B, 1, S/16 - 1, ...). Losses: least-squares GAN + l1 + l2 aux.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detectors.backbones import FeatureExtractor


# ------------------------------------------------------------------------------------------------- masks
def grid_mask(size: int, grid: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """(size, size) bool: the image cut into ``grid`` x ``grid`` cells, round(ratio * grid^2) of them masked."""
    n_cells = grid * grid
    chosen = rng.choice(n_cells, size=int(round(ratio * n_cells)), replace=False)
    cells = np.zeros(n_cells, dtype=bool)
    cells[chosen] = True
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    cell_of = np.searchsorted(edges, np.arange(size), side="right") - 1  # pixel -> cell index along an axis
    return cells.reshape(grid, grid)[cell_of[:, None], cell_of[None, :]]


def large_masks(size: int, count: int, side_px: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """(size, size) bool: union of ``count`` axis-aligned rectangles with sides uniform in ``side_px`` (px,
    clipped to the image), placed uniformly inside the image."""
    mask = np.zeros((size, size), dtype=bool)
    lo, hi = side_px
    for _ in range(count):
        h = int(min(size, max(1, round(rng.uniform(lo, hi)))))
        w = int(min(size, max(1, round(rng.uniform(lo, hi)))))
        y = int(rng.integers(0, size - h + 1))
        x = int(rng.integers(0, size - w + 1))
        mask[y : y + h, x : x + w] = True
    return mask


def inpainting_mask(
    size: int, grid: int, ratio: float, side_px_at_256: tuple[float, float], count_range: tuple[int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """GPT-Net's mask (size, size) bool: grid mask OR large random masks (sides scaled by size / 256)."""
    scale = size / 256.0
    count = int(rng.integers(count_range[0], count_range[1] + 1))
    side = (side_px_at_256[0] * scale, side_px_at_256[1] * scale)
    return grid_mask(size, grid, ratio, rng) | large_masks(size, count, side, rng)


# ---------------------------------------------------------------------------------------------- networks
def conv_group(cin: int, cout: int) -> nn.Sequential:
    """Convolution group: 3x3 conv + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """Up-sampling block (x2 bilinear + conv group), concatenation with skip (+ extra) and a Conv block (2 groups)."""

    def __init__(self, cin: int, cskip: int, cout: int, cextra: int = 0) -> None:
        super().__init__()
        self.up = conv_group(cin, cout)
        self.conv = nn.Sequential(conv_group(cout + cskip + cextra, cout), conv_group(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False))
        parts = [x, skip.to(x.dtype)]
        if extra is not None:
            parts.append(F.interpolate(extra, size=skip.shape[-2:], mode="bilinear", align_corners=False).to(x.dtype))
        return self.conv(torch.cat(parts, dim=1))


class UNetDecoder(nn.Module):
    """Symmetric decoder: 4 UpBlocks (strides 16, 8, 4, 2 with encoder skips) + a last up-sampling to S x S.

    ``extra_channels`` > 0: a bottleneck map (e.g. SegNet's X') is also fed into every block (skip from the
    bottleneck). ``forward(x (B,cin,h,w), skips deepest first, size, extra) -> (B, cout, *size)`` logits.
    """

    def __init__(self, cin: int, skip_channels: Sequence[int], widths: Sequence[int], cout: int, extra_channels: int = 0) -> None:
        super().__init__()
        if len(widths) != len(skip_channels):
            raise ValueError(f"decoder needs one width per skip level ({len(skip_channels)}), got {list(widths)}")
        blocks, prev = [], cin
        for cskip, width in zip(skip_channels, widths):
            blocks.append(UpBlock(prev, cskip, width, extra_channels))
            prev = width
        self.blocks = nn.ModuleList(blocks)
        self.final_up = conv_group(prev, prev)
        self.head = nn.Conv2d(prev, cout, 3, padding=1)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor], size: tuple[int, int],
                extra: torch.Tensor | None = None) -> torch.Tensor:
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip, extra)
        x = self.final_up(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        return self.head(x)


def make_trainable(encoder: FeatureExtractor, trainable: bool) -> FeatureExtractor:
    """Set ``requires_grad`` of every encoder parameter (its BatchNorm statistics stay frozen)."""
    for parameter in encoder.parameters():
        parameter.requires_grad_(trainable)
    return encoder


class GPTNet(nn.Module):
    """Generator: encoder + U-Net decoder -> reconstruction; auxiliary bottleneck head -> direct reconstruction."""

    def __init__(self, encoder: FeatureExtractor, widths: Sequence[int]) -> None:
        super().__init__()
        if len(encoder.channels) != 5:
            raise ValueError(f"SLSG needs 5 encoder levels (strides 2..32), got {encoder.channels}")
        self.encoder = make_trainable(encoder, True)
        self.decoder = UNetDecoder(encoder.channels[-1], list(reversed(encoder.channels[:-1])), widths, 3)
        self.aux = nn.Conv2d(encoder.channels[-1], 3, 1)

    def forward(self, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``masked`` (B, 3, S, S) in [0, 1] -> (reconstruction, auxiliary reconstruction), both (B, 3, S, S) in (0, 1)."""
        size = (int(masked.shape[2]), int(masked.shape[3]))
        levels = self.encoder(masked)
        out = torch.sigmoid(self.decoder(levels[-1], list(reversed(levels[:-1])), size))
        aux = torch.sigmoid(F.interpolate(self.aux(levels[-1]), size=size, mode="bilinear", align_corners=False))
        return out, aux


class PatchDiscriminator(nn.Module):
    """D-Net: four convolution groups (4x4 conv, BatchNorm except the first, LeakyReLU 0.2; strides 2, 2, 2, 1)
    and a 3x3 convolution to one channel: a real/fake judgement per patch (B, 1, ~S/8, ~S/8)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        chans = [3, width, width * 2, width * 4, width * 8]
        layers: list[nn.Module] = []
        for i in range(4):
            stride = 2 if i < 3 else 1
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 4, stride=stride, padding=1 if stride == 2 else 2, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(chans[i + 1]))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers.append(nn.Conv2d(chans[-1], 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> patch judgements (B, 1, h, w) (unbounded, LSGAN targets 1 real / 0 fake)."""
        return self.net(images * 2 - 1)


def lsgan_generator_loss(fake_judgement: torch.Tensor) -> torch.Tensor:
    """L_G = mean (D(G(x)) - 1)^2."""
    return ((fake_judgement.float() - 1) ** 2).mean()


def lsgan_discriminator_loss(real_judgement: torch.Tensor, fake_judgement: torch.Tensor) -> torch.Tensor:
    """L_D = 0.5 mean (D(x) - 1)^2 + 0.5 mean D(G(x))^2."""
    return 0.5 * ((real_judgement.float() - 1) ** 2).mean() + 0.5 * (fake_judgement.float() ** 2).mean()


def generator_loss(
    fake_judgement: torch.Tensor, recon: torch.Tensor, aux: torch.Tensor, clean: torch.Tensor, weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Eq. 10: L_R = a1 L_G + a2 l1(recon, clean) + a3 l2(aux, clean) -> dict with parts and ``total``."""
    parts = {
        "gan": lsgan_generator_loss(fake_judgement),
        "l1": F.l1_loss(recon.float(), clean),
        "aux": F.mse_loss(aux.float(), clean),
    }
    parts["total"] = weights[0] * parts["gan"] + weights[1] * parts["l1"] + weights[2] * parts["aux"]
    return parts
