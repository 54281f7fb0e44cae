"""Threshold policies chosen on validation scores (NOK when score > threshold)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from detectors.errors import DetectorConfigError, ImageSetError
from detectors.thresholds import ThresholdDecision, choose_threshold


def test_good_quantile_and_stats() -> None:
    good = np.arange(1, 101, dtype=np.float64)  # 1..100
    decision = choose_threshold("good_quantile", good, quantile=0.9)
    # linear quantile of 1..100 at 0.9: position 0.9 * 99 = 89.1 -> 90 + 0.1 * (91 - 90) = 90.1
    assert decision.value == pytest.approx(90.1)
    assert decision.policy == "good_quantile"
    stats = decision.stats
    assert stats["quantile"] == 0.9 and stats["n_good"] == 100
    assert stats["good_mean"] == pytest.approx(50.5) and stats["good_max"] == 100.0
    assert stats["good_std"] == pytest.approx(np.std(good))
    assert stats["good_pass_rate"] == pytest.approx(0.90)  # 1..90 pass, 91..100 rejected
    assert stats["n_defect"] == 0


def test_zero_miss_catches_every_defect_and_reports_pg0() -> None:
    good = np.array([0.1, 0.2, 0.3, 0.5], dtype=np.float32)
    defects = np.array([0.3, 0.8], dtype=np.float32)
    decision = choose_threshold("zero_miss", good, defects)
    assert decision.is_anomalous(defects).all()
    assert decision.value < 0.3 and decision.value > 0.2
    # good 0.1, 0.2 pass; 0.3 (tied with the lowest defect) and 0.5 are rejected -> PG0 on validation 0.5
    assert decision.stats["good_pass_rate"] == pytest.approx(0.5)
    assert decision.stats["defect_catch_rate"] == 1.0
    assert decision.stats["defect_min"] == pytest.approx(0.3)


def test_zero_miss_needs_defects() -> None:
    with pytest.raises(ImageSetError, match="needs labelled validation defects"):
        choose_threshold("zero_miss", [0.1, 0.2])


def test_manual_keeps_value_and_describes_split() -> None:
    decision = choose_threshold("manual", [0.1, 0.4], [0.3, 0.9], manual=0.35)
    assert decision.value == 0.35
    assert decision.stats["good_pass_rate"] == pytest.approx(0.5)
    assert decision.stats["defect_catch_rate"] == pytest.approx(0.5)
    with pytest.raises(DetectorConfigError, match="needs a value"):
        choose_threshold("manual", [0.1])


def test_bad_inputs() -> None:
    with pytest.raises(DetectorConfigError, match="threshold policy 'median' unknown"):
        choose_threshold("median", [0.1])  # type: ignore[arg-type]
    with pytest.raises(ImageSetError, match="no held-out good scores"):
        choose_threshold("good_quantile", [])
    with pytest.raises(DetectorConfigError, match="quantile must be in"):
        choose_threshold("good_quantile", [0.1], quantile=1.5)
    with pytest.raises(DetectorConfigError, match="NaN"):
        choose_threshold("good_quantile", [0.1, float("nan")])


def test_round_trip_through_json() -> None:
    decision = choose_threshold("zero_miss", [0.1, 0.2], [0.5])
    again = ThresholdDecision.from_dict(json.loads(json.dumps(decision.to_dict())))
    assert again == decision
    with pytest.raises(DetectorConfigError, match="threshold"):
        ThresholdDecision.from_dict({"policy": "manual"})
