"""The whole cell on the simulation through the CLI: capture good parts -> train -> inspect new parts.
Defective parts must outscore good ones, and every part must get a verdict row."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from acquisition.store import CaptureStore
from cell.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_cell_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    cell = yaml.safe_load((REPO / "configs" / "cells" / "sim.yaml").read_text())
    # a 320x256 sensor with 4x larger pixels: the default camera's field of view at a 16th of the pixels
    cell["camera"].update(width=320, height=256, pixel_size_um=21.2)
    cell["scene"].update(sheet_width_m=0.12, sheet_height_m=0.10)
    cell["scene"]["defects"]["kinds"] = ["nut", "washer", "screwdriver", "metal_part", "stain"]
    (root / "cell.yaml").write_text(yaml.safe_dump(cell))
    detector = {
        "method": "simplenet",
        "config": {"image_size": 128, "pretrain_dim": 128, "target_dim": 128, "hidden_dim": 128,
                   "feature_norm": "standardize", "noise_std": 0.3, "meta_epochs": 3, "epochs_per_meta": 2,
                   "batch_size": 8, "device": "cpu", "seed": 0},
        "input": {"mode": "tile", "scale": 0.5, "overlap": 0.25},
        "threshold": {"policy": "auto", "quantile": 0.99, "holdout_fraction": 0.25},
    }
    (root / "detector.yaml").write_text(yaml.safe_dump(detector))
    return root


def test_capture_train_inspect_on_the_simulated_cell(small_cell_files):
    root = small_cell_files
    store = root / "store"
    campaign = REPO / "configs" / "campaigns" / "demo.yaml"
    assert main(["capture", "--cell", str(root / "cell.yaml"), "--campaign", str(campaign), "--parts", "8",
                 "--out", str(store), "--name", "train", "--defect-rate", "0"]) == 0
    assert main(["train", "--detector", str(root / "detector.yaml"), "--data", str(store), "--campaign", "train",
                 "--out", str(root / "model")]) == 0
    threshold = json.loads((root / "model" / "threshold.json").read_text())
    assert threshold["policy"] == "good_quantile"
    # the part threshold: chosen on the held-out good PARTS, fused as the line fuses them, with provenance
    part_threshold = json.loads((root / "model" / "part_threshold.json").read_text())
    provenance = json.loads((root / "model" / "provenance.json").read_text())
    held_out_parts = {e["source"].split("/")[1] for e in provenance["threshold_holdout_good"]}
    assert part_threshold["policy"] == "good_quantile" and part_threshold["provenance"]["part_map"]["fusion"]
    assert set(part_threshold["provenance"]["holdout_good_parts"]) == held_out_parts
    assert part_threshold["value"] >= max(part_threshold["provenance"]["holdout_good_parts"].values()) * 0.9
    # the unjudged edge band: chosen on the same held-out good parts (part_map.edge_mm: auto), stored with them
    band = part_threshold["provenance"]["edge_band"]
    assert band["source"].startswith("auto") and set(band["parts"]) == held_out_parts and band["band_max"]
    assert part_threshold["provenance"]["part_map"]["edge_mm"] == band["edge_mm"]
    code = main(["inspect", "--cell", str(root / "cell.yaml"), "--campaign", str(campaign), "--model",
                 str(root / "model"), "--store", str(store), "--parts", "8", "--name", "line",
                 "--defect-rate", "0.5", "--seed", "5"])
    assert code == 0  # no part ended in error
    with CaptureStore(store) as opened:
        records = opened.inspections()
        labels = {p.part_id: p.label for p in opened.parts()}
        assert len(opened.captures(campaign="line")) == 8 * 4
    assert len(records) == 8 and {r.verdict for r in records} <= {"OK", "NOK"}
    assert all(r.scores["rule"] == "part_map" and r.scores["coverage"] >= 0.999 for r in records)
    assert all(r.scores["edge_mm"] == band["edge_mm"] for r in records)  # the line judges with the stored band
    assert all(bool(r.scores["defects"]) == (r.verdict == "NOK") for r in records)
    assert all((store / r.scores["part_map"]).is_file() for r in records)
    scores = {r.part_id: r.scores["max"] for r in records}
    good = [s for p, s in scores.items() if labels[p] == "good"]
    defective = [s for p, s in scores.items() if labels[p] == "defective"]
    assert good and defective, labels
    assert np.mean(defective) > np.mean(good)
    assert max(defective) > max(good)
    nok = [r for r in records if r.verdict == "NOK"]
    assert all(r.scores["heatmaps"] and (store / r.scores["heatmaps"][0]).is_file() for r in nok)
