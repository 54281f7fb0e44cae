"""The contract every registered detector keeps (parametrised over ``detectors.available()``).

Each detector class's ``smoke_config`` makes it train in seconds on six 64-px synthetic textured images.
The skeleton's promises (detectors/base.py) are checked here for every method: a failed fit or load keeps
the previous model, one not-fitted error, predict's batching, one validation schema, and the
``InferenceModule`` computing exactly what ``predict`` does.
The test-only ``_contract_reference`` detector (tests/detectors/conftest.py) is always included, so the
harness itself (model directories, tiling) is exercised even before any real method is registered.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from detectors import registry
from detectors.base import Detector
from detectors.errors import DetectorConfigError, DetectorError, ImageSetError, ModelDirectoryError
from detectors.imagesets import InMemoryImageSet
from detectors.inference import InferenceModule
from detectors.model_dir import load_detector
from detectors.synthetic import add_defect, synthetic_imageset, textured_images
from detectors.tiling import predict_tiled
from tests.detectors.conftest import (
    OTHER_REFERENCE_NAME,
    REFERENCE_NAME,
    OtherReferenceDetector,
    ReferenceGaussianDetector,
    contract_names,
)

SIZE = 64
NAMES = contract_names()
_TEST_ONLY = {REFERENCE_NAME: ReferenceGaussianDetector, OTHER_REFERENCE_NAME: OtherReferenceDetector}


def _class(name: str) -> type[Detector]:
    return _TEST_ONLY[name] if name in _TEST_ONLY else registry.detector_class(name)


#: ``CELL_TEST_DEVICE=cuda pytest tests/detectors/test_contract.py`` runs the whole contract on a GPU
#: (with each detector's default mixed precision); unset, the smoke configs' own device (CPU) is used.
TEST_DEVICE = os.environ.get("CELL_TEST_DEVICE", "").strip()


def _smoke(name: str) -> Detector:
    cls = _class(name)
    smoke = getattr(cls, "smoke_config", None)
    assert isinstance(smoke, dict), f"{cls.__name__} must define smoke_config: ClassVar[dict]"
    if TEST_DEVICE and "device" in cls.config_class.model_fields:
        smoke = {**smoke, "device": TEST_DEVICE}
    return cls(cls.config_class(**smoke))


def _scramble_global_rngs(seed: int) -> None:
    """Put the global generators in a different state: a detector must seed itself from its config."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _train_set() -> InMemoryImageSet:
    return synthetic_imageset(6, size=SIZE, seed=0)


def _probe() -> torch.Tensor:
    """(3, 64, 64): a clean image of the texture with its own noise, not one of the training images."""
    return textured_images(1, size=SIZE, seed=99)[0]


_FITTED: dict[str, tuple[Detector, Any]] = {}


def _fitted(name: str) -> tuple[Detector, Any]:
    """One smoke-trained detector per method, shared by the tests of this module."""
    if name not in _FITTED:
        detector = _smoke(name)
        _scramble_global_rngs(1234)
        stats = detector.fit(_train_set())
        _FITTED[name] = (detector, stats)
    return _FITTED[name]


@pytest.fixture(params=NAMES)
def name(request: pytest.FixtureRequest, contract_registry) -> str:
    return request.param


def test_reference_detector_is_always_exercised() -> None:
    assert REFERENCE_NAME in NAMES


def test_smoke_config_is_valid(name: str) -> None:
    cls = _class(name)
    assert cls.name == name
    registry.validate_config(name, dict(cls.smoke_config))


def test_unknown_config_key_is_refused(name: str) -> None:
    with pytest.raises(DetectorConfigError, match="not_a_key"):
        registry.create(name, not_a_key=1)


def test_fit_and_predict_shapes(name: str) -> None:
    detector, stats = _fitted(name)
    assert isinstance(stats, dict)
    images = torch.stack([_probe(), add_defect(_probe(), "patch", seed=3)[0]])
    prediction = detector.predict(images)
    assert prediction.score.shape == (2,) and prediction.score.dtype == np.float32
    assert prediction.anomaly_map.shape == (2, SIZE, SIZE) and prediction.anomaly_map.dtype == np.float32
    assert np.isfinite(prediction.score).all() and np.isfinite(prediction.anomaly_map).all()


@pytest.mark.parametrize("seed", [2, 3])
def test_synthetic_defect_outscores_clean_image(name: str, seed: int) -> None:
    # A dark 16-px square pasted on a 64-px image of the training texture: a defect any detector must see,
    # even after its few-second smoke training (subtler defects are the benchmarks' job).
    detector, _ = _fitted(name)
    clean = _probe()
    defective, _ = add_defect(clean, "patch", seed=seed, scale=0.25)
    scores = detector.predict(torch.stack([clean, defective])).score
    assert scores[1] > scores[0], f"defective {scores[1]} <= clean {scores[0]}"


def test_save_load_gives_identical_predictions(name: str, tmp_path: Path) -> None:
    detector, _ = _fitted(name)
    directory = detector.save(tmp_path / "model")
    assert (directory / "config.yaml").is_file() and (directory / "weights.pt").is_file()
    images = torch.stack([_probe(), add_defect(_probe(), "blob", seed=5)[0]])
    before = detector.predict(images)
    loaded = load_detector(directory)
    assert type(loaded) is type(detector)
    after = loaded.predict(images)
    np.testing.assert_allclose(after.score, before.score, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(after.anomaly_map, before.anomaly_map, rtol=1e-6, atol=1e-7)


@pytest.fixture
def deterministic_kernels():
    """On a GPU, some kernels (atomic adds in backward passes) differ run to run; a same-seed comparison there
    asks PyTorch for its deterministic implementations (on the H100: bitwise-equal CFA and SLSG runs)."""
    if not TEST_DEVICE.startswith("cuda"):
        yield
        return
    previous = torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    _FITTED.clear()  # refit under the deterministic kernels
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def test_same_seed_same_predictions(name: str, deterministic_kernels) -> None:
    first, _ = _fitted(name)
    second = _smoke(name)
    _scramble_global_rngs(98765)
    second.fit(_train_set())
    images = torch.stack([_probe(), add_defect(_probe(), "blob", seed=7)[0]])
    a, b = first.predict(images), second.predict(images)
    np.testing.assert_allclose(b.score, a.score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.anomaly_map, a.anomaly_map, rtol=1e-5, atol=1e-6)


def test_fit_on_empty_set_is_an_image_set_error(name: str) -> None:
    with pytest.raises(ImageSetError):
        _smoke(name).fit(InMemoryImageSet(torch.empty(0, 3, SIZE, SIZE)))


@pytest.mark.parametrize("channels", [1, 4])
def test_predict_wrong_channel_count(name: str, channels: int) -> None:
    detector, _ = _fitted(name)
    with pytest.raises(DetectorError):
        detector.predict(torch.rand(1, channels, SIZE, SIZE))


def test_corrupted_weights_file(name: str, tmp_path: Path) -> None:
    detector, _ = _fitted(name)
    directory = detector.save(tmp_path / "model")
    weights = directory / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelDirectoryError, match="weights.pt"):
        type(detector).load(directory)


def test_other_methods_directory_via_wrong_class(name: str, tmp_path: Path) -> None:
    detector, _ = _fitted(name)
    directory = detector.save(tmp_path / "model")
    other = OtherReferenceDetector if name != OTHER_REFERENCE_NAME else ReferenceGaussianDetector
    with pytest.raises(ModelDirectoryError, match=f"holds a '{name}' model"):
        other.load(directory)


def test_tiled_prediction_of_a_larger_capture(name: str) -> None:
    detector, _ = _fitted(name)
    capture = textured_images(1, size=SIZE + 32, seed=11)[:, :, :SIZE, :]  # (1, 3, 64, 96)
    capture[0], _ = add_defect(capture[0], "blob", seed=4)
    prediction = predict_tiled(detector, capture, tile_size=SIZE, overlap=0.25)
    assert prediction.anomaly_map.shape == (1, SIZE, SIZE + 32)
    assert np.isfinite(prediction.anomaly_map).all()
    assert prediction.score[0] == pytest.approx(prediction.anomaly_map[0].max())


def _probe_batch() -> torch.Tensor:
    """(3, 3, 64, 64): the probe and two defective copies of it."""
    probe = _probe()
    return torch.stack([probe, add_defect(probe, "patch", seed=3)[0], add_defect(probe, "blob", seed=5)[0]])


def _assert_same_prediction(after: Any, before: Any) -> None:
    np.testing.assert_array_equal(after.score, before.score)
    np.testing.assert_array_equal(after.anomaly_map, before.anomaly_map)


class _Interrupted(Exception):
    """Raised by :func:`_interrupt`: a training run that fails after its model was (re)built."""


def _interrupt(done: int, total: int, message: str) -> None:
    raise _Interrupted(message)


def test_a_failed_fit_keeps_the_previous_model(name: str) -> None:
    detector, _ = _fitted(name)
    images = _probe_batch()
    before, state = detector.predict(images), detector.state_dict()
    with pytest.raises(_Interrupted):  # the first progress report comes after the new modules are built
        detector.fit(_train_set(), progress=_interrupt)
    _assert_same_prediction(detector.predict(images), before)
    after = detector.state_dict()
    assert sorted(after) == sorted(state) and all(torch.equal(after[k], state[k]) for k in state)


def test_a_failed_first_fit_leaves_the_detector_unfitted(name: str) -> None:
    detector = _smoke(name)
    with pytest.raises(_Interrupted):
        detector.fit(_train_set(), progress=_interrupt)
    assert not detector.fitted
    with pytest.raises(DetectorError, match=r"predict\(\) called before fit\(\) or load\(\)"):
        detector.predict(_probe_batch())


def test_a_failed_load_keeps_the_previous_model(name: str) -> None:
    detector, _ = _fitted(name)
    images = _probe_batch()
    before, state = detector.predict(images), detector.state_dict()
    for key in (sorted(state)[0], sorted(state)[-1]):  # a tensor missing at the start or at the end
        broken = {k: v for k, v in state.items() if k != key}
        with pytest.raises((DetectorError, KeyError)):
            detector.load_state_dict(broken)
        _assert_same_prediction(detector.predict(images), before)


def test_one_not_fitted_error(name: str) -> None:
    detector = _smoke(name)
    for call, run in (("predict", lambda: detector.predict(_probe_batch())), ("state_dict", detector.state_dict)):
        with pytest.raises(DetectorError, match=rf"^{name}: {call}\(\) called before fit\(\) or load\(\)$"):
            run()
    with pytest.raises(DetectorError, match=rf"^{name}: InferenceModule\(\) called before fit\(\) or load\(\)$"):
        InferenceModule(detector)


def test_predict_in_chunks_equals_one_pass(name: str) -> None:
    detector, _ = _fitted(name)
    images = _probe_batch()
    whole = detector.predict(images)
    config = detector.config
    detector.config = config.model_copy(update={"inference_batch_size": 2})
    try:
        chunked = detector.predict(images)
    finally:
        detector.config = config
    # CPU kernels split reductions by batch size: equal up to float rounding at the scale of the map (a chunk
    # gathered in the wrong place or order would differ by the map's whole range)
    scale = float(np.abs(whole.anomaly_map).max())
    np.testing.assert_allclose(chunked.score, whole.score, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(chunked.anomaly_map, whole.anomaly_map, rtol=1e-4, atol=1e-4 * scale)


def test_predict_refuses_an_empty_batch(name: str) -> None:
    detector, _ = _fitted(name)
    with pytest.raises(ImageSetError, match=f"^{name} predict: empty batch"):
        detector.predict(torch.empty(0, 3, SIZE, SIZE))


def test_validation_statistics_have_one_schema(name: str) -> None:
    detector, _ = _fitted(name)
    val = synthetic_imageset(3, size=SIZE, seed=8)
    stats = detector.validation_stats(val)
    assert set(stats) == {"n", "score_mean", "score_std", "score_q99", "score_max"} and stats["n"] == 3
    assert stats["score_max"] == pytest.approx(float(detector.predict(val.stack_images()).score.max()))


def test_inference_module_computes_exactly_what_predict_does(name: str) -> None:
    detector, _ = _fitted(name)
    images = _probe_batch()
    prediction = detector.predict(images)
    module = InferenceModule(detector)
    scores, maps = module(images.to(detector.device))
    assert scores.shape == (3,) and maps.shape == (3, SIZE, SIZE)
    assert scores.dtype == maps.dtype == torch.float32 and not maps.requires_grad
    assert torch.equal(scores.cpu(), torch.from_numpy(prediction.score))
    assert torch.equal(maps.cpu(), torch.from_numpy(prediction.anomaly_map))


def test_inference_module_exports_with_torch_export(name: str) -> None:
    # the pure-tensor path has no data-dependent Python control flow: torch.export (what ONNX export and
    # torch.compile build on) captures it whole, and the captured graph computes the same numbers
    detector, _ = _fitted(name)
    images = _probe_batch().to(detector.device)
    module = InferenceModule(detector)
    exported = torch.export.export(module, (images,), strict=False)
    scores, maps = exported.module()(images)
    expected_scores, expected_maps = module(images)
    torch.testing.assert_close(scores, expected_scores)
    torch.testing.assert_close(maps, expected_maps)
