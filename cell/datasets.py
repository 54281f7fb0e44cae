"""Labelled images from a capture store or an MVTec-layout folder, for training and evaluation.

A :class:`LabelledImage` loads its pixels lazily, so evaluating a large store never holds every capture in
memory. Image labels: 0 good, 1 defective (the image shows a defect).

From a capture store, per capture:
* part labelled ``good``                       -> label 0
* part ``defective`` and a non-empty mask      -> label 1 (defect type from the mask)
* part ``defective`` and a stored empty mask   -> label 0 (this pose does not see the defect)
* part ``defective`` without a mask, or part ``unlabelled`` -> left out (unknown)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from acquisition.store import CaptureStore
from cell.errors import CellError
from detectors.errors import ImageSetError
from detectors.imagesets import read_image_file

GOOD = "good"


@dataclass
class LabelledImage:
    """One image with its truth. ``load()`` -> pixels (H, W) or (H, W, 3) uint8/uint16;
    ``load_mask()`` -> (H, W) bool or None (None = no pixel truth; treated as all-good for label 0)."""

    source: str
    label: int
    defect_type: str
    load: Callable[[], np.ndarray]
    load_mask: Callable[[], Optional[np.ndarray]]
    sha256: Optional[str] = None
    part_id: Optional[str] = None
    pose_id: Optional[str] = None
    capture_id: Optional[int] = None
    part_label: Optional[str] = None  # the store's part label; None for folder datasets
    path: Optional[Path] = None  # the image file, for folder datasets

    def file_sha256(self) -> Optional[str]:
        """The sha256 of the image's bytes: from the store's record, or hashed from the file."""
        if self.sha256 is None and self.path is not None:
            import hashlib

            self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
        return self.sha256


def is_capture_store(path: str | Path) -> bool:
    """True when ``path`` is a capture store folder (it has ``store.json``)."""
    return (Path(path) / "store.json").is_file()


def is_mvtec_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / "train").is_dir() or (path / "test").is_dir()


# --- MVTec layout ----------------------------------------------------------------------------------
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _mvtec_mask_loader(mask_path: Optional[Path], image_path: Path) -> Callable[[], Optional[np.ndarray]]:
    def load() -> Optional[np.ndarray]:
        if mask_path is None:
            return None
        if not mask_path.is_file():
            raise ImageSetError(f"{mask_path}: mask of {image_path.name} is missing")
        import cv2

        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise ImageSetError(f"{mask_path}: not a readable mask image")
        return mask > 127

    return load


def _mvtec_image_loader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: read_image_file(path)[0]


def mvtec_images(root: str | Path, split: str) -> list[LabelledImage]:
    """Every image of ``root/<split>/<type>/`` (sorted), with masks from ``root/ground_truth``."""
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise ImageSetError(f"{split_dir}: missing (expected an MVTec-layout folder with {split}/)")
    items: list[LabelledImage] = []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if split == "train" and folder.name != GOOD:
            continue
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            is_good = folder.name == GOOD
            mask_path = None if is_good else root / "ground_truth" / folder.name / f"{path.stem}_mask.png"
            items.append(
                LabelledImage(
                    source=str(path.relative_to(root.parent)),
                    label=0 if is_good else 1,
                    defect_type=folder.name,
                    load=_mvtec_image_loader(path),
                    load_mask=_mvtec_mask_loader(mask_path, path),
                    path=path,
                )
            )
    if not items:
        raise ImageSetError(f"{split_dir}: no images found")
    return items


# --- capture store ---------------------------------------------------------------------------------
def store_images(
    store: CaptureStore,
    campaigns: Optional[Sequence[str]] = None,
    part_labels: Sequence[str] = ("good", "defective"),
) -> list[LabelledImage]:
    """The labelled captures of ``store`` (optionally of some campaigns), ordered by capture id."""
    known = {c.name for c in store.campaigns()}
    for name in campaigns or ():
        if name not in known:
            raise CellError(
                f"{store.root}: no campaign named '{name}' (campaigns: {', '.join(sorted(known)) or 'none'})"
            )
    wanted_campaigns = set(campaigns) if campaigns else None
    labels = {p.part_id: p.label for p in store.parts()}
    masks = store.mask_infos()  # one query for all captures
    items: list[LabelledImage] = []
    for record in store.captures():
        if wanted_campaigns is not None and record.campaign not in wanted_campaigns:
            continue
        part_label = labels.get(record.part_id, "unlabelled")
        if part_label not in part_labels:
            continue
        info = masks.get(record.id)
        if part_label == "good":
            label, defect_type = 0, GOOD
        elif info is None:
            continue  # defective part, this pose not labelled yet
        elif info.area_px > 0:
            label, defect_type = 1, info.defect_type
        else:
            label, defect_type = 0, GOOD
        items.append(
            LabelledImage(
                source=f"{record.campaign}/{record.part_id}/{record.pose_id}",
                label=label,
                defect_type=defect_type,
                load=(lambda r=record: store.load_image(r)),
                load_mask=(lambda cid=record.id, has=info is not None: store.get_mask(cid)[0] if has else None),
                sha256=record.sha256,
                part_id=record.part_id,
                pose_id=record.pose_id,
                capture_id=record.id,
                part_label=part_label,
            )
        )
    return items


@contextmanager
def open_images(
    data: str | Path, split: str, campaigns: Optional[Sequence[str]] = None
) -> Iterator[list[LabelledImage]]:
    """Labelled images of a capture store (``campaigns`` filter; ``split`` unused) or of an MVTec folder's
    ``split``. A store stays open until the ``with`` block ends, so the lazy loaders work inside it."""
    data = Path(data)
    if not data.exists():
        raise CellError(f"{data}: no such dataset folder")
    if is_capture_store(data):
        with CaptureStore(data, read_only=True) as store:  # training and evaluation only read
            yield store_images(store, campaigns)
    elif is_mvtec_folder(data):
        yield mvtec_images(data, split)
    else:
        raise CellError(f"{data}: neither a capture store (store.json) nor an MVTec-layout folder (train/, test/)")


def split_by_part(
    items: Sequence[LabelledImage], fraction: float, seed: int
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Hold out ``fraction`` of the parts (all their images together; images without a part id count as
    their own part) -> (kept, held_out). At least one part is held out and one kept when there are two."""
    keys = sorted({item.part_id or item.source for item in items})
    if len(keys) < 2:
        raise CellError(f"{len(keys)} part(s) on the training side: too few to hold some out for the threshold")
    rng = np.random.default_rng(seed)
    n_out = min(len(keys) - 1, max(1, int(round(fraction * len(keys)))))
    held = set(rng.permutation(keys)[:n_out].tolist())
    kept = [i for i in items if (i.part_id or i.source) not in held]
    out = [i for i in items if (i.part_id or i.source) in held]
    return kept, out
