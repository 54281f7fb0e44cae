"""``--signal digital_output``: the verdict as a pulse on the robot controller's standard digital outputs.

``ok_output`` or ``nok_output`` goes high for ``pulse_s`` seconds per part (:class:`DigitalOutputConfig`); an
``error`` verdict drives ``nok_output`` and, when configured, ``error_output``: an error is never signalled as
OK. The pulses run in the sink's own thread, one after the other, so the loop never waits for them; a pulse
that cannot be driven (the controller's link is down) is counted as failed and reported, and its outputs are
driven low again where possible.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from cell.errors import CellError
from cell.line_result import LineResult
from cell.signals.base import DropOldestQueue, LineSink, Reporter, no_report
from cell.signals.config import DigitalOutputConfig


def outputs_for(verdict: str, config: DigitalOutputConfig) -> list[int]:
    """The output numbers a verdict drives high: OK -> ``ok_output``; NOK -> ``nok_output``; error ->
    ``nok_output`` and ``error_output`` when configured (never ``ok_output``)."""
    if verdict == "OK":
        return [config.ok_output]
    outputs = [config.nok_output]
    if verdict == "error" and config.error_output is not None:
        outputs.append(config.error_output)
    return outputs


class DigitalOutputSink(LineSink):
    """Pulses ``robot.set_digital_output(n, bool)`` per result, in a worker thread."""

    name = "digital_output"

    def __init__(self, robot: Any, config: DigitalOutputConfig, *, report: Reporter = no_report,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(report)
        if not hasattr(robot, "set_digital_output"):
            raise CellError(f"--signal digital_output needs a robot with digital outputs; "
                            f"{type(robot).__name__} has none")
        self.robot, self.config, self._sleep = robot, config, sleep
        self._queue: DropOldestQueue[LineResult] = DropOldestQueue(config.queue_size, self.health)
        self._thread = threading.Thread(target=self._run, name="digital-output-pulses", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def publish(self, result: LineResult) -> None:
        if not self._queue.put(result):
            self.health.note(f"pulse queue full ({self.config.queue_size}): dropped the oldest pulse")

    def close(self) -> None:
        """Finish the queued pulses (each takes ``pulse_s``), then stop the worker."""
        self._queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout=self.config.pulse_s * (len(self._queue) + 2) + 5.0)

    def _run(self) -> None:
        while True:
            result = self._queue.get()
            if result is None:
                return
            self._pulse(result)

    def _pulse(self, result: LineResult) -> None:
        outputs = outputs_for(result.verdict, self.config)
        try:
            for n in outputs:
                self.robot.set_digital_output(n, True)
            self._sleep(self.config.pulse_s)
        except Exception as exc:  # noqa: BLE001 - a controller fault must not reach the loop
            self.health.count_failure(f"part {result.part_id} ({result.verdict}): outputs {outputs} not driven: "
                                      f"{type(exc).__name__}: {exc}")
            self._release(outputs)
            return
        if self._release(outputs):
            self.health.count_sent()
        else:
            self.health.count_failure(f"part {result.part_id}: outputs {outputs} may still be high")

    def _release(self, outputs: list[int]) -> bool:
        ok = True
        for n in outputs:
            try:
                self.robot.set_digital_output(n, False)
            except Exception:  # noqa: BLE001
                ok = False
        return ok
