"""`cell calibrate` and `cell calibrate board` through the CLI entry point."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibration.calibration_file import load_calibration
from cell.cli import cli, main
from cell.commands.calibrate import command

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    cli.add_command(command)
    monkeypatch.chdir(ROOT)  # the default --config is relative to the repository root


def test_calibrate_sim_cell_writes_a_loadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "calib.yaml"
    code = main(["calibrate", "--cell", "configs/cells/sim.yaml", "--out", str(out), "--views", "8",
                 "--method", "tsai"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    calib = load_calibration(out, expected_serial="SIM00001")
    assert summary["calibration_id"] == calib.calibration_id
    assert calib.method == "tsai" and calib.n_views == 8
    assert abs(calib.camera.fx - 25.0e-3 / 5.3e-6) / (25.0e-3 / 5.3e-6) < 0.01


def test_board_sheets(tmp_path: Path) -> None:
    assert main(["calibrate", "board", "--out", str(tmp_path / "b.pdf")]) == 0
    assert (tmp_path / "b.pdf").read_bytes().startswith(b"%PDF")
    assert main(["calibrate", "board", "--out", str(tmp_path / "b.png"), "--dpi", "600"]) == 0
    assert (tmp_path / "b.png").stat().st_size > 0


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", "--out", str(tmp_path / "x.yaml")]) == 2
    assert "needs --cell" in capsys.readouterr().err
    assert main(["calibrate", "--cell", "configs/cells/sim.yaml", "--out", str(tmp_path / "x.yaml"),
                 "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("board: {squares_x: 9, squares_y: 7, square_length_m: 0.01, marker_length_m: 0.02}\n")
    assert main(["calibrate", "board", "--out", str(tmp_path / "b.pdf"), "--config", str(bad)]) == 2
    assert "marker_length_m" in capsys.readouterr().err
    assert main(["calibrate", "board", "--out", str(tmp_path / "b.svg")]) == 2
    assert ".pdf or .png" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()
