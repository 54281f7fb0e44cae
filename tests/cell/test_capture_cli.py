"""`cell capture` and `cell dataset` on a small simulated cell: happy path, fault + resume, and the one-line
errors for bad input (malformed YAML, unknown keys, wrong types, missing files, full disk, unwritable folder)."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from acquisition.store import CaptureStore, _files
from cell.cli import cli, main
from cell.commands import capture, dataset

REPO = Path(__file__).resolve().parents[2]

# A small, fast cell: 160x128 px camera with a short lens, coarse sheet texture, every part defective.
SMALL_CELL = {
    "seed": 7,
    "camera": {"width": 160, "height": 128, "focal_length_mm": 4.0, "pixel_size_um": 5.3,
               "noise": {"enabled": False}},
    "scene": {"texel_size_m": 4.0e-4, "defects": {"probability": 1.0, "count": [2, 3]}},
}
SMALL_PLAN = {"plan": {"footprint_m": [0.20, 0.16], "overlap": 0.1, "shots_per_point": 1, "speed": 0.4, "accel": 1.5}}


@pytest.fixture(autouse=True)
def register_commands():
    cli.add_command(capture.command)
    cli.add_command(dataset.command)
    yield


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    base = yaml.safe_load((REPO / "configs" / "cells" / "sim.yaml").read_text())
    for key, value in SMALL_CELL.items():
        if isinstance(value, dict):
            base.setdefault(key, {}).update(value)
        else:
            base[key] = value
    cell = tmp_path / "cell.yaml"
    cell.write_text(yaml.safe_dump(base))
    plan = tmp_path / "small.yaml"
    plan.write_text(yaml.safe_dump(SMALL_PLAN))
    return {"cell": cell, "plan": plan, "out": tmp_path / "ds"}


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def capture_args(files: dict[str, Path], parts: int = 2, *extra: str) -> list[str]:
    return ["capture", "--cell", files["cell"], "--campaign", files["plan"], "--parts", str(parts),
            "--out", files["out"], *extra]


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    # exactly one error line, and it is the last thing printed (progress output may precede it)
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def test_shipped_configs_validate() -> None:
    from cell.cell_factory import load_campaign_file, load_cell

    cell = load_cell(REPO / "configs" / "cells" / "sim.yaml")
    plan_config = load_campaign_file(REPO / "configs" / "campaigns" / "sheet_raster.yaml").plan
    plan = cell.plan(plan_config)
    cell.envelope.check_plan(plan, plan_config.speed, plan_config.accel)  # the shipped plan fits the envelope
    assert len(plan) > 3 and cell.config.camera.width == 1280


def test_capture_info_export(files, capsys, tmp_path: Path) -> None:
    code, out, err = run(capture_args(files, 2, "--name", "run1"), capsys)
    assert code == 0, err
    assert "campaign run1: completed" in out and f"images: {files['out']}/images/run1" in out
    with CaptureStore(files["out"]) as store:
        caps = store.captures(campaign="run1")
        n_poses = len(caps) // 2
        assert n_poses >= 2 and {c.part_id for c in caps} == {"run1-0001", "run1-0002"}
        assert store.verify().ok
        assert all(p.label == "defective" for p in store.parts())  # --defect-rate from the cell: 1.0
        assert store.campaign_status("run1").config["seed"] == 7
        rec = caps[0]
        assert store.load_image(rec).shape == (128, 160) and rec.pixel_format == "Mono8"
        assert len(rec.actual_pose) == 6 and len(rec.joints) == 6 and rec.device_timestamp_ns is not None
    summary = json.loads((files["out"] / "campaigns" / "run1" / "summary.json").read_text())
    assert summary["captures_in_store"] == summary["captures_expected"] == 2 * n_poses

    # a second campaign of good parts, so the export has training images
    code, out, err = run(capture_args(files, 2, "--name", "goodrun", "--defect-rate", "0"), capsys)
    assert code == 0, err
    code, out, err = run(["dataset", "info", files["out"], "--json"], capsys)
    assert code == 0, err
    facts = json.loads(out)
    assert facts["parts"] == {"good": 2, "defective": 2, "unlabelled": 0} and facts["verify"]["ok"]
    assert [c["name"] for c in facts["campaigns"]] == ["run1", "goodrun"]
    code, out, err = run(["dataset", "info", files["out"]], capsys)
    assert code == 0 and "verify: ok" in out

    mv = tmp_path / "mvtec"
    code, out, err = run(["dataset", "export", files["out"], "--mvtec", mv, "--train-campaign", "goodrun"], capsys)
    assert code == 0, err
    assert len(list((mv / "train" / "good").glob("goodrun_*.png"))) == 2 * n_poses
    masks = list((mv / "ground_truth").rglob("*_mask.png"))
    assert masks, "defective captures with defects in view must have ground truth"
    for m in masks:
        defect = m.parent.name
        image = mv / "test" / defect / m.name.replace("_mask.png", ".png")
        assert image.is_file()
        values = np.unique(cv2.imread(str(m), cv2.IMREAD_UNCHANGED))
        assert set(values.tolist()) <= {0, 255} and 255 in values


def test_fault_stops_cleanly_and_resume_completes(files, capsys) -> None:
    faulty = yaml.safe_load(files["cell"].read_text())
    faulty["robot"]["faults"] = {"protective_stop_on_move": 3}
    faulty_path = files["cell"].with_name("faulty.yaml")
    faulty_path.write_text(yaml.safe_dump(faulty))
    args = capture_args(files, 2)
    args[2] = faulty_path
    code, out, err = run(args, capsys)
    assert_one_line_error(code, err, "campaign 'small' stopped at part small-0001 pose", "ProtectiveStop",
                          "--resume")
    assert "campaign small: failed" in out
    with CaptureStore(files["out"]) as store:
        kept = len(store.captures())
        assert kept == 2 and store.verify().ok  # two moves succeeded before the stop (the 3rd move)
    code, out, err = run(capture_args(files, 2), capsys)
    assert_one_line_error(code, err, "campaign 'small' already exists", "--resume")
    code, out, err = run(capture_args(files, 2, "--resume"), capsys)
    assert code == 0, err
    with CaptureStore(files["out"]) as store:
        keys = [(c.part_id, c.pose_id) for c in store.captures()]
        assert len(keys) == len(set(keys)) and store.verify().ok
        assert store.campaign_status("small").summary["captures_in_store"] == len(keys)
        assert store.campaign_status("small").summary["captures_skipped"] == kept
    code, out, err = run(capture_args(files, 2, "--resume", "--seed", "8"), capsys)
    assert_one_line_error(code, err, "different configuration")


@pytest.mark.parametrize(
    "mutate,needles",
    [
        (lambda d: d["camera"].update(colour="red"), ["cell.yaml: unknown key 'camera.colour'"]),
        (lambda d: d["camera"].update(width="wide"), ["cell.yaml: key 'camera.width' = 'wide'"]),
        (lambda d: d["robot"].update(backend="kuka"), ["cell.yaml: key 'robot.backend' = 'kuka'", "backend must be sim or ur5"]),
        (lambda d: d["envelope"].update(workspace_max=[0.3, -0.2, 0.25]),
         ["refused before any motion: pose r0c", "above the workspace ceiling 0.250 m"]),
    ],
    ids=["unknown-key", "wrong-type", "unknown-backend", "plan-outside-envelope"],
)
def test_bad_cell_config_one_line(files, capsys, mutate, needles) -> None:
    data = yaml.safe_load(files["cell"].read_text())
    mutate(data)
    files["cell"].write_text(yaml.safe_dump(data))
    code, out, err = run(capture_args(files), capsys)
    assert_one_line_error(code, err, *needles)


def test_malformed_yaml_and_missing_files(files, capsys) -> None:
    files["plan"].write_text("plan:\n  overlap: 0.2\n  speed: [0.1\n")
    code, _, err = run(capture_args(files), capsys)
    assert_one_line_error(code, err, f"{files['plan']}: malformed YAML at line")
    missing = files["cell"].with_name("nope.yaml")
    code, _, err = run(["capture", "--cell", missing, "--campaign", files["plan"], "--parts", "1", "--out", files["out"]], capsys)
    assert_one_line_error(code, err, f"{missing}: file not found")
    files["plan"].write_text(yaml.safe_dump({"plan": {"overlap": "lots"}}))
    code, _, err = run(capture_args(files), capsys)
    assert_one_line_error(code, err, "small.yaml: key 'plan.overlap' = 'lots'")
    code, _, err = run(["dataset", "info", files["cell"].parent], capsys)
    assert_one_line_error(code, err, f"{files['cell'].parent}: not a capture store")
    assert not files["out"].exists()


def test_full_disk_and_unwritable_folder(files, capsys, monkeypatch) -> None:
    blocker = files["out"].parent / "a_file"
    blocker.write_text("x")
    code, _, err = run(capture_args({**files, "out": blocker / "ds"}), capsys)
    assert_one_line_error(code, err, f"cannot create {blocker / 'ds'}")

    real_open = open
    state = {"images": 0, "full": False}

    def filling_disk(path, *args, **kwargs):  # the disk is full from the 2nd image on
        name = str(path)
        if _files.TMP_PREFIX in name:
            if "/images/" in name:
                state["images"] += 1
                state["full"] = state["full"] or state["images"] >= 2
            if state["full"]:
                raise OSError(errno.ENOSPC, "No space left on device", name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", filling_disk)
    code, _, err = run(capture_args(files), capsys)
    monkeypatch.undo()
    assert_one_line_error(code, err, "StoreError: cannot write", "/images/small/small-0001/r0c1s0.png",
                          "no space left on device",
                          "the summary could not be written")
    with CaptureStore(files["out"]) as store:
        report = store.verify()
        assert report.ok and len(store.captures()) == 1  # capture 1 stored; the disk filled at capture 2
        assert store.campaign_status("small").status == "failed"
    code, _, err = run(capture_args(files, 1, "--resume"), capsys)
    assert code == 0, err
    with CaptureStore(files["out"]) as store:
        assert store.verify().ok and store.campaign_status("small").status == "completed"


def test_bad_command_line_values(files, capsys) -> None:
    code, _, err = run(capture_args(files, 1, "--defect-rate", "1.5"), capsys)
    assert_one_line_error(code, err, "--defect-rate = 1.5: must be between 0 and 1")
    code, _, err = run(["capture", "--cell", files["cell"], "--campaign", files["plan"], "--parts", "0",
                        "--out", files["out"]], capsys)
    assert code == 2 and "Traceback" not in err and "--parts" in err


def test_camera_timeout_without_retries_reports_the_failed_pose(files, capsys) -> None:
    data = yaml.safe_load(files["cell"].read_text())
    data["camera"]["faults"] = {"timeout_on_capture": 2}
    data["capture"]["camera_retries"] = 0
    files["cell"].write_text(yaml.safe_dump(data))
    code, out, err = run(capture_args(files, 1), capsys)
    assert_one_line_error(code, err, "campaign 'small': 1 pose(s) failed", "--resume")
    assert "campaign small: incomplete" in out and "failed: part small-0001 pose" in out
    assert "camera timed out 1 time(s)" in out
    data["camera"]["faults"] = {}
    files["cell"].write_text(yaml.safe_dump(data))
    code, out, err = run(capture_args(files, 1, "--resume"), capsys)
    assert code == 0, err
    with CaptureStore(files["out"]) as store:
        status = store.campaign_status("small")
        assert status.status == "completed" and status.summary["captures_new"] == 1
        assert store.verify().ok
