"""The one interface every line signal implements: a :class:`LineSink` consumes :class:`~cell.line_result.LineResult`
objects and :class:`LineStatus` snapshots.

A sink never blocks the inspection loop (``publish`` and ``update_status`` return at once; network and I/O
work happens in the sink's own thread or asyncio loop), never raises into it (its failures are counted in
its :class:`SinkHealth`, reported on the console through ``report`` and recorded in the campaign's summary),
and never turns an ``error`` verdict into OK. The one exception it may raise is
:class:`~cell.errors.LineStopped` from :meth:`LineSink.before_part`, when its peer's handshake says the line
must stop (e.g. the PLC went away and ``on_plc_lost: stop``).
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, TypeVar

from cell.line_result import LineResult, utc_now

#: The line's system states, as the OPC UA server, the MQTT state topic and the live page show them.
LINE_STATES = ("Initializing", "Ready", "Busy", "Error")
#: How many recent failure messages a sink keeps (the counters count all of them).
RECENT_ERRORS = 20

Reporter = Callable[[str], None]


def no_report(message: str) -> None:
    return None


@dataclass(frozen=True)
class LineJob:
    """What the line is running: the campaign, the model (directory) and the threshold in force."""

    campaign: str = ""
    model: str = ""
    threshold: Optional[float] = None


@dataclass(frozen=True)
class LineStatus:
    """One snapshot of the line: ``state`` (one of :data:`LINE_STATES`), the ``reason`` of an Error state,
    the job, the verdict counts of this run (``OK``, ``NOK``, ``error``) and when the state was entered."""

    state: str
    job: LineJob = LineJob()
    counts: dict[str, int] = field(default_factory=lambda: {"OK": 0, "NOK": 0, "error": 0})
    reason: str = ""
    since: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if self.state not in LINE_STATES:
            raise ValueError(f"line state {self.state!r}: expected one of {', '.join(LINE_STATES)}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (schema ``cell.line-state/1``), as the MQTT state topic carries it."""
        return {
            "schema": STATE_SCHEMA,
            "state": self.state,
            "reason": self.reason,
            "since": self.since,
            "campaign": self.job.campaign,
            "model": self.job.model,
            "threshold": self.job.threshold,
            "counts": dict(self.counts),
        }


#: Version tag of :meth:`LineStatus.to_dict` (documented in the README beside the result schema).
STATE_SCHEMA = "cell.line-state/1"


class SinkHealth:
    """A sink's counters, thread-safe: results ``sent`` (handed to the peer and, where the protocol says so,
    acknowledged), ``failed`` (could not be signalled), ``dropped`` (pushed out of a full queue, oldest first),
    ``pending`` (still queued), ``rejected`` (malformed requests from the peer, refused), and ``recent``: the
    latest failure messages and notes (a broker gone or back, a PLC lost), each with its UTC time."""

    def __init__(self, name: str, report: Reporter = no_report) -> None:
        self.name = name
        self._report = report
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.rejected = 0
        self.pending = 0
        self.recent: deque[str] = deque(maxlen=RECENT_ERRORS)

    def count_sent(self, n: int = 1) -> None:
        with self._lock:
            self.sent += n

    def count_failure(self, message: str, *, n: int = 1, report: bool = True) -> None:
        """``n`` results could not be signalled because of ``message`` (one line)."""
        with self._lock:
            self.failed += n
            self.recent.append(f"{utc_now()} {message}")
        if report:
            self._report(f"{self.name}: {message}")

    def count_dropped(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n

    def count_rejected(self, message: str) -> None:
        """A malformed request from the peer was refused (the line is unaffected)."""
        with self._lock:
            self.rejected += 1
            self.recent.append(f"{utc_now()} {message}")
        self._report(f"{self.name}: {message}")

    def note(self, message: str) -> None:
        """Something the operator should know that is not a lost result (a broker gone, a PLC back)."""
        with self._lock:
            self.recent.append(f"{utc_now()} {message}")
        self._report(f"{self.name}: {message}")

    def set_pending(self, n: int) -> None:
        with self._lock:
            self.pending = n

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped, "rejected": self.rejected,
                    "pending": self.pending, "recent": list(self.recent)}


class LineSink:
    """Base class of the line signals. Subclasses override what they need; every method must return quickly
    and never raise (except :class:`~cell.errors.LineStopped` from :meth:`before_part`)."""

    name = "sink"

    def __init__(self, report: Reporter = no_report) -> None:
        self.health = SinkHealth(self.name, report)

    def start(self) -> None:
        """Connect / listen (called once before the loop; may take time and raise a one-line CellError)."""

    def update_status(self, status: LineStatus) -> None:
        """The line's state, job or counts changed."""

    def publish(self, result: LineResult) -> None:
        """Signal one part's result (returns at once; the work happens in the sink's own thread)."""

    def awaits_acknowledgement(self) -> bool:
        """True while the line must not take the next part until this sink's peer acknowledged a result."""
        return False

    def before_part(self, part_id: str) -> None:
        """Wait until this sink's peer lets the line take part ``part_id`` (e.g. the PLC's acknowledgement of
        the previous result); may raise :class:`~cell.errors.LineStopped`. Default: no wait."""

    def close(self) -> None:
        """Deliver what can be delivered within the sink's flush timeout, then disconnect."""


T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded FIFO shared by the loop (``put``, never blocks) and a sink's worker: when full, ``put`` drops
    the oldest item and counts it in ``health.dropped``. ``cv`` (the worker's condition, by default the
    queue's own) is notified on every put, so a worker can wait for items and for its own conditions at once.
    """

    def __init__(self, size: int, health: SinkHealth, cv: Optional[threading.Condition] = None) -> None:
        self._items: deque[T] = deque()
        self._size = int(size)
        self._health = health
        self.cv = cv if cv is not None else threading.Condition()
        self.closed = False

    def __len__(self) -> int:
        with self.cv:
            return len(self._items)

    def put(self, item: T) -> bool:
        """Append ``item``; returns False when an older item was dropped to make room."""
        with self.cv:
            dropped = len(self._items) >= self._size
            if dropped:
                self._items.popleft()
                self._health.count_dropped()
            self._items.append(item)
            self._health.set_pending(len(self._items))
            self.cv.notify_all()
        return not dropped

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """The oldest item, waiting for one; None after ``timeout`` s, or once closed and empty."""
        with self.cv:
            if not self.cv.wait_for(lambda: self._items or self.closed, timeout):
                return None
            return self.pop_nowait()

    def pop_nowait(self) -> Optional[T]:
        """The oldest item or None (takes ``cv``; callers may already hold it)."""
        with self.cv:
            if not self._items:
                return None
            item = self._items.popleft()
            self._health.set_pending(len(self._items))
            return item

    def push_back(self, item: T) -> None:
        """Return ``item`` to the front (it could not be sent after all)."""
        with self.cv:
            self._items.appendleft(item)
            self._health.set_pending(len(self._items))

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()

    def drain(self) -> list[T]:
        with self.cv:
            items = list(self._items)
            self._items.clear()
            self._health.set_pending(0)
            return items
