"""benchmarks/bench_hard_preset.py: the hard cell it builds, its per-image AUROC and ROC points, and (slow) one
run end to end at its smallest settings (no numbers asserted: only that it still works and writes its JSON)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import bench_hard_preset as bench

REPO = Path(__file__).resolve().parents[2]


def test_the_hard_cell_takes_the_plans_sheet_size_the_camera_and_a_swept_strength():
    config = bench.hard_cell_config(bench.DEFAULT_PLAN, "small", defect_contrast=0.3)
    assert config.scene.difficulty == "hard"
    assert (config.scene.sheet_width_m, config.scene.sheet_height_m) == (0.12, 0.10)
    assert (config.camera.width, config.camera.height) == (320, 256)
    assert config.scene.hard.defect_contrast == 0.3
    preset = bench.hard_cell_config(bench.DEFAULT_PLAN, "full").scene.hard
    assert preset.defect_contrast == type(preset)().defect_contrast and config.scene.hard.glints == preset.glints


def test_a_swept_strength_out_of_range_is_refused():
    with pytest.raises(ValueError, match="defect_contrast"):
        bench.hard_cell_config(bench.DEFAULT_PLAN, "small", defect_contrast=1.5)


def _views(scores, first_id):
    return {f"p{i}": [(SimpleNamespace(id=first_id + i, pose_id="a"), s, None)] for i, s in enumerate(scores)}


def test_image_auroc_counts_only_images_that_show_a_defect_and_splits_by_kind():
    good = _views([0.1, 0.2, 0.3, 0.4], 0)
    defective = _views([0.35, 0.9, 0.0], 100)  # the last image of a defective part shows no defect
    masks = {100: SimpleNamespace(area_px=5, types=("stain",), defect_type="stain"),
             101: SimpleNamespace(area_px=9, types=("fold",), defect_type="fold"),
             102: SimpleNamespace(area_px=0, types=(), defect_type="good")}
    got = bench.image_auroc(good, defective, masks)
    assert got["defect_images"] == 2 and got["good_images"] == 4
    assert got["auroc"] == pytest.approx((3 + 4) / 8)
    assert got["by_kind"]["fold"]["auroc"] == 1.0 and got["by_kind"]["stain"]["auroc"] == 0.75


def test_roc_points_run_from_nothing_rejected_to_everything_rejected():
    points = bench.roc_points(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True]))
    assert points[0][:2] == [0.0, 0.0] and points[-1][:2] == [1.0, 1.0]
    assert all(b[0] >= a[0] and b[1] >= a[1] for a, b in zip(points, points[1:]))


def test_rules_parse_with_their_k():
    assert bench.parse_rules("max,kth,kth:3,", 2) == [("max", 2), ("kth", 2), ("kth", 3)]


def _section(val_frr, val_auroc, test_frr):
    return {"validation": {"at_zero_miss": {"false_reject_rate": val_frr}, "auroc": val_auroc},
            "rules": {"part_map": {"at_zero_miss": {"false_reject_rate": test_frr}}}}


def test_the_rule_is_chosen_on_validation_parts_never_on_the_test_parts():
    sections = {"max": _section(0.5, 0.90, 0.0), "mean": _section(0.25, 0.80, 0.9), "kth (k=3)": _section(0.25, 0.95, 0.9)}
    assert bench.choose_rule(sections) == "kth (k=3)"  # lowest validation FRR, then AUROC; test FRR ignored
    sections["kth (k=3)"]["validation"]["auroc"] = 0.80
    assert bench.choose_rule(sections) == "mean"  # a full tie: the first listed


def test_the_sheet_bootstrap_interval_brackets_the_auroc():
    masks = {100 + i: SimpleNamespace(area_px=5) for i in range(6)}
    good = {f"g{i}": [(None, s, None)] for i, s in enumerate([0.1, 0.2, 0.5, 0.3])}
    separated = {f"d{i}": [(SimpleNamespace(id=100 + i), s, None)] for i, s in enumerate([0.6, 0.7, 0.8])}
    assert bench.sheet_bootstrap(good, separated, masks, reps=50) == [1.0, 1.0]
    mixed = {f"d{i}": [(SimpleNamespace(id=100 + i), s, None)] for i, s in enumerate([0.15, 0.4, 0.8])}
    lo, hi = bench.sheet_bootstrap(good, mixed, masks, reps=200)
    point = bench.image_auroc(good, mixed, {k: SimpleNamespace(area_px=5, types=("stain",), defect_type="stain")
                                            for k in masks})["auroc"]
    assert 0.0 <= lo < point < hi <= 1.0


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "hard.json"
    tiny = {"image_size": 64, "pretrain_dim": 64, "target_dim": 64, "meta_epochs": 1, "epochs_per_meta": 1}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_hard_preset", "--train-parts", "3",
                           "--good-parts", "1", "--defective-parts", "1", "--holdout-parts", "1", "--val-good", "1",
                            "--val-defective", "1", "--contrasts", "0.5", "--rules", "max,kth:3", "--ablate", "glints",
                            "--ablate-parts", "1",
                           "--overrides", json.dumps(tiny), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["sweep"]) == {"0.5"} and result["part_level_contrast"] == 0.5
    assert set(result["part_level"]["fusion"]) == {"max", "kth (k=3)"}  # one section per rule
    assert result["part_level"]["chosen_on_validation"] in result["part_level"]["fusion"]
    assert {"with_every_nuisance", "without_glints"} <= set(result["nuisance_ablation"])
    assert result["part_level"]["old_rule"]["roc"] and "loadavg_before" in result
