"""The cell files document the line sections in comments: uncommented, they must be valid cell files (so the
documentation cannot drift from the schema), and their defaults are the models' defaults."""
from __future__ import annotations

import re

import pytest
import yaml

from cell.cell_factory import load_cell_config
from cell.signals import MqttConfig, OpcUaConfig
from tests.cell.sim_fixtures import REPO

YAML_COMMENT = re.compile(r"^# ( *[a-z_]+:(?: |$).*)$")


def uncommented(path) -> dict:
    lines = []
    for line in path.read_text().splitlines():
        match = YAML_COMMENT.match(line)
        lines.append(match.group(1) if match else line)
    return yaml.safe_load("\n".join(lines))


@pytest.mark.parametrize("name", ["sim.yaml", "ur5.yaml"])
def test_the_commented_line_sections_are_valid(tmp_path, name):
    data = uncommented(REPO / "configs" / "cells" / name)
    assert {"opcua", "mqtt", "part_feed"} <= set(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    config = load_cell_config(path)
    assert config.part_feed.mode in ("opcua", "prompt") and config.opcua is not None and config.mqtt is not None


def test_the_sim_files_comments_show_the_defaults():
    data = uncommented(REPO / "configs" / "cells" / "sim.yaml")
    assert OpcUaConfig.model_validate(data["opcua"]) == OpcUaConfig()
    assert MqttConfig.model_validate(data["mqtt"]) == MqttConfig()
