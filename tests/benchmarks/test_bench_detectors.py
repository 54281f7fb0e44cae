"""The detector benchmark and the TSDN diagnosis on a tiny synthetic MVTec folder (CPU, smoke configs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import bench_detectors, diagnose_tsdn
from detectors import registry
from detectors.input_prep import prepared_mvtec_split
from tests.cell.mvtec_fixture import make_mvtec_folder

TSDN_SMOKE = {**registry.detector_class("tsdn").smoke_config, "epochs": 2}


def _sets(config: dict) -> list[str]:
    args = []
    for key, value in config.items():
        text = json.dumps(value) if isinstance(value, list) else str(value)
        args += ["--set", f"{key}={text}"]
    return args


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_mvtec_folder(tmp_path_factory.mktemp("mvtec") / "tiny", n_train=6, n_test_good=3, n_test_defect=3)


def test_benchmark_writes_results_and_saves_the_model_it_scored(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = bench_detectors.main(["--method", "tsdn", "--dataset", str(tiny), "--out", str(out), "--repeats", "1",
                                 "--save-model", str(tmp_path / "model"), *_sets(TSDN_SMOKE)])
    assert code == 0
    result = json.loads((out / "tsdn_tiny.json").read_text())
    assert result["n_train"] == 6 and result["n_test"] == 6
    assert 0.0 <= result["metrics"]["pixel_auroc"] <= 1.0
    assert result["config"]["epochs"] == 2
    assert "| tsdn | tiny |" in (out / "detectors.md").read_text()
    # The saved model is the one that was scored: it reproduces the benchmark's image AUROC.
    model = diagnose_tsdn.load_detector(tmp_path / "model", expected_method="tsdn", device="cpu")
    test = prepared_mvtec_split(tiny, "test", 64)
    pred = model.predict(test.stack_images())
    from detectors.metrics import image_auroc

    assert image_auroc(pred.score, test.labels) == pytest.approx(result["metrics"]["image_auroc"], abs=1e-6)


def test_benchmark_rejects_a_folder_that_is_not_mvtec(tmp_path: Path, capsys) -> None:
    code = bench_detectors.main(["--method", "tsdn", "--dataset", str(tmp_path), "--out", str(tmp_path / "r"),
                                 *_sets(TSDN_SMOKE)])
    assert code == 2
    assert f"{tmp_path}: not an MVTec-layout folder" in capsys.readouterr().err


def test_an_unusable_save_model_path_fails_before_training(tiny: Path, tmp_path: Path, capsys) -> None:
    occupied = tmp_path / "model"
    occupied.write_text("a file, not a folder")
    code = bench_detectors.main(["--method", "tsdn", "--dataset", str(tiny), "--out", str(tmp_path / "r"),
                                 "--save-model", str(occupied), *_sets(TSDN_SMOKE)])
    assert code == 2
    err = capsys.readouterr()
    assert f"--save-model {occupied}: exists and is not a folder" in err.err
    assert "tsdn on tiny" not in err.out  # refused before the run started
    assert not (tmp_path / "r").exists()


def test_tsdn_diagnosis_compares_real_defects_with_surf_fills(tiny: Path, tmp_path: Path, capsys) -> None:
    detector = registry.detector_class("tsdn")(registry.detector_class("tsdn").config_class(**TSDN_SMOKE))
    detector.fit(prepared_mvtec_split(tiny, "train", 64))
    detector.save(tmp_path / "model")
    out = tmp_path / "diag.json"
    assert diagnose_tsdn.main(["--model", str(tmp_path / "model"), "--dataset", str(tiny), "--device", "cpu",
                               "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    real, syn = result["real_defects"], result["synthetic_surf"]
    assert set(real["per_type"]) == {"blob"} and real["per_type"]["blob"]["images"] == 3
    for value in (real["pixel_auroc"], real["pixel_auroc_dcd_a_mask"], syn["pixel_auroc"], syn["filled_fraction"]):
        assert 0.0 <= value <= 1.0
    assert syn["images"] == 3 and syn["filled_fraction"] > 0
    assert real["error_normal_quantiles"]["0.5"] <= real["error_normal_quantiles"]["0.99"]
    printed = capsys.readouterr().out
    assert "real defects:" in printed and "SURF fills:" in printed and "blob: pixel AUROC" in printed


def test_tsdn_diagnosis_refuses_another_method_s_model(tiny: Path, tmp_path: Path, capsys) -> None:
    cls = registry.detector_class("simplenet")
    detector = cls(cls.config_class(**cls.smoke_config))
    detector.fit(prepared_mvtec_split(tiny, "train", int(detector.config.image_size)))
    detector.save(tmp_path / "model")
    assert diagnose_tsdn.main(["--model", str(tmp_path / "model"), "--dataset", str(tiny), "--device", "cpu"]) == 2
    assert "tsdn" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tsdn_model(tiny: Path, tmp_path_factory) -> Path:
    cls = registry.detector_class("tsdn")
    detector = cls(cls.config_class(**TSDN_SMOKE))
    detector.fit(prepared_mvtec_split(tiny, "train", 64))
    return detector.save(tmp_path_factory.mktemp("tsdn") / "model")


def test_tsdn_diagnosis_without_good_test_images_is_a_one_line_error(tiny: Path, tsdn_model: Path, tmp_path: Path,
                                                                     capsys) -> None:
    import shutil

    only_defects = tmp_path / "only_defects"
    shutil.copytree(tiny, only_defects)
    shutil.rmtree(only_defects / "test" / "good")
    out = tmp_path / "diag.json"
    assert diagnose_tsdn.main(["--model", str(tsdn_model), "--dataset", str(only_defects), "--device", "cpu",
                               "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {only_defects}: test/ has no good images to distort with SURF\n"
    assert not out.exists()


def test_tsdn_diagnosis_of_a_set_without_defects_writes_null_metrics_as_valid_json(tiny: Path, tsdn_model: Path,
                                                                                  tmp_path: Path) -> None:
    import shutil

    only_good = tmp_path / "only_good"
    shutil.copytree(tiny, only_good)
    shutil.rmtree(only_good / "test" / "blob")
    shutil.rmtree(only_good / "ground_truth")
    out = tmp_path / "diag.json"
    assert diagnose_tsdn.main(["--model", str(tsdn_model), "--dataset", str(only_good), "--device", "cpu",
                               "--out", str(out)]) == 0
    text = out.read_text()
    assert "NaN" not in text
    result = json.loads(text)
    assert result["real_defects"]["pixel_auroc"] is None and result["real_defects"]["per_type"] == {}
    assert 0.0 <= result["synthetic_surf"]["pixel_auroc"] <= 1.0


def test_benchmark_times_each_requested_batch_size_and_writes_a_profile(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = bench_detectors.main(["--method", "tsdn", "--dataset", str(tiny), "--out", str(out), "--repeats", "3",
                                 "--batches", "1,4", "--profile", "2", *_sets(TSDN_SMOKE)])
    assert code == 0
    result = json.loads((out / "tsdn_tiny.json").read_text())
    assert result["batch_sizes"] == [1, 4]
    assert result["throughput_b1"] > 0 and result["throughput_b4"] > 0
    assert result["latency_b1_p99_ms"] >= result["latency_b1_ms"] > 0
    assert result["throughput_b16"] is None  # not measured: the table shows "-", never a made-up number
    profile = (out / "tsdn_tiny_cpu_profile.txt").read_text()
    assert "Self CPU" in profile and "aten::" in profile


@pytest.mark.parametrize("value", ["", "0,16", "1,x"])
def test_bad_batch_sizes_are_one_line_errors(tiny: Path, tmp_path: Path, capsys, value: str) -> None:
    code = bench_detectors.main(["--method", "tsdn", "--dataset", str(tiny), "--out", str(tmp_path / "r"),
                                 "--batches", value, *_sets(TSDN_SMOKE)])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --batches {value!r}: expected positive batch sizes separated by commas, e.g. 1,16,64")


def test_the_benchmark_and_cell_eval_feed_a_model_the_same_inputs(tmp_path: Path) -> None:
    # 96 px files, a 64 px model: both sides resize. `cell eval` (captures -> detectors.input_prep) and the
    # benchmark (image set -> the same path) must score the same model to the same metrics.
    import numpy as np

    from cell.cli import main
    from detectors.metrics import evaluate
    from detectors.model_dir import load_model
    from detectors.simplenet.detector import SimpleNet
    from tests.cell.mvtec_fixture import write_detector_config

    data = make_mvtec_folder(tmp_path / "mvtec96", n_train=6, n_test_good=3, n_test_defect=3, size=96)
    config = write_detector_config(tmp_path / "sn.yaml", "simplenet", SimpleNet.smoke_config,
                                   threshold={"policy": "auto", "holdout_fraction": 0.3})
    assert main(["train", "--detector", str(config), "--data", str(data), "--out", str(tmp_path / "m")]) == 0
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", str(data), "--out", str(tmp_path / "r"),
                 "--device", "cpu"]) == 0
    from_cli = json.loads((tmp_path / "r" / "metrics.json").read_text())
    test = prepared_mvtec_split(data, "test", 64)
    prediction = load_model(tmp_path / "m", device="cpu").detector.predict(test.stack_images())
    from_bench = evaluate(prediction.score, test.labels, prediction.anomaly_map, test.stack_masks().numpy())
    assert from_cli["n_images"] == len(test) == 6
    # the inputs are the same to the bit; the outputs differ only by batch-size rounding (eval scores one by one)
    from cell.datasets import open_images
    from detectors.input_prep import InputSpec, working_image, working_mask

    with open_images(data, "test") as items:
        by_source = {item.source: item for item in items}
        for sample in test:
            item = by_source[sample.source]
            assert torch.equal(working_image(item.load(), InputSpec(), 64), sample.image), sample.source
            mask = item.load_mask()
            if mask is not None:
                assert np.array_equal(working_mask(mask, InputSpec(), 64), sample.mask.numpy()), sample.source
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert from_bench[key] == pytest.approx(from_cli[key], abs=1e-4), key
    rows = [row.split(",") for row in (tmp_path / "r" / "scores.csv").read_text().splitlines()[1:]]
    cli_scores = {Path(row[0]).as_posix().split("/test/")[-1]: float(row[3]) for row in rows}
    bench_scores = {source.split("/test/")[-1]: float(score) for source, score in zip(test.sources, prediction.score)}
    assert sorted(cli_scores) == sorted(bench_scores) and len(bench_scores) == 6
    # scores.csv keeps 6 digits; batch 6 against batch 1 picks other float32 kernels: on an AMD EPYC (AVX512, no
    # AMX) a score of 0.0146 moved by 1.6e-6 (1.1e-4 relative), hence the absolute floor for near-zero scores
    for name, score in bench_scores.items():
        assert cli_scores[name] == pytest.approx(score, rel=1e-4, abs=1e-5), name
    assert np.isfinite(prediction.score).all()
