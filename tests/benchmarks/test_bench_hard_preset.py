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


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "hard.json"
    tiny = {"image_size": 64, "pretrain_dim": 64, "target_dim": 64, "meta_epochs": 1, "epochs_per_meta": 1}
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_hard_preset", "--train-parts", "3",
                           "--good-parts", "1", "--defective-parts", "1", "--contrasts", "0.5", "--rules", "max,kth",
                           "--overrides", json.dumps(tiny), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["sweep"]) == {"0.5"} and result["part_level_contrast"] == 0.5
    assert len(result["part_level"]["fusion"]) == 2  # one section per rule
    assert result["part_level"]["old_rule"]["roc"] and "loadavg_before" in result
