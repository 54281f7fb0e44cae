"""What the live line page shows, kept in memory: :class:`LineViewSink` is a line sink like the others.

It holds the line's status, the last part's result (with the store path of its picture), the recent part
scores (for the chart against the threshold) and the last errors (parts in error, the line's Error reason,
the other signals' troubles). :meth:`LineViewSink.snapshot` is the page's JSON; ``version`` increases with
every change, so the page redraws only when something changed.
"""
from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import Any, Optional

from acquisition.errors import StoreError
from acquisition.store._files import resolve_inside
from cell.line_result import LineResult, utc_now
from cell.signals.base import LineSink, LineStatus, Reporter, no_report

#: How many recent part scores the chart shows, and how many errors the page lists.
RECENT_PARTS = 200
RECENT_ERRORS = 20


def picture_of(result: LineResult) -> Optional[str]:
    """The store-relative PNG that shows the part: its part map, else the worst pose's heatmap (stored for
    NOK parts), else None."""
    if result.part_map:
        return result.part_map
    heatmaps = [str(h) for h in (result.extra.get("heatmaps") or [])]
    worst = result.extra.get("worst_pose")
    for path in heatmaps:
        if worst and Path(path).name.startswith(f"{worst}_"):
            return path
    return heatmaps[0] if heatmaps else None


class LineViewSink(LineSink):
    """The live page's state (thread-safe); ``store_root`` is where result pictures are read from."""

    name = "line_view"

    def __init__(self, store_root: Optional[Path] = None, report: Reporter = no_report) -> None:
        super().__init__(report)
        self.store_root = None if store_root is None else Path(store_root).resolve()
        self._lock = threading.Lock()
        self._version = 0
        self._status: Optional[LineStatus] = None
        self._last: Optional[LineResult] = None
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_PARTS)
        self._errors: deque[dict[str, str]] = deque(maxlen=RECENT_ERRORS)

    def update_status(self, status: LineStatus) -> None:
        with self._lock:
            if self._status is not None and status.state == "Error" and (
                    self._status.state != "Error" or self._status.reason != status.reason):
                self._errors.appendleft({"at": status.since, "message": f"line stopped: {status.reason}"})
            self._status = status
            self._version += 1

    def publish(self, result: LineResult) -> None:
        with self._lock:
            self._last = result
            self._recent.append({"index": result.index, "part_id": result.part_id, "verdict": result.verdict,
                                 "score": result.to_dict()["score"]})
            if result.verdict == "error":
                self._errors.appendleft({"at": result.finished_at, "message": f"{result.part_id}: {result.reason}"})
            self._version += 1
        self.health.count_sent()

    def note(self, message: str) -> None:
        """Another signal's trouble (a broker gone, a PLC lost), listed with the errors."""
        with self._lock:
            self._errors.appendleft({"at": utc_now(), "message": message})
            self._version += 1

    def version(self) -> int:
        with self._lock:
            return self._version

    def snapshot(self) -> dict[str, Any]:
        """The page's JSON: ``version``, ``status``, ``last`` (the result's wire form plus ``picture``:
        whether a picture can be fetched), ``recent`` (index, part_id, verdict, score), ``errors``."""
        with self._lock:
            last = None
            if self._last is not None:
                last = {**self._last.to_dict(), "has_picture": self.picture_path() is not None}
            return {
                "version": self._version,
                "status": None if self._status is None else self._status.to_dict(),
                "last": last,
                "recent": list(self._recent),
                "errors": list(self._errors),
            }

    def picture_path(self) -> Optional[Path]:
        """The last result's picture as a file inside the store, or None (a path that would leave the store,
        is not a PNG or does not exist is never served)."""
        last = self._last
        if last is None or self.store_root is None:
            return None
        rel = picture_of(last)
        if not rel or not rel.endswith(".png"):
            return None
        try:  # the store's one check of a path inside it (no '..', no absolute path, no symlink out)
            target = resolve_inside(self.store_root, rel, "line picture").resolve()
        except StoreError:
            return None
        return target if target.is_file() else None
