"""``part_threshold.json``: written atomically with its provenance, read as untrusted data (issue 18, item 3)."""
from __future__ import annotations

import json

import pytest

from cell.errors import CellError
from cell.part_threshold import PART_THRESHOLD_FILE, PartThreshold, read_part_threshold, write_part_threshold
from detectors.thresholds import ThresholdDecision, choose_threshold


def model_dir(path):
    """A folder the model directory's writer accepts (its config.yaml marks a model directory)."""
    (path / "config.yaml").write_text("method: stand-in\n")
    return path


def test_round_trip_keeps_value_policy_part_map_and_provenance(tmp_path):
    model_dir(tmp_path)
    decision = choose_threshold("good_quantile", [0.2, 0.3, 0.25], quantile=0.99)
    provenance = {"holdout_good_parts": {"train-0003": 0.3}, "chosen_on": "training side"}
    write_part_threshold(tmp_path, PartThreshold(decision, {"fusion": "kth", "k": 2, "cell_mm": 0.5}, provenance))
    back = read_part_threshold(tmp_path)
    assert back.value == pytest.approx(decision.value) and back.policy == "good_quantile"
    assert back.decision.stats["n_good"] == 3
    assert back.part_map == {"fusion": "kth", "k": 2, "cell_mm": 0.5} and back.provenance == provenance
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", PART_THRESHOLD_FILE]  # no temporary file
    stored = json.loads((tmp_path / PART_THRESHOLD_FILE).read_text())  # the model directory's one format
    assert stored["provenance"]["part_map"]["fusion"] == "kth" and stored["value"] == pytest.approx(decision.value)


def test_writing_into_a_folder_that_is_no_model_directory_is_refused(tmp_path):
    with pytest.raises(CellError, match="not a model directory"):
        write_part_threshold(tmp_path, PartThreshold(ThresholdDecision(0.5, "manual")))


def test_a_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(CellError) as info:
        read_part_threshold(tmp_path)
    message = str(info.value)
    assert "part_threshold.json" in message and "cell train" in message and "--part-threshold" in message
    assert "\n" not in message


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"value": "high", "policy": "manual"}), "key 'value'"),
    (json.dumps({"value": 0.3, "policy": "guess"}), "key 'policy' = 'guess'"),
    (json.dumps({"value": 0.3, "policy": "manual", "schema": 1}), "unknown key 'schema'"),
    (json.dumps({"value": 0.3, "policy": "manual", "provenance": {"part_map": [1]}}),
     "key 'provenance.part_map' = [1]: must be a mapping"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path, content, expected):
    (tmp_path / PART_THRESHOLD_FILE).write_text(content)
    with pytest.raises(CellError) as info:
        read_part_threshold(tmp_path)
    assert expected in str(info.value) and str(tmp_path / PART_THRESHOLD_FILE) in str(info.value)
    assert "\n" not in str(info.value)
