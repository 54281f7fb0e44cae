"""The part map on hand-made views (issue 18, item 2): fusion rules, defects in mm, coverage, NaN maps."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.camera_model import CameraModel
from calibration.plane_projection import plane_to_pixels
from calibration.transforms import Transform
from cell.part_map import (
    PartFrame, PartMapAccumulator, PartMapConfig, PartMapError, PoseResult, fuse_layers, planned_coverage,
)

CAMERA = CameraModel.from_lens(200, 160, 0.0106, 1e-5, dist=(-0.05, 0.01, 0.0, 0.0, 0.0))  # ~66 x 53 mm at 0.35 m
MOUNT = Transform.from_pose([0.004, -0.002, 0.05, 0.0, 0.0, 0.02])  # camera in the TCP frame
PART = PartFrame(Transform.from_pose([0.0, -0.45, 0.0, 0.0, 0.0, 0.1]), (0.10, 0.08))


def tcp_over(x: float, y: float) -> np.ndarray:
    """The TCP pose that puts the camera 0.35 m above part point (x, y) (m), looking straight down."""
    T_part_cam = Transform.from_pose([x, y, 0.35, np.pi, 0.0, 0.0])
    return (PART.T_base_part @ T_part_cam @ MOUNT.inverse()).to_pose()


def view(pose_id: str, tcp: np.ndarray, hot_mm: list[tuple[float, float]], radius_mm: float = 2.0,
         level: float = 1.0, size: tuple[int, int] = (160, 200)) -> PoseResult:
    """A map of the view at ``tcp`` (background 0.1) with discs of ``level`` at part points ``hot_mm``."""
    amap = np.full(size, 0.1, np.float32)
    T_base_cam = Transform.from_pose(tcp) @ MOUNT
    for x, y in hot_mm:
        u, v = plane_to_pixels(CAMERA, T_base_cam, PART.T_base_part, np.array([[x * 1e-3, y * 1e-3]]))[0]
        scale = size[1] / CAMERA.width
        radius = radius_mm * 1e-3 * CAMERA.fx / 0.35 * scale
        cv2.circle(amap, (round((u + 0.5) * scale - 0.5), round((v + 0.5) * scale - 0.5)), max(1, round(radius)), level, -1)
    return PoseResult(pose_id, float(amap.max()), amap, tcp, (CAMERA.height, CAMERA.width))


def two_views(**config) -> PartMapAccumulator:
    """Two overlapping views: a defect at (5, 3) mm seen by both, a false alarm at (-12, -8) mm in view a only."""
    acc = PartMapAccumulator(CAMERA, MOUNT, PART, PartMapConfig(**config))
    acc.add(view("a", tcp_over(-0.01, 0.0), [(5.0, 3.0), (-12.0, -8.0)]))
    acc.add(view("b", tcp_over(0.012, 0.002), [(5.0, 3.0)]))
    return acc


def test_fusion_rules_on_known_cell_values() -> None:
    nan = np.nan
    layers = [np.array([[1.0, 4.0, nan]]), np.array([[5.0, nan, nan]]), np.array([[3.0, nan, nan]])]
    count = np.array([[3, 1, 0]])
    expect = {"max": [5, 4], "mean": [3, 4], "median": [3, 4]}
    for rule, values in expect.items():
        out = fuse_layers(layers, count, rule)
        assert out[0, :2].tolist() == values and np.isnan(out[0, 2])
    assert fuse_layers(layers, count, "kth", k=2)[0, :2].tolist() == [3, 4]  # fewer than k views: the lowest
    assert fuse_layers(layers, count, "kth", k=3)[0, 0] == 1
    even = fuse_layers([np.array([[2.0]]), np.array([[6.0]])], np.array([[2]]), "median")
    assert even[0, 0] == 4
    with pytest.raises(PartMapError, match="unknown"):
        fuse_layers(layers, count, "vote")


def test_a_defect_seen_twice_survives_kth_fusion_a_single_view_false_alarm_does_not() -> None:
    kth = two_views(fusion="kth", k=2).finish()
    defects = kth.defects(0.5)
    assert len(defects) == 1
    d = defects[0]
    assert d.x_mm == pytest.approx(5.0, abs=1.0) and d.y_mm == pytest.approx(3.0, abs=1.0)
    assert d.area_mm2 == pytest.approx(np.pi * 2.0**2, rel=0.35)
    x0, y0, x1, y1 = d.bbox_mm
    assert x0 < 5.0 < x1 and y0 < 3.0 < y1 and x1 - x0 == pytest.approx(4.0, abs=1.5)
    assert set(d.poses) == {"a", "b"} and d.peak == pytest.approx(1.0, abs=1e-3)
    maxed = two_views(fusion="max").finish()
    found = sorted((round(d.x_mm), round(d.y_mm)) for d in maxed.defects(0.5))
    assert len(found) == 2 and abs(found[0][0] + 12) <= 1 and abs(found[0][1] + 8) <= 1
    assert maxed.score == pytest.approx(1.0, abs=1e-3) and kth.score == pytest.approx(1.0, abs=1e-3)
    alarm = next(d for d in maxed.defects(0.5) if d.x_mm < 0)
    assert alarm.poses == ("a", "b")  # both saw the place (b saw nothing there: that is why kth drops it)


def test_mean_and_median_halve_a_single_view_alarm_where_two_views_overlap() -> None:
    for rule in ("mean", "median"):
        fused = two_views(fusion=rule).finish()
        row, col = fused.to_cells(-12.0, -8.0)
        assert fused.views[row, col] == 2
        assert fused.fused[row, col] == pytest.approx(0.55, abs=0.02)


def test_coverage_counts_only_the_part_outline_seen_by_some_view() -> None:
    acc = two_views()
    partial = acc.finish()
    assert 0.3 < partial.coverage < 0.95  # two views of 66 x 53 mm do not cover a 100 x 80 mm part
    plan = [type("P", (), {"pose_id": f"p{i}{j}", "pose": tcp_over(x, y)})()
            for i, x in enumerate((-0.03, 0.0, 0.03)) for j, y in enumerate((-0.025, 0.0, 0.025))]
    assert planned_coverage(plan, CAMERA, MOUNT, PART) == pytest.approx(1.0)
    assert planned_coverage(plan[:3], CAMERA, MOUNT, PART) < 0.9


def test_the_accumulator_is_incremental() -> None:
    acc = PartMapAccumulator(CAMERA, MOUNT, PART, PartMapConfig(fusion="kth"))
    acc.add(view("a", tcp_over(-0.01, 0.0), [(5.0, 3.0), (-12.0, -8.0)]))
    first = acc.finish()
    assert len(first.defects(0.5)) == 2  # one view: kth falls back to it
    acc.add(view("b", tcp_over(0.012, 0.002), [(5.0, 3.0)]))
    np.testing.assert_array_equal(acc.finish().fused, two_views(fusion="kth").finish().fused)
    assert acc.poses == ["a", "b"]


def test_a_low_resolution_map_gives_the_same_defect() -> None:
    acc = PartMapAccumulator(CAMERA, MOUNT, PART)
    acc.add(view("a", tcp_over(-0.01, 0.0), [(5.0, 3.0)], size=(40, 50)))
    acc.add(view("b", tcp_over(0.012, 0.002), [(5.0, 3.0)], size=(40, 50)))
    (d,) = acc.finish().defects(0.5)
    assert d.x_mm == pytest.approx(5.0, abs=1.0) and d.y_mm == pytest.approx(3.0, abs=1.0)


def test_a_nan_map_or_a_wrong_frame_size_is_refused() -> None:
    acc = PartMapAccumulator(CAMERA, MOUNT, PART)
    bad = view("a", tcp_over(0.0, 0.0), [])
    bad.anomaly_map[3, 4] = np.nan
    with pytest.raises(PartMapError, match="pose a: .*NaN"):
        acc.add(bad)
    with pytest.raises(PartMapError, match="frame is 100x80 px"):
        acc.add(PoseResult("b", 0.1, np.zeros((80, 100)), tcp_over(0.0, 0.0), (80, 100)))
    with pytest.raises(PartMapError, match="no scored views"):
        acc.finish()


def test_mosaic_shows_the_part_from_the_views_pixels() -> None:
    acc = PartMapAccumulator(CAMERA, MOUNT, PART)
    result = view("a", tcp_over(0.0, 0.0), [])
    acc.add(result, image=np.full((160, 200), 200, np.uint8))
    part_map = acc.finish()
    assert part_map.mosaic is not None and part_map.mosaic.shape == part_map.fused.shape
    seen = part_map.views > 0
    assert np.all(part_map.mosaic[seen] == 200) and np.all(part_map.mosaic[~seen] == 0)


def test_part_frame_from_a_stored_plan() -> None:
    frame = PartFrame.from_plan({"part_center_pose": [0, -0.45, 0, 0, 0, 0], "part_size_m": [0.3, 0.25]})
    assert frame.size_m == (0.3, 0.25)
    with pytest.raises(PartMapError, match="part_size_m"):
        PartFrame.from_plan({"part_center_pose": [0, -0.45, 0, 0, 0, 0], "part_size_m": [0.3, -1]})


def test_edge_mm_leaves_a_band_inside_the_outline_unjudged():
    acc = PartMapAccumulator(CAMERA, MOUNT, PART, PartMapConfig(edge_mm=5.0))
    near_edge = (-47.0, 0.0)  # 3 mm from the part's left edge at x = -50 mm
    acc.add(view("a", tcp_over(-0.03, 0.0), [near_edge, (-30.0, 0.0)], radius_mm=1.0))
    part_map = acc.finish()
    assert [round(d.x_mm) for d in part_map.defects(0.5)] == [-30]
    row, col = part_map.to_cells(*near_edge)
    assert not part_map.outline[row, col] and part_map.outline[part_map.to_cells(-30.0, 0.0)]
    full = PartMapAccumulator(CAMERA, MOUNT, PART)
    full.add(view("a", tcp_over(-0.03, 0.0), [near_edge, (-30.0, 0.0)], radius_mm=1.0))
    assert len(full.finish().defects(0.5)) == 2


def test_finish_with_another_config_refuses_without_reprojecting():
    acc = two_views(fusion="max")
    for rule in ("mean", "kth"):
        np.testing.assert_array_equal(acc.finish(PartMapConfig(fusion=rule)).fused,
                                      two_views(fusion=rule).finish().fused)
    banded = acc.finish(PartMapConfig(edge_mm=5.0))
    assert banded.config.edge_mm == 5.0 and banded.outline.sum() < acc.finish().outline.sum()
    with pytest.raises(PartMapError, match="cell_mm"):
        acc.finish(PartMapConfig(cell_mm=1.0))


def _good_map_with_hot_edge(edge_level: float, reach_mm: float):
    """A good part whose map is 0.1 inside and ``edge_level`` within ``reach_mm`` of the outline's edge."""
    from calibration.plane_projection import PlaneGrid
    from cell.part_map import PartMap, edge_distance_mm

    grid = PlaneGrid.centred((0.06, 0.06), 0.0005)
    distance = edge_distance_mm(grid, (0.06, 0.06))
    fused = np.where(distance < reach_mm, edge_level, 0.1).astype(np.float32)
    fused[60, 60] = 0.2  # the interior's highest cell
    ones = np.ones(grid.shape, bool)
    return PartMap(grid, fused, ones.astype(np.int32), ones, PartMapConfig())


def test_edge_band_is_chosen_where_good_parts_edge_scores_fall_to_the_interior_level():
    from cell.part_map import choose_edge_mm

    chosen = choose_edge_mm([_good_map_with_hot_edge(0.9, 6.0), _good_map_with_hot_edge(0.5, 3.0)], (0.06, 0.06),
                            interior_mm=15.0)
    assert chosen["edge_mm"] == 6.0 and chosen["interior_max"] == pytest.approx(0.2)
    assert chosen["band_max"]["5-6"] == pytest.approx(0.9) and chosen["band_max"]["6-7"] == pytest.approx(0.1)
    assert choose_edge_mm([_good_map_with_hot_edge(0.05, 6.0)], (0.06, 0.06), interior_mm=15.0)["edge_mm"] == 0.0
    with pytest.raises(PartMapError, match="no good part maps"):
        choose_edge_mm([], (0.06, 0.06))
