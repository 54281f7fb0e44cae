"""The part map's unjudged edge band as `cell train` chooses it and the line uses it (issue 18): chosen on the
held-out good parts (``part_map.edge_mm: auto``, the default) or taken from the detector config, recorded with
its provenance in ``part_threshold.json``; ``cell inspect`` judges with the stored band, and a model directory
from before the band (no ``edge_band`` in its provenance) keeps the band its threshold was chosen with."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from calibration.plane_projection import PlaneGrid
from cell.errors import ConfigFileError
from cell.part_map import PartMap, PartMapConfig, edge_distance_mm
from cell.part_threshold import PartThreshold, write_part_threshold
from cell.training import TrainPartMapConfig, edge_band_for, load_train_config
from detectors.thresholds import ThresholdDecision

SIZE_M = (0.08, 0.06)


class _Projected:
    """A held-out good part as training holds it (an accumulator: ``finish(config)``, ``part.size_m``), whose
    map is 0.1 inside and ``edge_level`` within ``reach_mm`` of the outline's edge."""

    def __init__(self, edge_level: float, reach_mm: float, size_m: tuple[float, float] = SIZE_M) -> None:
        self.part = SimpleNamespace(size_m=size_m)
        self.edge_level, self.reach_mm = edge_level, reach_mm
        self.finished_with: list[float] = []

    def finish(self, config: PartMapConfig) -> PartMap:
        self.finished_with.append(config.edge_mm)
        grid = PlaneGrid.centred(self.part.size_m, 0.0005)
        fused = np.where(edge_distance_mm(grid, self.part.size_m) < self.reach_mm, self.edge_level, 0.1).astype(np.float32)
        fused[grid.shape[0] // 2, grid.shape[1] // 2] = 0.2  # the interior's highest cell
        ones = np.ones(grid.shape, bool)
        return PartMap(grid, fused, ones.astype(np.int32), ones, config)


def test_auto_chooses_the_band_on_the_held_out_good_parts_with_its_profile():
    parts = {"holdout-0001": _Projected(0.9, 6.0), "holdout-0002": _Projected(0.5, 3.0)}
    band = edge_band_for(TrainPartMapConfig(), parts)  # edge_mm: auto is the default
    assert band["edge_mm"] == 6.0 and band["source"].startswith("auto")
    assert band["parts"] == ["holdout-0001", "holdout-0002"] and band["interior_max"] == pytest.approx(0.2)
    assert band["band_max"]["5-6"] == pytest.approx(0.9) and band["band_max"]["6-7"] == pytest.approx(0.1)
    assert all(edge == 0.0 for p in parts.values() for edge in p.finished_with)  # chosen on unbanded maps


def test_a_number_in_the_config_is_used_as_given():
    band = edge_band_for(TrainPartMapConfig(edge_mm=2.5), {"holdout-0001": _Projected(0.9, 6.0)})
    assert band == {"edge_mm": 2.5, "source": "config (part_map.edge_mm)"}
    assert TrainPartMapConfig(edge_mm=2.5).with_edge(2.5) == PartMapConfig(edge_mm=2.5)


def test_parts_without_an_interior_are_judged_whole_and_say_why():
    small = _Projected(0.9, 6.0, size_m=(0.03, 0.03))  # nothing 20 mm in from the edge of a 30 mm part
    band = edge_band_for(TrainPartMapConfig(), {"holdout-0001": small})
    assert band["edge_mm"] == 0.0 and "whole outline is judged" in band["reason"]


@pytest.mark.parametrize("value, expected", [(-1, "part_map.edge_mm"), ("wide", "part_map.edge_mm")])
def test_a_bad_edge_band_in_the_detector_config_is_one_line_naming_the_key(tmp_path, value, expected):
    import yaml

    path = tmp_path / "detector.yaml"
    path.write_text(yaml.safe_dump({"method": "simplenet", "part_map": {"edge_mm": value}}))
    with pytest.raises(ConfigFileError) as info:
        load_train_config(path)
    assert expected in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("stored, expected_mm", [({"fusion": "max", "edge_mm": 7.0}, 7.0), ({"fusion": "max"}, 0.0)])
def test_inspect_judges_with_the_stored_band_and_an_older_model_keeps_its_own(tmp_path, stored, expected_mm):
    """``cell inspect``'s judge takes the band stored with the part threshold; a model directory written before
    the band was chosen (no ``edge_band``, no ``edge_mm``) keeps the config default its threshold was chosen
    with (0: the whole outline)."""
    from rich.console import Console

    from cell.commands.inspect import part_judge
    from tests.cell.sim_fixtures import demo_plan, small_cell

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.yaml").write_text("method: stand-in\n")
    write_part_threshold(model, PartThreshold(ThresholdDecision(0.5, "good_quantile"), stored, {"chosen_on": "test"}))
    cell = small_cell()
    campaign, plan = demo_plan(cell)
    judge = part_judge(cell, campaign, plan, model, None, Console(file=open(tmp_path / "console.txt", "w")))
    assert judge.config.edge_mm == expected_mm and judge.threshold.value == 0.5
