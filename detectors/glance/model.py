"""Glancing at the Patch's networks and maths (Wang, Wu, Cui & Shen, CVPR 2021).

Shapes: images (B, 3, S, S) in [0, 1]; patches (N, 3, P, P); the Global-Net sees the image resized to
G x G pixels (``global_size``) with a binary mask (N, 1, G, G) that is 0 on the patch and 1 elsewhere;
``dim`` = local / global feature length. Patch boxes are top-left corners (y, x) in S-pixel units.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from detectors.backbones import imagenet_normalise
from detectors.tiling import tile_starts



# --------------------------------------------------------------------------------------------- Local-Net
class LocalNet(nn.Module):
    """Light-weight patch encoder L: (N, 3, P, P) in [0, 1] -> (N, dim). Any P >= 4."""

    def __init__(self, dim: int = 128, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(4 * width, 4 * width, 3, padding=1), nn.LeakyReLU(0.1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(imagenet_normalise(patches)))


def distillation_loss(decoded: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """l_k (paper eq. 1) averaged: mean over patches and dimensions of (D(L(p)) - R(p))^2. (N, T) x (N, T)."""
    return ((decoded.float() - teacher.float()) ** 2).mean()


def compactness_loss(features: torch.Tensor) -> torch.Tensor:
    """l_c (paper eq. 2) normalised: mean of the off-diagonal entries c_ij (i != j) of the correlation
    matrix of the ``dim`` feature components over the batch (N, dim), N >= 2."""
    z = features.float()
    z = z - z.mean(0, keepdim=True)
    z = z / (z.norm(dim=0, keepdim=True) + 1e-6)
    corr = z.T @ z  # (dim, dim)
    d = corr.shape[0]
    off = corr.sum() - corr.diagonal().sum()
    return off / max(1, d * (d - 1))


# ----------------------------------------------------------------------------------------- Global-Net
class PartialConv2d(nn.Module):
    """Partial convolution (Liu et al. 2018; paper eq. 5) with a single-channel binary mask.

    ``x' = W^T (X * M) * sum(1) / sum(M) + b`` where the window holds at least one valid pixel, else 0;
    the updated mask is 1 exactly there. Pixels with M = 0 never influence the output.
    ``forward(x (B, C, H, W), mask (B, 1, H, W) in {0, 1}) -> (y (B, C', H', W'), mask' (B, 1, H', W'))``.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("ones", torch.ones(1, 1, kernel, kernel), persistent=False)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.window = float(kernel * kernel)

    @torch.no_grad()
    def mask_update(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The image-independent half of eq. 5: mask (B, 1, H, W) -> (new mask (B, 1, H', W') in {0, 1} with
        ``mask``'s dtype, ratio ``sum(1) / sum(M)`` (B, 1, H', W') float32, 0 where the window has no valid pixel)."""
        valid = F.conv2d(mask.float(), self.ones, None, self.stride, self.padding, self.dilation)
        new_mask = (valid > 0).to(mask.dtype)
        ratio = (self.window / valid.clamp_min(1.0)) * new_mask
        return new_mask, ratio

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        new_mask, ratio = self.mask_update(mask)
        raw = self.conv(x * mask.to(x.dtype))
        out = (raw * ratio.to(raw.dtype) + self.bias.view(1, -1, 1, 1).to(raw.dtype)) * new_mask.to(raw.dtype)
        return out, new_mask


class GlobalNet(nn.Module):
    """Global-Net G: the image with the patch masked out -> the feature expected at the patch (N, dim).

    Six partial convolutions (overall stride 16, two dilated context layers), then the final map is
    bilinearly sampled at the patch centre and passed through a two-layer MLP.
    ``forward(images (N, 3, G, G) in [0, 1], mask (N, 1, G, G), centres (N, 2) as (x, y) in [-1, 1])``.
    """

    def __init__(self, dim: int = 128, width: int = 32) -> None:
        super().__init__()
        w = width
        self.layers = nn.ModuleList(
            [
                PartialConv2d(3, w, 4, stride=2, padding=1),
                PartialConv2d(w, 2 * w, 3, stride=2, padding=1),
                PartialConv2d(2 * w, 4 * w, 3, stride=2, padding=1),
                PartialConv2d(4 * w, 4 * w, 3, stride=2, padding=1),
                PartialConv2d(4 * w, 4 * w, 3, padding=2, dilation=2),
                PartialConv2d(4 * w, 4 * w, 3, padding=2, dilation=2),
            ]
        )
        self.act = nn.LeakyReLU(0.1)
        self.head = nn.Sequential(nn.Linear(4 * w, 2 * dim), nn.LeakyReLU(0.1), nn.Linear(2 * dim, dim))

    def feature_map(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, G, G), (N, 1, G, G) -> final map (N, 4w, G/16, G/16) and its mask."""
        x, m = imagenet_normalise(images), mask
        for layer in self.layers:
            x, m = layer(x, m)
            x = self.act(x)
        return x, m

    def forward(self, images: torch.Tensor, mask: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        fmap, _ = self.feature_map(images, mask)
        grid = centres.to(fmap.dtype).view(-1, 1, 1, 2)
        sampled = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return self.head(sampled.flatten(1))


class DADHead(nn.Module):
    """Distortion-anomaly classifier C(Z*, Z_g): (N, dim) x (N, dim) -> logits (N, 2); class 1 = stained."""

    def __init__(self, dim: int = 128, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.LeakyReLU(0.1), nn.Linear(hidden, 2))

    def forward(self, local: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([local, global_], dim=1))


def iad_score(local: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
    """s_IAD / l_IAD (paper eqs. 7, 11): (1/n) ||Z_l - Z_g||^2 per row, (N, n) x (N, n) -> (N,)."""
    return ((local.float() - global_.float()) ** 2).mean(dim=1)


def joint_score(s_iad: torch.Tensor, s_dad: torch.Tensor, lambda_s: float) -> torch.Tensor:
    """s = lambda_s s_IAD + (1 - lambda_s) s_DAD (paper eq. 13)."""
    return lambda_s * s_iad + (1.0 - lambda_s) * s_dad


# -------------------------------------------------------------------------------------- patches & masks
def add_stain(patches: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """DAD negatives: each patch (N, 3, P, P) with one opaque random-colour ellipse ("small stain") of
    semi-axes in [P/16, P/5] px at a random position inside the patch. Returns (stained copy, stain mask
    (N, P, P) bool); outside the mask the copy equals the input exactly. Randomness from ``generator`` (CPU)."""
    n, _, p, _ = patches.shape
    r = torch.rand(n, 6, generator=generator)
    lo, hi = max(1.0, p / 16), max(1.5, p / 5)
    ay = lo + (hi - lo) * r[:, 0]
    ax = lo + (hi - lo) * r[:, 1]
    cy = ay + (p - 1 - 2 * ay).clamp_min(0) * r[:, 2]
    cx = ax + (p - 1 - 2 * ax).clamp_min(0) * r[:, 3]
    colour = torch.rand(n, 3, generator=generator)
    yy, xx = torch.meshgrid(torch.arange(p, dtype=torch.float32), torch.arange(p, dtype=torch.float32), indexing="ij")
    inside = ((yy - cy.view(-1, 1, 1)) / ay.view(-1, 1, 1)) ** 2 + ((xx - cx.view(-1, 1, 1)) / ax.view(-1, 1, 1)) ** 2 <= 1.0
    inside = inside.to(patches.device)
    colour = colour.to(patches.device, patches.dtype).view(n, 3, 1, 1)
    stained = torch.where(inside.unsqueeze(1), colour.expand(n, 3, p, p), patches)
    return stained, inside


def patch_grid(image_size: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x), px, of a raster of ``patch``-px patches every ``stride`` px over an
    ``image_size``-px square image; the last row/column is aligned to the image border so every pixel is
    covered. Raster order (row-major), (rows * columns) corners.

    The offsets along each axis are :func:`detectors.tiling.tile_starts`' with overlap ``1 - stride / patch``
    (its step rounds back to exactly ``stride``).
    """
    if patch > image_size:
        raise ValueError(f"patch {patch} px is larger than the image ({image_size} px)")
    starts = tile_starts(image_size, patch, 1.0 - stride / patch)
    return [(y, x) for y in starts for x in starts]


def crop_patches(images: torch.Tensor, boxes: Sequence[tuple[int, int]], patch: int, image_index: Sequence[int]) -> torch.Tensor:
    """Patches (N, 3, P, P): box ``boxes[i]`` (y, x) cut out of image ``image_index[i]`` of (B, 3, S, S)."""
    return torch.stack([images[b, :, y : y + patch, x : x + patch] for b, (y, x) in zip(image_index, boxes)])


def patch_index(boxes: Sequence[tuple[int, int]], patch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel rows and columns (N, P) int64 of the patches with top-left corners ``boxes`` (y, x), for
    :func:`gather_patches`."""
    b = torch.tensor(boxes, dtype=torch.int64).view(-1, 2)
    offsets = torch.arange(patch, dtype=torch.int64)
    return (b[:, :1] + offsets).to(device), (b[:, 1:] + offsets).to(device)


def gather_patches(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The N patches of one image (3, S, S) at :func:`patch_index` ``rows``/``cols`` (N, P) -> (N, 3, P, P),
    channels-last in memory (one gather; what :func:`crop_patches` cuts for image-index 0, same values)."""
    return image[:, rows.unsqueeze(2), cols.unsqueeze(1)].permute(1, 0, 2, 3).contiguous(memory_format=torch.channels_last)


def hole_masks(boxes: Sequence[tuple[float, float]], patch: int, image_size: int, global_size: int, device: torch.device) -> torch.Tensor:
    """Global-Net masks (N, 1, G, G) float: 0 on G-pixels whose centre lies inside the patch box (in S units),
    1 elsewhere (M_0 of the paper)."""
    scale = image_size / global_size
    centres = (torch.arange(global_size, device=device, dtype=torch.float32) + 0.5) * scale  # S units
    b = torch.tensor(boxes, device=device, dtype=torch.float32).view(-1, 2)
    in_y = (centres.view(1, -1) >= b[:, :1]) & (centres.view(1, -1) < b[:, :1] + patch)  # (N, G)
    in_x = (centres.view(1, -1) >= b[:, 1:]) & (centres.view(1, -1) < b[:, 1:] + patch)
    hole = in_y.unsqueeze(2) & in_x.unsqueeze(1)
    return (~hole).float().unsqueeze(1)


def patch_centres(boxes: Sequence[tuple[float, float]], patch: int, image_size: int, device: torch.device) -> torch.Tensor:
    """Patch centres (N, 2) as grid_sample (x, y) coordinates in [-1, 1] (align_corners=False)."""
    b = torch.tensor(boxes, device=device, dtype=torch.float32).view(-1, 2)
    c = (b + patch / 2.0) / image_size * 2.0 - 1.0
    return c.flip(1)


def idw_weights(image_size: int, boxes: Sequence[tuple[int, int]], patch: int, power: float = 2.0, eps: float = 1.0) -> torch.Tensor:
    """Inverse-distance weights (N_p, S, S) for the anomaly map: pixel x takes the patches whose box holds x,
    weighted by 1 / (|x - c_i|^power + eps) (c_i = patch centre, px), normalised to sum 1 at every pixel.
    ``map = einsum("bp,pyx->byx", patch_scores, weights)``; a constant score field maps to that constant."""
    s = image_size
    coords = torch.arange(s, dtype=torch.float32) + 0.5
    weights = torch.zeros(len(boxes), s, s)
    for i, (y, x) in enumerate(boxes):
        cy, cx = y + patch / 2.0, x + patch / 2.0
        dy = (coords[y : y + patch] - cy).view(-1, 1)
        dx = (coords[x : x + patch] - cx).view(1, -1)
        weights[i, y : y + patch, x : x + patch] = 1.0 / ((dy * dy + dx * dx).sqrt() ** power + eps)
    total = weights.sum(0, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("idw_weights: the patches do not cover every pixel")
    return weights / total


def idw_sparse(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The K nonzero entries per pixel of dense :func:`idw_weights` (N_p, S, S), K = the most patches any pixel
    lies in: (patch index (K, S, S) int64, weight (K, S, S) float32; padding entries have weight 0 and index
    0). ``map = (scores[:, index] * weight).sum(1)`` equals the dense ``einsum("bp,pyx->byx", scores, weights)``
    up to float rounding, reading K instead of N_p weights per pixel."""
    nonzero = weights > 0
    k = int(nonzero.sum(0).max())
    # the K largest weights per pixel are its nonzero ones (weights are positive where nonzero)
    weight, index = weights.topk(k, dim=0)
    index = torch.where(weight > 0, index, torch.zeros_like(index))
    return index, weight.contiguous()
