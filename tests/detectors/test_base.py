"""The detector skeleton (detectors/base.py): the shared config, registration checks, one validation schema.

Behaviour every registered method must show (restore on a failed fit, the not-fitted error, predict's
batching, the inference module) is in the contract suite (test_contract.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from detectors import registry
from detectors.base import Detector, DetectorConfig, score_summary
from detectors.errors import DetectorConfigError, DetectorError
from detectors.synthetic import synthetic_imageset
from tests.detectors.conftest import ReferenceConfig, ReferenceGaussianDetector

#: For each method, as the code before the skeleton had it (recorded from main at bda04e4): the default config
#: (``model_dump(mode="json")``: what a model directory's config.yaml holds, keys and values) and every field's
#: type, default and bounds (``model_json_schema()``'s properties, descriptions and titles left out).
BEFORE = json.loads(Path(__file__).with_name("configs_before_skeleton.json").read_text())
#: Fields the skeleton added to a method's config (with a default: old files load unchanged).
ADDED = {"glance": {"inference_batch_size"}}


def _fields(config_class: type[DetectorConfig]) -> dict[str, Any]:
    properties = config_class.model_json_schema()["properties"]
    return {k: {kk: vv for kk, vv in v.items() if kk not in ("description", "title")} for k, v in properties.items()}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_a_config_written_before_the_skeleton_loads_unchanged(name: str) -> None:
    old = BEFORE[name]["defaults"]
    config = registry.validate_config(name, old)
    assert isinstance(config, DetectorConfig)
    dumped = config.model_dump(mode="json")
    assert {k: v for k, v in dumped.items() if k not in ADDED.get(name, set())} == old


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_every_config_field_keeps_its_type_default_and_bounds(name: str) -> None:
    fields = _fields(registry.detector_class(name).config_class)
    assert {k: v for k, v in fields.items() if k not in ADDED.get(name, set())} == BEFORE[name]["fields"]


def test_shared_fields_are_validated_by_the_base() -> None:
    with pytest.raises(DetectorConfigError, match="config key 'image_size' = 16"):
        registry.validate_config("cfa", {"image_size": 16})
    with pytest.raises(DetectorConfigError, match="config key 'image_size' = 32"):
        registry.validate_config("tsdn", {"image_size": 32})  # TSDN redefines the range: [64, 2048]
    with pytest.raises(DetectorConfigError, match="config key 'inference_batch_size' = 0"):
        registry.validate_config("glance", {"inference_batch_size": 0})


def _method(**attributes: Any) -> type[Detector]:
    """A complete test-only method, with ``attributes`` replacing or removing (None) its class attributes."""
    namespace = dict(vars(ReferenceGaussianDetector))
    namespace["name"] = "_skeleton_probe"
    for key, value in attributes.items():
        if value is None:
            namespace.pop(key, None)
        else:
            namespace[key] = value
    for internal in ("__dict__", "__weakref__", "__abstractmethods__", "_abc_impl"):
        namespace.pop(internal, None)
    return type("Probe", (Detector,), namespace)


def test_register_accepts_a_complete_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    cls = _method()
    assert registry.register(cls) is cls


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"smoke_config": None}, "Probe declares no smoke_config"),
        ({"smoke_config": {"eps": -1.0}}, "Probe.smoke_config key 'eps'"),
        ({"config_class": None}, "Probe.config_class must be a subclass of detectors.base.DetectorConfig"),
        ({"_score_batch": None}, "Probe does not implement _score_batch"),
        ({"_fit": None, "_state_dict": None}, "Probe does not implement _fit, _state_dict"),
    ],
)
def test_register_refuses_an_incomplete_method(attributes: dict[str, Any], message: str, monkeypatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(TypeError, match=f"^{message}"):
        registry.register(_method(**attributes))
    assert "_skeleton_probe" not in registry._REGISTRY


def test_register_refuses_what_is_not_a_detector() -> None:
    class NotADetector:
        name: ClassVar[str] = "x"

    with pytest.raises(TypeError, match="is not a Detector subclass"):
        registry.register(NotADetector)  # type: ignore[arg-type]


def test_score_summary_schema() -> None:
    summary = score_summary(np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32))
    assert summary == {
        "n": 4,
        "score_mean": 2.5,
        "score_std": pytest.approx(np.sqrt(1.25)),
        "score_q99": pytest.approx(3.97),
        "score_max": 4.0,
    }


def test_fit_with_a_validation_set_reports_its_score_summary() -> None:
    detector = ReferenceGaussianDetector(ReferenceConfig(image_size=32, device="cpu"))
    val = synthetic_imageset(3, size=32, seed=4)
    stats = detector.fit(synthetic_imageset(4, size=32, seed=1), val=val)
    assert stats["val"] == score_summary(detector.predict(val.stack_images()).score)


def test_a_failed_load_leaves_an_unfitted_detector_unfitted() -> None:
    detector = ReferenceGaussianDetector(ReferenceConfig(image_size=32, device="cpu"))
    with pytest.raises(KeyError):
        detector.load_state_dict({"mean": torch.zeros(3, 32, 32)})
    assert not detector.fitted
    with pytest.raises(DetectorError, match=r"^_contract_reference: predict\(\) called before fit\(\) or load\(\)$"):
        detector.predict(synthetic_imageset(1, size=32, seed=3).stack_images())


def test_a_failed_load_leaves_a_random_frozen_backbone_untouched() -> None:
    # pretrained: none puts the random frozen backbone into the state; SimpleNet loads it before it checks
    # its normalisation tensors, so a state that fails there must not have overwritten the backbone in use
    from detectors.simplenet import SimpleNet

    smoke = {**SimpleNet.smoke_config, "pretrained": "none", "meta_epochs": 1, "device": "cpu"}
    detector = registry.create("simplenet", **smoke)
    detector.fit(synthetic_imageset(4, size=64, seed=1))
    other = registry.create("simplenet", **{**smoke, "seed": 1})  # another random backbone
    other.fit(synthetic_imageset(4, size=64, seed=1))
    images = synthetic_imageset(2, size=64, seed=3).stack_images()
    before = detector.predict(images)
    broken = other.state_dict()
    broken["norm.std"] = broken["norm.std"][:-1]
    with pytest.raises(DetectorError, match="tensor 'norm.std' has shape"):
        detector.load_state_dict(broken)
    after = detector.predict(images)
    np.testing.assert_array_equal(after.anomaly_map, before.anomaly_map)
    np.testing.assert_array_equal(after.score, before.score)
