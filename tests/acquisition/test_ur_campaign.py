"""A capture campaign on URRobot (real ur_rtde client, fake controller) with the simulated camera:
interrupted by a protective stop, recovered and resumed, it ends with every pose captured exactly once."""
from __future__ import annotations

from collections import Counter

import pytest

from acquisition.errors import RobotError
from acquisition.sim.camera import SimCamera
from acquisition.store import CaptureStore
from acquisition.ur import URRobot, URRobotConfig
from acquisition.ur.fake_controller import start_fake
from cell.campaign import run_campaign
from cell.errors import CampaignError
from tests.cell.sim_fixtures import demo_plan, small_cell

pytestmark = pytest.mark.timeout(180)


class _FaultAfter:
    """A camera wrapper that triggers a protective stop on the fake right after capture number ``n``."""

    def __init__(self, camera, fake, n: int) -> None:
        self._camera, self._fake, self._n, self.count = camera, fake, n, 0
        self.camera_id = camera.camera_id

    def __getattr__(self, name):
        return getattr(self._camera, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def capture(self, **kwargs):
        frame = self._camera.capture(**kwargs)
        self.count += 1
        if self.count == self._n:
            self._fake.command("protective_stop")
        return frame


def _setup(tmp_path, fake):
    cell = small_cell(seed=3)
    campaign, plan = demo_plan(cell)
    robot = URRobot(URRobotConfig(host=fake.host, tcp_offset=cell.config.robot.tcp_offset),
                    envelope=cell.envelope)
    camera = SimCamera(cell.camera.config, robot, cell.scene, seed=3)
    store = CaptureStore(tmp_path / "store", create=True)
    return cell, plan, robot, camera, store


def _check_exactly_once(store, parts, plan):
    keys = [(r.part_id, r.pose_id) for r in store.captures("ur")]
    assert len(keys) == parts * len(plan)
    assert max(Counter(keys).values()) == 1
    report = store.verify()
    assert report.ok and report.n_captures == parts * len(plan)


def test_campaign_interrupted_by_protective_stop_resumes_without_loss_or_duplicate(tmp_path):
    fake = start_fake()
    try:
        cell, plan, robot, camera, store = _setup(tmp_path, fake)
        parts = 2
        with robot, store:
            camera.open()
            faulty = _FaultAfter(camera, fake, n=len(plan) + 1)
            with pytest.raises(CampaignError, match="(?i)protective stop.*--resume"):
                run_campaign(robot, faulty, store, plan, parts, campaign="ur", envelope=cell.envelope,
                             speed=0.25, accel=1.2, on_new_part=cell.on_new_part)
            stored_before = len(store.captures("ur"))
            assert 0 < stored_before < parts * len(plan)
            robot.recover()
            summary = run_campaign(robot, camera, store, plan, parts, campaign="ur", envelope=cell.envelope,
                                   speed=0.25, accel=1.2, on_new_part=cell.on_new_part, resume=True)
            camera.close()
            assert summary.status == "completed"
            assert summary.captures_skipped == stored_before
            _check_exactly_once(store, parts, plan)
    finally:
        fake.stop()


def test_campaign_recovers_through_fault_hook(tmp_path):
    fake = start_fake()
    try:
        cell, plan, robot, camera, store = _setup(tmp_path, fake)
        recoveries: list[str] = []

        def on_fault(error: RobotError, part_id: str, pose_id: str) -> bool:
            recoveries.append(f"{part_id}/{pose_id}: {type(error).__name__}")
            robot.recover()
            return True

        with robot, store:
            camera.open()
            faulty = _FaultAfter(camera, fake, n=2)
            summary = run_campaign(robot, faulty, store, plan, 1, campaign="ur", envelope=cell.envelope,
                                   speed=0.25, accel=1.2, on_new_part=cell.on_new_part, on_robot_fault=on_fault)
            camera.close()
            assert summary.status == "completed" and len(recoveries) == 1 and "ProtectiveStop" in recoveries[0]
            _check_exactly_once(store, 1, plan)
    finally:
        fake.stop()
