"""Work behind the motion: one worker thread that stores (and scores) what the robot just captured.

While the robot moves to pose k+1 and captures it, pose k is handled by the worker. Shared by the
inspection loop (:mod:`cell.inspection`: store + score each pose, decide the part) and capture campaigns
(:mod:`cell.campaign`: store each frame).

    robot thread:  move -> capture -> submit(job) ----> move -> capture -> submit(job) ...
                                          | bounded queue (the robot waits only when it is full)
    worker thread:                        +--> handle(resource, job) -> Done(job, result | error), in order

Rules this module keeps:

* **Order.** One worker, a FIFO queue: jobs are handled, and their :class:`Done` records returned by
  :meth:`MotionPipeline.poll` / :meth:`MotionPipeline.drain`, in submission order.
* **Bounded.** At most ``depth`` jobs wait in the queue (plus the one being handled); :meth:`submit` blocks
  while the queue is full. ``depth = 0`` is the sequential mode: :meth:`submit` handles the job at once in
  the caller's thread with the caller's resource (the same code path, nothing behind the motion).
* **Faults are data.** An ``Exception`` raised by the handler becomes that job's ``Done.error``; the
  worker goes on with the next job. Nothing is dropped silently: every submitted job gets exactly one
  :class:`Done`.
* **One thread per SQLite connection.** The worker's resource (for the store: its own
  :class:`~acquisition.store.CaptureStore` on the same folder) is opened and closed INSIDE the worker thread
  by ``open_resource``; the caller keeps its own. So no connection is ever used by two threads, and the two
  writers are serialised by SQLite itself (WAL, ``BEGIN IMMEDIATE``, 30 s busy timeout), as two processes
  on one store are. Which thread writes what: the worker writes everything per pose (image files, capture
  rows, heatmaps, the inspection row: the slow, fsynced writes the robot must not wait for, and one writer
  keeps them in order); the caller writes only per-campaign rows and part labels (``start_campaign``,
  ``apply_truth``, ``finish_campaign``), before or after the worker's rows of the same part.
* **Crash safety** is the store's: every row is committed after its complete file; a job still in the
  queue when the process is killed was never written (a campaign's ``--resume`` takes that pose again).
"""
from __future__ import annotations

import queue
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, TypeVar

from acquisition.store import CaptureStore

J = TypeVar("J")
R = TypeVar("R")

#: The default number of jobs that may wait behind the robot (memory: one frame each).
DEFAULT_DEPTH = 2

_STOP = object()


@dataclass(frozen=True)
class Done(Generic[J, R]):
    """One handled job: ``result`` when the handler returned, ``error`` when it raised (never both)."""

    job: J
    result: Optional[R] = None
    error: Optional[BaseException] = None

    @property
    def ok(self) -> bool:
        return self.error is None


class PipelineBroken(RuntimeError):
    """The worker thread itself died (a bug, or its resource could not be opened): no more jobs are handled."""


class MotionPipeline(Generic[J, R]):
    """A bounded FIFO of jobs handled by one worker thread (see the module docstring).

    ``handle(resource, job) -> result`` runs in the worker with the worker's ``resource``, which
    ``open_resource()`` returns as a context manager entered in the worker thread (e.g. the worker's own
    store connection); ``inline_resource`` is the resource of the sequential mode (``depth = 0``, handled in
    the caller's thread). ``depth``: how many jobs may wait (>= 0). Use as a context manager: leaving it
    waits for every submitted job and stops the worker.

    Statistics for tests and benchmarks: :attr:`max_waiting` (the most jobs seen waiting in the queue at a
    submit, never above ``depth``), :attr:`blocked_s` (seconds :meth:`submit` waited for room), :attr:`busy_s`
    and :attr:`busy_cpu_s` (wall and thread-CPU seconds spent in ``handle``); :meth:`stats` has them all.
    """

    def __init__(
        self,
        handle: Callable[[Any, J], R],
        *,
        depth: int = DEFAULT_DEPTH,
        open_resource: Callable[[], AbstractContextManager[Any]] = nullcontext,
        inline_resource: Any = None,
        name: str = "behind-the-motion",
    ) -> None:
        if depth < 0:
            raise ValueError(f"pipeline depth must be >= 0, got {depth}")
        self.depth = int(depth)
        self._handle = handle
        self._open_resource = open_resource
        self._inline_resource = inline_resource
        self._done: "queue.Queue[Done[J, R]]" = queue.Queue()
        self._submitted = 0
        self._returned = 0
        self._broken: Optional[BaseException] = None
        self._closed = False
        self.max_waiting = 0
        self.blocked_s = 0.0
        self.busy_s = 0.0
        self.busy_cpu_s = 0.0
        self.handled = 0
        self._thread: Optional[threading.Thread] = None
        self._jobs: "Optional[queue.Queue[Any]]" = None
        self._ready = threading.Event()
        if self.depth > 0:
            self._jobs = queue.Queue(maxsize=self.depth)
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()
            self._ready.wait()
            if self._broken is not None:  # its resource could not be opened (e.g. a StoreError): say why
                raise self._broken

    # ------------------------------------------------------------------ the caller's side
    @property
    def pending(self) -> int:
        """Jobs submitted whose :class:`Done` has not been returned by poll/drain yet."""
        return self._submitted - self._returned

    def submit(self, job: J) -> None:
        """Queue ``job`` (blocks while ``depth`` jobs wait); with ``depth = 0`` handle it now."""
        if self._closed:
            raise RuntimeError("submit after close")
        self._check_worker()
        self._submitted += 1
        if self._jobs is None:
            self._done.put(self._call(self._inline_resource, job))
            return
        self.max_waiting = max(self.max_waiting, self._jobs.qsize())
        if self._jobs.full():
            t0 = time.perf_counter()
            self._put(job)
            self.blocked_s += time.perf_counter() - t0
        else:
            self._put(job)

    def poll(self) -> list[Done[J, R]]:
        """The jobs handled since the last poll/drain, in submission order (never waits)."""
        out: list[Done[J, R]] = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                break
        self._returned += len(out)
        if not out:
            self._check_worker()
        return out

    def drain(self) -> list[Done[J, R]]:
        """Wait until every submitted job is handled; their :class:`Done` records, in order."""
        out: list[Done[J, R]] = []
        while self.pending - len(out) > 0:
            try:
                out.append(self._done.get(timeout=0.5))
            except queue.Empty:
                self._check_worker()
        self._returned += len(out)
        return out

    def close(self) -> None:
        """Stop the worker after the jobs already queued (idempotent). Their results stay pollable."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None and self._jobs is not None:
            if self._broken is None:
                self._put(_STOP)
            self._thread.join()

    def __enter__(self) -> "MotionPipeline[J, R]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers
    def _put(self, item: Any) -> None:
        assert self._jobs is not None
        while True:
            try:
                self._jobs.put(item, timeout=0.5)
                return
            except queue.Full:
                self._check_worker()

    def _check_worker(self) -> None:
        if self._broken is not None:
            raise PipelineBroken(f"the worker behind the motion died: {type(self._broken).__name__}: "
                                 f"{self._broken}") from self._broken

    def stats(self) -> dict[str, Any]:
        """depth, jobs handled, max_waiting, blocked_s, busy_s, busy_cpu_s (see the class docstring)."""
        return {"depth": self.depth, "handled": self.handled, "max_waiting": self.max_waiting,
                "blocked_s": round(self.blocked_s, 4), "busy_s": round(self.busy_s, 4),
                "busy_cpu_s": round(self.busy_cpu_s, 4)}

    def _call(self, resource: Any, job: J) -> Done[J, R]:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            return Done(job, result=self._handle(resource, job))
        except Exception as exc:  # noqa: BLE001 - a fault of one job is that job's outcome
            return Done(job, error=exc)
        finally:
            self.busy_s += time.perf_counter() - wall0
            self.busy_cpu_s += time.thread_time() - cpu0
            self.handled += 1

    def _run(self) -> None:
        assert self._jobs is not None
        try:
            with self._open_resource() as resource:
                self._ready.set()
                while True:
                    job = self._jobs.get()
                    if job is _STOP:
                        return
                    self._done.put(self._call(resource, job))
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, never lost
            self._broken = exc
        finally:
            self._ready.set()


def worker_store(store: CaptureStore) -> Callable[[], CaptureStore]:
    """``open_resource`` for a pipeline that writes ``store``: the worker's own connection to the same folder
    (opened in the worker thread, with the same PNG compression)."""
    root, compression = store.root, store.png_compression
    return lambda: CaptureStore(root, png_compression=compression)
