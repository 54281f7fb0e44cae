"""File-level primitives of the capture store: safe names, crash-safe writes, PNG encoding.

A crash-safe write is: write the bytes to a temporary file in the destination directory, flush,
``os.fsync``, ``os.replace`` onto the final name, then ``fsync`` the directory so the rename itself is
durable. Any failure raises :class:`~acquisition.errors.StoreError` naming the path and the OS reason,
and removes the temporary file.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

import cv2
import numpy as np

from acquisition.errors import StoreError

#: Prefix of temporary files; anything named like this under the store is debris of an interrupted write.
TMP_PREFIX = ".tmp-"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe single path component (campaign, part id, pose id, defect type).

    Allowed: letters, digits, ``_ . -``, starting with a letter or digit, at most 128 characters, and not
    containing ``..``. Anything else raises StoreError naming ``kind`` and the value.
    """
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
        raise StoreError(
            f"invalid {kind} {value!r}: use letters, digits, '_', '.', '-' (start with a letter or digit, "
            "at most 128 characters)"
        )
    return value


def resolve_inside(root: Path, relpath: object, what: str) -> Path:
    """The absolute path of ``relpath`` under the store ``root``, checked to stay inside the store.

    Every path the store reads from its manifest (image, mask and type-map relpaths) or builds for a write
    goes through here: the manifest is untrusted data (a copied, damaged or hostile store). ``relpath`` must
    be a non-empty POSIX relative path (str) with no empty, ``.`` or ``..`` component, no backslash and no
    NUL; and the path, with every symlink of its existing part resolved, must lie inside ``root`` resolved
    (a symlink to another file inside the store is fine, one pointing out is not). Anything else raises
    StoreError ``"<what>: path <relpath> leaves the store <root> (...)"``. The returned path is
    ``root / relpath`` (not resolved). A swap of a folder for a symlink between this check and the use is not
    guarded against (that needs write access to the store, which already allows anything).
    """
    root = Path(root)
    if not isinstance(relpath, str) or not relpath:
        raise StoreError(f"{what}: path {relpath!r} in the manifest of {root} is not a relative file path")
    parts = relpath.split("/")
    reason = None
    if relpath.startswith("/") or (len(relpath) > 1 and relpath[1] == ":"):
        reason = "absolute path"
    elif "\\" in relpath or "\x00" in relpath:
        reason = "backslash or NUL in the path"
    elif any(part in ("", ".", "..") for part in parts):
        reason = "empty, '.' or '..' component"
    else:
        try:
            base = root.resolve()
            target = base.joinpath(*parts).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            reason = f"cannot resolve it: {exc}"
        else:
            if target != base and not target.is_relative_to(base):
                reason = f"a symlink points to {target}"
    if reason is not None:
        raise StoreError(f"{what}: path {relpath!r} leaves the store {root} ({reason}); refusing to use it")
    return root.joinpath(*parts)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc)


def fsync_dir(directory: Path) -> None:
    """fsync a directory so that a rename inside it survives a power loss (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _make_dirs_durably(directory: Path) -> None:
    """mkdir -p, then fsync the parent of every folder created, so the new entries survive a power loss."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    if not missing:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_dir(created.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` crash-safely (tmp file, flush, fsync, rename, fsync dir).

    Creates missing parent directories. On any OS failure (full disk, read-only or unwritable folder)
    raises StoreError ``"cannot write <path>: <reason>"``; the temporary file is removed and ``path`` keeps
    its previous content (or stays absent).
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        _make_dirs_durably(path.parent)
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise StoreError(f"cannot write {path}: {_os_reason(exc)}") from exc
    fsync_dir(path.parent)


def encode_png(pixels: np.ndarray, pixel_format: str, compression: int = 1) -> bytes:
    """Encode a frame's pixels as PNG bytes, losslessly.

    ``pixels``: (H, W) uint8/uint16 mono, or (H, W, 3) uint8/uint16 **RGB** (stored as a normal RGB PNG,
    i.e. converted to OpenCV's BGR order before encoding). ``compression`` is zlib level 0-9.
    """
    arr = np.ascontiguousarray(pixels)
    if arr.dtype not in (np.uint8, np.uint16):
        raise StoreError(f"cannot store pixels of dtype {arr.dtype} ({pixel_format}): expected uint8 or uint16")
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    elif arr.ndim != 2:
        raise StoreError(f"cannot store pixels of shape {pixels.shape} ({pixel_format}): expected (H,W) or (H,W,3)")
    # RLE strategy: camera images are noisy, so LZ77 matching costs time and gains nothing; run-length +
    # Huffman coding is ~1.5x faster than zlib's default strategy and gives slightly smaller files.
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(compression), cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    ok, buf = cv2.imencode(".png", arr, params)
    if not ok:
        raise StoreError(f"PNG encoding failed for pixels of shape {pixels.shape}")
    return buf.tobytes()


def decode_png(path: Path) -> np.ndarray:
    """Read a stored PNG back: (H, W) mono or (H, W, 3) RGB, dtype as written. Missing/corrupt -> StoreError."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {_os_reason(exc)}") from exc
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise StoreError(f"cannot decode {path}: not a valid PNG")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


#: PNG parameters of masks and type label maps: no row filter and run-length zlib. Label images are long
#: runs of a few values: this is 2-3x faster to write than the adaptive filters, and the files are smaller.
_LABEL_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 3, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]


def encode_mask(mask: np.ndarray) -> tuple[bytes, int]:
    """Encode a (H, W) bool mask as an exact 0/255 single-channel PNG; returns (bytes, defect pixel count)."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise StoreError(f"a mask must be a 2-D (H, W) array, got shape {arr.shape}")
    binary = arr.astype(bool)
    png = (binary.astype(np.uint8) * 255)
    ok, buf = cv2.imencode(".png", png, _LABEL_PNG)
    if not ok:
        raise StoreError(f"PNG encoding failed for a mask of shape {arr.shape}")
    return buf.tobytes(), int(binary.sum())


def decode_mask(path: Path) -> np.ndarray:
    """Read a stored mask PNG as (H, W) bool (pixel > 127 is defect)."""
    image = decode_png(path)
    if image.ndim != 2:
        raise StoreError(f"{path}: a mask file must be single-channel")
    return image > 127


def encode_labels(labels: np.ndarray) -> bytes:
    """Encode a (H, W) uint8 per-pixel type label map (0 = no defect, k = the k-th type) as a PNG, exactly."""
    arr = np.ascontiguousarray(labels)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise StoreError(f"a type label map must be a 2-D (H, W) uint8 array, got shape {arr.shape} dtype {arr.dtype}")
    ok, buf = cv2.imencode(".png", arr, _LABEL_PNG)
    if not ok:
        raise StoreError(f"PNG encoding failed for a type label map of shape {arr.shape}")
    return buf.tobytes()


def decode_labels(path: Path) -> np.ndarray:
    """Read a stored type label map PNG as (H, W) uint8 (values exactly as written)."""
    image = decode_png(path)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise StoreError(f"{path}: a type label map must be a single-channel 8-bit PNG")
    return image
