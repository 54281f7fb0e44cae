"""The versioned calibration file: round trip, id, and refusal of other cameras and other format versions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from calibration.calibration_file import FORMAT_VERSION, CalibrationFile, load_calibration, save_calibration
from calibration.camera_model import CameraModel
from calibration.errors import CalibrationFileError
from calibration.transforms import Transform


def _calibration() -> CalibrationFile:
    camera = CameraModel(1280, 1024, 4717.5, 4716.9, 645.2, 507.8, (-0.08, 0.05, 0.0003, -0.0002, 0.001))
    return CalibrationFile(
        camera_serial="SIM00001", camera=camera, T_flange_cam=Transform.from_pose([0.012, -0.007, 0.08, 0.007, -0.01, 0.026]),
        method="park", n_views=20, board={"squares_x": 9}, report={"intrinsics": {"rms_px": np.float64(0.03)}},
    )


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    calib = _calibration()
    path = save_calibration(calib, tmp_path / "sub" / "calib.yaml")
    loaded = load_calibration(path, expected_serial="SIM00001")
    assert loaded.camera == calib.camera
    assert np.allclose(loaded.T_flange_cam.matrix, calib.T_flange_cam.matrix, atol=1e-15)
    assert loaded.calibration_id == calib.calibration_id and loaded.calibration_id.startswith("calib-")
    assert loaded.method == "park" and loaded.n_views == 20 and loaded.report["intrinsics"]["rms_px"] == 0.03
    data = yaml.safe_load(path.read_text())
    assert data["format_version"] == FORMAT_VERSION
    assert np.allclose(data["T_flange_cam"]["pose_mm_deg"][:3], [12.0, -7.0, 80.0])
    assert [p.name for p in path.parent.iterdir()] == ["calib.yaml"]  # no temporary file left behind


def test_calibration_id_depends_on_content() -> None:
    a = _calibration()
    b = CalibrationFile(camera_serial="OTHER", camera=a.camera, T_flange_cam=a.T_flange_cam, method="park",
                        n_views=20, created=a.created)
    assert a.calibration_id != b.calibration_id


def test_serial_mismatch_names_both_serials(tmp_path: Path) -> None:
    path = save_calibration(_calibration(), tmp_path / "calib.yaml")
    with pytest.raises(CalibrationFileError, match=r"calib.yaml.*'SIM00001'.*'CAM-42'"):
        load_calibration(path, expected_serial="CAM-42")


@pytest.mark.parametrize(
    ("version", "message"),
    [(None, "no 'format_version'"), (0, "version 0 is older than the supported version 1"),
     (FORMAT_VERSION + 1, "newer than this software supports"), ("one", "expected an integer")],
)
def test_other_format_versions_are_refused(tmp_path: Path, version: object, message: str) -> None:
    data = _calibration().to_dict()
    if version is None:
        del data["format_version"]
    else:
        data["format_version"] = version
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CalibrationFileError, match=message):
        load_calibration(path)


def test_broken_files_are_refused_with_the_key(tmp_path: Path) -> None:
    data = _calibration().to_dict()
    del data["intrinsics"]["fx"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CalibrationFileError, match=r"c.yaml: missing key 'intrinsics.fx'"):
        load_calibration(path)
    data = _calibration().to_dict()
    data["T_flange_cam"]["matrix"][0][0] = 3.0
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CalibrationFileError, match="not a rigid transform"):
        load_calibration(path)
    with pytest.raises(CalibrationFileError, match="not found"):
        load_calibration(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(CalibrationFileError, match="not a calibration file"):
        load_calibration(tmp_path / "list.yaml")
