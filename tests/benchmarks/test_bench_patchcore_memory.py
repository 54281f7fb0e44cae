"""The PatchCore memory benchmark on a few tiny random images (CPU, seconds): the real fit's record and the
``--greedy-steps`` memory stand-in, which must allocate a bank of the real size and say it is not a model."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks import bench_patchcore_memory
from detectors.patchcore.model import greedy_coreset

TINY = ["--images", "3", "--image-size", "64", "--score", "1", "--set", "coreset_ratio=0.5", "--threads", "1"]


def test_the_real_fit_is_recorded_with_its_phases(tmp_path: Path) -> None:
    assert bench_patchcore_memory.main([*TINY, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "patchcore_memory_3.json").read_text())
    assert doc["complete"] is True and doc["selection"]["kind"].startswith("greedy coreset")
    assert doc["fit_stats"]["bank_size"][0] == doc["expected"]["bank_rows"]
    assert {"pass1_features", "greedy_coreset", "pass2_bank", "scoring"} <= set(doc["phases"])
    assert doc["peak_rss_mb"] >= doc["rss_after_model_mb"] > 0
    assert doc["scoring"]["finite"] is True


def test_the_stand_in_allocates_the_full_bank_and_is_labelled(tmp_path: Path) -> None:
    assert bench_patchcore_memory.main([*TINY, "--greedy-steps", "2", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "patchcore_memory_3_greedy2.json").read_text())
    assert "not a usable model" in doc["selection"]["kind"] and doc["selection"]["greedy_steps"] == 2
    # the bank has the real fit's row count: pass 2 allocates what the full greedy would
    assert doc["fit_stats"]["bank_size"][0] == doc["expected"]["bank_rows"]


def test_the_stand_in_starts_with_the_greedy_picks_and_never_repeats_a_point() -> None:
    columns = torch.randn(8, 200, generator=torch.Generator().manual_seed(1))
    picked = bench_patchcore_memory.greedy_then_random(5)(columns, 60, first=7)
    assert picked.shape == (60,) and picked.dtype == torch.long
    assert torch.equal(picked[:5], greedy_coreset(columns, 5, first=7))
    assert picked.unique().numel() == 60 and int(picked.min()) >= 0 and int(picked.max()) < 200


def test_a_bad_step_count_is_one_line(capsys) -> None:
    assert bench_patchcore_memory.main([*TINY, "--greedy-steps", "0"]) == 2
    assert "--greedy-steps must be >= 1, got 0" in capsys.readouterr().err
