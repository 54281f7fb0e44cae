"""The labelling app's operations over a capture store, independent of HTTP.

:class:`LabellingApp` answers what the browser asks (dataset index, images, superpixels, masks, edits,
part labels, carry-over proposals, review ranking) with plain dicts and bytes, and raises
:class:`ApiError` (an HTTP status and a one-line reason) for anything the client got wrong. Every
mask edit is applied to the stored mask with :mod:`cell.labelling.masks` and written back to the store
at once (atomic files + row, revision checked), so what the user sees is what is stored. Masks carry a
defect type per pixel (:class:`~cell.labelling.masks.TypedMask`): painting edits give their pixels the
edit's ``defect_type``, erasing clears pixels whatever their type.

Wire format of a mask or a mask patch: ``{"x", "y", "w", "h", "bits"}``, ``bits`` = base64 of the
row-major packed bits (most significant bit first) of the (h, w) bool region at (x, y). A typed mask's
patch adds ``"types"`` (the mask's type names) and ``"runs"`` (:func:`~cell.labelling.masks.label_runs`:
``[k1, n1, k2, n2, ...]``, the type ``types[k-1]`` of the region's defect pixels in row-major order).
"""
from __future__ import annotations

import base64
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping

import cv2
import numpy as np

from acquisition.errors import StoreError, UnknownCapture
from acquisition.store import COMBINED_TYPE, CaptureRecord, CaptureStore, MaskInfo
from acquisition.store._files import atomic_write, check_name
from acquisition.store._labels import row_defect_type
from cell.labelling import masks as M
from cell.labelling.carry import CarryError, CarryGeometry, carry_labels
from cell.labelling.review import Disagreement, ScoreProvider, disagreement, heatmap_rgba, rank_disagreements
from cell.local_http import ApiError  # noqa: F401 - re-exported: the app raises it

#: Folder (inside the dataset) of the app's own settings; the store ignores it.
SETTINGS_DIR = "labelling"
SETTINGS_FILE = "settings.json"
DEFAULT_DEFECT_TYPE = "defect"
#: Names that cannot be a region's defect type: "good" is the MVTec folder of defect-free images and
#: "combined" the type of a mask whose regions have several types.
RESERVED_TYPES = ("good", COMBINED_TYPE)
MAX_POINTS = 20000


class _LRU:
    """A tiny thread-safe LRU cache of computed per-capture values."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def pop(self, key: Any) -> None:
        with self._lock:
            self._data.pop(key, None)


def encode_patch(mask: np.ndarray | M.TypedMask, bbox: M.BBox | None = None) -> dict[str, Any]:
    """The wire form of ``mask`` ((H, W) bool or a TypedMask), or of its region ``bbox`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = bbox if bbox is not None else (0, 0, mask.shape[1], mask.shape[0])
    if isinstance(mask, M.TypedMask):
        labels = mask.labels[y0:y1, x0:x1]
        patch = encode_patch(labels > 0, None)
        patch.update(x=x0, y=y0, types=list(mask.types), runs=M.label_runs(labels))
        return patch
    region = mask[y0:y1, x0:x1]
    return {"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0, "bits": base64.b64encode(M.pack_bits(region)).decode("ascii")}


def decode_patch(patch: Mapping[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """A full (H, W) bool mask from a wire patch (pixels outside the patch False)."""
    x, y, w, h = (int(patch[k]) for k in ("x", "y", "w", "h"))
    out = np.zeros(shape, dtype=bool)
    out[y : y + h, x : x + w] = M.unpack_bits(base64.b64decode(patch["bits"]), (h, w))
    return out


def decode_typed_patch(patch: Mapping[str, Any], shape: tuple[int, int]) -> M.TypedMask:
    """A full (H, W) TypedMask from a typed wire patch (pixels outside the patch have no defect)."""
    x, y, w, h = (int(patch[k]) for k in ("x", "y", "w", "h"))
    region = M.unpack_bits(base64.b64decode(patch["bits"]), (h, w))
    labels = np.zeros(shape, dtype=np.uint8)
    labels[y : y + h, x : x + w] = M.labels_from_runs(region, patch["runs"])
    return M.TypedMask(labels, tuple(patch["types"]))


def display_png(image: np.ndarray) -> bytes:
    """An 8-bit PNG of a stored frame for the browser (uint16 scaled by 1/256; RGB kept RGB)."""
    img = np.asarray(image)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ApiError(500, f"cannot encode image of shape {img.shape} as PNG")
    return buf.tobytes()


def rgb_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) RGB or (H, W, 4) RGBA uint8 array."""
    code = cv2.COLOR_RGB2BGR if rgb.shape[2] == 3 else cv2.COLOR_RGBA2BGRA
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), code), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ApiError(500, "cannot encode PNG")
    return buf.tobytes()


class LabellingApp:
    """Operations of the labelling app over one capture store.

    ``store``: an open :class:`CaptureStore` (shared across request threads; it serialises its calls).
    ``geometry``: a :class:`CarryGeometry`, or a callable ``record -> CarryGeometry | None`` that finds
    the geometry of a capture (None: carry-over unavailable for it). ``score_provider``: enables review
    mode. ``superpixel_size_px``: typical superpixel edge length.
    """

    def __init__(
        self,
        store: CaptureStore,
        *,
        geometry: CarryGeometry | Callable[[CaptureRecord], CarryGeometry | None] | None = None,
        score_provider: ScoreProvider | None = None,
        superpixel_size_px: int = 32,
        cache_size: int = 12,
    ) -> None:
        self.store = store
        self._geometry = geometry
        self.score_provider = score_provider
        self.superpixel_size_px = int(superpixel_size_px)
        self._images = _LRU(cache_size)
        self._pngs = _LRU(cache_size * 2)
        self._superpixels = _LRU(cache_size)
        self._superpixel_pngs = _LRU(cache_size * 2)
        self._maps = _LRU(cache_size)
        self._masks = _LRU(cache_size * 2)  # capture id -> (revision, TypedMask, row defect type, source)
        self._histories: dict[int, tuple[M.EditHistory, int]] = {}
        self._proposals: dict[int, tuple[M.TypedMask, int]] = {}  # dst id -> (carried typed mask, src id)
        self._edit_locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()
        self._review: dict[int, Disagreement] = {}
        self._review_thread: threading.Thread | None = None
        self._review_error: str | None = None
        self._closed = threading.Event()

    @property
    def settings_path(self) -> Path:
        """The app's settings file inside the dataset, checked to stay inside it (StoreError otherwise)."""
        return self.store.path_of(f"{SETTINGS_DIR}/{SETTINGS_FILE}", "labelling settings")

    @property
    def read_only(self) -> bool:
        """True when the store is open read-only: browsing works, every change is refused (403)."""
        return bool(getattr(self.store, "read_only", False))

    def _require_writable(self, what: str) -> None:
        if self.read_only:
            raise ApiError(403, f"the dataset {self.store.root} is open read-only: cannot {what}")

    def close(self) -> None:
        self._closed.set()
        if self._review_thread is not None:
            self._review_thread.join(timeout=5)

    # ------------------------------------------------------------------ lookups
    def capture(self, capture_id: Any) -> CaptureRecord:
        try:
            cid = int(capture_id)
        except (TypeError, ValueError):
            raise ApiError(400, f"capture id must be an integer, got {capture_id!r}") from None
        try:
            return self.store.get_capture(cid)
        except UnknownCapture:
            raise ApiError(404, f"unknown capture {cid}") from None
        except StoreError as exc:  # a damaged row of the manifest: the data is broken, not the request
            raise ApiError(500, str(exc)) from None

    def image(self, record: CaptureRecord) -> np.ndarray:
        image = self._images.get(record.id)
        if image is None:
            try:
                image = self.store.load_image(record)
            except StoreError as exc:
                raise ApiError(500, str(exc)) from None
            self._images.put(record.id, image)
        return image

    def _mask_entry(self, record: CaptureRecord) -> tuple[int, M.TypedMask, str | None, str | None]:
        """``(revision, typed mask, row defect type | None, source | None)`` of the stored mask (cached)."""
        return self._mask_entry_of(record, self.store.mask_info(record.id))

    def _mask_entry_of(
        self, record: CaptureRecord, info: MaskInfo | None
    ) -> tuple[int, M.TypedMask, str | None, str | None]:
        """:meth:`_mask_entry` given the capture's mask row ``info`` (None: no mask), e.g. one of
        ``store.mask_infos()`` read for many captures at once; the pixels are read only on a cache miss."""
        revision = info.revision if info else 0
        cached = self._masks.get(record.id)
        if cached is not None and cached[0] == revision and revision != 0:
            return cached
        if info is None:
            entry = (0, M.TypedMask.empty((record.height, record.width)), None, None)
        else:
            try:
                labels, types, revision = self.store.mask_labels(record.id)
            except StoreError as exc:
                raise ApiError(500, str(exc)) from None
            entry = (revision, M.TypedMask(labels, tuple(types)), info.defect_type, info.source)
        self._masks.put(record.id, entry)
        return entry

    # ------------------------------------------------------------------ settings
    def defect_types(self) -> list[str]:
        """The dataset's defect types: the ones added in the app plus those already used by mask regions
        (without the reserved names, which no region can be painted with)."""
        types: list[str] = []
        try:
            path = self.settings_path
            if path.is_file():
                data = json.loads(path.read_text(encoding="utf-8"))
                types = [t for t in data.get("defect_types", []) if isinstance(t, str)]
        except (OSError, ValueError, AttributeError, StoreError):  # unreadable or outside the dataset: ignored
            types = []
        for t in self.store.defect_types():
            if t not in types:
                types.append(t)
        return [t for t in types if t not in RESERVED_TYPES] or [DEFAULT_DEFECT_TYPE]

    @staticmethod
    def _check_type(name: Any, key: str = "defect_type") -> str:
        """A defect type a region may be painted with (a safe name, not reserved); else ApiError 400."""
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, f"'{key}' must be a non-empty string")
        name = name.strip()
        try:
            check_name("defect type", name)
        except StoreError as exc:
            raise ApiError(400, str(exc)) from None
        if name in RESERVED_TYPES:
            raise ApiError(400, f"defect type {name!r} is reserved ({' and '.join(RESERVED_TYPES)} are not region types)")
        return name

    def add_defect_type(self, name: Any) -> dict[str, Any]:
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "defect type must be a non-empty string")
        name = self._check_type(name, "name")
        self._require_writable("add a defect type")
        with self._lock:
            types = self.defect_types()
            if name not in types:
                types.append(name)
            try:
                atomic_write(self.settings_path, (json.dumps({"defect_types": types}, indent=2) + "\n").encode())
            except StoreError as exc:
                raise ApiError(500, str(exc)) from None
        return {"defect_types": types}

    # ------------------------------------------------------------------ index
    def index(self) -> dict[str, Any]:
        """Parts (label status), captures (pose, mask state) and the dataset's settings."""
        parts = [
            {
                "part_id": p.part_id,
                "label": p.label,
                "n_captures": p.n_captures,
                "n_masked_poses": p.n_masked_poses,
                "labelled": p.labelled,
            }
            for p in self.store.parts()
        ]
        captures = []
        infos = self.store.mask_infos()  # one query for every capture's mask row, not one per capture
        for rec in self.store.captures():
            info = infos.get(rec.id)
            captures.append(
                {
                    "id": rec.id,
                    "campaign": rec.campaign,
                    "part_id": rec.part_id,
                    "pose_id": rec.pose_id,
                    "width": rec.width,
                    "height": rec.height,
                    "revision": info.revision if info else 0,
                    "area_px": info.area_px if info else 0,
                    "defect_type": info.defect_type if info else None,
                    "types": list(info.types) if info else [],
                    "has_proposal": rec.id in self._proposals,
                }
            )
        return {
            "dataset": Path(self.store.root).name,
            "parts": parts,
            "captures": captures,
            "defect_types": self.defect_types(),
            "review": self.score_provider is not None,
            "review_model": getattr(self.score_provider, "name", None),
            "superpixel_size_px": self.superpixel_size_px,
            "read_only": self.read_only,
        }

    # ------------------------------------------------------------------ images and superpixels
    def image_png(self, capture_id: Any) -> bytes:
        record = self.capture(capture_id)
        png = self._pngs.get(record.id)
        if png is None:
            png = display_png(self.image(record))
            self._pngs.put(record.id, png)
        return png

    def part_region(self, record: CaptureRecord) -> np.ndarray:
        """Where the part is in the capture's image, (H, W) bool (estimated from the image)."""
        return M.estimate_part_region(self.image(record))

    def superpixels(self, record: CaptureRecord) -> np.ndarray:
        """SLIC labels of the capture (computed once, also by the prefetcher: a second caller waits)."""
        labels = self._superpixels.get(record.id)
        if labels is None:
            with self._key_lock(("superpixels", record.id)):
                labels = self._superpixels.get(record.id)
                if labels is None:
                    labels = M.compute_superpixels(self.image(record), self.part_region(record), self.superpixel_size_px)
                    self._superpixels.put(record.id, labels)
        return labels

    def superpixels_png(self, capture_id: Any) -> bytes:
        """The superpixel labels as an RGB PNG (``id = R + 256 G + 65536 B``, 0 = outside the part)."""
        record = self.capture(capture_id)
        png = self._superpixel_pngs.get(record.id)
        if png is None:
            png = rgb_png(M.encode_labels_rgb(self.superpixels(record)))
            self._superpixel_pngs.put(record.id, png)
        return png

    def prefetch(self, capture_ids: list[int]) -> None:
        """Load images and superpixels of the given captures in a background thread (next/previous).

        Every id must be a stored capture: an unknown one -> ApiError 404 naming it, and nothing is queued."""
        records = [self.capture(cid) for cid in capture_ids]

        def work() -> None:
            for cid in (r.id for r in records):
                if self._closed.is_set():
                    return
                try:
                    self.superpixels_png(cid)
                    self.image_png(cid)
                except Exception:  # noqa: BLE001 - prefetch is best effort; the real request reports errors
                    return

        threading.Thread(target=work, daemon=True, name="labelling-prefetch").start()

    # ------------------------------------------------------------------ masks
    def _history(self, capture_id: int, revision: int) -> M.EditHistory:
        """The capture's undo history, cleared when the stored revision moved on without us (another tab)."""
        history, at_revision = self._histories.get(capture_id, (None, -1))
        if history is None:
            history = M.EditHistory()
        elif at_revision != revision:
            history.clear()
        self._histories[capture_id] = (history, revision)
        return history

    def mask_state(self, capture_id: Any) -> dict[str, Any]:
        """The stored mask of a capture (typed wire patch of the whole image), its revision, row defect
        type (one type, ``combined`` or None), region types, undo state and pending carried proposal."""
        record = self.capture(capture_id)
        revision, typed, defect_type, source = self._mask_entry(record)
        history = self._history(record.id, revision)
        proposal = self._proposals.get(record.id)
        return {
            "capture_id": record.id,
            "width": record.width,
            "height": record.height,
            "revision": revision,
            "defect_type": defect_type,
            "types": list(typed.types),
            "source": source,
            "area_px": int(np.count_nonzero(typed.labels)),
            "mask": encode_patch(typed),
            "can_undo": history.can_undo,
            "can_redo": history.can_redo,
            "proposal": None if proposal is None else {"mask": encode_patch(proposal[0]), "from": proposal[1]},
            "part_label": self.store.part_label(record.part_id),
        }

    def _key_lock(self, key: Any) -> threading.Lock:
        with self._lock:
            return self._edit_locks.setdefault(key, threading.Lock())

    def _edit_lock(self, capture_id: int) -> threading.Lock:
        return self._key_lock(("edit", capture_id))

    def edit(self, capture_id: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        """Apply one edit to the stored mask and store the result; returns the changed patch.

        ``body``: ``{"op": ..., "base_revision": int, "defect_type": str, ...}`` with ops
        ``brush`` / ``erase`` (``points`` [[x, y], ...], ``radius`` px), ``superpixel`` (``points``,
        ``value`` true | false | "toggle"), ``polygon`` (``points``, ``value``), ``flood`` (``seed`` [x, y],
        ``tolerance`` grey levels, ``value``), ``clear``, ``set_type`` (every region gets ``defect_type``),
        ``accept_proposal``, ``undo``, ``redo``. Painting (brush, superpixel/polygon/flood with a true
        value) gives its pixels ``defect_type`` (default: the mask's only type, else the dataset's first),
        re-typing pixels of another type; erase and removals clear pixels whatever their type.
        A ``base_revision`` other than the stored one -> 409 (another tab saved in between).
        An edit that changes no pixel's type (a brush stroke entirely outside the image, erasing nothing, ...)
        stores nothing: 200 with ``"changed": false`` and the same revision. The one exception is ``clear`` on
        a capture without a mask, which stores an empty mask ("looked at, no defect here").
        A store open read-only -> 403.
        """
        record = self.capture(capture_id)
        self._require_writable("save a mask edit")
        op = body.get("op")
        if not isinstance(op, str):
            raise ApiError(400, "edit needs an 'op' string")
        base = body.get("base_revision")
        if not isinstance(base, int) or isinstance(base, bool):
            raise ApiError(400, "edit needs an integer 'base_revision' (the revision the edit is based on)")
        with self._edit_lock(record.id):
            revision, typed, stored_type, _ = self._mask_entry(record)
            if base != revision:
                raise ApiError(
                    409,
                    f"the mask of capture {record.id} was changed elsewhere (now revision {revision}, "
                    f"this edit is based on {base}): reloaded, please redo the edit",
                )
            history = self._history(record.id, revision)
            defect_type = self._paint_type(body, typed)
            new = self._apply(op, record, typed, body, history, defect_type)
            if new is None or (new.same_as(typed) and not (op == "clear" and revision == 0)):
                if op == "accept_proposal":
                    self._proposals.pop(record.id, None)  # accepted: it adds nothing to the stored mask
                return self._edit_reply(record, revision, typed, typed, stored_type, history, changed=False)
            if op not in ("undo", "redo"):
                history.record(typed, new)
            if new.labels.any() and self.store.part_label(record.part_id) == "good":
                self.store.set_part_label(record.part_id, "defective")
            try:
                new_revision = self.store.set_mask_labels(record.id, new.labels, new.types, "human", revision=revision)
            except StoreError as exc:
                self._masks.pop(record.id)
                history.clear()
                status = 409 if "changed since revision" in str(exc) else 400
                raise ApiError(status, str(exc)) from None
            row_type = row_defect_type(new.types, "good")  # what set_mask_labels stored
            self._masks.put(record.id, (new_revision, new, row_type, "human"))
            self._histories[record.id] = (history, new_revision)
            if op == "accept_proposal":
                self._proposals.pop(record.id, None)
            return self._edit_reply(record, new_revision, typed, new, row_type, history, changed=True)

    def _paint_type(self, body: Mapping[str, Any], typed: M.TypedMask) -> str:
        """The defect type an edit paints with: ``body["defect_type"]``, else the mask's only type, else
        the dataset's first type. Invalid or reserved names -> ApiError 400."""
        if body.get("defect_type") is not None:
            return self._check_type(body.get("defect_type"))
        if len(typed.types) == 1 and typed.types[0] not in RESERVED_TYPES:
            return typed.types[0]
        return self.defect_types()[0]

    def _edit_reply(self, record: CaptureRecord, revision: int, before: M.TypedMask, after: M.TypedMask,
                    row_type: str | None, history: M.EditHistory, changed: bool) -> dict[str, Any]:
        """The answer to an edit: the typed patch of the pixels whose type changed, the mask's types and
        row defect type, area, undo state and the part's labelling status."""
        box = M.typed_changed_bbox(before, after)
        return {
            "capture_id": record.id,
            "revision": revision,
            "changed": changed,
            "patch": None if box is None else encode_patch(after, box),
            "types": list(after.types),
            "defect_type": row_type,
            "area_px": int(np.count_nonzero(after.labels)),
            "can_undo": history.can_undo,
            "can_redo": history.can_redo,
            "part": self._part_dict(record.part_id),
            "has_proposal": record.id in self._proposals,
        }

    def _part_dict(self, part_id: str) -> dict[str, Any]:
        p = self.store.part(part_id)
        return {"part_id": p.part_id, "label": p.label, "n_captures": p.n_captures,
                "n_masked_poses": p.n_masked_poses, "labelled": p.labelled}

    def _points(self, body: Mapping[str, Any], key: str = "points") -> np.ndarray:
        pts = body.get(key)
        if not isinstance(pts, list) or not pts or len(pts) > MAX_POINTS:
            raise ApiError(400, f"'{key}' must be a list of 1..{MAX_POINTS} [x, y] pairs")
        try:
            arr = np.asarray(pts, dtype=np.float64)
        except (TypeError, ValueError):
            raise ApiError(400, f"'{key}' must contain numeric [x, y] pairs") from None
        if arr.ndim != 2 or arr.shape[1] != 2 or not np.all(np.isfinite(arr)):
            raise ApiError(400, f"'{key}' must contain finite numeric [x, y] pairs")
        return arr

    @staticmethod
    def _number(body: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
        value = body.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not (lo <= float(value) <= hi):
            raise ApiError(400, f"'{key}' must be a number in [{lo}, {hi}], got {value!r}")
        return float(value)

    @staticmethod
    def _value(body: Mapping[str, Any], allow_toggle: bool = False) -> bool | str:
        value = body.get("value", True)
        if isinstance(value, bool) or (allow_toggle and value == "toggle"):
            return value
        choices = "true, false or \"toggle\"" if allow_toggle else "true or false"
        raise ApiError(400, f"'value' must be {choices}, got {value!r}")

    def _apply(self, op: str, record: CaptureRecord, typed: M.TypedMask, body: Mapping[str, Any],
               history: M.EditHistory, defect_type: str) -> M.TypedMask | None:
        """The mask after edit ``op`` (see :meth:`edit`), or None when undo/redo has nothing to do."""
        shape = typed.shape
        try:
            if op in ("brush", "erase"):
                radius = self._number(body, "radius", 0.5, 2048)
                region = M.stroke_footprint(shape, self._points(body), radius)
                return typed.edit(region, op == "brush", defect_type)
            if op == "superpixel":
                # toggle: a click on a superpixel mostly of the selected type removes it, else paints it
                selected = typed.labels == (typed.types.index(defect_type) + 1) if defect_type in typed.types \
                    else np.zeros(shape, dtype=bool)
                region, add = M.superpixel_region(selected, self.superpixels(record), self._points(body),
                                                  self._value(body, True))
                return typed.edit(region, add, defect_type)
            if op == "polygon":
                return typed.edit(M.polygon_region(shape, self._points(body)), bool(self._value(body)), defect_type)
            if op == "flood":
                seed = self._points({"seed": [body.get("seed")]}, "seed")[0]
                tolerance = self._number(body, "tolerance", 0, 65535)
                region = M.flood_region(self.image(record), seed, tolerance)
                return typed.edit(region, bool(self._value(body)), defect_type)
            if op == "clear":
                return M.TypedMask.empty(shape)
            if op == "set_type":
                if not isinstance(body.get("defect_type"), str):
                    raise ApiError(400, "set_type needs a 'defect_type' string")
                return typed.retype(defect_type)  # stored again with the new type (a new revision)
            if op == "accept_proposal":
                proposal = self._proposals.get(record.id)
                if proposal is None:
                    raise ApiError(409, f"capture {record.id} has no carried mask to accept")
                return typed.overlay(proposal[0])
            if op == "undo":
                return history.undo(typed)
            if op == "redo":
                return history.redo(typed)
        except M.MaskEditError as exc:
            raise ApiError(400, str(exc)) from None
        raise ApiError(400, f"unknown edit op {op!r}")

    # ------------------------------------------------------------------ parts
    def set_part_label(self, part_id: Any, body: Mapping[str, Any]) -> dict[str, Any]:
        """Mark a part good / defective / unlabelled. Good with masked poses -> 409 unless ``clear_masks``."""
        self._require_writable("change a part label")
        label = body.get("label")
        if label not in ("good", "defective", "unlabelled"):
            raise ApiError(400, f"'label' must be good, defective or unlabelled, got {label!r}")
        clear = body.get("clear_masks", False)
        if not isinstance(clear, bool):
            raise ApiError(400, "'clear_masks' must be true or false")
        if not isinstance(part_id, str) or not any(p.part_id == part_id for p in self.store.parts()):
            raise ApiError(404, f"unknown part {part_id!r}")
        try:
            self.store.set_part_label(part_id, label, clear_masks=clear)
        except StoreError as exc:
            raise ApiError(409, str(exc)) from None
        if clear:
            for rec in self.store.captures(part_id=part_id):
                self._masks.pop(rec.id)
                self._histories.pop(rec.id, None)
                self._proposals.pop(rec.id, None)
        return self._part_dict(part_id)

    # ------------------------------------------------------------------ carry-over
    def geometry(self, record: CaptureRecord) -> CarryGeometry | None:
        if self._geometry is None or isinstance(self._geometry, CarryGeometry):
            return self._geometry
        return self._geometry(record)

    def carry(self, capture_id: Any, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Warp the capture's stored mask, with its region types, to the other poses of its part as
        proposals (nothing stored; nearest-neighbour warp of the type label map).

        ``body["targets"]``: optional list of capture ids (default: every other capture of the part).
        Returns ``{"proposals": [{"capture_id", "area_px"}], "source": ...}``.
        """
        record = self.capture(capture_id)
        geometry = self.geometry(record)
        if geometry is None:
            raise ApiError(409, "carry-over needs the camera calibration and the table plane; none is known for "
                                f"capture {record.id} (start `cell label` with --calibration)")
        _, typed, _, _ = self._mask_entry(record)
        if not typed.labels.any():
            raise ApiError(409, f"capture {record.id} has no mask to carry")
        siblings = [r for r in self.store.captures(part_id=record.part_id) if r.id != record.id]
        targets = (body or {}).get("targets")
        if targets is not None:
            if not isinstance(targets, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in targets):
                raise ApiError(400, "'targets' must be a list of capture ids")
            wanted = set(targets)
            siblings = [r for r in siblings if r.id in wanted]
        out = []
        for target in siblings:
            try:
                warped = carry_labels(typed.labels, geometry, record.actual_pose, target.actual_pose)
            except CarryError as exc:
                raise ApiError(409, str(exc)) from None
            self._proposals[target.id] = (M.TypedMask(warped, typed.types).compact(), record.id)
            out.append({"capture_id": target.id, "pose_id": target.pose_id, "area_px": int(np.count_nonzero(warped))})
        return {"from": record.id, "proposals": out, "geometry": geometry.source}

    def proposal(self, capture_id: Any) -> M.TypedMask | None:
        """The pending carried mask of a capture with its region types, or None."""
        entry = self._proposals.get(self.capture(capture_id).id)
        return None if entry is None else entry[0]

    def discard_proposal(self, capture_id: Any) -> dict[str, Any]:
        record = self.capture(capture_id)
        self._proposals.pop(record.id, None)
        return {"capture_id": record.id, "has_proposal": False}

    # ------------------------------------------------------------------ review
    def _require_review(self) -> ScoreProvider:
        if self.score_provider is None:
            raise ApiError(409, "review mode needs a trained model: start `cell label` with --model MODEL_DIR")
        return self.score_provider

    def anomaly_map(self, record: CaptureRecord) -> np.ndarray:
        provider = self._require_review()
        amap = self._maps.get(record.id)
        if amap is None:
            amap = np.asarray(provider.anomaly_map(self.image(record)), dtype=np.float32)
            if amap.shape != (record.height, record.width):
                raise ApiError(500, f"model returned a {amap.shape} map for a {record.height}x{record.width} image")
            self._maps.put(record.id, amap)
        return amap

    def heatmap_png(self, capture_id: Any) -> bytes:
        record = self.capture(capture_id)
        provider = self._require_review()
        return rgb_png(heatmap_rgba(self.anomaly_map(record), provider.threshold))

    def prediction(self, capture_id: Any) -> dict[str, Any]:
        record = self.capture(capture_id)
        provider = self._require_review()
        amap = self.anomaly_map(record)
        return {"capture_id": record.id, "threshold": provider.threshold, "max_score": float(amap.max()),
                "mask": encode_patch(amap > provider.threshold)}

    def start_review(self) -> dict[str, Any]:
        """Score every capture in a background thread (idempotent); poll :meth:`review_status`."""
        self._require_review()
        with self._lock:
            if self._review_thread is None or not self._review_thread.is_alive():
                self._review_error = None
                self._review_thread = threading.Thread(target=self._review_all, daemon=True, name="labelling-review")
                self._review_thread.start()
        return self.review_status()

    def _review_all(self) -> None:
        provider = self.score_provider
        assert provider is not None
        try:
            for record in self.store.captures():
                if self._closed.is_set():
                    return
                _, typed, _, _ = self._mask_entry(record)
                self._review[record.id] = disagreement(record.id, self.anomaly_map(record), provider.threshold,
                                                       typed.mask)
        except Exception as exc:  # noqa: BLE001 - reported to the user through review_status
            self._review_error = f"{type(exc).__name__}: {exc}"

    def review_status(self) -> dict[str, Any]:
        """Ranking so far (largest disagreement first), with progress; masks edited since are re-compared."""
        provider = self._require_review()
        # "running" first, then the snapshot: a snapshot taken after the thread ended is complete, so a reply
        # saying "not running" never carries a partial ranking (the other order raced with the thread's end).
        running = self._review_thread is not None and self._review_thread.is_alive()
        items = list(self._review.values())
        records = {rec.id: rec for rec in self.store.captures()}
        infos = self.store.mask_infos()  # one query for every mask row, not one per ranked capture
        total = len(records)
        ranked = []
        for item in rank_disagreements(items):
            record = records.get(item.capture_id) or self.store.get_capture(item.capture_id)
            _, typed, _, _ = self._mask_entry_of(record, infos.get(record.id))
            amap = self._maps.get(record.id)  # a map evicted from the cache keeps its scored item
            ranked.append(item if amap is None else disagreement(record.id, amap, provider.threshold, typed.mask))
        ranked = rank_disagreements(ranked)
        return {"done": len(items), "total": total, "running": running, "error": self._review_error,
                "threshold": provider.threshold, "ranking": [d.as_dict() for d in ranked]}
