"""TSDN's networks and losses (Two-Stream Decoder Network, section 2 of the paper).

Shapes for B images of H x W pixels; the encoder's levels have strides 2, 4, 8, 16, 32; C = ``channels`` of
``F_1/32``; (h, w) = (H/32, W/32):

    encoder (pretrained, fine-tuned) -> levels e1..e5;  F = 1x1 conv(e5)              (B, C, h, w)
    DCD_A(F, skips e4..e1) -> mask logits                                          (B, 1, H, W)
    FNE(F, M') -> W' = sigmoid(MLP(flatten(conv([F, M'_small]))))                  (B, C) in (0, 1)
    F_nml = W' x F;  DCD_N(F_nml, skips e4..e1) -> reconstruction R                (B, 3, H, W) in (0, 1)
    W_gt = minmax(1 - SSIM_c(upsample(F), M'))                                     (B, C) in [0, 1]
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detectors.backbones import FeatureExtractor


# ----------------------------------------------------------------------------------------- image losses
def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of ``x`` (B, C, H, W) and ``y`` (B, C, H, W) or (B, 1, H, W) -> (B, C, H, W)
    in [-1, 1].

    Gaussian window ``window`` px with ``sigma`` px (Wang et al. 2004), reflect padding, constants
    (0.01 L)^2 and (0.03 L)^2 with L = ``data_range``. A one-channel ``y`` is compared with every channel of
    ``x``; its own statistics are then computed once instead of once per channel (same result as expanding it).
    """
    x, y = x.float(), y.float()
    g = _gaussian_window(window, sigma, x.device)
    pad = window // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        c = t.shape[1]
        kx = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
        ky = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
        mode = "reflect" if min(t.shape[-2:]) > pad else "replicate"
        t = F.pad(t, (pad, pad, pad, pad), mode=mode)
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L_s = 1 - mean SSIM of two image batches (B, 3, H, W) in [0, 1] -> scalar."""
    return 1.0 - ssim_map(x, y).mean()


def _gray(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float() * weights).sum(dim=1, keepdim=True)


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Prewitt gradient magnitude of the grey levels of ``x`` (B, 3, H, W) -> (B, 1, H, W)."""
    gray = _gray(x)
    kx = torch.tensor([[1.0, 0.0, -1.0]] * 3, device=x.device).div(3).view(1, 1, 3, 3)
    ky = kx.transpose(2, 3)
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, kx), F.conv2d(padded, ky)
    return torch.sqrt(gx**2 + gy**2 + 1e-12)


def gms_loss(x: torch.Tensor, y: torch.Tensor, c: float = 0.0026) -> torch.Tensor:
    """L_g = 1 - mean gradient magnitude similarity (Xue et al. 2014) of (B, 3, H, W) images in [0, 1]."""
    gx, gy = gradient_magnitude(x), gradient_magnitude(y)
    gms = (2 * gx * gy + c) / (gx**2 + gy**2 + c)
    return 1.0 - gms.mean()


# ---------------------------------------------------------------------------------------------- FNE target
def _channel_minmax(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    flat = x.flatten(2)
    lo = flat.amin(dim=2, keepdim=True)
    hi = flat.amax(dim=2, keepdim=True)
    return ((flat - lo) / (hi - lo + eps)).view_as(x)


def normality_target(features: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """W_gt (paper section 2.4): per-channel normality of ``features`` (B, C, h, w) w.r.t. ``mask`` (B, 1, H, W).

    Each feature channel is bilinearly upsampled to H x W and min-max normalised to [0, 1]; its SSIM with the
    mask (in [0, 1]) is averaged over the pixels; the distance 1 - SSIM is min-max normalised over the C
    channels of each image. Channels that look like the mask get values near 0, others near 1.
    Returns (B, C) float32 in [0, 1], without gradient.
    """
    with torch.no_grad():
        size = mask.shape[-2:]
        up = F.interpolate(features.float(), size=size, mode="bilinear", align_corners=False)
        up = _channel_minmax(up)
        m = mask.float().clamp(0, 1)  # (B, 1, H, W), broadcast over the C channels
        similarity = ssim_map(up, m).flatten(2).mean(dim=2)  # (B, C)
        distance = 1.0 - similarity
        lo = distance.amin(dim=1, keepdim=True)
        hi = distance.amax(dim=1, keepdim=True)
        return ((distance - lo) / (hi - lo + eps)).clamp(0, 1)


# ---------------------------------------------------------------------------------------------- networks
def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    """Conv (same padding, no bias) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class DeconvBlock(nn.Module):
    """2x transposed convolution, then concatenation with an encoder skip and a 3x3 conv group."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, 2, stride=2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
        )
        self.fuse = conv_bn_relu(cout + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, skip.to(x.dtype)], dim=1))


class DeconvDecoder(nn.Module):
    """DCD: deconvolution decoder from (B, cin, H/32, W/32) with skips at strides 16, 8, 4, 2 to (B, cout, H, W)."""

    def __init__(self, cin: int, skip_channels: Sequence[int], widths: Sequence[int], cout: int) -> None:
        super().__init__()
        if len(widths) != len(skip_channels):
            raise ValueError(f"decoder needs one width per skip level ({len(skip_channels)}), got {list(widths)}")
        blocks = []
        prev = cin
        for cskip, width in zip(skip_channels, widths):
            blocks.append(DeconvBlock(prev, cskip, width))
            prev = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(
            nn.ConvTranspose2d(prev, prev, 2, stride=2), nn.ReLU(inplace=True), nn.Conv2d(prev, cout, 3, padding=1)
        )

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """``skips`` deepest first (strides 16, 8, 4, 2) -> logits (B, cout, *size)."""
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip)
        x = self.head(x)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


class FeatureNormalityEstimator(nn.Module):
    """FNE: conv over [F, M' at h x w], flatten, 3-layer MLP -> logits of W' (B, C)."""

    def __init__(self, channels: int, grid: tuple[int, int], conv_channels: int, hidden: int) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.conv = nn.Sequential(nn.Conv2d(channels + 1, conv_channels, 3, padding=1), nn.ReLU(inplace=True))
        flat = conv_channels * grid[0] * grid[1]
        self.mlp = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, channels),
        )

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``features`` (B, C, h, w), ``mask`` (B, 1, H, W) in [0, 1] -> logits (B, C) (W' = sigmoid)."""
        small = F.adaptive_avg_pool2d(mask.to(features.dtype), features.shape[-2:])
        x = self.conv(torch.cat([features, small], dim=1))
        if tuple(x.shape[-2:]) != self.grid:
            x = F.adaptive_avg_pool2d(x, self.grid)
        return self.mlp(x.flatten(1))


class TSDNNet(nn.Module):
    """The whole TSDN: encoder + 1x1 reduction + DCD_A + FNE + DCD_N (see the module docstring)."""

    def __init__(
        self,
        encoder: FeatureExtractor,
        image_size: int,
        channels: int,
        decoder_widths: Sequence[int],
        fne_conv_channels: int,
        fne_hidden: int,
        train_encoder: bool = True,
        normal_skip_levels: int = 4,
    ) -> None:
        super().__init__()
        self.normal_skip_levels = int(normal_skip_levels)
        if len(encoder.channels) != 5:
            raise ValueError(f"TSDN needs 5 encoder levels (strides 2..32), got {encoder.channels}")
        self.encoder = encoder
        for parameter in self.encoder.parameters():
            parameter.requires_grad_(train_encoder)  # fine-tuned or frozen (BatchNorm statistics stay frozen)
        self.reduce = nn.Conv2d(encoder.channels[-1], channels, 1)
        skips = list(reversed(encoder.channels[:-1]))
        self.dcd_a = DeconvDecoder(channels, skips, decoder_widths, 1)
        self.dcd_n = DeconvDecoder(channels, skips, decoder_widths, 3)
        grid = (max(1, math.ceil(image_size / 32)), max(1, math.ceil(image_size / 32)))
        self.fne = FeatureNormalityEstimator(channels, grid, fne_conv_channels, fne_hidden)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``images`` (B, 3, H, W) in [0, 1] -> dict: ``features`` F (B, C, h, w), ``mask_logits`` (B, 1, H, W),
        ``w_logits`` (B, C), ``reconstruction`` (B, 3, H, W) in (0, 1)."""
        size = (int(images.shape[2]), int(images.shape[3]))
        levels = self.encoder(images)
        feats = self.reduce(levels[-1])
        skips = list(reversed(levels[:-1]))
        mask_logits = self.dcd_a(feats, skips, size)
        mask = torch.sigmoid(mask_logits).detach()
        w_logits = self.fne(feats, mask)
        normal = torch.sigmoid(w_logits)[:, :, None, None].to(feats.dtype) * feats
        # DCD_N gets the encoder skips of its ``normal_skip_levels`` deepest levels (the paper: all 4); the
        # shallower ones are zeroed (an ablation knob for the investigation of defects copied through skips).
        normal_skips = [s if k < self.normal_skip_levels else torch.zeros_like(s) for k, s in enumerate(skips)]
        reconstruction = torch.sigmoid(self.dcd_n(normal, normal_skips, size))
        return {
            "features": feats,
            "mask_logits": mask_logits,
            "w_logits": w_logits,
            "reconstruction": reconstruction,
        }


def tsdn_losses(
    out: dict[str, torch.Tensor], clean: torch.Tensor, fill_mask: torch.Tensor, weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """The five losses of eq. 3 in float32 -> dict with ``r, s, g, m, fne`` and their weighted ``total``.

    ``clean`` (B, 3, H, W) the image before SURF; ``fill_mask`` (B, 1, H, W) 0/1 M_surf;
    ``weights`` = (lambda_r, lambda_s, lambda_g, lambda_m, lambda_f).
    """
    recon = out["reconstruction"].float()
    mask_pred = torch.sigmoid(out["mask_logits"].float())
    l_r = F.mse_loss(recon, clean)
    l_s = ssim_loss(recon, clean)
    l_g = gms_loss(recon, clean)
    l_m = F.mse_loss(mask_pred, fill_mask)
    w_gt = normality_target(out["features"].detach(), mask_pred.detach())
    l_f = F.binary_cross_entropy_with_logits(out["w_logits"].float(), w_gt)
    parts = {"r": l_r, "s": l_s, "g": l_g, "m": l_m, "fne": l_f}
    total = sum(w * parts[k] for w, k in zip(weights, ("r", "s", "g", "m", "fne")))
    parts["total"] = total
    return parts
