"""Small synthetic anomaly-detection images for tests and quick demos (not a training augmentation).

:func:`textured_images` draws a regular woven-like texture (two crossing sinusoid families, a colour tint)
plus pixel noise; every image of a set shares the texture, so a detector can learn "normal".
:func:`add_defect` paints a bright blob, a dark patch or a thin scratch and returns its exact mask.
:func:`synthetic_imageset` combines both into an :class:`InMemoryImageSet` with labels and masks.
All randomness flows from ``seed``.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from detectors.errors import DetectorConfigError
from detectors.imagesets import InMemoryImageSet

DefectKind = Literal["blob", "patch", "scratch"]
DEFECT_KINDS = ("blob", "patch", "scratch")


def textured_images(n: int, size: int = 64, seed: int = 0, noise: float = 0.02, period_px: float = 8.0) -> torch.Tensor:
    """``n`` images (n, 3, size, size) float32 in [0, 1] of one woven texture with independent pixel noise.

    ``noise``: standard deviation of the Gaussian pixel noise; ``period_px``: texture period in pixels.
    """
    if n < 0 or size < 4:
        raise DetectorConfigError(f"textured_images: need n >= 0 and size >= 4, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    k = 2.0 * np.pi / period_px
    weave = 0.5 + 0.25 * np.sin(k * xx) * np.sign(np.sin(k * yy / 2.0)) + 0.15 * np.cos(k * yy)
    tint = np.array([0.95, 0.85, 0.7])[:, None, None]
    base = np.clip(weave[None] * tint, 0.05, 0.95)
    images = base[None] + rng.normal(0.0, noise, size=(n, 3, size, size))
    return torch.from_numpy(np.clip(images, 0.0, 1.0).astype(np.float32))


def add_defect(
    image: torch.Tensor, kind: DefectKind = "blob", seed: int = 0, scale: float = 0.15
) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of ``image`` (3, H, W) with one defect -> (image (3, H, W), mask (H, W) bool).

    ``kind``: "blob" (bright disc), "patch" (dark square), "scratch" (thin bright line). ``scale``: defect
    size as a fraction of the shorter image side. The defect lies fully inside the image.
    """
    if kind not in DEFECT_KINDS:
        raise DetectorConfigError(f"defect kind '{kind}' unknown; choose one of {', '.join(DEFECT_KINDS)}")
    _, height, width = image.shape
    rng = np.random.default_rng(seed)
    radius = max(2, int(round(scale * min(height, width) / 2)))
    cy = int(rng.integers(radius, height - radius))
    cx = int(rng.integers(radius, width - radius))
    yy, xx = np.mgrid[0:height, 0:width]
    if kind == "blob":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        value = np.array([1.0, 1.0, 0.95])
    elif kind == "patch":
        mask = (np.abs(yy - cy) <= radius) & (np.abs(xx - cx) <= radius)
        value = np.array([0.05, 0.05, 0.1])
    else:
        angle = rng.uniform(0, np.pi)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        mask = (np.abs(along) <= 2 * radius) & (np.abs(across) <= 1.0)
        mask &= (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
        value = np.array([1.0, 1.0, 1.0])
    out = image.clone()
    mask_t = torch.from_numpy(mask)
    for c in range(3):
        out[c][mask_t] = float(value[c])
    return out, mask_t


def synthetic_imageset(
    n_good: int, n_defective: int = 0, size: int = 64, seed: int = 0, kind: DefectKind = "blob"
) -> InMemoryImageSet:
    """An image set of ``n_good`` clean and ``n_defective`` defective textured images (labels, masks, types)."""
    images = textured_images(n_good + n_defective, size=size, seed=seed)
    masks: list[torch.Tensor] = [torch.zeros(size, size, dtype=torch.bool) for _ in range(n_good)]
    defective = []
    for j in range(n_defective):
        img, mask = add_defect(images[n_good + j], kind=kind, seed=seed * 1000 + j)
        defective.append(img)
        masks.append(mask)
    all_images = list(images[:n_good]) + defective
    labels = [0] * n_good + [1] * n_defective
    return InMemoryImageSet(
        all_images,
        masks=masks,
        labels=labels,
        sources=[f"synthetic:{seed}:{i}" for i in range(n_good + n_defective)],
        defect_types=["good"] * n_good + [kind] * n_defective,
    )
