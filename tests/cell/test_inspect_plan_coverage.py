"""`cell inspect` warns when the plan does not cover the part, and the README's inspect example pairs a cell
with a plan that covers its sheets (issue 18, item 8)."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from cell.cell_factory import load_campaign_file, load_cell
from cell.commands.inspect import part_judge
from cell.errors import CellError
from cell.part_map import PartFrame, planned_coverage
from cell.part_threshold import PartThreshold, write_part_threshold
from detectors.thresholds import ThresholdDecision

REPO = Path(__file__).resolve().parents[2]


def judge_output(tmp_path: Path, cell_file: str, campaign_file: str, override=None) -> tuple[str, object]:
    cell = load_cell(REPO / cell_file)
    campaign = load_campaign_file(REPO / campaign_file)
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.yaml").write_text("method: stand-in\n")  # marks a model directory
    write_part_threshold(model, PartThreshold(ThresholdDecision(0.5, "manual"), {"fusion": "kth", "k": 2}))
    out = io.StringIO()
    judge = part_judge(cell, campaign, cell.plan(campaign.plan), model, override, Console(file=out, width=300))
    return out.getvalue(), judge


def test_a_plan_smaller_than_the_simulated_sheets_is_warned_about(tmp_path):
    text, judge = judge_output(tmp_path, "configs/cells/sim.yaml", "configs/campaigns/demo.yaml")
    assert "warning:" in text and "0.3 x 0.25 m" in text and "0.12 x 0.1 m part" in text
    assert "not inspected" in text
    assert judge.threshold.value == 0.5 and judge.config.fusion == "kth"


def test_the_raster_plan_covers_the_sheets_without_a_warning(tmp_path):
    text, judge = judge_output(tmp_path, "configs/cells/sim.yaml", "configs/campaigns/sheet_raster.yaml", 0.7)
    assert "warning" not in text
    assert judge.threshold.value == 0.7 and judge.threshold.policy == "manual"  # --part-threshold wins


def test_a_model_without_a_part_threshold_is_refused_naming_how_to_make_one(tmp_path):
    cell = load_cell(REPO / "configs/cells/sim.yaml")
    campaign = load_campaign_file(REPO / "configs/campaigns/sheet_raster.yaml")
    (tmp_path / "model").mkdir()
    with pytest.raises(CellError, match="cell train.*--part-threshold"):
        part_judge(cell, campaign, cell.plan(campaign.plan), tmp_path / "model", None, Console(file=io.StringIO()))


def test_the_readme_inspect_example_plan_covers_the_cells_sheets():
    line = next(l for l in (REPO / "README.md").read_text().splitlines() if l.startswith("| the line |"))
    args = re.search(r"`(cell inspect [^`]+)`", line).group(1).split()
    cell = load_cell(REPO / args[args.index("--cell") + 1])
    campaign = load_campaign_file(REPO / args[args.index("--campaign") + 1])
    sheet = (cell.scene.config.sheet_width_m, cell.scene.config.sheet_height_m)
    assert sheet[0] <= campaign.plan.part_size_m[0] + 1e-9 and sheet[1] <= campaign.plan.part_size_m[1] + 1e-9
    coverage = planned_coverage(cell.plan(campaign.plan), cell.camera_model, cell.T_flange_cam,
                                PartFrame.from_plan(campaign.plan))
    assert coverage == pytest.approx(1.0)
