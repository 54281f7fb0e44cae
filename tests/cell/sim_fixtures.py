"""A small, fast simulated cell for application tests: a 320x256 sensor with 4x larger pixels (the same
field of view as the default camera), small sheets and the 2 x 2 demo plan."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

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


class LocalContrastDetector:
    """Stands in for a trained model: the map is the absolute deviation from a blurred copy, so the line's
    logic is tested without training anything."""

    config = SimpleNamespace(image_size=64)

    def predict(self, images):
        import torch.nn.functional as F

        from detectors.base import Prediction

        gray = images.mean(dim=1, keepdim=True)
        blurred = F.avg_pool2d(gray, 15, stride=1, padding=7, count_include_pad=False)
        maps = (gray - blurred).abs()[:, 0].numpy()
        return Prediction(score=maps.reshape(len(maps), -1).max(axis=1), anomaly_map=maps)
