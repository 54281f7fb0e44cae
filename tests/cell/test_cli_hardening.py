"""Issue 17: bad command-line input is one `error:` line, exit 2, and nothing is created or overwritten."""
from __future__ import annotations

from pathlib import Path

import pytest

from cell.cli import main

REPO = Path(__file__).resolve().parents[2]
SIM_CELL = REPO / "configs" / "cells" / "sim.yaml"
DEMO_CAMPAIGN = REPO / "configs" / "campaigns" / "demo.yaml"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def inspect_argv(tmp_path: Path, *extra: str) -> list[str]:
    return ["inspect", "--cell", str(SIM_CELL), "--campaign", str(DEMO_CAMPAIGN), "--model", str(tmp_path / "model"),
            "--store", str(tmp_path / "store"), "--parts", "1", *extra]


@pytest.mark.parametrize("option", ["--threshold", "--part-threshold"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "1e999"])
def test_a_non_finite_manual_threshold_is_refused_before_anything_is_created(tmp_path, capsys, value, option):
    # Item 1: NaN passed every defective part as OK ("score 1.9 <= threshold nan"), inf passed all, -inf none.
    assert main(inspect_argv(tmp_path, option, value)) == 2
    line = one_error_line(capsys)
    assert f"'{option}'" in line and "is not a finite number" in line
    assert not (tmp_path / "store").exists()


def test_digital_output_on_the_simulated_cell_leaves_no_store(tmp_path, capsys):
    # Item 8: the refusal must come before the store is created.
    assert main(inspect_argv(tmp_path, "--signal", "digital_output")) == 2
    assert "digital_output" in one_error_line(capsys)
    assert not (tmp_path / "store").exists()


def test_eval_refuses_an_unrelated_non_empty_out_folder(tmp_path, capsys):
    # Item 13: train and export refuse such a folder; eval overwrote its metrics.json.
    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.json").write_text("precious", encoding="utf-8")
    argv = ["eval", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--out", str(out)]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert str(out) in line and "not a previous `cell eval` report" in line
    assert (out / "metrics.json").read_text(encoding="utf-8") == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_eval_may_write_into_an_empty_folder_or_over_its_own_report(tmp_path):
    from cell.errors import CellError
    from cell.evaluation import REPORT_MARKER, check_report_folder

    empty = tmp_path / "empty"
    empty.mkdir()
    check_report_folder(empty)
    check_report_folder(tmp_path / "new")
    (empty / "metrics.json").write_text("{}", encoding="utf-8")
    with pytest.raises(CellError):
        check_report_folder(empty)
    (empty / REPORT_MARKER).write_text("", encoding="utf-8")
    check_report_folder(empty)
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(CellError, match="not a folder"):
        check_report_folder(tmp_path / "file")


def test_export_refuses_test_fraction_with_train_campaign(tmp_path, capsys):
    # Item 13: --test-fraction was silently ignored when the split is by campaign.
    from acquisition.store import CaptureStore

    CaptureStore(tmp_path / "ds", create=True).close()
    argv = ["dataset", "export", str(tmp_path / "ds"), "--mvtec", str(tmp_path / "out"), "--train-campaign", "a",
            "--test-fraction", "0.5"]
    assert main(argv) == 2
    assert "--test-fraction and --train-campaign exclude each other" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("size,needle", [
    ("[100, 100]", "plan.part_size_m = [100, 100] m"),
    ("[2, 2]", "refused before any motion: pose r0c0s0"),
])
def test_capture_of_an_oversized_part_is_refused_at_once_and_creates_nothing(tmp_path, capsys, size, needle):
    # Item 11: [100, 100] used to build millions of poses before the envelope check (a silent hang).
    campaign = tmp_path / "big.yaml"
    campaign.write_text(f"plan:\n  part_size_m: {size}\n", encoding="utf-8")
    argv = ["capture", "--cell", str(SIM_CELL), "--campaign", str(campaign), "--parts", "1",
            "--out", str(tmp_path / "store")]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {campaign}: ") and needle in line
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("name", ["board.pdf", "board.png"])
def test_files_the_cli_writes_follow_the_umask(tmp_path, name):
    # Item 17: under umask 022 every file the CLI writes is 0644 (board.pdf and calibration files were 0600).
    import os
    import stat
    import subprocess
    import sys

    out = tmp_path / name
    result = subprocess.run(
        [sys.executable, "-m", "cell.cli", "calibrate", "board", "--out", str(out), "--dpi", "600"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=lambda: os.umask(0o022),
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_an_interrupted_demo_does_not_offer_a_resume_it_does_not_have(tmp_path):
    from cell.commands.demo import _demo_interrupts
    from cell.errors import CampaignInterrupted

    with pytest.raises(CampaignInterrupted) as info:
        with _demo_interrupts(tmp_path / "demo"):
            raise CampaignInterrupted("campaign 'train' interrupted by SIGTERM ...; run again with --resume", signum=15)
    assert info.value.signum == 15 and "--resume" not in str(info.value)
    assert f"run `cell demo` again (it replaces {tmp_path / 'demo'})" in str(info.value)
