"""SimpleNet: the networks, the loss, the noise, training, scoring, state and bad input (CPU, fast)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import detectors.simplenet  # noqa: F401  (registers "simplenet")
from detectors import create
from detectors.errors import DetectorConfigError, DetectorError, ImageSetError
from detectors.imagesets import InMemoryImageSet
from detectors.registry import validate_config
from detectors.simplenet import SimpleNet
from detectors.image_ops import gaussian_blur
from detectors.simplenet.model import (
    Adaptor,
    AnomalousFeatureGenerator,
    Discriminator,
    FeatureAggregator,
    truncated_l1_loss,
)
from detectors.synthetic import add_defect, textured_images

# A tiny, quick-learning configuration (64 px, 8x8 patch grid, 32-d features).
TINY = dict(SimpleNet.smoke_config)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one torch thread is faster, and much faster on a shared, oversubscribed machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def fitted(one_thread) -> tuple[SimpleNet, dict]:
    det = create("simplenet", **TINY)
    stats = det.fit(textured_images(8, size=64, seed=1), val=textured_images(3, size=64, seed=2))
    return det, stats


# ------------------------------------------------------------------------------------------- networks
def test_aggregator_shapes_and_grid_of_first_layer() -> None:
    agg = FeatureAggregator([40, 112], pretrain_dim=48, target_dim=24)
    feats = [torch.randn(2, 40, 8, 8), torch.randn(2, 112, 4, 4)]
    out = agg(feats)
    assert out.shape == (2, 8, 8, 24)
    assert out.dtype == torch.float32


def test_aggregator_is_a_3x3_local_average_for_one_channel() -> None:
    # One layer, one channel, every pooled length 1: the feature is the mean of the zero-padded 3x3 window.
    agg = FeatureAggregator([1], pretrain_dim=1, target_dim=1)
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    out = agg([x])[..., 0]
    expected = nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)[:, 0]
    torch.testing.assert_close(out, expected)
    assert out[0, 1, 1].item() == pytest.approx((0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10) / 9)


def test_aggregator_upsamples_coarse_layer_to_fine_grid() -> None:
    # A constant coarse layer stays constant after unfold (interior) and upsampling.
    agg = FeatureAggregator([2, 3], pretrain_dim=2, target_dim=2, patch_size=1)
    fine = torch.zeros(1, 2, 6, 6)
    coarse = torch.full((1, 3, 3, 3), 5.0)
    out = agg([fine, coarse])
    assert out.shape == (1, 6, 6, 2)
    torch.testing.assert_close(out[..., 0], torch.zeros(1, 6, 6))  # first half: the fine layer
    torch.testing.assert_close(out[..., 1], torch.full((1, 6, 6), 5.0))  # second half: the coarse one


def test_adaptor_is_one_linear_without_activation() -> None:
    adaptor = Adaptor(16)
    linears = [m for m in adaptor.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].weight.shape == (16, 16)
    x = torch.randn(5, 16)
    assert adaptor(x).shape == (5, 16)
    # Linear => f(2x) - f(0) == 2 (f(x) - f(0)): no activation.
    zero = adaptor(torch.zeros(1, 16))
    torch.testing.assert_close(adaptor(2 * x) - zero, 2 * (adaptor(x) - zero), rtol=1e-4, atol=1e-5)


def test_discriminator_layout_and_shapes() -> None:
    disc = Discriminator(24, hidden=10)
    kinds = [type(m) for m in disc.modules() if not isinstance(m, (nn.Sequential, Discriminator))]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.LeakyReLU, nn.Linear]
    assert disc.body[2].negative_slope == pytest.approx(0.2)
    assert disc.body[0].weight.shape == (10, 24)
    assert disc.tail.weight.shape == (1, 10) and disc.tail.bias is None
    assert disc(torch.randn(7, 24)).shape == (7,)


def test_truncated_l1_loss_hand_computed() -> None:
    normal = torch.tensor([1.0, 0.2, -0.3])  # relu(0.5 - s) = 0, 0.3, 0.8 -> mean 0.3667
    anomalous = torch.tensor([-1.0, 0.0, 0.6])  # relu(0.5 + s) = 0, 0.5, 1.1 -> mean 0.5333
    assert truncated_l1_loss(normal, anomalous, 0.5).item() == pytest.approx(0.9, abs=1e-6)
    # Separated beyond the margin: zero loss.
    assert truncated_l1_loss(torch.tensor([0.6, 2.0]), torch.tensor([-0.7]), 0.5).item() == 0.0


def test_noise_generator_std_and_seed() -> None:
    gen = AnomalousFeatureGenerator(0.015, torch.Generator().manual_seed(3))
    base = torch.full((20000, 16), 2.0)
    noisy = gen(base)
    delta = noisy - base
    assert delta.std().item() == pytest.approx(0.015, rel=0.02)
    assert abs(delta.mean().item()) < 0.001
    again = AnomalousFeatureGenerator(0.015, torch.Generator().manual_seed(3))(base)
    torch.testing.assert_close(noisy, again)
    with pytest.raises(ValueError):
        AnomalousFeatureGenerator(0.0, torch.Generator())


def test_gaussian_blur_keeps_mass_and_spreads_a_peak() -> None:
    maps = torch.zeros(1, 41, 41)
    maps[0, 20, 20] = 1.0
    out = gaussian_blur(maps, 4.0)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert out[0, 20, 20].item() == pytest.approx(1 / (2 * torch.pi * 16), rel=0.02)
    assert out[0].argmax().item() == 20 * 41 + 20


# ------------------------------------------------------------------------------------------- training
def test_training_decreases_the_loss(fitted) -> None:
    _, stats = fitted
    assert len(stats["loss"]) == TINY["meta_epochs"]
    assert stats["loss"][-1] < stats["loss"][0] - 0.05
    assert stats["features_cached"] is True
    assert stats["epochs"] == TINY["meta_epochs"] * TINY["epochs_per_meta"]


def test_predict_shapes_and_defect_outscores_clean(fitted) -> None:
    det, _ = fitted
    clean = textured_images(3, size=64, seed=9)
    bad = torch.stack([add_defect(img, "patch", seed=k, scale=0.25)[0] for k, img in enumerate(clean)])
    pred = det.predict(torch.cat([clean, bad]))
    assert pred.score.shape == (6,) and pred.anomaly_map.shape == (6, 64, 64)
    assert pred.score[3:].min() > pred.score[:3].max()


def test_same_seed_same_model_and_state_round_trip(fitted) -> None:
    det, stats = fitted
    images = textured_images(2, size=64, seed=5)
    again = create("simplenet", **TINY)
    again_stats = again.fit(textured_images(8, size=64, seed=1))  # no val set: val only reports
    assert again_stats["loss"] == stats["loss"]
    torch.testing.assert_close(
        torch.from_numpy(again.predict(images).anomaly_map), torch.from_numpy(det.predict(images).anomaly_map)
    )
    restored = create("simplenet", **TINY)
    restored.load_state_dict(det.state_dict())
    torch.testing.assert_close(
        torch.from_numpy(restored.predict(images).score), torch.from_numpy(det.predict(images).score)
    )
    assert "norm.mean" in det.state_dict()


@pytest.mark.parametrize("pretrain_dim, target_dim, use_norm", [(48, 24, True), (30, 23, False), (7, 40, True)])
def test_folded_head_scores_what_the_step_by_step_head_scores(pretrain_dim, target_dim, use_norm) -> None:
    # (30, 23): a target dimension pools values of both layers (blocks overlap: padded and summed);
    # (7, 40): pooling to more dimensions than the unfolded values (repeated entries)
    from detectors.simplenet.folded import FoldedHead
    from detectors.simplenet.reference import reference_anomaly_map, reference_patch_scores

    torch.manual_seed(0)
    agg = FeatureAggregator([5, 9], pretrain_dim=pretrain_dim, target_dim=target_dim)
    adaptor, disc = Adaptor(target_dim), Discriminator(target_dim, hidden=16)
    disc.body[1].running_mean.normal_()
    disc.body[1].running_var.uniform_(0.5, 2.0)
    disc.body[1].weight.data.normal_()
    disc.body[1].bias.data.normal_()
    adaptor.eval(), disc.eval()
    norm = (torch.randn(target_dim), torch.rand(target_dim) + 0.5) if use_norm else None
    maps = [torch.randn(2, 5, 8, 8), torch.randn(2, 9, 4, 4)]
    head = FoldedHead(agg, adaptor, disc, norm, grids=[(8, 8), (4, 4)], image_size=40, blur_sigma=2.0)
    with torch.no_grad():
        expected = reference_patch_scores(agg, norm, adaptor, disc, maps)
        torch.testing.assert_close(head.aggregate(maps).permute(0, 2, 3, 1), agg(maps), rtol=1e-5, atol=1e-5)
        got = head(maps)
        expected_map = reference_anomaly_map(expected, 40, 2.0)
        got_map = head.anomaly_map(expected)
    assert got.shape == (2, 8, 8) and got_map.shape == (2, 40, 40)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    torch.testing.assert_close(got_map, expected_map, rtol=0, atol=1e-5 * float(expected_map.abs().max()))


def test_predict_is_the_step_by_step_scoring_of_the_fitted_model(fitted) -> None:
    from detectors.simplenet.reference import ReferencePredictor

    det, _ = fitted
    images = textured_images(2, size=64, seed=7)
    expected = ReferencePredictor(det).predict(images)
    got = det.predict(images)
    scale = float(abs(expected.anomaly_map).max())
    torch.testing.assert_close(torch.from_numpy(got.anomaly_map), torch.from_numpy(expected.anomaly_map),
                               rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(torch.from_numpy(got.score), torch.from_numpy(expected.score), rtol=0, atol=1e-5 * scale)


def test_the_step_by_step_reference_is_the_papers_scoring() -> None:
    # the reference itself, against the definition written out here: a map of a single-patch anomaly
    # (the discriminator scores one patch lower) peaks at that patch after upsampling and blur
    from detectors.simplenet.reference import reference_anomaly_map, reference_patch_scores

    torch.manual_seed(1)
    agg = FeatureAggregator([4], pretrain_dim=8, target_dim=8, patch_size=1)
    adaptor, disc = Adaptor(8), Discriminator(8, hidden=6)
    adaptor.eval(), disc.eval()
    maps = [torch.randn(1, 4, 6, 6)]
    with torch.no_grad():
        feats = agg(maps).reshape(-1, 8)
        expected = -disc(adaptor(feats)).reshape(1, 6, 6)
        got = reference_patch_scores(agg, None, adaptor, disc, maps)
        torch.testing.assert_close(got, expected)
        spike = torch.zeros(1, 6, 6)
        spike[0, 2, 3] = 1.0
        amap = reference_anomaly_map(spike, 24, 1.0)
    assert amap.shape == (1, 24, 24)
    y, x = divmod(int(amap[0].argmax()), 24)
    assert 8 <= y <= 11 and 12 <= x <= 15  # the patch (2, 3) of a 6 x 6 grid covers rows 8-11, cols 12-15


def test_val_set_statistics_are_reported(fitted) -> None:
    _, stats = fitted
    assert stats["val"]["n"] == 3
    assert stats["val"]["score_max"] >= stats["val"]["score_q99"] >= stats["val"]["score_mean"]


def test_uncached_path_trains_the_same_model() -> None:
    cached = create("simplenet", **dict(TINY, meta_epochs=1, epochs_per_meta=2))
    uncached = create("simplenet", **dict(TINY, meta_epochs=1, epochs_per_meta=2, cache_features="never"))
    train = textured_images(6, size=64, seed=4)
    a, b = cached.fit(train), uncached.fit(train)
    assert b["features_cached"] is False
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


# ------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "images, fragment",
    [
        (torch.rand(1, 1, 64, 64), "3 channels"),
        (torch.rand(1, 3, 48, 48), "image_size 64"),
        (torch.rand(1, 3, 64, 64) * 255, "[0, 1]"),
        (torch.rand(3, 64, 64), "(B, 3, H, W)"),
        ((torch.rand(1, 3, 64, 64) * 255).to(torch.uint8), "float"),
    ],
)
def test_bad_images_give_one_line_errors(fitted, images, fragment) -> None:
    det, _ = fitted
    with pytest.raises(ImageSetError) as info:
        det.predict(images)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_bad_training_sets() -> None:
    det = create("simplenet", **TINY)
    with pytest.raises(ImageSetError, match="empty"):
        det.fit(torch.zeros(0, 3, 64, 64))
    with pytest.raises(ImageSetError, match="image_size 64"):
        det.fit(torch.rand(2, 3, 32, 32))
    mixed = InMemoryImageSet([torch.rand(3, 64, 64), torch.rand(3, 48, 48)], sources=["a.png", "b.png"])
    with pytest.raises(ImageSetError, match=r"^b.png: image is 3x48x48.*image_size 64"):
        det.fit(mixed)


def test_failed_fit_keeps_the_previous_model(fitted) -> None:
    det, _ = fitted
    images = textured_images(2, size=64, seed=6)
    before = det.predict(images).score
    bad = torch.cat([textured_images(3, size=64, seed=1), torch.full((1, 3, 64, 64), 2.0)])
    with pytest.raises(ImageSetError, match="0, 1"):
        det.fit(bad)
    torch.testing.assert_close(torch.from_numpy(det.predict(images).score), torch.from_numpy(before))


def test_predict_before_fit_and_bad_state() -> None:
    det = create("simplenet", **TINY)
    with pytest.raises(DetectorError, match="before fit"):
        det.predict(torch.rand(1, 3, 64, 64))
    with pytest.raises(DetectorError, match="missing tensor 'adaptor.linear.weight'"):
        det.load_state_dict({})


def test_state_of_another_size_is_rejected(fitted) -> None:
    det, _ = fitted
    other = create("simplenet", **dict(TINY, target_dim=16))
    with pytest.raises(DetectorError, match="shape"):
        other.load_state_dict(det.state_dict())


def test_config_is_strict_and_defaults_follow_the_reference() -> None:
    with pytest.raises(DetectorConfigError, match="unknown config key 'lr'"):
        validate_config("simplenet", {"lr": 0.1})
    with pytest.raises(DetectorConfigError, match="noise_std"):
        validate_config("simplenet", {"noise_std": -1})
    ref = validate_config("simplenet", {})
    assert (ref.layers, ref.pretrain_dim, ref.target_dim, ref.hidden_dim) == ([2, 3], 1536, 1536, 1024)
    assert (ref.noise_std, ref.margin, ref.meta_epochs, ref.epochs_per_meta, ref.batch_size) == (
        0.015, 0.5, 40, 4, 8
    )
    assert (ref.adaptor_lr, ref.discriminator_lr, ref.discriminator_weight_decay) == (1e-4, 2e-4, 1e-5)
    assert (ref.blur_sigma, ref.image_size, ref.feature_norm) == (4.0, 256, "none")
