"""The line result's wire form: what every signal (MQTT, OPC UA, live page, store) reads."""
import json
import math

import pytest

from cell.line_result import RESULT_SCHEMA, LineResult, PartDefect, utc_now


def _result(**kw):
    base = dict(part_id="p-0001", campaign="line-1", verdict="NOK", reason="1 defect",
                started_at=utc_now(), finished_at=utc_now(), score=0.8, threshold=0.5)
    base.update(kw)
    return LineResult(**base)


def test_wire_form_is_strict_json_with_schema_and_defects():
    defect = PartDefect(x_mm=120.5, y_mm=45.0, area_mm2=14.0, bbox_mm=(118.0, 43.0, 123.0, 47.0), peak=0.9,
                        poses=("r0c1s0", "r0c2s0"))
    data = _result(defects=(defect,)).to_dict()
    text = json.dumps(data, allow_nan=False)  # raises on NaN / inf
    back = json.loads(text)
    assert back["schema"] == RESULT_SCHEMA
    assert back["defect_count"] == 1
    assert PartDefect.from_dict(back["defects"][0]) == defect


def test_non_finite_numbers_become_null_never_nan():
    data = _result(verdict="error", score=math.nan, threshold=math.inf, coverage=None).to_dict()
    assert data["score"] is None and data["threshold"] is None and data["coverage"] is None
    json.dumps(data, allow_nan=False)


def test_unknown_verdict_is_refused():
    with pytest.raises(ValueError, match="verdict"):
        _result(verdict="ok")
