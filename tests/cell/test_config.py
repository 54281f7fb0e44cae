"""Config files: every mistake is one line naming the file, the key and the value."""
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from cell.config import load_config, read_yaml_mapping
from cell.errors import ConfigFileError


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exposure_us: float = 1000.0


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    camera: Inner = Inner()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cell.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_file_loads_into_typed_object(tmp_path):
    config = load_config(write(tmp_path, "name: sim\ncamera:\n  exposure_us: 2500\n"), Outer)
    assert config.camera.exposure_us == 2500.0


def test_wrong_type_names_file_key_and_value(tmp_path):
    path = write(tmp_path, "name: sim\ncamera:\n  exposure_us: fast\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path, Outer)
    message = str(info.value)
    assert str(path) in message and "camera.exposure_us" in message and "'fast'" in message
    assert "\n" not in message


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigFileError, match=r"unknown key 'camera.exposure'"):
        load_config(write(tmp_path, "name: sim\ncamera:\n  exposure: 3\n"), Outer)


def test_missing_key_is_named(tmp_path):
    with pytest.raises(ConfigFileError, match=r"missing key 'name'"):
        load_config(write(tmp_path, "camera: {}\n"), Outer)


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigFileError, match=r"malformed YAML at line \d+, column \d+"):
        read_yaml_mapping(write(tmp_path, "name: sim\ncamera: [1, 2\n"))


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigFileError, match="file not found"):
        read_yaml_mapping(tmp_path / "nope.yaml")
    with pytest.raises(ConfigFileError, match="expected a mapping"):
        read_yaml_mapping(write(tmp_path, "- a\n- b\n"))
