"""One result to every sink: :class:`LineSignals` is what the inspection loop talks to.

It keeps the line's state (:data:`~cell.signals.base.LINE_STATES`), job and counts, and hands each change and
each result to every sink, catching and counting whatever a sink raises, so one faulty sink can neither stop
the loop nor keep the others from their results. The state follows the part cycle:

    Initializing -> (before each part: the sinks' waits, e.g. the PLC's acknowledgement) -> Ready
    -> (the part is on the table) -> Busy -> (result published) -> Ready, or Busy while a sink
    awaits the peer's acknowledgement -> ... -> Error when the line stops early (with the reason).
"""
from __future__ import annotations

import threading
from typing import Any, Optional, Sequence

from cell.errors import LineStopped
from cell.line_result import VERDICTS, LineResult
from cell.signals.base import LineJob, LineSink, LineStatus


class LineSignals:
    """The set of sinks of one ``cell inspect`` run (possibly empty). Use as a context manager:
    :meth:`start` on entry, :meth:`close` on exit."""

    def __init__(self, sinks: Sequence[LineSink] = ()) -> None:
        self.sinks = list(sinks)
        self._lock = threading.Lock()
        self._job = LineJob()
        self._counts = {v: 0 for v in VERDICTS}
        self._state = "Initializing"
        self._reason = ""
        self._started: list[LineSink] = []

    def __enter__(self) -> "LineSignals":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, name: str) -> Optional[LineSink]:
        """The sink called ``name`` (``opcua``, ``mqtt``, ...), or None."""
        return next((s for s in self.sinks if s.name == name), None)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start every sink; if one cannot start, close those already started and raise its error."""
        for sink in self.sinks:
            try:
                sink.start()
            except BaseException:
                self.close()
                raise
            self._started.append(sink)
        self._broadcast()

    def close(self) -> None:
        """Close the started sinks (each flushes within its own timeout); failures are counted, not raised."""
        while self._started:
            sink = self._started.pop()
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001
                sink.health.count_failure(f"closing failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ the line's cycle
    def set_job(self, job: LineJob) -> None:
        with self._lock:
            self._job = job
        self._broadcast()

    def set_state(self, state: str, reason: str = "") -> None:
        with self._lock:
            changed = (state, reason) != (self._state, self._reason)
            self._state, self._reason = state, reason
        if changed:
            self._broadcast()

    def status(self) -> LineStatus:
        with self._lock:
            return LineStatus(self._state, self._job, dict(self._counts), self._reason)

    def before_part(self, part_id: str) -> None:
        """Wait as each sink requires before part ``part_id`` (raises LineStopped: the state becomes Error)."""
        for sink in list(self._started):
            try:
                sink.before_part(part_id)
            except LineStopped as exc:
                self.set_state("Error", str(exc))
                raise
            except Exception as exc:  # noqa: BLE001 - a sink's bug must not stop the line
                sink.health.count_failure(f"before part {part_id}: {type(exc).__name__}: {exc}")
        self.set_state("Ready")

    def part_started(self, part_id: str) -> None:
        self.set_state("Busy")

    def publish(self, result: LineResult) -> None:
        """Hand ``result`` to every sink (each returns at once), then update the counts and the state."""
        with self._lock:
            self._counts[result.verdict] += 1
        for sink in list(self._started):
            try:
                sink.publish(result)
            except Exception as exc:  # noqa: BLE001
                sink.health.count_failure(f"part {result.part_id}: {type(exc).__name__}: {exc}")
        waiting = any(self._awaits(sink) for sink in list(self._started))
        with self._lock:
            self._state = "Busy" if waiting else "Ready"
            self._reason = ""
        self._broadcast()

    def finish(self, stopped_early: Optional[str]) -> None:
        """The run is over: Error with the reason when it stopped early; else, once every sink's peer has
        acknowledged the last result (as :meth:`before_part` waits, so the PLC gets to read it before the
        server closes), Ready, or Error when that wait had to give up."""
        if stopped_early:
            self.set_state("Error", stopped_early)
            return
        for sink in list(self._started):
            try:
                sink.before_part("(end of run)")
            except LineStopped as exc:
                sink.health.note(f"end of run: {exc}")
                self.set_state("Error", f"end of run: {exc}")
                return
            except Exception as exc:  # noqa: BLE001
                sink.health.count_failure(f"end of run: {type(exc).__name__}: {exc}")
        self.set_state("Ready")

    def health(self) -> dict[str, Any]:
        """Per sink: its counters (sent, failed, dropped, rejected, pending, recent errors)."""
        return {sink.name: sink.health.to_dict() for sink in self.sinks}

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _awaits(sink: LineSink) -> bool:
        try:
            return bool(sink.awaits_acknowledgement())
        except Exception:  # noqa: BLE001
            return False

    def _broadcast(self) -> None:
        status = self.status()
        for sink in list(self._started):
            try:
                sink.update_status(status)
            except Exception as exc:  # noqa: BLE001
                sink.health.count_failure(f"status: {type(exc).__name__}: {exc}")
