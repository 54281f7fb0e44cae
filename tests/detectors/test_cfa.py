"""CFA specifics: the coupled-hypersphere loss, the memory bank's size, the softmin score, the detector glue.

The registry contract tests (test_contract.py) cover fit/predict/save/load for "cfa" once it is registered;
importing :mod:`detectors.cfa` here registers it for this session too.
"""
from __future__ import annotations

import math

import pytest
import torch

import detectors.cfa  # noqa: F401  (registers "cfa")
from detectors import registry
from detectors.cfa.model import (
    CoordConvDescriptor,
    MemoryBankBuilder,
    coupled_hypersphere_loss,
    kmeans,
    multiscale_patch_features,
    softmin_score,
)
from detectors.errors import DetectorConfigError, DetectorError


def test_loss_matches_hand_computed_case_and_r_gets_gradient() -> None:
    # One feature at the origin; bank entries at squared distances 1, 4, 9, 16 (points on an axis).
    feature = torch.zeros(1, 2)
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 4.0]])
    r = torch.nn.Parameter(torch.tensor([2.5]))  # r^2 = 6.25
    loss, att, rep = coupled_hypersphere_loss(feature, bank, r, k=2, j=2, alpha=0.5, nu=0.1)
    # attraction: nearest K=2: d = 1, 4 -> max(0, d - 6.25) = 0, 0
    # repulsion: next J=2: d = 9, 16 -> max(0, 6.25 - d - 0.5) = 0, 0
    assert float(att.detach()) == 0.0 and float(rep.detach()) == 0.0
    r = torch.nn.Parameter(torch.tensor([1.5]))  # r^2 = 2.25
    loss, att, rep = coupled_hypersphere_loss(feature, bank, r, k=2, j=2, alpha=0.5, nu=0.1)
    # att = (1/nu) mean(max(0, [1, 4] - 2.25)) = 10 * (0 + 1.75) / 2 = 8.75
    assert float(att.detach()) == pytest.approx(8.75)
    assert float(rep.detach()) == 0.0  # 2.25 - 9 - 0.5 < 0
    loss.backward()
    # d att / d r = 10 * (1/2) * (-2 r) [one active term] = -10 * 1.5 = -15
    assert r.grad is not None and float(r.grad.detach()) == pytest.approx(-15.0)

    r = torch.nn.Parameter(torch.tensor([3.5]))  # r^2 = 12.25: repulsion of d=9 active
    loss, att, rep = coupled_hypersphere_loss(feature, bank, r, k=2, j=2, alpha=0.5, nu=0.1)
    assert float(att.detach()) == 0.0
    # rep = 10 * mean(max(0, 12.25 - [9, 16] - 0.5)) = 10 * (2.75 + 0) / 2 = 13.75
    assert float(rep.detach()) == pytest.approx(13.75)
    loss.backward()
    assert float(r.grad.detach()) == pytest.approx(10 * 0.5 * 2 * 3.5)  # +35: repulsion pushes r down


def test_loss_gradient_reaches_the_descriptor_features() -> None:
    feature = torch.tensor([[0.5, 0.5]], requires_grad=True)
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 4.0]])
    loss, _, _ = coupled_hypersphere_loss(feature, bank, torch.tensor([1e-5]), k=1, j=1, alpha=0.1, nu=1e-3)
    loss.backward()
    assert feature.grad is not None and feature.grad.abs().sum() > 0


def test_loss_refuses_more_neighbours_than_bank_entries() -> None:
    with pytest.raises(ValueError, match="exceeds the memory bank size 2"):
        coupled_hypersphere_loss(torch.zeros(1, 2), torch.ones(2, 2), torch.tensor([1.0]), k=2, j=1)


def test_softmin_score_hand_computed() -> None:
    feature = torch.zeros(1, 2)
    bank = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 10.0]])
    # Euclidean distances of the K=3 nearest: 1, 2, 3 -> softmin[0] * 1
    expected = math.exp(-1) / (math.exp(-1) + math.exp(-2) + math.exp(-3)) * 1.0
    assert float(softmin_score(feature, bank, k=3)[0]) == pytest.approx(expected, rel=1e-6)
    # A feature far from everything scores higher than one on a bank entry.
    far = softmin_score(torch.tensor([[20.0, 20.0]]), bank, k=3)
    near = softmin_score(torch.tensor([[1.0, 0.0]]), bank, k=3)
    assert float(near[0]) == pytest.approx(0.0, abs=1e-3) and float(far[0]) > 10


@pytest.mark.parametrize("n_images", [3, 12])
def test_memory_bank_size_is_independent_of_the_training_set_size(n_images: int) -> None:
    descriptor_maps = torch.randn(n_images, 5, 4, 6, generator=torch.Generator().manual_seed(n_images))
    builder = MemoryBankBuilder()
    for i in range(0, n_images, 2):
        builder.add(descriptor_maps[i : i + 2])
    bank = builder.build(gamma_c=0.25, kmeans_iterations=5, generator=torch.Generator().manual_seed(0))
    assert tuple(bank.shape) == (6, 5)  # round(0.25 * 4 * 6) entries of D = 5, whatever n_images
    full = builder.build(gamma_c=1.0, kmeans_iterations=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(full, descriptor_maps.mean(0).permute(1, 2, 0).reshape(24, 5))


def test_kmeans_finds_separated_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(20, 2, generator=gen) for c in centres])
    found = kmeans(points, 3, 20, torch.Generator().manual_seed(1))
    dist = torch.cdist(centres, found).min(dim=1).values
    assert float(dist.max()) < 0.2


def test_multiscale_features_and_coordconv_shapes() -> None:
    maps = [torch.rand(2, 4, 16, 16), torch.rand(2, 6, 8, 8), torch.rand(2, 8, 4, 4)]
    feats = multiscale_patch_features(maps)
    assert tuple(feats.shape) == (2, 18, 16, 16)
    descriptor = CoordConvDescriptor(18, 9)
    assert descriptor.conv.in_channels == 20  # two coordinate channels
    out = descriptor(feats)
    assert tuple(out.shape) == (2, 9, 16, 16)
    # The coordinates make identical features at different positions map to different outputs.
    flat = descriptor(torch.zeros(1, 18, 4, 4))
    assert not torch.allclose(flat[0, :, 0, 0], flat[0, :, 3, 3])


def test_config_rejects_bad_values() -> None:
    with pytest.raises(DetectorConfigError, match="gamma_c"):
        registry.create("cfa", gamma_c=0.0)
    with pytest.raises(DetectorConfigError, match="not_a_key"):
        registry.create("cfa", not_a_key=3)


def test_predict_before_fit_is_a_detector_error() -> None:
    detector = registry.create("cfa", image_size=64, device="cpu")
    with pytest.raises(DetectorError, match="before fit"):
        detector.predict(torch.rand(1, 3, 64, 64))


def test_fit_learns_r_and_reports_bank_size() -> None:
    from detectors.synthetic import synthetic_imageset

    detector = registry.create("cfa", **{**registry.detector_class("cfa").smoke_config, "epochs": 2})
    stats = detector.fit(synthetic_imageset(3, size=64, seed=0))
    assert stats["r"][-1] != pytest.approx(detector.config.r_init)  # r is learned
    assert stats["bank_size"] == [round(0.5 * 16 * 16), detector.out_channels]
    assert set(detector.state_dict()) >= {"r", "bank", "descriptor.conv.weight"}


@pytest.fixture(scope="module")
def fitted_state() -> dict[str, torch.Tensor]:
    """The state dict of a cfa model fitted for one epoch on two synthetic images."""
    from detectors.synthetic import synthetic_imageset

    detector = registry.create("cfa", **{**registry.detector_class("cfa").smoke_config, "epochs": 1})
    detector.fit(synthetic_imageset(2, size=64, seed=0))
    return detector.state_dict()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s.pop("descriptor.conv.weight"), "missing tensor 'descriptor.conv.weight'"),
        (lambda s: s.update({"descriptor.conv.bias": torch.zeros(2)}), r"tensor 'descriptor.conv.bias' has shape \(2,\)"),
        (lambda s: s.pop("r"), "missing tensor 'r'"),
        (lambda s: s.update({"r": torch.zeros(2)}), r"tensor 'r' has shape \(2,\)"),
        (lambda s: s.pop("bank"), "missing tensor 'bank'"),
        (lambda s: s.update({"bank": torch.zeros(4, 3)}), r"tensor 'bank' has shape \(4, 3\)"),
        (lambda s: s.update({"descriptor.extra": torch.zeros(1)}), "unexpected tensor 'descriptor.extra'"),
        (lambda s: s.update({"backbone.w": torch.zeros(1)}), "unexpected tensor 'backbone.w'"),
    ],
)
def test_weights_that_do_not_fit_name_the_tensor(fitted_state, damage, message: str) -> None:
    state = dict(fitted_state)
    damage(state)
    detector = registry.create("cfa", **registry.detector_class("cfa").smoke_config)
    with pytest.raises(DetectorError, match=f"^cfa weights: {message}"):
        detector.load_state_dict(state)
    detector.load_state_dict(dict(fitted_state))  # the undamaged state loads
