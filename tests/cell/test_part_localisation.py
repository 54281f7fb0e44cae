"""Where the part map says a defect is, and how `cell eval` counts true defects (issue 18, localisation):
a defect's ``x_mm``, ``y_mm`` by ``part_map.centroid``, and a thin defect that the 0.5 mm grid breaks into
fragments counted as ONE true defect (found once, not missed several times)."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.plane_projection import PlaneGrid
from cell.part_evaluation import PartOutcome, localisation, true_defects
from cell.part_map import PartMap, PartMapConfig, PartMapError, defect_centroid

GRID = PlaneGrid.centred((0.03, 0.03), 0.0005)  # 60 x 60 cells of 0.5 mm; cell (r, c) at x = -15 + 0.5 c + 0.25


def part_map(fused: np.ndarray, **config) -> PartMap:
    ones = np.ones(GRID.shape, bool)
    return PartMap(GRID, fused.astype(np.float32), ones.astype(np.int32), ones, PartMapConfig(**config))


def skewed_defect() -> np.ndarray:
    """A peak of 1.0 over 2 x 2 cells centred at (0, 0) mm with a long faint tail (0.55) 10 mm to +x: the blur
    of a map reaching away from the defect on one side."""
    fused = np.full(GRID.shape, 0.1, np.float32)
    fused[29:31, 29:51] = 0.55
    fused[29:31, 29:31] = 1.0
    return fused


def test_peak_weighted_and_core_centroids_stay_on_the_peak_where_the_region_centroid_drifts():
    found = {how: part_map(skewed_defect(), centroid=how).defects(0.5) for how in ("region", "peak_weighted", "core")}
    assert all(len(d) == 1 for d in found.values())
    assert found["region"][0].x_mm == pytest.approx(5.0, abs=0.01)  # the middle of the 11 mm region
    assert found["core"][0].x_mm == pytest.approx(0.0, abs=0.01)  # only the cells halfway up to the peak
    # 4 peak cells weigh 0.5 each at x = 0, the 40 tail cells 0.05 each around x = 5.5 mm: halfway
    assert found["peak_weighted"][0].x_mm == pytest.approx((4 * 0.5 * 0.0 + 40 * 0.05 * 5.5) / 4.0, abs=0.01)
    assert all(d[0].y_mm == pytest.approx(0.0, abs=0.01) for d in found.values())
    # the region (area, box) is the same whatever the centroid: the cells above the threshold
    assert len({(d[0].area_mm2, d[0].bbox_mm) for d in found.values()}) == 1


def test_an_unknown_centroid_is_refused():
    with pytest.raises(PartMapError, match="centroid 'middle' unknown"):
        defect_centroid(np.zeros((1, 2)), np.ones(1), 0.5, "middle")
    with pytest.raises(ValueError):
        PartMapConfig(centroid="middle")


def test_fragments_of_a_thin_defect_are_one_true_defect_and_distinct_defects_stay_apart():
    mask = np.zeros(GRID.shape, bool)
    mask[10, 10:30] = True          # a thread ...
    mask[11, 31] = mask[9, 33] = True  # ... and two one-cell fragments beside its end (1-2 cells away)
    mask[40:44, 40:44] = True       # another defect 5 mm away from the thread
    assert len(true_defects(mask, 0.5, group_mm=0.0)) == 4  # each connected fragment on its own
    groups = true_defects(mask, 0.5)
    assert sorted(int(g.sum()) for g in groups) == [16, 22]
    assert not np.any(groups[0] & groups[1]) and np.array_equal(groups[0] | groups[1], mask)  # exactly the labels


def test_localisation_counts_the_fragmented_defect_once_and_measures_the_reported_centroid():
    truth = np.zeros(GRID.shape, np.float32)
    truth[29:31, 29:31] = 1.0  # the defect at (0, 0) mm ...
    truth[33, 29] = 1.0        # ... and a fragment 1.5 mm from it that the reported region does not reach
    outcome = lambda how: PartOutcome("p", "c", "defective", part_map(skewed_defect(), centroid=how), 1.0,  # noqa: E731
                                      part_map(truth))
    region = localisation([outcome("region")], 0.5)
    assert region["true_defects"] == 1 and region["labelled_fragments"] == 2 and region["hit_rate"] == 1.0
    assert localisation([outcome("region")], 0.5, group_mm=0.0)["hit_rate"] == 0.5  # the old count
    core = localisation([outcome("core")], 0.5)
    truth_x = float(GRID.cell_centres()[truth > 0.5][:, 0].mean() * 1e3)
    truth_y = float(GRID.cell_centres()[truth > 0.5][:, 1].mean() * 1e3)
    assert core["centroid_error_mm"]["median"] == pytest.approx(np.hypot(truth_x, truth_y), abs=1e-6)
    assert region["centroid_error_mm"]["median"] == pytest.approx(np.hypot(5.0 - truth_x, truth_y), abs=1e-6)
