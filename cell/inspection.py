"""``cell inspect``: the unattended line loop.

For each new part: run the pose plan and capture every image; behind the motion (:mod:`cell.pipeline`) a
worker stores and scores each pose with the trained detector and projects its anomaly map onto the part, into
the part's map (:class:`~cell.part_map.PartMapAccumulator`, fed pose by pose). When the part's last pose is
scored, :func:`decide_part` (THE part decision) decides from the part's :class:`~cell.part_map.PoseResult`
list and its map: NOK when some region of the fused map exceeds the part threshold (its defects, in mm), OK
when every pose was captured and scored, the whole part was covered and no region exceeds it; a part whose
plan did not cover it is ``error``. Without part geometry (:class:`PartJudge` with no camera) the per-image
rule applies: NOK when any pose's score exceeds the image threshold. A fault anywhere (robot, camera, store,
a scoring exception, a non-finite score or map) NEVER yields OK: the part is recorded as ``error`` with the
reason, and the loop continues (after ``robot.recover()`` for a robot/camera fault) or stops, as configured.
Each part gets an inspection row in the store (verdict, defects, per-pose scores, worst pose, model), the
part-map overlay PNG and fused map (.npy), heatmaps for NOK parts, its :class:`~cell.line_result.LineResult`
for the line's signals (:mod:`cell.signals`) and one live line on the console.
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from acquisition.errors import CameraError, CameraTimeout, RobotError, StoreError
from acquisition.store import CaptureStore
from cell.campaign import apply_truth, capture_with_retries, part_ids, store_frame
from cell.errors import CampaignError, LineStopped
from cell.line_result import LineResult, PartDefect, utc_now
from cell.overlays import heatmap_overlay, png_bytes
from cell.part_map import PartFrame, PartMap, PartMapAccumulator, PartMapConfig, PartMapError, PoseResult
from cell.pipeline import DEFAULT_DEPTH, Done, MotionPipeline, worker_store
from cell.signals import LineSignals
from detectors.input_prep import InputSpec, score_capture
from detectors.thresholds import ThresholdDecision

VERDICTS = ("OK", "NOK", "error")


class InspectConfig(BaseModel):
    """The ``inspect:`` behaviour (CLI flags override). ``heatmaps``: ``nok`` draws, for a NOK part, the poses
    above the image threshold and the worst pose (so a part NOK on its part map has its worst view drawn too),
    ``all`` every pose of every part."""

    model_config = ConfigDict(extra="forbid")

    on_error: Literal["continue", "stop"] = "continue"
    max_consecutive_errors: int = Field(3, ge=1, description="stop after this many error parts in a row")
    camera_retries: int = Field(2, ge=0, le=20)
    capture_timeout_s: float = Field(2.0, gt=0.0)
    heatmaps: Literal["nok", "all", "none"] = "nok"
    pipeline_depth: int = Field(DEFAULT_DEPTH, ge=0, le=64,
                                description="captured poses that may wait behind the robot; 0 = sequential")


@dataclass
class PartResult:
    """The outcome of one part. ``pose_scores``: pose id -> image score (only poses that were scored);
    ``score``: the part's score from :func:`decide_part`, compared with the part threshold (the part map's
    score; the worst pose's score under the per-image rule; None for an error part); ``defects``: the part
    map's regions above the part threshold (NOK), ``coverage``: share of the outline seen; ``part_map`` /
    ``part_map_array``: store-relative paths of the part-map overlay PNG and the fused map (.npy, float32,
    NaN = unseen)."""

    part_id: str
    verdict: str
    reason: str = ""
    pose_scores: dict[str, float] = field(default_factory=dict)
    worst_pose: Optional[str] = None
    truth: Optional[str] = None
    seconds: float = 0.0
    heatmaps: list[str] = field(default_factory=list)
    score: Optional[float] = None
    defects: list[PartDefect] = field(default_factory=list)
    coverage: Optional[float] = None
    part_map: Optional[str] = None
    part_map_array: Optional[str] = None

    @property
    def max_score(self) -> Optional[float]:
        return max(self.pose_scores.values()) if self.pose_scores else None


@dataclass
class InspectionSummary:
    campaign: str
    results: list[PartResult] = field(default_factory=list)
    stopped_early: Optional[str] = None
    #: the worker behind the motion: :meth:`cell.pipeline.MotionPipeline.stats` of the run
    pipeline: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {v: sum(r.verdict == v for r in self.results) for v in VERDICTS}

    def confusion(self) -> dict[str, dict[str, int]]:
        """truth ('good' / 'defective' / 'unknown') -> verdict -> count."""
        table: dict[str, dict[str, int]] = {}
        for r in self.results:
            row = table.setdefault(r.truth or "unknown", {v: 0 for v in VERDICTS})
            row[r.verdict] += 1
        return table


def to_line_result(result: PartResult, *, campaign: str, index: int, threshold: ThresholdDecision,
                   model_dir: Optional[Path], started_at: str, finished_at: str) -> LineResult:
    """What the line's signals are told about ``result``: the part's score from :func:`decide_part`, compared
    with ``threshold`` (the threshold that decided: the part threshold on the part map; None for an error part:
    a fault is never reported as a score below the threshold), the part map's defects (mm, NOK only), its
    coverage and overlay; the worst pose and the heatmaps' store paths travel in ``extra``."""
    return LineResult(
        part_id=result.part_id, campaign=campaign, verdict=result.verdict, reason=result.reason,
        started_at=started_at, finished_at=finished_at,
        score=result.score if result.verdict != "error" else None, threshold=threshold.value,
        defects=tuple(result.defects) if result.verdict == "NOK" else (), coverage=result.coverage,
        model=None if model_dir is None else str(model_dir), truth=result.truth, part_map=result.part_map,
        index=index, extra={"worst_pose": result.worst_pose, "heatmaps": list(result.heatmaps)},
    )



# ---------------------------------------------------------------------------------------------- the decision
@dataclass(frozen=True)
class PartJudge:
    """How a part's verdict is made from its scored poses: on the part map (``camera``, ``T_flange_cam`` and
    ``part`` given; ``threshold`` is the PART threshold, valid for ``config``) or, without them, by the
    per-image rule (``threshold`` is the image threshold: NOK when any pose's score exceeds it)."""

    threshold: ThresholdDecision
    camera: Any = None
    T_flange_cam: Any = None
    part: Optional[PartFrame] = None
    config: PartMapConfig = field(default_factory=PartMapConfig)

    @property
    def uses_part_map(self) -> bool:
        return self.camera is not None and self.T_flange_cam is not None and self.part is not None

    def accumulator(self) -> Optional[PartMapAccumulator]:
        """An empty part map to feed pose by pose (None for the per-image rule)."""
        return PartMapAccumulator(self.camera, self.T_flange_cam, self.part, self.config) if self.uses_part_map else None


@dataclass(frozen=True)
class PartDecision:
    """What :func:`decide_part` decided: ``verdict`` OK / NOK / error, a one-line ``reason``, ``score`` (the part
    score compared with the threshold; None for error), ``worst_pose`` (the pose with the highest image score),
    ``defects`` (NOK on the part map: its regions), ``coverage`` and the part ``part_map`` (part-map rule)."""

    verdict: str
    reason: str
    score: Optional[float] = None
    worst_pose: Optional[str] = None
    defects: list[PartDefect] = field(default_factory=list)
    coverage: Optional[float] = None
    part_map: Optional[PartMap] = None


def describe_defects(defects: Sequence[PartDefect]) -> str:
    """``2 defects, largest 14 mm2 at (120.5, 45.0) mm``."""
    largest = max(defects, key=lambda d: d.area_mm2)
    area = f"{largest.area_mm2:.{1 if largest.area_mm2 < 10 else 0}f}"
    return (f"{len(defects)} defect{'s' if len(defects) != 1 else ''}, largest {area} mm2 "
            f"at ({largest.x_mm:.1f}, {largest.y_mm:.1f}) mm")


def decide_part(scored: Sequence[PoseResult], judge: PartJudge, planned: int,
                accumulator: Optional[PartMapAccumulator] = None) -> PartDecision:
    """THE part decision, from the part's scored poses in plan order (``planned``: the plan's pose count; the
    loop makes faulted parts ``error`` before they get here).

    ``accumulator``: the part map already fed with these poses (as the worker feeds it while the robot moves);
    None: the poses' maps are projected here. Never OK unless every planned pose was scored, every score is
    finite and (part map) the whole outline was seen: a missing pose, a non-finite score or map, or partial
    coverage is ``error`` (NaN compared with a threshold would read as "not above it", i.e. OK). Per-image
    rule (``judge`` without geometry): NOK when the worst pose's image score exceeds ``judge.threshold``.
    """
    if not scored:
        return PartDecision("error", "no pose was scored")
    if len(scored) != planned:
        return PartDecision("error", f"only {len(scored)} of {planned} planned poses were scored")
    bad = [p.pose_id for p in scored if not math.isfinite(p.score)]
    if bad:
        return PartDecision("error", f"non-finite score at pose {bad[0]}")
    worst = max(scored, key=lambda p: p.score)
    threshold = judge.threshold
    if not judge.uses_part_map:
        nok = bool(threshold.is_anomalous(np.array([worst.score]))[0])
        return PartDecision(
            "NOK" if nok else "OK",
            f"score {worst.score:.4g} at {worst.pose_id} {'>' if nok else '<='} threshold {threshold.value:.4g}",
            score=float(worst.score), worst_pose=worst.pose_id,
        )
    try:
        if accumulator is None:
            accumulator = judge.accumulator()
            for pose in scored:
                accumulator.add(pose)  # type: ignore[union-attr]
        part_map = accumulator.finish()  # type: ignore[union-attr]
    except PartMapError as exc:
        return PartDecision("error", f"part map: {exc}", worst_pose=worst.pose_id)
    coverage = part_map.coverage
    if coverage < judge.config.min_coverage or part_map.score is None:
        return PartDecision("error", f"the plan's views covered only {coverage:.1%} of the part: not judged on partial "
                            "coverage", worst_pose=worst.pose_id, coverage=coverage, part_map=part_map)
    score = float(part_map.score)
    if not math.isfinite(score):
        return PartDecision("error", "the part map holds non-finite values", worst_pose=worst.pose_id,
                            coverage=coverage, part_map=part_map)
    defects = part_map.defects(threshold.value)
    if defects:
        return PartDecision("NOK", describe_defects(defects), score=score, worst_pose=worst.pose_id, defects=defects,
                            coverage=coverage, part_map=part_map)
    return PartDecision("OK", f"no defect: part score {score:.4g} <= part threshold {threshold.value:.4g}",
                        score=score, worst_pose=worst.pose_id, coverage=coverage, part_map=part_map)


# ---------------------------------------------------------------------------------------------- the worker
class _NonFiniteScore(Exception):
    """The model scored a pose NaN or infinite (or its map holds NaN): the part's verdict is "error"."""


@dataclass(frozen=True)
class _PoseJob:
    """A captured pose on its way to the worker (store, then score)."""

    part_id: str
    planned: Any
    frame: Any
    commanded: np.ndarray
    actual: np.ndarray
    joints: np.ndarray


@dataclass(frozen=True)
class _PartEnd:
    """The robot is done with a part: ``fault`` is its robot/camera fault (None when every pose was taken)."""

    part_id: str
    truth: Optional[str]
    started: float
    fault: Optional[str] = None


@dataclass(frozen=True)
class _PoseOutcome:
    part_id: str
    pose_id: str
    failed: bool


@dataclass(frozen=True)
class _PartOutcome:
    result: PartResult
    robot_fault: bool
    record_error: Optional[str] = None


@dataclass
class _PartState:
    """One part in the worker. ``scored``: its poses in plan order, WITHOUT their maps (what a map contributes
    is in ``accumulator``, the part map fed pose by pose; None under the per-image rule); ``drawable``: pose id
    -> (pixels, anomaly map) of the poses a heatmap may be drawn for (see :meth:`_InspectionWorker._keep`)."""

    accumulator: Optional[PartMapAccumulator] = None
    scored: list[PoseResult] = field(default_factory=list)
    drawable: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    worst: Optional[tuple[float, str]] = None
    failure: Optional[str] = None


_NO_MAP = np.empty((0, 0), np.float32)


class _InspectionWorker:
    """Handles the inspection's jobs in order, in the pipeline's worker (or inline): per pose, store the
    frame, score it and feed its map to the part's map; per part end, decide (:func:`decide_part`), write the
    part map's artifacts, the heatmaps and the inspection row. Every fault of a pose (store, scoring
    exception, non-finite score or map, a map the part map refuses) makes its part ``error``; the later poses
    of a failed part are still stored (the captures stay complete) but no longer scored.

    ``threshold``: the model's IMAGE threshold (per-pose scores, heatmaps); ``judge``: how the part is decided
    (its threshold is the part threshold on the part map)."""

    def __init__(self, *, detector: Any, spec: InputSpec, threshold: ThresholdDecision, judge: PartJudge,
                 config: InspectConfig, campaign: str, plan_size: int, model_dir: Optional[Path],
                 calibration_id: Optional[str]) -> None:
        self.detector, self.spec, self.threshold, self.judge, self.config = detector, spec, threshold, judge, config
        self.campaign, self.plan_size = campaign, plan_size
        self.model_dir, self.calibration_id = model_dir, calibration_id
        self._parts: dict[str, _PartState] = {}

    def __call__(self, store: CaptureStore, job: Any) -> Any:
        if isinstance(job, _PoseJob):
            return self._pose(store, job)
        return self._part_end(store, job)

    def _pose(self, store: CaptureStore, job: _PoseJob) -> _PoseOutcome:
        state = self._parts.setdefault(job.part_id, _PartState())
        pose_id = job.planned.pose_id
        try:
            store_frame(store, self.campaign, job.part_id, job.planned, job.frame, job.commanded, job.actual,
                        job.joints, calibration_id=self.calibration_id, extra_meta={"inspection": True})
        except StoreError as exc:
            state.failure = state.failure or f"StoreError: {exc}"
            return _PoseOutcome(job.part_id, pose_id, True)
        if state.failure is not None:
            return _PoseOutcome(job.part_id, pose_id, True)
        height, width = np.asarray(job.frame.pixels).shape[:2]
        frame_size = (int(height), int(width))
        tcp_pose = np.asarray(job.actual, dtype=float)
        try:
            score, anomaly_map = score_capture(self.detector, job.frame.pixels, self.spec)
            if not math.isfinite(score):  # e.g. a numerical overflow: never compared with the threshold
                raise _NonFiniteScore(f"the model gave a non-finite score ({score}) for pose {pose_id}")
            if not np.all(np.isfinite(anomaly_map)):
                raise _NonFiniteScore(f"the model's anomaly map for pose {pose_id} is non-finite "
                                      "(NaN or infinite values)")
            if not state.scored:  # the part's first scored pose: its map starts empty
                state.accumulator = self.judge.accumulator()
            if state.accumulator is not None:  # fed as the poses come
                state.accumulator.add(PoseResult(pose_id, float(score), anomaly_map, tcp_pose, frame_size),
                                      image=job.frame.pixels)
        except (_NonFiniteScore, PartMapError) as exc:
            state.failure = f"{type(exc).__name__}: {exc}"
            return _PoseOutcome(job.part_id, pose_id, True)
        except Exception as exc:  # noqa: BLE001 - a model that fails never passes a part
            state.failure = f"scoring pose {pose_id} failed: {type(exc).__name__}: {exc}"
            return _PoseOutcome(job.part_id, pose_id, True)
        state.scored.append(PoseResult(pose_id, float(score), _NO_MAP, tcp_pose, frame_size))
        self._keep(state, pose_id, float(score), job.frame.pixels, anomaly_map)
        return _PoseOutcome(job.part_id, pose_id, False)

    def _keep(self, state: _PartState, pose_id: str, score: float, pixels: np.ndarray, anomaly_map: np.ndarray) -> None:
        """Keep only the frames a heatmap may be drawn for: every pose (``heatmaps: all``), else the poses above
        the image threshold and the part's worst pose so far (replaced when a worse one comes)."""
        if self.config.heatmaps == "none":
            return
        above = bool(self.threshold.is_anomalous(np.array([score]))[0])
        if self.config.heatmaps == "all" or above:
            state.drawable[pose_id] = (pixels, anomaly_map)
        if state.worst is None or score > state.worst[0]:
            if state.worst is not None and self.config.heatmaps == "nok" and not bool(
                    self.threshold.is_anomalous(np.array([state.worst[0]]))[0]):
                state.drawable.pop(state.worst[1], None)  # the former worst pose, below the threshold
            state.worst = (score, pose_id)
            state.drawable[pose_id] = (pixels, anomaly_map)

    def _part_end(self, store: CaptureStore, job: _PartEnd) -> _PartOutcome:
        state = self._parts.pop(job.part_id, _PartState())
        result = PartResult(part_id=job.part_id, verdict="error", truth=job.truth)
        result.pose_scores = {p.pose_id: p.score for p in state.scored}
        decision: Optional[PartDecision] = None
        # the first fault in pose order decides the reason: a pose's store/scoring fault comes before the
        # robot/camera fault at a later pose that ended the part
        reasons = [r for r in (state.failure, job.fault) if r]
        if reasons:
            result.reason = "; then ".join(reasons)
        else:
            decision = decide_part(state.scored, self.judge, self.plan_size, state.accumulator)
            result.verdict, result.reason = decision.verdict, decision.reason
            result.score, result.worst_pose = decision.score, decision.worst_pose
            result.defects, result.coverage = list(decision.defects), decision.coverage
        record_error = None
        try:
            if result.verdict == "NOK" or self.config.heatmaps == "all":
                drawn = {p.pose_id: state.drawable[p.pose_id] for p in state.scored if p.pose_id in state.drawable}
                result.heatmaps = _store_heatmaps(store, self.campaign, job.part_id, drawn, self.threshold)
            if decision is not None and decision.part_map is not None:
                result.part_map, result.part_map_array = _store_part_map(store, self.campaign, job.part_id, decision,
                                                                         self.judge.threshold)
            result.seconds = time.perf_counter() - job.started
            store.add_inspection(job.part_id, result.verdict, result.reason, scores=self._scores(result),
                                 worst_pose=result.worst_pose, model_dir=self.model_dir)
        except StoreError as exc:
            record_error = f"StoreError: {exc}"
            result.verdict, result.score, result.defects = "error", None, []
            result.reason = f"{result.reason}; the inspection record could not be written: {exc}"
        return _PartOutcome(result, robot_fault=job.fault is not None, record_error=record_error)

    def _scores(self, result: PartResult) -> dict[str, Any]:
        """The inspection row's scores JSON: per-pose scores, the part score and the threshold that decided,
        and (part map) the part threshold's policy, fusion rule, coverage, defects and the map's artifacts."""
        judge = self.judge
        scores: dict[str, Any] = {
            "poses": result.pose_scores, "max": result.max_score, "part_score": result.score,
            "threshold": judge.threshold.value, "heatmaps": result.heatmaps, "campaign": self.campaign,
        }
        if not judge.uses_part_map:
            scores["rule"] = "max_image"
            return scores
        scores.update({
            "rule": "part_map", "image_threshold": self.threshold.value, "part_threshold": judge.threshold.value,
            "part_policy": judge.threshold.policy, "fusion": judge.config.describe(), "cell_mm": judge.config.cell_mm,
            "edge_mm": judge.config.edge_mm, "coverage": result.coverage, "defects": [d.to_dict() for d in result.defects],
            "part_map": result.part_map, "part_map_array": result.part_map_array,
        })
        return scores


def _store_part_map(store: CaptureStore, campaign: str, part_id: str, decision: PartDecision,
                    threshold: ThresholdDecision) -> tuple[str, str]:
    """The part map's overlay PNG (defects outlined and labelled in mm) and its raw fused map (.npy)."""
    from cell.part_map_overlay import part_map_overlay

    part_map = decision.part_map
    assert part_map is not None
    buffer = io.BytesIO()
    np.save(buffer, part_map.fused.astype(np.float32), allow_pickle=False)
    array = store.write_artifact(f"inspections/{campaign}/{part_id}/part_map.npy", buffer.getvalue())
    overlay = part_map_overlay(part_map, threshold.value, decision.defects)
    png = store.write_artifact(f"inspections/{campaign}/{part_id}/part_map.png", png_bytes(overlay))
    return png, array


def _store_heatmaps(
    store: CaptureStore,
    campaign: str,
    part_id: str,
    maps: dict[str, tuple[np.ndarray, np.ndarray]],
    threshold: ThresholdDecision,
) -> list[str]:
    paths = []
    for pose_id, (pixels, anomaly_map) in maps.items():
        overlay = heatmap_overlay(pixels, anomaly_map, vmin=float(np.min(anomaly_map)), vmax=max(threshold.value * 1.5, float(np.max(anomaly_map))))
        paths.append(store.write_artifact(f"inspections/{campaign}/{part_id}/{pose_id}_heatmap.png", png_bytes(overlay)))
    return paths


# ---------------------------------------------------------------------------------------------- the loop
def _move_and_capture(robot: Any, camera: Any, pose: np.ndarray, speed: float, accel: float, config: InspectConfig):
    robot.move_linear(pose.tolist(), speed, accel)
    actual = np.asarray(robot.tcp_pose(), dtype=float)
    joints = np.asarray(robot.joint_positions(), dtype=float)
    frame, _, last = capture_with_retries(camera, retries=config.camera_retries, timeout_s=config.capture_timeout_s)
    if frame is None:
        raise CameraTimeout(f"camera timed out {config.camera_retries + 1} time(s): {last}")
    return frame, actual, joints


def _sink_waits_before_part(signal: LineSignals) -> bool:
    """True when a sink waits at the part boundary (e.g. for the PLC's acknowledgement of the last result):
    then the last part's verdict must be published before that wait, so the loop waits for it."""
    from cell.signals.base import LineSink

    return any(type(sink).before_part is not LineSink.before_part for sink in signal.sinks)


class _Line:
    """The robot thread's bookkeeping of finished parts: publishes each result in part order (signals,
    ``on_part``; ``threshold``: the one that decided the parts), counts consecutive errors, recovers the robot after a robot/camera fault and decides
    when the line stops."""

    def __init__(self, *, summary: InspectionSummary, signal: LineSignals, robot: Any, config: InspectConfig,
                 campaign: str, threshold: ThresholdDecision, model_dir: Optional[Path], total: int,
                 on_part: Optional[Callable[[PartResult, int, int], None]]) -> None:
        self.summary, self.signal, self.robot, self.config = summary, signal, robot, config
        self.campaign, self.threshold, self.model_dir, self.total, self.on_part = (
            campaign, threshold, model_dir, total, on_part)
        self.started: dict[str, tuple[int, str]] = {}
        self.failed_parts: set[str] = set()
        self.consecutive_errors = 0
        self.stop: Optional[str] = None

    def take(self, done: Sequence[Done]) -> None:
        for item in done:
            if item.error is not None:  # the worker's handler has a bug: show it
                raise item.error
            if isinstance(item.result, _PoseOutcome):
                if item.result.failed:
                    self.failed_parts.add(item.result.part_id)
                continue
            self._part_done(item.result)

    def _part_done(self, outcome: _PartOutcome) -> None:
        result = outcome.result
        index, started_at = self.started.pop(result.part_id)
        self.summary.results.append(result)
        self.signal.publish(to_line_result(result, campaign=self.campaign, index=index, threshold=self.threshold,
                                           model_dir=self.model_dir, started_at=started_at, finished_at=utc_now()))
        if self.on_part is not None:
            self.on_part(result, index, self.total)
        if self.stop is not None:
            return
        if outcome.record_error is not None:
            self.stop = f"part {result.part_id}: the store failed: {outcome.record_error}"
            return
        if result.verdict != "error":
            self.consecutive_errors = 0
            return
        self.consecutive_errors += 1
        if self.config.on_error == "stop":
            self.stop = f"part {result.part_id}: {result.reason} (on_error: stop)"
        elif self.consecutive_errors >= self.config.max_consecutive_errors:
            self.stop = f"{self.consecutive_errors} parts in a row ended in error; last: {result.reason}"
        elif outcome.robot_fault:
            try:
                self.robot.recover()
            except RobotError as exc:
                self.stop = f"part {result.part_id}: {result.reason}; recovery failed: {exc}"


def _capture_part(*, robot: Any, camera: Any, plan: Sequence[Any], speed: float, accel: float,
                  config: InspectConfig, part_id: str, pipeline: MotionPipeline, line: _Line) -> Optional[str]:
    """Move through the plan for one part, handing each capture to the pipeline. Returns the robot/camera
    fault that ended the part (None otherwise); stops early when the worker reports the part failed."""
    for planned in plan:
        pose = np.asarray(planned.pose, dtype=float).reshape(6)
        try:
            frame, actual, joints = _move_and_capture(robot, camera, pose, speed, accel, config)
        except (RobotError, CameraError) as exc:
            return f"{type(exc).__name__}: {exc}"
        pipeline.submit(_PoseJob(part_id, planned, frame, pose, actual, joints))
        line.take(pipeline.poll())
        if part_id in line.failed_parts:  # scoring or storing failed: the part is an error, go on
            return None
    return None


def run_inspection(
    *,
    robot: Any,
    camera: Any,
    store: CaptureStore,
    plan: Sequence[Any],
    speed: float,
    accel: float,
    envelope: Any,
    parts: int,
    campaign: str,
    detector: Any,
    spec: InputSpec,
    threshold: ThresholdDecision,
    config: InspectConfig,
    on_new_part: Optional[Callable[[str], Optional[str]]] = None,
    signal: Optional[LineSignals] = None,
    on_part: Optional[Callable[[PartResult, int, int], None]] = None,
    model_dir: Optional[Path] = None,
    first_index: int = 1,
    calibration_id: Optional[str] = None,
    judge: Optional[PartJudge] = None,
    campaign_config: Optional[dict[str, Any]] = None,
    feed_waits: bool = False,
) -> InspectionSummary:
    """Inspect ``parts`` new parts. ``on_new_part(part_id)`` puts a part on the table (the sim draws one and
    returns its truth; a real cell waits for the operator or the line). ``on_part`` reports each result.
    ``signal``: the line's :class:`~cell.signals.LineSignals` (started by the caller): its waits come before each
    part (a :class:`~cell.errors.LineStopped` ends the run cleanly) and every part's result goes to it.
    ``threshold``: the model's image threshold; ``judge``: how each part is decided (None: the per-image rule
    with ``threshold``); ``campaign_config``: stored with the campaign (the plan and geometry, so the part
    maps can be rebuilt from the store).

    Pipelined (``config.pipeline_depth`` > 0, :mod:`cell.pipeline`): the robot thread moves and captures; the
    worker stores and scores each pose behind it and decides each part when its last pose is scored. Results
    reach ``signal`` and ``on_part`` in part order, from this (the robot's) thread, as soon as they are known:
    a part's verdict may come while the robot already works on the next part. The robot waits for the
    verdicts before the next part only where something needs them first: ``on_error: stop``, a sink that waits
    at the part boundary (the PLC's acknowledgement), ``feed_waits`` (``on_new_part`` may block for the operator,
    a part sensor or the PLC: :attr:`cell.cell_factory.Cell.feed_waits`; the line hears the verdict before
    the next part is asked for), and after a robot/camera fault (the robot is recovered
    before it moves on). A stop decided by a verdict that came during the next part takes effect after that
    part (which gets its own, real verdict). ``pipeline_depth: 0``: strictly sequential, same code path.
    """
    signal = signal if signal is not None else LineSignals()
    try:
        envelope.check_plan(list(plan))
        envelope.check_motion(speed, accel)
    except RobotError as exc:
        raise CampaignError(f"inspection refused before any motion: {exc}") from exc
    if first_index == 1:
        # A fresh inspection never reuses a campaign: a finished one would be flipped back to running
        # before its first part clashes with the stored captures.
        existing = {c.name: c.status for c in store.campaigns()}
        if campaign in existing:
            raise CampaignError(f"campaign {campaign!r} already exists in {store.root} ({existing[campaign]}): "
                                "choose another --name")
    store.start_campaign(campaign, {"kind": "inspection", "model_dir": str(model_dir), **(campaign_config or {})},
                         calibration_id, resume=True)
    judge = judge if judge is not None else PartJudge(threshold)
    summary = InspectionSummary(campaign=campaign)
    ids = part_ids(campaign, parts + first_index - 1)[first_index - 1 :]
    line = _Line(summary=summary, signal=signal, robot=robot, config=config, campaign=campaign,
                 threshold=judge.threshold, model_dir=model_dir, total=len(ids), on_part=on_part)
    worker = _InspectionWorker(detector=detector, spec=spec, threshold=threshold, judge=judge, config=config,
                               campaign=campaign, plan_size=len(plan), model_dir=model_dir,
                               calibration_id=calibration_id)
    # ``feed_waits``: ``on_new_part`` may block (an operator, a part sensor, the PLC): the last part's verdict is
    # told before that wait, never held back until the next part arrives
    wait_at_boundary = feed_waits or config.on_error == "stop" or _sink_waits_before_part(signal)
    with MotionPipeline(worker, depth=config.pipeline_depth, open_resource=worker_store(store),
                        inline_resource=store, name=f"inspect-{campaign}") as pipeline:
        try:
            for index, part_id in enumerate(ids, start=1):
                line.take(pipeline.drain() if wait_at_boundary else pipeline.poll())
                if line.stop is not None:
                    break
                try:
                    signal.before_part(part_id)
                    truth = on_new_part(part_id) if on_new_part is not None else None
                except LineStopped as exc:
                    line.stop = f"part {part_id}: {exc}"
                    break
                signal.part_started(part_id)
                line.started[part_id] = (index, utc_now())
                started = time.perf_counter()
                truth = apply_truth(store, part_id, truth)
                fault = _capture_part(robot=robot, camera=camera, plan=plan, speed=speed, accel=accel, config=config,
                                      part_id=part_id, pipeline=pipeline, line=line)
                pipeline.submit(_PartEnd(part_id, truth, started, fault))
                if fault is not None:  # recover (or stop) before the robot moves again
                    line.take(pipeline.drain())
        finally:
            # every part the robot finished gets its verdict and record, also when the loop is leaving on an
            # exception (a bug, Ctrl-C): what was captured is stored and decided, never dropped
            line.take(pipeline.drain())
    summary.stopped_early = line.stop
    summary.pipeline = pipeline.stats()
    signal.finish(summary.stopped_early)
    store.finish_campaign(campaign, "stopped" if summary.stopped_early else "completed", {
        "counts": summary.counts(), "confusion": summary.confusion(), "stopped_early": summary.stopped_early,
    })
    return summary
