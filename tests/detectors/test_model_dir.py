"""Model directories (detectors.model_dir): layout, round trip, modes, thresholds, provenance, load_model without
cell, and one clear ModelDirectoryError for every broken directory."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from detectors.errors import DetectorError, ModelDirectoryError
from detectors.input_prep import InputSpec
from detectors.model_dir import (
    PART_THRESHOLD_FILE,
    file_sha256,
    load_detector,
    load_model,
    read_input_spec,
    read_model_config,
    read_part_threshold,
    read_threshold,
    save_detector,
    write_model_dir,
    write_part_threshold,
)
from detectors.synthetic import synthetic_imageset
from detectors.thresholds import ThresholdDecision
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
        # a model directory is untrusted: the strict reader refuses duplicate keys and alias bombs
        (f"method: {REFERENCE_NAME}\nmethod: other\nformat_version: 1\nconfig: {{}}\n", "not valid YAML"),
        ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)},"
            f" *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
            for i in range(8)), "not valid YAML"),
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


# ------------------------------------------------------------------------- a whole trained directory
DECISION = ThresholdDecision(value=0.5, policy="good_quantile", stats={"n_good": 3, "quantile": 0.99})
PROVENANCE = {"data": "/data/sheets", "seed": 0, "train": [{"source": "a.png", "sha256": "0" * 64, "label": 0}]}


@pytest.fixture
def trained_dir(tmp_path: Path, fitted: ReferenceGaussianDetector, contract_registry) -> Path:
    return write_model_dir(tmp_path / "model", fitted, spec=InputSpec(mode="tile", scale=0.5), threshold=DECISION,
                           provenance=PROVENANCE, training={"train_seconds": 1.5})


def test_write_model_dir_round_trip(trained_dir: Path, fitted: ReferenceGaussianDetector) -> None:
    names = {p.name for p in trained_dir.iterdir()}
    assert names == {"config.yaml", "weights.pt", "input.json", "threshold.json", "provenance.json", "training.json"}
    model = load_model(trained_dir, device=None)
    assert model.spec == InputSpec(mode="tile", scale=0.5)
    assert model.threshold == DECISION and model.part_threshold is None
    images = torch.rand(2, 3, 16, 16)
    np.testing.assert_array_equal(model.detector.predict(images).anomaly_map, fitted.predict(images).anomaly_map)
    provenance = json.loads((trained_dir / "provenance.json").read_text())
    assert provenance["train"] == PROVENANCE["train"] and provenance["data"] == "/data/sheets"
    assert provenance["weights_sha256"] == file_sha256(trained_dir / "weights.pt")
    assert provenance["versions"]["torch"] == torch.__version__ and provenance["versions"]["python"]
    assert json.loads((trained_dir / "training.json").read_text()) == {"train_seconds": 1.5}
    assert not [p for p in trained_dir.parent.iterdir() if p.name.startswith(".")], "staging left behind"


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_files_follow_the_umask(tmp_path: Path, fitted: ReferenceGaussianDetector, contract_registry,
                                umask: int, file_mode: int, dir_mode: int) -> None:
    previous = os.umask(umask)
    try:
        out = write_model_dir(tmp_path / "m", fitted, spec=InputSpec(), threshold=DECISION, provenance={})
        write_part_threshold(out, {**DECISION.to_dict(), "provenance": {"parts": 3}})
        saved = fitted.save(tmp_path / "plain")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == dir_mode
    for path in [*out.iterdir(), *saved.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, f"{path.name}: {oct(path.stat().st_mode)}"


def test_an_existing_directory_is_kept_unless_forced(trained_dir: Path, fitted: ReferenceGaussianDetector) -> None:
    before = (trained_dir / "threshold.json").read_bytes()
    with pytest.raises(ModelDirectoryError, match="already exists"):
        write_model_dir(trained_dir, fitted, spec=InputSpec(), threshold=DECISION, provenance={})
    assert (trained_dir / "threshold.json").read_bytes() == before
    (trained_dir / "stale.txt").write_text("from the old model")
    other = ThresholdDecision(value=0.75, policy="manual")
    write_model_dir(trained_dir, fitted, spec=InputSpec(), threshold=other, provenance={}, force=True)
    assert read_threshold(trained_dir) == other and not (trained_dir / "stale.txt").exists()
    assert not (trained_dir / "training.json").exists()
    assert sorted(p.name for p in trained_dir.parent.iterdir()) == ["model"]


def test_a_failed_write_leaves_the_old_directory_whole(trained_dir: Path, contract_registry) -> None:
    unfitted = ReferenceGaussianDetector(ReferenceConfig())
    before = {p.name: p.read_bytes() for p in trained_dir.iterdir()}
    with pytest.raises(DetectorError, match="before fit"):
        write_model_dir(trained_dir, unfitted, spec=InputSpec(), threshold=DECISION, provenance={}, force=True)
    assert {p.name: p.read_bytes() for p in trained_dir.iterdir()} == before
    assert sorted(p.name for p in trained_dir.parent.iterdir()) == ["model"]


def test_changed_weights_are_refused(trained_dir: Path, fitted: ReferenceGaussianDetector) -> None:
    torch.save({"mean": fitted.state_dict()["mean"] + 1, "std": fitted.state_dict()["std"]}, trained_dir / "weights.pt")
    with pytest.raises(ModelDirectoryError, match=r"weights\.pt: sha256 differs from provenance\.json"):
        load_model(trained_dir)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("input.json", '{"mode": "crop"}', "input.json: key 'mode' = 'crop'"),
        ("input.json", '{"mode": "tile", "scale": 2}', "input.json: key 'scale' = 2"),
        ("input.json", '{"size": 3}', "input.json: key 'size'"),
        ("input.json", "[1, 2]", "input.json: expected a JSON object"),
        ("threshold.json", "{", "threshold.json: not valid JSON"),
        ("threshold.json", '{"value": "high", "policy": "manual"}', "threshold.json: key 'value' = 'high'"),
        ("threshold.json", '{"value": NaN, "policy": "manual"}', "threshold.json: key 'value' = nan"),
        ("threshold.json", '{"value": 1.0, "policy": "guess"}', "threshold.json: key 'policy' = 'guess'"),
        ("threshold.json", '{"value": 1.0, "policy": "manual", "stats": 3}', "threshold.json: key 'stats' = 3"),
        ("threshold.json", '{"value": 1.0, "policy": "manual", "extra": 1}', "threshold.json: unknown key 'extra'"),
        ("part_threshold.json", '{"value": 1.0, "policy": "manual", "provenance": []}',
         "part_threshold.json: key 'provenance' = []"),
        ("provenance.json", '"just text"', "provenance.json: expected a JSON object"),
        ("provenance.json", b"\xff\xfe", "provenance.json: not UTF-8"),
    ],
)
def test_every_bad_file_is_one_line_naming_file_and_key(trained_dir: Path, name: str, text, message: str) -> None:
    path = trained_dir / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ModelDirectoryError) as info:
        load_model(trained_dir)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_threshold_and_the_override(trained_dir: Path) -> None:
    (trained_dir / "threshold.json").unlink()
    with pytest.raises(ModelDirectoryError, match=r"threshold\.json: missing"):
        load_model(trained_dir)
    model = load_model(trained_dir, threshold_override=2.5)
    assert model.threshold == ThresholdDecision(value=2.5, policy="manual")
    with pytest.raises(ModelDirectoryError, match="must be a finite number"):
        load_model(trained_dir, threshold_override=float("inf"))


def test_input_spec_defaults_to_resize_for_a_plain_saved_detector(saved: Path) -> None:
    assert read_input_spec(saved) == InputSpec(mode="resize")


def test_part_threshold_slot(trained_dir: Path) -> None:
    assert read_part_threshold(trained_dir) is None
    decision = {**DECISION.to_dict(), "provenance": {"parts": ["p1", "p2"], "fusion": "max"}}
    path = write_part_threshold(trained_dir, decision)
    assert path == trained_dir / PART_THRESHOLD_FILE
    assert read_part_threshold(trained_dir) == decision
    assert load_model(trained_dir).part_threshold == decision
    with pytest.raises(ModelDirectoryError, match="part threshold: key 'value' = None"):
        write_part_threshold(trained_dir, {"policy": "manual"})
    with pytest.raises(ModelDirectoryError, match="part threshold: unknown key 'parts'"):
        write_part_threshold(trained_dir, {"value": 1.0, "policy": "manual", "parts": 3})
    assert read_part_threshold(trained_dir) == decision  # a refused write changed nothing
    with pytest.raises(ModelDirectoryError, match="not a model directory"):
        write_part_threshold(trained_dir.parent, decision)


def test_load_model_works_without_importing_cell(tmp_path: Path) -> None:
    from detectors.simplenet import SimpleNet

    detector = SimpleNet(SimpleNet.config_class(**{**SimpleNet.smoke_config, "meta_epochs": 1, "epochs_per_meta": 1}))
    detector.fit(synthetic_imageset(2, size=64, seed=1))
    out = write_model_dir(tmp_path / "model", detector, spec=InputSpec(), threshold=DECISION, provenance={})
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import detectors
        model = detectors.load_model({str(out)!r}, device="cpu")
        from detectors.input_prep import score_capture
        score, amap = score_capture(model.detector, np.zeros((80, 100, 3), np.uint8), model.spec)
        assert amap.shape == (80, 100) and np.isfinite(score), (amap.shape, score)
        assert model.threshold.value == 0.5 and model.detector.name == "simplenet"
        assert not [m for m in sys.modules if m == "cell" or m.startswith("cell.")], "cell was imported"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
