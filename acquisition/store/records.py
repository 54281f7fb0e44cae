"""Plain records returned by :class:`~acquisition.store.CaptureStore` (read-only snapshots of rows)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class CaptureRecord:
    """One stored capture.

    Poses are ``(x, y, z, rx, ry, rz)`` in metres / rotation vector (radians), TCP in the robot base
    frame; ``joints`` are 6 angles in radians. ``image_relpath`` is relative to the store root (POSIX).
    """

    id: int
    campaign: str
    part_id: str
    pose_id: str
    image_relpath: str
    sha256: str
    width: int
    height: int
    pixel_format: str
    commanded_pose: tuple[float, ...]
    actual_pose: tuple[float, ...]
    joints: tuple[float, ...]
    exposure_us: Optional[float]
    gain_db: Optional[float]
    host_timestamp_s: Optional[float]
    device_timestamp_ns: Optional[int]
    frame_id: Optional[int]
    camera_id: Optional[str]
    calibration_id: Optional[str]
    extra: dict[str, Any]
    created: str

    @property
    def stem(self) -> str:
        """Unique file stem used by exports: ``<campaign>_<part_id>_<pose_id>``."""
        return f"{self.campaign}_{self.part_id}_{self.pose_id}"


@dataclass(frozen=True)
class MaskInfo:
    """Metadata of the mask of one capture (the pixels come from ``CaptureStore.get_mask`` and
    ``CaptureStore.mask_labels``).

    ``defect_type``: the single type of the mask's regions, ``combined`` when they have several, or the
    type given to an empty mask. ``types``: the types of its regions (label k of the type label map is
    ``types[k-1]``; empty for an empty mask). ``types_relpath`` / ``types_sha256``: the type label map
    file, None when the mask has at most one type (its binary mask says everything).
    """

    capture_id: int
    relpath: str
    defect_type: str
    source: str
    revision: int
    sha256: str
    area_px: int
    updated: str
    types: tuple[str, ...] = ()
    types_relpath: Optional[str] = None
    types_sha256: Optional[str] = None


@dataclass(frozen=True)
class PartInfo:
    """A part and its labelling status.

    ``labelled`` is True for a good part, and for a defective part with at least one masked pose
    (a mask with at least one defect pixel).
    """

    part_id: str
    label: str
    source: Optional[str]
    n_captures: int
    n_masked_poses: int
    campaigns: tuple[str, ...]

    @property
    def labelled(self) -> bool:
        return self.label == "good" or (self.label == "defective" and self.n_masked_poses >= 1)


@dataclass(frozen=True)
class CampaignStatus:
    """Bookkeeping of one campaign: its stored config, status and capture counts."""

    name: str
    status: str
    created: str
    updated: str
    config: dict[str, Any]
    calibration_id: Optional[str]
    n_captures: int
    n_parts: int
    summary: Optional[dict[str, Any]]


@dataclass(frozen=True)
class InspectionRecord:
    """One inspection verdict of a part."""

    id: int
    part_id: str
    verdict: str
    reason: str
    scores: dict[str, Any]
    worst_pose: Optional[str]
    model_dir: Optional[str]
    time: str


@dataclass
class VerifyReport:
    """Result of ``CaptureStore.verify()``: every problem found, as ``"<relpath>: <reason>"`` lines."""

    n_captures: int = 0
    n_masks: int = 0
    problems: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row's file exists with its recorded hash (orphan files are harmless)."""
        return not self.problems


@dataclass
class ExportReport:
    """What ``export_mvtec`` wrote: counts per split/defect type and what was skipped (and why)."""

    out_dir: str
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    train_parts: list[str] = field(default_factory=list)
    test_parts: list[str] = field(default_factory=list)
