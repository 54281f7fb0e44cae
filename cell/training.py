"""``cell train``: fit a detector on the training side of a dataset and write a model directory.

The model directory (layout and every read and write: :mod:`detectors.model_dir`) holds the detector's
config and weights, the input spec (how captures become inputs: :mod:`detectors.input_prep`), the decision
threshold with its policy and validation statistics, the provenance (data source, every training/validation
image with its hash, seed, split, software versions, the weights' sha256) and the training statistics;
trained on a capture store, also the part threshold (``part_threshold.json``: the threshold on fused part maps,
the part-map settings it is valid for and its provenance: held-out good PARTS fused as the line fuses them) and
the unjudged edge band of the part map (``part_map.edge_mm``, by default ``auto``: chosen by
:func:`cell.part_map.choose_edge_mm` on the same held-out good parts, recorded with its profile beside the part
threshold; ``cell inspect`` and ``cell eval`` use the band stored there).

The threshold is chosen only on data carved from the TRAINING side: held-out good parts and, when the
training data has labelled defective captures, those (policy ``zero_miss``); never on a test split.
:func:`detectors.model_dir.write_model_dir` writes it under a temporary name and renames it at the end: an
interrupted run leaves no half-written model.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import detectors
from cell.config import read_yaml_mapping, validate_mapping
from cell.datasets import LabelledImage, is_capture_store, open_images, split_by_part
from cell.errors import CellError, ConfigFileError
from cell.part_map import PartMapAccumulator, PartMapConfig, PartMapError, choose_edge_mm
from cell.part_threshold import PartThreshold, part_threshold_document
from detectors import registry
from detectors.imagesets import InMemoryImageSet
from detectors.input_prep import InputSpec, fit_inputs, score_capture, score_working
from detectors.model_dir import write_model_dir
from detectors.registry import validate_config
from detectors.thresholds import ThresholdDecision, choose_threshold

Progress = Callable[[int, int, str], None]


class ThresholdConfig(BaseModel):
    """How the decision threshold is chosen (on training-side data only)."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["auto", "good_quantile", "zero_miss", "manual"] = "auto"
    quantile: float = Field(0.99, gt=0.0, le=1.0)
    manual: Optional[float] = None
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="share of good parts held out")
    part_policy: Optional[Literal["auto", "good_quantile", "zero_miss", "manual"]] = Field(
        None, description="policy of the part threshold (None: the same as policy)")
    part_manual: Optional[float] = Field(None, description="part threshold of policy manual")


class TrainPartMapConfig(PartMapConfig):
    """``part_map:`` of a detector config: the line's :class:`PartMapConfig`, except that ``edge_mm`` may be
    ``auto`` (the default): ``cell train`` chooses the band on the held-out good parts
    (:func:`cell.part_map.choose_edge_mm`); a number is used as given."""

    edge_mm: Union[Literal["auto"], Annotated[float, Field(ge=0.0, le=100.0)]] = Field(  # type: ignore[assignment]
        "auto", description="band inside the outline's edge that is not judged, mm, or auto (chosen on held-out good "
        "parts by cell train)")

    def with_edge(self, edge_mm: float) -> PartMapConfig:
        """The line's settings with the band ``edge_mm`` (mm)."""
        return PartMapConfig(**{**self.model_dump(), "edge_mm": float(edge_mm)})


class TrainConfig(BaseModel):
    """A detector config file (configs/detectors/<method>.yaml)."""

    model_config = ConfigDict(extra="forbid")

    method: str
    config: dict[str, Any] = Field(default_factory=dict)
    input: Optional[InputSpec] = None
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    part_map: TrainPartMapConfig = Field(default_factory=TrainPartMapConfig)


def load_train_config(
    path: str | Path, overrides: Optional[dict[str, Any]] = None, overrides_source: str = "--set"
) -> TrainConfig:
    """Read a detector config file; ``overrides`` (``--set key=value``) update its ``config`` section. The
    detector config is validated here: a bad key or value of the file names the file, one of the overrides
    names ``overrides_source``."""
    data = read_yaml_mapping(path)
    train_config = validate_mapping(str(path), data, TrainConfig)
    try:
        validate_config(train_config.method, train_config.config)
    except detectors.DetectorError as exc:
        raise ConfigFileError(f"{path}: {exc}") from None
    if overrides:
        train_config.config.update(overrides)
        try:
            validate_config(train_config.method, train_config.config)
        except detectors.DetectorError as exc:
            raise ConfigFileError(f"{overrides_source}: {exc}") from None
    return train_config


def _default_input(data: Path) -> InputSpec:
    return InputSpec(mode="tile") if is_capture_store(data) else InputSpec(mode="resize")


def _inputs_for_fit(items: Sequence[LabelledImage], spec: InputSpec, image_size: int) -> InMemoryImageSet:
    images, sources = [], []
    for item in items:
        inputs = fit_inputs(item.load(), spec, image_size)
        images.extend(inputs)
        if spec.mode == "tile":
            sources.extend(f"{item.source}#tile{k}" for k in range(len(inputs)))
        else:
            sources.append(item.source)
    return InMemoryImageSet(images, sources=sources)


def _score_items(detector: Any, items: Sequence[LabelledImage], spec: InputSpec) -> np.ndarray:
    return np.array([score_working(detector, item.load(), spec)[0] for item in items], dtype=np.float64)


def train_model(
    config: "str | Path | TrainConfig",
    data: str | Path,
    out: str | Path,
    *,
    campaigns: Optional[Sequence[str]] = None,
    overrides: Optional[dict[str, Any]] = None,
    force: bool = False,
    progress: Optional[Progress] = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Train the detector described by ``config`` (a detector config file, or one already loaded with
    :func:`load_train_config`) on ``data`` and write the model directory ``out``.

    Returns a summary dict (also written to ``training.json``).
    """
    data, out = Path(data), Path(out)
    train_config = config if isinstance(config, TrainConfig) else load_train_config(config, overrides)
    if out.exists() and not force:
        raise CellError(f"{out}: already exists; choose another --out or pass --force to replace it")
    spec = train_config.input or _default_input(data)
    detector_config, checkpoint_dir = _with_checkpoint_dir(train_config, out)
    detector = detectors.create(train_config.method, **detector_config)
    image_size = int(detector.config.image_size)
    seed = int(getattr(detector.config, "seed", 0))
    threshold_config = train_config.threshold

    with open_images(data, "train", campaigns) as items:
        good = [i for i in items if i.label == 0 and i.part_label in (None, "good")]
        defects = [i for i in items if i.label == 1]
        if not good:
            raise CellError(f"{data}: no good images on the training side to train on")
        fit_items, holdout = split_by_part(good, threshold_config.holdout_fraction, seed)
        log(
            f"training {train_config.method} on {len(fit_items)} good images "
            f"({len(holdout)} held out for the threshold, {len(defects)} labelled defects for validation)"
        )
        train_set = _inputs_for_fit(fit_items, spec, image_size)
        if checkpoint_dir is not None:
            log(f"checkpoints in {checkpoint_dir}: the same command resumes an interrupted training from there")
        started = time.perf_counter()
        stats = detector.fit(train_set, progress=progress)
        train_seconds = time.perf_counter() - started
        log("scoring held-out good images and validation defects for the threshold")
        part_threshold = None
        good_scores = None
        if is_capture_store(data):
            log("fusing held-out good parts (and labelled defective parts) into part maps for the part threshold")
            try:
                good_scores, part_threshold = _part_threshold(detector, spec, data, holdout, campaigns, train_config)
            except PartMapError as exc:  # e.g. captures without a recorded plan: no part threshold, said so
                log(f"no part threshold (the model can still score images; `cell inspect` needs --part-threshold): {exc}")
        if good_scores is None:
            good_scores = _score_items(detector, holdout, spec)
        defect_scores = _score_items(detector, defects, spec)
        decision = _decide(threshold_config, good_scores, defect_scores)
        provenance = {
            "data": str(data.resolve()),
            "campaigns": list(campaigns or []),
            "seed": seed,
            "method": train_config.method,
            "train": [_provenance(i) for i in fit_items],
            "threshold_holdout_good": [_provenance(i) for i in holdout],
            "threshold_validation_defects": [_provenance(i) for i in defects],
        }

    summary = {
        "method": train_config.method,
        "train_images": len(fit_items),
        "train_inputs": len(train_set),
        "train_seconds": round(train_seconds, 3),
        "threshold": decision.to_dict(),
        "part_threshold": None if part_threshold is None else {
            **part_threshold.decision.to_dict(), "part_map": part_threshold.part_map,
            "edge_band": part_threshold.provenance.get("edge_band")},
        "fit_stats": _jsonable(stats),
    }
    if checkpoint_dir is not None:  # the model directory does not point at a folder that is about to go
        detector.config = detector.config.model_copy(update={"checkpoint_dir": None})
    write_model_dir(out, detector, spec=spec, threshold=decision, provenance=provenance, training=summary, force=force,
                    part_threshold=None if part_threshold is None else part_threshold_document(part_threshold))
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return summary


def _with_checkpoint_dir(train_config: TrainConfig, out: Path) -> tuple[dict[str, Any], Optional[Path]]:
    """The detector config to train with, and the checkpoint folder ``cell train`` manages (or None).

    A detector with resumable training (a ``checkpoint_dir`` setting: TSDN, SLSG) that was given none gets
    ``<out's folder>/.<out's name>.checkpoint``: an interrupted ``cell train`` run with the same arguments
    resumes there, and the folder is removed once the model directory is written. A ``checkpoint_dir`` set in
    the config is the user's and is left alone.
    """
    config = dict(train_config.config)
    fields = getattr(registry.detector_class(train_config.method).config_class, "model_fields", {})
    if "checkpoint_dir" not in fields or config.get("checkpoint_dir"):
        return config, None
    checkpoint_dir = out.parent / f".{out.name}.checkpoint"
    config["checkpoint_dir"] = str(checkpoint_dir)
    return config, checkpoint_dir


def _decide(config: ThresholdConfig, good_scores: np.ndarray, defect_scores: np.ndarray) -> ThresholdDecision:
    policy = config.policy
    if policy == "auto":
        policy = "zero_miss" if defect_scores.size else "good_quantile"
    if policy == "manual" and config.manual is None:
        raise CellError("threshold policy 'manual' needs threshold.manual (or --threshold VALUE)")
    if policy == "zero_miss" and not defect_scores.size:
        raise CellError("threshold policy 'zero_miss' needs labelled defective captures on the training side")
    return choose_threshold(
        policy,
        good_scores,
        defect_scores if defect_scores.size else None,
        quantile=config.quantile,
        manual=config.manual,
    )


def _part_threshold(detector: Any, spec: InputSpec, data: Path, holdout: Sequence[LabelledImage],
                    campaigns: Optional[Sequence[str]], train_config: TrainConfig) -> tuple[np.ndarray, PartThreshold]:
    """Score the held-out good images (-> their image scores, in ``holdout``'s order) and fuse them by part,
    with the labelled defective parts of the training side, into part maps; choose the edge band
    (``part_map.edge_mm: auto``) on the held-out good parts, then the part threshold on the part scores at that
    band with the part policy. Training-side data only, as for the image threshold."""
    from acquisition.store import CaptureStore
    from cell.part_scoring import StoredPartMaps, captures_by_part

    config = train_config.threshold
    image_scores: dict[int, float] = {}
    good_acc: dict[str, PartMapAccumulator] = {}
    defect_acc: dict[str, PartMapAccumulator] = {}
    unbanded = train_config.part_map.with_edge(0.0)
    score = lambda pixels: score_capture(detector, pixels, spec)  # noqa: E731
    with CaptureStore(data) as store:
        maps = StoredPartMaps(store, unbanded)
        records = captures_by_part(store.get_capture(int(i.capture_id)) for i in holdout if i.capture_id is not None)
        try:
            for part_id, part_records in records.items():
                good_acc[part_id] = maps.accumulate(part_records, score,
                                                    on_score=lambda r, v: image_scores.__setitem__(r.id, v))
            wanted = set(campaigns) if campaigns else None
            for part in store.parts():
                if part.label != "defective":
                    continue
                part_records = [r for r in store.captures(part_id=part.part_id)
                                if wanted is None or r.campaign in wanted]
                if part_records:
                    defect_acc[part.part_id] = maps.accumulate(part_records, score)
        except PartMapError as exc:
            raise PartMapError(f"{data}: cannot fuse the held-out parts: {exc}") from None
    edge_band = edge_band_for(train_config.part_map, good_acc)
    part_map_config = train_config.part_map.with_edge(edge_band["edge_mm"])
    good_parts = {p: _part_score(acc.finish(part_map_config), p) for p, acc in good_acc.items()}
    defect_parts = {p: _part_score(acc.finish(part_map_config), p) for p, acc in defect_acc.items()}
    image = np.array([image_scores[int(i.capture_id)] if i.capture_id is not None
                      else score_capture(detector, i.load(), spec)[0] for i in holdout], dtype=np.float64)
    policy = config.part_policy or config.policy
    part_config = config.model_copy(update={"policy": policy, "manual": config.part_manual})
    if policy == "manual" and config.part_manual is None:
        raise CellError("part threshold policy 'manual' needs threshold.part_manual")
    decision = _decide(part_config, np.array(list(good_parts.values())), np.array(list(defect_parts.values())))
    provenance = {
        "chosen_on": "training side: held-out good parts (and labelled defective parts), fused like the line",
        "data": str(Path(data).resolve()), "campaigns": list(campaigns or []),
        "holdout_good_parts": {k: round(v, 6) for k, v in good_parts.items()},
        "defective_parts": {k: round(v, 6) for k, v in defect_parts.items()},
        "edge_band": edge_band,
    }
    return image, PartThreshold(decision, part_map_config.model_dump(mode="json"), provenance)


def edge_band_for(settings: TrainPartMapConfig, good: dict[str, PartMapAccumulator]) -> dict[str, Any]:
    """The unjudged edge band (mm) and where it came from: ``settings.edge_mm`` when a number; ``auto``:
    :func:`choose_edge_mm` on the held-out good parts fused with no band (0 when their parts have no interior
    to compare with: everything is judged, said in ``reason``)."""
    if settings.edge_mm != "auto":
        return {"edge_mm": float(settings.edge_mm), "source": "config (part_map.edge_mm)"}
    if not good:
        return {"edge_mm": 0.0, "source": "auto", "reason": "no held-out good parts: the whole outline is judged"}
    unbanded = settings.with_edge(0.0)
    part_maps = [acc.finish(unbanded) for acc in good.values()]
    try:
        chosen = choose_edge_mm(part_maps, next(iter(good.values())).part.size_m)
    except PartMapError as exc:
        return {"edge_mm": 0.0, "source": "auto", "reason": f"{exc}: the whole outline is judged"}
    return {**chosen, "source": "auto: cell.part_map.choose_edge_mm on the held-out good parts",
            "parts": sorted(good)}


def _part_score(part_map: Any, part_id: str) -> float:
    if part_map.coverage < part_map.config.min_coverage or part_map.score is None:
        raise PartMapError(f"part {part_id}: its views cover only {part_map.coverage:.1%} of the plan's part")
    return float(part_map.score)


def _provenance(item: LabelledImage) -> dict[str, Any]:
    return {"source": item.source, "sha256": item.file_sha256(), "label": item.label}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
