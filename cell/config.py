"""Loading YAML config files into typed (pydantic) objects with one-line errors.

Every error names the file, the key (dotted path) and the bad value, e.g.::

    configs/cells/sim.yaml: key 'camera.exposure_us' = 'fast': Input should be a valid number

Every YAML config file of the application (cell, campaign, detector, demo) is read by
:func:`read_yaml_mapping`: safe YAML, a duplicate key is an error (never "the last one wins"), and a
document that expands past :data:`MAX_YAML_VALUES` values through aliases (an "alias bomb") is refused
before anything looks at it. Error messages quote values through :func:`quote`, which caps their length.
"""
from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from cell.errors import ConfigFileError

M = TypeVar("M", bound=BaseModel)

#: The most values (scalars, lists, mappings) a config document may hold once its aliases are expanded.
MAX_YAML_VALUES = 100_000
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


class _YamlTooLarge(yaml.YAMLError):
    """A document that expands past MAX_YAML_VALUES values, or whose alias refers to itself."""


class StrictYamlLoader(yaml.SafeLoader):
    """:class:`yaml.SafeLoader` that refuses duplicate mapping keys and alias bombs."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        _expanded_size(node, {}, MAX_YAML_VALUES)
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base`: keys written beside a merge override it, as YAML says
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first_line
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"a mapping key must be a plain value, got {quote(key)}", key_node.start_mark
                    ) from None
                if seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {quote(key)} (first at line {first_line[key] + 1})",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


StrictYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, StrictYamlLoader.construct_mapping)


def _expanded_size(node: Any, memo: dict[int, Any], limit: int) -> int:
    """How many values ``node`` holds with every alias expanded; raises _YamlTooLarge past ``limit``."""
    key = id(node)
    if key in memo:
        if memo[key] is None:
            raise _YamlTooLarge("an alias refers to the value that contains it")
        return memo[key]
    memo[key] = None
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo, limit) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, limit) + _expanded_size(v, memo, limit) for k, v in node.value)
    if size > limit:
        raise _YamlTooLarge(f"the document expands to more than {limit} values (aliases)")
    memo[key] = size
    return size


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` with :class:`StrictYamlLoader`; any problem -> one-line ConfigFileError naming
    ``source`` (and the line and column when known)."""
    try:
        return yaml.load(text, Loader=StrictYamlLoader)  # noqa: S506 (a SafeLoader subclass)
    except _YamlTooLarge as exc:
        raise ConfigFileError(f"{source}: refused YAML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigFileError(f"{source}: malformed YAML{where}: {' '.join(str(problem).split())}") from None
    except RecursionError:
        raise ConfigFileError(f"{source}: refused YAML: nested too deeply") from None


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
            overrides[key.strip()] = yaml.load(value, Loader=StrictYamlLoader)  # noqa: S506
        except (yaml.YAMLError, RecursionError):
            raise ConfigFileError(f"--set {quote(pair)}: the value is not a valid YAML scalar") from None
    return overrides
