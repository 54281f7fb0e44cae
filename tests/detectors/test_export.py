"""Exported directories: what ``export_model`` refuses, what ``load_exported`` checks, and the one-line
errors (fast: the test-only per-pixel Gaussian detector, whose graph has no backbone)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from detectors.errors import ImageSetError
from detectors.export import ExportError, RuntimeMissing, export_model, load_exported, read_manifest, resolve_exported
from detectors.synthetic import textured_images
from tests.detectors.conftest import ReferenceConfig, ReferenceGaussianDetector

SIZE = 32


class DataDependentDetector(ReferenceGaussianDetector):
    """A detector whose scoring branches in Python on tensor values: torch.export cannot capture it."""

    name = "_data_dependent"

    def _score_batch(self, images):
        scores, maps = super()._score_batch(images)
        if bool((maps > 1e6).any()):  # a Python branch on the data (what base.py's rules forbid)
            maps = maps.clamp(max=1e6)
        return scores, maps


def _fitted(cls=ReferenceGaussianDetector):
    detector = cls(ReferenceConfig(image_size=SIZE, device="cpu"))
    detector.fit(textured_images(6, size=SIZE, seed=0))
    return detector


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
    detector = _fitted()
    out = tmp_path_factory.mktemp("export") / "onnx"
    manifest = export_model(detector, out, "onnx", source={"model_dir": "m", "weights_sha256": "0" * 64})
    return detector, out, manifest


def test_the_manifest_records_what_was_exported_and_the_measured_parity(onnx_export):
    detector, out, manifest = onnx_export
    assert json.loads((out / "manifest.json").read_text()) == manifest == read_manifest(out)
    assert manifest["format"] == "onnx" and manifest["method"] == detector.name and manifest["opset"] >= 17
    assert manifest["input"]["shape"][1:] == [3, SIZE, SIZE] and manifest["input"]["dtype"] == "float32"
    assert manifest["source"]["weights_sha256"] == "0" * 64
    assert manifest["versions"]["torch"] and manifest["versions"]["onnxruntime"]
    assert manifest["parity"]["score_rel_err"] <= manifest["tolerance"]["score_rtol"] == 1e-3
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_the_runner_scores_like_predict_and_checks_its_input_as_predict_does(onnx_export):
    detector, out, _ = onnx_export
    runner = load_exported(out)
    images = textured_images(3, size=SIZE, seed=7)
    expected, got = detector.predict(images), runner.predict(images)
    np.testing.assert_allclose(got.score, expected.score, rtol=1e-5)
    np.testing.assert_allclose(got.anomaly_map, expected.anomaly_map, rtol=1e-5, atol=1e-6)
    with pytest.raises(ImageSetError, match=r"images are 16x16 px but this .* uses image_size 32"):
        runner.predict(torch.rand(1, 3, 16, 16))


def test_a_detector_that_cannot_be_exported_says_why_in_one_line(tmp_path):
    with pytest.raises(ExportError) as caught:
        export_model(_fitted(DataDependentDetector), tmp_path / "out", "onnx")
    message = str(caught.value)
    assert message.startswith("_data_dependent: cannot be exported to ONNX (") and "\n" not in message
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_a_non_empty_unrelated_out_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match=r"results: exists, is not empty and is not an exported model"):
        export_model(_fitted(), out, "onnx")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_an_export_outside_the_tolerance_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    import detectors.export.directory as directory

    monkeypatch.setattr(directory, "measure", lambda *a, **k: {"score_rel_err": 0.02, "map_rel_err": 0.0, "n_images": 4})
    with pytest.raises(ExportError, match=r"does not reproduce the torch model .*score 0.02.*nothing written"):
        export_model(_fitted(), tmp_path / "out", "onnx")
    assert not list(tmp_path.iterdir())


def test_a_changed_model_file_or_a_bad_manifest_is_refused_naming_the_file(onnx_export, tmp_path):
    import shutil

    _, out, manifest = onnx_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ExportError, match=r"model.onnx: sha256 differs from .*manifest.json"):
        load_exported(copy)
    (copy / "manifest.json").write_text(json.dumps({**manifest, "tolerance": {"score_rtol": -1, "map_rtol": 1e-3}}))
    with pytest.raises(ExportError, match=r"manifest.json: key 'tolerance.score_rtol' = -1: must be a positive number"):
        load_exported(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ExportError, match=r"manifest.json: not valid JSON"):
        load_exported(copy)


def test_a_runtime_that_does_not_match_the_format_is_refused(onnx_export):
    _, out, _ = onnx_export
    with pytest.raises(ExportError, match=r"holds a onnx export, not one for --runtime openvino"):
        load_exported(out, runtime="openvino")


def test_resolve_finds_the_exported_subdirectory_or_names_both_places(onnx_export, tmp_path):
    _, out, _ = onnx_export
    assert resolve_exported(out, "onnx") == out
    model = tmp_path / "model"
    (model / "exported").mkdir(parents=True)
    (model / "exported" / "onnx").symlink_to(out, target_is_directory=True)
    assert resolve_exported(model, "onnx") == model / "exported" / "onnx"
    with pytest.raises(ExportError, match=r"no openvino export .*cell export --model .* --format openvino"):
        resolve_exported(model, "openvino")


@pytest.mark.parametrize("package, call", [
    ("onnxruntime", "load onnx"), ("openvino", "load openvino"), ("onnxscript", "export onnx"), ("openvino", "export openvino"),
])
def test_a_missing_runtime_package_is_named_with_the_install_hint(package, call, onnx_export, tmp_path, monkeypatch):
    _, out, _ = onnx_export
    monkeypatch.setitem(sys.modules, package, None)  # what an environment without the package gives
    action, fmt = call.split()
    with pytest.raises(RuntimeMissing) as caught:
        if action == "load":
            if fmt == "openvino":
                (tmp_path / "ov").mkdir()
                manifest = json.loads((out / "manifest.json").read_text())
                manifest.update(format="openvino", files={"model.xml": "x", "model.bin": "y"})
                (tmp_path / "ov" / "manifest.json").write_text(json.dumps(manifest))
                for name in ("model.xml", "model.bin"):
                    (tmp_path / "ov" / name).write_text("x")
                load_exported(tmp_path / "ov", verify_files=False)
            else:
                load_exported(out)
        else:
            export_model(_fitted(), tmp_path / "new", fmt)
    message = str(caught.value)
    assert f"the Python package '{package}', which is not installed" in message
    assert "pip install '.[export]'" in message and "\n" not in message
    assert not (tmp_path / "new").exists()
