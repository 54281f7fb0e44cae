"""A small, fast simulated cell for application tests: a 320x256 sensor with 4x larger pixels (the same
field of view as the default camera), small sheets and the 2 x 2 demo plan."""
from __future__ import annotations

from pathlib import Path

from cell.cell_factory import Cell, build_cell, load_campaign_file, load_cell_config

REPO = Path(__file__).resolve().parents[2]
SIM_CELL = REPO / "configs" / "cells" / "sim.yaml"
DEMO_CAMPAIGN = REPO / "configs" / "campaigns" / "demo.yaml"


def small_cell(seed: int = 0, defect_rate: float = 0.5) -> Cell:
    config = load_cell_config(SIM_CELL)
    camera = config.camera.model_copy(update={"width": 320, "height": 256, "pixel_size_um": 21.2})
    scene = config.scene.model_copy(update={"sheet_width_m": 0.12, "sheet_height_m": 0.10})
    config = config.model_copy(update={"camera": camera, "scene": scene})
    return build_cell(config, source="small test cell", seed=seed, defect_rate=defect_rate)


def demo_plan(cell: Cell):
    campaign = load_campaign_file(DEMO_CAMPAIGN)
    return campaign, cell.plan(campaign.plan)
