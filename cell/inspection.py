"""``cell inspect``: the unattended line loop.

For each new part: run the pose plan, capture and store every image, score it with the trained detector,
project each pose's anomaly map onto the part and fuse them into the part map (:mod:`cell.part_map`), and
decide from the part map (:func:`judge_part`): NOK when some region of it exceeds the part threshold (its
defects, in mm), OK when every pose was captured and scored, the whole part was covered and no region exceeds
it; a part whose plan did not cover it is ``error``. Without part geometry (:class:`PartJudge` with no camera)
the old per-image rule applies: NOK when any pose's score exceeds the image threshold. A robot or camera fault NEVER yields OK: the part is recorded as ``error`` with the
reason, and the loop continues (after trying ``robot.recover()``) or stops, as configured. Each part gets an
inspection row in the store (verdict, per-pose scores, worst pose, model), heatmaps for NOK parts, its
:class:`~cell.line_result.LineResult` for the line's signals (:mod:`cell.signals`) and one live line on the
console.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from acquisition.errors import CameraError, CameraTimeout, RobotError
from acquisition.store import CaptureStore
from cell.campaign import apply_truth, capture_with_retries, part_ids, store_frame
from cell.errors import CampaignError, LineStopped
from cell.line_result import LineResult, PartDefect, utc_now
from cell.model_input import InputSpec, score_capture
from cell.overlays import heatmap_overlay, png_bytes
from cell.part_map import PartFrame, PartMap, PartMapAccumulator, PartMapConfig, PartMapError, PoseResult
from cell.signals import LineSignals
from detectors.thresholds import ThresholdDecision

VERDICTS = ("OK", "NOK", "error")


class InspectConfig(BaseModel):
    """The ``inspect:`` behaviour (CLI flags override)."""

    model_config = ConfigDict(extra="forbid")

    on_error: Literal["continue", "stop"] = "continue"
    max_consecutive_errors: int = Field(3, ge=1, description="stop after this many error parts in a row")
    camera_retries: int = Field(2, ge=0, le=20)
    capture_timeout_s: float = Field(2.0, gt=0.0)
    heatmaps: Literal["nok", "all", "none"] = "nok"


@dataclass
class PartResult:
    """The outcome of one part. ``pose_scores``: pose id -> image score (only poses that were scored)."""

    part_id: str
    verdict: str
    reason: str = ""
    pose_scores: dict[str, float] = field(default_factory=dict)
    worst_pose: Optional[str] = None
    truth: Optional[str] = None
    seconds: float = 0.0
    heatmaps: list[str] = field(default_factory=list)
    part_score: Optional[float] = None
    defects: list[PartDefect] = field(default_factory=list)
    coverage: Optional[float] = None
    part_map: Optional[str] = None  # store-relative path of the part-map overlay PNG
    part_map_array: Optional[str] = None  # store-relative path of the fused map (.npy, float32, NaN = unseen)

    @property
    def max_score(self) -> Optional[float]:
        return max(self.pose_scores.values()) if self.pose_scores else None


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


@dataclass
class PartDecision:
    """What :func:`judge_part` decided: ``verdict`` OK / NOK / error, ``reason`` (one line), ``score`` (the part
    score compared with the threshold), ``defects`` (NOK: the part map's regions), ``coverage`` and the map."""

    verdict: str
    reason: str
    score: Optional[float] = None
    defects: list[PartDefect] = field(default_factory=list)
    coverage: Optional[float] = None
    part_map: Optional[PartMap] = None


def describe_defects(defects: Sequence[PartDefect]) -> str:
    """``2 defects, largest 14 mm2 at (120.5, 45.0) mm``."""
    largest = max(defects, key=lambda d: d.area_mm2)
    area = f"{largest.area_mm2:.{1 if largest.area_mm2 < 10 else 0}f}"
    return (f"{len(defects)} defect{'s' if len(defects) != 1 else ''}, largest {area} mm2 "
            f"at ({largest.x_mm:.1f}, {largest.y_mm:.1f}) mm")


def judge_part(results: Sequence[PoseResult], judge: PartJudge, planned: int,
               accumulator: Optional[PartMapAccumulator] = None) -> PartDecision:
    """THE verdict of a part from its ordered per-pose results (``planned``: the plan's pose count).

    ``accumulator``: a part map already fed with these results (as a worker feeds it while the robot moves);
    None: the results' maps are projected here. Never OK unless every planned pose was scored, every score is
    finite and (part map) the whole outline was seen: a missing pose or partial coverage is ``error``.
    """
    if len(results) != planned:
        return PartDecision("error", f"only {len(results)} of {planned} planned poses were scored")
    scores = [float(r.score) for r in results]
    if not all(math.isfinite(v) for v in scores):
        return PartDecision("error", "the model gave a non-finite score")
    threshold = judge.threshold
    if not judge.uses_part_map:
        worst = int(np.argmax(scores))
        nok = bool(threshold.is_anomalous(np.array([scores[worst]]))[0])
        return PartDecision("NOK" if nok else "OK", f"score {scores[worst]:.4g} at {results[worst].pose_id} "
                            f"{'>' if nok else '<='} threshold {threshold.value:.4g}", score=scores[worst])
    try:
        if accumulator is None:
            accumulator = judge.accumulator()
            for result in results:
                accumulator.add(result)  # type: ignore[union-attr]
        part_map = accumulator.finish()  # type: ignore[union-attr]
    except PartMapError as exc:
        return PartDecision("error", f"part map: {exc}")
    coverage = part_map.coverage
    if coverage < judge.config.min_coverage or part_map.score is None:
        return PartDecision("error", f"the plan's views covered only {coverage:.1%} of the part: not judged on partial "
                            "coverage", coverage=coverage, part_map=part_map)
    score = float(part_map.score)
    if not math.isfinite(score):
        return PartDecision("error", "the part map holds non-finite values", coverage=coverage, part_map=part_map)
    defects = part_map.defects(threshold.value)
    if defects:
        return PartDecision("NOK", describe_defects(defects), score=score, defects=defects, coverage=coverage,
                            part_map=part_map)
    return PartDecision("OK", f"no defect: part score {score:.4g} <= part threshold {threshold.value:.4g}",
                        score=score, coverage=coverage, part_map=part_map)


@dataclass
class InspectionSummary:
    campaign: str
    results: list[PartResult] = field(default_factory=list)
    stopped_early: Optional[str] = None

    def counts(self) -> dict[str, int]:
        return {v: sum(r.verdict == v for r in self.results) for v in VERDICTS}

    def confusion(self) -> dict[str, dict[str, int]]:
        """truth ('good' / 'defective' / 'unknown') -> verdict -> count."""
        table: dict[str, dict[str, int]] = {}
        for r in self.results:
            row = table.setdefault(r.truth or "unknown", {v: 0 for v in VERDICTS})
            row[r.verdict] += 1
        return table


class _NonFiniteScore(Exception):
    """The model scored a pose NaN or infinite: the part's verdict is "error", never OK or NOK."""


def to_line_result(result: PartResult, *, campaign: str, index: int, threshold: ThresholdDecision,
                   model_dir: Optional[Path], started_at: str, finished_at: str) -> LineResult:
    """What the line's signals are told about ``result``: the part score the verdict compared with
    ``threshold`` (the part map's score; the worst pose's score under the per-image rule; None for an error
    part: a fault is never reported as a score below the threshold), the part map's defects (mm), its coverage
    and overlay; the worst pose and the heatmaps' store paths travel in ``extra``."""
    score = result.part_score if result.part_score is not None else result.max_score
    return LineResult(
        part_id=result.part_id, campaign=campaign, verdict=result.verdict, reason=result.reason,
        started_at=started_at, finished_at=finished_at,
        score=score if result.verdict != "error" else None, threshold=threshold.value,
        defects=tuple(result.defects) if result.verdict == "NOK" else (), coverage=result.coverage,
        model=None if model_dir is None else str(model_dir), truth=result.truth, part_map=result.part_map,
        index=index, extra={"worst_pose": result.worst_pose, "heatmaps": list(result.heatmaps)},
    )


def _move_and_capture(robot: Any, camera: Any, pose: np.ndarray, speed: float, accel: float, config: InspectConfig):
    robot.move_linear(pose.tolist(), speed, accel)
    actual = np.asarray(robot.tcp_pose(), dtype=float)
    joints = np.asarray(robot.joint_positions(), dtype=float)
    frame, _, last = capture_with_retries(camera, retries=config.camera_retries, timeout_s=config.capture_timeout_s)
    if frame is None:
        raise CameraTimeout(f"camera timed out {config.camera_retries + 1} time(s): {last}")
    return frame, actual, joints


def inspect_part(
    *,
    robot: Any,
    camera: Any,
    store: CaptureStore,
    plan: Sequence[Any],
    speed: float,
    accel: float,
    campaign: str,
    part_id: str,
    detector: Any,
    spec: InputSpec,
    threshold: ThresholdDecision,
    config: InspectConfig,
    truth: Optional[str] = None,
    model_dir: Optional[Path] = None,
    calibration_id: Optional[str] = None,
    judge: Optional[PartJudge] = None,
) -> PartResult:
    """Inspect one part already on the table; records the capture rows, the heatmaps, the part map and the
    inspection row. ``judge``: how the verdict is made (None: the per-image rule with ``threshold``)."""
    judge = judge if judge is not None else PartJudge(threshold)
    started = time.perf_counter()
    result = PartResult(part_id=part_id, verdict="error", truth=truth)
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    scored: list[PoseResult] = []
    accumulator = judge.accumulator()
    decision: Optional[PartDecision] = None
    try:
        for planned in plan:
            pose = np.asarray(planned.pose, dtype=float).reshape(6)
            frame, actual, joints = _move_and_capture(robot, camera, pose, speed, accel, config)
            store_frame(store, campaign, part_id, planned, frame, pose, actual, joints,
                        calibration_id=calibration_id, extra_meta={"inspection": True})
            score, anomaly_map = score_capture(detector, frame.pixels, spec)
            if not math.isfinite(score):  # e.g. a numerical overflow: never compared with the threshold
                raise _NonFiniteScore(f"the model gave a non-finite score ({score}) for pose {planned.pose_id}")
            result.pose_scores[planned.pose_id] = score
            frame_size = tuple(frame.pixels.shape[:2])
            if accumulator is not None:  # fed as the poses come
                accumulator.add(PoseResult(planned.pose_id, score, anomaly_map, actual, frame_size), image=frame.pixels)
            # the accumulator holds what the map contributed: the ordered results keep no map
            scored.append(PoseResult(planned.pose_id, score, np.empty((0, 0), np.float32), actual, frame_size))
            if config.heatmaps != "none":
                maps[planned.pose_id] = (frame.pixels, anomaly_map)
    except (RobotError, CameraError, _NonFiniteScore, PartMapError) as exc:
        result.reason = f"{type(exc).__name__}: {exc}"
    else:
        result.worst_pose = max(result.pose_scores, key=result.pose_scores.get)  # type: ignore[arg-type]
        decision = judge_part(scored, judge, len(plan), accumulator)
        result.verdict, result.reason = decision.verdict, decision.reason
        result.part_score, result.defects, result.coverage = decision.score, decision.defects, decision.coverage
    if result.verdict == "NOK" or config.heatmaps == "all":
        result.heatmaps = _store_heatmaps(store, campaign, part_id, maps, threshold)
    if decision is not None and decision.part_map is not None:
        result.part_map, result.part_map_array = _store_part_map(store, campaign, part_id, decision, judge.threshold)
    result.seconds = time.perf_counter() - started
    scores: dict[str, Any] = {
        "poses": result.pose_scores,
        "max": result.max_score,
        "threshold": judge.threshold.value,
        "heatmaps": result.heatmaps,
        "campaign": campaign,
    }
    if judge.uses_part_map:
        scores.update({
            "rule": "part_map", "image_threshold": threshold.value, "part_threshold": judge.threshold.value,
            "part_policy": judge.threshold.policy, "fusion": judge.config.describe(), "cell_mm": judge.config.cell_mm,
            "part_score": result.part_score, "coverage": result.coverage,
            "defects": [d.to_dict() for d in result.defects], "part_map": result.part_map,
            "part_map_array": result.part_map_array,
        })
    else:
        scores["rule"] = "max_image"
    store.add_inspection(part_id, result.verdict, result.reason, scores=scores, worst_pose=result.worst_pose,
                         model_dir=model_dir)
    return result


def _store_part_map(store: CaptureStore, campaign: str, part_id: str, decision: PartDecision,
                    threshold: ThresholdDecision) -> tuple[str, str]:
    """The part map's overlay PNG (defects outlined and labelled in mm) and its raw fused map (.npy)."""
    import io

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
) -> InspectionSummary:
    """Inspect ``parts`` new parts. ``on_new_part(part_id)`` puts a part on the table (the sim draws one and
    returns its truth; a real cell waits for the operator or the line). ``on_part`` reports each result.
    ``signal``: the line's :class:`~cell.signals.LineSignals` (started by the caller): its waits come before each
    part (a :class:`~cell.errors.LineStopped` ends the run cleanly) and every part's result goes to it."""
    signal = signal if signal is not None else LineSignals()
    try:
        envelope.check_plan(list(plan))
        envelope.check_motion(speed, accel)
    except RobotError as exc:
        raise CampaignError(f"inspection refused before any motion: {exc}") from exc
    store.start_campaign(campaign, {"kind": "inspection", "model_dir": str(model_dir), **(campaign_config or {})},
                         calibration_id, resume=True)
    decided_by = judge.threshold if judge is not None else threshold
    summary = InspectionSummary(campaign=campaign)
    consecutive_errors = 0
    ids = part_ids(campaign, parts + first_index - 1)[first_index - 1 :]
    for index, part_id in enumerate(ids, start=1):
        try:
            signal.before_part(part_id)
            truth = on_new_part(part_id) if on_new_part is not None else None
        except LineStopped as exc:
            summary.stopped_early = f"part {part_id}: {exc}"
            break
        signal.part_started(part_id)
        started_at = utc_now()
        truth = apply_truth(store, part_id, truth)
        result = inspect_part(
            robot=robot, camera=camera, store=store, plan=plan, speed=speed, accel=accel, campaign=campaign,
            part_id=part_id, detector=detector, spec=spec, threshold=threshold, config=config, truth=truth,
            model_dir=model_dir, calibration_id=calibration_id, judge=judge,
        )
        summary.results.append(result)
        signal.publish(to_line_result(result, campaign=campaign, index=index, threshold=decided_by,
                                      model_dir=model_dir, started_at=started_at, finished_at=utc_now()))
        if on_part is not None:
            on_part(result, index, len(ids))
        if result.verdict != "error":
            consecutive_errors = 0
            continue
        consecutive_errors += 1
        if config.on_error == "stop":
            summary.stopped_early = f"part {part_id}: {result.reason} (on_error: stop)"
            break
        if consecutive_errors >= config.max_consecutive_errors:
            summary.stopped_early = f"{consecutive_errors} parts in a row ended in error; last: {result.reason}"
            break
        try:
            robot.recover()
        except RobotError as exc:
            summary.stopped_early = f"part {part_id}: {result.reason}; recovery failed: {exc}"
            break
    signal.finish(summary.stopped_early)
    store.finish_campaign(campaign, "stopped" if summary.stopped_early else "completed", {
        "counts": summary.counts(), "confusion": summary.confusion(), "stopped_early": summary.stopped_early,
    })
    return summary
