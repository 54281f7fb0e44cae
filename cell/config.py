"""Loading YAML config files into typed (pydantic) objects with one-line errors.

Every error names the file, the key (dotted path) and the bad value, e.g.::

    configs/cells/sim.yaml: key 'camera.exposure_us' = 'fast': Input should be a valid number

Every YAML config file of the application (cell, campaign, detector, demo) is read by
:func:`read_yaml_mapping` through the project's one strict YAML reader, :mod:`calibration.yaml_io`
(duplicate keys are errors, alias bombs and too deep nesting are refused before anything looks at them).
Error messages quote values through :func:`quote`, which caps their length.
"""
from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from calibration.yaml_io import YamlRefused, describe_yaml_error, load_yaml
from cell.errors import ConfigFileError

M = TypeVar("M", bound=BaseModel)

#: The longest quotation of a value in an error message, characters.
MAX_QUOTE = 80

_quoter = reprlib.Repr()
_quoter.maxlevel, _quoter.maxdict, _quoter.maxlist, _quoter.maxtuple = 2, 4, 6, 6
_quoter.maxstring, _quoter.maxother, _quoter.maxlong = MAX_QUOTE, MAX_QUOTE, MAX_QUOTE


def clip(text: str, limit: int = MAX_QUOTE) -> str:
    """``text`` on one line, cut to at most ``limit`` characters (ending in ``...`` when cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quote(value: Any, limit: int = MAX_QUOTE) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters, never walking a huge value
    (nested and long containers are elided with ``...``)."""
    return clip(_quoter.repr(value), limit)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` with the project's strict reader (:func:`calibration.yaml_io.load_yaml`: duplicate
    keys, alias bombs and too deep nesting refused); any problem -> one-line ConfigFileError naming ``source``
    (and the line and column when known)."""
    try:
        return load_yaml(text)
    except YamlRefused as exc:
        raise ConfigFileError(f"{source}: refused YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        what = describe_yaml_error(exc)
        raise ConfigFileError(f"{source}: malformed YAML{' ' if what.startswith('at line') else ': '}{what}") from None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping. Missing, unreadable or malformed -> ConfigFileError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigFileError(f"{path}: is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read: {exc}") from None
    data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def _key_path(loc: tuple[Any, ...], data: Any) -> str:
    """The dotted key path of an error location as the user wrote it: union tags that pydantic inserts
    (e.g. the ``sim`` of ``camera.sim.colour``) are not keys of the data and are dropped."""
    parts: list[str] = []
    current = data
    for index, item in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(current, dict) and item in current:
            current = current[item]
        elif isinstance(current, list) and isinstance(item, int) and 0 <= item < len(current):
            current = current[item]
        elif isinstance(current, dict) and not last:
            continue  # a tag of a discriminated union, not a key the user wrote
        parts.append(str(item))
    return ".".join(parts)


def format_validation_error(source: str, exc: ValidationError, data: Any = None) -> str:
    """One line naming the source, the first failing key (as written in ``data``) and its value."""
    err = exc.errors()[0]
    key = (_key_path(tuple(err["loc"]), data) if data is not None else ".".join(str(p) for p in err["loc"]))
    key = key or "<top level>"
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    if err["type"] == "missing":
        return f"{source}: missing key '{key}'"
    value = err.get("input")
    if err["type"] == "backend" and isinstance(value, dict):
        # a device section with an unknown backend: quote the backend, not the whole section
        key, value = f"{key}.backend" if key != "<top level>" else "backend", value.get("backend")
    return f"{source}: key '{key}' = {quote(value)}: {clip(err['msg'], 200)}"


def validate_mapping(source: str, data: dict[str, Any], model: type[M]) -> M:
    """Validate ``data`` into ``model``; ``source`` (a file name) prefixes any error message."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(format_validation_error(source, exc, data)) from None


def load_config(path: str | Path, model: type[M]) -> M:
    """Read and validate one YAML file into ``model``."""
    return validate_mapping(str(path), read_yaml_mapping(path), model)


def parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` strings -> dict; values are read as YAML scalars (``epochs=2`` is an int)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigFileError(f"--set {pair!r}: expected key=value")
        try:
            overrides[key.strip()] = load_yaml(value)
        except yaml.YAMLError:
            raise ConfigFileError(f"--set {quote(pair)}: the value is not a valid YAML scalar") from None
    return overrides
