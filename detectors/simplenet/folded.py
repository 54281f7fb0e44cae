"""SimpleNet's scoring head with its linear steps folded together: what ``predict`` (and every export) runs.

From the backbone maps to the patch scores, SimpleNet's scoring is linear up to the discriminator's
LeakyReLU: the local aggregation (3 x 3 unfold, bilinear upsampling of coarser layers, two adaptive average
poolings), the optional standardisation, the adaptor (Linear), the discriminator's first Linear and its
BatchNorm (eval mode: a per-channel affine map). :class:`FoldedHead` computes the same function without the
materialised copies (unfold, permute, adaptive pooling of 1,024 x 1,368 unfolded values, bilinear upsampling
of 1,008 unfolded channels) that took most of the exported graph's time (benchmarks/profile_export.py):

    for each layer l (B, C_l, h_l, w_l):  y_l = conv_kxk(f_l, K_l)       (B, n_l, h_l, w_l)
                                          y_l -> bilinear to (h, w)     (coarser layers; commutes with K_l)
    x = concat_l y_l  (B, D, h, w)        the aggregated features, exactly FeatureAggregator's
    pre = conv1x1(x, G) + c               G, c: standardisation, adaptor, Linear, BatchNorm folded (H x D)
    patch score = -tail(LeakyReLU_0.2(pre))  -> (B, h, w)
    map = A_h @ patch @ A_w.T  (B, S, S)    A = gaussian blur @ bilinear upsampling (S x h), per axis

``K_l`` (n_l, C_l, k, k) holds the two poolings of layer l's unfolded k x k neighbourhood restricted to the
n_l output dimensions that layer feeds (a contiguous block of the ``target_dim`` dimensions; when blocks of
two layers overlap, which other ``pretrain_dim`` / ``target_dim`` ratios give, they are zero-padded to D and
summed instead of concatenated). The bilinear upsampling of a coarse layer's block and the map's upsampling
and blur are matrix products with operators built from torch's own ``F.interpolate`` and the shared
``gaussian_blur`` applied to identity matrices in float64 (ONNX Runtime ran the 1-D blur convolution and
``Resize`` slowly: about 15 % of the graph's time). Folded matrices are computed in float64 and stored in float32. The result
equals the step-by-step computation up to float32 rounding (checked by tests/detectors/test_simplenet.py).
Multiply-adds per image at the shipped config (Lite0 layers 2+3 = 40 and 112 channels, 256 px: a 32 x 32
grid, D = 384, H = 1024): aggregation 0.12 G (dense convolutions with the pooling weights), the folded
projection 1024 x 384 x 1024 = 0.40 G, the tail 1 M; step by step it was adaptor 0.15 G + discriminator
0.40 G plus the copies. The 0.40 G projection is the method's arithmetic (hidden width 1024 over 1,024
patches) and the floor of the head's cost.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detectors.patch_features import FeatureAggregator
from detectors.simplenet.model import Adaptor, Discriminator


def _pool_matrix(n: int, m: int) -> torch.Tensor:
    """(n, m) float64 matrix A with ``x @ A == adaptive_avg_pool1d(x, m)`` for x (..., n)."""
    eye = torch.eye(n, dtype=torch.float64).unsqueeze(1)  # (n, 1, n): row i is e_i
    return F.adaptive_avg_pool1d(eye, m).squeeze(1)


def aggregation_matrices(aggregator: FeatureAggregator) -> list[torch.Tensor]:
    """Per layer l the (C_l * k * k, target_dim) float64 matrix of the aggregation: the aggregated feature of a
    patch is ``sum_l unfold_l @ M_l`` (``unfold_l``: layer l's k x k neighbourhood, channel-major as
    ``F.unfold`` orders it, upsampled to the finest grid)."""
    p, d = aggregator.pretrain_dim, aggregator.target_dim
    k2 = aggregator.patch_size ** 2
    target = _pool_matrix(len(aggregator.in_channels) * p, d)  # (L*P, D)
    return [_pool_matrix(c * k2, p) @ target[i * p : (i + 1) * p] for i, c in enumerate(aggregator.in_channels)]


def interpolation_matrix(n: int, m: int) -> torch.Tensor:
    """(m, n) float64 matrix U with ``U @ x`` = the bilinear (``align_corners=False``) resampling of x (n, ...)
    to m along its first axis: torch's own ``F.interpolate`` applied to the identity."""
    eye = torch.eye(n, dtype=torch.float64).unsqueeze(0)  # (1, n, n): channel j is e_j
    return F.interpolate(eye, size=m, mode="linear", align_corners=False)[0].T


def blur_matrix(s: int, sigma: float) -> torch.Tensor:
    """(s, s) float64 matrix B with ``B @ x @ B.T`` = :func:`detectors.image_ops.gaussian_blur` of an s x s
    map x (the same kernel, radius and border mode): the helper itself applied to column basis images."""
    from detectors.image_ops import gaussian_blur, gaussian_kernel1d

    if sigma <= 0:
        return torch.eye(s, dtype=torch.float64)
    width = gaussian_kernel1d(sigma).numel() // 2 + 1  # > radius: the border mode of an s x s map
    basis = torch.eye(s, dtype=torch.float64)[:, :, None].expand(s, s, width).contiguous()  # image j: e_j per column
    return gaussian_blur(basis, sigma)[:, :, 0].T  # constant rows stay constant along the second axis


class FoldedHead(nn.Module):
    """Backbone maps -> SimpleNet patch scores, folded (see module docstring). No trainable parameters: it is
    rebuilt from the fitted modules whenever they change (end of fit, load).

    ``forward(maps)``: L tensors (B, C_l, h_l, w_l), the first the finest -> patch scores (B, h, w) float32
    (higher = more anomalous: ``-discriminator(adaptor(features))``).
    """

    def __init__(
        self,
        aggregator: FeatureAggregator,
        adaptor: Adaptor,
        discriminator: Discriminator,
        norm: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        *,
        grids: Sequence[tuple[int, int]],
        image_size: int,
        blur_sigma: float,
    ) -> None:
        super().__init__()
        linear, bn, act = discriminator.body
        if not (isinstance(linear, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and isinstance(act, nn.LeakyReLU)):
            raise TypeError("FoldedHead expects the discriminator Linear - BatchNorm1d - LeakyReLU")
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError("FoldedHead needs the discriminator's BatchNorm running statistics")
        device = adaptor.linear.weight.device
        f64 = dict(dtype=torch.float64, device="cpu")
        d = aggregator.target_dim
        # downstream of the aggregated feature x (D,): pre = ((x - mean) / std) @ G + c  -> (hidden,)
        wa, ba = adaptor.linear.weight.detach().to(**f64), adaptor.linear.bias.detach().to(**f64)
        w1 = linear.weight.detach().to(**f64)
        b1 = linear.bias.detach().to(**f64) if linear.bias is not None else torch.zeros(w1.shape[0], **f64)
        scale = (bn.weight.detach().to(**f64) if bn.weight is not None else 1.0) / torch.sqrt(
            bn.running_var.detach().to(**f64) + bn.eps)
        shift = bn.bias.detach().to(**f64) if bn.bias is not None else torch.zeros_like(b1)
        g = wa.T @ w1.T * scale  # (D, H)
        c = ((ba @ w1.T + b1) - bn.running_mean.detach().to(**f64)) * scale + shift  # (H,)
        if norm is not None:
            mean, std = (t.detach().to(**f64).reshape(d) for t in norm)
            c = c - (mean / std) @ g
            g = g / std[:, None]
        self.patch_size = aggregator.patch_size
        self.target_dim = d
        self.negative_slope = float(act.negative_slope)
        self._ranges: list[tuple[int, int]] = []
        k = self.patch_size
        for i, (matrix, channels) in enumerate(zip(aggregation_matrices(aggregator), aggregator.in_channels)):
            used = torch.nonzero(matrix.abs().sum(0) > 0).flatten()
            lo, hi = (int(used[0]), int(used[-1]) + 1) if used.numel() else (0, 1)
            kernel = matrix[:, lo:hi].T.reshape(hi - lo, channels, k, k)
            self.register_buffer(f"aggregate{i}", kernel.to(device=device, dtype=torch.float32))
            self._ranges.append((lo, hi))
        # the layers' blocks tile [0, D) in order (the usual case): concatenate them, else pad each and sum
        self._tiled = all(r[1] == n[0] for r, n in zip(self._ranges, self._ranges[1:])) and \
            self._ranges[0][0] == 0 and self._ranges[-1][1] == d
        # bilinear upsampling of the coarser layers' blocks and of the patch map (to S x S, then the blur)
        # as matrices: U_h @ y @ U_w.T (one matrix product per axis instead of Resize / Pad / 1-D Conv ops)
        if len(grids) != len(self._ranges):
            raise ValueError(f"expected {len(self._ranges)} grids, got {len(grids)}")
        h, w = (int(v) for v in grids[0])
        self.grid = (h, w)
        for i, (hl, wl) in enumerate(grids):
            if (int(hl), int(wl)) != (h, w):
                self.register_buffer(f"up_h{i}", interpolation_matrix(int(hl), h).to(device=device, dtype=torch.float32))
                self.register_buffer(f"up_w{i}", interpolation_matrix(int(wl), w).T.contiguous().to(device=device, dtype=torch.float32))
        blur = blur_matrix(int(image_size), float(blur_sigma))
        self.register_buffer("map_h", (blur @ interpolation_matrix(h, int(image_size))).to(device=device, dtype=torch.float32))
        self.register_buffer("map_w", (blur @ interpolation_matrix(w, int(image_size))).T.contiguous().to(device=device, dtype=torch.float32))
        self.register_buffer("project", g.T.reshape(-1, d, 1, 1).to(device=device, dtype=torch.float32))
        self.register_buffer("bias", c.to(device=device, dtype=torch.float32))
        tail = discriminator.tail.weight.detach().to(**f64)  # (1, H)
        self.register_buffer("tail", (-tail).reshape(1, -1, 1, 1).to(device=device, dtype=torch.float32))

    def aggregate(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """L maps (B, C_l, h_l, w_l) -> the aggregated features (B, D, h, w) float32, channels first: what
        :class:`~detectors.patch_features.FeatureAggregator` computes (before the standardisation)."""
        if len(maps) != len(self._ranges):
            raise ValueError(f"expected {len(self._ranges)} feature maps, got {len(maps)}")
        h, w = int(maps[0].shape[2]), int(maps[0].shape[3])
        blocks = []
        for i, (feat, (lo, hi)) in enumerate(zip(maps, self._ranges)):
            y = F.conv2d(feat.float(), getattr(self, f"aggregate{i}"), padding=self.patch_size // 2)
            if y.shape[-2:] != (h, w):  # on the n_l aggregated channels instead of C_l * k * k unfolded ones
                y = torch.matmul(torch.matmul(getattr(self, f"up_h{i}"), y), getattr(self, f"up_w{i}"))
            blocks.append(y if self._tiled else F.pad(y, (0, 0, 0, 0, lo, self.target_dim - hi)))
        if self._tiled:
            return torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]
        out = blocks[0]
        for block in blocks[1:]:
            out = out + block
        return out

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.aggregate(maps)  # (B, D, h, w)
        hidden = F.leaky_relu(F.conv2d(x, self.project, self.bias), self.negative_slope)  # (B, H, h, w)
        return F.conv2d(hidden, self.tail).squeeze(1)  # (B, h, w)

    def anomaly_map(self, patch: torch.Tensor) -> torch.Tensor:
        """Patch scores (B, h, w) -> the map (B, S, S): bilinear upsampling to S x S (``align_corners=False``)
        followed by the Gaussian blur of :func:`detectors.image_ops.gaussian_blur`, as ``A_h @ patch @ A_w``
        (A = blur @ upsampling, per axis; equal up to float32 rounding)."""
        return torch.matmul(torch.matmul(self.map_h, patch), self.map_w)
