"""Timing and result-writing helpers shared by the benchmark scripts.

Every sample is a pair of seconds: wall-clock (``time.perf_counter``) and CPU time of this process
(``time.process_time``, all threads). On a shared, loaded machine the CPU time is the steadier number;
the wall time is what a user waits.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np


class Sample(NamedTuple):
    """One timed run: wall-clock and process-CPU seconds."""

    wall_s: float
    cpu_s: float


class Stopwatch:
    """Context manager timing its block; afterwards :attr:`sample` holds the wall and CPU seconds.

    >>> with Stopwatch() as sw:
    ...     pass
    >>> sw.sample.wall_s >= 0.0
    True
    """

    def __init__(self) -> None:
        self._wall0 = 0.0
        self._cpu0 = 0.0
        self.sample = Sample(0.0, 0.0)

    def __enter__(self) -> "Stopwatch":
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample = Sample(time.perf_counter() - self._wall0, time.process_time() - self._cpu0)

    @property
    def wall_s(self) -> float:
        """Wall-clock seconds of the block (0 until it has ended)."""
        return self.sample.wall_s

    @property
    def cpu_s(self) -> float:
        """Process-CPU seconds of the block (0 until it has ended)."""
        return self.sample.cpu_s


def time_repeated(fn: Callable[[], Any], n: int, warmup: int = 0) -> list[Sample]:
    """Run ``fn()`` ``warmup`` times untimed, then ``n`` times timed; one :class:`Sample` per timed run."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        with Stopwatch() as sw:
            fn()
        samples.append(sw.sample)
    return samples


def best_mean_per_call(fn: Callable[[Any], Any], args: Sequence[Any], repeats: int = 3) -> float:
    """Seconds per call of ``fn(a)`` for ``a`` in ``args``: the best (lowest) mean of ``repeats`` passes.

    Wall-clock only: each pass runs many short calls, which a process-CPU clock resolves too coarsely.
    """
    if not args:
        raise ValueError("args is empty: nothing to time")
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a in args:
            fn(a)
        best = min(best, (time.perf_counter() - t0) / len(args))
    return best


#: Statistics :func:`summary_ms` can report, each a function of (wall ms, CPU ms) arrays.
_STATS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "median": lambda w, c: float(np.median(w)),
    "mean": lambda w, c: float(np.mean(w)),
    "min": lambda w, c: float(np.min(w)),
    "max": lambda w, c: float(np.max(w)),
    "p90": lambda w, c: float(np.percentile(w, 90)),
    "cpu_median": lambda w, c: float(np.median(c)),
}


def summary_ms(
    samples: Iterable[tuple[float, float]],
    stats: Sequence[str] = ("median", "mean", "max", "cpu_median"),
    count_key: str | None = "n",
) -> dict[str, float | int]:
    """Milliseconds statistics of (wall s, CPU s) samples as ``{"<stat>_ms": value, ..., count_key: n}``.

    ``stats`` (in output order) from: median, mean, min, max, p90 (wall time) and cpu_median. The
    sample count goes last under ``count_key`` (left out when None). Raises ValueError on no samples.
    """
    pairs = [(float(w), float(c)) for w, c in samples]
    if not pairs:
        raise ValueError("no samples to summarise")
    unknown = [s for s in stats if s not in _STATS]
    if unknown:
        raise ValueError(f"unknown statistic(s) {unknown}; known: {', '.join(_STATS)}")
    wall_ms = 1e3 * np.array([w for w, _ in pairs])
    cpu_ms = 1e3 * np.array([c for _, c in pairs])
    out: dict[str, float | int] = {f"{s}_ms": _STATS[s](wall_ms, cpu_ms) for s in stats}
    if count_key is not None:
        out[count_key] = len(pairs)
    return out


def median_s(values: Iterable[float]) -> float:
    """Median of plain seconds values (e.g. wall times of a few whole operations)."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        raise ValueError("no values to take the median of")
    return float(np.median(arr))


def write_json(path: Path | str, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as indented JSON (trailing newline) to ``path`` atomically; returns the path.

    The text goes to a temporary file in the same folder, is flushed to disk, then renamed over
    ``path``: a reader (or a crash) never sees half a file. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=indent) + "\n"
    # a unique name opened with "x" (mkstemp would make the result file private, mode 0600)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
