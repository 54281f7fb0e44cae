"""The one strict YAML reader of the project's config files (cell, campaign, detector, demo, calibration
config, calibration files, board specs). It lives here, in the package that imports nothing of ours, so
that :mod:`calibration` and :mod:`cell` (through :func:`cell.config.read_yaml_mapping`) share it.

Safe YAML (no Python objects), and stricter than :func:`yaml.safe_load`:

- a duplicate mapping key is an error (never "the last one wins"); keys written beside a merge key
  (``<<: *base``) still override it, as YAML says;
- a document that holds more than :data:`MAX_YAML_VALUES` values once its aliases are expanded (an
  "alias bomb") or whose alias refers to the value containing it is refused before anything walks it;
- nesting too deep for the parser is refused (not a RecursionError).

Every refusal is a :class:`yaml.YAMLError` (with ``problem`` and ``problem_mark`` where the parser knows them).
"""
from __future__ import annotations

import reprlib
from typing import Any

import yaml

#: The most values (scalars, lists, mappings) a config document may hold once its aliases are expanded.
MAX_YAML_VALUES = 100_000

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


class YamlRefused(yaml.YAMLError):
    """A document refused before it is used: too many values through aliases, a self-referring alias,
    or nesting too deep. ``problem`` says which."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = None


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
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first_line
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"a mapping key must be a plain value, got {_short.repr(key)}", key_node.start_mark
                    ) from None
                if seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_short.repr(key)} (first at line {first_line[key] + 1})",
                        key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


StrictYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, StrictYamlLoader.construct_mapping)


def _expanded_size(node: Any, memo: dict[int, Any], limit: int) -> int:
    """How many values ``node`` holds with every alias expanded; raises YamlRefused past ``limit``."""
    key = id(node)
    if key in memo:
        if memo[key] is None:
            raise YamlRefused("an alias refers to the value that contains it")
        return memo[key]
    memo[key] = None
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo, limit) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo, limit) + _expanded_size(v, memo, limit) for k, v in node.value)
    if size > limit:
        raise YamlRefused(f"the document expands to more than {limit} values (aliases)")
    memo[key] = size
    return size


def load_yaml(text: str) -> Any:
    """Parse ``text`` with :class:`StrictYamlLoader`. Raises :class:`yaml.YAMLError` (a
    :class:`YamlRefused` for what the parser would accept but a config file must not hold)."""
    try:
        return yaml.load(text, Loader=StrictYamlLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise YamlRefused("nested too deeply") from None


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """One line: where (``at line L, column C``, when known) and what, e.g.
    ``at line 3, column 1: duplicate key 'name' (first at line 1)``."""
    mark = getattr(exc, "problem_mark", None)
    where = f"at line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    return where + " ".join(str(problem).split())
