"""Model directories (detectors.model_dir): layout, round trip, modes, thresholds, provenance, load_model without
cell, and one clear ModelDirectoryError for every broken directory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from detectors.errors import DetectorError, ModelDirectoryError
from detectors.model_dir import load_detector, read_model_config, save_detector
from detectors.synthetic import synthetic_imageset
from tests.detectors.conftest import (
    OTHER_REFERENCE_NAME,
    REFERENCE_NAME,
    OtherReferenceDetector,
    ReferenceConfig,
    ReferenceGaussianDetector,
)


@pytest.fixture
def fitted() -> ReferenceGaussianDetector:
    detector = ReferenceGaussianDetector(ReferenceConfig(eps=0.05, image_size=16))
    detector.fit(synthetic_imageset(4, size=16, seed=1))
    return detector


@pytest.fixture
def saved(tmp_path: Path, fitted: ReferenceGaussianDetector, contract_registry) -> Path:
    return save_detector(fitted, tmp_path / "model")


def test_layout_and_round_trip(saved: Path, fitted: ReferenceGaussianDetector) -> None:
    document = yaml.safe_load((saved / "config.yaml").read_text())
    config = ReferenceConfig(eps=0.05, image_size=16).model_dump(mode="json")
    assert document == {"method": REFERENCE_NAME, "format_version": 1, "config": config}
    state = torch.load(saved / "weights.pt", weights_only=True)
    assert set(state) == {"mean", "std"}
    loaded = load_detector(saved)
    assert isinstance(loaded, ReferenceGaussianDetector) and loaded.config.eps == 0.05
    images = torch.rand(2, 3, 16, 16)
    np.testing.assert_array_equal(loaded.predict(images).anomaly_map, fitted.predict(images).anomaly_map)
    assert read_model_config(saved) == (REFERENCE_NAME, config)
    assert not list(saved.glob(".*.tmp")), "temporary files left behind"


def test_resave_keeps_extra_files(saved: Path, fitted: ReferenceGaussianDetector) -> None:
    (saved / "threshold.json").write_text("{}")
    save_detector(fitted, saved)
    assert (saved / "threshold.json").read_text() == "{}"


def test_failed_save_leaves_no_loadable_directory(tmp_path: Path, contract_registry) -> None:
    unfitted = ReferenceGaussianDetector(ReferenceConfig())
    with pytest.raises(DetectorError, match=r"state_dict\(\) called before fit\(\) or load\(\)"):
        save_detector(unfitted, tmp_path / "m")
    assert not (tmp_path / "m" / "config.yaml").exists()


def test_missing_pieces(tmp_path: Path, saved: Path) -> None:
    with pytest.raises(ModelDirectoryError, match="folder not found"):
        load_detector(tmp_path / "absent")
    (saved / "weights.pt").unlink()
    with pytest.raises(ModelDirectoryError, match=r"weights\.pt: missing"):
        load_detector(saved)
    (saved / "config.yaml").unlink()
    with pytest.raises(ModelDirectoryError, match=r"config\.yaml: missing"):
        load_detector(saved)


@pytest.mark.parametrize(
    "text, message",
    [
        ("method: [unclosed", "not valid YAML"),
        ("- a list", "expected a mapping"),
        ("format_version: 1\nconfig: {}\n", "key 'method'"),
        (f"method: {REFERENCE_NAME}\nformat_version: 99\nconfig: {{}}\n", "key 'format_version' = 99"),
        ("method: nosuchmethod\nformat_version: 1\nconfig: {}\n", "method 'nosuchmethod' is not a registered"),
        (f"method: {REFERENCE_NAME}\nformat_version: 1\nconfig: {{bogus: 1}}\n", "unknown config key 'bogus'"),
        (f"method: {REFERENCE_NAME}\nformat_version: 1\nconfig: {{eps: -1}}\n", "config key 'eps' = -1"),
    ],
)
def test_bad_config_file(saved: Path, text: str, message: str) -> None:
    (saved / "config.yaml").write_text(text)
    with pytest.raises(ModelDirectoryError, match=message) as info:
        load_detector(saved)
    assert "config.yaml" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_weights(saved: Path, damage: str) -> None:
    path = saved / "weights.pt"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"\x00not a zip" * 10, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.raises(ModelDirectoryError, match=r"weights\.pt: corrupt or unreadable weights"):
        load_detector(saved)


def test_weights_that_do_not_fit(saved: Path) -> None:
    torch.save({"mean": torch.zeros(3, 4, 4)}, saved / "weights.pt")
    with pytest.raises(ModelDirectoryError, match=r"weights\.pt: does not fit"):
        load_detector(saved)
    torch.save([torch.zeros(1)], saved / "weights.pt")
    with pytest.raises(ModelDirectoryError, match="not a state dict"):
        load_detector(saved)


class _Payload:
    """An arbitrary object: torch.load(weights_only=True) must refuse to unpickle it."""


def test_pickled_objects_are_refused(saved: Path) -> None:
    torch.save({"mean": _Payload()}, saved / "weights.pt")
    with pytest.raises(ModelDirectoryError, match="corrupt or unreadable"):
        load_detector(saved)


def test_another_methods_directory(saved: Path) -> None:
    with pytest.raises(ModelDirectoryError, match=f"holds a '{REFERENCE_NAME}' model, not a '{OTHER_REFERENCE_NAME}'"):
        load_detector(saved, expected_method=OTHER_REFERENCE_NAME)
    with pytest.raises(ModelDirectoryError, match=f"not a '{OTHER_REFERENCE_NAME}' one"):
        OtherReferenceDetector.load(saved)


def test_a_model_trained_on_a_gpu_loads_on_a_cpu_when_asked(tmp_path: Path) -> None:
    from detectors.simplenet import SimpleNet

    detector = SimpleNet(SimpleNet.config_class(**{**SimpleNet.smoke_config, "meta_epochs": 1, "epochs_per_meta": 1}))
    detector.fit(synthetic_imageset(2, size=64, seed=1))
    directory = detector.save(tmp_path / "model")
    document = yaml.safe_load((directory / "config.yaml").read_text())
    document["config"]["device"] = "cuda"  # as written by a training run on a GPU
    (directory / "config.yaml").write_text(yaml.safe_dump(document))
    if not torch.cuda.is_available():
        with pytest.raises(ModelDirectoryError, match="CUDA is not available"):
            load_detector(directory)
    loaded = load_detector(directory, device="cpu")
    assert loaded.device.type == "cpu"
    images = synthetic_imageset(2, size=64, seed=5).stack_images()
    np.testing.assert_allclose(loaded.predict(images).anomaly_map, detector.predict(images).anomaly_map, rtol=1e-6)
