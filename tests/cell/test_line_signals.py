"""The fan-out of results to the sinks: every sink gets every result and state in order, a sink that raises
(a bug no real peer can be made to show) is counted and cannot stop the line or starve the others, the state
follows the part cycle on the real simulated loop, and ``--signal`` parsing."""
from __future__ import annotations

import pytest

from cell.errors import CellError, LineStopped
from cell.signals import LineSignals, LineSink, parse_signal_kinds
from tests.cell.line_fixtures import LineRun


class Recorder(LineSink):
    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple] = []

    def update_status(self, status) -> None:
        self.events.append(("state", status.state, dict(status.counts)))

    def publish(self, result) -> None:
        self.events.append(("result", result.part_id, result.verdict, result.score))


class Broken(LineSink):
    name = "broken"

    def update_status(self, status) -> None:
        raise RuntimeError("status exploded")

    def publish(self, result) -> None:
        raise RuntimeError("publish exploded")

    def before_part(self, part_id: str) -> None:
        raise ValueError("wait exploded")


class StopsAtSecondPart(LineSink):
    name = "stopper"

    def before_part(self, part_id: str) -> None:
        if part_id.endswith("0002"):
            raise LineStopped("the PLC says stop")


def test_every_sink_sees_the_cycle_and_a_broken_sink_changes_nothing(tmp_path):
    recorder, broken = Recorder(), Broken()
    with LineSignals([broken, recorder]) as signals:
        summary = LineRun(tmp_path, signals, parts=2, threshold=-1.0).start().join()
    results = [e for e in recorder.events if e[0] == "result"]
    assert [(e[1], e[2]) for e in results] == [(r.part_id, "NOK") for r in summary.results]
    assert all(e[3] is not None for e in results)
    states = [e[1] for e in recorder.events if e[0] == "state"]
    assert states[0] == "Initializing" and states[-1] == "Ready"
    assert states.count("Busy") >= 2 and "Error" not in states
    assert recorder.events[-1][2] == {"OK": 0, "NOK": 2, "error": 0}
    health = signals.health()["broken"]
    assert health["failed"] >= 2 + 2 and any("publish exploded" in m for m in health["recent"])


def test_an_error_part_is_an_error_for_every_sink_and_a_stop_ends_the_run_cleanly(tmp_path):
    recorder = Recorder()
    with LineSignals([recorder, StopsAtSecondPart()]) as signals:
        run = LineRun(tmp_path, signals, parts=3, threshold=1e9,
                      arm=lambda cell: cell.robot.inject_fault("protective_stop", on_move=2))
        summary = run.start().join()
    assert [r.verdict for r in summary.results] == ["error"]
    assert [e[1:] for e in recorder.events if e[0] == "result"] == [(summary.results[0].part_id, "error", None)]
    assert summary.stopped_early == "part line-0002: the PLC says stop"
    assert recorder.events[-1][:2] == ("state", "Error")
    assert [r.verdict for r in run.records] == ["error"]


def test_signal_kinds_parse():
    assert parse_signal_kinds("none") == [] and parse_signal_kinds("") == []
    assert parse_signal_kinds("digital_output, opcua,mqtt") == ["digital_output", "opcua", "mqtt"]
    with pytest.raises(CellError, match="unknown signal 'plc'"):
        parse_signal_kinds("opcua,plc")
    with pytest.raises(CellError, match="'mqtt' is named twice"):
        parse_signal_kinds("mqtt,mqtt")
