"""Helpers of the line-signal tests: the simulated line run in a background thread (so a test can act as the
PLC, the MES or the operator's browser meanwhile), a free TCP port, and a wait-for-condition helper."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from acquisition.store import CaptureStore
from cell.cell_factory import PartFeedConfig
from cell.inspection import InspectConfig, InspectionSummary, run_inspection
from detectors.input_prep import InputSpec
from cell.signals import LineJob, LineSignals
from detectors.thresholds import ThresholdDecision
from tests.cell.sim_fixtures import LocalContrastDetector, demo_plan, small_cell


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned); AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


class LineRun:
    """The simulated line (small sim cell, 2 x 2 demo plan, :class:`LocalContrastDetector`) inspecting
    ``parts`` parts in a thread, with ``signals`` started by the caller. ``part_feed``: the cell's feed
    (``opcua`` makes it wait for the PLC through ``line_feed``). ``before_part(index, part_id)`` runs before
    each part is drawn (tests use it to break things mid-run). ``summary`` / ``error`` after :meth:`join`."""

    def __init__(self, tmp_path: Path, signals: LineSignals, parts: int, *, threshold: float = 1e9,
                 part_feed: str = "prompt", line_feed: Optional[Callable[[str], None]] = None,
                 before_part: Optional[Callable[[int, str], None]] = None, arm: Optional[Callable[[Any], None]] = None,
                 config: InspectConfig = InspectConfig(), campaign: str = "line", seed: int = 1) -> None:
        self.store_path = tmp_path / "store"
        self.signals, self.parts, self.threshold = signals, parts, threshold
        self.cell = small_cell(seed=seed)
        self.cell.part_feed = PartFeedConfig(mode=part_feed, timeout_s=60.0)
        self.cell.line_feed = line_feed
        self.before_part, self.arm, self.config, self.campaign = before_part, arm, config, campaign
        self.summary: Optional[InspectionSummary] = None
        self.error: Optional[BaseException] = None
        self.records: list[Any] = []
        self._count = 0
        self._thread = threading.Thread(target=self._run, name="sim-line", daemon=True)

    def _on_new_part(self, part_id: str) -> Optional[str]:
        self._count += 1
        if self.before_part is not None:
            self.before_part(self._count, part_id)
        return self.cell.on_new_part(part_id)

    def _run(self) -> None:
        try:
            campaign_file, plan = demo_plan(self.cell)
            self.signals.set_job(LineJob(self.campaign, "test-model", self.threshold))
            with CaptureStore(self.store_path, create=True) as store, self.cell:
                if self.arm is not None:
                    self.arm(self.cell)
                self.summary = run_inspection(
                    robot=self.cell.robot, camera=self.cell.camera, store=store, plan=plan,
                    speed=campaign_file.plan.speed, accel=campaign_file.plan.accel, envelope=self.cell.envelope,
                    parts=self.parts, campaign=self.campaign, detector=LocalContrastDetector(),
                    spec=InputSpec(mode="tile", scale=1.0), threshold=ThresholdDecision(self.threshold, "manual"),
                    config=self.config, on_new_part=self._on_new_part, signal=self.signals,
                    model_dir=Path("test-model"), feed_waits=True,  # before_part stands for a line that waits
                )
                self.records = store.inspections()
        except BaseException as exc:  # noqa: BLE001 - re-raised by join()
            self.error = exc

    def start(self) -> "LineRun":
        self._thread.start()
        return self

    def join(self, timeout: float = 120.0) -> InspectionSummary:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the line did not finish within {timeout:g} s")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary

    def alive(self) -> bool:
        return self._thread.is_alive()
