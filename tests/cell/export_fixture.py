"""One smoke model trained with ``cell train`` and exported with ``cell export`` to ONNX and OpenVINO, and the
per-image scores of a ``cell eval`` report: shared by the CLI export tests of every method."""
from __future__ import annotations

import csv
from pathlib import Path

from cell.cli import main
from tests.cell.mvtec_fixture import make_mvtec_folder, write_detector_config


def train_and_export(root: Path, method: str, smoke_config: dict) -> tuple[Path, Path, Path]:
    """Train ``method`` at ``smoke_config`` on a small synthetic MVTec folder under ``root`` and export it to both
    runtimes. Returns (root, data folder, model directory)."""
    data = make_mvtec_folder(root / "synthetic", n_train=8, n_test_good=3, n_test_defect=3)
    config = write_detector_config(root / f"{method}.yaml", method, smoke_config,
                                   threshold={"policy": "auto", "holdout_fraction": 0.3})
    model = root / "model"
    assert main(["train", "--detector", str(config), "--data", str(data), "--out", str(model)]) == 0
    assert main(["export", "--model", str(model), "--format", "onnx"]) == 0
    assert main(["export", "--model", str(model), "--format", "openvino"]) == 0
    return root, data, model


def report_scores(report: Path) -> dict[str, float]:
    """source -> image score of a ``cell eval`` report folder's scores.csv."""
    with open(report / "scores.csv", newline="") as handle:
        return {row["source"]: float(row["score"]) for row in csv.DictReader(handle)}
