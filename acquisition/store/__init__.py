"""The capture store: image files plus an SQLite manifest, crash-safe, with labels, masks and MVTec export.

Public API: :class:`CaptureStore` and its records. See :mod:`acquisition.store.store` for the folder
layout and the guarantees, :mod:`acquisition.store.export` for the MVTec AD export.
"""
from acquisition.store._schema import COMBINED_TYPE, FORMAT_VERSION, MASK_SOURCES, PART_LABELS, VERDICTS
from acquisition.store.records import (
    CampaignStatus,
    CaptureRecord,
    ExportReport,
    InspectionRecord,
    MaskInfo,
    PartInfo,
    VerifyReport,
)
from acquisition.store.store import ARTIFACT_FOLDERS, CAMPAIGN_STATUSES, CaptureStore

__all__ = [
    "ARTIFACT_FOLDERS",
    "CAMPAIGN_STATUSES",
    "COMBINED_TYPE",
    "CampaignStatus",
    "CaptureRecord",
    "CaptureStore",
    "ExportReport",
    "FORMAT_VERSION",
    "InspectionRecord",
    "MASK_SOURCES",
    "MaskInfo",
    "PART_LABELS",
    "PartInfo",
    "VERDICTS",
    "VerifyReport",
]
