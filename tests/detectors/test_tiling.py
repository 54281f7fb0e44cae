"""Tiled prediction: tiles cover the capture, maps stitch back exactly, overlaps are averaged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.base import Prediction
from detectors.errors import DetectorConfigError, ImageSetError
from detectors.tiling import predict_tiled, tile_starts


class ChannelZeroDetector:
    """Map = the tile's red channel: a known function of the pixel, wherever the tile lies."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def predict(self, images: torch.Tensor) -> Prediction:
        self.batch_sizes.append(images.shape[0])
        maps = images[:, 0].numpy()
        return Prediction(score=maps.reshape(len(maps), -1).max(axis=1), anomaly_map=maps)


class TileCounterDetector:
    """Map of the k-th tile it sees = k + 1 everywhere (to check the averaging of overlaps)."""

    def __init__(self) -> None:
        self.seen = 0

    def predict(self, images: torch.Tensor) -> Prediction:
        n, _, h, w = images.shape
        values = np.arange(self.seen + 1, self.seen + n + 1, dtype=np.float32)
        self.seen += n
        return Prediction(score=values, anomaly_map=np.broadcast_to(values[:, None, None], (n, h, w)).copy())


def test_tile_starts_cover_and_align_last_tile() -> None:
    assert tile_starts(10, 6, 0.5) == [0, 3, 4]
    assert tile_starts(12, 4, 0.0) == [0, 4, 8]
    assert tile_starts(6, 6, 0.25) == [0]
    with pytest.raises(ImageSetError, match="smaller than the tile size"):
        tile_starts(5, 6, 0.25)


def test_stitching_reproduces_a_position_independent_map_exactly() -> None:
    images = torch.rand(2, 3, 50, 70)
    detector = ChannelZeroDetector()
    prediction = predict_tiled(detector, images, tile_size=32, overlap=0.25, batch_size=5)
    np.testing.assert_allclose(prediction.anomaly_map, images[:, 0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(prediction.score, images[:, 0].flatten(1).amax(dim=1).numpy(), atol=1e-6)
    # ys = [0, 18], xs = [0, 24, 38] -> 6 tiles per image, 12 in batches of at most 5
    assert detector.batch_sizes == [5, 5, 2]


def test_overlaps_are_averaged() -> None:
    # one row of tiles: width 10, tile 6, overlap 0.5 -> starts 0, 3, 4 with maps 1, 2, 3
    # px 0-2: tile 1 -> 1; px 3: tiles 1, 2 -> 1.5; px 4-5: all three -> 2; px 6-8: tiles 2, 3 -> 2.5; px 9: 3
    prediction = predict_tiled(TileCounterDetector(), torch.rand(1, 3, 6, 10), tile_size=6, overlap=0.5)
    expected_row = [1, 1, 1, 1.5, 2, 2, 2.5, 2.5, 2.5, 3]
    np.testing.assert_allclose(prediction.anomaly_map[0], np.tile(expected_row, (6, 1)), atol=1e-6)
    assert prediction.score.tolist() == [3.0]  # max of the stitched map
    assert prediction.anomaly_map.dtype == np.float32 and prediction.score.dtype == np.float32


def test_bad_parameters() -> None:
    images = torch.rand(1, 3, 16, 16)
    with pytest.raises(DetectorConfigError, match="overlap"):
        predict_tiled(ChannelZeroDetector(), images, tile_size=8, overlap=1.0)
    with pytest.raises(DetectorConfigError, match="tile_size"):
        predict_tiled(ChannelZeroDetector(), images, tile_size=0)
    with pytest.raises(ImageSetError, match="3 channels"):
        predict_tiled(ChannelZeroDetector(), torch.rand(1, 1, 16, 16), tile_size=8)
    with pytest.raises(ImageSetError, match="smaller than the tile size"):
        predict_tiled(ChannelZeroDetector(), images, tile_size=32)
