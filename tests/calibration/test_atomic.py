"""Calibration outputs are written crash-safely and with the mode the umask gives (issue 17 item 17)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from calibration._atomic import atomic_write
from calibration.calibration_file import save_calibration
from tests.calibration.test_calibration_file import _calibration


@pytest.fixture()
def umask():
    previous = os.umask(0o022)
    try:
        yield lambda mask: os.umask(mask)
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_follow_the_umask(tmp_path, umask):
    path = atomic_write(tmp_path / "a.txt", lambda p: p.write_text("x", encoding="utf-8"))
    assert mode(path) == 0o644  # mkstemp's 0600 made calibration files and board.pdf private
    assert mode(save_calibration(_calibration(), tmp_path / "calib.yaml")) == 0o644
    umask(0o077)
    assert mode(atomic_write(tmp_path / "b.txt", lambda p: p.write_text("x", encoding="utf-8"))) == 0o600


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("old", encoding="utf-8")

    def fail(tmp: Path) -> None:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]
