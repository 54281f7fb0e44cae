"""Superpixel random filling (SURF, TSDN paper section 2.2): the fake anomalies TSDN trains on.

An image is split into about ``n_segments`` SLIC superpixels; ``n_filled`` of them, chosen at random, are
painted with one random colour each. The result is the distorted image ``I_surf`` and the binary mask
``M_surf`` of the painted pixels.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from detectors.errors import DetectorConfigError


def slic_labels(image: np.ndarray, n_segments: int, compactness: float = 10.0) -> np.ndarray:
    """SLIC superpixels of ``image`` (H, W, 3) float in [0, 1] -> labels (H, W) int, 0..L-1 (L ~ n_segments)."""
    from skimage.segmentation import slic

    labels = slic(image, n_segments=int(n_segments), compactness=compactness, start_label=0, channel_axis=-1)
    return np.asarray(labels, dtype=np.int64)


def superpixel_random_fill(
    image: torch.Tensor,
    n_segments: int,
    n_filled: int,
    rng: np.random.Generator,
    compactness: float = 10.0,
    labels: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SURF on one image ``(3, H, W)`` float in [0, 1] -> (``I_surf`` (3, H, W) float32, ``M_surf`` (H, W) bool).

    Exactly ``min(n_filled, L)`` of the L superpixels are filled, each with its own uniform random RGB colour;
    the mask is True exactly on their pixels. ``rng`` drives every random choice. ``labels``: the image's
    SLIC labels (H, W) when already computed (SLIC is deterministic, so a training loop computes them once
    per image with :class:`SuperpixelCache`); None computes them here.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise DetectorConfigError(f"SURF: expected an image of shape (3, H, W), got {tuple(image.shape)}")
    if n_segments < 1 or n_filled < 0:
        raise DetectorConfigError(f"SURF: need n_segments >= 1 and n_filled >= 0, got {n_segments}, {n_filled}")
    array = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    if labels is None:
        labels = slic_labels(array, n_segments, compactness)
    elif labels.shape != array.shape[:2]:
        raise DetectorConfigError(f"SURF: labels of shape {labels.shape} for an image of {array.shape[:2]}")
    n_labels = int(labels.max()) + 1
    chosen = rng.choice(n_labels, size=min(int(n_filled), n_labels), replace=False)
    colours = rng.uniform(0.0, 1.0, size=(len(chosen), 3)).astype(np.float32)
    # lookup table label -> colour index (-1 = keep)
    lut = np.full(n_labels, -1, dtype=np.int64)
    lut[chosen] = np.arange(len(chosen))
    which = lut[labels]
    mask = which >= 0
    out = array.astype(np.float32).copy()
    out[mask] = colours[which[mask]]
    return torch.from_numpy(out).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)


def surf_batch(
    images: torch.Tensor,
    n_segments: int,
    n_filled: int,
    rng: np.random.Generator,
    probability: float = 1.0,
    labels: Sequence[np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SURF on a batch ``(B, 3, H, W)`` -> (images (B, 3, H, W), masks (B, 1, H, W) float32 0/1).

    Each image is distorted with ``probability``; the others stay clean with an all-zero mask.
    ``labels``: B precomputed SLIC label maps (H, W), or None to compute them.
    """
    outs, masks = [], []
    for k, image in enumerate(images):
        if rng.uniform() < probability:
            filled, mask = superpixel_random_fill(
                image, n_segments, n_filled, rng, labels=None if labels is None else labels[k]
            )
        else:
            filled, mask = image.detach().float().cpu().clone(), torch.zeros(image.shape[1:], dtype=torch.bool)
        outs.append(filled)
        masks.append(mask)
    return torch.stack(outs), torch.stack(masks).unsqueeze(1).float()


class SuperpixelCache:
    """SLIC labels of the training images, computed once (SLIC is deterministic, so every step reuses them).

    ``images``: (N, 3, H, W) float in [0, 1]. :meth:`fill` computes all label maps in a thread pool
    (scikit-image's SLIC runs its loops without the GIL); :meth:`labels` returns those of some images.
    Memory: N x H x W x 2 bytes (209 images at 352 px: 52 MB).
    """

    def __init__(self, images: torch.Tensor, n_segments: int, compactness: float = 10.0, workers: int = 0) -> None:
        self.images = images
        self.n_segments = int(n_segments)
        self.compactness = float(compactness)
        self.workers = int(workers) if workers > 0 else max(1, min(8, (os.cpu_count() or 1)))
        self._labels: list[np.ndarray] | None = None

    def _compute(self, index: int) -> np.ndarray:
        array = self.images[index].detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
        labels = slic_labels(array, self.n_segments, self.compactness)
        return labels.astype(np.int16 if labels.max() < 2**15 else np.int32)

    def fill(self) -> None:
        """Compute the label maps of every image (once)."""
        if self._labels is None:
            with ThreadPoolExecutor(self.workers) as pool:
                self._labels = list(pool.map(self._compute, range(int(self.images.shape[0]))))

    def labels(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Label maps (H, W) of ``indices``, in order."""
        self.fill()
        return [self._labels[int(i)] for i in indices]
