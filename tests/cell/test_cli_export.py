"""``cell export`` and ``--runtime onnx|openvino`` for ``cell eval`` and ``cell inspect``, end to end through
the CLI: a SimpleNet smoke model trained with ``cell train``, exported into its model directory, evaluated
and run on the simulated cell with each runtime; what each runtime scores equals what torch scores."""
from __future__ import annotations

import json
import shutil

import pytest

from acquisition.store import CaptureStore
from cell.cli import main
from detectors.simplenet.detector import SimpleNet
from tests.cell.export_fixture import report_scores, train_and_export
from tests.cell.sim_fixtures import DEMO_CAMPAIGN
from tests.cell.test_inspect_line_cli import cell_file

# one ONNX export of a SimpleNet in the module fixture (graph translation: ~10-30 s on idle cores, minutes on
# loaded ones: the timeout is raised so that a loaded machine does not fail the first test)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return train_and_export(tmp_path_factory.mktemp("cli_export"), "simplenet", SimpleNet.smoke_config)


def _error_line(err: str) -> str:
    """The one ``error: ...`` line of a failed command's stderr (progress and info lines may precede it)."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_export_writes_a_self_contained_directory_beside_the_model(exported):
    _, _, model = exported
    for fmt, files in (("onnx", {"model.onnx"}), ("openvino", {"model.xml", "model.bin"})):
        directory = model / "exported" / fmt
        names = {p.name for p in directory.iterdir()}
        assert files | {"manifest.json", "input.json", "threshold.json", "provenance.json"} <= names, names
        manifest = json.loads((directory / "manifest.json").read_text())
        assert manifest["format"] == fmt and manifest["method"] == "simplenet"
        assert len(manifest["source"]["weights_sha256"]) == 64 and manifest["source"]["model_dir"] == str(model.resolve())
        assert manifest["parity"]["score_rel_err"] <= 1e-3
        assert (directory / "threshold.json").read_text() == (model / "threshold.json").read_text()


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_eval_with_an_exported_runtime_scores_what_torchreport_scores(exported, runtime):
    root, data, model = exported
    torch_report, runtime_report = root / "eval_torch", root / f"eval_{runtime}"
    if not torch_report.exists():
        assert main(["eval", "--model", str(model), "--data", str(data), "--out", str(torch_report)]) == 0
    assert main(["eval", "--model", str(model), "--data", str(data), "--out", str(runtime_report),
                 "--runtime", runtime]) == 0
    expected, got = report_scores(torch_report), report_scores(runtime_report)
    assert expected.keys() == got.keys() and len(got) == 6
    for name, score in expected.items():
        assert abs(got[name] - score) <= 1e-3 * max(abs(score), 1e-3), (name, score, got[name])
    metrics = json.loads((runtime_report / "metrics.json").read_text())
    assert metrics["image_auroc"] == json.loads((torch_report / "metrics.json").read_text())["image_auroc"]


def test_inspect_with_onnx_records_the_scores_torch_records(exported, tmp_path):
    _, _, model = exported
    cell = cell_file(tmp_path)
    scores = {}
    for runtime in ("torch", "onnx"):
        store = tmp_path / f"store_{runtime}"
        args = ["inspect", "--cell", str(cell), "--campaign", str(DEMO_CAMPAIGN), "--model", str(model),
                "--store", str(store), "--parts", "1", "--name", "line", "--runtime", runtime, "--seed", "3",
                # a model trained on an image folder has no part threshold (no parts to fuse): a manual one
                "--part-threshold", "1e9"]
        assert main(args) == 0
        with CaptureStore(store) as opened:
            (record,) = opened.inspections()
        assert record.verdict in ("OK", "NOK")
        scores[runtime] = record.scores["poses"]
    assert scores["torch"].keys() == scores["onnx"].keys() and scores["torch"]
    for pose, value in scores["torch"].items():
        assert abs(scores["onnx"][pose] - value) <= 1e-3 * max(abs(value), 1e-3), (pose, value, scores["onnx"][pose])


def test_a_runtime_without_an_export_is_one_line_naming_the_command(exported, tmp_path, capsys):
    root, data, model = exported
    bare = tmp_path / "bare"
    shutil.copytree(model, bare, ignore=shutil.ignore_patterns("exported"))
    code = main(["eval", "--model", str(bare), "--data", str(data), "--out", str(tmp_path / "r"), "--runtime", "openvino"])
    err = capsys.readouterr().err
    assert code == 2 and f"`cell export --model {bare} --format openvino`" in _error_line(err)


def test_an_exported_runtime_on_a_gpu_device_is_refused(exported, tmp_path, capsys):
    _, data, model = exported
    code = main(["eval", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "r"),
                 "--runtime", "onnx", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "--runtime onnx runs on the CPU" in _error_line(err)


def test_a_stale_export_inside_the_model_is_refused(exported, tmp_path, capsys):
    _, data, model = exported
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    manifest_path = copy / "exported" / "onnx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["source"]["weights_sha256"] = "0" * 64  # as if the model had been retrained since
    manifest_path.write_text(json.dumps(manifest))
    code = main(["eval", "--model", str(copy), "--data", str(data), "--out", str(tmp_path / "r"), "--runtime", "onnx"])
    err = capsys.readouterr().err
    assert code == 2 and "exported from other weights" in _error_line(err)


def test_export_refuses_a_non_empty_unrelated_out_in_one_line(exported, tmp_path, capsys):
    _, _, model = exported
    out = tmp_path / "reports"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    code = main(["export", "--model", str(model), "--format", "onnx", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to overwrite" in _error_line(err)
    assert [p.name for p in out.iterdir()] == ["metrics.json"]


def test_export_of_a_missing_model_is_one_line(tmp_path, capsys):
    code = main(["export", "--model", str(tmp_path / "nope"), "--format", "onnx"])
    err = capsys.readouterr().err
    assert code == 2 and "nope: not a model directory" in _error_line(err)
