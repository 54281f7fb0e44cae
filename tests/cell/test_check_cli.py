"""``cell check``: its devices come from the cell factory, so a cell file means the same to ``cell check`` as to
``cell capture`` (same validation, same calibration check); output and exit codes of a good check are kept.
The real backends against the fake UR controller and genicam's simulated producer are tested in
tests/acquisition/test_ur_robot.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from acquisition.ur.robot import URRobot
from cell.cell_factory import load_cell
from cell.cli import cli, main
from cell.commands import check
from cell.errors import ConfigFileError

ROOT = Path(__file__).resolve().parents[2]
SIM_CELL = ROOT / "configs" / "cells" / "sim.yaml"
REAL_DEVICES = ("robot: {backend: ur5, host: 127.0.0.1}\n"
                "camera: {backend: genicam, producer: /nowhere/producer.cti, serial_number: 'SN1'}\n")


@pytest.fixture(autouse=True)
def _registered() -> None:
    if "check" not in cli.commands:
        cli.add_command(check.command)


@pytest.fixture()
def no_connection(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Connections to a real robot are recorded and refused (none may be tried by these tests)."""
    tried: list[str] = []

    def connect(self: URRobot) -> None:
        tried.append(self.config.host)
        raise AssertionError("cell check connected before the cell file was fully checked")

    monkeypatch.setattr(URRobot, "connect", connect)
    return tried


def _cell(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cell.yaml"
    path.write_text(text)
    return path


def test_sim_cell_is_built_by_the_factory_and_checked(monkeypatch, capsys) -> None:
    built: list[str] = []
    real_build = check.build_cell

    def spy(config, **kwargs):
        built.append(kwargs["source"])
        return real_build(config, **kwargs)

    monkeypatch.setattr(check, "build_cell", spy)
    assert main(["check", "--cell", str(SIM_CELL)]) == 0
    out = capsys.readouterr().out
    assert built == [str(SIM_CELL)]
    assert out.startswith("robot:\n  robot mode: RUNNING\n  safety mode: NORMAL\n")
    assert "camera:\n  camera_id: sim-cam-0\n  serial_number: SIM00001\n" in out  # issue 17 item 18
    assert "test frame: 1280x1024 Mono8 uint8" in out and out.endswith("check: OK\n")
    assert main(["check", "--cell", str(SIM_CELL), "--skip-robot"]) == 0
    out = capsys.readouterr().out
    assert "robot:" not in out and "test frame: 1280x1024" in out
    assert main(["check", "--cell", str(SIM_CELL), "--skip-camera"]) == 0
    assert "camera:" not in capsys.readouterr().out


@pytest.mark.parametrize("text, key", [
    ("camera: {backend: sim}\n", "robot"),
    ("robot: {backend: ur5, host: 127.0.0.1}\ncamera: sim\n", "camera"),
], ids=["no-robot", "camera-not-a-mapping"])
def test_a_cell_file_must_name_both_devices(tmp_path, capsys, no_connection, text, key) -> None:
    assert main(["check", "--cell", str(_cell(tmp_path, text))]) == 2
    expected = f"error: {tmp_path / 'cell.yaml'}: missing key '{key}' (a mapping with a 'backend')\n"
    assert capsys.readouterr().err == expected
    assert not no_connection


@pytest.mark.parametrize("extra", [
    "robot: {backend: ur5, host: 127.0.0.1, bogus: 1}\ncamera: {backend: genicam}\n",  # a bad device key
    REAL_DEVICES + "scene: {bogus: 1}\n",  # keys check did not read before, capture did
    REAL_DEVICES + "envelope: {max_speed: fast}\n",
    REAL_DEVICES + "capture: {timeout_s: -1}\n",
    "robot: {backend: ur6}\ncamera: {backend: genicam}\n",
    "robot: {backend: sim}\ncamera: {backend: genicam}\n",  # a real camera cannot look at the sim scene
], ids=["robot-key", "scene-key", "envelope-value", "capture-value", "robot-backend", "genicam-on-sim-robot"])
def test_a_bad_cell_file_gets_the_factorys_one_line_error_before_any_connection(tmp_path, capsys, no_connection,
                                                                                  extra) -> None:
    path = _cell(tmp_path, extra)
    with pytest.raises(ConfigFileError) as factory_error:
        load_cell(path)
    for flags in ([], ["--skip-robot"], ["--skip-camera"]):
        assert main(["check", "--cell", str(path), *flags]) == 2
        assert capsys.readouterr().err == f"error: {factory_error.value}\n"
    assert not no_connection


def test_a_stale_calibration_fails_the_check_after_the_devices_were_checked(tmp_path, capsys, monkeypatch) -> None:
    """A missing or foreign calibration file fails `cell check` (as it would fail `cell capture`), but only
    after the robot and camera were checked: commissioning a cell must not need its calibration first."""
    checked: list[str] = []
    monkeypatch.setattr(check, "check_robot", lambda robot, echo=None: checked.append(type(robot).__name__))
    path = _cell(tmp_path, REAL_DEVICES + "calibration: calib.yaml\n")
    assert main(["check", "--cell", str(path), "--skip-camera"]) == 2
    err = capsys.readouterr().err
    assert checked == ["URRobot"]
    assert err.startswith("error: ") and str(tmp_path / "calib.yaml") in err and err.count("\n") == 1


def test_the_calibration_in_force_is_checked_and_named(tmp_path, capsys, monkeypatch) -> None:
    from cell.commands.calibrate import command as calibrate_command

    cli.add_command(calibrate_command)
    monkeypatch.chdir(ROOT)  # calibrate's default --config is relative to the repository root
    calib = tmp_path / "calib.yaml"
    assert main(["calibrate", "--cell", str(SIM_CELL), "--views", "6", "--out", str(calib)]) == 0
    calibrated_cell = _cell(tmp_path, SIM_CELL.read_text() + f"\ncalibration: {calib}\n")
    capsys.readouterr()
    assert main(["check", "--cell", str(calibrated_cell)]) == 0
    out = capsys.readouterr().out
    assert f"calibration:\n  file: {calib}\n  id: " in out and out.endswith("check: OK\n")
    # the same file for another camera (the cell file names another serial) fails the check, after the devices
    other = _cell(tmp_path, SIM_CELL.read_text().replace("serial: SIM00001", "serial: OTHER-CAM", 1)
                  + f"\ncalibration: {calib}\n")
    assert main(["check", "--cell", str(other)]) == 2
    captured = capsys.readouterr()
    assert "test frame:" in captured.out and captured.err.startswith("error: ") and "OTHER-CAM" in captured.err


def test_both_skip_flags_leave_nothing_to_check(capsys) -> None:
    assert main(["check", "--cell", str(SIM_CELL), "--skip-robot", "--skip-camera"]) == 2
    assert "--skip-robot and --skip-camera together leave nothing to check" in capsys.readouterr().err
