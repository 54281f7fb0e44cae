"""The cell's CPU benchmarks run end to end at their smallest settings and write their JSON (no timings are
asserted: only that each benchmark still works and reports what its README row quotes)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CASES = {
    "bench_store": (["--writes", "1", "--parts", "1"], ["store_writes", "campaign"]),
    "bench_render": (["--frames", "1"], ["capture", "part_generation_s"]),
    "bench_labelling": (["--edits", "1", "--poses", "2"],
                        ["open_image_with_superpixels", "store_mask_edit", "carry_over_per_pose"]),
    "bench_robot": ([], ["kinematics", "campaign"]),
    "bench_cli": (["--runs", "1"], ["help", "loadavg_before"]),
    "bench_calibration": (["--views", "5", "--seeds", "1"], ["summary", "runs"]),
    # ur_rtde against the fake UR controller, harvesters with genicam's simulated producer (no hardware)
    "bench_hardware": ([], ["robot", "camera"]),
    # a real mosquitto broker and asyncua client in the benchmark's process (needs Debian's mosquitto)
    "bench_signals": (["--parts", "3"], ["mqtt", "opcua", "machine"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_benchmark_runs_and_writes_its_results(name: str, tmp_path: Path) -> None:
    args, keys = CASES[name]
    if name == "bench_signals" and not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        pytest.skip("Debian package 'mosquitto' is not installed (apt-get install mosquitto; .ci/run does)")
    out = tmp_path / f"{name}.json"
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *args, "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    for key in keys:
        assert key in result, f"{name}: no '{key}' in {sorted(result)}"


def test_labelling_benchmark_refuses_too_few_poses(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_labelling", "--poses", "1", "--out",
                           str(tmp_path / "x.json")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "argument --poses: must be at least 2, got 1" in done.stderr
    assert not (tmp_path / "x.json").exists()
