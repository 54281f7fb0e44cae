"""Input handling shared by the CFA and Glancing-at-the-Patch detectors.

``TrainImages``: uniform random access to a training set (an ImageSet / sequence of Samples, or a tensor
(N, 3, S, S)). ``check_batch`` and ``gaussian_blur`` come from :mod:`detectors.image_ops`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from detectors.errors import ImageSetError
from detectors.image_ops import RANGE_TOL, check_batch, gaussian_blur, gaussian_kernel1d  # noqa: F401 - shared



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
