"""The model directory: the ONE module that writes and reads it. Usable without :mod:`cell`.

Layout::

    config.yaml          method: <registry name>, format_version: 1, config: {<the detector's config>}
    weights.pt           torch.save(detector.state_dict()), read back with torch.load(weights_only=True)
    input.json           the InputSpec: how captures become inputs (detectors.input_prep); absent = resize
    threshold.json       the image threshold: {value, policy, stats} (detectors.thresholds.ThresholdDecision)
    part_threshold.json  OPTIONAL: the part-level threshold of part inspection, with its provenance:
                         {value, policy, stats, provenance} (write_part_threshold / read_part_threshold)
    provenance.json      training data (sources, sha256 of every image), seed, the versions of python, torch,
                         torchvision, timm, numpy, this package, and the sha256 of weights.pt
    training.json        training statistics (losses, time, device)

Writing. :func:`save_detector` writes config + weights (``Detector.save``); :func:`write_model_dir` writes a
whole trained directory under a temporary name beside the target and renames it into place at the end, so
an interrupted run leaves no half-written model, and a replaced (``force``) directory is swapped, never
missing. Every file is written atomically (temporary file, fsync, rename) and gets the mode the umask gives
(0644 under the usual 022), like any other file the CLI writes.

Reading. Everything read back is untrusted: each problem is a :class:`~detectors.errors.ModelDirectoryError`
whose one line names the file and, where it applies, the key and the bad value. :func:`load_model` loads
a trained directory (detector on its device + input spec + thresholds); when ``provenance.json`` records the
weights' sha256, weights that do not match it are refused.
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
import yaml

from calibration.yaml_io import load_yaml  # the one strict YAML reader (calibration imports none of ours)
from detectors.errors import DetectorError, ModelDirectoryError
from detectors.input_prep import InputSpec
from detectors.model_io import atomic_write
from detectors.thresholds import POLICIES, ThresholdDecision

FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.pt"
INPUT_FILE = "input.json"
THRESHOLD_FILE = "threshold.json"
PART_THRESHOLD_FILE = "part_threshold.json"
PROVENANCE_FILE = "provenance.json"
TRAINING_FILE = "training.json"


# --------------------------------------------------------------------------------------------- detector
def save_detector(detector: Any, directory: str | Path) -> Path:
    """Write ``detector`` (a fitted :class:`detectors.Detector`) as ``config.yaml`` + ``weights.pt`` into
    ``directory`` (created if needed); returns it. Other files in the directory are left alone. Weights
    first, config last, and an old config is removed first: a half-replaced directory never loads."""
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
    if config_path.exists():
        config_path.unlink()
    atomic_write(directory / WEIGHTS_FILE, lambda f: torch.save(state, f))
    atomic_write(config_path, lambda f: f.write(text), mode="w")
    return directory


def read_model_config(directory: str | Path) -> tuple[str, dict[str, Any]]:
    """(method, config dict) of a model directory, checked for format; raises :class:`ModelDirectoryError`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelDirectoryError(f"{directory}: not a model directory (folder not found)")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ModelDirectoryError(f"{path}: missing; not a model directory")
    try:
        document = load_yaml(path.read_text(encoding="utf-8"))  # untrusted: duplicate keys, alias bombs refused
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelDirectoryError(f"{path}: not valid YAML ({first})") from None
    except OSError as exc:
        raise ModelDirectoryError(f"{path}: cannot read ({exc.strerror or exc})") from None
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


def load_detector(directory: str | Path, expected_method: Optional[str] = None, device: Optional[str] = None) -> Any:
    """Rebuild the detector saved in ``directory`` (``config.yaml`` + ``weights.pt``).

    ``expected_method``: when given, a directory of another method is refused before any weights are read.
    ``device``: where to run it (``auto``, ``cpu``, ``cuda[:N]``), overriding the device saved in the config:
    a model trained on a GPU must load on the line's CPU. None keeps the saved device.
    Raises :class:`ModelDirectoryError` for missing files, another method, a bad config or corrupt weights
    (a bad ``device`` argument is the caller's :class:`~detectors.errors.DetectorConfigError`).
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


# --------------------------------------------------------------------------------------- whole directory
def write_model_dir(
    out: str | Path,
    detector: Any,
    *,
    spec: InputSpec,
    threshold: ThresholdDecision,
    provenance: Mapping[str, Any],
    training: Optional[Mapping[str, Any]] = None,
    force: bool = False,
    part_threshold: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write a trained model directory at ``out``: the detector (:func:`save_detector`), ``input.json``,
    ``threshold.json``, ``provenance.json`` (``provenance`` plus ``versions`` and ``weights_sha256``, added
    here), ``training.json`` (when ``training`` is given) and ``part_threshold.json`` (when ``part_threshold``
    is given, see :func:`write_part_threshold`). Returns ``out``.

    Built in ``.<name>.partial`` beside ``out`` and renamed into place at the end; with ``force`` an existing
    ``out`` is swapped out and removed only once the new one is in place. Without ``force`` an existing
    ``out`` is a :class:`ModelDirectoryError`.
    """
    out = Path(out)
    if out.exists() and not force:
        raise ModelDirectoryError(f"{out}: already exists; choose another folder or replace it (force)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelDirectoryError(f"{out.parent}: cannot create the folder ({exc.strerror or exc})") from None
    staging = out.parent / f".{out.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        save_detector(detector, staging)
        _write_json(staging / INPUT_FILE, spec.model_dump(mode="json"))
        _write_json(staging / THRESHOLD_FILE, _checked_decision(threshold.to_dict(), "threshold"))
        record = {
            **dict(provenance),
            "versions": software_versions(),
            "weights_sha256": file_sha256(staging / WEIGHTS_FILE),
        }
        _write_json(staging / PROVENANCE_FILE, record)
        if training is not None:
            _write_json(staging / TRAINING_FILE, dict(training))
        if part_threshold is not None:
            write_part_threshold(staging, part_threshold)
        old = out.parent / f".{out.name}.old"
        if out.exists():
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
        staging.rename(out)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def read_input_spec(directory: str | Path) -> InputSpec:
    """The directory's ``input.json`` (absent: the default, resize mode, as for a directory written by
    ``Detector.save``)."""
    path = Path(directory) / INPUT_FILE
    if not path.exists():
        return InputSpec()
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ModelDirectoryError(f"{path}: expected a JSON object with keys {', '.join(InputSpec.model_fields)}")
    try:
        return InputSpec.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError: name the first bad key and value
        errors = getattr(exc, "errors", lambda: [])()
        if errors:
            key = ".".join(str(p) for p in errors[0].get("loc", ())) or "?"
            raise ModelDirectoryError(
                f"{path}: key '{key}' = {errors[0].get('input')!r}: {errors[0].get('msg')}"
            ) from None
        raise ModelDirectoryError(f"{path}: not a valid input spec ({str(exc).splitlines()[0]})") from None


def read_threshold(directory: str | Path) -> ThresholdDecision:
    """The image threshold (``threshold.json``): a part is NOK when its score is above ``value``."""
    path = Path(directory) / THRESHOLD_FILE
    if not path.exists():
        raise ModelDirectoryError(f"{path}: missing; the model directory has no image threshold (train it, or give a threshold)")
    data = _checked_decision(_read_json(path), str(path))
    return ThresholdDecision(value=data["value"], policy=data["policy"], stats=data["stats"])


def write_part_threshold(directory: str | Path, decision: Mapping[str, Any]) -> Path:
    """Write the part-level threshold into the model directory (``part_threshold.json``, atomically).

    ``decision``: ``{"value": float (finite), "policy": one of good_quantile / zero_miss / manual,
    "stats": {...} (optional), "provenance": {...} (what it was chosen on: parts, fusion rule...; optional)}``,
    e.g. ``{**ThresholdDecision.to_dict(), "provenance": {...}}``. Other keys are refused. Returns the path.
    """
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise ModelDirectoryError(f"{directory}: not a model directory ({CONFIG_FILE} missing)")
    path = directory / PART_THRESHOLD_FILE
    data = _checked_decision(dict(decision), "part threshold", extra=("provenance",))
    _write_json(path, data)
    return path


def image_threshold(directory: str | Path, override: Optional[float] = None) -> ThresholdDecision:
    """The image threshold a scoring run uses: ``override`` as a manual threshold when given (it must be
    finite: NaN would pass every part, inf too), else ``threshold.json`` (:func:`read_threshold`)."""
    if override is None:
        return read_threshold(directory)
    value = float(override)
    if not math.isfinite(value):
        raise ModelDirectoryError(f"threshold override {override!r}: must be a finite number")
    return ThresholdDecision(value=value, policy="manual")


def read_part_threshold(directory: str | Path) -> Optional[dict[str, Any]]:
    """The part-level threshold of the directory: ``{"value", "policy", "stats", "provenance"}`` as written
    by :func:`write_part_threshold`, or None when the directory has none."""
    path = Path(directory) / PART_THRESHOLD_FILE
    if not path.exists():
        return None
    return _checked_decision(_read_json(path), str(path), extra=("provenance",))


def read_provenance(directory: str | Path) -> dict[str, Any]:
    """``provenance.json`` as a dict ({} when absent, e.g. a directory written by ``Detector.save``)."""
    path = Path(directory) / PROVENANCE_FILE
    if not path.exists():
        return {}
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ModelDirectoryError(f"{path}: expected a JSON object")
    return data


@dataclass(frozen=True)
class TrainedModel:
    """A trained model directory loaded for scoring: the detector (on its device), its input spec
    (``input.json``), the image threshold (``threshold.json`` or an override) and the part threshold
    (``part_threshold.json``; None when the directory has none)."""

    directory: Path
    detector: Any
    spec: InputSpec
    threshold: ThresholdDecision
    part_threshold: Optional[dict[str, Any]] = None


def load_model(
    directory: str | Path, *, device: Optional[str] = "auto", threshold_override: Optional[float] = None
) -> TrainedModel:
    """Load a trained model directory for scoring (``cell eval`` / ``cell inspect`` / review mode, or any
    script: this does not import :mod:`cell`).

    ``device``: where the model runs (``auto``: CUDA when present, ``cpu``, ``cuda[:N]``; None keeps the
    saved one), whatever it was trained on. ``threshold_override``: a manual image threshold instead of
    ``threshold.json`` (which then need not exist). Weights whose sha256 differs from the one
    ``provenance.json`` records are refused. Errors: :class:`ModelDirectoryError` naming the file.
    """
    directory = Path(directory)
    provenance = read_provenance(directory)
    spec = read_input_spec(directory)
    expected = provenance.get("weights_sha256")
    if expected is not None:
        weights = directory / WEIGHTS_FILE
        if weights.is_file() and file_sha256(weights) != expected:
            raise ModelDirectoryError(
                f"{weights}: sha256 differs from {PROVENANCE_FILE}'s weights_sha256: the weights were changed "
                "after training"
            )
    threshold = image_threshold(directory, threshold_override)
    part_threshold = read_part_threshold(directory)
    detector = load_detector(directory, device=device)
    return TrainedModel(directory, detector, spec, threshold, part_threshold)


# ----------------------------------------------------------------------------------------------- helpers
def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def software_versions() -> dict[str, Optional[str]]:
    """Versions of what a model depends on: python, torch, torchvision, timm, numpy, opencv and this
    package (``inspection-cell``); None for one that is not installed."""
    from importlib import metadata

    versions: dict[str, Optional[str]] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("torchvision", "timm", "numpy", "opencv-python-headless", "inspection-cell"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays, tensors
        return value.tolist()
    return str(value)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ModelDirectoryError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ModelDirectoryError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelDirectoryError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _checked_decision(data: Any, where: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """A threshold document {value, policy, stats[, extra...]} checked key by key (one-line errors)."""
    if not isinstance(data, dict):
        raise ModelDirectoryError(f"{where}: expected a JSON object with keys value, policy, stats")
    allowed = {"value", "policy", "stats", *extra}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ModelDirectoryError(f"{where}: unknown key '{unknown[0]}' (expected {', '.join(sorted(allowed))})")
    value = data.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelDirectoryError(f"{where}: key 'value' = {value!r}: must be a finite number")
    policy = data.get("policy")
    if policy not in POLICIES:
        raise ModelDirectoryError(f"{where}: key 'policy' = {policy!r}: must be one of {', '.join(POLICIES)}")
    checked = {"value": float(value), "policy": policy}
    for key in ("stats", *extra):
        section = data.get(key, {})
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ModelDirectoryError(f"{where}: key '{key}' = {section!r}: must be a mapping")
        checked[key] = section
    return checked
