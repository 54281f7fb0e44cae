"""Digital-output pulses on the REAL ur_rtde client against the fake UR controller: the loop is not held for
the pulse, an error verdict drives the NOK (and error) outputs and never the OK output, and a dead link is
counted and reported instead of reaching the loop."""
from __future__ import annotations

import time

import pytest

from acquisition.ur import URRobot, URRobotConfig
from cell.errors import CellError
from cell.line_result import LineResult, utc_now
from cell.signals import DigitalOutputConfig
from cell.signals.digital_output import DigitalOutputSink, outputs_for
from tests.acquisition.ur_fixtures import start_fake
from tests.cell.line_fixtures import wait_for

pytestmark = pytest.mark.timeout(120)

CONFIG = DigitalOutputConfig(ok_output=2, nok_output=3, error_output=4, pulse_s=0.3)


def result(verdict: str, part_id: str = "p1") -> LineResult:
    now = utc_now()
    return LineResult(part_id=part_id, campaign="c", verdict=verdict, reason="test", started_at=now, finished_at=now)


@pytest.fixture(scope="module")
def fake():
    proc = start_fake()
    yield proc
    proc.stop()


@pytest.fixture()
def robot(fake):
    rob = URRobot(URRobotConfig(host=fake.host))
    rob.connect()
    yield rob
    rob.close()


def watch_outputs(fake, until) -> set[int]:
    """Every output number seen high until ``until()`` holds."""
    seen: set[int] = set()
    deadline = time.monotonic() + 30
    while not until() and time.monotonic() < deadline:
        bits = int(fake.state()["digital_out"])
        seen |= {n for n in range(8) if bits & (1 << n)}
        time.sleep(0.01)
    return seen


def test_a_pulse_does_not_hold_the_loop_and_drives_the_verdicts_output(robot, fake):
    sink = DigitalOutputSink(robot, CONFIG)
    sink.start()
    try:
        sink.publish(result("OK"))
        assert sink.health.sent == 0  # publish returned while the 0.3 s pulse is still running
        seen = watch_outputs(fake, lambda: sink.health.sent == 1)
        assert seen == {2}
        assert int(fake.state()["digital_out"]) & (1 << 2) == 0  # low again after the pulse
        sink.publish(result("error", "p2"))
        seen = watch_outputs(fake, lambda: sink.health.sent == 2)
        assert seen == {3, 4}  # an error is NOK + error, never OK
    finally:
        sink.close()
    assert sink.health.failed == 0


def test_a_dead_link_is_counted_and_reported_not_raised():
    fake = start_fake()  # its own controller: a link that went down is not reused (as in test_ur_robot)
    robot = URRobot(URRobotConfig(host=fake.host, stale_timeout_s=0.5))
    notes: list[str] = []
    try:
        robot.connect()
        sink = DigitalOutputSink(robot, CONFIG, report=notes.append)
        sink.start()
        fake.command("link_down")
        wait_for(lambda: not robot.status().connected, what="the robot to see the link down")
        sink.publish(result("NOK"))  # returns; the failure happens in the sink's thread
        wait_for(lambda: sink.health.failed == 1, what="the failed pulse to be counted")
        sink.close()
    finally:
        robot.close()
        fake.stop()
    assert sink.health.sent == 0
    assert notes and "part p1 (NOK): outputs [3] not driven: ConnectionLost" in notes[0]


def test_outputs_for_each_verdict_and_robots_without_outputs():
    assert outputs_for("OK", CONFIG) == [2]
    assert outputs_for("NOK", CONFIG) == [3]
    assert outputs_for("error", CONFIG) == [3, 4]
    assert outputs_for("error", DigitalOutputConfig()) == [1]
    with pytest.raises(CellError, match="SimRobot has none"):
        from acquisition.sim.robot import SimRobot

        DigitalOutputSink(SimRobot(), CONFIG)
