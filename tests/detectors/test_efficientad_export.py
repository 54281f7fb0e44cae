"""``cell export --model DIR --format onnx|openvino`` for an EfficientAD model directory (trained with
``cell train``), and ``cell eval --runtime`` on the export scoring what the torch model scores."""
from __future__ import annotations

import json

import pytest

from cell.cli import main
from detectors.efficientad import EfficientAD
from tests.cell.export_fixture import report_scores, train_and_export

# two graph exports of one model (minutes on a loaded 2-core machine)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return train_and_export(tmp_path_factory.mktemp("efficientad_export"), "efficientad", EfficientAD.smoke_config)


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_an_efficientad_model_exports_and_its_export_scores_what_torchreport_scores(exported, runtime):
    root, data, model = exported
    manifest = json.loads((model / "exported" / runtime / "manifest.json").read_text())
    assert manifest["format"] == runtime and manifest["method"] == "efficientad"
    assert manifest["parity"]["score_rel_err"] <= manifest["tolerance"]["score_rtol"]
    assert manifest["parity"]["map_rel_err"] <= manifest["tolerance"]["map_rtol"]
    torch_report, runtime_report = root / "eval_torch", root / f"eval_{runtime}"
    if not torch_report.exists():
        assert main(["eval", "--model", str(model), "--data", str(data), "--out", str(torch_report)]) == 0
    assert main(["eval", "--model", str(model), "--data", str(data), "--out", str(runtime_report),
                 "--runtime", runtime]) == 0
    expected, got = report_scores(torch_report), report_scores(runtime_report)
    assert expected.keys() == got.keys() and len(got) == 6
    for name, score in expected.items():
        assert abs(got[name] - score) <= 1e-3 * max(abs(score), 1e-3), (name, score, got[name])
