"""SLSG stage 2, SegNet: pre-trained encoder + SG block + U-Net decoder -> 2-class anomaly segmentation.

SG block on the deepest encoder map X (B, C, h, w), N = h*w nodes:
    dense:  W_d = softmax(f(X) g(X)^T / sqrt(d)),  Z = W_d h(X)                         (B, C, h, w)
    sparse: W_s = cos(f(X), g(X)) - cos(P, P)   (P = 2-D sine-cosine position code)    (B, N, N)
            graph: the top-K (9) nodes of each row of W_s;  V''_i = max_j (X_j - X_i)  (B, C, h, w)
    X' = u([Z, V''])  (1x1 convolution)                                                (B, C, h, w)
The decoder takes X' as input and, through skips from the bottleneck, in every block. An auxiliary head
segments from X' directly. Output: 2-class logits (B, 2, S, S); the anomaly map is softmax class 1.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detectors.backbones import FeatureExtractor
from detectors.slsg.gptnet import UNetDecoder, make_trainable


def sincos_position_encoding(h: int, w: int, dim: int) -> torch.Tensor:
    """2-D sine-cosine position code (N = h*w, dim): dim/2 channels encode the row, dim/2 the column."""
    if dim % 4 != 0:
        raise ValueError(f"position code dimension must be a multiple of 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    out_y = ys.reshape(-1, 1) * omega[None]
    out_x = xs.reshape(-1, 1) * omega[None]
    return torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()], dim=1)


def positional_similarity(h: int, w: int, dim: int) -> torch.Tensor:
    """W_p = CosSim(P, P^T) (N, N) for an h x w grid (eq. 4); 1 on the diagonal, high for nearby nodes."""
    p = F.normalize(sincos_position_encoding(h, w, dim), dim=1)
    return p @ p.T


def graph_neighbours(query: torch.Tensor, key: torch.Tensor, positional: torch.Tensor | None, k: int) -> torch.Tensor:
    """Edges of the SG graph: for each node the indices of its top-``k`` nodes by W_s (eq. 5).

    ``query``, ``key`` (B, N, d) = f(X), g(X) as node vectors; ``positional`` (N, N) = W_p, or None to keep
    the positional similarity (ablation). Returns (B, N, k) int64.
    """
    semantic = F.normalize(query.float(), dim=2) @ F.normalize(key.float(), dim=2).transpose(1, 2)
    if positional is not None:
        semantic = semantic - positional.to(semantic.device)[None]
    return semantic.topk(min(k, semantic.shape[-1]), dim=-1).indices


def max_relative(x: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Max-relative graph convolution (eq. 6): ``x`` (B, N, C), ``neighbours`` (B, N, K) -> (B, N, C)
    with out_i = max_j (x_j - x_i) over the K neighbours j of node i."""
    b, n, c = x.shape
    k = neighbours.shape[-1]
    gathered = torch.gather(x, 1, neighbours.reshape(b, n * k, 1).expand(-1, -1, c)).reshape(b, n, k, c)
    return (gathered - x[:, :, None, :]).amax(dim=2)


class SGBlock(nn.Module):
    """Self-attention-based graph convolution block (section 3.3); keeps the shape (B, C, h, w)."""

    def __init__(self, channels: int, reduction: int = 8, top_k: int = 9, position_dim: int = 64,
                 subtract_position: bool = True) -> None:
        super().__init__()
        inner = max(1, channels // reduction)
        self.f = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.h = nn.Conv2d(channels, channels, 1)
        self.u = nn.Conv2d(2 * channels, channels, 1)
        self.top_k = top_k
        self.position_dim = position_dim
        self.subtract_position = subtract_position
        self.inner = inner
        self._positional: dict[tuple[int, int], torch.Tensor] = {}

    def _wp(self, h: int, w: int) -> torch.Tensor:
        if (h, w) not in self._positional:
            self._positional[(h, w)] = positional_similarity(h, w, self.position_dim)
        return self._positional[(h, w)]

    def neighbours(self, x: torch.Tensor) -> torch.Tensor:
        """Graph edges (B, N, K) of the feature map ``x`` (B, C, h, w)."""
        q = self.f(x).flatten(2).transpose(1, 2)
        kk = self.g(x).flatten(2).transpose(1, 2)
        wp = self._wp(x.shape[2], x.shape[3]) if self.subtract_position else None
        return graph_neighbours(q, kk, wp, self.top_k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C, h, w) -> X' (B, C, h, w)."""
        b, c, hh, ww = x.shape
        q = self.f(x).flatten(2).transpose(1, 2)  # (B, N, d)
        kk = self.g(x).flatten(2).transpose(1, 2)
        v = self.h(x).flatten(2).transpose(1, 2)  # (B, N, C)
        attention = torch.softmax(q.float() @ kk.float().transpose(1, 2) / math.sqrt(self.inner), dim=-1)
        z = (attention @ v.float()).transpose(1, 2).reshape(b, c, hh, ww)
        wp = self._wp(hh, ww) if self.subtract_position else None
        edges = graph_neighbours(q, kk, wp, self.top_k)
        nodes = x.float().flatten(2).transpose(1, 2)
        v2 = max_relative(nodes, edges).transpose(1, 2).reshape(b, c, hh, ww)
        return self.u(torch.cat([z, v2], dim=1).to(x.dtype))


class SegNet(nn.Module):
    """Encoder (from GPT-Net; frozen or fine-tuned) + SG block + U-Net decoder with bottleneck skips + aux head."""

    def __init__(self, encoder: FeatureExtractor, widths: Sequence[int], train_encoder: bool = False,
                 top_k: int = 9, reduction: int = 8, position_dim: int = 64, subtract_position: bool = True) -> None:
        super().__init__()
        self.encoder = make_trainable(encoder, train_encoder)
        c5 = encoder.channels[-1]
        self.sg = SGBlock(c5, reduction, top_k, position_dim, subtract_position)
        self.decoder = UNetDecoder(c5, list(reversed(encoder.channels[:-1])), widths, 2, extra_channels=c5)
        self.aux = nn.Conv2d(c5, 2, 1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) in [0, 1] -> (logits (B, 2, S, S), auxiliary logits (B, 2, S, S))."""
        size = (int(images.shape[2]), int(images.shape[3]))
        levels = self.encoder(images)
        x = self.sg(levels[-1])
        logits = self.decoder(x, list(reversed(levels[:-1])), size, extra=x)
        aux = F.interpolate(self.aux(x), size=size, mode="bilinear", align_corners=False)
        return logits, aux


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """Focal loss of 2-class logits (B, 2, S, S) vs a 0/1 target (B, S, S): mean -(1 - p_t)^gamma log p_t."""
    log_p = F.log_softmax(logits.float(), dim=1)
    log_pt = log_p.gather(1, target.long().unsqueeze(1)).squeeze(1)
    return (-(1 - log_pt.exp()) ** gamma * log_pt).mean()


def segnet_loss(logits: torch.Tensor, aux: torch.Tensor, target: torch.Tensor, gamma: float,
                weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Eq. 11: 0.4 focal + 0.6 l1(p_anomalous, mask) + 0.3 focal(aux) -> dict with parts and ``total``."""
    prob = torch.softmax(logits.float(), dim=1)[:, 1]
    parts = {
        "focal": focal_loss(logits, target, gamma),
        "l1": F.l1_loss(prob, target.float()),
        "aux": focal_loss(aux, target, gamma),
    }
    parts["total"] = weights[0] * parts["focal"] + weights[1] * parts["l1"] + weights[2] * parts["aux"]
    return parts


def top_k_mean(maps: torch.Tensor, k: int = 100) -> torch.Tensor:
    """Image score: mean of the ``k`` highest pixels of each map (B, H, W) -> (B,) (all pixels if fewer)."""
    flat = maps.flatten(1).float()
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)
