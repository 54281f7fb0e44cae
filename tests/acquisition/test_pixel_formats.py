"""Pixel-format conversion on synthetic GenTL buffers."""
from __future__ import annotations

import numpy as np
import pytest

from acquisition.errors import CameraConfigError
from acquisition.genicam.pixel_formats import convert_buffer


def _rgb_image(h=8, w=10):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_mono8_and_mono16_keep_values_and_copy():
    mono = np.arange(6 * 4, dtype=np.uint8).reshape(6, 4)
    flat = mono.reshape(-1).copy()
    out = convert_buffer(flat, 4, 6, "Mono8")
    assert out.shape == (6, 4) and out.dtype == np.uint8 and np.array_equal(out, mono)
    flat[:] = 0  # the buffer goes back to the producer: the image must not change
    assert np.array_equal(out, mono)
    m16 = (np.arange(12, dtype=np.uint16) * 1000).reshape(3, 4)
    out16 = convert_buffer(m16.reshape(-1).view(np.uint8), 4, 3, "Mono16")
    assert out16.dtype == np.uint16 and np.array_equal(out16, m16)


@pytest.mark.parametrize("fmt", ["RGB8", "BGR8", "RGBa8", "BGRa8"])
def test_colour_formats_give_rgb(fmt):
    rgb = _rgb_image()
    if fmt == "RGB8":
        raw = rgb
    elif fmt == "BGR8":
        raw = rgb[:, :, ::-1]
    elif fmt == "RGBa8":
        raw = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    else:
        raw = np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)])
    out = convert_buffer(np.ascontiguousarray(raw).reshape(-1), 10, 8, fmt)
    assert out.shape == (8, 10, 3) and np.array_equal(out, rgb)


def _mosaic(rgb, pattern):
    """Sample an RGB image through a 2x2 Bayer tile named like GenICam (first row first)."""
    h, w, _ = rgb.shape
    chan = {"R": 0, "G": 1, "B": 2}
    tile = [[chan[pattern[0]], chan[pattern[1]]], [chan[pattern[2]], chan[pattern[3]]]]
    out = np.empty((h, w), np.uint8)
    for dy in range(2):
        for dx in range(2):
            out[dy::2, dx::2] = rgb[dy::2, dx::2, tile[dy][dx]]
    return out


@pytest.mark.parametrize("fmt,pattern", [("BayerRG8", "RGGB"), ("BayerBG8", "BGGR"),
                                         ("BayerGR8", "GRBG"), ("BayerGB8", "GBRG")])
def test_bayer_demosaic_recovers_flat_colours(fmt, pattern):
    # A flat saturated colour: red must stay red (a swapped pattern would turn it blue).
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 60, 10
    out = convert_buffer(_mosaic(rgb, pattern).reshape(-1), 16, 16, fmt)
    centre = out[4:12, 4:12].reshape(-1, 3).mean(axis=0)
    assert np.allclose(centre, [200, 60, 10], atol=2), centre


def test_unsupported_format_and_short_buffer_raise():
    with pytest.raises(CameraConfigError, match="YUV422"):
        convert_buffer(np.zeros(16, np.uint8), 4, 4, "YUV422_8")
    with pytest.raises(CameraConfigError, match="needs"):
        convert_buffer(np.zeros(10, np.uint8), 4, 4, "Mono8")
