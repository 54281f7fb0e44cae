"""SimpleNet's networks: feature aggregator, adaptor, anomalous feature generator, discriminator, loss.

SimpleNet (Liu et al., CVPR 2023) scores image patches with a small discriminator trained to separate
adapted backbone features of good images from the same features plus Gaussian noise. The pieces here are
plain ``torch.nn`` modules and functions; the training loop and the Detector glue live in
:mod:`detectors.simplenet.detector`.

Shapes: B images, L backbone layers, h x w the patch grid of the first (finest) layer, N = B*h*w patch
features, D the feature dimension (``target_dim``).
"""
from __future__ import annotations

import torch
from torch import nn

from detectors.patch_features import FeatureAggregator  # noqa: F401  (shared with PatchCore; re-exported)


def _xavier_init(module: nn.Module) -> None:
    """Xavier-normal init of every Linear weight (the reference code's choice); biases keep torch defaults."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)


class Adaptor(nn.Module):
    """Feature adaptor: one Linear D -> D, no activation. (N, D) -> (N, D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        _xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class Discriminator(nn.Module):
    """Linear(D, hidden) - BatchNorm1d - LeakyReLU(0.2) - Linear(hidden, 1, no bias). (N, D) -> (N,).

    Output > 0 means "normal"; the anomaly score of a patch is ``-D(feature)``.
    """

    def __init__(self, dim: int, hidden: int = 1024) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(0.2),
        )
        self.tail = nn.Linear(hidden, 1, bias=False)
        _xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(x)).squeeze(-1)


class AnomalousFeatureGenerator:
    """Adds i.i.d. Gaussian noise N(0, std^2) to every feature (no mask), drawn from ``generator``."""

    def __init__(self, std: float, generator: torch.Generator) -> None:
        if std <= 0:
            raise ValueError(f"noise std must be > 0, got {std}")
        self.std = float(std)
        self.generator = generator

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D) features + noise (same dtype and device as the generator's draws allow)."""
        noise = torch.randn(
            features.shape, generator=self.generator, device=self.generator.device, dtype=torch.float32
        )
        return features + (noise * self.std).to(device=features.device, dtype=features.dtype)


def truncated_l1_loss(
    normal_scores: torch.Tensor, anomalous_scores: torch.Tensor, margin: float = 0.5
) -> torch.Tensor:
    """SimpleNet's truncated L1 loss (scalar).

    ``mean(relu(margin - D(normal))) + mean(relu(margin + D(anomalous)))``: normal features are pushed
    above +margin, anomalous ones below -margin; the reference code uses the same margin (th = 0.5) for both.
    """
    normal_term = torch.clamp(margin - normal_scores.float(), min=0).mean()
    anomalous_term = torch.clamp(margin + anomalous_scores.float(), min=0).mean()
    return normal_term + anomalous_term
