"""The capture store: a dataset folder of image files plus an SQLite manifest (WAL).

Layout of a store folder::

    store.json                                   format marker (format, format_version, created, schema)
    manifest.sqlite (+ -wal, -shm)               campaigns, parts, captures, masks, inspections
    images/<campaign>/<part_id>/<pose_id>.png    lossless frames (mono or RGB, 8 or 16 bit)
    masks/<campaign>/<part_id>/<pose_id>.r<revision>.png   exact 0/255 defect masks
    masks/<campaign>/<part_id>/<pose_id>.r<revision>.types.png   per-pixel defect types (uint8), only for
                                                 a mask whose regions have several types
    (manifest tables: campaigns, parts, captures, masks, inspections, settings)
    campaigns/<campaign>/summary.json            summary of the campaign's last run

Crash safety: a file is written to a temporary file in its own directory, fsynced, renamed and the
directory fsynced BEFORE the row that points to it is committed, so a row never lacks its complete file.
A crash between rename and commit leaves an orphan file without a row: harmless, overwritten when the
same capture is taken again on resume, and listed by :meth:`CaptureStore.verify`. Masks are written
under a new file name per revision and the old file is deleted after the commit, so an interrupted mask
edit leaves the previous revision intact.

Part labels: ``good``, ``defective`` or ``unlabelled``. A part marked good has no defect masks: marking a
part good while it has non-empty masks is refused unless ``clear_masks=True`` (which deletes them), and
a non-empty mask on a good part is refused. Storing a non-empty mask on an unlabelled part marks it
defective. A defective part counts as labelled only with at least one masked pose (see :class:`PartInfo`).
Empty masks (all False) are kept: they record "this pose was looked at and shows no defect".

Defect types per region: every mask revision has a type label map, (H, W) uint8 with 0 = no defect and
``k`` = the k-th entry of the row's ``types`` list (JSON), and its binary mask is exactly ``label map > 0``.
A mask of one type is fully described by its binary mask (label map = 1 on the mask), so the label map is
written as a file (``.types.png``, same crash-safe write, before the row) only when the regions have
several types. The row's ``defect_type`` is the single type, ``combined`` for several types, or the type
given for an empty mask (``good`` by default). Stores of format version 1 (one type per mask) are
upgraded in place when opened: their masks read back as one type, the row's defect_type.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np

from acquisition.camera import Frame
from acquisition.errors import StoreError, UnknownCapture
from acquisition.store import _files
from acquisition.store._labels import normalize_labels, row_defect_type
from acquisition.store._schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    MASK_SOURCES,
    MASKS_V2_COLUMNS,
    MIGRATABLE_VERSIONS,
    PART_LABELS,
    SCHEMA,
    SCHEMA_SUMMARY,
    STORE_FILE,
    VERDICTS,
)
from acquisition.store.records import (
    CampaignStatus,
    CaptureRecord,
    ExportReport,
    InspectionRecord,
    MaskInfo,
    PartInfo,
    VerifyReport,
)

#: ``running``; ``completed`` (every pose captured); ``incomplete`` (ran to the end, some poses failed);
#: ``failed`` (stopped by a fault); ``interrupted`` (stopped by the operator).
#: ``stopped`` (an inspection run that ended early by its own policy).
CAMPAIGN_STATUSES = ("running", "completed", "incomplete", "failed", "interrupted", "stopped")

#: Tables a manifest must have to be a store's (the others are created when a writable store is opened).
REQUIRED_TABLES = ("campaigns", "parts", "captures", "masks")

#: Top folders of the store that :meth:`CaptureStore.write_artifact` may write into.
ARTIFACT_FOLDERS = ("inspections", "reports", "artifacts")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _pose_json(values: Sequence[float] | np.ndarray, what: str, size: int = 6) -> str:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if arr.size != size or not np.all(np.isfinite(arr)):
        raise StoreError(f"{what} must be {size} finite numbers, got {np.asarray(values).tolist()!r}")
    return json.dumps([float(v) for v in arr])


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _is_plain_json(value: Any) -> bool:
    """True for small JSON-able metadata (arrays and arbitrary objects in ``Frame.extra`` are not copied)."""
    if isinstance(value, np.ndarray):
        return False
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class _MaskPayload:
    """A mask revision encoded for storage: the 0/255 mask PNG, the type label map PNG (None when the
    mask has at most one type), the defect pixel count, the types present and the row's defect type."""

    mask_png: bytes
    types_png: Optional[bytes]
    area: int
    types: list[str]
    defect_type: str


def _mask_payload(labels: np.ndarray, types: Sequence[str], empty_type: str, what: str) -> _MaskPayload:
    """Encode a type label map ((H, W), 0 = no defect, k = ``types[k-1]``) and its binary mask."""
    labels, types, area = normalize_labels(labels, types, what)
    mask_png, _ = _files.encode_mask(labels > 0)
    types_png = _files.encode_labels(labels) if len(types) > 1 else None
    return _MaskPayload(mask_png, types_png, area, types, row_defect_type(types, empty_type))


def _binary_labels(mask: np.ndarray) -> np.ndarray:
    """A (H, W) mask (bool, or integers where non-zero = defect) as a one-type label map: (H, W) uint8, 1 on
    the mask. Compares bytes, so a bool array made by ``.view(bool)`` of a 0/255 image (whose True bytes are
    255) still gives 0/1."""
    arr = np.asarray(mask)
    if arr.dtype == bool:
        arr = arr.view(np.uint8)
    return np.not_equal(arr, 0).view(np.uint8)


def _row_types(row: sqlite3.Row) -> tuple[str, ...]:
    """The types of a masks row: its ``types_json``, or for a row written before per-region types, its
    defect_type when the mask is non-empty."""
    if row["types_json"] is not None:
        return tuple(json.loads(row["types_json"]))
    return (row["defect_type"],) if int(row["area_px"]) > 0 else ()


#: The largest row id SQLite stores (a signed 64-bit integer).
_MAX_ROW_ID = 2**63 - 1


def _capture_id(value: Any, root: Path) -> int:
    """A capture id as an int; one that cannot be a row id (not an integer, < 1, beyond 64 bits) is an
    unknown capture (UnknownCapture, a StoreError), not an overflow deep in SQLite."""
    try:
        cid = int(value)
    except (TypeError, ValueError, OverflowError):
        raise UnknownCapture(f"invalid capture id {value!r}: expected an integer") from None
    if not 1 <= cid <= _MAX_ROW_ID:
        raise UnknownCapture(f"unknown capture {cid} in {root}")
    return cid


@contextmanager
def _row_of(what: str) -> Iterator[None]:
    """Read a manifest row: malformed JSON, or a NULL or text where a number belongs (a tampered or damaged
    manifest: the store is untrusted data) raises StoreError naming the row, not a traceback."""
    try:
        yield
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise StoreError(
            f"manifest row of {what} is damaged ({type(exc).__name__}: {str(exc)[:200]}); the store is damaged"
        ) from None


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what} is not JSON serialisable: {exc}") from None


class CaptureStore:
    """A capture dataset folder (see the module docstring for layout and guarantees).

    ``CaptureStore(root, create=True)`` creates the folder when it is missing or empty and opens it
    when it already is a store; ``create=False`` only opens. Not a store, an unknown format version or
    an unreadable manifest -> StoreError naming the path. Use as a context manager, or call
    :meth:`close`. One instance may be shared by threads (calls are serialised); several processes may
    open the same store (SQLite WAL + write transactions).

    ``png_compression`` is the zlib level (0-9) of stored frames: 1 is fast and still lossless.

    ``read_only=True`` (every reading command: ``dataset info``, export, training's loaders, ``cell label
    --read-only``) opens the manifest with SQLite's ``mode=ro`` and never writes: it reads a store on a
    read-only mount or share, and every writing method raises StoreError ("... is open read-only").
    Where the folder cannot even hold SQLite's ``-shm`` companion file (a read-only medium) and no
    write-ahead log is pending, it falls back to ``immutable=1`` (nothing can be writing there).

    An existing store (``store.json`` present) whose manifest is missing, empty (0 bytes) or has none of the
    store's tables is damaged: StoreError, whatever the mode; a new empty manifest is never created for it.
    Every path the manifest names is checked to stay inside the store (see :meth:`path_of`).
    """

    def __init__(self, root: str | Path, create: bool = False, *, png_compression: int = 1,
                 read_only: bool = False) -> None:
        self.root = Path(root)
        self.png_compression = int(png_compression)
        self.read_only = bool(read_only)
        self._lock = threading.RLock()
        self._conn: Optional[sqlite3.Connection] = None
        if self.read_only and create:
            raise StoreError(f"{self.root}: a store opened read-only cannot be created")
        marker = self.root / STORE_FILE
        if not marker.exists():
            if not create:
                if self.root.exists():
                    raise StoreError(f"{self.root}: not a capture store (no {STORE_FILE})")
                raise StoreError(f"{self.root}: no such capture store")
            self._initialise()
        version = self._check_marker(marker)
        self._check_manifest_file()
        if self.read_only:
            if version != FORMAT_VERSION:
                raise StoreError(
                    f"{self.root}: store format version {version} must be upgraded to {FORMAT_VERSION} before it "
                    "can be read, which needs write access: open it once writable (e.g. `cell label`) or copy it"
                )
            self._connect_read_only()
            return
        self._connect(existing=True)
        if version != FORMAT_VERSION:
            try:
                self._migrate(marker)
            except BaseException:
                self.close()
                raise

    # ------------------------------------------------------------------ opening
    def _initialise(self) -> None:
        if self.root.exists():
            if not self.root.is_dir():
                raise StoreError(f"{self.root}: exists and is not a folder")
            if any(p.name not in (MANIFEST_FILE, MANIFEST_FILE + "-wal", MANIFEST_FILE + "-shm")
                   for p in self.root.iterdir()):
                raise StoreError(f"{self.root}: folder is not empty and not a capture store (no {STORE_FILE})")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.root}: {exc.strerror or exc}") from exc
        self._connect(existing=False)
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created": _now(),
            "schema": SCHEMA_SUMMARY,
        }
        _files.atomic_write(self.root / STORE_FILE, (json.dumps(meta, indent=2) + "\n").encode())
        self.close()

    def _check_marker(self, marker: Path) -> int:
        """Read the marker; returns its format version (FORMAT_VERSION or one of MIGRATABLE_VERSIONS)."""
        try:
            meta = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StoreError(f"{marker}: unreadable store marker: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise StoreError(f"{marker}: not a capture store marker (format {meta.get('format') if isinstance(meta, dict) else meta!r})")
        version = meta.get("format_version")
        if version != FORMAT_VERSION and version not in MIGRATABLE_VERSIONS:
            raise StoreError(
                f"{self.root}: store format version {version!r} is not supported (this software reads {FORMAT_VERSION})"
            )
        self.created = str(meta.get("created", ""))
        return int(version)

    def _migrate(self, marker: Path) -> None:
        """Upgrade an older store in place: add the masks columns of per-region types, then the marker.

        The columns are added in one write transaction (re-checked inside it, so two processes opening
        the same old store do not collide); the marker is rewritten afterwards, so a crash in between
        only repeats the (idempotent) upgrade at the next open. Old mask rows keep NULL types.
        """
        with self._write() as db:
            try:
                present = {row["name"] for row in db.execute("PRAGMA table_info(masks)").fetchall()}
                for name, kind in MASKS_V2_COLUMNS:
                    if name not in present:
                        db.execute(f"ALTER TABLE masks ADD COLUMN {name} {kind}")
            except sqlite3.Error as exc:
                raise StoreError(
                    f"{self.root / MANIFEST_FILE}: cannot upgrade the manifest to store format {FORMAT_VERSION}: {exc}"
                ) from None
        meta = json.loads(marker.read_text(encoding="utf-8"))
        meta.update({"format_version": FORMAT_VERSION, "schema": SCHEMA_SUMMARY, "upgraded": _now()})
        _files.atomic_write(marker, (json.dumps(meta, indent=2) + "\n").encode())

    def _check_manifest_file(self) -> None:
        """An existing store's manifest must be there and non-empty (a wiped manifest is an error, never
        replaced by a new empty one)."""
        path = self.root / MANIFEST_FILE
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise StoreError(
                f"{path}: the store's manifest is missing ({STORE_FILE} is there): the store is damaged; "
                "restore the manifest from a backup (no new empty manifest is created)"
            ) from None
        except OSError as exc:
            raise StoreError(f"{path}: cannot read the manifest: {exc.strerror or exc}") from None
        if size == 0:
            raise StoreError(
                f"{path}: the store's manifest is empty (0 bytes): the store is damaged; "
                "restore the manifest from a backup"
            )

    def _check_tables(self, conn: sqlite3.Connection, path: Path) -> None:
        """Refuse a manifest without the store's tables (wiped, or another SQLite file)."""
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [name for name in REQUIRED_TABLES if name not in tables]
        if missing:
            raise StoreError(
                f"{path}: not a capture store manifest (no table {', '.join(missing)}): the store is damaged; "
                "restore the manifest from a backup"
            )

    def _connect(self, existing: bool) -> None:
        """Open the manifest for writing (WAL); ``existing``: it must already hold the store's tables."""
        path = self.root / MANIFEST_FILE
        conn = None
        try:
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            if existing:
                self._check_tables(conn, path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise StoreError(f"{path}: cannot open manifest: {exc}") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._conn = conn

    def _connect_read_only(self) -> None:
        """Open the manifest with ``mode=ro`` (see the class docstring); the store's tables must be there."""
        path = self.root / MANIFEST_FILE
        uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
        conn = None
        try:
            try:
                conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
                self._check_tables(conn, path)
            except sqlite3.OperationalError as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                wal = self.root / (MANIFEST_FILE + "-wal")
                if "unable to open" not in str(exc):
                    raise
                if wal.exists() and wal.stat().st_size > 0:
                    raise StoreError(
                        f"{path}: cannot open manifest read-only: its write-ahead log ({wal.name}) holds changes "
                        "that cannot be read where SQLite cannot create its -shm file (a read-only folder); open "
                        "the store once where it is writable, then read it here"
                    ) from None
                # A read-only medium: SQLite cannot create the -shm file a WAL reader needs. No log is pending,
                # so the main file is complete and nobody can be writing here: read it as immutable.
                conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
                self._check_tables(conn, path)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            raise StoreError(f"{path}: cannot open manifest read-only: {exc}") from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        self._conn = conn

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise StoreError(f"{self.root}: the store is open read-only: cannot {what}")

    def path_of(self, relpath: str, what: str = "store file") -> Path:
        """The absolute path of a store-relative (POSIX) path, checked to stay inside the store.

        Every image, mask and artifact path the store reads or writes goes through here (the manifest is
        untrusted): ``..``, an absolute path or a symlink out of the store raises StoreError naming ``what``
        and the path (see :func:`acquisition.store._files.resolve_inside`).
        """
        return _files.resolve_inside(self.root, relpath, what)

    def close(self) -> None:
        """Close the manifest connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "CaptureStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CaptureStore({str(self.root)!r})"

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.root}: store is closed")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: holds the store's write lock across processes)."""
        self._check_writable("write to its manifest")
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"{self.root / MANIFEST_FILE}: cannot start a write: {exc}") from None
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                db.execute("ROLLBACK")
                raise StoreError(f"{self.root / MANIFEST_FILE}: commit failed: {exc}") from None

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.root / MANIFEST_FILE}: query failed: {exc}") from None

    # ------------------------------------------------------------------ campaigns
    def start_campaign(
        self,
        name: str,
        config: Mapping[str, Any],
        calibration_id: Optional[str] = None,
        *,
        resume: bool = False,
    ) -> CampaignStatus:
        """Register campaign ``name`` with its config (a JSON-able mapping) and mark it running.

        A campaign of that name already in the store is refused unless ``resume`` is True; resuming with
        a different config is refused too (pose ids would not match). Returns the campaign's status.
        """
        _files.check_name("campaign name", name)
        config_json = _dumps(dict(config), f"config of campaign {name!r}")
        with self._write() as db:
            row = db.execute("SELECT config_json FROM campaigns WHERE name = ?", (name,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO campaigns (name, created, updated, status, config_json, calibration_id)"
                    " VALUES (?, ?, ?, 'running', ?, ?)",
                    (name, _now(), _now(), config_json, calibration_id),
                )
            elif not resume:
                raise StoreError(
                    f"campaign {name!r} already exists in {self.root}: resume it (--resume) or choose another name"
                )
            elif _stored_config(row, name) != json.loads(config_json):
                raise StoreError(
                    f"campaign {name!r} in {self.root} was started with a different configuration; "
                    "resume it with the same cell and campaign files, or choose another name"
                )
            else:
                db.execute("UPDATE campaigns SET status = 'running', updated = ? WHERE name = ?", (_now(), name))
        return self.campaign_status(name)

    def finish_campaign(self, name: str, status: str, summary: Mapping[str, Any]) -> Path:
        """Record the outcome of a campaign run: ``status`` in CAMPAIGN_STATUSES and a summary mapping.

        The summary is committed to the manifest, then written atomically to
        ``campaigns/<name>/summary.json``; returns that path.
        """
        if status not in CAMPAIGN_STATUSES:
            raise StoreError(f"invalid campaign status {status!r}: expected one of {CAMPAIGN_STATUSES}")
        summary_json = _dumps(dict(summary), f"summary of campaign {name!r}")
        self._check_writable(f"finish campaign {name!r}")
        path = self.path_of(f"campaigns/{_files.check_name('campaign name', name)}/summary.json", "campaign summary")
        with self._write() as db:
            cur = db.execute(
                "UPDATE campaigns SET status = ?, summary_json = ?, updated = ? WHERE name = ?",
                (status, summary_json, _now(), name),
            )
            if cur.rowcount == 0:
                raise StoreError(f"unknown campaign {name!r} in {self.root}")
        # The manifest has the summary even when the file cannot be written (e.g. a full disk).
        _files.atomic_write(path, (json.dumps(json.loads(summary_json), indent=2) + "\n").encode())
        return path

    def campaign_status(self, name: str) -> CampaignStatus:
        """The campaign's stored config, status and counts; unknown name -> StoreError."""
        rows = self._query("SELECT * FROM campaigns WHERE name = ?", (name,))
        if not rows:
            raise StoreError(f"unknown campaign {name!r} in {self.root}")
        return self._campaign_from_row(rows[0])

    def campaigns(self) -> list[CampaignStatus]:
        """All campaigns, oldest first."""
        return [self._campaign_from_row(r) for r in self._query("SELECT * FROM campaigns ORDER BY created, name")]

    def _campaign_from_row(self, row: sqlite3.Row) -> CampaignStatus:
        counts = self._query(
            "SELECT COUNT(*) AS n, COUNT(DISTINCT part_id) AS p FROM captures WHERE campaign = ?", (row["name"],)
        )[0]
        with _row_of(f"campaign {row['name']!r}"):
            return CampaignStatus(
                name=row["name"],
                status=row["status"],
                created=row["created"],
                updated=row["updated"],
                config=json.loads(row["config_json"]),
                calibration_id=row["calibration_id"],
                n_captures=int(counts["n"]),
                n_parts=int(counts["p"]),
                summary=json.loads(row["summary_json"]) if row["summary_json"] else None,
            )

    # ------------------------------------------------------------------ captures
    def image_relpath(self, campaign: str, part_id: str, pose_id: str) -> str:
        """Relative (POSIX) path of a capture's image; validates the three names."""
        _files.check_name("campaign name", campaign)
        _files.check_name("part id", part_id)
        _files.check_name("pose id", pose_id)
        return f"images/{campaign}/{part_id}/{pose_id}.png"

    def add_capture(
        self,
        campaign: str,
        part_id: str,
        pose_id: str,
        frame: Frame,
        commanded_pose: Sequence[float] | np.ndarray,
        actual_pose: Sequence[float] | np.ndarray,
        joints: Sequence[float] | np.ndarray,
        extra_meta: Optional[Mapping[str, Any]] = None,
        *,
        calibration_id: Optional[str] = None,
        mask: Optional[np.ndarray] = None,
        defect_type: str = "good",
        mask_source: str = "sim",
        mask_types: Optional[Sequence[str]] = None,
    ) -> CaptureRecord:
        """Store one frame crash-safely and return its record.

        ``commanded_pose`` / ``actual_pose``: (6,) TCP poses (m, rotation vector); ``joints``: (6,) rad.
        ``extra_meta``: JSON-able metadata kept with the row (with the plain-JSON entries of
        ``frame.extra``; arrays such as the sim mask and other objects are not copied). ``mask``: optional (H, W) bool defect mask stored in the same
        transaction (revision 1) with ``defect_type`` and ``mask_source``. With ``mask_types``, ``mask`` is instead
        an (H, W) uint8 type label map (0 = no defect, k = ``mask_types[k-1]``, see :meth:`set_mask_labels`) and
        ``defect_type`` only names an empty one.

        The image (and mask) files are complete on disk before the row is committed. The campaign must
        have been started; (campaign, part_id, pose_id) must be new, otherwise StoreError. A write
        failure (full disk, unwritable folder) raises StoreError naming the file and leaves the manifest
        untouched.
        """
        relpath = self.image_relpath(campaign, part_id, pose_id)
        commanded_json = _pose_json(commanded_pose, "commanded_pose")
        actual_json = _pose_json(actual_pose, "actual_pose")
        joints_json = _pose_json(joints, "joints")
        extra = {k: v for k, v in (frame.extra or {}).items() if _is_plain_json(v)}
        extra.update(dict(extra_meta or {}))
        extra_json = _dumps(extra, f"metadata of capture {relpath}")
        png = _files.encode_png(frame.pixels, frame.pixel_format, self.png_compression)
        sha = _files.sha256_bytes(png)
        mask_payload = None
        if mask is not None:
            self._check_mask_args(defect_type, mask_source)
            if tuple(np.shape(mask)) != (frame.height, frame.width):
                raise StoreError(
                    f"mask of {relpath} has shape {np.shape(mask)}, the image is {(frame.height, frame.width)}"
                )
            if mask_types is None:
                mask_payload = _mask_payload(_binary_labels(mask), [defect_type], defect_type, f"mask of {relpath}")
            else:
                mask_payload = _mask_payload(mask, mask_types, defect_type, f"mask of {relpath}")
        elif mask_types is not None:
            raise StoreError(f"mask types {list(mask_types)} given for {relpath} without a mask")
        with self._write() as db:
            if db.execute("SELECT 1 FROM campaigns WHERE name = ?", (campaign,)).fetchone() is None:
                raise StoreError(f"unknown campaign {campaign!r} in {self.root}: start_campaign first")
            if db.execute(
                "SELECT 1 FROM captures WHERE campaign = ? AND part_id = ? AND pose_id = ?",
                (campaign, part_id, pose_id),
            ).fetchone() is not None:
                raise StoreError(f"capture {relpath} already exists in {self.root}")
            label_row = db.execute("SELECT label FROM parts WHERE part_id = ?", (part_id,)).fetchone()
            if mask_payload is not None and mask_payload.area > 0 and label_row is not None and label_row["label"] == "good":
                raise StoreError(f"part {part_id!r} is marked good: a defect mask cannot be stored for {relpath}")
            # Files first (complete and durable), row last.
            _files.atomic_write(self.path_of(relpath, "capture image"), png)
            mask_rels = None
            if mask_payload is not None:
                mask_rels = self._write_mask_files(f"masks/{campaign}/{part_id}/{pose_id}.r1", mask_payload)
            now = _now()
            if label_row is None:
                db.execute(
                    "INSERT INTO parts (part_id, label, source, updated) VALUES (?, 'unlabelled', NULL, ?)",
                    (part_id, now),
                )
            cur = db.execute(
                "INSERT INTO captures (campaign, part_id, pose_id, image_relpath, sha256, width, height,"
                " pixel_format, commanded_pose, actual_pose, joints, exposure_us, gain_db, host_timestamp_s,"
                " device_timestamp_ns, frame_id, camera_id, calibration_id, extra_json, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    campaign, part_id, pose_id, relpath, sha, frame.width, frame.height, frame.pixel_format,
                    commanded_json, actual_json, joints_json, float(frame.exposure_us), float(frame.gain_db),
                    float(frame.host_timestamp_s),
                    None if frame.device_timestamp_ns is None else int(frame.device_timestamp_ns),
                    int(frame.frame_id), str(frame.camera_id), calibration_id, extra_json, now,
                ),
            )
            capture_id = int(cur.lastrowid)
            if mask_payload is not None and mask_rels is not None:
                self._upsert_mask_row(db, capture_id, mask_payload, mask_rels, mask_source, 1, now)
                if mask_payload.area > 0 and (label_row is None or label_row["label"] == "unlabelled"):
                    db.execute(
                        "UPDATE parts SET label = 'defective', source = ?, updated = ? WHERE part_id = ?",
                        (mask_source, now, part_id),
                    )
            row = db.execute("SELECT * FROM captures WHERE id = ?", (capture_id,)).fetchone()
        return self._capture_from_row(row)

    def has_capture(self, campaign: str, part_id: str, pose_id: str) -> bool:
        """True when (campaign, part_id, pose_id) is stored."""
        return bool(self._query(
            "SELECT 1 FROM captures WHERE campaign = ? AND part_id = ? AND pose_id = ?", (campaign, part_id, pose_id)
        ))

    def captured_keys(self, campaign: str) -> set[tuple[str, str]]:
        """The (part_id, pose_id) pairs stored for ``campaign``."""
        rows = self._query("SELECT part_id, pose_id FROM captures WHERE campaign = ?", (campaign,))
        return {(r["part_id"], r["pose_id"]) for r in rows}

    def captures(self, campaign: Optional[str] = None, part_id: Optional[str] = None) -> list[CaptureRecord]:
        """Stored captures, optionally filtered, in insertion order."""
        sql, params = "SELECT * FROM captures WHERE 1 = 1", []
        if campaign is not None:
            sql += " AND campaign = ?"
            params.append(campaign)
        if part_id is not None:
            sql += " AND part_id = ?"
            params.append(part_id)
        return [self._capture_from_row(r) for r in self._query(sql + " ORDER BY id", params)]

    def get_capture(self, capture_id: int) -> CaptureRecord:
        """The capture with this id; unknown id -> UnknownCapture (a StoreError); a damaged row -> StoreError."""
        rows = self._query("SELECT * FROM captures WHERE id = ?", (_capture_id(capture_id, self.root),))
        if not rows:
            raise UnknownCapture(f"unknown capture {capture_id} in {self.root}")
        return self._capture_from_row(rows[0])

    def image_path(self, record: CaptureRecord | int) -> Path:
        """Absolute path of a capture's image file."""
        if not isinstance(record, CaptureRecord):
            record = self.get_capture(record)
        return self.path_of(record.image_relpath, f"image of capture {record.id}")

    def load_image(self, record: CaptureRecord | int) -> np.ndarray:
        """The stored pixels: (H, W) mono or (H, W, 3) RGB, uint8/uint16, exactly as captured."""
        return _files.decode_png(self.image_path(record))

    @staticmethod
    def _capture_from_row(row: sqlite3.Row) -> CaptureRecord:
        with _row_of(f"capture {row['id']!r}"):
            return CaptureStore._capture_record(row)

    @staticmethod
    def _capture_record(row: sqlite3.Row) -> CaptureRecord:
        return CaptureRecord(
            id=int(row["id"]),
            campaign=row["campaign"],
            part_id=row["part_id"],
            pose_id=row["pose_id"],
            image_relpath=row["image_relpath"],
            sha256=row["sha256"],
            width=int(row["width"]),
            height=int(row["height"]),
            pixel_format=row["pixel_format"],
            commanded_pose=tuple(json.loads(row["commanded_pose"])),
            actual_pose=tuple(json.loads(row["actual_pose"])),
            joints=tuple(json.loads(row["joints"])),
            exposure_us=row["exposure_us"],
            gain_db=row["gain_db"],
            host_timestamp_s=row["host_timestamp_s"],
            device_timestamp_ns=row["device_timestamp_ns"],
            frame_id=row["frame_id"],
            camera_id=row["camera_id"],
            calibration_id=row["calibration_id"],
            extra=json.loads(row["extra_json"]),
            created=row["created"],
        )

    # ------------------------------------------------------------------ parts
    def set_part_label(
        self, part_id: str, label: str, *, source: str = "human", clear_masks: bool = False
    ) -> None:
        """Set a part's label: ``good``, ``defective`` or ``unlabelled`` (creates the part when new).

        Marking a part good while some of its captures have non-empty masks raises StoreError, unless
        ``clear_masks`` is True: then all its masks are deleted in the same transaction.
        """
        _files.check_name("part id", part_id)
        if label not in PART_LABELS:
            raise StoreError(f"invalid part label {label!r}: expected one of {', '.join(PART_LABELS)}")
        stale: list[str] = []
        with self._write() as db:
            if label == "good":
                rows = db.execute(
                    "SELECT m.capture_id, m.relpath, m.types_relpath, m.area_px FROM masks m"
                    " JOIN captures c ON c.id = m.capture_id"
                    " WHERE c.part_id = ?", (part_id,),
                ).fetchall()
                masked = [r for r in rows if r["area_px"] > 0]
                if masked and not clear_masks:
                    raise StoreError(
                        f"part {part_id!r} has {len(masked)} masked pose(s): a good part has no defect masks; "
                        "clear them first (clear_masks=True)"
                    )
                if masked:
                    for r in rows:
                        self._check_mask_paths(int(r["capture_id"]), r)
                    db.executemany("DELETE FROM masks WHERE capture_id = ?", [(r["capture_id"],) for r in rows])
                    stale = [rel for r in rows for rel in (r["relpath"], r["types_relpath"]) if rel]
            db.execute(
                "INSERT INTO parts (part_id, label, source, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(part_id) DO UPDATE SET label = excluded.label, source = excluded.source,"
                " updated = excluded.updated",
                (part_id, label, source, _now()),
            )
        self._remove_files(stale)

    def part_label(self, part_id: str) -> str:
        """The part's label; an unknown part -> StoreError."""
        rows = self._query("SELECT label FROM parts WHERE part_id = ?", (part_id,))
        if not rows:
            raise StoreError(f"unknown part {part_id!r} in {self.root}")
        return rows[0]["label"]

    def part(self, part_id: str) -> PartInfo:
        """One part with its labelling status; unknown -> StoreError."""
        parts = self._parts("WHERE p.part_id = ?", (part_id,))
        if not parts:
            raise StoreError(f"unknown part {part_id!r} in {self.root}")
        return parts[0]

    def parts(self, campaign: Optional[str] = None) -> list[PartInfo]:
        """All parts (optionally those captured in ``campaign``), ordered by part id."""
        if campaign is None:
            return self._parts("", ())
        return self._parts(
            "WHERE p.part_id IN (SELECT part_id FROM captures WHERE campaign = ?)", (campaign,)
        )

    def _parts(self, where: str, params: Sequence[Any]) -> list[PartInfo]:
        rows = self._query(
            "SELECT p.part_id, p.label, p.source,"
            " (SELECT COUNT(*) FROM captures c WHERE c.part_id = p.part_id) AS n_captures,"
            " (SELECT COUNT(*) FROM masks m JOIN captures c ON c.id = m.capture_id"
            "   WHERE c.part_id = p.part_id AND m.area_px > 0) AS n_masked,"
            " (SELECT GROUP_CONCAT(DISTINCT c.campaign) FROM captures c WHERE c.part_id = p.part_id) AS camps"
            f" FROM parts p {where} ORDER BY p.part_id",
            params,
        )
        return [
            PartInfo(
                part_id=r["part_id"], label=r["label"], source=r["source"], n_captures=int(r["n_captures"]),
                n_masked_poses=int(r["n_masked"]),
                campaigns=tuple(sorted(r["camps"].split(","))) if r["camps"] else (),
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ masks
    @staticmethod
    def _check_mask_args(defect_type: str, source: str) -> None:
        _files.check_name("defect type", defect_type)
        if source not in MASK_SOURCES:
            raise StoreError(f"invalid mask source {source!r}: expected one of {', '.join(MASK_SOURCES)}")

    def set_mask(
        self,
        capture_id: int,
        mask: np.ndarray,
        defect_type: str,
        source: str = "human",
        revision: Optional[int] = None,
    ) -> int:
        """Store the (H, W) bool defect mask of a capture atomically; returns the new revision.

        Every region of the mask gets ``defect_type`` (:meth:`set_mask_labels` stores several types).
        ``revision``: the revision the caller's edit is based on (0 = no mask yet). When given and the
        stored revision differs, raises StoreError ("mask of capture N changed since revision R ...")
        and stores nothing; when None, the last write wins. The mask is kept exactly (0/255 PNG).
        A non-empty mask on a part marked good is refused; on an unlabelled part it marks it defective.
        """
        self._check_mask_args(defect_type, source)
        capture = self._check_mask_shape(capture_id, mask)
        payload = _mask_payload(_binary_labels(mask), [defect_type], defect_type, f"mask of capture {capture.id}")
        return self._store_mask(capture, payload, source, revision)

    def set_mask_labels(
        self,
        capture_id: int,
        labels: np.ndarray,
        types: Sequence[str],
        source: str = "human",
        revision: Optional[int] = None,
        *,
        empty_type: str = "good",
    ) -> int:
        """Store a capture's mask with a defect type per region, atomically; returns the new revision.

        ``labels``: (H, W) integer type label map, 0 = no defect, ``k`` = ``types[k-1]``; ``types``: distinct
        defect type names. Types that no pixel uses are dropped (the stored list is exactly the types
        present, in the given order, and the map is renumbered to match). The binary mask ``labels > 0`` is
        stored as by :meth:`set_mask`; the row's defect_type is the single type, ``combined`` for several,
        or ``empty_type`` for an empty mask. Same revision check and part-label rules as :meth:`set_mask`.
        """
        self._check_mask_args(empty_type, source)
        capture = self._check_mask_shape(capture_id, labels)
        payload = _mask_payload(labels, types, empty_type, f"mask of capture {capture.id}")
        return self._store_mask(capture, payload, source, revision)

    def _check_mask_shape(self, capture_id: int, mask: np.ndarray) -> CaptureRecord:
        capture = self.get_capture(capture_id)
        if tuple(np.shape(mask)) != (capture.height, capture.width):
            raise StoreError(
                f"mask for capture {capture_id} has shape {np.shape(mask)}, the image is {(capture.height, capture.width)}"
            )
        return capture

    def _store_mask(self, capture: CaptureRecord, payload: _MaskPayload, source: str, revision: Optional[int]) -> int:
        """Write a new revision of a capture's mask (files first, then the row; old files removed last)."""
        with self._write() as db:
            row = db.execute(
                "SELECT relpath, types_relpath, revision FROM masks WHERE capture_id = ?", (capture.id,)
            ).fetchone()
            current = int(row["revision"]) if row else 0
            if revision is not None and int(revision) != current:
                raise StoreError(
                    f"mask of capture {capture.id} changed since revision {revision} (now revision {current}): "
                    "reload it before saving"
                )
            if row is not None:
                self._check_mask_paths(capture.id, row)  # the old files are deleted after the commit
            label = db.execute("SELECT label FROM parts WHERE part_id = ?", (capture.part_id,)).fetchone()["label"]
            if payload.area > 0 and label == "good":
                raise StoreError(
                    f"part {capture.part_id!r} is marked good: mark it defective before storing a defect mask"
                )
            new_rev = current + 1
            rels = self._write_mask_files(f"masks/{capture.campaign}/{capture.part_id}/{capture.pose_id}.r{new_rev}", payload)
            now = _now()
            self._upsert_mask_row(db, capture.id, payload, rels, source, new_rev, now)
            if payload.area > 0 and label == "unlabelled":
                db.execute(
                    "UPDATE parts SET label = 'defective', source = ?, updated = ? WHERE part_id = ?",
                    (source, now, capture.part_id),
                )
        if row is not None:
            self._remove_files([rel for rel in (row["relpath"], row["types_relpath"]) if rel and rel not in rels])
        return new_rev

    def _write_mask_files(self, base: str, payload: _MaskPayload) -> tuple[str, Optional[str]]:
        """Write ``<base>.png`` (and ``<base>.types.png`` when there are several types) crash-safely;
        returns their relpaths (the second None when not written)."""
        relpath = f"{base}.png"
        _files.atomic_write(self.path_of(relpath, "mask"), payload.mask_png)
        types_rel = None
        if payload.types_png is not None:
            types_rel = f"{base}.types.png"
            _files.atomic_write(self.path_of(types_rel, "type label map"), payload.types_png)
        return relpath, types_rel

    @staticmethod
    def _upsert_mask_row(db: sqlite3.Connection, capture_id: int, payload: _MaskPayload,
                         rels: tuple[str, Optional[str]], source: str, revision: int, now: str) -> None:
        types_sha = None if payload.types_png is None else _files.sha256_bytes(payload.types_png)
        db.execute(
            "INSERT INTO masks (capture_id, relpath, defect_type, source, revision, sha256, area_px, updated,"
            " types_json, types_relpath, types_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(capture_id) DO UPDATE SET relpath = excluded.relpath,"
            " defect_type = excluded.defect_type, source = excluded.source, revision = excluded.revision,"
            " sha256 = excluded.sha256, area_px = excluded.area_px, updated = excluded.updated,"
            " types_json = excluded.types_json, types_relpath = excluded.types_relpath,"
            " types_sha256 = excluded.types_sha256",
            (capture_id, rels[0], payload.defect_type, source, revision, _files.sha256_bytes(payload.mask_png),
             payload.area, now, json.dumps(payload.types), rels[1], types_sha),
        )

    @staticmethod
    def _mask_info_from_row(r: sqlite3.Row) -> MaskInfo:
        with _row_of(f"the mask of capture {r['capture_id']!r}"):
            return MaskInfo(
                capture_id=int(r["capture_id"]), relpath=r["relpath"], defect_type=r["defect_type"], source=r["source"],
                revision=int(r["revision"]), sha256=r["sha256"], area_px=int(r["area_px"]), updated=r["updated"],
                types=_row_types(r), types_relpath=r["types_relpath"], types_sha256=r["types_sha256"],
            )

    def mask_info(self, capture_id: int) -> Optional[MaskInfo]:
        """Metadata of a capture's mask, or None when it has none."""
        rows = self._query("SELECT * FROM masks WHERE capture_id = ?", (_capture_id(capture_id, self.root),))
        return self._mask_info_from_row(rows[0]) if rows else None

    def mask_infos(self) -> dict[int, MaskInfo]:
        """Metadata of every stored mask in one query: capture id -> :class:`MaskInfo` (as :meth:`mask_info`
        gives it). A capture without a mask has no entry."""
        rows = self._query("SELECT * FROM masks ORDER BY capture_id")
        return {int(r["capture_id"]): self._mask_info_from_row(r) for r in rows}

    def get_mask(self, capture_id: int) -> tuple[Optional[np.ndarray], Optional[str], int]:
        """``(mask (H, W) bool | None, defect_type | None, revision)``; revision 0 means no mask yet."""
        info = self.mask_info(capture_id)
        if info is None:
            self.get_capture(capture_id)  # unknown capture -> StoreError
            return None, None, 0
        return _files.decode_mask(self.path_of(info.relpath, f"mask of capture {info.capture_id}")), \
            info.defect_type, info.revision

    def mask_labels(self, capture_id: int) -> tuple[Optional[np.ndarray], list[str], int]:
        """``(type label map (H, W) uint8 | None, types, revision)`` of a capture's mask; revision 0: no mask.

        0 = no defect, ``k`` = ``types[k-1]``. A mask of one type (and every mask stored before per-region
        types) reads back as 1 on its binary mask with its row's defect type; an empty mask has no types.
        A label map file that does not match its binary mask raises StoreError (the store is damaged).
        """
        info = self.mask_info(capture_id)
        if info is None:
            self.get_capture(capture_id)  # unknown capture -> StoreError
            return None, [], 0
        mask = _files.decode_mask(self.path_of(info.relpath, f"mask of capture {info.capture_id}"))
        if info.types_relpath is None:
            return mask.view(np.uint8).copy(), list(info.types), info.revision
        path = self.path_of(info.types_relpath, f"type label map of capture {info.capture_id}")
        labels = _files.decode_labels(path)
        if labels.shape != mask.shape or not np.array_equal(labels > 0, mask) or int(labels.max()) > len(info.types):
            raise StoreError(f"{path}: type label map does not match its mask {info.relpath} (the store is damaged)")
        return labels, list(info.types), info.revision

    def delete_mask(self, capture_id: int, revision: Optional[int] = None) -> None:
        """Remove a capture's mask (same revision check as :meth:`set_mask`); no mask -> no-op."""
        capture_id = _capture_id(capture_id, self.root)
        with self._write() as db:
            row = db.execute(
                "SELECT relpath, types_relpath, revision FROM masks WHERE capture_id = ?", (int(capture_id),)
            ).fetchone()
            current = int(row["revision"]) if row else 0
            if revision is not None and int(revision) != current:
                raise StoreError(
                    f"mask of capture {capture_id} changed since revision {revision} (now revision {current}): "
                    "reload it before saving"
                )
            if row is None:
                return
            self._check_mask_paths(int(capture_id), row)
            db.execute("DELETE FROM masks WHERE capture_id = ?", (int(capture_id),))
        self._remove_files([rel for rel in (row["relpath"], row["types_relpath"]) if rel])

    def defect_types(self) -> list[str]:
        """Distinct defect types of the regions of the stored non-empty masks, sorted."""
        rows = self._query("SELECT DISTINCT defect_type, types_json, area_px FROM masks WHERE area_px > 0")
        return sorted({name for row in rows for name in _row_types(row)})

    # ------------------------------------------------------------------ settings
    def get_setting(self, key: str, default: Any = None) -> Any:
        """A dataset-wide setting (JSON value), e.g. ``"defect_types"``: the labelling tool's list."""
        rows = self._query("SELECT value_json FROM settings WHERE key = ?", (key,))
        if not rows:
            return default
        with _row_of(f"setting {key!r}"):
            return json.loads(rows[0]["value_json"])

    def set_setting(self, key: str, value: Any) -> None:
        """Store a dataset-wide JSON-able setting (last write wins)."""
        value_json = _dumps(value, f"setting {key!r}")
        with self._write() as db:
            db.execute(
                "INSERT INTO settings (key, value_json, updated) VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE"
                " SET value_json = excluded.value_json, updated = excluded.updated",
                (key, value_json, _now()),
            )

    # ------------------------------------------------------------------ inspections
    def add_inspection(
        self,
        part_id: str,
        verdict: str,
        reason: str = "",
        scores: Optional[Mapping[str, Any]] = None,
        worst_pose: Optional[str] = None,
        model_dir: Optional[str | Path] = None,
    ) -> int:
        """Record an inspection verdict (``OK``, ``NOK`` or ``error``) of a part; returns its id."""
        if verdict not in VERDICTS:
            raise StoreError(f"invalid verdict {verdict!r}: expected one of {', '.join(VERDICTS)}")
        scores_json = _dumps(dict(scores or {}), f"scores of the inspection of {part_id!r}")
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO inspections (part_id, verdict, reason, scores_json, worst_pose, model_dir, time)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (part_id, verdict, reason, scores_json, worst_pose,
                 None if model_dir is None else str(model_dir), _now()),
            )
            return int(cur.lastrowid)

    def inspections(self, part_id: Optional[str] = None) -> list[InspectionRecord]:
        """Inspection records, oldest first, optionally of one part."""
        sql, params = "SELECT * FROM inspections", ()
        if part_id is not None:
            sql, params = sql + " WHERE part_id = ?", (part_id,)
        records = []
        for r in self._query(sql + " ORDER BY id", params):
            with _row_of(f"inspection {r['id']!r}"):
                records.append(InspectionRecord(
                    id=int(r["id"]), part_id=r["part_id"], verdict=r["verdict"], reason=r["reason"],
                    scores=json.loads(r["scores_json"]), worst_pose=r["worst_pose"], model_dir=r["model_dir"],
                    time=r["time"],
                ))
        return records

    # ------------------------------------------------------------------ artifacts
    def write_artifact(self, relpath: str, data: bytes) -> str:
        """Write a derived file (heatmap, report) crash-safely under the store; returns its relpath.

        ``relpath`` is POSIX, relative to the store root, inside one of ARTIFACT_FOLDERS, every component
        a safe name (no ``..``): anything else raises StoreError. An existing file is replaced.
        """
        parts = str(relpath).split("/")
        if len(parts) < 2 or parts[0] not in ARTIFACT_FOLDERS:
            raise StoreError(
                f"artifact path {relpath!r} must lie inside one of {', '.join(f'{f}/' for f in ARTIFACT_FOLDERS)}"
            )
        for part in parts[1:]:
            _files.check_name("artifact path component", part)
        self._check_writable(f"write artifact {relpath!r}")
        _files.atomic_write(self.path_of("/".join(parts), "artifact"), bytes(data))
        return "/".join(parts)

    # ------------------------------------------------------------------ maintenance
    def _check_mask_paths(self, capture_id: int, row: sqlite3.Row) -> None:
        """Refuse (StoreError) a masks row whose files lie outside the store: they would be deleted."""
        self.path_of(row["relpath"], f"mask of capture {capture_id}")
        if row["types_relpath"]:
            self.path_of(row["types_relpath"], f"type label map of capture {capture_id}")

    def _remove_files(self, relpaths: Sequence[str]) -> None:
        """Delete files of old rows; a path that would leave the store is never touched."""
        for rel in relpaths:
            try:
                self.path_of(rel, "old file").unlink()
            except (OSError, StoreError):
                pass  # an unreferenced file is harmless; verify() lists it as an orphan

    def cleanup_temp(self) -> int:
        """Delete temporary files left by interrupted writes of processes that are gone; returns the count
        (0 for a store open read-only: it deletes nothing)."""
        if self.read_only:
            return 0
        with self._lock:
            return self._cleanup_temp()

    def _cleanup_temp(self) -> int:
        removed = 0
        for top in ("images", "masks", "campaigns") + ARTIFACT_FOLDERS:
            base = self.root / top
            if not base.exists():
                continue
            for path in base.rglob(f"{_files.TMP_PREFIX}*"):
                pid_text = path.name[len(_files.TMP_PREFIX):].split("-", 1)[0]
                if pid_text.isdigit() and int(pid_text) != os.getpid() and _pid_alive(int(pid_text)):
                    continue
                try:
                    path.unlink()
                    removed += 1
                except OSError:
                    pass
        return removed

    def verify(self) -> VerifyReport:
        """Check every capture row's image and every mask row's files (mask, type label map): exist and match
        their sha256; and that every capture, mask and campaign row parses (a malformed row is a problem).

        Files under ``images/`` and ``masks/`` that no row references are listed as orphans (harmless).
        """
        report = VerifyReport()
        referenced: set[str] = set()
        for sql, read in (("SELECT * FROM captures", self._capture_from_row),
                          ("SELECT * FROM masks", self._mask_info_from_row),
                          ("SELECT * FROM campaigns", self._campaign_from_row)):
            for row in self._query(sql):  # every row must parse (a tampered manifest is damaged too)
                try:
                    read(row)
                except StoreError as exc:
                    report.problems.append(str(exc))
        for row in self._query("SELECT image_relpath AS rel, sha256 FROM captures"):
            report.n_captures += 1
            referenced.add(row["rel"])
            self._verify_file(row["rel"], row["sha256"], report)
        for row in self._query("SELECT relpath AS rel, sha256, types_relpath, types_sha256 FROM masks"):
            report.n_masks += 1
            referenced.add(row["rel"])
            self._verify_file(row["rel"], row["sha256"], report)
            if row["types_relpath"]:
                referenced.add(row["types_relpath"])
                self._verify_file(row["types_relpath"], row["types_sha256"], report)
        for top in ("images", "masks"):
            base = self.root / top
            if base.exists():
                for path in sorted(base.rglob("*")):
                    if path.is_file():
                        rel = path.relative_to(self.root).as_posix()
                        if rel not in referenced:
                            report.orphans.append(rel)
        return report

    def _verify_file(self, rel: str, sha: str, report: VerifyReport) -> None:
        try:
            path = self.path_of(rel, "manifest path")
        except StoreError:
            report.problems.append(f"{rel!r}: leaves the store (absolute, '..' or a symlink out)")
            return
        if not path.is_file():
            report.problems.append(f"{rel}: missing")
            return
        try:
            actual = _files.sha256_file(path)
        except OSError as exc:
            report.problems.append(f"{rel}: unreadable ({exc.strerror or exc})")
            return
        if actual != sha:
            report.problems.append(f"{rel}: sha256 mismatch")

    # ------------------------------------------------------------------ export
    def export_mvtec(
        self,
        out_dir: str | Path,
        campaign: Optional[str | Sequence[str]] = None,
        *,
        test_good_fraction: float = 0.2,
        seed: int = 0,
        train_campaigns: Optional[Sequence[str]] = None,
        overwrite: bool = False,
    ) -> ExportReport:
        """Export labelled captures in the MVTec AD layout; see :func:`acquisition.store.export.export_mvtec`."""
        from acquisition.store.export import export_mvtec

        return export_mvtec(
            self, out_dir, campaign, test_good_fraction=test_good_fraction, seed=seed,
            train_campaigns=train_campaigns, overwrite=overwrite,
        )


def _stored_config(row: sqlite3.Row, name: str) -> Any:
    with _row_of(f"campaign {name!r}"):
        return json.loads(row["config_json"])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
