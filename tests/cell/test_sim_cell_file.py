"""configs/cells/sim.yaml documents every key of a simulated cell (issue 17 item 18): uncommented, it is a
valid cell file that names every field of the schema, and each commented key shows the model's default."""
from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import BaseModel

from cell.cell_factory import CellConfig, SimCameraSection, SimRobotSection, load_cell_config
from cell.config import parse_yaml
from tests.cell.sim_fixtures import REPO

SIM = REPO / "configs" / "cells" / "sim.yaml"
#: A commented key line at any depth: ``<indent># <more indent>key: value``.
COMMENTED_KEY = re.compile(r"^(\s*)# ( *[a-z_]+:(?: |$).*)$")
#: Sections whose commented form shows an example rather than the defaults (tested in test_signals_config).
EXAMPLES = ("part_feed", "opcua", "mqtt")


def uncommented_text() -> str:
    lines = []
    for line in SIM.read_text(encoding="utf-8").splitlines():
        match = COMMENTED_KEY.match(line)
        lines.append(match.group(1) + match.group(2) if match else line)
    return "\n".join(lines) + "\n"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def schema_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key of ``model`` (the simulated backends for robot and camera), sections included."""
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        path = prefix + name
        paths.add(path)
        sub = {"robot": SimRobotSection, "camera": SimCameraSection}.get(path) or _model_of(field.annotation)
        if sub is not None:
            paths |= schema_paths(sub, path + ".")
    return paths


def document_paths(data: Any, prefix: str = "") -> set[str]:
    paths: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            paths.add(prefix + key)
            paths |= document_paths(value, prefix + key + ".")
    return paths


def lookup(data: Any, path: str) -> Any:
    for key in path.split("."):
        data = data[key]
    return data


def test_the_uncommented_sim_file_is_a_valid_cell_file(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text(uncommented_text(), encoding="utf-8")
    config = load_cell_config(path)  # strict loader: a key documented twice would be a duplicate-key error
    assert config.robot.backend == "sim" and config.camera.backend == "sim"
    assert config.robot.faults.connection_lost_on_move is None and config.camera.faults.timeout_on_capture is None
    assert len(config.scene.defects.kinds) == 8


def test_the_sim_file_names_every_key_of_the_schema():
    data = parse_yaml(uncommented_text(), str(SIM))
    documented = document_paths(data)
    # a section shown as `null` (e.g. mqtt.tls) documents its keys in the comment beside it
    nulls = {p for p in documented if lookup(data, p) is None}
    missing = sorted(p for p in schema_paths(CellConfig)
                     if p not in documented and not any(p.startswith(n + ".") for n in nulls))
    assert missing == []


def test_each_commented_key_shows_the_default():
    active = document_paths(parse_yaml(SIM.read_text(encoding="utf-8"), str(SIM)))
    everything = parse_yaml(uncommented_text(), str(SIM))
    defaults = CellConfig(robot=SimRobotSection(), camera=SimCameraSection()).model_dump(mode="json")
    checked = 0
    for path in sorted(document_paths(everything) - active):
        if path.split(".")[0] in EXAMPLES or isinstance(lookup(everything, path), dict):
            continue
        shown, default = lookup(everything, path), lookup(defaults, path)
        if isinstance(default, float) or (isinstance(default, list) and default and isinstance(default[0], float)):
            assert shown == default or list(map(float, shown)) == default, path
        else:
            assert shown == default, path
        checked += 1
    assert checked >= 30
