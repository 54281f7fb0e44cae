"""Export of a capture store to the MVTec AD folder layout.

Written layout (``<stem>`` = ``<campaign>_<part_id>_<pose_id>``)::

    train/good/<stem>.png                 captures of good parts in the training split
    test/good/<stem>.png                  captures of good parts in the test split, and captures of
                                          defective parts whose stored mask is empty (defect not in view)
    test/<defect_type>/<stem>.png         captures of defective parts with a non-empty mask: <defect_type>
                                          is the mask's one region type, or ``combined`` when its regions
                                          have several types
    ground_truth/<defect_type>/<stem>_mask.png   their binary masks, single channel, exactly 0 or 255
                                          (nothing else is written under ground_truth/: MVTec readers
                                          expect exactly one <stem>_mask.png per test image there)
    region_types.npz                      only when some image is ``combined``: one (H, W) uint8 per-pixel
                                          type label map per such image, keyed by its <stem> (0 = no defect,
                                          k = the k-th entry of the image's ``types`` in export.json);
                                          ``numpy.load(path)[stem]``
    export.json                           provenance: store, campaigns, split, every file's source row and
                                          region types

Nothing but the MVTec layout is written as an image: readers such as anomalib's ``MVTecAD`` take EVERY
image file under the category folder (``<split>/<label>/<file>`` by its last three path parts) and pair
the sorted defective test images with the sorted ``ground_truth`` images, so an extra image folder breaks
them. That is why the type label maps are one ``.npz`` file (not images) beside ``export.json``.

Good parts are split by PART (all poses of a part land in the same split, so no sheet is both trained
on and tested): a seeded random fraction of parts goes to test, or, with ``train_campaigns``, good parts
captured in those campaigns train and the others test. Unlabelled parts, defective parts without any
masked pose, and unmasked captures of defective parts are skipped and counted in the report.
The export is written into a temporary sibling folder and renamed into place: an interrupted export
leaves no half-written dataset.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from acquisition.errors import StoreError
from acquisition.store import _files
from acquisition.store.records import CaptureRecord, ExportReport, MaskInfo

if TYPE_CHECKING:
    from acquisition.store.store import CaptureStore

EXPORT_MARKER = "export.json"
#: File (numpy .npz, one uint8 array per stem) of the per-pixel type label maps of the images whose regions
#: have several defect types. Not an image file: MVTec readers take every image under the category folder.
REGION_TYPES_FILE = "region_types.npz"


def _split_good_parts(part_ids: list[str], fraction: float, seed: int) -> set[str]:
    """The good part ids that go to the test split (seeded, independent of insertion order)."""
    ordered = sorted(part_ids)
    n_test = int(round(fraction * len(ordered)))
    if fraction > 0 and n_test == 0 and len(ordered) >= 2:
        n_test = 1
    order = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[i] for i in order[:n_test]}


def export_mvtec(
    store: "CaptureStore",
    out_dir: str | Path,
    campaign: Optional[str | Sequence[str]] = None,
    *,
    test_good_fraction: float = 0.2,
    seed: int = 0,
    train_campaigns: Optional[Sequence[str]] = None,
    overwrite: bool = False,
) -> ExportReport:
    """Write the labelled captures of ``store`` (optionally of some campaigns) as an MVTec AD folder.

    ``test_good_fraction`` in [0, 1): share of good parts held out for test/good (seeded by ``seed``);
    ignored when ``train_campaigns`` is given. ``out_dir`` must not exist unless ``overwrite`` is True
    and it is a previous export (has export.json). Every source image's sha256 is checked while copying.
    Returns an :class:`ExportReport`; nothing exportable, a corrupt source or a write failure -> StoreError.
    """
    out_dir = Path(out_dir)
    if not 0.0 <= float(test_good_fraction) < 1.0:
        raise StoreError(f"test_good_fraction = {test_good_fraction!r}: must be in [0, 1)")
    campaigns = [campaign] if isinstance(campaign, str) else (list(campaign) if campaign is not None else None)
    known = {c.name for c in store.campaigns()}
    for name in (campaigns or []) + list(train_campaigns or []):
        if name not in known:
            raise StoreError(f"unknown campaign {name!r} in {store.root}")
    if out_dir.exists():
        if not overwrite:
            raise StoreError(f"{out_dir}: already exists (choose another folder or overwrite it explicitly)")
        if not (out_dir / EXPORT_MARKER).is_file():
            raise StoreError(f"{out_dir}: exists and is not a previous export (no {EXPORT_MARKER}); refusing to replace it")

    captures = [c for c in store.captures() if campaigns is None or c.campaign in campaigns]
    labels = {p.part_id: p for p in store.parts()}
    report = ExportReport(out_dir=str(out_dir))
    plan: list[tuple[CaptureRecord, str, Optional[MaskInfo]]] = []  # (capture, image dir, its defect mask)

    good_parts = sorted({c.part_id for c in captures if labels[c.part_id].label == "good"})
    if train_campaigns is not None:
        train_set = set(train_campaigns)
        is_train = lambda c: c.campaign in train_set  # noqa: E731
    else:
        test_parts = _split_good_parts(good_parts, float(test_good_fraction), seed)
        is_train = lambda c: c.part_id not in test_parts  # noqa: E731

    masks = store.mask_infos()  # one query for all captures
    for cap in captures:
        part = labels[cap.part_id]
        if part.label == "good":
            plan.append((cap, "train/good" if is_train(cap) else "test/good", None))
        elif part.label == "unlabelled":
            report.skipped["unlabelled"] = report.skipped.get("unlabelled", 0) + 1
        elif not part.labelled:
            report.skipped["defective_part_without_masks"] = report.skipped.get("defective_part_without_masks", 0) + 1
        else:
            info = masks.get(cap.id)
            if info is None:
                report.skipped["defective_pose_without_mask"] = report.skipped.get("defective_pose_without_mask", 0) + 1
            elif info.area_px == 0:
                plan.append((cap, "test/good", None))
            else:
                plan.append((cap, f"test/{info.defect_type}", info))
    if not plan:
        raise StoreError(f"{store.root}: nothing to export (no labelled parts{' in ' + ', '.join(campaigns) if campaigns else ''})")
    if not any(d == "train/good" for _, d, _ in plan):
        raise StoreError(f"{store.root}: no good part in the training split: label some parts good first")

    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    files = []
    type_maps: dict[str, np.ndarray] = {}
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        for cap, subdir, info in plan:
            data = _read_checked(store.image_path(cap), cap.sha256)
            image_rel = f"{subdir}/{cap.stem}.png"
            _write(tmp / image_rel, data)
            entry = {"file": image_rel, "capture_id": cap.id, "campaign": cap.campaign, "part_id": cap.part_id,
                     "pose_id": cap.pose_id, "sha256": cap.sha256, "mask": None}
            if info is not None:
                entry.update(_export_mask(store, tmp, cap, subdir.split("/", 1)[1], info, type_maps))
            files.append(entry)
            report.counts[subdir] = report.counts.get(subdir, 0) + 1
        if type_maps:
            _write(tmp / REGION_TYPES_FILE, _npz_bytes(type_maps))
        report.train_parts = sorted({c.part_id for c, d, _ in plan if d == "train/good"})
        report.test_parts = sorted({c.part_id for c, d, _ in plan if d != "train/good"})
        meta = {
            "store": str(store.root.resolve()),
            "campaigns": campaigns if campaigns is not None else sorted(known),
            "split": {"train_campaigns": list(train_campaigns)} if train_campaigns is not None
            else {"test_good_fraction": float(test_good_fraction), "seed": int(seed)},
            "counts": report.counts,
            "skipped": report.skipped,
            "files": files,
        }
        _write(tmp / EXPORT_MARKER, (json.dumps(meta, indent=2) + "\n").encode())
        _files.fsync_dir(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
        _files.fsync_dir(out_dir.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        where = exc.filename or out_dir
        raise StoreError(f"cannot write export {where}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _export_mask(store: "CaptureStore", tmp: Path, cap: CaptureRecord, defect: str, info: MaskInfo,
                 type_maps: dict[str, np.ndarray]) -> dict:
    """Copy a capture's binary mask to ``ground_truth/<defect>/<stem>_mask.png`` (sha256-checked) and, when
    its regions have several types, put its type label map into ``type_maps[stem]`` (for
    ``region_types.npz``; read through the store, which checks the file against its mask).

    Returns the export.json fields ``mask``, ``types`` (region types; label k = types[k-1]) and
    ``types_map`` (``{"file": "region_types.npz", "key": stem}``, None for a one-type mask).
    """
    gt_rel = f"ground_truth/{defect}/{cap.stem}_mask.png"
    _write(tmp / gt_rel, _read_checked(store.path_of(info.relpath, f"mask of capture {cap.id}"), info.sha256))
    types_map = None
    if info.types_relpath is not None:
        _read_checked(store.path_of(info.types_relpath, f"type label map of capture {cap.id}"), info.types_sha256 or "")
        labels, _, _ = store.mask_labels(cap.id)
        type_maps[cap.stem] = labels
        types_map = {"file": REGION_TYPES_FILE, "key": cap.stem}
    return {"mask": gt_rel, "types": list(info.types), "types_map": types_map}


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """A compressed numpy .npz of ``arrays`` (name -> array), as bytes (no pickles)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _read_checked(path: Path, sha: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc} (run `cell dataset info` to verify the store)") from exc
    if _files.sha256_bytes(data) != sha:
        raise StoreError(f"{path}: content does not match its recorded sha256 (the store is damaged)")
    return data


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
