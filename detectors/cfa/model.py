"""CFA's networks and maths: multi-scale patch features, CoordConv descriptor, memory bank, loss, score.

Shapes: B images, backbone maps ``(B, C_i, H_i, W_i)``; the patch grid ``(h, w)`` is the first map's size,
``T = h * w`` patches per image, ``C = sum(C_i)`` concatenated channels, ``D`` descriptor channels
(``round(gamma_d * C)``), ``M`` memory-bank entries (``max(1, round(gamma_c * T))``).
Distances are in descriptor-feature units; ``squared_distances`` is the squared Euclidean distance.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def multiscale_patch_features(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Backbone maps -> (B, C, h, w): each map 3x3 average-pooled (stride 1, zero padding counted as in
    ``avg_pool2d`` with ``count_include_pad=True``), bilinearly upsampled to the first map's size, concatenated."""
    if not maps:
        raise ValueError("multiscale_patch_features: no feature maps")
    h, w = maps[0].shape[-2:]
    out = []
    for m in maps:
        pooled = F.avg_pool2d(m.float(), kernel_size=3, stride=1, padding=1)
        if pooled.shape[-2:] != (h, w):
            pooled = F.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=False)
        out.append(pooled)
    return torch.cat(out, dim=1)


def coordinate_channels(batch: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(B, 2, h, w): x and y coordinates of each cell, each in [-1, 1] (CoordConv's AddCoords, no r)."""
    ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype) if h > 1 else torch.zeros(1, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype) if w > 1 else torch.zeros(1, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy]).unsqueeze(0).expand(batch, 2, h, w)


class CoordConvDescriptor(nn.Module):
    """CFA's patch descriptor phi: a 1x1 CoordConv, (B, C, h, w) -> (B, D, h, w); He-initialised weights."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 2, out_channels, kernel_size=1)
        nn.init.kaiming_normal_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        coords = coordinate_channels(b, h, w, x.device, x.dtype)
        return self.conv(torch.cat([x, coords], dim=1))


def squared_distances(features: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(N, D) x (M, D) -> (N, M) squared Euclidean distances, computed in float32, clamped at 0."""
    f = features.float()
    c = bank.float()
    d = (f * f).sum(1, keepdim=True) + (c * c).sum(1).unsqueeze(0) - 2.0 * f @ c.T
    return d.clamp_min(0.0)


def coupled_hypersphere_loss(
    features: torch.Tensor,
    bank: torch.Tensor,
    r: torch.Tensor,
    k: int = 3,
    j: int = 3,
    alpha: float = 0.1,
    nu: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CFA's loss (paper eqs. 1-3) for patch features (N, D) against the fixed memory bank (M, D).

    With d_1 <= d_2 <= ... the squared distances of a feature to the bank: attraction
    ``L_att = (1/nu) mean_{t, k<=K} max(0, d_k - r^2)``; repulsion of the next J ("hard negatives")
    ``L_rep = (1/nu) mean_{t, K<j<=K+J} max(0, r^2 - d_j - alpha)``. The paper's 1/(TK), 1/(TJ) are these
    means; 1/nu is the official code's scale. ``r`` (a 1-element tensor, normally an ``nn.Parameter``)
    receives gradient from both terms. Returns (L_att + L_rep, L_att, L_rep).
    """
    m = bank.shape[0]
    if k < 1 or j < 0:
        raise ValueError(f"coupled_hypersphere_loss: need K >= 1 and J >= 0, got K={k}, J={j}")
    if k + j > m:
        raise ValueError(f"coupled_hypersphere_loss: K+J = {k + j} exceeds the memory bank size {m}")
    d = squared_distances(features, bank)
    nearest = torch.topk(d, k + j, dim=1, largest=False).values  # (N, K+J), ascending
    r2 = r.float().reshape(()) ** 2
    att = F.relu(nearest[:, :k] - r2).mean() / nu
    if j > 0:
        rep = F.relu(r2 - nearest[:, k : k + j] - alpha).mean() / nu
    else:
        rep = torch.zeros((), device=d.device)
    return att + rep, att, rep


def softmin_score(features: torch.Tensor, bank: torch.Tensor, k: int = 3) -> torch.Tensor:
    """CFA's patch score (eq. 5): with D_1 <= ... <= D_K the Euclidean distances to the K nearest bank
    entries, ``A = softmin(D_1..D_K)[1] * D_1 = exp(-D_1) / sum_k exp(-D_k) * D_1``. (N, D) -> (N,)."""
    k = min(k, bank.shape[0])
    dist = squared_distances(features, bank).sqrt()
    nearest = torch.topk(dist, k, dim=1, largest=False).values
    return F.softmin(nearest, dim=1)[:, 0] * nearest[:, 0]


def kmeans(points: torch.Tensor, n_clusters: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means of (N, D) points -> (n_clusters, D) centres, float32.

    Initialisation: k-means++ seeding drawn from ``generator`` (CPU); an emptied cluster keeps its centre.
    """
    x = points.float()
    n = x.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"kmeans: n_clusters must be in [1, {n}], got {n_clusters}")
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    closest = squared_distances(x, x[first : first + 1]).squeeze(1)
    for _ in range(1, n_clusters):
        probs = closest / closest.sum() if float(closest.sum()) > 0 else torch.full_like(closest, 1.0 / n)
        idx = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        centres.append(x[idx])
        closest = torch.minimum(closest, squared_distances(x, x[idx : idx + 1]).squeeze(1))
    c = torch.stack(centres)
    for _ in range(iterations):
        assign = squared_distances(x, c).argmin(dim=1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=n_clusters).to(x.dtype).unsqueeze(1)
        updated = torch.where(counts > 0, sums / counts.clamp_min(1.0), c)
        if torch.equal(updated, c):
            break
        c = updated
    return c


class MemoryBankBuilder:
    """Streams descriptor maps (B, D, h, w) of the training set into CFA's memory bank.

    Running mean over all training images of the (T, D) patch features (T = h*w positions), then, when
    ``gamma_c < 1``, k-means compression to ``max(1, round(gamma_c * T))`` centres. The bank's size depends on
    ``T``, ``D`` and ``gamma_c`` only, never on the number of training images.
    """

    def __init__(self) -> None:
        self._sum: torch.Tensor | None = None
        self._count = 0

    def add(self, descriptor_maps: torch.Tensor) -> None:
        b, d, h, w = descriptor_maps.shape
        flat = descriptor_maps.detach().float().permute(0, 2, 3, 1).reshape(b, h * w, d).sum(0)
        if self._sum is None:
            self._sum = flat.double()
        elif self._sum.shape != flat.shape:
            raise ValueError(f"memory bank: feature grid changed from {tuple(self._sum.shape)} to {tuple(flat.shape)}")
        else:
            self._sum += flat.double()
        self._count += b

    def build(self, gamma_c: float, kmeans_iterations: int, generator: torch.Generator) -> torch.Tensor:
        """The (M, D) float32 memory bank."""
        if self._sum is None or self._count == 0:
            raise ValueError("memory bank: no features were added")
        mean = (self._sum / self._count).float()
        t = mean.shape[0]
        m = max(1, int(round(gamma_c * t)))
        if m >= t:
            return mean
        return kmeans(mean, m, kmeans_iterations, generator)
