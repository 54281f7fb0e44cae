"""SQL schema of the capture store's manifest (``manifest.sqlite``) and its format version."""
from __future__ import annotations

#: Bumped whenever the folder layout or the schema changes incompatibly; opening another version refuses,
#: except the versions in MIGRATABLE_VERSIONS, which are upgraded in place when opened.
#: 2: per-region defect types (masks.types_json, masks.types_relpath, masks.types_sha256 and the
#: ``<pose_id>.r<revision>.types.png`` label maps).
FORMAT_VERSION = 2
MIGRATABLE_VERSIONS = (1,)

#: Marker file name at the store root (JSON: format, format_version, created, schema).
STORE_FILE = "store.json"
MANIFEST_FILE = "manifest.sqlite"
FORMAT_NAME = "inspection-cell-capture-store"

PART_LABELS = ("good", "defective", "unlabelled")
MASK_SOURCES = ("sim", "human")
VERDICTS = ("OK", "NOK", "error")

#: The masks row's defect type of a mask whose regions have several types (MVTec AD's folder name for
#: images showing several defect kinds).
COMBINED_TYPE = "combined"

SCHEMA = """
CREATE TABLE IF NOT EXISTS campaigns (
    name            TEXT PRIMARY KEY,
    created         TEXT NOT NULL,
    updated         TEXT NOT NULL,
    status          TEXT NOT NULL,
    config_json     TEXT NOT NULL,
    calibration_id  TEXT,
    summary_json    TEXT
);
CREATE TABLE IF NOT EXISTS parts (
    part_id   TEXT PRIMARY KEY,
    label     TEXT NOT NULL DEFAULT 'unlabelled' CHECK (label IN ('good', 'defective', 'unlabelled')),
    source    TEXT,
    updated   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS captures (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign            TEXT NOT NULL REFERENCES campaigns(name),
    part_id             TEXT NOT NULL REFERENCES parts(part_id),
    pose_id             TEXT NOT NULL,
    image_relpath       TEXT NOT NULL UNIQUE,
    sha256              TEXT NOT NULL,
    width               INTEGER NOT NULL,
    height              INTEGER NOT NULL,
    pixel_format        TEXT NOT NULL,
    commanded_pose      TEXT NOT NULL,
    actual_pose         TEXT NOT NULL,
    joints              TEXT NOT NULL,
    exposure_us         REAL,
    gain_db             REAL,
    host_timestamp_s    REAL,
    device_timestamp_ns INTEGER,
    frame_id            INTEGER,
    camera_id           TEXT,
    calibration_id      TEXT,
    extra_json          TEXT NOT NULL DEFAULT '{}',
    created             TEXT NOT NULL,
    UNIQUE (campaign, part_id, pose_id)
);
CREATE INDEX IF NOT EXISTS captures_part ON captures (part_id);
CREATE TABLE IF NOT EXISTS masks (
    capture_id   INTEGER PRIMARY KEY REFERENCES captures(id),
    relpath      TEXT NOT NULL,
    defect_type  TEXT NOT NULL,
    source       TEXT NOT NULL CHECK (source IN ('sim', 'human')),
    revision     INTEGER NOT NULL,
    sha256       TEXT NOT NULL,
    area_px      INTEGER NOT NULL,
    updated      TEXT NOT NULL,
    types_json   TEXT,
    types_relpath TEXT,
    types_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS settings (
    key         TEXT PRIMARY KEY,
    value_json  TEXT NOT NULL,
    updated     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inspections (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    part_id     TEXT NOT NULL,
    verdict     TEXT NOT NULL CHECK (verdict IN ('OK', 'NOK', 'error')),
    reason      TEXT NOT NULL DEFAULT '',
    scores_json TEXT NOT NULL DEFAULT '{}',
    worst_pose  TEXT,
    model_dir   TEXT,
    time        TEXT NOT NULL
);
"""

#: Columns added to the masks table by format version 2 (``ALTER TABLE`` when a version 1 store is opened;
#: NULL in the rows of older masks, which read back as one type: the row's defect_type).
MASKS_V2_COLUMNS = (("types_json", "TEXT"), ("types_relpath", "TEXT"), ("types_sha256", "TEXT"))

#: Human-readable schema summary written into store.json.
SCHEMA_SUMMARY = {
    "campaigns": ["name", "created", "updated", "status", "config_json", "calibration_id", "summary_json"],
    "parts": ["part_id", "label", "source", "updated"],
    "captures": [
        "id", "campaign", "part_id", "pose_id", "image_relpath", "sha256", "width", "height", "pixel_format",
        "commanded_pose", "actual_pose", "joints", "exposure_us", "gain_db", "host_timestamp_s",
        "device_timestamp_ns", "frame_id", "camera_id", "calibration_id", "extra_json", "created",
    ],
    "masks": ["capture_id", "relpath", "defect_type", "source", "revision", "sha256", "area_px", "updated",
              "types_json", "types_relpath", "types_sha256"],
    "settings": ["key", "value_json", "updated"],
    "inspections": ["id", "part_id", "verdict", "reason", "scores_json", "worst_pose", "model_dir", "time"],
}
