"""GenICamCamera through the real harvesters path against the simulated producer in genicam 1.6."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acquisition.camera import Camera
from acquisition.errors import CameraConfigError, CameraNotFound, CameraTimeout
from acquisition.genicam.camera import GenICamCamera, GenICamCameraConfig

genicam = pytest.importorskip("genicam")
VIKY = Path(genicam.__file__).parent / "viky.cti"
pytestmark = [pytest.mark.skipif(not VIKY.is_file(), reason=f"simulated producer {VIKY} not shipped"),
              pytest.mark.timeout(120)]


def test_enumerate_open_by_serial_set_size_and_format_fetch():
    cfg = GenICamCameraConfig(producer=VIKY, serial_number="2", pixel_format="Mono8", roi=(0, 0, 320, 240),
                              exposure_us=4000)
    with GenICamCamera(cfg) as cam:
        assert isinstance(cam, Camera)
        assert cam.identity["serial_number"] == "2" and cam.serial == "2" and cam.camera_id.endswith("-2")
        assert any("exposure: not set" in line for line in cam.feature_report)  # viky has no exposure
        frames = [cam.capture() for _ in range(2)]
        for f in frames:
            assert f.pixels.shape == (240, 320) and f.pixels.dtype == np.uint8
            assert f.pixel_format == "Mono8" and f.device_timestamp_ns is None
        assert frames[1].frame_id == frames[0].frame_id + 1
        cam.configure(pixel_format="RGBa8")
        colour = cam.capture()
        assert colour.pixels.shape == (240, 320, 3) and colour.pixel_format == "RGBa8"


def test_open_by_index_and_strict_features_raise():
    with GenICamCamera(GenICamCameraConfig(producer=VIKY, index=1)) as cam:
        assert cam.identity["serial_number"] == "1"
        assert cam.capture().pixels.ndim in (2, 3)
    with pytest.raises(CameraConfigError, match="exposure"):
        GenICamCamera(GenICamCameraConfig(producer=VIKY, exposure_us=1000, strict_features=True)).open()
    with pytest.raises(CameraConfigError, match="software"):
        GenICamCamera(GenICamCameraConfig(producer=VIKY, trigger="software")).open()


def test_bad_pixel_format_is_a_config_error():
    with pytest.raises(CameraConfigError, match="pixel format"):
        GenICamCamera(GenICamCameraConfig(producer=VIKY, pixel_format="BayerRG12")).open()


def test_fetch_timeout_raises_camera_timeout():
    with GenICamCamera(GenICamCameraConfig(producer=VIKY)) as cam:
        errors = []
        for _ in range(5):  # 20 fps free-run: a 0.1 ms wait misses the next frame almost always
            try:
                cam.capture(timeout_s=0.0001)
            except CameraTimeout as exc:
                errors.append(exc)
                break
        assert errors and "no frame within" in str(errors[0])
        assert cam.capture().pixels.size > 0  # still usable afterwards


def test_missing_producer_and_unknown_serial(tmp_path):
    missing = tmp_path / "vendor.cti"
    with pytest.raises(CameraNotFound, match="vendor.cti"):
        GenICamCamera(GenICamCameraConfig(producer=missing)).open()
    with pytest.raises(CameraNotFound, match="'XYZ'"):
        GenICamCamera(GenICamCameraConfig(producer=VIKY, serial_number="XYZ")).open()
    with pytest.raises(CameraNotFound, match="index 7"):
        GenICamCamera(GenICamCameraConfig(producer=VIKY, index=7)).open()
