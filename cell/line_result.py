"""What the line is told about one part: the :class:`LineResult`, and the :class:`PartDefect` it lists.

One result per inspected part, made once by the inspection loop and handed, unchanged, to every consumer:
the store row, the console line, the digital outputs, the OPC UA server, the MQTT publisher and the live line
page. A consumer never decides anything from it but what it says: ``verdict`` is the decision, and an
``error`` verdict is never shown or signalled as OK.

Units follow the people who read them: millimetres in the part frame (origin at the part centre, x and y
along the plan's part axes, as ``part_center_pose`` defines it), square millimetres for areas, times as ISO
8601 UTC strings.

:meth:`LineResult.to_dict` is the versioned wire form (``schema`` = :data:`RESULT_SCHEMA`); every signal that
serialises a result uses it, so the MQTT payload, the live page's JSON and the store row agree. A change of
a field's meaning or a removed field bumps the version; added fields do not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

#: Version tag of :meth:`LineResult.to_dict`'s JSON form (documented in the README).
RESULT_SCHEMA = "cell.part-result/1"

VERDICTS = ("OK", "NOK", "error")


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string with milliseconds, e.g. ``2026-12-02T10:25:03.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite_or_none(value: Optional[float]) -> Optional[float]:
    """JSON has no NaN: a missing or non-finite number is written as null."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class PartDefect:
    """One defect region on the part map.

    ``x_mm``, ``y_mm``: centroid in the part frame; ``area_mm2``: area of the region; ``bbox_mm``:
    (x_min, y_min, x_max, y_max) in the part frame; ``peak``: the highest fused score inside the region;
    ``poses``: ids of the poses whose views covered the region.
    """

    x_mm: float
    y_mm: float
    area_mm2: float
    bbox_mm: tuple[float, float, float, float]
    peak: float
    poses: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "x_mm": round(float(self.x_mm), 3),
            "y_mm": round(float(self.y_mm), 3),
            "area_mm2": round(float(self.area_mm2), 3),
            "bbox_mm": [round(float(v), 3) for v in self.bbox_mm],
            "peak": _finite_or_none(self.peak),
            "poses": list(self.poses),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PartDefect":
        bbox = tuple(float(v) for v in data["bbox_mm"])
        if len(bbox) != 4:
            raise ValueError(f"bbox_mm must have 4 numbers, got {len(bbox)}")
        return cls(
            x_mm=float(data["x_mm"]), y_mm=float(data["y_mm"]), area_mm2=float(data["area_mm2"]),
            bbox_mm=bbox,  # type: ignore[arg-type]
            peak=float("nan") if data.get("peak") is None else float(data["peak"]),
            poses=tuple(str(p) for p in data.get("poses", ())),
        )


@dataclass(frozen=True)
class LineResult:
    """The outcome of one part, as every signal sees it.

    ``verdict``: ``OK`` / ``NOK`` / ``error``. ``score``: the part score the decision compared with
    ``threshold`` (None when the part ended in error before it could be scored). ``defects``: the part map's
    defect regions (empty for OK parts and errors). ``coverage``: share of the part's area seen by at least
    one scored view (None when unknown). ``part_map``: store-relative path of the part-map overlay PNG, when
    one was written. ``index``: 1-based position of the part in this run.
    """

    part_id: str
    campaign: str
    verdict: str
    reason: str
    started_at: str
    finished_at: str
    score: Optional[float] = None
    threshold: Optional[float] = None
    defects: tuple[PartDefect, ...] = ()
    coverage: Optional[float] = None
    model: Optional[str] = None
    truth: Optional[str] = None
    part_map: Optional[str] = None
    index: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: expected one of {', '.join(VERDICTS)}")

    @property
    def defect_count(self) -> int:
        return len(self.defects)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able wire form (schema :data:`RESULT_SCHEMA`); non-finite numbers become null."""
        return {
            "schema": RESULT_SCHEMA,
            "part_id": self.part_id,
            "campaign": self.campaign,
            "index": self.index,
            "verdict": self.verdict,
            "reason": self.reason,
            "score": _finite_or_none(self.score),
            "threshold": _finite_or_none(self.threshold),
            "defect_count": self.defect_count,
            "defects": [d.to_dict() for d in self.defects],
            "coverage": _finite_or_none(self.coverage),
            "model": self.model,
            "truth": self.truth,
            "part_map": self.part_map,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            **({"extra": self.extra} if self.extra else {}),
        }
