"""Training-image access (detectors/train_images.py): images are read once per batch, errors name the source."""
from __future__ import annotations

import pytest
import torch

from detectors.errors import ImageSetError
from detectors.imagesets import InMemoryImageSet, Sample
from detectors.train_images import TrainImages


class _CountingSet(InMemoryImageSet):
    """An image set that counts how often a sample's pixels are loaded (a file read for a real set)."""

    loads = 0

    def _load(self, index: int) -> Sample:
        self.loads += 1
        return super()._load(index)


def _counting_set(n: int, size: int = 8) -> _CountingSet:
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    return _CountingSet(images, sources=[f"part{i}.png" for i in range(n)])


def test_naming_a_batch_does_not_read_its_images_again() -> None:
    data = _counting_set(5)
    images = TrainImages(data, method="test", role="training", image_size=8)
    names = []
    for idx in images.chunks(2):
        images.batch(idx)
        names.append(images.batch_name(idx))
    assert names == ["training images part0.png..", "training images part2.png..", "training images part4.png.."]
    assert data.loads == 5  # each image read once, by batch(); none to name it
    assert images.source(3) == "part3.png" and data.loads == 5


def test_sources_of_tensors_and_plain_sequences() -> None:
    tensor = TrainImages(torch.rand(2, 3, 8, 8), method="test", role="validation")
    assert tensor.source(1) == "validation[1]" and tensor.batch_name([1]) == "validation images validation[1].."
    samples = list(_counting_set(2))
    assert TrainImages(samples, method="test", role="training").source(1) == "part1.png"


def test_a_wrong_size_image_is_named_by_its_source() -> None:
    data = InMemoryImageSet([torch.rand(3, 8, 8), torch.rand(3, 6, 6)], sources=["a.png", "b.png"])
    with pytest.raises(ImageSetError, match=r"^b\.png: image is 3x6x6"):
        TrainImages(data, method="test", role="training", image_size=8).batch([0, 1])
