"""A simulated clock: time that advances when the simulation says so, optionally paced to the wall clock."""
from __future__ import annotations

import math
import threading
import time


class SimClock:
    """Simulation time in seconds, starting at 0.

    ``realtime_factor`` is how many simulated seconds pass per wall-clock second while sleeping:
    ``0`` (default) = instant (sleeping only advances the counter), ``1`` = real time, ``10`` = ten
    times faster than real time. Thread-safe: concurrent sleeps add up.
    """

    def __init__(self, realtime_factor: float = 0.0) -> None:
        factor = float(realtime_factor)
        if not math.isfinite(factor) or factor < 0:
            raise ValueError(f"realtime_factor must be a finite number >= 0, got {realtime_factor!r}")
        self._factor = factor
        self._now = 0.0
        self._lock = threading.Lock()

    @property
    def realtime_factor(self) -> float:
        """Simulated seconds per wall-clock second (0 = as fast as possible)."""
        return self._factor

    def now(self) -> float:
        """Current simulation time, seconds since the clock was made."""
        with self._lock:
            return self._now

    def sleep(self, dt: float) -> None:
        """Advance simulation time by ``dt`` seconds (>= 0); waits ``dt / realtime_factor`` wall seconds if paced."""
        dt = float(dt)
        if not math.isfinite(dt) or dt < 0:
            raise ValueError(f"cannot sleep a negative or non-finite time, got {dt!r} s")
        if self._factor > 0 and dt > 0:
            time.sleep(dt / self._factor)
        with self._lock:
            self._now += dt

    def __repr__(self) -> str:
        return f"SimClock(now={self.now():.6f} s, realtime_factor={self._factor})"
