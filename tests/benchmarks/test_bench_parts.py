"""benchmarks/bench_parts.py's own bookkeeping: the per-part score cache (resume / re-fuse without scoring again)
and the truth-region accounting of the unjudged edge band (the benchmark itself is too heavy for the suite)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import bench_parts


@dataclass
class Record:
    part_id: str
    pose_id: str
    campaign: str = "good"


class Store:
    def __init__(self, poses: list[str]) -> None:
        self.records = [Record("good-0001", p) for p in poses]

    def captures(self, campaign: str) -> list[Record]:
        return [r for r in self.records if r.campaign == campaign]

    def load_image(self, record: Record) -> np.ndarray:
        return np.full((8, 8), float(record.pose_id[-1]), np.float32)


def test_scores_are_cached_per_part_and_rescored_when_its_poses_differ(tmp_path: Path, monkeypatch) -> None:
    import detectors.input_prep as input_prep

    calls = []

    def score_working(detector, pixels, spec):  # noqa: ANN001
        calls.append(1)
        return float(pixels.mean()), np.asarray(pixels[:4, :4] * 2.0, np.float32)

    monkeypatch.setattr(input_prep, "score_working", score_working)
    model = SimpleNamespace(detector=None, spec=None)
    first = bench_parts.score_parts(Store(["p1", "p2"]), model, ["good"], cache=tmp_path)
    assert len(calls) == 2 and (tmp_path / "good" / "good-0001.npz").is_file()
    again = bench_parts.score_parts(Store(["p1", "p2"]), model, ["good"], cache=tmp_path)
    assert len(calls) == 2  # read back, not scored again
    for (r1, s1, m1), (r2, s2, m2) in zip(first["good-0001"], again["good-0001"]):
        assert r1.pose_id == r2.pose_id and s1 == s2 and np.array_equal(m1, m2)
    bench_parts.score_parts(Store(["p1", "p3"]), model, ["good"], cache=tmp_path)
    assert len(calls) == 4  # other poses: the cache does not belong to these captures


def test_a_true_defect_inside_the_unjudged_band_is_counted_as_such_not_as_a_hit_or_a_miss() -> None:
    from calibration.plane_projection import PlaneGrid
    from cell.part_evaluation import PartOutcome
    from cell.part_map import PartMap, PartMapConfig

    grid = PlaneGrid.centred((0.04, 0.04), 0.001)  # 40 x 40 cells of 1 mm
    ones = np.ones(grid.shape, bool)
    truth_values = np.zeros(grid.shape, np.float32)
    truth_values[1:3, 20:22] = 1.0   # 1-3 mm from the top edge: inside a 5 mm band
    truth_values[18:21, 18:21] = 1.0  # in the middle, not found
    fused = np.full(grid.shape, 0.1, np.float32)
    inner = np.zeros(grid.shape, bool)
    inner[5:35, 5:35] = True
    part = PartMap(grid, fused, ones.astype(np.int32), inner, PartMapConfig(edge_mm=5.0))
    truth = PartMap(grid, truth_values, ones.astype(np.int32), ones, PartMapConfig())
    counted = bench_parts.missed_truth([PartOutcome("d1", "defective", "defective", part, 1.0, truth)], 0.5)
    assert counted["true_defects_on_outline"] == 2 and counted["entirely_in_unjudged_band"] == 1
    (missed,) = counted["missed"]
    assert missed["part_id"] == "d1" and missed["area_mm2"] == pytest.approx(9.0)
    assert missed["peak_inside"] == pytest.approx(0.1)
