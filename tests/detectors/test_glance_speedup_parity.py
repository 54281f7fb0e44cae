"""Glance's fast inference path equals the straightforward computation (detectors/glance/reference.py).

The fast path scores the N_p masked Global-Net views incrementally (:class:`MaskedViews`: small crops around
each hole over one unmasked base pass) and interpolates the map from the K nonzero IDW weights per pixel;
the reference runs every masked view whole through ``GlobalNet.forward`` and uses the dense IDW product.
Same maths, different float summation order, so the comparison has a tolerance:

* image scores: relative 1e-3 (the issue's parity tolerance); measured on the real bottle images below:
  about 3e-7;
* maps: absolute 1e-4 x the map's largest magnitude; measured: about 5e-7 x.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import detectors.glance  # noqa: F401  (registers "glance")
from detectors import registry
from detectors.glance.masked_views import MaskedViews
from detectors.glance.model import GlobalNet, hole_masks, idw_sparse, idw_weights, patch_centres, patch_grid
from detectors.glance.reference import reference_patch_scores
from detectors.imagesets import MVTecImageSet

BOTTLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bottle"
SCORE_RTOL = 1e-3
MAP_TOL = 1e-4  # x the largest |map| value
CPU = torch.device("cpu")


def _random_global_net(dim: int, width: int, seed: int) -> GlobalNet:
    """A Global-Net with random weights AND biases (fresh partial convolutions have zero biases)."""
    torch.manual_seed(seed)
    net = GlobalNet(dim, width).eval()
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.normal_(0.0, 0.1)
    return net


@pytest.mark.parametrize(
    "image_size, patch, stride, global_size",
    [
        (256, 32, 16, 128),  # the defaults / configs/detectors/glance.yaml: 225 views
        (64, 16, 8, 32),  # the smoke config
        (128, 16, 8, 64),  # the documented cheaper recipe
        (100, 32, 24, 64),  # a raster whose last row is aligned to the border, holes not on a stride grid
        (96, 24, 20, 80),  # a Global-Net scale that is not a power of two
    ],
)
def test_masked_views_equal_every_view_through_the_global_net(image_size: int, patch: int, stride: int, global_size: int) -> None:
    net = _random_global_net(16, 8, seed=image_size)
    boxes = patch_grid(image_size, patch, stride)
    masks = hole_masks(boxes, patch, image_size, global_size, CPU)
    centres = patch_centres(boxes, patch, image_size, CPU)
    batch = 1 if len(boxes) > 100 else 2  # two images (image-major rows) where the reference is cheap
    images = torch.rand(batch, 3, global_size, global_size, generator=torch.Generator().manual_seed(1))
    views = MaskedViews(net, masks, centres, CPU)
    with torch.no_grad():
        expected = torch.cat([net(images[[b] * len(boxes)], masks, centres) for b in range(batch)])
        fast = views(net, images)
        some = views(net, images, 3, 7)  # a chunk of views (views_per_pass)
    assert fast.shape == expected.shape == (batch * len(boxes), 16)
    scale = float(expected.abs().max())
    assert scale > 0.01  # the features are not trivially zero
    torch.testing.assert_close(fast, expected, rtol=0, atol=1e-5 * scale)
    chunk = torch.cat([expected[b * len(boxes) + 3 : b * len(boxes) + 7] for b in range(batch)])
    torch.testing.assert_close(some, chunk, rtol=0, atol=1e-5 * scale)
    # each view really is its own: the features of different views differ
    assert float((fast[0] - fast[1]).abs().max()) > 1e-4 * scale


def test_masked_views_follow_the_weights_given_at_call_time() -> None:
    """One plan (geometry only) serves any weights of the architecture: a retrained net gives its own features."""
    boxes = patch_grid(64, 16, 8)
    masks, centres = hole_masks(boxes, 16, 64, 32, CPU), patch_centres(boxes, 16, 64, CPU)
    first, second = _random_global_net(8, 4, seed=0), _random_global_net(8, 4, seed=1)
    views = MaskedViews(first, masks, centres, CPU)
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(views(second, images), second(images.expand(len(boxes), -1, -1, -1), masks, centres), rtol=0, atol=1e-5)


def test_sparse_idw_equals_the_dense_product() -> None:
    for image_size, patch, stride in [(256, 32, 16), (64, 16, 8), (70, 16, 16), (100, 32, 24)]:
        boxes = patch_grid(image_size, patch, stride)
        weights = idw_weights(image_size, boxes, patch)
        index, weight = idw_sparse(weights)
        assert index.shape == weight.shape and index.shape[1:] == (image_size, image_size)
        scores = torch.rand(3, len(boxes), generator=torch.Generator().manual_seed(image_size))
        dense = torch.einsum("bp,pyx->byx", scores, weights)
        torch.testing.assert_close((scores[:, index] * weight).sum(1), dense, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def bottle_model_and_images() -> tuple[object, torch.Tensor]:
    """A glance model of the configs/detectors/glance.yaml geometry (256 px, 225 views), fitted briefly on 6
    real bottle training images, and two real test images (a good one and a broken_large one)."""
    if not (BOTTLE / "train" / "good").is_dir():
        pytest.skip(f"MVTec bottle data not found at {BOTTLE} (expected ../shared/data/bottle beside the repo)")
    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "detectors" / "glance.yaml").read_text())["config"]
    config.update(device="cpu", local_steps=4, global_steps=4, distill_patches=64)
    detector = registry.create("glance", **config)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(min(2, old_threads))
    try:
        detector.fit(MVTecImageSet(BOTTLE, "train", image_size=256).subset(range(6)))
        test = MVTecImageSet(BOTTLE, "test", image_size=256, max_per_type=1)
        images = test.subset([test.defect_types.index("good"), test.defect_types.index("broken_large")]).stack_images()
    finally:
        torch.set_num_threads(old_threads)
    return detector, images


def test_fast_predict_equals_the_reference_on_real_bottle_images(bottle_model_and_images) -> None:
    detector, images = bottle_model_and_images
    old_threads = torch.get_num_threads()
    torch.set_num_threads(min(2, old_threads))
    try:
        prediction = detector.predict(images)
        fast_patch = detector.patch_scores(images)
        ref_patch = reference_patch_scores(detector, images)
        ref_maps = torch.einsum("bp,pyx->byx", ref_patch[2], detector.idw)  # as reference_score_batch
        ref_scores = ref_maps.amax(dim=(1, 2))
    finally:
        torch.set_num_threads(old_threads)
    scores, maps = torch.from_numpy(prediction.score), torch.from_numpy(prediction.anomaly_map)
    assert scores.shape == (2,) and maps.shape == (2, 256, 256)
    assert float(ref_maps.std()) > 0  # a map that is not flat: the comparison can fail
    torch.testing.assert_close(scores, ref_scores, rtol=SCORE_RTOL, atol=0)
    torch.testing.assert_close(maps, ref_maps, rtol=0, atol=MAP_TOL * float(ref_maps.abs().max()))
    for key, reference in zip(("iad", "dad", "score"), ref_patch):
        torch.testing.assert_close(fast_patch[key], reference, rtol=SCORE_RTOL, atol=1e-6, msg=key)
