"""Glancing at the Patch specifics: partial convolution, IDW map, DAD negatives, patch raster, detector glue.

The registry contract tests (test_contract.py) cover fit/predict/save/load for "glance" once it is
registered; importing :mod:`detectors.glance` here registers it for this session too.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import detectors.glance  # noqa: F401  (registers "glance")
from detectors import registry
from detectors.errors import DetectorConfigError, DetectorError
from detectors.glance.model import (
    GlobalNet,
    PartialConv2d,
    add_stain,
    compactness_loss,
    hole_masks,
    iad_score,
    idw_weights,
    joint_score,
    patch_centres,
    patch_grid,
)

REPO = Path(__file__).resolve().parents[2]


def test_partial_convolution_ignores_masked_pixels() -> None:
    torch.manual_seed(0)
    conv = PartialConv2d(3, 5, 3, stride=2, padding=1)
    x = torch.rand(2, 3, 16, 16)
    mask = torch.ones(2, 1, 16, 16)
    mask[:, :, 4:10, 5:12] = 0
    changed = x.clone()
    changed[:, :, 4:10, 5:12] = torch.rand(2, 3, 6, 7) * 100  # only masked pixels differ
    out_a, mask_a = conv(x, mask)
    out_b, mask_b = conv(changed, mask)
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(mask_a, mask_b)
    # ... and an unmasked pixel does change the output (the test can fail).
    moved = x.clone()
    moved[:, :, 0, 0] += 1.0
    assert not torch.allclose(conv(moved, mask)[0], out_a)


def test_partial_convolution_renormalises_and_zeroes_empty_windows() -> None:
    conv = PartialConv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.conv.weight.fill_(1.0)
        conv.bias.fill_(0.5)
    x = torch.ones(1, 1, 8, 8)
    mask = torch.ones(1, 1, 8, 8)
    mask[:, :, :, :4] = 0  # left half invalid
    with torch.no_grad():
        out, new_mask = conv(x, mask)
    # a window with any valid pixel: W^T(X*M) * 9/sum(M) + b = sum(M) * 9/sum(M) + 0.5 = 9.5
    assert float(out[0, 0, 4, 3]) == pytest.approx(9.5)
    assert float(out[0, 0, 4, 6]) == pytest.approx(9.5)
    # a window of masked pixels only -> 0 and mask 0
    assert float(out[0, 0, 4, 1]) == 0.0 and float(new_mask[0, 0, 4, 1]) == 0.0
    assert float(new_mask[0, 0, 4, 3]) == 1.0


def test_global_net_does_not_peek_at_the_patch() -> None:
    torch.manual_seed(0)
    net = GlobalNet(dim=8, width=4).eval()
    boxes = [(16, 24)]
    images = torch.rand(1, 3, 64, 64)
    mask = hole_masks(boxes, 16, 64, 64, torch.device("cpu"))
    centres = patch_centres(boxes, 16, 64, torch.device("cpu"))
    other = images.clone()
    other[:, :, 16:32, 24:40] = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(images, mask, centres), net(other, mask, centres))


def test_hole_mask_scales_the_patch_to_the_global_input() -> None:
    mask = hole_masks([(32, 64)], 32, 256, 128, torch.device("cpu"))
    assert tuple(mask.shape) == (1, 1, 128, 128)
    holes = (mask[0, 0] == 0).nonzero()
    assert holes[:, 0].min() == 16 and holes[:, 0].max() == 31  # rows 32..63 at half resolution
    assert holes[:, 1].min() == 32 and holes[:, 1].max() == 47
    assert int((mask == 0).sum()) == 16 * 16


def test_idw_map_reproduces_a_constant_score_field() -> None:
    boxes = patch_grid(64, 16, 8)
    weights = idw_weights(64, boxes, 16)
    scores = torch.full((2, len(boxes)), 0.37)
    field = torch.einsum("bp,pyx->byx", scores, weights)
    torch.testing.assert_close(field, torch.full((2, 64, 64), 0.37))


def test_idw_map_is_local_and_peaks_at_the_anomalous_patch() -> None:
    boxes = patch_grid(64, 16, 8)
    weights = idw_weights(64, boxes, 16)
    scores = torch.zeros(1, len(boxes))
    hot = boxes.index((24, 24))
    scores[0, hot] = 1.0
    field = torch.einsum("bp,pyx->byx", scores, weights)[0]
    assert float(field[0, 0]) == 0.0  # outside the patch: untouched
    y, x = divmod(int(field.argmax()), 64)
    assert 24 <= y < 40 and 24 <= x < 40


def test_patch_grid_covers_every_pixel_in_raster_order() -> None:
    boxes = patch_grid(70, 16, 16)
    starts = sorted({y for y, _ in boxes})
    assert starts == [0, 16, 32, 48, 54]  # last one aligned to the border
    assert boxes[:2] == [(0, 0), (0, 16)]
    assert len(boxes) == 25


def _raster_starts(image_size: int, patch: int, stride: int) -> list[int]:
    """The raster written out: every ``stride`` px, plus a last start aligned to the border."""
    starts = list(range(0, image_size - patch + 1, stride))
    return starts if starts[-1] == image_size - patch else starts + [image_size - patch]


def _glance_geometries() -> list[tuple[int, int, int]]:
    """(image_size, patch_size, patch_stride) of the defaults, the smoke config, configs/detectors/glance.yaml
    and its documented cheaper recipe."""
    import yaml

    smoke = registry.detector_class("glance").smoke_config
    default = registry.detector_class("glance").config_class()
    recipe = yaml.safe_load((REPO / "configs" / "detectors" / "glance.yaml").read_text())["config"]
    return [
        (default.image_size, default.patch_size, default.patch_stride),
        (smoke["image_size"], smoke["patch_size"], smoke["patch_stride"]),
        (recipe["image_size"], recipe["patch_size"], recipe["patch_stride"]),
        (128, 16, 8),
    ]


def test_patch_grid_is_the_stride_raster_for_every_glance_geometry() -> None:
    for image_size, patch, stride in _glance_geometries() + [(70, 16, 16), (100, 32, 24), (64, 16, 20)]:
        starts = _raster_starts(image_size, patch, stride)
        expected = [(y, x) for y in starts for x in starts]
        assert patch_grid(image_size, patch, stride) == expected, (image_size, patch, stride)
    with pytest.raises(ValueError, match="larger than the image"):
        patch_grid(16, 32, 8)


def test_dad_negatives_differ_from_positives_only_inside_the_stain() -> None:
    patches = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    stained, inside = add_stain(patches, torch.Generator().manual_seed(1))
    assert tuple(inside.shape) == (16, 32, 32)
    outside = ~inside.unsqueeze(1).expand_as(patches)
    torch.testing.assert_close(stained[outside], patches[outside], rtol=0, atol=0)
    diff = (stained != patches).any(dim=1)
    assert bool((diff <= inside).all())  # changes only inside
    area = inside.flatten(1).float().mean(1)
    assert bool((area > 0).all()) and float(area.max()) < 0.25  # a small stain in every patch
    # the same generator seed gives the same stains
    again, _ = add_stain(patches, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, stained)


def test_scores_and_compactness() -> None:
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    torch.testing.assert_close(iad_score(a, b), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(joint_score(torch.tensor([1.0]), torch.tensor([0.5]), 0.8), torch.tensor([0.9]))
    z = torch.randn(64, 1).repeat(1, 4)  # perfectly correlated components
    assert float(compactness_loss(z)) == pytest.approx(1.0, abs=1e-4)
    assert float(compactness_loss(torch.randn(4096, 4, generator=torch.Generator().manual_seed(0)))) < 0.05


def test_config_errors() -> None:
    with pytest.raises(DetectorConfigError, match="patch_size"):
        registry.create("glance", image_size=64, patch_size=128)
    with pytest.raises(DetectorConfigError, match="lambda_s"):
        registry.create("glance", lambda_s=1.5)


def test_predict_before_fit_is_a_detector_error() -> None:
    detector = registry.create("glance", **registry.detector_class("glance").smoke_config)
    with pytest.raises(DetectorError, match="before fit"):
        detector.predict(torch.rand(1, 3, 64, 64))


def test_batched_views_equal_chunked_views() -> None:
    """All masked views of an image in one Global-Net pass give the same scores as smaller passes."""
    from detectors.synthetic import synthetic_imageset

    smoke = dict(registry.detector_class("glance").smoke_config)
    smoke.update(local_steps=2, global_steps=2, distill_patches=32)
    detector = registry.create("glance", **smoke)
    detector.fit(synthetic_imageset(2, size=64, seed=0))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    one_pass = detector.patch_scores(images)["score"]
    assert tuple(one_pass.shape) == (2, detector.patches_per_image)
    detector.config = detector.config.model_copy(update={"views_per_pass": 5})
    torch.testing.assert_close(detector.patch_scores(images)["score"], one_pass, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def fitted_state() -> dict[str, torch.Tensor]:
    """The state dict of a glance model fitted for a few steps on two synthetic images."""
    from detectors.synthetic import synthetic_imageset

    smoke = {**registry.detector_class("glance").smoke_config, "local_steps": 2, "global_steps": 2, "distill_patches": 32}
    detector = registry.create("glance", **smoke)
    detector.fit(synthetic_imageset(2, size=64, seed=0))
    return detector.state_dict()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s.pop("global.head.0.weight"), "missing tensor 'global.head.0.weight'"),
        (lambda s: s.update({"dad.net.0.bias": torch.zeros(3)}), r"tensor 'dad.net.0.bias' has shape \(3,\)"),
        (lambda s: s.pop("local_std"), "missing tensor 'local_std'"),
        (lambda s: s.update({"local_mean": torch.zeros(2)}), r"tensor 'local_mean' has shape \(2,\)"),
        (lambda s: s.update({"local.extra": torch.zeros(1)}), "unexpected tensor 'local.extra'"),
        (lambda s: s.update({"teacher.w": torch.zeros(1)}), "unexpected tensor 'teacher.w'"),
    ],
)
def test_weights_that_do_not_fit_name_the_tensor(fitted_state, damage, message: str) -> None:
    state = dict(fitted_state)
    damage(state)
    detector = registry.create("glance", **registry.detector_class("glance").smoke_config)
    with pytest.raises(DetectorError, match=f"^glance weights: {message}"):
        detector.load_state_dict(state)
    detector.load_state_dict(dict(fitted_state))  # the undamaged state loads
