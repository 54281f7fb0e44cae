"""Saving the views of a calibration (``cell calibrate --images``): the capture store's lossless PNG encoder,
so every frame a camera can give (mono or RGB, 8 or 16 bits) reads back exactly."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from acquisition.errors import StoreError
from cell.calibrate import CalibrationPlanConfig, CalibrationView, capture_views, save_view_image
from cell.cli import cli, main
from cell.commands.calibrate import command

ROOT = Path(__file__).resolve().parents[2]
H, W = 24, 32


def _pixels(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Random pixels over the dtype's whole range, with distinct channels (a swapped R/B would show)."""
    pixels = np.random.default_rng(7).integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)
    pixels[0, 0] = np.iinfo(dtype).max  # full scale: a truncation to 8 bits would show too
    if pixels.ndim == 3:
        pixels[..., 0] = np.iinfo(dtype).max // 3
    return pixels


def _read_png(path: Path) -> np.ndarray:
    """A PNG as written, read independently of the store's decoder: OpenCV, colour back to RGB order."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return np.ascontiguousarray(image[..., ::-1]) if image.ndim == 3 else image


class _Robot:
    def move_linear(self, pose, speed, accel) -> None:
        self.pose = np.asarray(pose, dtype=float)

    def tcp_pose(self) -> np.ndarray:
        return self.pose


class _Camera:
    def __init__(self, frames: list[np.ndarray], pixel_format: str) -> None:
        self.frames, self.pixel_format = list(frames), pixel_format

    def capture(self) -> SimpleNamespace:
        return SimpleNamespace(pixels=self.frames.pop(0), pixel_format=self.pixel_format, frame_id=0, camera_id="fake")


class _Detector:
    def detect(self, pixels: np.ndarray) -> SimpleNamespace:
        return SimpleNamespace(count=0)


@pytest.mark.parametrize("shape, dtype, pixel_format", [
    ((H, W, 3), np.uint16, "RGB16"),  # PIL's Image.fromarray raised TypeError on these
    ((H, W), np.uint8, "Mono8"),
    ((H, W, 3), np.uint8, "RGB8"),
    ((H, W), np.uint16, "Mono16"),
])
def test_captured_views_are_saved_losslessly(tmp_path: Path, shape, dtype, pixel_format) -> None:
    frames = [_pixels(shape, dtype), _pixels(shape, dtype)[::-1].copy()]
    views = [CalibrationView(f"v{i:02d}", np.zeros(6), 0.0, 0.0, 0.0) for i in range(2)]
    folder = tmp_path / "views" / "new"  # missing folders are created
    capture_views(_Robot(), _Camera(frames, pixel_format), _Detector(), views, CalibrationPlanConfig(settle_s=0.0),
                  image_dir=folder)
    assert sorted(p.name for p in folder.iterdir()) == ["v00.png", "v01.png"]  # no temporary files left
    for view, frame in zip(views, frames):
        back = _read_png(folder / f"{view.view_id}.png")
        assert back.dtype == frame.dtype and back.shape == frame.shape and np.array_equal(back, frame)


def test_a_frame_that_is_no_image_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"v07\.png: cannot store pixels of dtype float32 \(Mono8\)"):
        save_view_image(tmp_path, "v07", np.zeros((H, W), np.float32), "Mono8")
    assert not any(tmp_path.iterdir())


def test_cli_images_option_saves_every_view(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cli.add_command(command)
    monkeypatch.chdir(ROOT)  # the default --config is relative to the repository root
    images = tmp_path / "views"
    assert main(["calibrate", "--cell", "configs/cells/sim.yaml", "--out", str(tmp_path / "calib.yaml"),
                 "--views", "6", "--images", str(images)]) == 0
    assert json.loads(capsys.readouterr().out)["views_used"] == 6
    saved = sorted(images.iterdir())
    assert len(saved) == 6 and all(p.suffix == ".png" for p in saved)
    first = _read_png(saved[0])
    assert first.shape == (1024, 1280) and first.dtype == np.uint8 and first.std() > 0  # sim.yaml: Mono8
