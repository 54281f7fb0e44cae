"""Image sets: what detectors train and are evaluated on.

A :class:`Sample` is one image ``(3, H, W)`` float32 in [0, 1] RGB, its defect mask ``(H, W)`` bool (or None),
its label (0 good, 1 defective), defect type ("good" for good images), a source id and the sha256 of the
source file (or None). An :class:`ImageSet` is a ``Sequence[Sample]`` with ``labels``, ``stack_images()``,
``stack_masks()``, ``batches()`` and ``provenance()``.

* :class:`MVTecImageSet` reads an MVTec-AD-layout folder lazily (``train/good/*``, ``test/<type>/*``,
  ``ground_truth/<type>/<stem>_mask.png``); grayscale files become 3 identical channels; ``image_size``
  resizes images bilinearly (antialiased) and masks with nearest neighbour to a square or (H, W) size.
* :class:`InMemoryImageSet` wraps tensors already in memory (captures from a store, synthetic images).
* :func:`split_holdout` carves a held-out part (stratified by label) with a seed.

Every problem with the data is an :class:`ImageSetError` whose one-line message names the file.
Empty sets may exist (a filter can produce one), but ``stack_images()`` on them raises, so training
on an empty set fails with :class:`ImageSetError`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union, overload

import numpy as np
import torch
import torch.nn.functional as F

from detectors.errors import DetectorConfigError, ImageSetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"
SizeSpec = Union[int, Sequence[int], None]


@dataclass(frozen=True)
class Sample:
    """One image: ``image`` (3, H, W) float32 in [0, 1] RGB; ``mask`` (H, W) bool or None;
    ``label`` 0 good / 1 defective; ``defect_type`` ("good" for good); ``source`` id or path; ``sha256``."""

    image: torch.Tensor
    mask: Optional[torch.Tensor]
    label: int
    defect_type: str
    source: str
    sha256: Optional[str] = None


def check_images(images: Any, what: str = "images") -> torch.Tensor:
    """Validate a batch for ``Detector.predict``: a float tensor (B, 3, H, W); returns it as float32.

    Raises :class:`ImageSetError` naming the shape or dtype that is wrong.
    """
    if not isinstance(images, torch.Tensor):
        raise ImageSetError(f"{what}: expected a torch.Tensor (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ImageSetError(f"{what}: expected shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ImageSetError(
            f"{what}: expected 3 channels (RGB) in dim 1, got {images.shape[1]} (shape {tuple(images.shape)})"
        )
    if not images.is_floating_point():
        raise ImageSetError(f"{what}: expected float values in [0, 1], got dtype {images.dtype}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ImageSetError(f"{what}: empty batch of shape {tuple(images.shape)}")
    return images.float()


class ImageSet(Sequence[Sample]):
    """A sequence of :class:`Sample`. Subclasses implement ``__len__``, ``_meta(i)`` and ``_load(i)``."""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _meta(self, index: int) -> tuple[int, str, str]:  # pragma: no cover - abstract
        """(label, defect_type, source) of sample ``index`` without loading its pixels."""
        raise NotImplementedError

    def _load(self, index: int) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sha256(self, index: int) -> Optional[str]:
        return self._load(index).sha256

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> "ImageSet": ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.subset(range(len(self))[index])
        n = len(self)
        i = int(index)
        if i < -n or i >= n:
            raise IndexError(f"sample index {i} out of range for an image set of {n}")
        return self._load(i % n)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self._load(i)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64: 0 good, 1 defective."""
        return np.array([self._meta(i)[0] for i in range(len(self))], dtype=np.int64)

    @property
    def defect_types(self) -> list[str]:
        """Defect type of each sample ("good" for good ones)."""
        return [self._meta(i)[1] for i in range(len(self))]

    @property
    def sources(self) -> list[str]:
        """Source id / path of each sample."""
        return [self._meta(i)[2] for i in range(len(self))]

    def subset(self, indices: Sequence[int]) -> "ImageSet":
        """A view on the samples at ``indices`` (in that order)."""
        return _Subset(self, [int(i) for i in indices])

    def _require_nonempty(self, action: str) -> None:
        if len(self) == 0:
            raise ImageSetError(f"{self.describe()}: empty image set, nothing to {action}")

    def describe(self) -> str:
        """A short name of the set for messages."""
        return type(self).__name__

    def stack_images(self) -> torch.Tensor:
        """All images as one tensor (N, 3, H, W) float32; all must have the same size."""
        self._require_nonempty("stack")
        images = [s.image for s in self]
        _check_same_size(images, self.sources)
        return torch.stack(images)

    def stack_masks(self) -> torch.Tensor:
        """All masks as (N, H, W) bool; good samples without a mask count as all-False.

        Raises :class:`ImageSetError` for a defective sample without a mask.
        """
        self._require_nonempty("stack")
        masks = []
        for sample in self:
            if sample.mask is not None:
                masks.append(sample.mask.bool())
            elif sample.label == 0:
                masks.append(torch.zeros(sample.image.shape[-2:], dtype=torch.bool))
            else:
                raise ImageSetError(f"{sample.source}: defective sample has no mask")
        _check_same_size(masks, self.sources)
        return torch.stack(masks)

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Images in order, ``batch_size`` at a time, as (b, 3, H, W) float32 tensors."""
        self._require_nonempty("iterate")
        if batch_size < 1:
            raise DetectorConfigError(f"batch_size must be >= 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            chunk = [self._load(i).image for i in range(start, min(start + batch_size, len(self)))]
            _check_same_size(chunk, [self._meta(i)[2] for i in range(start, start + len(chunk))])
            yield torch.stack(chunk)

    def provenance(self) -> list[dict[str, Optional[str]]]:
        """``[{"source": ..., "sha256": ...}, ...]`` for every sample, in order."""
        return [{"source": self._meta(i)[2], "sha256": self._sha256(i)} for i in range(len(self))]

    def __repr__(self) -> str:
        labels = self.labels
        return f"{self.describe()}(n={len(self)}, good={int((labels == 0).sum())}, defective={int((labels == 1).sum())})"


class _Subset(ImageSet):
    def __init__(self, parent: ImageSet, indices: list[int]) -> None:
        n = len(parent)
        for i in indices:
            if not 0 <= i < n:
                raise IndexError(f"subset index {i} out of range for an image set of {n}")
        self.parent = parent
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def _meta(self, index: int) -> tuple[int, str, str]:
        return self.parent._meta(self.indices[index])

    def _load(self, index: int) -> Sample:
        return self.parent._load(self.indices[index])

    def _sha256(self, index: int) -> Optional[str]:
        return self.parent._sha256(self.indices[index])

    def describe(self) -> str:
        return f"subset of {self.parent.describe()}"


def _check_same_size(tensors: Sequence[torch.Tensor], sources: Sequence[str]) -> None:
    first = tuple(tensors[0].shape[-2:])
    for tensor, source in zip(tensors, sources):
        if tuple(tensor.shape[-2:]) != first:
            raise ImageSetError(
                f"{source}: size {tuple(tensor.shape[-2:])} differs from {first} of {sources[0]}; "
                f"set image_size to resize all images to one size"
            )


# ----------------------------------------------------------------------------------------------------------
# In-memory sets
# ----------------------------------------------------------------------------------------------------------
def _as_image_tensor(image: Any, source: str) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ImageSetError(f"{source}: expected an image of shape (3, H, W), got {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        return tensor.float().div_(255.0)
    if not tensor.is_floating_point():
        raise ImageSetError(f"{source}: expected float in [0, 1] or uint8 pixels, got dtype {tensor.dtype}")
    tensor = tensor.detach().float()
    if not torch.isfinite(tensor).all():
        raise ImageSetError(f"{source}: image holds NaN or infinite values")
    lo, hi = float(tensor.min()), float(tensor.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ImageSetError(f"{source}: pixel values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
    return tensor.clamp(0.0, 1.0)


class InMemoryImageSet(ImageSet):
    """Images held in memory.

    ``images``: (N, 3, H, W) float in [0, 1] (or uint8 0-255) tensor/array, or a sequence of (3, H, W) ones.
    ``masks``: (N, H, W) bool or a sequence of (H, W) bool / None. ``labels``: (N,) 0/1 (default all good).
    ``sources``: ids (default ``memory:<i>``). ``defect_types``: default "good" / "defect" by label.
    ``sha256s``: hashes of the source files when known (e.g. from a capture store), else None.
    An empty set is allowed; stacking it raises :class:`ImageSetError`.
    """

    def __init__(
        self,
        images: Any,
        masks: Any = None,
        labels: Any = None,
        sources: Optional[Sequence[str]] = None,
        defect_types: Optional[Sequence[str]] = None,
        sha256s: Optional[Sequence[Optional[str]]] = None,
    ) -> None:
        n = len(images)
        self._sources = [str(s) for s in sources] if sources is not None else [f"memory:{i}" for i in range(n)]
        self._check_length("sources", self._sources, n)
        self._images = [_as_image_tensor(images[i], self._sources[i]) for i in range(n)]
        if labels is None:
            self._labels = [0] * n
        else:
            self._labels = [int(v) for v in np.asarray(labels).reshape(-1)]
            self._check_length("labels", self._labels, n)
            bad = [v for v in self._labels if v not in (0, 1)]
            if bad:
                raise ImageSetError(f"labels must be 0 (good) or 1 (defective), got {bad[0]}")
        if defect_types is None:
            self._types = [GOOD if v == 0 else "defect" for v in self._labels]
        else:
            self._types = [str(t) for t in defect_types]
            self._check_length("defect_types", self._types, n)
        self._masks: list[Optional[torch.Tensor]] = [None] * n
        if masks is not None:
            self._check_length("masks", masks, n)
            for i in range(n):
                if masks[i] is None:
                    continue
                mask = torch.as_tensor(np.asarray(masks[i])) if not isinstance(masks[i], torch.Tensor) else masks[i]
                if tuple(mask.shape) != tuple(self._images[i].shape[-2:]):
                    raise ImageSetError(
                        f"{self._sources[i]}: mask shape {tuple(mask.shape)} does not match image "
                        f"{tuple(self._images[i].shape[-2:])}"
                    )
                self._masks[i] = mask.bool()
        self._sha = list(sha256s) if sha256s is not None else [None] * n
        self._check_length("sha256s", self._sha, n)

    @staticmethod
    def _check_length(name: str, values: Sequence[Any], n: int) -> None:
        if len(values) != n:
            raise ImageSetError(f"{name}: {len(values)} entries for {n} images")

    def __len__(self) -> int:
        return len(self._images)

    def _meta(self, index: int) -> tuple[int, str, str]:
        return self._labels[index], self._types[index], self._sources[index]

    def _sha256(self, index: int) -> Optional[str]:
        return self._sha[index]

    def _load(self, index: int) -> Sample:
        return Sample(
            image=self._images[index],
            mask=self._masks[index],
            label=self._labels[index],
            defect_type=self._types[index],
            source=self._sources[index],
            sha256=self._sha[index],
        )

    def describe(self) -> str:
        return "in-memory image set"


# ----------------------------------------------------------------------------------------------------------
# MVTec-layout folders
# ----------------------------------------------------------------------------------------------------------
def _parse_size(image_size: SizeSpec) -> Optional[tuple[int, int]]:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 1:
        raise DetectorConfigError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


def read_image_file(path: Path) -> tuple[np.ndarray, str]:
    """Read an image file -> ((H, W, 3) uint8/uint16 RGB, sha256 of the file bytes).

    Grayscale files become 3 identical channels. Raises :class:`ImageSetError` for unreadable files and
    channel counts other than 1 or 3.
    """
    import cv2

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImageSetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    digest = hashlib.sha256(raw).hexdigest()
    array = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageSetError(f"{path}: not a readable image file")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    else:
        channels = array.shape[2] if array.ndim == 3 else array.ndim
        raise ImageSetError(f"{path}: {channels} channels; expected 1 (grayscale) or 3 (colour)")
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageSetError(f"{path}: unsupported pixel type {array.dtype}; expected 8 or 16 bit")
    return array, digest


def rgb_pixels(array: Any, source: str = "image") -> np.ndarray:
    """A camera frame / decoded file as an (H, W, 3) array of its own dtype: (H, W) and (H, W, 1) grayscale are
    copied to 3 channels. Raises :class:`ImageSetError` naming ``source`` for any other shape."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageSetError(f"{source}: expected (H, W), (H, W, 1) or (H, W, 3) pixels, got shape {array.shape}")
    return array


def integer_to_float(array: np.ndarray) -> np.ndarray:
    """uint8 (/255) or uint16 (/65535) pixels (H, W, C) -> float32 in [0, 1], same layout: the one conversion
    of integer pixels (:func:`to_image_tensor`, :func:`detectors.input_prep.working_image`)."""
    scale = 255.0 if array.dtype == np.uint8 else 65535.0
    return np.ascontiguousarray(array).astype(np.float32) / scale


def to_image_tensor(array: Any, source: str = "image") -> torch.Tensor:
    """A camera frame / decoded file -> (3, H, W) float32 in [0, 1], RGB.

    ``array``: (H, W) or (H, W, 1) grayscale (copied to 3 channels) or (H, W, 3) RGB; uint8 (/255),
    uint16 (/65535) or float already in [0, 1]. Raises :class:`ImageSetError` naming ``source`` otherwise.
    """
    array = rgb_pixels(array, source)
    if array.dtype in (np.uint8, np.uint16):
        return _to_tensor(array)
    if array.dtype.kind != "f":
        raise ImageSetError(f"{source}: unsupported pixel type {array.dtype}; expected uint8, uint16 or float")
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1).contiguous()
    return _as_image_tensor(tensor, source)


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 / uint16 -> (3, H, W) float32 in [0, 1] (:func:`integer_to_float`)."""
    return torch.from_numpy(integer_to_float(array)).permute(2, 0, 1).contiguous()


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float -> (3, h, w) by antialiased bilinear interpolation, clamped to [0, 1]."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0)


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool -> (h, w) bool by nearest-neighbour sampling."""
    if tuple(mask.shape) == tuple(size):
        return mask
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0] > 0.5


@dataclass(frozen=True)
class _Record:
    path: Path
    label: int
    defect_type: str
    mask_path: Optional[Path]


class MVTecImageSet(ImageSet):
    """An MVTec-AD-layout folder, read lazily.

    ``root/train/good/*`` (split "train": all good) or ``root/test/<type>/*`` (split "test"; "good" is label 0,
    any other folder a defect type with masks at ``root/ground_truth/<type>/<stem>_mask.png``).
    ``image_size``: int (square) or (H, W) to resize to, or None to keep each file's size.
    ``defect_types``: only these folders (test split). ``max_per_type``: the first N files (sorted) of each folder.
    ``cache``: keep decoded, resized images in memory (uint8/uint16, 1/4 of float32's size).
    Files are listed in sorted order; sources are paths relative to ``root``'s parent (e.g. ``bottle/test/good/000.png``).
    """

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        image_size: SizeSpec = 256,
        defect_types: Optional[Sequence[str]] = None,
        max_per_type: Optional[int] = None,
        cache: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.image_size = _parse_size(image_size)
        self.cache = cache
        if split not in ("train", "test"):
            raise DetectorConfigError(f"{self.root}: split must be 'train' or 'test', got {split!r}")
        if max_per_type is not None and max_per_type < 1:
            raise DetectorConfigError(f"max_per_type must be >= 1, got {max_per_type}")
        if not self.root.is_dir():
            raise ImageSetError(f"{self.root}: not a folder (expected an MVTec-layout dataset)")
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise ImageSetError(f"{split_dir}: missing (expected {split}/<good|defect type>/ image folders)")
        folders = sorted(p for p in split_dir.iterdir() if p.is_dir())
        if split == "train":
            folders = [p for p in folders if p.name == GOOD]
        if defect_types is not None:
            wanted = set(defect_types)
            unknown = wanted - {p.name for p in folders}
            if unknown:
                raise ImageSetError(
                    f"{split_dir}: no folder for defect type '{sorted(unknown)[0]}'; "
                    f"found {', '.join(p.name for p in folders) or 'none'}"
                )
            folders = [p for p in folders if p.name in wanted]
        self._records: list[_Record] = []
        for folder in folders:
            files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if max_per_type is not None:
                files = files[:max_per_type]
            for path in files:
                if folder.name == GOOD:
                    self._records.append(_Record(path, 0, GOOD, None))
                else:
                    mask_path = self.root / "ground_truth" / folder.name / f"{path.stem}_mask.png"
                    self._records.append(_Record(path, 1, folder.name, mask_path))
        if not self._records:
            raise ImageSetError(f"{split_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}) found")
        self._cache: dict[int, tuple[np.ndarray, Optional[torch.Tensor], str]] = {}
        self._hashes: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._records)

    def _source(self, record: _Record) -> str:
        try:
            return record.path.relative_to(self.root.parent).as_posix()
        except ValueError:
            return record.path.as_posix()

    def _meta(self, index: int) -> tuple[int, str, str]:
        record = self._records[index]
        return record.label, record.defect_type, self._source(record)

    def _sha256(self, index: int) -> Optional[str]:
        if index not in self._hashes:
            path = self._records[index].path
            try:
                self._hashes[index] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError as exc:
                raise ImageSetError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return self._hashes[index]

    def _read(self, index: int) -> tuple[np.ndarray, Optional[torch.Tensor], str]:
        import cv2

        record = self._records[index]
        array, digest = read_image_file(record.path)
        self._hashes[index] = digest
        height, width = array.shape[:2]
        mask = None
        if record.mask_path is not None:
            if not record.mask_path.is_file():
                raise ImageSetError(f"{record.mask_path}: missing mask for {record.path}")
            mask_array = cv2.imread(str(record.mask_path), cv2.IMREAD_GRAYSCALE)
            if mask_array is None:
                raise ImageSetError(f"{record.mask_path}: not a readable mask image")
            if mask_array.shape != (height, width):
                raise ImageSetError(
                    f"{record.mask_path}: mask size {mask_array.shape} differs from image size {(height, width)}"
                )
            mask = torch.from_numpy(mask_array > 0)
            if self.image_size is not None:
                mask = resize_mask(mask, self.image_size)
        if self.image_size is not None and (height, width) != self.image_size:
            resized = resize_image(_to_tensor(array), self.image_size)
            scale = 255.0 if array.dtype == np.uint8 else 65535.0
            array = (resized.permute(1, 2, 0).numpy() * scale + 0.5).astype(array.dtype)
        return array, mask, digest

    def _load(self, index: int) -> Sample:
        entry = self._cache.get(index)
        if entry is None:
            entry = self._read(index)
            if self.cache:
                self._cache[index] = entry
        array, mask, digest = entry
        record = self._records[index]
        if mask is None:
            mask = torch.zeros(array.shape[:2], dtype=torch.bool)
        return Sample(
            image=_to_tensor(array),
            mask=mask,
            label=record.label,
            defect_type=record.defect_type,
            source=self._source(record),
            sha256=digest,
        )

    def describe(self) -> str:
        return f"{self.root / self.split}"


# ----------------------------------------------------------------------------------------------------------
def split_holdout(imageset: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Randomly hold out ``fraction`` of ``imageset`` -> (train, holdout), stratified by label.

    Each label group keeps ``round(fraction * n)`` (at least 1) samples in the hold-out and at least one in
    train when it has two or more; a group of one stays in train. Order inside each part follows the input.
    Raises :class:`DetectorConfigError` for a fraction outside (0, 1) and :class:`ImageSetError` when the set
    has fewer than 2 images.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise DetectorConfigError(f"holdout fraction must be in (0, 1), got {fraction}")
    n = len(imageset)
    if n < 2:
        raise ImageSetError(f"{imageset.describe()}: {n} image(s), too few to hold some out")
    rng = np.random.default_rng(seed)
    labels = imageset.labels
    held: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            continue
        k = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        held.extend(rng.permutation(members)[:k].tolist())
    held_set = set(held)
    train_idx = [i for i in range(n) if i not in held_set]
    return imageset.subset(train_idx), imageset.subset(sorted(held_set))
