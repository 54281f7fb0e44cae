"""The part threshold of a model directory, as the line uses it: a typed view over :mod:`detectors.model_dir`.

The file (``part_threshold.json``) is written and read ONLY by :func:`detectors.model_dir.write_part_threshold`
/ :func:`detectors.model_dir.read_part_threshold` (atomic; untrusted on read: every key checked, one-line
errors naming the file). It holds the threshold (value, policy, validation statistics as
:class:`~detectors.thresholds.ThresholdDecision` writes them) and its provenance: the held-out good parts and
the defective parts it was chosen on, all from the training side, and under ``provenance.part_map`` the
part-map settings it is valid for (cell size, fusion rule: a threshold chosen on ``kth`` maps means nothing on
``max`` maps). This module turns that document into a :class:`PartThreshold` and says how to make one when a
model has none.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cell.errors import CellError
from detectors.errors import ModelDirectoryError
from detectors.model_dir import PART_THRESHOLD_FILE
from detectors.model_dir import read_part_threshold as _read_document
from detectors.model_dir import write_part_threshold as _write_document
from detectors.thresholds import ThresholdDecision

__all__ = ["PART_THRESHOLD_FILE", "PartThreshold", "part_threshold_document", "read_part_threshold",
           "write_part_threshold"]


@dataclass(frozen=True)
class PartThreshold:
    """A part threshold: ``decision`` (NOK when the part score > ``decision.value``), ``part_map``: the part-map
    settings (a :class:`cell.part_map.PartMapConfig` as a dict), ``provenance``: where it was chosen."""

    decision: ThresholdDecision
    part_map: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return self.decision.value

    @property
    def policy(self) -> str:
        return self.decision.policy


def part_threshold_document(threshold: PartThreshold) -> dict[str, Any]:
    """``threshold`` as the model directory stores it: ``{value, policy, stats, provenance}``, the part-map
    settings under ``provenance.part_map``."""
    return {**threshold.decision.to_dict(), "provenance": {**threshold.provenance, "part_map": dict(threshold.part_map)}}


def write_part_threshold(model_dir: str | Path, threshold: PartThreshold) -> Path:
    """Write ``model_dir/part_threshold.json`` atomically (the directory must be a model directory)."""
    try:
        return _write_document(model_dir, part_threshold_document(threshold))
    except ModelDirectoryError as exc:
        raise CellError(str(exc)) from None


def read_part_threshold(model_dir: str | Path) -> PartThreshold:
    """Read ``model_dir/part_threshold.json``. Missing -> :class:`CellError` naming how to make one; a bad file
    -> :class:`CellError`, one line naming the file and key."""
    path = Path(model_dir) / PART_THRESHOLD_FILE
    try:
        data = _read_document(model_dir)
    except ModelDirectoryError as exc:
        raise CellError(str(exc)) from None
    if data is None:
        raise CellError(
            f"{path}: missing: this model has no part threshold; retrain it with `cell train` on a capture store "
            "(it chooses one on held-out good parts) or give --part-threshold VALUE"
        )
    provenance = dict(data["provenance"])
    part_map = provenance.pop("part_map", {})
    if not isinstance(part_map, dict):
        raise CellError(f"{path}: key 'provenance.part_map' = {part_map!r}: must be a mapping")
    decision = ThresholdDecision(value=data["value"], policy=data["policy"], stats=data["stats"])
    return PartThreshold(decision=decision, part_map=dict(part_map), provenance=provenance)
