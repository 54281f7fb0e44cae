"""The one strict YAML reader (calibration.yaml_io), as the calibration loaders use it (issue 17 item 10)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from calibration.calibration_file import load_calibration, save_calibration
from calibration.charuco import load_board_spec
from calibration.errors import CalibrationFileError
from calibration.yaml_io import YamlRefused, load_yaml
from tests.calibration.test_calibration_file import _calibration


def test_duplicate_keys_are_refused_and_merge_keys_still_override():
    with pytest.raises(yaml.YAMLError, match=r"duplicate key 'a' \(first at line 1\)"):
        load_yaml("a: 1\nb: 2\na: 3\n")
    assert load_yaml("x: &x {a: 1, b: 2}\ny:\n  <<: *x\n  b: 3\n")["y"] == {"a": 1, "b": 3}


def test_alias_bombs_self_references_and_deep_nesting_are_refused():
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(5))
    with pytest.raises(YamlRefused, match="expands to more than"):
        load_yaml(bomb)
    with pytest.raises(YamlRefused, match="refers to the value that contains it"):
        load_yaml("a: &a [*a]\n")
    with pytest.raises(YamlRefused, match="nested too deeply"):
        load_yaml("a: " + "[" * 5000 + "]" * 5000)


def test_a_calibration_file_with_a_duplicate_key_is_one_clear_error(tmp_path: Path):
    path = save_calibration(_calibration(), tmp_path / "calib.yaml")
    path.write_text(path.read_text(encoding="utf-8") + "format_version: 1\n", encoding="utf-8")
    with pytest.raises(CalibrationFileError, match=rf"^{path}: cannot read calibration file: at line \d+, column 1: "
                                                  r"duplicate key 'format_version'"):
        load_calibration(path)


def test_a_board_spec_nested_too_deeply_is_one_clear_error(tmp_path: Path):
    path = tmp_path / "board.yaml"
    path.write_text("board: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(CalibrationFileError, match=rf"^{path}: cannot read board spec: nested too deeply$"):
        load_board_spec(path)
