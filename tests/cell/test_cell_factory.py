"""Building cells from files: real backends, the calibration in force, and how a real cell gets its parts."""
from pathlib import Path

import pytest
import yaml

from acquisition.genicam.camera import GenICamCamera
from acquisition.store import CaptureStore
from acquisition.ur.robot import URRobot
from calibration.calibration_file import CalibrationFile, save_calibration
from calibration.errors import CalibrationFileError
from cell.cell_factory import build_cell, load_campaign_file, load_cell, load_cell_config
from cell.cli import main
from cell.errors import CellError, ConfigFileError

REPO = Path(__file__).resolve().parents[2]


def test_real_cell_file_builds_ur_robot_and_genicam_camera_without_connecting():
    cell = load_cell(REPO / "configs" / "cells" / "ur5.yaml")
    assert isinstance(cell.robot, URRobot) and isinstance(cell.camera, GenICamCamera)
    assert cell.scene is None and cell.camera_model is None
    with pytest.raises(CellError, match="calibration"):
        cell.plan(load_campaign_file(REPO / "configs" / "campaigns" / "demo.yaml").plan)


def test_a_real_camera_cannot_ride_on_the_simulated_robot(tmp_path):
    data = yaml.safe_load((REPO / "configs" / "cells" / "ur5.yaml").read_text())
    data["robot"] = {"backend": "sim"}
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigFileError, match="needs a real robot"):
        load_cell(path)


def _calibration(tmp_path: Path, serial: str) -> Path:
    truth = build_cell(load_cell_config(REPO / "configs" / "cells" / "sim.yaml"))
    model = truth.camera_model
    shifted = type(model)(model.width, model.height, model.fx * 1.01, model.fy * 1.01, model.cx, model.cy, model.dist)
    calibration = CalibrationFile(camera_serial=serial, camera=shifted, T_flange_cam=truth.T_flange_cam,
                                  method="park", n_views=12)
    return save_calibration(calibration, tmp_path / f"calib-{serial}.yaml")


def test_calibration_in_force_provides_the_geometry_and_its_id(tmp_path):
    path = _calibration(tmp_path, "SIM00001")
    cell = load_cell(REPO / "configs" / "cells" / "sim.yaml", calibration=path)
    assert cell.calibration_id and cell.calibration_id.startswith("calib-")
    assert cell.camera_model.fx == pytest.approx(cell.camera.camera_model.fx * 1.01)
    assert cell.describe()["calibration_id"] == cell.calibration_id


def test_calibration_of_another_camera_is_refused(tmp_path):
    path = _calibration(tmp_path, "OTHER123")
    with pytest.raises(CalibrationFileError, match="OTHER123") as info:
        load_cell(REPO / "configs" / "cells" / "sim.yaml", calibration=path)
    assert "SIM00001" in str(info.value)


def test_capture_records_the_calibration_in_force(tmp_path, capsys):
    path = _calibration(tmp_path, "SIM00001")
    store = tmp_path / "store"
    code = main(["capture", "--cell", str(REPO / "configs" / "cells" / "sim.yaml"),
                 "--campaign", str(REPO / "configs" / "campaigns" / "demo.yaml"),
                 "--parts", "1", "--out", str(store), "--calibration", str(path)])
    assert code == 0, capsys.readouterr().err
    with CaptureStore(store) as opened:
        records = opened.captures()
        assert records and {r.calibration_id for r in records} == {load_cell(
            REPO / "configs" / "cells" / "sim.yaml", calibration=path).calibration_id}


def test_real_cell_prompts_the_operator_for_each_part():
    cell = load_cell(REPO / "configs" / "cells" / "ur5.yaml")
    asked = []
    cell.prompt = asked.append
    assert cell.on_new_part("sheet-0007") is None
    assert asked and "sheet-0007" in asked[0]
