"""The SimpleNet ablation script on a tiny synthetic MVTec folder (CPU, SimpleNet's smoke config)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import detectors
from benchmarks import ablate_simplenet
from detectors import registry
from detectors.imagesets import MVTecImageSet
from detectors.metrics import evaluate
from tests.cell.mvtec_fixture import make_mvtec_folder

SMOKE = {**registry.detector_class("simplenet").smoke_config, "pretrained": "none"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_mvtec_folder(tmp_path_factory.mktemp("mvtec") / "tiny", n_train=6, n_test_good=3, n_test_defect=3)


def test_reblurred_maps_score_like_the_detector_with_that_blur(tiny: Path) -> None:
    """The ablation blurs blur-0 maps afterwards; that must equal training with ``blur_sigma`` set."""
    train = MVTecImageSet(tiny, "train", image_size=64)
    test = MVTecImageSet(tiny, "test", image_size=64)
    result = ablate_simplenet.run_variant("smoke", SMOKE, train, test, [0.0, 2.0], log=lambda *_: None)
    for sigma in (0.0, 2.0):
        detector = detectors.create("simplenet", **{**SMOKE, "blur_sigma": sigma})
        detector.fit(train)
        pred = detector.predict(test.stack_images())
        direct = evaluate(pred.score, test.labels, pred.anomaly_map, test.stack_masks().numpy())
        got = result["results"][str(sigma)]
        for key in ("image_auroc", "pixel_auroc", "aupro"):
            assert got[key] == pytest.approx(direct[key], abs=1e-6), (sigma, key)
    assert result["n_train"] == 6 and result["n_test"] == 6
    assert np.isfinite(result["load_average_before"]).all()


def test_main_writes_one_json_per_variant_and_rejects_a_bad_variant(tiny: Path, tmp_path: Path, capsys) -> None:
    sets = []
    for key, value in SMOKE.items():
        sets += ["--set", f"{key}={json.dumps(value) if isinstance(value, list) else value}"]
    out = tmp_path / "abl"
    code = ablate_simplenet.main(["--dataset", str(tiny), "--train-every", "2", "--variant", "small:noise_std=0.1",
                                  "--blur", "4", "--out", str(out), *sets])
    assert code == 0
    result = json.loads((out / "tiny_small.json").read_text())
    assert result["config"]["noise_std"] == 0.1 and result["n_train"] == 3
    assert "| tiny | small | 4.0 |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        ablate_simplenet.main(["--dataset", str(tiny), "--variant", "no-colon", "--out", str(out)])
    assert exc.value.code == 2
    assert "variant 'no-colon'" in capsys.readouterr().err
