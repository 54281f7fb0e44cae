"""Part maps of parts already in a capture store: training's part threshold, ``cell eval``'s part level.

Every capture is placed with the one :class:`~cell.geometry.GeometryResolver` (calibration in force, else the
geometry its campaign recorded, else the simulation's nominal geometry) and its recorded ACTUAL TCP pose; the
part frame and outline come from the ``plan`` its campaign stored. Ground truth goes the same way: each
capture's labelled mask is projected onto the part grid and the views are fused by ``max`` (a cell is defect
when some labelled view shows it as defect): for the simulation the masks are its exact defect regions.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from acquisition.store import CaptureStore
from cell.geometry import GeometryResolver
from cell.part_map import PartFrame, PartMap, PartMapAccumulator, PartMapConfig, PartMapError, PoseResult

ScoreFn = Callable[[np.ndarray], tuple[float, np.ndarray]]


def campaign_config_reader(store: CaptureStore) -> Callable[[str], Optional[Mapping[str, Any]]]:
    """``name -> stored config`` of ``store``'s campaigns (None for an unknown name)."""
    def read(name: str) -> Optional[Mapping[str, Any]]:
        try:
            return store.campaign_status(name).config
        except Exception:  # noqa: BLE001 - an unknown campaign simply has no config
            return None
    return read


class StoredPartMaps:
    """Builds part maps of stored parts. ``resolver``: the geometry in force (default: what the store's
    campaigns recorded, else the simulation's nominal geometry)."""

    def __init__(self, store: CaptureStore, config: Optional[PartMapConfig] = None,
                 resolver: Optional[GeometryResolver] = None) -> None:
        self.store = store
        self.config = config or PartMapConfig()
        self._configs = campaign_config_reader(store)
        self.resolver = resolver or GeometryResolver(self._configs)

    def accumulator(self, record: Any, config: Optional[PartMapConfig] = None) -> PartMapAccumulator:
        """An empty accumulator for the part of ``record`` (its campaign's plan and geometry)."""
        stored = self._configs(record.campaign) or {}
        plan = stored.get("plan") if isinstance(stored, Mapping) else None
        if not isinstance(plan, Mapping):
            raise PartMapError(f"campaign {record.campaign}: its stored config has no plan: the part map needs the "
                               "plan's part_center_pose and part_size_m")
        geometry = self.resolver(record)
        if geometry is None:
            raise PartMapError(f"campaign {record.campaign}: no camera geometry known for its captures "
                               "(give the calibration file in force)")
        return PartMapAccumulator(geometry.camera, geometry.T_flange_cam, PartFrame.from_plan(plan),
                                  config or self.config)

    def fuse(self, records: Sequence[Any], score: ScoreFn, *, mosaic: bool = False,
             on_score: Optional[Callable[[Any, float], None]] = None) -> PartMap:
        """Score every capture of one part (``score(pixels) -> (score, map)``) and fuse their maps.
        ``on_score(record, score)`` sees each image score (so the caller scores each image once)."""
        return self.accumulate(records, score, mosaic=mosaic, on_score=on_score).finish()

    def accumulate(self, records: Sequence[Any], score: ScoreFn, *, mosaic: bool = False,
                   on_score: Optional[Callable[[Any, float], None]] = None) -> PartMapAccumulator:
        """As :meth:`fuse`, but the accumulator with every view added (``finish(config)`` fuses it by any rule
        and edge band without scoring again)."""
        if not records:
            raise PartMapError("no captures to make a part map from")
        acc = self.accumulator(records[0])
        for record in records:
            pixels = self.store.load_image(record)
            value, amap = score(pixels)
            if on_score is not None:
                on_score(record, value)
            if not np.isfinite(value):
                raise PartMapError(f"{record.campaign}/{record.part_id}/{record.pose_id}: non-finite score {value}")
            acc.add(PoseResult(record.pose_id, float(value), amap, np.asarray(record.actual_pose, dtype=float),
                               (record.height, record.width)), image=pixels if mosaic else None)
        return acc

    def truth(self, records: Sequence[Any], masks: Mapping[int, Any]) -> Optional[PartMap]:
        """The part's labelled defect regions on its grid (max over the views' masks); None when none of its
        captures has a stored mask. ``masks``: capture id -> mask info (``store.mask_infos()``)."""
        labelled = [r for r in records if r.id in masks]
        if not labelled:
            return None
        acc = self.accumulator(labelled[0], PartMapConfig(**{**self.config.model_dump(), "fusion": "max"}))
        for record in labelled:
            mask = self.store.get_mask(record.id)[0]
            if mask is None:
                continue
            acc.add(PoseResult(record.pose_id, 0.0, mask.astype(np.float32), np.asarray(record.actual_pose, dtype=float),
                               (record.height, record.width)))
        return acc.finish() if acc.poses else None


def captures_by_part(records: Iterable[Any]) -> "OrderedDict[str, list[Any]]":
    """Capture records grouped by part id, in capture order."""
    parts: OrderedDict[str, list[Any]] = OrderedDict()
    for record in records:
        parts.setdefault(record.part_id, []).append(record)
    return parts
