"""Capture campaigns: drive the robot through a pose plan over N parts and store every frame.

The loop per part: ``on_new_part(part_id)`` (the sim scene loads a new sheet; a real cell prompts the
operator), then for each planned pose: move, read the actual TCP pose and joints, capture (retrying a
camera timeout a configured number of times), store the frame crash-safely (with the simulation's exact
mask when the frame carries one). The whole plan is checked against the safety envelope before any
motion. Resume skips every (campaign, part, pose) already in the store, so an interrupted campaign is
completed with no capture duplicated or lost.

Faults: a robot fault (protective stop, lost connection, ...) is offered to ``on_robot_fault``; when that
hook returns True (it recovered the robot, e.g. after an operator confirmed) the pose is retried,
otherwise the campaign stops cleanly: everything captured is kept, the summary is written to the store,
and :class:`CampaignError` says what happened and how to resume. A pose whose camera keeps timing out,
or that the robot refuses without moving (unreachable, outside the envelope along the path), is recorded
as failed (never silently skipped) and the campaign goes on; the summary lists it and ``--resume``
retries it. Any other camera error (lost device) or store error (full disk) stops the campaign.

Behind the motion (:mod:`cell.pipeline`, ``pipeline_depth`` > 0): the robot thread moves and captures, a
worker thread writes each frame to the store (its own connection) while the robot moves on; the robot waits
only when ``pipeline_depth`` frames are waiting. A frame counts as captured (summary, progress) once its row
is committed. When the campaign stops (fault, Ctrl-C) every frame already taken is still written before the
summary; a killed process loses only the frames not yet committed, and ``--resume`` takes exactly those
again. ``pipeline_depth: 0`` writes in the robot's thread, as before.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Sequence

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from acquisition.camera import Camera, Frame
from acquisition.errors import (
    CameraError,
    CameraTimeout,
    EnvelopeViolation,
    RobotError,
    StoreError,
    UnreachablePose,
)
from acquisition.robot import Robot
from acquisition.store import CaptureStore
from cell.errors import CampaignError
from cell.pipeline import DEFAULT_DEPTH, Done, MotionPipeline, worker_store

#: on_new_part(part_id) -> the part's true label ("good" / "defective") when known (simulation), else None.
NewPartHook = Callable[[str], Optional[str]]
#: on_robot_fault(error, part_id, pose_id) -> True when the robot was recovered and the pose may be retried.
RobotFaultHook = Callable[[RobotError, str, str], bool]


class PlannedPoseLike(Protocol):
    """What the campaign needs of ``acquisition.plan.PlannedPose``."""

    pose_id: str
    pose: np.ndarray


class EnvelopeLike(Protocol):
    """What the campaign needs of ``acquisition.envelope.SafetyEnvelope``."""

    def check_plan(self, poses: Sequence[Any]) -> None: ...

    def check_motion(self, speed: float, accel: float, joint: bool = False) -> None: ...


@dataclass(frozen=True)
class PoseFailure:
    """A pose that could not be captured in this run (the campaign went on)."""

    part_id: str
    pose_id: str
    reason: str


@dataclass
class CampaignSummary:
    """What one run of a campaign did. ``status``: completed / incomplete / failed / interrupted.

    ``captures_in_store`` counts the campaign's captures after this run (all runs together);
    ``wall_s`` is wall-clock seconds of this run, ``sim_s`` the simulated seconds when a sim clock was given.
    """

    campaign: str
    status: str = "running"
    parts_requested: int = 0
    poses_per_part: int = 0
    captures_expected: int = 0
    captures_in_store: int = 0
    captures_new: int = 0
    captures_skipped: int = 0
    masks_stored: int = 0
    parts_started: int = 0
    recoveries: int = 0
    camera_retries: int = 0
    failed_poses: list[PoseFailure] = field(default_factory=list)
    error: Optional[str] = None
    stopped_at: Optional[dict[str, str]] = None
    resumed: bool = False
    started: str = ""
    finished: str = ""
    wall_s: float = 0.0
    sim_s: Optional[float] = None
    summary_path: Optional[str] = None

    @property
    def captures_per_s(self) -> float:
        """New captures per wall-clock second of this run."""
        return self.captures_new / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["captures_per_s"] = self.captures_per_s
        return data


class CampaignProgress(Protocol):
    """Receives the campaign's progress (the CLI shows it with rich; tests may record it)."""

    def start(self, campaign: str, parts: int, poses_per_part: int) -> None: ...

    def part_started(self, part_id: str, index: int) -> None: ...

    def pose_done(self, part_id: str, pose_id: str, outcome: str) -> None:
        """``outcome``: captured, skipped (already stored) or failed."""

    def stop(self) -> None: ...


class RichCampaignProgress:
    """A rich progress display: parts, poses, and captures per second of the current run."""

    def __init__(self, console: Optional[Console] = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._parts_task = None
        self._poses_task = None
        self._t0 = 0.0
        self._captured = 0
        self._failed = 0

    def start(self, campaign: str, parts: int, poses_per_part: int) -> None:
        self._t0 = time.perf_counter()
        self._progress.start()
        self._parts_task = self._progress.add_task(f"{campaign}: parts", total=parts, info="")
        self._poses_task = self._progress.add_task("poses", total=parts * poses_per_part, info="")

    def part_started(self, part_id: str, index: int) -> None:
        self._progress.update(self._parts_task, completed=index, info=part_id)

    def pose_done(self, part_id: str, pose_id: str, outcome: str) -> None:
        if outcome == "captured":
            self._captured += 1
        elif outcome == "failed":
            self._failed += 1
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        info = f"{self._captured / elapsed:.1f} captures/s"
        if self._failed:
            info += f", {self._failed} failed"
        self._progress.update(self._poses_task, advance=1, info=info)

    def stop(self) -> None:
        if self._parts_task is not None:
            task = self._progress.tasks[self._parts_task]
            if task.total is not None and all(t.finished for t in self._progress.tasks[1:]):
                self._progress.update(self._parts_task, completed=task.total)
        self._progress.stop()


class SignalInterrupt(KeyboardInterrupt):
    """Raised in the main thread by :func:`interrupt_on_signals` when SIGTERM or SIGINT arrives; ``signum``
    says which (a plain KeyboardInterrupt counts as SIGINT)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def interrupt_on_signals(signums: Sequence[int] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """While the block runs, the first SIGTERM or SIGINT raises :class:`SignalInterrupt` in the main thread,
    so that :func:`run_campaign` closes the campaign as ``interrupted`` (the default SIGTERM would end the
    process with the campaign left ``running``); a second signal while it closes is ignored, so closing is
    not cut short. Outside the main thread (where Python cannot install handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            raise SignalInterrupt(signum)

    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def part_ids(campaign: str, parts: int, part_id_format: str = "{campaign}-{index:04d}") -> list[str]:
    """The campaign's part ids, ``index`` counting from 1 (deterministic, so resume finds the same parts)."""
    try:
        ids = [part_id_format.format(campaign=campaign, index=i) for i in range(1, parts + 1)]
    except (KeyError, IndexError, ValueError) as exc:
        raise CampaignError(f"part_id_format {part_id_format!r} is invalid: {exc}") from None
    if len(set(ids)) != len(ids):
        raise CampaignError(f"part_id_format {part_id_format!r} does not give distinct part ids (use {{index}})")
    return ids


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sim_defect_type(frame: Frame) -> str:
    """The defect type stored with a simulated mask: "good" when empty, the one kind in view, or
    "combined" for several (as the sim camera reports in ``extra["sim_defect_type"]``)."""
    mask = frame.extra.get("sim_mask")
    if mask is None or not np.any(mask):
        return "good"
    reported = frame.extra.get("sim_defect_type")
    if isinstance(reported, str) and reported and reported != "good":
        return reported
    kinds = frame.extra.get("sim_defect_types") or frame.extra.get("sim_defect_kinds") or []
    kinds = sorted({str(k) for k in ([kinds] if isinstance(kinds, str) else kinds)})
    if len(kinds) == 1:
        return kinds[0]
    return "combined" if kinds else "defect"


def _sim_mask_kwargs(frame: Frame) -> dict[str, Any]:
    """``add_capture`` keywords of a simulated frame's mask (none for a real frame).

    With the sim camera's per-pixel kinds (``extra["sim_defect_labels"]`` (H, W) uint8, k = the k-th of
    ``extra["sim_defect_types"]``) every region gets its own kind; otherwise the whole mask gets
    :func:`_sim_defect_type`.
    """
    sim_mask = frame.extra.get("sim_mask")
    if sim_mask is None:
        return {}
    mask = np.asarray(sim_mask, dtype=bool)
    kinds = frame.extra.get("sim_defect_types")
    kind_labels = frame.extra.get("sim_defect_labels")
    if (isinstance(kinds, list) and kinds and isinstance(kind_labels, np.ndarray)
            and kind_labels.shape == mask.shape and kind_labels.dtype == np.uint8):
        return {"mask": kind_labels, "mask_types": [str(k) for k in kinds], "defect_type": "good",
                "mask_source": "sim"}
    return {"mask": mask, "defect_type": _sim_defect_type(frame), "mask_source": "sim"}


def run_campaign(
    robot: Robot,
    camera: Camera,
    store: CaptureStore,
    plan: Sequence[PlannedPoseLike],
    parts: int,
    *,
    campaign: str,
    envelope: EnvelopeLike,
    speed: float,
    accel: float,
    on_new_part: Optional[NewPartHook] = None,
    resume: bool = False,
    config: Optional[Mapping[str, Any]] = None,
    calibration_id: Optional[str] = None,
    camera_retries: int = 2,
    capture_timeout_s: float = 2.0,
    on_robot_fault: Optional[RobotFaultHook] = None,
    max_recoveries_per_pose: int = 3,
    progress: Optional[CampaignProgress] = None,
    part_id_format: str = "{campaign}-{index:04d}",
    sim_clock: Optional[Callable[[], float]] = None,
    pipeline_depth: int = DEFAULT_DEPTH,
) -> CampaignSummary:
    """Capture ``parts`` parts at every pose of ``plan`` into ``store`` as campaign ``campaign``.

    ``plan``: planned poses (``pose_id``, ``pose`` (6,) m + rotation vector, base frame), visited in
    order; ``speed`` m/s and ``accel`` m/s^2 of the linear moves. ``envelope`` checks the whole plan and
    the motion limits BEFORE any motion (violation -> CampaignError, robot not moved). ``config`` is
    stored with the campaign (resume must present the same). ``camera_retries``: extra attempts after a
    CameraTimeout before the pose is recorded as failed. ``sim_clock``: a ``now()`` callable whose
    elapsed time is reported as ``sim_s``. ``pipeline_depth``: frames that may wait behind the robot for the
    store writer (0 = write in this thread).

    Returns the run's :class:`CampaignSummary` (also written to ``campaigns/<name>/summary.json`` in the
    store). A fault that stops the campaign raises CampaignError after the summary is written. Ctrl+C (and
    SIGTERM inside :func:`interrupt_on_signals`, as ``cell capture`` runs it) stops it the same clean way with
    status ``interrupted``: :class:`~cell.errors.CampaignInterrupted` names the signal, where it stopped and
    ``--resume``.
    """
    if parts < 1:
        raise CampaignError(f"parts = {parts}: a campaign needs at least one part")
    if not plan:
        raise CampaignError(f"campaign {campaign!r}: the pose plan is empty")
    if camera_retries < 0:
        raise CampaignError(f"camera_retries = {camera_retries}: must be >= 0")
    pose_ids = [p.pose_id for p in plan]
    if len(set(pose_ids)) != len(pose_ids):
        raise CampaignError(f"campaign {campaign!r}: the pose plan has duplicate pose ids")
    ids = part_ids(campaign, parts, part_id_format)

    # Safety first: the whole plan and the motion limits, before the robot moves at all.
    try:
        envelope.check_plan(list(plan))
        envelope.check_motion(speed, accel)
    except RobotError as exc:
        raise CampaignError(f"campaign {campaign!r} refused before any motion: {exc}") from exc

    try:
        store.start_campaign(campaign, dict(config or {}), calibration_id, resume=resume)
    except StoreError as exc:
        raise CampaignError(str(exc)) from exc
    if resume:
        store.cleanup_temp()

    summary = CampaignSummary(
        campaign=campaign, parts_requested=parts, poses_per_part=len(plan), captures_expected=parts * len(plan),
        resumed=resume, started=_now(),
    )
    done = store.captured_keys(campaign)
    t0 = time.perf_counter()
    s0 = sim_clock() if sim_clock is not None else None
    if progress is not None:
        progress.start(campaign, parts, len(plan))
    signum = signal.SIGINT  # the signal that interrupted the campaign (SignalInterrupt says which; else Ctrl+C)
    current_part = ids[0]
    stop_error: Optional[BaseException] = None
    interrupted = False
    writer: MotionPipeline[_StoreJob, Any] = MotionPipeline(
        _StoreWriter(), depth=pipeline_depth, open_resource=worker_store(store), inline_resource=store,
        name=f"store-{campaign}",
    )
    try:
        for index, part_id in enumerate(ids):
            current_part = part_id
            if progress is not None:
                progress.part_started(part_id, index)
            todo = [p for p in plan if (part_id, p.pose_id) not in done]
            if not todo:
                summary.captures_skipped += len(plan)
                if progress is not None:
                    for p in plan:
                        progress.pose_done(part_id, p.pose_id, "skipped")
                continue
            summary.parts_started += 1
            truth = on_new_part(part_id) if on_new_part is not None else None
            apply_truth(store, part_id, truth)
            for planned in plan:
                if (part_id, planned.pose_id) in done:
                    summary.captures_skipped += 1
                    if progress is not None:
                        progress.pose_done(part_id, planned.pose_id, "skipped")
                    continue
                outcome = _capture_pose(
                    robot, camera, writer, summary, campaign, part_id, planned,
                    speed=speed, accel=accel, camera_retries=camera_retries, capture_timeout_s=capture_timeout_s,
                    on_robot_fault=on_robot_fault, max_recoveries=max_recoveries_per_pose,
                    calibration_id=calibration_id,
                )
                if progress is not None and outcome == "failed":
                    progress.pose_done(part_id, planned.pose_id, outcome)
                store_error = _count_stored(writer.poll(), summary, progress)
                if store_error is not None:
                    raise store_error
    except (RobotError, CameraError, StoreError) as exc:
        stop_error = exc
    except KeyboardInterrupt as exc:
        interrupted = True
        signum = getattr(exc, "signum", signal.SIGINT)
    finally:
        # every frame already taken is written before the summary (the worker goes on after a stop)
        stopped_at = summary.stopped_at
        store_error = _count_stored(writer.drain(), summary, progress)
        if stop_error is None and store_error is not None:
            stop_error = store_error
        elif stop_error is not None:
            summary.stopped_at = stopped_at  # the fault that stopped the campaign names its pose
        writer.close()
        if progress is not None:
            progress.stop()

    summary.wall_s = time.perf_counter() - t0
    if s0 is not None and sim_clock is not None:
        summary.sim_s = sim_clock() - s0
    summary.finished = _now()
    if stop_error is not None:
        summary.status = "failed"
        summary.error = f"{type(stop_error).__name__}: {stop_error}"
    elif interrupted:
        summary.status = "interrupted"
        summary.error = f"interrupted by {signal.Signals(signum).name}"
    else:
        summary.status = "incomplete" if summary.failed_poses else "completed"
    summary.captures_in_store = len(store.captured_keys(campaign))
    summary_note = ""
    try:
        summary.summary_path = str(store.finish_campaign(campaign, summary.status, summary.to_dict()))
    except StoreError as exc:
        summary_note = f" (the summary could not be written: {exc})"
    if interrupted:
        from cell.errors import CampaignInterrupted

        where = summary.stopped_at or {"part_id": current_part}
        at = f"part {where['part_id']}" + (f" pose {where['pose_id']}" if "pose_id" in where else "")
        raise CampaignInterrupted(
            f"campaign {campaign!r} {summary.error} at {at}: {summary.captures_in_store} of "
            f"{summary.captures_expected} captures are stored in {store.root}; run again with --resume to "
            f"continue{summary_note}", signum=int(signum),
        )
    if stop_error is not None:
        where = summary.stopped_at or {}
        raise CampaignError(
            f"campaign {campaign!r} stopped at part {where.get('part_id', '?')} pose {where.get('pose_id', '?')}: "
            f"{summary.error}; {summary.captures_in_store} of {summary.captures_expected} captures are stored in "
            f"{store.root}; fix the cause and run again with --resume{summary_note}"
        ) from stop_error
    if summary_note:
        raise CampaignError(f"campaign {campaign!r} finished{summary_note}")
    return summary


def apply_truth(store: CaptureStore, part_id: str, truth: Optional[str]) -> Optional[str]:
    """Set the part's label from the simulation's truth ("good" / "defective"; None = unknown, no change),
    never overriding a label a person set. Returns the part's label afterwards (None when unknown)."""
    if truth is None:
        return None
    if truth not in ("good", "defective"):
        raise CampaignError(f"on_new_part returned {truth!r} for part {part_id}: expected 'good', 'defective' or None")
    try:
        existing = store.part(part_id)
    except StoreError:
        existing = None
    if existing is not None and existing.source == "human" and existing.label != "unlabelled":
        return existing.label
    store.set_part_label(part_id, truth, source="sim")
    return truth


def capture_with_retries(
    camera: Camera, *, retries: int, timeout_s: float
) -> tuple[Optional[Frame], int, Optional[CameraTimeout]]:
    """Capture, trying again after a CameraTimeout up to ``retries`` times (other camera errors propagate).

    Returns (the frame, or None when every attempt timed out; how many attempts timed out; the last timeout).
    """
    last: Optional[CameraTimeout] = None
    for attempt in range(retries + 1):
        try:
            return camera.capture(timeout_s=timeout_s), attempt, last
        except CameraTimeout as exc:
            last = exc
    return None, retries + 1, last


@dataclass(frozen=True)
class _StoreJob:
    """A frame taken at one pose, on its way to the store writer."""

    campaign: str
    part_id: str
    planned: PlannedPoseLike
    frame: Frame
    commanded: np.ndarray
    actual: np.ndarray
    joints: np.ndarray
    calibration_id: Optional[str]


class _StoreWriter:
    """The writer's handler: store one frame (in the pipeline's worker, with the worker's store). After a
    store error it writes nothing more (returns None), so the store holds what a sequential campaign would
    have: the poses before the one that failed; the frames taken meanwhile are taken again by ``--resume``."""

    def __init__(self) -> None:
        self.failed = False

    def __call__(self, store: CaptureStore, job: _StoreJob) -> Any:
        if self.failed:
            return None
        try:
            return store_frame(store, job.campaign, job.part_id, job.planned, job.frame, job.commanded, job.actual,
                               job.joints, calibration_id=job.calibration_id)
        except StoreError:
            self.failed = True
            raise


def _count_stored(done: Sequence[Done[_StoreJob, Any]], summary: CampaignSummary,
                  progress: Optional[CampaignProgress]) -> Optional[BaseException]:
    """Count the frames the writer committed; returns the first store error (its pose becomes ``stopped_at``).
    A handler error that is not a StoreError is a bug and is raised."""
    first: Optional[BaseException] = None
    for item in done:
        job = item.job
        if item.error is not None:
            if not isinstance(item.error, StoreError):
                raise item.error
            if first is None:
                first = item.error
                summary.stopped_at = {"part_id": job.part_id, "pose_id": job.planned.pose_id}
            continue
        if item.result is None:  # not written: the writer stopped at an earlier store error
            continue
        summary.captures_new += 1
        if job.frame.extra.get("sim_mask") is not None:
            summary.masks_stored += 1
        if progress is not None:
            progress.pose_done(job.part_id, job.planned.pose_id, "captured")
    return first


def _capture_pose(
    robot: Robot,
    camera: Camera,
    writer: MotionPipeline[_StoreJob, Any],
    summary: CampaignSummary,
    campaign: str,
    part_id: str,
    planned: PlannedPoseLike,
    *,
    speed: float,
    accel: float,
    camera_retries: int,
    capture_timeout_s: float,
    on_robot_fault: Optional[RobotFaultHook],
    max_recoveries: int,
    calibration_id: Optional[str],
) -> str:
    """Move to one pose, capture it and hand the frame to the store writer. Returns "captured" (handed over) or
    "failed"; stopping faults raise."""
    pose_id = planned.pose_id
    commanded = np.asarray(planned.pose, dtype=float).reshape(6)
    summary.stopped_at = {"part_id": part_id, "pose_id": pose_id}
    recoveries = 0
    while True:
        try:
            robot.move_linear(commanded.tolist(), speed, accel)
            actual = np.asarray(robot.tcp_pose(), dtype=float)
            joints = np.asarray(robot.joint_positions(), dtype=float)
            break
        except (UnreachablePose, EnvelopeViolation) as exc:
            # The robot refused this one target and did not move: the pose fails, the campaign goes on.
            summary.failed_poses.append(PoseFailure(part_id, pose_id, f"{type(exc).__name__}: {exc}"))
            summary.stopped_at = None
            return "failed"
        except RobotError as exc:
            if on_robot_fault is None or recoveries >= max_recoveries or not on_robot_fault(exc, part_id, pose_id):
                raise
            recoveries += 1
            summary.recoveries += 1

    frame, timeouts, last_timeout = capture_with_retries(camera, retries=camera_retries, timeout_s=capture_timeout_s)
    summary.camera_retries += min(timeouts, camera_retries)
    if frame is None:
        summary.failed_poses.append(PoseFailure(
            part_id, pose_id, f"camera timed out {camera_retries + 1} time(s): {last_timeout}"
        ))
        summary.stopped_at = None
        return "failed"

    writer.submit(_StoreJob(campaign, part_id, planned, frame, commanded, actual, joints, calibration_id))
    summary.stopped_at = None
    return "captured"


def store_frame(
    store: CaptureStore,
    campaign: str,
    part_id: str,
    planned: PlannedPoseLike,
    frame: Frame,
    commanded: np.ndarray,
    actual: np.ndarray,
    joints: np.ndarray,
    *,
    calibration_id: Optional[str] = None,
    extra_meta: Optional[Mapping[str, Any]] = None,
) -> Any:
    """Store one frame with its pose metadata, and the simulation's exact mask when the frame carries one
    (in the same transaction), each region typed with its sim defect kind. Shared by capture campaigns and
    the inspection loop."""
    mask_kwargs = _sim_mask_kwargs(frame)
    meta = {"shot": getattr(planned, "shot", None), "grid_index": list(getattr(planned, "grid_index", ()) or ())}
    meta.update(extra_meta or {})
    return store.add_capture(
        campaign, part_id, planned.pose_id, frame, commanded, actual, joints, meta,
        calibration_id=calibration_id, **mask_kwargs,
    )
