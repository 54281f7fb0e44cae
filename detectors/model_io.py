"""Model directories: a detector saved as ``config.yaml`` plus ``weights.pt`` (a plain state dict).

Layout of a model directory::

    config.yaml   method: <registry name>, format_version: 1, config: {<the detector's config>}
    weights.pt    torch.save(detector.state_dict()), read back with torch.load(weights_only=True)

Other files (``threshold.json``, ``provenance.json`` written by ``cell train``) may live beside them and are
left alone. Writing is atomic per file (temporary file, fsync, rename; weights first, config last), so an
interrupted save never leaves a directory that loads. Every problem on loading is a
:class:`ModelDirectoryError` whose message names the file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import yaml

from detectors.errors import DetectorError, ModelDirectoryError

FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.pt"


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` crash-safely: ``write(handle)`` into a temporary file beside it, flush, fsync, rename.
    On any failure the temporary file is removed and ``path`` keeps its previous content (or stays absent)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_detector(detector: Any, directory: Path) -> Path:
    """Write ``detector`` (a :class:`detectors.Detector`) into ``directory`` (created if needed); returns it."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelDirectoryError(f"{directory}: cannot create model directory ({exc.strerror or exc})") from None
    state = detector.state_dict()
    if not isinstance(state, Mapping):
        raise TypeError(f"{type(detector).__name__}.state_dict() returned {type(state).__name__}, not a dict")
    state = {
        str(k): (v.detach().cpu().contiguous() if isinstance(v, torch.Tensor) else v) for k, v in state.items()
    }
    document = {
        "method": detector.name,
        "format_version": FORMAT_VERSION,
        "config": detector.config.model_dump(mode="json"),
    }
    text = yaml.safe_dump(document, sort_keys=False)
    config_path = directory / CONFIG_FILE
    if config_path.exists():  # a half-replaced directory must not load: drop the old config first
        config_path.unlink()
    atomic_write(directory / WEIGHTS_FILE, lambda f: torch.save(state, f))
    atomic_write(config_path, lambda f: f.write(text), mode="w")
    return directory


def read_model_config(directory: Path) -> tuple[str, dict[str, Any]]:
    """(method, config dict) of a model directory, checked for format; raises :class:`ModelDirectoryError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelDirectoryError(f"{directory}: not a model directory (folder not found)")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ModelDirectoryError(f"{path}: missing; not a model directory")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelDirectoryError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(document, dict):
        raise ModelDirectoryError(f"{path}: expected a mapping with keys method, format_version, config")
    method = document.get("method")
    if not isinstance(method, str) or not method:
        raise ModelDirectoryError(f"{path}: key 'method' = {method!r}: must name a detector")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelDirectoryError(
            f"{path}: key 'format_version' = {version!r}: this version reads format {FORMAT_VERSION}"
        )
    config = document.get("config", {})
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ModelDirectoryError(f"{path}: key 'config' = {config!r}: must be a mapping")
    return method, config


def load_detector(directory: Path, expected_method: Optional[str] = None, device: Optional[str] = None) -> Any:
    """Rebuild the detector saved in ``directory``.

    ``expected_method``: when given, a directory of another method is refused before any weights are read.
    ``device``: where to run it (``auto``, ``cpu``, ``cuda[:N]``), overriding the device saved in the config:
    a model trained on a GPU must load on the line's CPU. None keeps the saved device.
    Raises :class:`ModelDirectoryError` for missing files, another method, a bad config or corrupt weights.
    """
    from detectors.registry import available, create

    directory = Path(directory)
    method, config = read_model_config(directory)
    config_path = directory / CONFIG_FILE
    if expected_method is not None and method != expected_method:
        raise ModelDirectoryError(f"{config_path}: holds a '{method}' model, not a '{expected_method}' one")
    if method not in available():
        raise ModelDirectoryError(
            f"{config_path}: method '{method}' is not a registered detector "
            f"(available: {', '.join(available()) or 'none'})"
        )
    if device is not None and "device" in config:
        from detectors.device import resolve_device

        resolve_device(device)  # a bad or unavailable device is the caller's error, not the directory's
        config = {**config, "device": device}
    try:
        detector = create(method, **config)
    except DetectorError as exc:
        raise ModelDirectoryError(f"{config_path}: {exc}") from None
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelDirectoryError(f"{weights_path}: missing; the model directory is incomplete")
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, pickled objects: all mean "corrupt"
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelDirectoryError(
            f"{weights_path}: corrupt or unreadable weights ({type(exc).__name__}: {first[:200]})"
        ) from None
    if not isinstance(state, dict):
        raise ModelDirectoryError(f"{weights_path}: holds a {type(state).__name__}, not a state dict")
    try:
        detector.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError, DetectorError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelDirectoryError(
            f"{weights_path}: does not fit the '{method}' config in {CONFIG_FILE} ({first[:200]})"
        ) from None
    return detector


def check_state_shapes(prefix: str, module: torch.nn.Module, state: dict[str, torch.Tensor], method: str) -> dict[str, torch.Tensor]:
    """The ``prefix``-ed part of ``state`` for ``module``; one-line DetectorError on a missing/extra/misshapen tensor."""
    expected = module.state_dict()
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    for key, ref in expected.items():
        if key not in part:
            raise DetectorError(f"{method} weights: missing tensor '{prefix}{key}'")
        if tuple(part[key].shape) != tuple(ref.shape):
            raise DetectorError(
                f"{method} weights: tensor '{prefix}{key}' has shape {tuple(part[key].shape)}, "
                f"config expects {tuple(ref.shape)}"
            )
    extra = sorted(set(part) - set(expected))
    if extra:
        raise DetectorError(f"{method} weights: unexpected tensor '{prefix}{extra[0]}'")
    return part


def check_loose_tensors(state: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], method: str) -> None:
    """Check the tensors of ``state`` that belong to no module (e.g. normalisation statistics): each key of
    ``shapes`` must be present with exactly that shape; one-line DetectorError naming the tensor otherwise."""
    for key, shape in shapes.items():
        if key not in state:
            raise DetectorError(f"{method} weights: missing tensor '{key}'")
        if tuple(state[key].shape) != tuple(shape):
            raise DetectorError(
                f"{method} weights: tensor '{key}' has shape {tuple(state[key].shape)}, config expects {tuple(shape)}"
            )


def reject_unknown_tensors(state: dict[str, torch.Tensor], prefixes: Sequence[str], names: Sequence[str], method: str) -> None:
    """One-line DetectorError naming the first tensor of ``state`` that neither starts with one of ``prefixes``
    (the modules' tensors) nor is one of ``names`` (the loose tensors)."""
    unknown = sorted(k for k in state if k not in names and not k.startswith(tuple(prefixes)))
    if unknown:
        raise DetectorError(f"{method} weights: unexpected tensor '{unknown[0]}'")
