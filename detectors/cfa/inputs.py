"""Input handling shared by the CFA and Glancing-at-the-Patch detectors.

``TrainImages``: uniform random access to a training set (an ImageSet / sequence of Samples, or a tensor
(N, 3, S, S)); ``check_batch``: the one-line validation of a (B, 3, S, S) float batch in [0, 1];
``gaussian_blur``: separable Gaussian smoothing of (B, H, W) maps (sigma in pixels).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from detectors.errors import ImageSetError

#: Tolerance on the [0, 1] range check of input images (float rounding of resized images).
RANGE_TOL = 1e-3


def _image_tensor(item: Any) -> torch.Tensor:
    image = getattr(item, "image", item)
    if not isinstance(image, torch.Tensor):
        image = torch.as_tensor(np.asarray(image))
    return image


class TrainImages:
    """Random access to training images: an ImageSet / sequence of Samples, or a (N, 3, S, S) tensor."""

    def __init__(self, data: Any, role: str, method: str) -> None:
        if data is None:
            raise ImageSetError(f"{method}: {role} set is None")
        try:
            n = len(data)
        except TypeError:
            raise ImageSetError(f"{method}: {role} set of type {type(data).__name__} has no length") from None
        if n == 0:
            raise ImageSetError(f"{method}: {role} set is empty: at least one good image is needed")
        self.data = data
        self.role = role
        self.n = n

    def __len__(self) -> int:
        return self.n

    def source(self, i: int) -> str:
        """Where image ``i`` came from (its path / id), for error messages."""
        return str(getattr(self.data[i], "source", f"{self.role}[{i}]"))

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Images ``indices`` stacked as (b, 3, S, S) (not yet validated)."""
        if isinstance(self.data, torch.Tensor):
            return self.data[list(indices)]
        return torch.stack([_image_tensor(self.data[i]) for i in indices])

    def chunks(self, batch_size: int) -> list[list[int]]:
        """Consecutive index lists of at most ``batch_size``."""
        return [list(range(s, min(self.n, s + batch_size))) for s in range(0, self.n, batch_size)]


def check_batch(images: Any, image_size: int, method: str, where: str) -> torch.Tensor:
    """Check a (B, 3, S, S) float batch with values in [0, 1], S = ``image_size``; returns float32.

    Raises :class:`ImageSetError` with one line naming what is wrong.
    """
    if not isinstance(images, torch.Tensor):
        raise ImageSetError(f"{where}: expected a torch tensor (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ImageSetError(f"{where}: expected shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ImageSetError(f"{where}: expected 3 channels (RGB), got {images.shape[1]}")
    s = image_size
    if tuple(images.shape[2:]) != (s, s):
        raise ImageSetError(
            f"{where}: images are {images.shape[2]}x{images.shape[3]} px but this {method} detector uses "
            f"image_size {s}; resize the images (e.g. MVTecImageSet(..., image_size={s})) or tile them"
        )
    if not images.is_floating_point():
        raise ImageSetError(f"{where}: expected float images in [0, 1], got dtype {images.dtype}")
    if images.numel():
        lo, hi = float(images.min()), float(images.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
            raise ImageSetError(f"{where}: pixel values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return images.float()


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian kernel of radius ``round(4 sigma)`` (scipy's truncate=4), float32."""
    radius = max(1, int(4.0 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).float()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps with reflect padding; ``sigma`` in pixels (0 = none)."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma).to(device=maps.device, dtype=maps.dtype)
    r = kernel.numel() // 2
    x = maps.unsqueeze(1)
    _, _, h, w = x.shape
    mode = "reflect" if r < min(h, w) else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), kernel.view(1, 1, -1, 1))
    return x.squeeze(1)
