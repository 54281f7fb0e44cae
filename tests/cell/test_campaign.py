"""Capture campaigns with fake robot/camera (fault injection): envelope first, faults, retries, resume,
and crash safety of the store when the capturing process is killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from acquisition.camera import Frame
from acquisition.envelope import SafetyEnvelope
from acquisition.errors import CameraLost, CameraTimeout, ConnectionLost, ProtectiveStop, UnreachablePose
from acquisition.robot import RobotStatus
from acquisition.store import CaptureStore, _files
from cell.campaign import CampaignSummary, part_ids, run_campaign
from cell.errors import CampaignError

REPO = Path(__file__).resolve().parents[2]
H, W = 32, 40


@dataclass
class FakePlannedPose:
    pose_id: str
    pose: np.ndarray
    grid_index: tuple[int, int] = (0, 0)
    shot: int = 0


def make_plan(n: int = 4, z: float = 0.4) -> list[FakePlannedPose]:
    return [FakePlannedPose(f"r0c{i}s0", np.array([0.40 + 0.02 * i, -0.10, z, np.pi, 0.0, 0.0]), (0, i), 0)
            for i in range(n)]


class FakeRobot:
    """Moves instantly (or with ``move_delay_s``); ``faults`` maps a 1-based move number to an exception."""

    def __init__(self, faults: dict[int, Exception] | None = None, move_delay_s: float = 0.0,
                 hang_on_move: int | None = None) -> None:
        self.faults = dict(faults or {})
        self.move_delay_s = move_delay_s
        self.hang_on_move = hang_on_move  # from this move on, block (a process waiting to be killed)
        self.moves: list[list[float]] = []
        self._pose = np.array([0.4, -0.1, 0.5, np.pi, 0.0, 0.0])
        self.recovered = 0

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None: ...

    def move_linear(self, pose, speed, accel) -> None:
        n = len(self.moves) + 1
        self.moves.append(list(pose))
        if n in self.faults:
            raise self.faults.pop(n)
        if self.move_delay_s:
            time.sleep(self.move_delay_s)
        if self.hang_on_move is not None and n >= self.hang_on_move:
            time.sleep(120)
        self._pose = np.asarray(pose, dtype=float) + 1e-5

    def move_joints(self, q, speed, accel) -> None: ...

    def stop(self) -> None: ...

    def tcp_pose(self) -> np.ndarray:
        return self._pose.copy()

    def joint_positions(self) -> np.ndarray:
        return np.linspace(-1, 1, 6)

    def status(self) -> RobotStatus:
        return RobotStatus(True, 7, 1, False, False, True)

    def recover(self) -> None:
        self.recovered += 1


class FakeScene:
    """Parts ending in an odd index are defective; a defect shows up in the first pose only."""

    def __init__(self) -> None:
        self.part_id: str | None = None
        self.loaded: list[str] = []

    def load(self, part_id: str) -> str:
        self.part_id = part_id
        self.loaded.append(part_id)
        return "defective" if int(part_id.rsplit("-", 1)[1]) % 2 == 1 else "good"


class FakeCamera:
    """Frames whose pixels depend on the part and the robot pose; ``timeouts`` / ``lost`` are 1-based
    capture attempt numbers that fail; with a ``scene`` it adds a sim mask like SimCamera."""

    camera_id = "fake-cam"

    def __init__(self, robot: FakeRobot, scene: FakeScene | None = None, timeouts=(), lost=()) -> None:
        self.robot, self.scene = robot, scene
        self.timeouts, self.lost = set(timeouts), set(lost)
        self.attempts = 0

    def open(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None: ...

    def configure(self, **kwargs) -> None: ...

    def capture(self, *, timeout_s: float = 2.0) -> Frame:
        self.attempts += 1
        if self.attempts in self.timeouts:
            raise CameraTimeout(f"no frame within {timeout_s} s")
        if self.attempts in self.lost:
            raise CameraLost("device fake-cam disappeared")
        pose = self.robot.tcp_pose()
        seed = int(abs(pose[0]) * 1e6) + (hash(self.scene.part_id) % 1000 if self.scene else 0)
        pixels = np.random.default_rng(seed).integers(0, 256, (H, W), dtype=np.uint8)
        extra: dict = {}
        if self.scene is not None:
            mask = np.zeros((H, W), bool)
            defective = int(self.scene.part_id.rsplit("-", 1)[1]) % 2 == 1
            if defective and abs(pose[0] - 0.40) < 1e-3:
                mask[4:10, 5:12] = True
            extra = {"sim_mask": mask, "sim_part_id": self.scene.part_id,
                     "sim_defect_kinds": ["nut"] if mask.any() else []}
        return Frame(pixels, self.attempts, time.time(), None, 4000.0, 0.0, "Mono8", self.camera_id, extra)


class RecordingProgress:
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def start(self, campaign, parts, poses_per_part) -> None:
        self.events.append(("start", parts, poses_per_part))

    def part_started(self, part_id, index) -> None:
        self.events.append(("part", part_id))

    def pose_done(self, part_id, pose_id, outcome) -> None:
        self.events.append(("pose", part_id, pose_id, outcome))

    def stop(self) -> None:
        self.events.append(("stop",))


def campaign(robot, camera, store, plan, parts, **kw) -> CampaignSummary:
    kw.setdefault("campaign", "c1")
    kw.setdefault("envelope", SafetyEnvelope())
    kw.setdefault("speed", 0.25)
    kw.setdefault("accel", 1.0)
    kw.setdefault("config", {"plan": "fake"})
    return run_campaign(robot, camera, store, plan, parts, **kw)


def assert_complete(store: CaptureStore, name: str, parts: int, plan) -> None:
    keys = [(c.part_id, c.pose_id) for c in store.captures(campaign=name)]
    expected = {(p, pose.pose_id) for p in part_ids(name, parts) for pose in plan}
    assert len(keys) == len(set(keys)), "a capture is duplicated"
    assert set(keys) == expected, f"missing {expected - set(keys)}"
    report = store.verify()
    assert report.ok, report.problems


@pytest.fixture()
def store(tmp_path: Path):
    with CaptureStore(tmp_path / "ds", create=True) as s:
        yield s


def test_campaign_captures_every_pose_with_sim_masks_and_truth(store: CaptureStore) -> None:
    robot, scene = FakeRobot(), FakeScene()
    plan = make_plan(3)
    progress = RecordingProgress()
    summary = campaign(robot, FakeCamera(robot, scene), store, plan, 4, on_new_part=scene.load, progress=progress)
    assert (summary.status, summary.captures_new, summary.captures_in_store, summary.masks_stored) == ("completed", 12, 12, 12)
    assert summary.failed_poses == [] and summary.error is None
    assert_complete(store, "c1", 4, plan)
    assert [p.label for p in store.parts()] == ["defective", "good", "defective", "good"]
    assert all(p.labelled for p in store.parts())
    first = store.captures(part_id="c1-0001")[0]
    mask, kind, rev = store.get_mask(first.id)
    assert (kind, rev, int(mask.sum())) == ("nut", 1, 42)
    assert store.get_mask(store.captures(part_id="c1-0002")[0].id)[1] == "good"
    assert np.allclose(first.commanded_pose, plan[0].pose) and np.allclose(first.actual_pose, plan[0].pose + 1e-5)
    assert first.extra["grid_index"] == [0, 0] and first.extra["sim_part_id"] == "c1-0001"
    assert len(robot.moves) == 12
    status = store.campaign_status("c1")
    assert status.status == "completed" and status.summary["captures_new"] == 12
    assert Path(summary.summary_path).is_file()
    assert progress.events[0] == ("start", 4, 3) and progress.events[-1] == ("stop",)
    assert sum(1 for e in progress.events if e[0] == "pose" and e[3] == "captured") == 12


def test_envelope_violation_refuses_plan_before_any_motion(store: CaptureStore) -> None:
    robot = FakeRobot()
    plan = make_plan(3)
    plan[2] = FakePlannedPose("r0c2s0", np.array([0.44, -0.1, 0.02, np.pi, 0, 0]))
    with pytest.raises(CampaignError, match="refused before any motion: pose r0c2s0: z = 0.020 m is below the workspace floor"):
        campaign(robot, FakeCamera(robot), store, plan, 2)
    with pytest.raises(CampaignError, match="linear speed 9.000 m/s exceeds max_speed"):
        campaign(robot, FakeCamera(robot), store, make_plan(2), 2, speed=9.0)
    assert robot.moves == [] and store.campaigns() == []


def test_protective_stop_stops_cleanly_then_resume_completes(store: CaptureStore) -> None:
    plan = make_plan(3)
    robot, scene = FakeRobot(faults={5: ProtectiveStop("protective stop: collision")}), FakeScene()
    with pytest.raises(CampaignError) as info:
        campaign(robot, FakeCamera(robot, scene), store, plan, 3, on_new_part=scene.load)
    msg = str(info.value)
    assert "stopped at part c1-0002 pose r0c1s0: ProtectiveStop: protective stop: collision" in msg
    assert "4 of 9 captures are stored" in msg and "--resume" in msg and "\n" not in msg
    status = store.campaign_status("c1")
    assert status.status == "failed" and status.n_captures == 4
    assert status.summary["stopped_at"] == {"part_id": "c1-0002", "pose_id": "r0c1s0"}
    assert store.verify().ok

    with pytest.raises(CampaignError, match="already exists"):
        campaign(FakeRobot(), FakeCamera(robot), store, plan, 3)
    robot2, scene2 = FakeRobot(), FakeScene()
    summary = campaign(robot2, FakeCamera(robot2, scene2), store, plan, 3, on_new_part=scene2.load, resume=True)
    assert (summary.status, summary.captures_new, summary.captures_skipped) == ("completed", 5, 4)
    assert len(robot2.moves) == 5 and scene2.loaded == ["c1-0002", "c1-0003"]  # part 1 was complete
    assert_complete(store, "c1", 3, plan)


def test_robot_fault_hook_recovers_and_retries_the_pose(store: CaptureStore) -> None:
    plan = make_plan(2)
    robot = FakeRobot(faults={3: ConnectionLost("link dropped"), 4: ProtectiveStop("stop")})
    seen = []

    def recover(exc, part_id, pose_id) -> bool:
        seen.append((type(exc).__name__, part_id, pose_id))
        robot.recover()
        return True

    summary = campaign(robot, FakeCamera(robot), store, plan, 2, on_robot_fault=recover)
    assert summary.status == "completed" and summary.recoveries == 2
    assert seen == [("ConnectionLost", "c1-0002", "r0c0s0"), ("ProtectiveStop", "c1-0002", "r0c0s0")]
    assert_complete(store, "c1", 2, plan)

    # a hook that gives up stops the campaign
    robot3 = FakeRobot(faults={1: ProtectiveStop("stop")})
    with pytest.raises(CampaignError, match="ProtectiveStop"):
        campaign(robot3, FakeCamera(robot3), store, plan, 1, campaign="c2", on_robot_fault=lambda *a: False)


def test_camera_timeouts_are_retried_then_reported_never_skipped(store: CaptureStore) -> None:
    plan = make_plan(3)
    robot = FakeRobot()
    # attempt 2 times out once (retried); the 4th pose's three attempts (5, 6, 7) all time out
    camera = FakeCamera(robot, timeouts={2, 5, 6, 7})
    summary = campaign(robot, camera, store, plan, 2, camera_retries=2)
    assert summary.status == "incomplete" and summary.captures_new == 5 and summary.camera_retries == 3
    assert [(f.part_id, f.pose_id) for f in summary.failed_poses] == [("c1-0002", "r0c0s0")]
    assert "camera timed out 3 time(s)" in summary.failed_poses[0].reason
    assert store.campaign_status("c1").status == "incomplete"
    robot2 = FakeRobot()
    summary2 = campaign(robot2, FakeCamera(robot2), store, plan, 2, resume=True)
    assert summary2.status == "completed" and summary2.captures_new == 1 and len(robot2.moves) == 1
    assert_complete(store, "c1", 2, plan)


def test_unreachable_pose_is_reported_and_the_campaign_goes_on(store: CaptureStore) -> None:
    plan = make_plan(2)
    robot = FakeRobot(faults={2: UnreachablePose("no inverse kinematics solution")})
    summary = campaign(robot, FakeCamera(robot), store, plan, 2)
    assert summary.status == "incomplete" and summary.captures_new == 3
    assert summary.failed_poses[0].part_id == "c1-0001" and summary.failed_poses[0].pose_id == "r0c1s0"
    assert summary.failed_poses[0].reason == "UnreachablePose: no inverse kinematics solution"
    assert store.campaign_status("c1").summary["failed_poses"][0]["pose_id"] == "r0c1s0"


def test_camera_lost_and_disk_full_stop_the_campaign(store: CaptureStore, monkeypatch) -> None:
    plan = make_plan(2)
    robot = FakeRobot()
    with pytest.raises(CampaignError, match="CameraLost: device fake-cam disappeared; 2 of 4"):
        campaign(robot, FakeCamera(robot, lost={3}), store, plan, 2)

    real_open = open

    def full_disk(path, *args, **kwargs):
        if _files.TMP_PREFIX in str(path):
            raise OSError(28, "No space left on device", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    robot2 = FakeRobot()
    with pytest.raises(CampaignError) as info:
        campaign(robot2, FakeCamera(robot2), store, plan, 2, resume=True)
    monkeypatch.undo()
    assert f"StoreError: cannot write {store.root}/images/c1/c1-0002/r0c0s0.png: no space left on device" in str(info.value)
    assert store.verify().ok and store.campaign_status("c1").n_captures == 2
    robot3 = FakeRobot()
    campaign(robot3, FakeCamera(robot3), store, plan, 2, resume=True)
    assert_complete(store, "c1", 2, plan)


def test_resume_keeps_human_labels_and_refuses_other_config(store: CaptureStore) -> None:
    plan = make_plan(2)
    robot, scene = FakeRobot(faults={3: ProtectiveStop("stop")}), FakeScene()
    with pytest.raises(CampaignError):
        campaign(robot, FakeCamera(robot, scene), store, plan, 2, on_new_part=scene.load)
    store.set_part_label("c1-0002", "defective", source="human")  # a person relabels the good part
    with pytest.raises(CampaignError, match="different configuration"):
        campaign(FakeRobot(), FakeCamera(robot), store, plan, 2, resume=True, config={"plan": "other"})
    robot2, scene2 = FakeRobot(), FakeScene()
    campaign(robot2, FakeCamera(robot2, scene2), store, plan, 2, on_new_part=scene2.load, resume=True)
    assert store.part_label("c1-0002") == "defective"
    assert_complete(store, "c1", 2, plan)


# ------------------------------------------------------------------ crash safety (SIGKILL)
def _child_main(root: str, mode: str, kill_at: int) -> None:
    """Run a campaign in this (child) process and SIGKILL it at a chosen point of the ``kill_at``-th image
    write: ``before_rename`` (temp file complete, not renamed), ``after_rename`` (file in place, row not
    committed), or ``external`` (the parent kills us at a random moment)."""
    real_replace = os.replace
    count = {"n": 0}

    def replace(src, dst):
        if "/images/" in str(dst):
            count["n"] += 1
            if count["n"] == kill_at and mode == "before_rename":
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)
            if count["n"] == kill_at and mode == "after_rename":
                os.kill(os.getpid(), signal.SIGKILL)
            return
        real_replace(src, dst)

    os.replace = replace
    if mode == "external":  # busy writing while the parent watches; hangs (never finishes) after 7 moves
        robot = FakeRobot(move_delay_s=0.02, hang_on_move=8)
    else:
        robot = FakeRobot()
    scene = FakeScene()
    with CaptureStore(root, create=True) as store:
        campaign(robot, FakeCamera(robot, scene), store, make_plan(3), 4, on_new_part=scene.load)
    sys.exit(3)  # never reached when killed


@pytest.mark.parametrize("mode", ["before_rename", "after_rename", "external"])
def test_killed_campaign_resumes_without_loss_or_duplicates(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "ds"
    code = f"from tests.cell.test_campaign import _child_main; _child_main({str(root)!r}, {mode!r}, 5)"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stderr=subprocess.PIPE)
    if mode == "external":
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if (root / "store.json").exists():
                with CaptureStore(root) as peek:
                    if len(peek.captures()) >= 3:
                        break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]

    with CaptureStore(root) as store:
        before = store.captures()
        assert 3 <= len(before) < 12 and store.verify().ok  # every committed row has its complete image
        debris = [p for p in root.rglob(f"{_files.TMP_PREFIX}*")]
        if mode == "before_rename":
            assert debris and len(before) == 4
        if mode == "after_rename":
            assert store.verify().orphans == ["images/c1/c1-0002/r0c1s0.png"] and len(before) == 4
        robot, scene = FakeRobot(), FakeScene()
        plan = make_plan(3)
        summary = campaign(robot, FakeCamera(robot, scene), store, plan, 4, on_new_part=scene.load, resume=True)
        assert summary.status == "completed" and summary.captures_new == 12 - len(before)
        assert_complete(store, "c1", 4, plan)
        assert store.verify().orphans == []
        assert not list(root.rglob(f"{_files.TMP_PREFIX}*"))
        assert [c.id for c in store.captures()][: len(before)] == [c.id for c in before]  # nothing rewritten
        for rec in before:
            assert store.get_capture(rec.id).sha256 == rec.sha256


def test_store_error_in_truth_label_conflict_is_reported(store: CaptureStore) -> None:
    """A sim mask that contradicts a good truth label stops the campaign with the store's reason."""
    robot = FakeRobot()
    scene = FakeScene()
    with pytest.raises(CampaignError, match="is marked good: a defect mask cannot be stored"):
        campaign(robot, FakeCamera(robot, scene), store, make_plan(2), 1,
                 on_new_part=lambda pid: (scene.load(pid), "good")[1])
    assert store.campaign_status("c1").status == "failed" and store.captures() == []


def test_sim_cell_protective_stop_recovered_by_hook(store: CaptureStore) -> None:
    """The simulated cell end to end: a protective stop mid-campaign, recovered by the fault hook (as an
    operator would after checking the cell), and every pose captured exactly once with its sim mask."""
    from acquisition.plan import PlanConfig
    from cell.cell_factory import CellConfig, build_cell

    config = CellConfig.model_validate({
        "camera": {"width": 96, "height": 80, "focal_length_mm": 4.0, "noise": {"enabled": False}},
        "scene": {"texel_size_m": 5e-4, "defects": {"probability": 1.0}},
        "envelope": {"workspace_min": [-0.3, -0.7, 0.2], "workspace_max": [0.3, -0.2, 0.7]},
    })
    cell = build_cell(config)
    plan = cell.plan(PlanConfig(footprint_m=(0.2, 0.16), shots_per_point=1, overlap=0.1))
    faults = []

    def recover(exc, part_id, pose_id) -> bool:
        faults.append((type(exc).__name__, pose_id))
        cell.robot.recover()
        return True

    with cell:
        cell.robot.inject_fault("protective_stop", on_move=3)
        summary = run_campaign(
            cell.robot, cell.camera, store, plan, 1, campaign="sim", envelope=cell.envelope, speed=0.3,
            accel=1.2, on_new_part=cell.on_new_part, on_robot_fault=recover, sim_clock=cell.clock.now,
        )
    assert faults == [("ProtectiveStop", plan[2].pose_id)] and summary.recoveries == 1
    assert summary.status == "completed" and summary.sim_s > 0
    assert_complete(store, "sim", 1, plan)
    assert store.part_label("sim-0001") == "defective"
    assert all(store.mask_info(c.id).source == "sim" for c in store.captures())
    # each region of a sim mask has its sim defect kind; the row type is that kind, or combined for several
    kinds_seen = set()
    for c in store.captures():
        labels, types, _ = store.mask_labels(c.id)
        mask, row_type, _ = store.get_mask(c.id)
        assert np.array_equal(labels > 0, mask) and types == sorted(types)
        assert row_type == ("good" if not types else types[0] if len(types) == 1 else "combined")
        kinds_seen.update(types)
    assert kinds_seen <= {d.kind for d in cell.scene.current_part.defects}


def test_a_keyboard_interrupt_closes_the_campaign_as_interrupted_naming_resume(store: CaptureStore) -> None:
    # Issue 17 item 7 (in process): Ctrl+C used to re-raise a bare KeyboardInterrupt ("aborted", no --resume).
    from acquisition.plan import PlanConfig
    from cell.cell_factory import CellConfig, build_cell
    from cell.errors import CampaignInterrupted

    config = CellConfig.model_validate({
        "camera": {"width": 96, "height": 80, "focal_length_mm": 4.0, "noise": {"enabled": False}},
        "scene": {"texel_size_m": 5e-4},
    })
    cell = build_cell(config)
    plan = cell.plan(PlanConfig(footprint_m=(0.2, 0.16), shots_per_point=1, overlap=0.1))
    calls = []

    def new_part(part_id: str):
        calls.append(part_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return cell.on_new_part(part_id)

    with cell, pytest.raises(CampaignInterrupted) as info:
        run_campaign(cell.robot, cell.camera, store, plan, 3, campaign="ctrl-c", envelope=cell.envelope, speed=0.3,
                     accel=1.2, on_new_part=new_part)
    assert info.value.signum == 2
    assert "campaign 'ctrl-c' interrupted by SIGINT at part ctrl-c-0002" in str(info.value)
    assert f"{len(plan)} of {3 * len(plan)} captures" in str(info.value) and "--resume" in str(info.value)
    assert store.campaign_status("ctrl-c").status == "interrupted"
