"""Access to a detector's training (or validation) images, whatever form they come in.

A training set is an ImageSet, a sequence of Samples (anything with ``.image`` (3, S, S) and optionally
``.source``), or a (N, 3, S, S) tensor. :class:`TrainImages` reads images on demand (CFA, Glancing at the
Patch: features are computed batch by batch); :class:`StackedTrainImages` checks them all once and holds them
in memory as one tensor (TSDN, SLSG: random batches every step, a digest for resumable checkpoints).
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import torch

from detectors.errors import ImageSetError
from detectors.image_ops import check_batch
from detectors.imagesets import ImageSet


def _image_tensor(item: Any) -> torch.Tensor:
    image = getattr(item, "image", item)
    if not isinstance(image, torch.Tensor):
        image = torch.as_tensor(np.asarray(image))
    return image


class TrainImages:
    """Random access to training images, read on demand. ``method`` (the detector's name) and ``role``
    ("training", "validation") name the set in errors; a missing, length-less or empty set is an
    ImageSetError. With ``image_size``, :meth:`batch` refuses an image that is not (3, image_size,
    image_size), naming its source. Arguments after ``data`` are keyword-only, as for every sibling
    (:class:`StackedTrainImages`, :func:`detectors.image_ops.check_batch`)."""

    def __init__(self, data: Any, *, method: str, role: str, image_size: int | None = None) -> None:
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
        self.method = method
        self.image_size = image_size
        self.n = n
        self._sources: list[str] | None = None  # an ImageSet's source names, on first use

    def __len__(self) -> int:
        return self.n

    def source(self, i: int) -> str:
        """Where image ``i`` came from (its path / id), for error messages. An :class:`ImageSet` is named
        from its samples' metadata (listed once, on the first call), without loading any pixels; a tensor
        by position; another sequence by its item's ``source`` (items of a plain list are in memory)."""
        if isinstance(self.data, torch.Tensor):
            return f"{self.role}[{i}]"
        if isinstance(self.data, ImageSet):
            if self._sources is None:
                self._sources = self.data.sources
            return self._sources[i]
        return str(getattr(self.data[i], "source", f"{self.role}[{i}]"))

    def batch_name(self, indices: Sequence[int]) -> str:
        """``"<role> images <source of the first>.."``: names the batch ``indices`` in error messages."""
        return f"{self.role} images {self.source(indices[0])}.."

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Images ``indices`` stacked as (b, 3, S, S) (not yet validated)."""
        if isinstance(self.data, torch.Tensor):
            return self.data[list(indices)]
        images = []
        for i in indices:
            image = _image_tensor(self.data[i])
            s = self.image_size
            if s is not None and tuple(image.shape) != (3, s, s):
                raise ImageSetError(
                    f"{self.source(i)}: image is {'x'.join(map(str, image.shape))}, this {self.method} needs "
                    f"3x{s}x{s} (image_size {s}); resize or tile the images"
                )
            images.append(image)
        return torch.stack(images)

    def chunks(self, batch_size: int) -> list[list[int]]:
        """Consecutive index lists of at most ``batch_size``."""
        return [list(range(s, min(self.n, s + batch_size))) for s in range(0, self.n, batch_size)]


class StackedTrainImages(TrainImages):
    """All images read once, checked (3 channels, ``image_size`` square, values in range) and held on the CPU
    as ``images`` (N, 3, S, S) float32 clamped to [0, 1]; ``sources`` names each one."""

    def __init__(self, data: Any, *, method: str, image_size: int, role: str = "training") -> None:
        super().__init__(data, method=method, role=role, image_size=image_size)
        if isinstance(data, torch.Tensor):
            images, sources = data, [f"{role}[{i}]" for i in range(self.n)]
        else:
            items = [data[i] for i in range(self.n)]
            images = torch.stack([_image_tensor(it) for it in items])
            sources = [str(getattr(it, "source", f"{role}[{i}]")) for i, it in enumerate(items)]
        self.images = check_batch(
            images, image_size=image_size, method=method, where=f"{role} images ({sources[0]}..)"
        ).cpu()
        self.sources = sources

    def source(self, i: int) -> str:
        return self.sources[i]

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        return self.images[list(indices)]

    def digest(self) -> str:
        """sha256 over the image sources and pixel sums: identifies the training set in a checkpoint."""
        h = hashlib.sha256()
        h.update("\n".join(self.sources).encode())
        h.update(np.asarray(self.images.double().sum(dim=(1, 2, 3)).numpy()).round(4).tobytes())
        return h.hexdigest()
