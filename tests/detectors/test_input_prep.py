"""The one input-preparation path (detectors.input_prep): sizes, pixel formats, masks, tiles, scoring."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detectors.errors import ImageSetError
from detectors.imagesets import InMemoryImageSet
from detectors.input_prep import (
    InputSpec,
    fit_inputs,
    prepare_imageset,
    resize_for_model,
    score_capture,
    score_working,
    working_image,
    working_mask,
)
from detectors.base import Prediction


class _ConstantMap:
    """A detector stand-in: map = the mean of each input's first channel, broadcast; score = its max."""

    class config:
        image_size = 32

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def predict(self, images: torch.Tensor) -> Prediction:
        self.calls.append(tuple(images.shape))
        maps = images[:, 0].numpy().astype(np.float32)
        return Prediction(score=maps.reshape(len(maps), -1).max(axis=1), anomaly_map=maps)


def _pixels(height: int, width: int, dtype=np.uint8, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    top = 255 if dtype == np.uint8 else 65535
    shape = (height, width, channels) if channels else (height, width)
    return rng.integers(0, top + 1, size=shape).astype(dtype)


def test_working_size_of_each_mode() -> None:
    assert InputSpec(mode="resize").working_size(1024, 1280, 256) == (256, 256)
    assert InputSpec(mode="tile", scale=0.25).working_size(1024, 1280, 256) == (256, 320)
    # a capture smaller than one tile after scaling is enlarged to one tile, never below
    assert InputSpec(mode="tile", scale=0.25).working_size(600, 900, 256) == (256, 384)


def test_input_spec_refuses_bad_values() -> None:
    with pytest.raises(ValueError):
        InputSpec(mode="crop")
    with pytest.raises(ValueError):
        InputSpec(mode="tile", scale=0.0)
    with pytest.raises(ValueError):
        InputSpec(mode="tile", overlap=1.0)
    with pytest.raises(ValueError):
        InputSpec(size=3)


@pytest.mark.parametrize("dtype, channels", [(np.uint8, 3), (np.uint8, 0), (np.uint16, 3), (np.uint16, 1)])
def test_working_image_of_every_pixel_format(dtype, channels: int) -> None:
    image = working_image(_pixels(90, 120, dtype, channels), InputSpec(mode="resize"), 64)
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    if channels in (0, 1):
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_uint16_keeps_its_precision() -> None:
    # two 16-bit levels that fall on the same 8-bit value stay apart
    pixels = np.full((64, 64), 1000, dtype=np.uint16)
    pixels[:, 32:] = 1100
    image = working_image(pixels, InputSpec(mode="resize"), 64)
    assert float(image[0, 0, 0]) == pytest.approx(1000 / 65535) and float(image[0, 0, 40]) == pytest.approx(1100 / 65535)


def test_an_array_and_its_tensor_give_the_same_input() -> None:
    # a capture (uint8 array: cell train / eval / inspect) and the same file as an ImageSet sample (float
    # tensor: the benchmark) are the same model input, to the bit
    pixels = _pixels(100, 140)
    tensor = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
    spec = InputSpec(mode="resize")
    assert torch.equal(working_image(pixels, spec, 64), working_image(tensor, spec, 64))


def test_the_resize_is_area_interpolation_when_shrinking() -> None:
    pixels = _pixels(128, 128)
    expected = cv2.resize(pixels.astype(np.float32) / 255.0, (64, 64), interpolation=cv2.INTER_AREA)
    image = working_image(pixels, InputSpec(mode="resize"), 64)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    # an exact 2x shrink by area = the mean of each 2 x 2 block
    block = pixels[:2, :2, 0].astype(np.float64).mean() / 255.0
    assert float(image[0, 0, 0]) == pytest.approx(block, abs=1e-6)


def test_same_size_is_untouched_and_enlarging_works() -> None:
    image = torch.rand(3, 40, 50)
    assert resize_for_model(image, (40, 50)) is image
    bigger = resize_for_model(image, (80, 100))
    assert bigger.shape == (3, 80, 100) and 0.0 <= float(bigger.min()) and float(bigger.max()) <= 1.0


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4), np.int32), np.full((4, 4), 2.0)])
def test_bad_pixels_are_one_line_errors(bad: np.ndarray) -> None:
    with pytest.raises(ImageSetError) as info:
        working_image(bad, InputSpec(), 8)
    assert "\n" not in str(info.value)


def test_working_mask_follows_the_image_size() -> None:
    mask = np.zeros((100, 200), dtype=bool)
    mask[40:60, 80:120] = True
    resized = working_mask(mask, InputSpec(mode="resize"), 50)
    assert resized.shape == (50, 50) and resized.dtype == bool
    assert resized[25, 25] and not resized[0, 0]
    assert working_mask(mask, InputSpec(mode="tile", scale=0.5), 50).shape == (50, 100)


def test_fit_inputs_are_tiles_in_tile_mode() -> None:
    pixels = _pixels(128, 192)
    assert len(fit_inputs(pixels, InputSpec(mode="resize"), 32)) == 1
    tiles = fit_inputs(pixels, InputSpec(mode="tile", scale=0.5, overlap=0.0), 32)
    assert len(tiles) == 2 * 3 and all(t.shape == (3, 32, 32) for t in tiles)  # 64 x 96 working image


def test_score_capture_gives_the_map_at_the_capture_resolution() -> None:
    pixels = _pixels(96, 160)
    detector = _ConstantMap()
    score, working = score_working(detector, pixels, InputSpec(mode="resize"))
    assert working.shape == (32, 32) and detector.calls == [(1, 3, 32, 32)]
    score_full, full = score_capture(detector, pixels, InputSpec(mode="resize"))
    assert full.shape == (96, 160) and full.dtype == np.float32 and score_full == score
    tiled_score, tiled = score_capture(_ConstantMap(), pixels, InputSpec(mode="tile", scale=0.5))
    assert tiled.shape == (96, 160) and np.isfinite(tiled_score)


def test_prepare_imageset_keeps_labels_masks_and_sources() -> None:
    masks = [None, torch.zeros(48, 64, dtype=torch.bool)]
    masks[1][10:20, 10:30] = True
    images = InMemoryImageSet(torch.rand(2, 3, 48, 64), masks=masks, labels=[0, 1], sources=["a", "b"],
                              defect_types=["good", "scratch"], sha256s=["1" * 64, "2" * 64])
    prepared = prepare_imageset(images, InputSpec(mode="resize"), 32)
    assert prepared.stack_images().shape == (2, 3, 32, 32)
    assert prepared.sources == ["a", "b"] and list(prepared.labels) == [0, 1]
    assert prepared.defect_types == ["good", "scratch"] and prepared.provenance()[1]["sha256"] == "2" * 64
    assert prepared.stack_masks()[1].any() and not prepared.stack_masks()[0].any()
    with pytest.raises(ImageSetError, match="needs input mode 'resize'"):
        prepare_imageset(images, InputSpec(mode="tile"), 32)


def test_detectors_input_prep_does_not_import_cell() -> None:
    code = "import sys, detectors.input_prep, detectors.model_dir; assert 'cell' not in sys.modules, 'cell imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("shape, dtype", [((1024, 1280, 3), np.uint8), ((1024, 1280), np.uint16), ((200, 300, 3), np.uint8),
                                          ((256, 256, 3), np.uint8)])
@pytest.mark.parametrize("mode", ["resize", "tile"])
def test_integer_captures_are_prepared_exactly_as_the_tensor_path(shape, dtype, mode) -> None:
    # working_image converts and resizes integer captures in their (H, W, 3) layout (no full-size tensor);
    # it must give bit for bit what the float tensor path (to_image_tensor -> resize_for_model) gives
    from detectors.imagesets import to_image_tensor

    pixels = np.random.default_rng(3).integers(0, np.iinfo(dtype).max + 1, size=shape, dtype=dtype)
    spec = InputSpec(mode=mode)
    fast = working_image(pixels, spec, 256)
    tensor = to_image_tensor(pixels)
    expected = resize_for_model(tensor, spec.working_size(shape[0], shape[1], 256))
    assert fast.dtype == torch.float32 and fast.is_contiguous()
    assert torch.equal(fast, expected)
    assert torch.equal(working_image(tensor, spec, 256), expected)
