"""`cell train` and `cell eval` end to end on a small synthetic MVTec-layout folder (CPU, seconds)."""
import json

import pytest

from cell.cli import main
from detectors.simplenet.detector import SimpleNet
from tests.cell.mvtec_fixture import make_mvtec_folder, write_detector_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_eval")
    data = make_mvtec_folder(root / "synthetic")
    config = write_detector_config(root / "simplenet.yaml", "simplenet", SimpleNet.smoke_config,
                                   threshold={"policy": "auto", "holdout_fraction": 0.3})
    model = root / "model"
    assert main(["train", "--detector", str(config), "--data", str(data), "--out", str(model)]) == 0
    return root, data, config, model


def test_train_writes_a_complete_model_directory(trained):
    _, data, _, model = trained
    for name in ("config.yaml", "weights.pt", "input.json", "threshold.json", "provenance.json", "training.json"):
        assert (model / name).is_file(), name
    threshold = json.loads((model / "threshold.json").read_text())
    assert threshold["policy"] == "good_quantile"  # an MVTec train side has no labelled defects
    provenance = json.loads((model / "provenance.json").read_text())
    trained_on = {p["source"] for p in provenance["train"]}
    held_out = {p["source"] for p in provenance["threshold_holdout_good"]}
    assert trained_on and held_out and not trained_on & held_out
    assert all(s.startswith("synthetic/train/good/") for s in trained_on | held_out)  # never the test split
    assert all(len(p["sha256"]) == 64 for p in provenance["train"])
    assert provenance["seed"] == 0
    assert len(provenance["weights_sha256"]) == 64 and provenance["versions"]["torch"]
    # issue 17 item 17: every file follows the umask (config.yaml and weights.pt used to be 0600)
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in model.iterdir()} == {
        p.name: oct(0o666 & ~umask) for p in model.iterdir()
    }


def test_eval_writes_metrics_report_and_scores_defects_higher(trained):
    root, data, _, model = trained
    report = root / "report"
    assert main(["eval", "--model", str(model), "--data", str(data), "--out", str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["n_good"] == 4 and metrics["n_defective"] == 4
    assert metrics["image_auroc"] >= 0.75
    assert 0.0 <= metrics["pg0"] <= 1.0 and "blob" in metrics["per_defect_type"]
    html = (report / "report.html").read_text()
    assert "roc.png" in html and "overlays/worst_misses_00.png" in html
    assert (report / "roc.png").stat().st_size > 1000
    assert (report / "scores.csv").read_text().count("\n") == 9


def test_existing_model_directory_is_not_overwritten(trained, capsys):
    _, data, config, model = trained
    before = (model / "weights.pt").read_bytes()
    assert main(["train", "--detector", str(config), "--data", str(data), "--out", str(model)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (model / "weights.pt").read_bytes() == before


@pytest.mark.parametrize(
    "method, config, expected",
    [
        ("nosuchnet", {}, "unknown detector 'nosuchnet'"),
        ("simplenet", {"imagesize": 64}, "unknown config key 'imagesize'"),
        ("simplenet", {"image_size": "big"}, "'image_size' = 'big'"),
    ],
)
def test_bad_detector_config_is_one_line_naming_file_and_key(tmp_path, capsys, method, config, expected):
    data = make_mvtec_folder(tmp_path / "d", n_train=3, n_test_good=1, n_test_defect=1)
    path = write_detector_config(tmp_path / "bad.yaml", method, config)
    assert main(["train", "--detector", str(path), "--data", str(data), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and str(path) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_corrupted_weights_are_refused_by_eval(trained, tmp_path, capsys):
    root, data, _, model = trained
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(model, broken)
    (broken / "weights.pt").write_bytes(b"not a torch file")
    assert main(["eval", "--model", str(broken), "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    assert "weights.pt" in capsys.readouterr().err


def test_empty_training_set_is_a_clear_error(tmp_path, capsys):
    data = tmp_path / "empty"
    (data / "train" / "good").mkdir(parents=True)
    config = write_detector_config(tmp_path / "c.yaml", "simplenet", SimpleNet.smoke_config)
    assert main(["train", "--detector", str(config), "--data", str(data), "--out", str(tmp_path / "m")]) == 2
    assert "no images found" in capsys.readouterr().err


def test_eval_leaves_out_images_the_model_was_trained_on(trained, tmp_path, capsys):
    root, data, _, model = trained
    # a "test" folder that is the training side itself: nothing honest is left to evaluate
    leaky = tmp_path / "leaky"
    import shutil

    (leaky / "test" / "good").mkdir(parents=True)
    for path in (data / "train" / "good").iterdir():
        shutil.copy(path, leaky / "test" / "good" / f"train_{path.name}")
    assert main(["eval", "--model", str(model), "--data", str(leaky), "--out", str(tmp_path / "r")]) == 2
    assert "all 10 were used to train or threshold this model" in capsys.readouterr().err
    # mixed with genuine test images, the trained-on ones are left out and counted
    shutil.copytree(data / "test", leaky / "test", dirs_exist_ok=True)
    shutil.copytree(data / "ground_truth", leaky / "ground_truth")
    assert main(["eval", "--model", str(model), "--data", str(leaky), "--out", str(tmp_path / "r2")]) == 0
    metrics = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert metrics["excluded_training_side_images"] == 10 and metrics["n_images"] == 8


def test_a_model_trained_on_a_gpu_is_evaluated_on_this_machine(trained, tmp_path):
    import shutil

    import yaml

    root, data, _, model = trained
    gpu_model = tmp_path / "gpu_model"
    shutil.copytree(model, gpu_model)
    document = yaml.safe_load((gpu_model / "config.yaml").read_text())
    document["config"]["device"] = "cuda"  # what a training run with --device cuda writes
    (gpu_model / "config.yaml").write_text(yaml.safe_dump(document))
    # default --device auto: runs wherever it is, a GPU or not
    assert main(["eval", "--model", str(gpu_model), "--data", str(data), "--out", str(tmp_path / "auto")]) == 0
    assert main(["eval", "--model", str(gpu_model), "--data", str(data), "--out", str(tmp_path / "cpu"),
                 "--device", "cpu"]) == 0
    first = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    second = json.loads((tmp_path / "cpu" / "metrics.json").read_text())
    assert first["image_auroc"] == pytest.approx(second["image_auroc"], abs=1e-6)


def test_an_unknown_device_is_a_one_line_error(trained, tmp_path, capsys):
    _, data, _, model = trained
    assert main(["eval", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "r"),
                 "--device", "gpu0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: device 'gpu0' is not a device name (use auto, cpu, cuda, cuda:N or mps)"


def test_an_interrupted_training_resumes_from_its_checkpoint(tmp_path):
    import yaml

    from cell.training import train_model
    from detectors.tsdn import TSDN

    data = make_mvtec_folder(tmp_path / "data", n_train=6)
    tiny = {**TSDN.smoke_config, "pretrained": "none", "epochs": 2, "batch_size": 2, "checkpoint_every": 2}
    config = write_detector_config(tmp_path / "tsdn.yaml", "tsdn", tiny,
                                   threshold={"policy": "auto", "holdout_fraction": 0.3})
    out = tmp_path / "model"

    def interrupt_after_three_steps(done, total, message):
        if message.startswith("epoch") and done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(config, data, out, progress=interrupt_after_three_steps)
    checkpoint = tmp_path / ".model.checkpoint" / "checkpoint.pt"
    assert checkpoint.is_file() and not out.exists()  # nothing half-written where the model goes

    seen = []
    summary = train_model(config, data, out, progress=lambda done, total, message: seen.append(message))
    assert summary["fit_stats"]["resumed_from"] == 2 and any(m.startswith("resumed from") for m in seen)
    assert not checkpoint.parent.exists()  # cleaned up once the model directory is complete
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["config"]["checkpoint_dir"] is None
