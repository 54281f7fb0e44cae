"""``part_threshold.json`` in a model directory: the part-level decision threshold and how it was made.

One read/write pair (the model directory's owner may absorb it into ``detectors/model_dir.py`` under the same
names). The file holds the threshold (value, policy, validation statistics as
:class:`~detectors.thresholds.ThresholdDecision` writes them), the part-map settings it is valid for (cell
size, fusion rule: a threshold chosen on ``kth`` maps means nothing on ``max`` maps) and its provenance (the
held-out good parts and the defective parts it was chosen on, all from the training side). Written
atomically; read as untrusted data: every key is checked and a bad file gets a one-line error naming it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cell.errors import CellError
from detectors.errors import DetectorConfigError
from detectors.model_io import atomic_write
from detectors.thresholds import ThresholdDecision

PART_THRESHOLD_FILE = "part_threshold.json"
PART_THRESHOLD_SCHEMA = "cell.part-threshold/1"


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


def write_part_threshold(model_dir: str | Path, threshold: PartThreshold) -> Path:
    """Write ``model_dir/part_threshold.json`` atomically; returns its path."""
    path = Path(model_dir) / PART_THRESHOLD_FILE
    data = {"schema": PART_THRESHOLD_SCHEMA, **threshold.decision.to_dict(),
            "part_map": dict(threshold.part_map), "provenance": dict(threshold.provenance)}
    text = json.dumps(data, indent=2, allow_nan=False)
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
    return path


def read_part_threshold(model_dir: str | Path) -> PartThreshold:
    """Read ``model_dir/part_threshold.json``. Missing -> :class:`CellError` naming how to make one."""
    path = Path(model_dir) / PART_THRESHOLD_FILE
    if not path.is_file():
        raise CellError(
            f"{path}: missing: this model has no part threshold; retrain it with `cell train` on a capture store "
            "(it chooses one on held-out good parts) or give --part-threshold VALUE"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CellError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CellError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if data.get("schema") != PART_THRESHOLD_SCHEMA:
        raise CellError(f"{path}: key 'schema' = {data.get('schema')!r}, expected {PART_THRESHOLD_SCHEMA!r}")
    try:
        decision = ThresholdDecision.from_dict(data)
    except DetectorConfigError as exc:
        raise CellError(f"{path}: {exc}") from None
    if not math.isfinite(decision.value):
        raise CellError(f"{path}: key 'value' = {decision.value!r} is not finite")
    for key in ("part_map", "provenance"):
        if not isinstance(data.get(key, {}), dict):
            raise CellError(f"{path}: key '{key}' must be an object, got {type(data[key]).__name__}")
    return PartThreshold(decision=decision, part_map=dict(data.get("part_map") or {}),
                         provenance=dict(data.get("provenance") or {}))
