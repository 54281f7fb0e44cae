"""The line decides on the part map (issue 18, item 4): defects in mm in the store and in the line result,
the part-map artifacts, and ``error`` on partial coverage or a NaN map, never OK."""
from __future__ import annotations

import json

import numpy as np
import pytest

from acquisition.store import CaptureStore
from cell.inspection import InspectConfig, PartJudge, run_inspection, to_line_result
from detectors.input_prep import InputSpec
from cell.part_map import PartFrame, PartMapConfig
from detectors.thresholds import ThresholdDecision
from tests.cell.sim_fixtures import LocalContrastDetector, demo_plan, small_cell


class NaNMapDetector(LocalContrastDetector):
    """A finite score but a map with NaN in it (a model fault the score hides)."""

    def predict(self, images):
        prediction = super().predict(images)
        prediction.anomaly_map[:, :3, :3] = np.nan
        prediction.score[:] = 0.1
        return prediction


def run(tmp_path, parts, part_threshold, *, plan_slice=slice(None), detector=None, defect_rate=1.0,
        spec=InputSpec(mode="tile", scale=1.0), config=InspectConfig(heatmaps="none")):
    cell = small_cell(seed=1, defect_rate=defect_rate)
    campaign, plan = demo_plan(cell)
    judge = PartJudge(ThresholdDecision(part_threshold, "manual"), cell.camera_model, cell.T_flange_cam,
                      PartFrame.from_plan(campaign.plan), PartMapConfig(fusion="kth", k=2))
    published = []
    with CaptureStore(tmp_path / "store", create=True) as store, cell:
        summary = run_inspection(
            robot=cell.robot, camera=cell.camera, store=store, plan=plan[plan_slice], speed=campaign.plan.speed,
            accel=campaign.plan.accel, envelope=cell.envelope, parts=parts, campaign="line",
            detector=detector or LocalContrastDetector(), spec=spec,
            threshold=ThresholdDecision(1e9, "manual"), config=config,
            on_new_part=cell.on_new_part, judge=judge,
            campaign_config={"plan": campaign.plan.model_dump(mode="json"), "geometry": cell.describe()},
            on_part=lambda r, i, n: published.append(r),
        )
        records = store.inspections()
        stored_config = store.campaign_status("line").config
    return summary, records, stored_config


def test_nok_part_lists_its_defects_in_mm_in_the_store_and_the_line_result(tmp_path):
    summary, records, config = run(tmp_path, 1, part_threshold=0.25)
    result, record = summary.results[0], records[0]
    assert result.verdict == "NOK" and record.verdict == "NOK"
    assert result.reason.startswith(f"{len(result.defects)} defect") and " mm2 at (" in result.reason
    scores = record.scores
    assert scores["rule"] == "part_map" and scores["part_threshold"] == 0.25 and scores["fusion"] == "kth (k=2)"
    assert scores["coverage"] == pytest.approx(1.0, abs=1e-3)
    defects = scores["defects"]
    assert defects and all({"x_mm", "y_mm", "area_mm2", "bbox_mm", "peak", "poses"} <= set(d) for d in defects)
    assert all(abs(d["x_mm"]) <= 60 and abs(d["y_mm"]) <= 50 and d["peak"] > 0.25 and d["poses"] for d in defects)
    store = tmp_path / "store"
    assert (store / scores["part_map"]).stat().st_size > 1000
    fused = np.load(store / scores["part_map_array"])
    assert fused.shape == (200, 240) and fused.dtype == np.float32  # 120 x 100 mm at 0.5 mm
    assert np.nanmax(fused) == pytest.approx(scores["part_score"], rel=1e-5)
    line = to_line_result(result, campaign="line", index=1, threshold=ThresholdDecision(0.25, "manual"),
                          model_dir=None, started_at="t0", finished_at="t1").to_dict()
    assert line["defect_count"] == len(defects) and line["defects"][0]["x_mm"] == defects[0]["x_mm"]
    assert line["coverage"] == pytest.approx(1.0, abs=1e-3) and line["part_map"] == scores["part_map"]
    assert line["score"] == pytest.approx(scores["part_score"])
    assert config["plan"]["part_size_m"] == [0.12, 0.10] and config["geometry"]["camera_model"]["width"] == 320


def test_ok_part_has_no_defects_and_scores_below_the_part_threshold(tmp_path):
    summary, records, _ = run(tmp_path, 1, part_threshold=1e9)
    assert summary.results[0].verdict == "OK" and records[0].scores["defects"] == []
    assert "part score" in summary.results[0].reason


def test_a_plan_that_misses_part_of_the_part_is_an_error_never_ok(tmp_path):
    summary, records, _ = run(tmp_path, 1, part_threshold=1e9, plan_slice=slice(0, 2))
    assert summary.results[0].verdict == "error" and records[0].verdict == "error"
    assert "covered only" in summary.results[0].reason and "partial coverage" in summary.results[0].reason


def test_a_nan_in_a_map_is_an_error_never_ok(tmp_path):
    # resize mode: the detector's own (finite) score is the image score, only its map holds the NaN
    summary, records, _ = run(tmp_path, 1, part_threshold=1e9, detector=NaNMapDetector(), spec=InputSpec(mode="resize"))
    assert summary.results[0].verdict == "error" and "NaN" in summary.results[0].reason
    assert records[0].verdict == "error"


def test_the_worker_behind_the_motion_builds_the_same_part_map_as_the_sequential_loop(tmp_path):
    # the accumulator is fed in the pipeline's worker as each pose is scored; depth 0 does it in the robot's thread
    pipelined, records, _ = run(tmp_path / "p", 2, part_threshold=0.25,
                                config=InspectConfig(heatmaps="nok", pipeline_depth=2))
    sequential, _, _ = run(tmp_path / "s", 2, part_threshold=0.25, config=InspectConfig(heatmaps="nok", pipeline_depth=0))
    for a, b in zip(pipelined.results, sequential.results):
        assert (a.verdict, a.score, len(a.defects)) == (b.verdict, pytest.approx(b.score), len(b.defects))
    # NOK on the part map although no pose is above the (huge) image threshold: its worst pose is still drawn
    nok = [r for r in pipelined.results if r.verdict == "NOK"]
    assert nok and all([h.rsplit("/", 1)[1] for h in r.heatmaps] == [f"{r.worst_pose}_heatmap.png"] for r in nok)
    assert all((tmp_path / "p" / "store" / h).is_file() for r in nok for h in r.heatmaps)
    assert [r.part_id for r in records] == [r.part_id for r in pipelined.results]
