"""`cell capture` stopped by SIGTERM or SIGINT (issue 17 item 7): the campaign is closed as `interrupted`,
nothing captured is lost, and the one error line names --resume. A real subprocess gets a real signal."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from acquisition.store import CaptureStore

REPO = Path(__file__).resolve().parents[2]


def write_cell(tmp_path: Path) -> tuple[Path, Path]:
    cell = yaml.safe_load((REPO / "configs" / "cells" / "sim.yaml").read_text(encoding="utf-8"))
    cell["seed"] = 3
    cell["camera"].update({"width": 160, "height": 128, "focal_length_mm": 4.0, "noise": {"enabled": False}})
    cell.setdefault("scene", {}).update({"texel_size_m": 4.0e-4})
    cell["clock"] = {"realtime_factor": 2.0}  # moves take real time: the campaign is still running when signalled
    cell_path = tmp_path / "cell.yaml"
    cell_path.write_text(yaml.safe_dump(cell), encoding="utf-8")
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(yaml.safe_dump({"plan": {"footprint_m": [0.2, 0.16], "overlap": 0.1, "shots_per_point": 1}}),
                         encoding="utf-8")
    return cell_path, plan_path


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_capture_closes_the_campaign_as_interrupted(tmp_path, signum):
    cell_path, plan_path = write_cell(tmp_path)
    out = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "cell.cli", "capture", "--cell", str(cell_path), "--campaign", str(plan_path),
         "--parts", "40", "--out", str(out), "--name", "sig"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        images = out / "images" / "sig"
        deadline = time.monotonic() + 120
        while not (images.is_dir() and len(list(images.rglob("*.png"))) >= 2):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no capture within 120 s"
            time.sleep(0.1)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    name = signal.Signals(signum).name
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    assert f"campaign 'sig' interrupted by {name} at part sig-" in errors[0]
    assert "run again with --resume to continue" in errors[0]
    assert "interrupted" in stdout  # the summary table is shown too
    with CaptureStore(out) as store:
        status = store.campaign_status("sig")
        assert status.status == "interrupted"
        assert status.summary["error"] == f"interrupted by {name}"
        assert status.summary["captures_in_store"] == status.n_captures >= 2
        assert store.verify().ok
