"""``cell eval`` on a capture store reports the part level beside the image level (issue 18, item 5)."""
from __future__ import annotations

import json

import pytest

from acquisition.store import CaptureStore
from cell.inspection import InspectConfig, PartJudge, run_inspection
from detectors.input_prep import InputSpec
from cell.part_map import PartFrame, PartMapConfig
from cell.part_threshold import PartThreshold, write_part_threshold
from detectors.model_dir import TrainedModel
from detectors.thresholds import ThresholdDecision
from tests.cell.sim_fixtures import LocalContrastDetector, demo_plan, small_cell


@pytest.fixture(scope="module")
def inspected(tmp_path_factory):
    """A store with an inspection campaign of 2 good and 2 defective simulated parts, and a model directory
    holding only its part threshold (the detector is a stand-in)."""
    root = tmp_path_factory.mktemp("eval_parts")
    cell = small_cell(seed=4)
    campaign, plan = demo_plan(cell)
    config = PartMapConfig(fusion="kth", k=2)
    judge = PartJudge(ThresholdDecision(0.3, "manual"), cell.camera_model, cell.T_flange_cam,
                      PartFrame.from_plan(campaign.plan), config)
    kinds = iter(["good", "defective", "good", "defective"])
    with CaptureStore(root / "store", create=True) as store, cell:
        run_inspection(
            robot=cell.robot, camera=cell.camera, store=store, plan=plan, speed=campaign.plan.speed,
            accel=campaign.plan.accel, envelope=cell.envelope, parts=4, campaign="line",
            detector=LocalContrastDetector(), spec=InputSpec(mode="tile", scale=1.0),
            threshold=ThresholdDecision(1e9, "manual"), config=InspectConfig(heatmaps="none"),
            on_new_part=lambda part_id: cell.scene.new_part(part_id, kind=next(kinds)).kind, judge=judge,
            campaign_config={"plan": campaign.plan.model_dump(mode="json"), "geometry": cell.describe()},
        )
    model = root / "model"
    model.mkdir()
    (model / "config.yaml").write_text("method: stand-in\n")  # marks a model directory; the detector is patched in
    write_part_threshold(model, PartThreshold(ThresholdDecision(0.3, "manual"), config.model_dump(mode="json"),
                                              {"chosen_on": "test"}))
    return root, model


def test_metrics_json_has_a_part_level_section_with_both_rules_and_localisation(inspected, monkeypatch):
    import cell.evaluation as evaluation

    root, model = inspected
    monkeypatch.setattr(evaluation, "load_model_for_runtime", lambda directory, **kw: TrainedModel(
        directory, LocalContrastDetector(), InputSpec(mode="tile", scale=1.0), ThresholdDecision(0.3, "manual")))
    out = root / "report"
    evaluation.evaluate_model(model, root / "store", out, campaigns=["line"])
    section = json.loads((out / "metrics.json").read_text())["part_level"]
    assert section["n_good_parts"] == 2 and section["n_defective_parts"] == 2
    assert section["fusion"] == "kth (k=2)" and section["part_threshold"] == 0.3
    assert section["edge_mm"] == 0.0 and section["edge_band"] is None  # the stored band; none chosen for this model
    for rule in ("part_map", "max_image"):
        assert 0.0 <= section["rules"][rule]["auroc"] <= 1.0
        assert 0.0 <= section["rules"][rule]["at_zero_miss"]["false_reject_rate"] <= 1.0
    assert set(section["at_part_threshold"]) >= {"missed_defective_parts", "false_rejects", "false_reject_rate"}
    loc = section["localisation"]
    assert loc["true_defects"] >= 2 and 0 <= loc["hit"] <= loc["true_defects"]
    assert loc["false_defects_per_good_part"] >= 0
    if loc["hit"]:
        assert loc["centroid_error_mm"]["median"] >= 0
    parts = section["parts"]
    assert len(parts) == 4 and all(p["coverage"] == pytest.approx(1.0, abs=1e-3) for p in parts)
    assert section["figures"] and all((out / f["file"]).is_file() for f in section["figures"])
    html = (out / "report.html").read_text()
    assert "Part level" in html and section["figures"][0]["file"] in html


def test_localisation_finds_a_planted_defect_where_the_truth_is():
    import numpy as np

    from cell.part_evaluation import PartOutcome, localisation
    from cell.part_map import PartMap
    from calibration.plane_projection import PlaneGrid

    grid = PlaneGrid.centred((0.02, 0.02), 0.001)  # 20 x 20 cells of 1 mm
    fused = np.zeros((20, 20), np.float32)
    fused[4:8, 4:8] = 1.0   # reported region, centre (-10 + 6, 10 - 6) = (-4, 4) mm
    fused[15:17, 15:17] = 1.0  # a false defect
    truth = np.zeros((20, 20), np.float32)
    truth[5:9, 5:9] = 1.0  # true region, centre (-3, 3) mm
    views = np.ones((20, 20), int)
    outline = np.ones((20, 20), bool)
    config = PartMapConfig()
    part = PartOutcome("p", "c", "defective", PartMap(grid, fused, views, outline, config), 1.0,
                       PartMap(grid, truth, views, outline, config))
    good = PartOutcome("g", "c", "good", PartMap(grid, fused.copy(), views, outline, config), 1.0)
    result = localisation([part, good], 0.5)
    assert result["true_defects"] == 1 and result["hit"] == 1 and result["hit_rate"] == 1.0
    assert result["centroid_error_mm"]["median"] == pytest.approx(np.sqrt(2.0), abs=1e-6)
    assert result["false_defects_on_defective_parts"] == 1 and result["false_defects_per_good_part"] == 2.0
