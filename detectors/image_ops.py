"""Image operations shared by the detectors.

``check_batch``: the one-line validation of a (B, 3, S, S) float batch in [0, 1] (clamped); ``gaussian_blur``:
separable Gaussian smoothing of (B, H, W) anomaly maps (sigma in pixels, kernel radius round(4 sigma) as
scipy's ``gaussian_filter``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from detectors.errors import ImageSetError
from detectors.imagesets import check_images

#: Tolerance on the [0, 1] range check of input images (float rounding of resized images).
RANGE_TOL = 1e-3


def check_batch(images: Any, *, image_size: int, method: str, where: str) -> torch.Tensor:
    """Check a (B, 3, S, S) float batch with values in [0, 1] (up to :data:`RANGE_TOL`), B >= 1, S =
    ``image_size``; returns it as float32 clamped to [0, 1]. ``method`` names the detector and ``where`` the
    batch (e.g. ``"cfa predict"``, ``"training images a.png.."``) in the error.

    Raises :class:`ImageSetError` with one line naming what is wrong (structure and dtype as
    :func:`detectors.imagesets.check_images`).
    """
    images = check_images(images, what=where)
    s = image_size
    if tuple(images.shape[2:]) != (s, s):
        raise ImageSetError(
            f"{where}: images are {images.shape[2]}x{images.shape[3]} px but this {method} detector uses "
            f"image_size {s}; resize the images (e.g. MVTecImageSet(..., image_size={s})) or tile them"
        )
    # on the CPU through NumPy, on one thread: torch's parallel reductions and clamp of a few hundred thousand
    # values cost more in OpenMP start-up and barrier waits than the arithmetic (a median of 54 ms per call
    # measured on the 2 shared cores at load average 9; 0.06 ms at best), a cost every predict pays, on
    # torch and on the exported runtimes; the same values and result either way
    array = images.numpy() if images.device.type == "cpu" and not images.requires_grad else None
    lo, hi = (float(array.min()), float(array.max())) if array is not None else (float(images.min()), float(images.max()))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
        raise ImageSetError(f"{where}: pixel values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return torch.from_numpy(np.clip(array, 0.0, 1.0)) if array is not None else images.clamp(0, 1)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1-D Gaussian kernel (2*ceil(truncate*sigma)+1,), like scipy.ndimage.gaussian_filter."""
    radius = max(int(truncate * sigma + 0.5), 1)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps; sigma in pixels; kernel radius round(truncate * sigma)
    like scipy (TSDN uses truncate 3).

    Borders use torch's "reflect" padding (scipy's "mirror" mode; the reference's scipy default, "reflect",
    repeats the edge pixel once more: a sub-pixel difference at the border only).
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma, truncate).to(device=maps.device, dtype=maps.dtype)
    r = kernel.numel() // 2
    x = maps.unsqueeze(1)
    _, _, h, w = x.shape
    # reflect padding needs pad < size; fall back to replicate for tiny maps.
    mode = "reflect" if r < min(h, w) else "replicate"
    x = F.pad(x, (r, r, 0, 0), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, r, r), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)
