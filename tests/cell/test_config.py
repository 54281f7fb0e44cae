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


# --- issue 17: duplicate keys, alias bombs, capped quotes, required plan, --set ---------------------------

def test_duplicate_key_is_an_error_naming_the_key_and_both_lines(tmp_path):
    path = write(tmp_path, "name: a\ncamera:\n  exposure_us: 1\n  exposure_us: 2\n")
    with pytest.raises(ConfigFileError) as info:
        read_yaml_mapping(path)
    message = str(info.value)
    assert str(path) in message and "duplicate key 'exposure_us'" in message and "line 4" in message
    assert "first at line 3" in message


def test_a_merge_key_may_still_be_overridden(tmp_path):
    data = read_yaml_mapping(write(tmp_path, "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n"))
    assert data["other"] == {"x": 1, "y": 3}


def test_alias_bomb_is_refused_before_expansion_with_a_short_line(tmp_path):
    rows = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        rows.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    with pytest.raises(ConfigFileError, match="expands to more than") as info:
        read_yaml_mapping(write(tmp_path, "\n".join(rows) + "\n"))
    assert len(str(info.value)) < 300


def test_self_referring_alias_and_deep_nesting_are_refused(tmp_path):
    with pytest.raises(ConfigFileError, match="refers to the value that contains it"):
        read_yaml_mapping(write(tmp_path, "a: &x [1, *x]\n"))
    with pytest.raises(ConfigFileError, match=str(tmp_path)):
        read_yaml_mapping(write(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_error_quotes_of_long_values_are_capped(tmp_path):
    from cell.config import MAX_QUOTE

    path = write(tmp_path, "name: sim\ncamera:\n  exposure_us: '" + "x" * 100_000 + "'\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path, Outer)
    assert "camera.exposure_us" in str(info.value) and len(str(info.value)) < len(str(path)) + MAX_QUOTE + 150


def test_unknown_backend_quotes_the_backend_not_its_section(tmp_path):
    from cell.cell_factory import load_cell_config

    path = write(tmp_path, "robot:\n  backend: kuka\n  host: '" + "h" * 5000 + "'\n")
    with pytest.raises(ConfigFileError) as info:
        load_cell_config(path)
    assert str(info.value) == f"{path}: key 'robot.backend' = 'kuka': backend must be sim or ur5"


def test_campaign_file_without_plan_is_an_error_naming_file_and_key(tmp_path):
    from cell.cell_factory import load_campaign_file

    path = tmp_path / "campaign.yaml"
    path.write_text("description: forgot the plan\n", encoding="utf-8")
    with pytest.raises(ConfigFileError) as info:
        load_campaign_file(path)
    assert str(info.value) == f"{path}: missing key 'plan'"


def test_set_errors_name_set_and_file_errors_name_the_file(tmp_path):
    from cell.training import load_train_config

    repo = Path(__file__).resolve().parents[2]
    detector = repo / "configs" / "detectors" / "simplenet.yaml"
    with pytest.raises(ConfigFileError) as info:
        load_train_config(detector, {"meta_epochs": "many"})
    assert str(info.value).startswith("--set: ") and "meta_epochs" in str(info.value)
    assert str(detector) not in str(info.value)
    broken = tmp_path / "simplenet.yaml"
    broken.write_text(detector.read_text(encoding="utf-8").replace("meta_epochs: 5", "meta_epochs: many"))
    with pytest.raises(ConfigFileError, match=rf"^{broken}: .*meta_epochs"):
        load_train_config(broken, {"meta_epochs": 2})
