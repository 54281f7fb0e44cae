"""The line loop: verdicts per part, faults never give OK, records and heatmaps land in the store."""
from __future__ import annotations

import numpy as np
import pytest

from acquisition.store import CaptureStore
from cell.inspection import InspectConfig, run_inspection
from cell.part_threshold import PartThreshold
from detectors.input_prep import InputSpec
from detectors.thresholds import ThresholdDecision
from tests.cell.sim_fixtures import LocalContrastDetector, demo_plan, small_cell


class NaNAtSecondPoseDetector(LocalContrastDetector):
    """Like LocalContrastDetector, but its second call returns NaN maps (a model that overflowed)."""

    calls = 0

    def predict(self, images):
        prediction = super().predict(images)
        NaNAtSecondPoseDetector.calls += 1
        if NaNAtSecondPoseDetector.calls == 2:
            prediction.anomaly_map[:] = np.nan
            prediction.score[:] = np.nan
        return prediction


def run(tmp_path, parts, *, threshold=10.0, config=InspectConfig(), arm=None, defect_rate=0.5, detector=None):
    cell = small_cell(seed=1, defect_rate=defect_rate)
    campaign, plan = demo_plan(cell)
    with CaptureStore(tmp_path / "store", create=True) as store, cell:
        if arm is not None:
            arm(cell)
        summary = run_inspection(
            robot=cell.robot, camera=cell.camera, store=store, plan=plan, speed=campaign.plan.speed,
            accel=campaign.plan.accel, envelope=cell.envelope, parts=parts, campaign="line",
            detector=detector or LocalContrastDetector(), spec=InputSpec(mode="tile", scale=1.0),
            threshold=ThresholdDecision(threshold, "manual"), config=config, on_new_part=cell.on_new_part,
        )
        records = store.inspections()
        captures = store.captures(campaign="line")
    return summary, records, captures, plan


def test_every_part_gets_a_verdict_row_and_every_pose_is_captured(tmp_path):
    summary, records, captures, plan = run(tmp_path, parts=3, threshold=1e9)
    assert [r.verdict for r in summary.results] == ["OK", "OK", "OK"]
    assert len(records) == 3 and {r.verdict for r in records} == {"OK"}
    assert len(captures) == 3 * len(plan)
    assert all(set(r.pose_scores) == {p.pose_id for p in plan} for r in summary.results)
    assert all(r.truth in ("good", "defective") for r in summary.results)


def test_a_score_above_threshold_is_nok_with_heatmaps_in_the_store(tmp_path):
    summary, records, _, plan = run(tmp_path, parts=1, threshold=-1.0)
    result = summary.results[0]
    assert result.verdict == "NOK" and result.worst_pose in result.pose_scores
    assert len(result.heatmaps) == len(plan)
    assert all((tmp_path / "store" / path).is_file() for path in result.heatmaps)
    assert records[0].verdict == "NOK" and records[0].worst_pose == result.worst_pose


def test_protective_stop_makes_the_part_an_error_and_the_loop_recovers(tmp_path):
    # the 6th move is the 2nd pose of the 2nd part: that part must be "error", never OK
    summary, records, _, _ = run(
        tmp_path, parts=3, threshold=1e9, arm=lambda cell: cell.robot.inject_fault("protective_stop", on_move=6)
    )
    verdicts = [r.verdict for r in summary.results]
    assert verdicts == ["OK", "error", "OK"]
    assert "ProtectiveStop" in summary.results[1].reason
    assert [r.verdict for r in records] == verdicts
    assert summary.stopped_early is None


def test_camera_timeouts_beyond_retries_are_an_error_not_ok(tmp_path):
    summary, _, _, _ = run(
        tmp_path, parts=1, threshold=1e9, config=InspectConfig(camera_retries=0),
        arm=lambda cell: cell.camera.inject_fault(timeout_on_capture=1),
    )
    assert summary.results[0].verdict == "error"
    assert "CameraTimeout" in summary.results[0].reason


def test_a_non_finite_model_score_is_an_error_not_ok(tmp_path):
    # NaN > threshold is False: compared as a number it would have passed the part as OK.
    NaNAtSecondPoseDetector.calls = 0
    summary, records, _, _ = run(tmp_path, parts=1, threshold=1e9, detector=NaNAtSecondPoseDetector())
    result = summary.results[0]
    assert result.verdict == "error" and records[0].verdict == "error"
    assert "non-finite score (nan)" in result.reason


def test_on_error_stop_ends_the_loop_at_the_first_error(tmp_path):
    summary, records, _, _ = run(
        tmp_path, parts=3, threshold=1e9, config=InspectConfig(on_error="stop"),
        arm=lambda cell: cell.robot.inject_fault("protective_stop", on_move=2),
    )
    assert [r.verdict for r in summary.results] == ["error"]
    assert summary.stopped_early and "on_error: stop" in summary.stopped_early
    assert len(records) == 1


def test_plan_outside_the_envelope_is_refused_before_any_motion(tmp_path):
    from cell.errors import CampaignError

    cell = small_cell()
    campaign, plan = demo_plan(cell)
    bad = [type(plan[0])(pose_id="low", pose=np.array([0.0, -0.45, 0.01, np.pi, 0, 0]), grid_index=(0, 0), shot=0)]
    with CaptureStore(tmp_path / "s", create=True) as store, cell:
        moves = cell.robot.move_count
        with pytest.raises(CampaignError, match="low"):
            run_inspection(
                robot=cell.robot, camera=cell.camera, store=store, plan=bad, speed=0.25, accel=1.2,
                envelope=cell.envelope, parts=1, campaign="line", detector=LocalContrastDetector(),
                spec=InputSpec(mode="tile", scale=1.0), threshold=ThresholdDecision(1.0, "manual"),
                config=InspectConfig(),
            )
        assert cell.robot.move_count == moves


def test_cell_inspect_takes_camera_timeout_and_retries_from_the_cell_file(tmp_path, monkeypatch):
    # The cell file's `capture:` section holds on the line as in a capture campaign.
    from pathlib import Path

    from rich.console import Console

    import cell.commands.inspect as inspect_command
    from cell.cell_factory import CaptureSettings
    from tests.cell.sim_fixtures import DEMO_CAMPAIGN

    cell = small_cell(seed=1)
    cell.config = cell.config.model_copy(update={"capture": CaptureSettings(timeout_s=0.7, camera_retries=0)})
    seen = {}
    from detectors.model_dir import TrainedModel
    from detectors.thresholds import ThresholdDecision

    monkeypatch.setattr(inspect_command, "load_model_for_runtime", lambda directory, **kwargs: TrainedModel(
        directory, LocalContrastDetector(), InputSpec(mode="tile"), ThresholdDecision(value=1.0, policy="manual")))
    monkeypatch.setattr(inspect_command, "run_inspection", lambda **kwargs: seen.update(kwargs["config"].model_dump()))
    monkeypatch.setattr(inspect_command, "read_part_threshold", lambda directory: PartThreshold(
        ThresholdDecision(value=1.0, policy="manual")))
    inspect_command.inspect_on_cell(
        cell=cell, campaign_path=Path(DEMO_CAMPAIGN), model_dir=tmp_path / "model", store_path=tmp_path / "store",
        parts=1, name="line", config=InspectConfig(on_error="stop"),
        threshold_override=1.0, console=Console(file=open(tmp_path / "log.txt", "w")),
    )
    assert seen["camera_retries"] == 0 and seen["capture_timeout_s"] == 0.7 and seen["on_error"] == "stop"


def test_reusing_a_finished_inspections_name_is_refused_and_leaves_it_completed(tmp_path):
    # Issue 17 item 5: the second run used to flip the completed campaign back to `running`, then fail.
    from cell.errors import CampaignError

    run(tmp_path, parts=1, threshold=1e9)
    with pytest.raises(CampaignError, match=r"campaign 'line' already exists .*\(completed\): choose another --name"):
        run(tmp_path, parts=1, threshold=1e9)
    with CaptureStore(tmp_path / "store") as store:
        status = store.campaign_status("line")
    assert status.status == "completed" and status.n_parts == 1


def test_a_lost_link_on_the_simulated_line_is_one_error_part_and_the_line_goes_on(tmp_path):
    # Issue 17 item 6: the sim robot's recover() now reconnects (as URRobot's does), so the loop continues.
    summary, records, _, _ = run(
        tmp_path, parts=3, threshold=1e9, arm=lambda cell: cell.robot.inject_fault("connection_lost", on_move=6)
    )
    verdicts = [r.verdict for r in summary.results]
    assert verdicts == ["OK", "error", "OK"]
    assert "ConnectionLost" in summary.results[1].reason
    assert [r.verdict for r in records] == verdicts and summary.stopped_early is None
