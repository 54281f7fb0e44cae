"""Signalling a part's verdict to the production line.

``none``: nothing (the verdict is still recorded and printed). ``digital_output``: the robot controller's
standard digital outputs: ``ok_output`` or ``nok_output`` (``error`` verdicts drive ``nok_output`` too, and
``error_output`` when configured) go high for ``pulse_s`` seconds. A verdict of ``error`` is never signalled as OK.
"""
from __future__ import annotations

import time
from typing import Any, Literal, Optional, Protocol

from pydantic import BaseModel, ConfigDict, Field

from cell.errors import CellError


class SignalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["none", "digital_output"] = "none"
    ok_output: int = Field(0, ge=0, le=7)
    nok_output: int = Field(1, ge=0, le=7)
    error_output: Optional[int] = Field(None, ge=0, le=7)
    pulse_s: float = Field(0.2, ge=0.0, le=10.0)


class LineSignal(Protocol):
    def emit(self, verdict: str) -> None: ...


class NoSignal:
    """Signals nothing."""

    def emit(self, verdict: str) -> None:
        return None


class DigitalOutputSignal:
    """Pulses a robot controller's standard digital output per verdict (``robot.set_digital_output(n, bool)``)."""

    def __init__(self, robot: Any, config: SignalConfig, sleep=time.sleep) -> None:
        if not hasattr(robot, "set_digital_output"):
            raise CellError(
                f"signal.kind 'digital_output' needs a robot with digital outputs; {type(robot).__name__} has none"
            )
        self.robot, self.config, self.sleep = robot, config, sleep

    def emit(self, verdict: str) -> None:
        outputs = [self.config.ok_output] if verdict == "OK" else [self.config.nok_output]
        if verdict == "error" and self.config.error_output is not None:
            outputs.append(self.config.error_output)
        for n in outputs:
            self.robot.set_digital_output(n, True)
        self.sleep(self.config.pulse_s)
        for n in outputs:
            self.robot.set_digital_output(n, False)


def make_signal(config: SignalConfig, robot: Any) -> LineSignal:
    return DigitalOutputSignal(robot, config) if config.kind == "digital_output" else NoSignal()
