"""``cell inspect``: the unattended line loop.

For each new part: run the pose plan, capture and store every image, score it with the trained detector,
and decide: NOK when any pose's score exceeds the model's threshold, OK when every pose was captured and
scored below it. A robot or camera fault NEVER yields OK: the part is recorded as ``error`` with the
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
from cell.line_result import LineResult, utc_now
from cell.model_input import InputSpec, score_capture
from cell.overlays import heatmap_overlay, png_bytes
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

    @property
    def max_score(self) -> Optional[float]:
        return max(self.pose_scores.values()) if self.pose_scores else None


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
    """What the line's signals are told about ``result``: the part score is the worst pose's score (None for an
    error part: a fault is never reported as a score below the threshold). No defect list until the part map
    exists; the worst pose and the heatmaps' store paths travel in ``extra``."""
    return LineResult(
        part_id=result.part_id, campaign=campaign, verdict=result.verdict, reason=result.reason,
        started_at=started_at, finished_at=finished_at,
        score=result.max_score if result.verdict != "error" else None, threshold=threshold.value,
        model=None if model_dir is None else str(model_dir), truth=result.truth, index=index,
        extra={"worst_pose": result.worst_pose, "heatmaps": list(result.heatmaps)},
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
) -> PartResult:
    """Inspect one part already on the table; records the capture rows, the heatmaps and the inspection row."""
    started = time.perf_counter()
    result = PartResult(part_id=part_id, verdict="error", truth=truth)
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
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
            if config.heatmaps != "none":
                maps[planned.pose_id] = (frame.pixels, anomaly_map)
    except (RobotError, CameraError, _NonFiniteScore) as exc:
        result.reason = f"{type(exc).__name__}: {exc}"
    else:
        result.worst_pose = max(result.pose_scores, key=result.pose_scores.get)  # type: ignore[arg-type]
        nok = threshold.is_anomalous(np.array([result.max_score]))[0]
        result.verdict = "NOK" if nok else "OK"
        result.reason = (
            f"score {result.max_score:.4g} at {result.worst_pose} "
            f"{'>' if nok else '<='} threshold {threshold.value:.4g}"
        )
    if result.verdict == "NOK" or config.heatmaps == "all":
        result.heatmaps = _store_heatmaps(store, campaign, part_id, maps, threshold)
    result.seconds = time.perf_counter() - started
    store.add_inspection(
        part_id,
        result.verdict,
        result.reason,
        scores={
            "poses": result.pose_scores,
            "max": result.max_score,
            "threshold": threshold.value,
            "heatmaps": result.heatmaps,
            "campaign": campaign,
        },
        worst_pose=result.worst_pose,
        model_dir=model_dir,
    )
    return result


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
    if first_index == 1:
        # A fresh inspection never reuses a campaign: a finished one would be flipped back to running
        # before its first part clashes with the stored captures.
        existing = {c.name: c.status for c in store.campaigns()}
        if campaign in existing:
            raise CampaignError(f"campaign {campaign!r} already exists in {store.root} ({existing[campaign]}): "
                                "choose another --name")
    store.start_campaign(campaign, {"kind": "inspection", "model_dir": str(model_dir)}, calibration_id, resume=True)
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
            model_dir=model_dir, calibration_id=calibration_id,
        )
        summary.results.append(result)
        signal.publish(to_line_result(result, campaign=campaign, index=index, threshold=threshold,
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
