"""Scoring and storing behind the motion (cell.pipeline): order, the queue bound, and the fault rules of the
pipelined line (a fault never gives OK), and a pipelined capture campaign killed with SIGKILL then resumed."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from acquisition.store import CaptureStore
from cell.inspection import InspectConfig, PartJudge, decide_part, run_inspection
from cell.part_map import PoseResult
from detectors.input_prep import InputSpec
from cell.pipeline import MotionPipeline, worker_store
from detectors.thresholds import ThresholdDecision
from tests.cell.sim_fixtures import LocalContrastDetector, demo_plan, small_cell

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ the pipeline itself
def test_jobs_are_handled_and_returned_in_submission_order_whatever_each_takes():
    rng = random.Random(0)

    def handle(_, job):
        time.sleep(rng.choice([0.0, 0.0, 0.004]))
        return job * 10

    with MotionPipeline(handle, depth=3) as pipeline:
        seen = []
        for job in range(40):
            pipeline.submit(job)
            seen += pipeline.poll()
        seen += pipeline.drain()
    assert [d.job for d in seen] == list(range(40))
    assert [d.result for d in seen] == [10 * j for j in range(40)]
    assert pipeline.pending == 0


def test_submit_blocks_only_when_the_queue_is_full():
    release = threading.Event()
    started = threading.Event()

    def handle(_, job):
        started.set()
        release.wait(10)
        return job

    with MotionPipeline(handle, depth=2) as pipeline:
        pipeline.submit(0)
        assert started.wait(5)  # job 0 is being handled ...
        t0 = time.perf_counter()
        pipeline.submit(1)
        pipeline.submit(2)  # ... and 2 wait: the queue is full, but these did not block
        assert time.perf_counter() - t0 < 0.5
        blocked = threading.Event()
        done_submitting = threading.Event()

        def robot():
            blocked.set()
            pipeline.submit(3)  # no room: waits for the worker
            done_submitting.set()

        thread = threading.Thread(target=robot)
        thread.start()
        assert blocked.wait(5)
        assert not done_submitting.wait(0.3), "submit must wait while depth jobs are waiting"
        release.set()
        assert done_submitting.wait(5)
        thread.join()
        results = pipeline.drain()
    assert [d.job for d in results] == [0, 1, 2, 3]
    assert pipeline.max_waiting <= 2 and pipeline.blocked_s > 0.2


def test_a_failing_job_is_its_own_outcome_and_the_worker_goes_on():
    def handle(_, job):
        if job == 1:
            raise ValueError("bad job")
        return job

    with MotionPipeline(handle, depth=1) as pipeline:
        for job in range(3):
            pipeline.submit(job)
        done = pipeline.drain()
    assert [d.ok for d in done] == [True, False, True]
    assert isinstance(done[1].error, ValueError) and done[2].result == 2


def test_depth_zero_handles_in_the_callers_thread_with_the_callers_resource():
    threads = []

    def handle(resource, job):
        threads.append(threading.get_ident())
        return resource, job

    with MotionPipeline(handle, depth=0, inline_resource="mine") as pipeline:
        pipeline.submit(1)
        assert [(d.result) for d in pipeline.poll()] == [("mine", 1)]
    assert threads == [threading.get_ident()]


def test_the_worker_store_is_its_own_connection_opened_in_the_worker_thread(tmp_path):
    with CaptureStore(tmp_path / "s", create=True) as store:
        opened_in = []

        def open_store():
            opened_in.append(threading.get_ident())
            return worker_store(store)()

        with MotionPipeline(lambda s, job: (s is not store, threading.get_ident()), depth=1,
                            open_resource=open_store) as pipeline:
            pipeline.submit(0)
            (done,) = pipeline.drain()
        separate, handled_in = done.result
    assert separate and opened_in == [handled_in] and handled_in != threading.get_ident()


def test_a_worker_resource_that_cannot_be_opened_is_raised_as_itself():
    from acquisition.errors import StoreError

    def refuse():
        raise StoreError("/nowhere: no such capture store")

    with pytest.raises(StoreError, match="no such capture store"):
        MotionPipeline(lambda r, j: j, depth=1, open_resource=refuse)


def test_the_part_decision_is_one_function_of_the_scored_poses():
    judge = PartJudge(ThresholdDecision(1.0, "manual"))  # no part geometry: the per-image rule
    pose = lambda pid, s: PoseResult(pid, s, np.zeros((4, 5), np.float32), np.zeros(6), (8, 10))  # noqa: E731
    assert decide_part([pose("a", 0.2), pose("b", 0.9)], judge, planned=2).verdict == "OK"
    nok = decide_part([pose("a", 0.2), pose("b", 1.5)], judge, planned=2)
    assert (nok.verdict, nok.worst_pose, nok.score) == ("NOK", "b", 1.5)
    assert decide_part([pose("a", float("nan")), pose("b", 0.1)], judge, planned=2).verdict == "error"
    assert decide_part([], judge, planned=2).verdict == "error"
    missing = decide_part([pose("a", 0.2)], judge, planned=2)  # a pose of the plan was never scored
    assert missing.verdict == "error" and "1 of 2" in missing.reason


# ------------------------------------------------------------------ the pipelined line on the small sim cell
class SlowContrastDetector(LocalContrastDetector):
    """LocalContrastDetector that takes ``delay_s`` per call and records its calls (thread-safe)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self.lock = threading.Lock()

    def predict(self, images):
        time.sleep(self.delay_s)
        out = super().predict(images)
        with self.lock:
            self.calls += 1
        return out


def run_line(tmp_path, parts, *, detector, threshold=1e9, depth=2, arm=None, on_part=None, config=None,
             defect_rate=0.5):
    cell = small_cell(seed=1, defect_rate=defect_rate)
    campaign, plan = demo_plan(cell)
    config = config or InspectConfig(pipeline_depth=depth)
    with CaptureStore(tmp_path / "store", create=True) as store, cell:
        if arm is not None:
            arm(cell)
        summary = run_inspection(
            robot=cell.robot, camera=cell.camera, store=store, plan=plan, speed=campaign.plan.speed,
            accel=campaign.plan.accel, envelope=cell.envelope, parts=parts, campaign="line", detector=detector,
            spec=InputSpec(mode="resize"), threshold=ThresholdDecision(threshold, "manual"), config=config,
            on_new_part=cell.on_new_part, on_part=on_part,
        )
        records = store.inspections()
        captures = store.captures(campaign="line")
    return summary, records, captures, plan


def test_pipelined_line_reports_and_records_parts_in_order_with_the_sequential_verdicts(tmp_path):
    sequential, _, _, _ = run_line(tmp_path / "s", 4, detector=SlowContrastDetector(), depth=0)
    part_scores = sorted(r.max_score for r in sequential.results)
    threshold = (part_scores[1] + part_scores[2]) / 2  # two parts above, two below
    console = []
    pipelined, records, captures, plan = run_line(
        tmp_path / "p", 4, detector=SlowContrastDetector(0.02), threshold=threshold, depth=3,
        on_part=lambda r, i, n: console.append((i, r.part_id)),
    )
    ids = [f"line-{i:04d}" for i in range(1, 5)]
    assert console == list(enumerate(ids, start=1))
    assert [r.part_id for r in records] == ids and [r.part_id for r in pipelined.results] == ids
    assert [c.part_id for c in captures] == [pid for pid in ids for _ in plan]  # rows in part and pose order
    assert [c.pose_id for c in captures[: len(plan)]] == [p.pose_id for p in plan]
    # the same parts, scored behind the motion or not, get the same scores, and the verdicts they imply
    for a, b in zip(pipelined.results, sequential.results):
        assert a.pose_scores == pytest.approx(b.pose_scores, rel=1e-6)
    expected = ["NOK" if r.max_score > threshold else "OK" for r in sequential.results]
    assert sorted(expected) == ["NOK", "NOK", "OK", "OK"]
    assert [r.verdict for r in pipelined.results] == expected == [r.verdict for r in records]
    for r in pipelined.results:  # heatmaps: the poses above the threshold of each NOK part, nothing else
        above = sorted(pid for pid, score in r.pose_scores.items() if score > threshold) if r.verdict == "NOK" else []
        assert sorted(Path(h).name.removesuffix("_heatmap.png") for h in r.heatmaps) == above
        assert all((tmp_path / "p" / "store" / h).is_file() for h in r.heatmaps)


def test_the_robot_is_never_more_than_the_queue_ahead_of_the_scoring(tmp_path):
    detector = SlowContrastDetector(0.05)
    depth = 2
    ahead = []

    def arm(cell):
        real_capture = cell.camera.capture
        taken = {"n": 0}

        def capture(**kwargs):
            frame = real_capture(**kwargs)
            with detector.lock:
                # captured before this one and not yet scored (waiting, or being scored)
                ahead.append(taken["n"] - detector.calls)
            taken["n"] += 1
            return frame

        cell.camera.capture = capture

    summary, _, captures, plan = run_line(tmp_path, 3, detector=detector, depth=depth, arm=arm)
    assert [r.verdict for r in summary.results] == ["OK"] * 3 and len(captures) == 3 * len(plan)
    assert max(ahead) <= depth + 1  # depth waiting + the one being scored
    assert max(ahead) >= depth, f"the robot never got ahead of the scoring: {ahead}"


def test_a_robot_fault_at_pose_k_while_pose_k_minus_1_is_scored_makes_the_part_an_error(tmp_path):
    """Pose 2 of part 2 is being scored (it waits until the robot has faulted) when the move to pose 3
    raises a protective stop: the part is an error, never OK, and its poses 1-2 are stored and scored."""
    faulted = threading.Event()
    scoring_during_fault = []

    class WaitsForTheFault(SlowContrastDetector):
        def predict(self, images):
            if self.calls == 5:  # pose 2 of part 2 (4 poses per part)
                scoring_during_fault.append(faulted.wait(10))
            return super().predict(images)

    def arm(cell):
        real_move = cell.robot.move_linear

        def move(*args, **kwargs):
            try:
                return real_move(*args, **kwargs)
            except Exception:
                faulted.set()
                raise

        cell.robot.move_linear = move
        cell.robot.inject_fault("protective_stop", on_move=7)  # part 2, pose 3

    summary, records, captures, plan = run_line(tmp_path, 3, detector=WaitsForTheFault(), arm=arm)
    assert scoring_during_fault == [True]
    assert [r.verdict for r in summary.results] == ["OK", "error", "OK"]
    part2 = summary.results[1]
    assert "ProtectiveStop" in part2.reason and part2.score is None
    assert set(part2.pose_scores) == {p.pose_id for p in plan[:2]}
    assert [r.verdict for r in records] == ["OK", "error", "OK"]
    assert sum(c.part_id == "line-0002" for c in captures) == 2
    assert summary.stopped_early is None  # recovered, the line went on


def test_a_scoring_exception_makes_the_part_an_error_and_the_line_goes_on(tmp_path):
    class FailsOnce(SlowContrastDetector):
        def predict(self, images):
            if self.calls == 2:
                self.calls += 1
                raise RuntimeError("CUDA error: an illegal memory access")
            return super().predict(images)

    summary, records, captures, plan = run_line(tmp_path, 2, detector=FailsOnce())
    assert [r.verdict for r in summary.results] == ["error", "OK"]
    assert "RuntimeError" in summary.results[0].reason and "illegal memory access" in summary.results[0].reason
    assert [r.verdict for r in records] == ["error", "OK"]
    assert summary.results[0].score is None


@pytest.mark.parametrize("where", ["score", "map"])
def test_a_nan_at_the_last_pose_makes_the_part_an_error(tmp_path, where):
    class NaNAtLastPose(SlowContrastDetector):
        def predict(self, images):
            prediction = super().predict(images)
            if self.calls == 4:  # the part's last pose: the verdict is decided when it is scored
                prediction.anomaly_map[:, :3, :3] = np.nan
                if where == "score":
                    prediction.score[:] = np.nan
            return prediction

    summary, records, _, _ = run_line(tmp_path, 1, detector=NaNAtLastPose(0.01))
    assert summary.results[0].verdict == "error" and records[0].verdict == "error"
    assert "non-finite" in summary.results[0].reason


def test_on_error_stop_waits_for_the_verdict_before_the_next_part(tmp_path):
    class FailsFirstPart(SlowContrastDetector):
        def predict(self, images):
            if self.calls == 3:  # the last pose of part 1
                self.calls += 1
                raise RuntimeError("model crashed")
            return super().predict(images)

    summary, records, captures, plan = run_line(
        tmp_path, 3, detector=FailsFirstPart(0.02), config=InspectConfig(on_error="stop", pipeline_depth=2))
    assert [r.verdict for r in summary.results] == ["error"]
    assert "on_error: stop" in summary.stopped_early and len(records) == 1
    assert {c.part_id for c in captures} == {"line-0001"}  # the next part was never started


# ------------------------------------------------------------------ kill a pipelined campaign, then --resume
def _small_cell_file(root: Path, realtime_factor: float) -> Path:
    cell = yaml.safe_load((REPO / "configs" / "cells" / "sim.yaml").read_text())
    cell["camera"].update(width=320, height=256, pixel_size_um=21.2)
    cell["scene"].update(sheet_width_m=0.12, sheet_height_m=0.10)
    cell["clock"] = {"realtime_factor": realtime_factor}
    path = root / "cell.yaml"
    path.write_text(yaml.safe_dump(cell))
    return path


def _assert_complete_once(store: CaptureStore, name: str, parts: int, poses: int) -> None:
    keys = [(c.part_id, c.pose_id) for c in store.captures(campaign=name)]
    assert len(keys) == len(set(keys)) == parts * poses
    assert store.verify().ok and store.verify().orphans == []


def test_cli_capture_killed_mid_campaign_resumes_with_nothing_lost_or_duplicated(tmp_path):
    """`cell capture` (real subprocess, real-time sim, writes behind the motion) is SIGKILLed once a few
    captures are committed; `--resume` completes it: every (part, pose) exactly once, earlier rows untouched."""
    from cell.cli import main

    cell_file = _small_cell_file(tmp_path, realtime_factor=1.0)
    campaign = REPO / "configs" / "campaigns" / "demo.yaml"
    store_dir = tmp_path / "store"
    args = ["capture", "--cell", str(cell_file), "--campaign", str(campaign), "--parts", "4", "--out",
            str(store_dir), "--name", "c"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = f"import sys; from cell.cli import main; sys.exit(main({args!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if (store_dir / "store.json").exists():
            with CaptureStore(store_dir) as peek:
                committed = len(peek.captures())
            if committed >= 5:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    with CaptureStore(store_dir) as store:
        before = store.captures()
        assert 5 <= len(before) < 16 and store.verify().ok
    assert main([*args, "--resume"]) == 0
    with CaptureStore(store_dir) as store:
        _assert_complete_once(store, "c", 4, 4)
        assert [c.id for c in store.captures()][: len(before)] == [c.id for c in before]
        for rec in before:
            assert store.get_capture(rec.id).sha256 == rec.sha256
        summary = json.loads((store_dir / "campaigns" / "c" / "summary.json").read_text())
        assert summary["captures_new"] == 16 - len(before) and summary["status"] == "completed"


def _child_killed_with_frames_queued(root: str, marker: str) -> None:
    """Run a pipelined campaign on the fast sim cell whose store writes are slow; SIGKILL this process right
    after an image rename (row not committed) while frames the robot already took wait for the writer."""
    from cell.campaign import run_campaign
    from tests.cell.sim_fixtures import demo_plan, small_cell

    real_replace = os.replace
    count = {"renamed": 0, "taken": 0}

    def replace(src, dst):
        if "/images/" not in str(dst):
            return real_replace(src, dst)
        count["renamed"] += 1
        time.sleep(0.3)  # a slow disk: the robot gets ahead of the writer
        real_replace(src, dst)
        # from the 5th image on, once 2 frames taken by the robot wait behind this one (or at the 12th):
        # the image is in place, its row not committed
        if count["renamed"] >= 5 and (count["taken"] - count["renamed"] >= 2 or count["renamed"] == 12):
            Path(marker).write_text(json.dumps(count))
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    cell = small_cell(seed=2)
    campaign, plan = demo_plan(cell)
    real_capture = cell.camera.capture

    def capture(**kwargs):
        frame = real_capture(**kwargs)
        count["taken"] += 1
        return frame

    cell.camera.capture = capture
    with CaptureStore(root, create=True) as store, cell:
        run_campaign(cell.robot, cell.camera, store, plan, 4, campaign="q", envelope=cell.envelope,
                     speed=campaign.plan.speed, accel=campaign.plan.accel, on_new_part=cell.on_new_part,
                     pipeline_depth=3)
    sys.exit(3)  # never reached when killed


def test_campaign_killed_with_frames_waiting_for_the_writer_resumes_exactly(tmp_path):
    from cell.campaign import run_campaign

    root, marker = tmp_path / "ds", tmp_path / "marker.json"
    code = ("from tests.cell.test_pipeline import _child_killed_with_frames_queued; "
            f"_child_killed_with_frames_queued({str(root)!r}, {str(marker)!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    count = json.loads(marker.read_text())
    assert count["taken"] - count["renamed"] >= 2, count  # frames were taken but not written when killed
    cell = small_cell(seed=2)
    campaign, plan = demo_plan(cell)
    with CaptureStore(root) as store, cell:
        before = store.captures()
        committed = count["renamed"] - 1  # the last renamed image never got its row
        assert len(before) == committed and store.verify().ok
        part, pose = divmod(committed, len(plan))
        assert store.verify().orphans == [f"images/q/q-{part + 1:04d}/{plan[pose].pose_id}.png"]
        summary = run_campaign(cell.robot, cell.camera, store, plan, 4, campaign="q", envelope=cell.envelope,
                               speed=campaign.plan.speed, accel=campaign.plan.accel, on_new_part=cell.on_new_part,
                               resume=True, pipeline_depth=3)
        assert summary.status == "completed" and summary.captures_new == 16 - committed
        _assert_complete_once(store, "q", 4, len(plan))
        assert [c.sha256 for c in store.captures()][:committed] == [c.sha256 for c in before]
