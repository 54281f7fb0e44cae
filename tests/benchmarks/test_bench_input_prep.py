"""The resize benchmark on a tiny synthetic MVTec folder (CPU, CFA at its smoke config, seconds)."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks import bench_input_prep
from detectors import registry
from tests.cell.mvtec_fixture import make_mvtec_folder

CFA_SMOKE = {**registry.detector_class("cfa").smoke_config, "epochs": 1, "pretrained": "none"}


def _sets(config: dict) -> list[str]:
    return [arg for key, value in config.items() for arg in ("--set", f"{key}={value}")]


def test_both_resizes_are_measured_and_a_winner_chosen(tmp_path: Path) -> None:
    data = make_mvtec_folder(tmp_path / "tiny96", n_train=4, n_test_good=2, n_test_defect=2, size=96)
    out = tmp_path / "results"
    assert bench_input_prep.main(["--dataset", str(data), "--out", str(out), "--max-train", "3", *_sets(CFA_SMOKE)]) == 0
    result = json.loads((out / "input_prep_tiny96_64.json").read_text())
    assert [r["resize"] for r in result["results"]] == list(bench_input_prep.CANDIDATES)
    for r in result["results"]:
        assert 0.0 <= r["image_auroc"] <= 1.0 and 0.0 <= r["pixel_auroc"] <= 1.0
        assert r["n_images_resized"] == 3 + 4 and r["resize_ms_per_image_median"] > 0
        assert r["load_average_before"] >= 0
    assert result["winner"] in bench_input_prep.CANDIDATES and result["why"]


def test_the_winner_rule() -> None:
    a = {"resize": "a", "image_auroc": 0.99, "pixel_auroc": 0.950, "resize_ms_per_image_median": 2.0}
    b = {"resize": "b", "image_auroc": 0.99, "pixel_auroc": 0.953, "resize_ms_per_image_median": 1.0}
    assert bench_input_prep.choose([a, b])[0] == "b"  # equal within 0.005: the faster
    b_slow_better = {**b, "pixel_auroc": 0.97, "resize_ms_per_image_median": 5.0}
    assert bench_input_prep.choose([a, b_slow_better]) == ("b", "the higher pixel AUROC")


def test_a_dataset_already_at_the_model_size_is_refused(tmp_path: Path, capsys) -> None:
    data = make_mvtec_folder(tmp_path / "tiny64", n_train=2, n_test_good=1, n_test_defect=1, size=64)
    assert bench_input_prep.main(["--dataset", str(data), "--out", str(tmp_path / "r"), *_sets(CFA_SMOKE)]) == 2
    err = capsys.readouterr().err.strip()
    assert "every image is already 64 x 64 px" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
