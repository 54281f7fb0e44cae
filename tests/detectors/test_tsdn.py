"""TSDN: superpixel random filling, the feature-normality target, the losses, config file, resumable training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detectors import registry
from detectors.errors import DetectorError
from detectors.synthetic import synthetic_imageset
from detectors.tsdn import TSDN, TSDNConfig
from detectors.tsdn.model import gms_loss, normality_target, ssim_loss, tsdn_losses
from detectors.tsdn.surf import SuperpixelCache, slic_labels, superpixel_random_fill, surf_batch
from tests.detectors.interrupting_progress import InterruptingProgress

REPO = Path(__file__).resolve().parents[2]


def _image(size: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([xx, yy, 0.5 * (xx + yy)]).float()


def test_surf_fills_exactly_n_filled_superpixels_and_mask_matches() -> None:
    image = _image()
    labels = slic_labels(image.permute(1, 2, 0).numpy(), 30)
    filled, mask = superpixel_random_fill(image, 30, 5, np.random.default_rng(0))
    mask_np = mask.numpy()
    inside = set(np.unique(labels[mask_np]).tolist())
    assert len(inside) == 5
    for label in inside:  # each filled superpixel is filled entirely, with one colour
        region = labels == label
        assert mask_np[region].all()
        colours = filled.permute(1, 2, 0).numpy()[region]
        assert np.allclose(colours, colours[0])
    assert torch.equal(filled[:, ~mask], image[:, ~mask])  # the rest is untouched
    assert (filled[:, mask] != image[:, mask]).any()


def test_cached_superpixels_give_the_same_surf_batch_as_computing_them() -> None:
    images = torch.stack([_image(), _image().flip(-1), _image().flip(-2)])
    cache = SuperpixelCache(images, 30, workers=2)
    cache.fill()
    for k in range(3):
        assert np.array_equal(cache.labels([k])[0], slic_labels(images[k].permute(1, 2, 0).numpy(), 30))
    fresh = surf_batch(images, 30, 5, np.random.default_rng(7))
    cached = surf_batch(images, 30, 5, np.random.default_rng(7), labels=cache.labels([0, 1, 2]))
    assert torch.equal(fresh[0], cached[0]) and torch.equal(fresh[1], cached[1])


def test_surf_batch_probability_zero_keeps_images_clean() -> None:
    images = torch.stack([_image(), _image()])
    out, masks = surf_batch(images, 20, 3, np.random.default_rng(1), probability=0.0)
    assert torch.equal(out, images) and masks.shape == (2, 1, 64, 64) and masks.sum() == 0


def test_normality_target_in_unit_range_and_low_for_mask_like_channels() -> None:
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:40, 8:32] = 1
    like = torch.nn.functional.avg_pool2d(mask, 8)[0, 0]  # (8, 8): the mask itself at 1/8
    noise = torch.rand(8, 8, generator=torch.Generator().manual_seed(0))
    stripes = torch.arange(8).float().repeat(8, 1) % 2
    features = torch.stack([noise, like, stripes, 1 - like])[None]  # (1, 4, 8, 8)
    w_gt = normality_target(features, mask)
    assert w_gt.shape == (1, 4)
    assert float(w_gt.min()) >= 0 and float(w_gt.max()) <= 1
    assert int(w_gt.argmin()) == 1
    assert w_gt[0, 1] < w_gt[0, 0] and w_gt[0, 1] < w_gt[0, 2] and w_gt[0, 1] < w_gt[0, 3]


def test_image_losses_vanish_for_identical_images_only() -> None:
    a = _image()[None]
    b = a.clone()
    b[..., 20:40, 20:40] = 0.5  # a flat square: other structure and gradients there
    assert float(ssim_loss(a, a)) == pytest.approx(0, abs=1e-5)
    assert float(gms_loss(a, a)) == pytest.approx(0, abs=1e-5)
    assert float(ssim_loss(a, b)) > 0.05 and float(gms_loss(a, b)) > 0.01


def test_total_loss_uses_the_paper_weights() -> None:
    torch.manual_seed(0)
    out = {
        "reconstruction": torch.rand(1, 3, 32, 32),
        "mask_logits": torch.randn(1, 1, 32, 32),
        "features": torch.randn(1, 4, 2, 2),
        "w_logits": torch.randn(1, 4),
    }
    clean, fill = torch.rand(1, 3, 32, 32), (torch.rand(1, 1, 32, 32) > 0.5).float()
    weights = TSDNConfig().loss_weights
    assert weights == [1.0, 0.5, 1.0, 1.0, 5e-5]
    parts = tsdn_losses(out, clean, fill, weights)
    expected = parts["r"] + 0.5 * parts["s"] + parts["g"] + parts["m"] + 5e-5 * parts["fne"]
    assert float(parts["total"]) == pytest.approx(float(expected), rel=1e-6)


def test_config_file_validates() -> None:
    import yaml

    data = yaml.safe_load((REPO / "configs" / "detectors" / "tsdn.yaml").read_text())
    assert data["method"] == "tsdn"
    registry.validate_config("tsdn", data["config"])


_TINY = {**TSDN.smoke_config, "pretrained": "none", "epochs": 2, "batch_size": 2}  # 4 steps on 4 images


def test_training_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    train = synthetic_imageset(4, size=64, seed=0)
    config = TSDNConfig(**_TINY, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        TSDN(config).fit(train, progress=InterruptingProgress(at=3))  # steps 1-3 ran; checkpoint after step 2
    assert (tmp_path / "ckpt" / "checkpoint.pt").is_file()
    watcher = InterruptingProgress()
    resumed = TSDN(config)
    stats = resumed.fit(train, progress=watcher)
    assert stats["resumed_from"] == 2 and stats["steps"] == 4
    steps = [d for d, message in watcher.seen if message.startswith("epoch")]
    assert steps == [3, 4]  # continues, does not restart
    assert watcher.seen[0] == (2, f"resumed from {tmp_path / 'ckpt' / 'checkpoint.pt'} at step 2")
    assert len(stats["loss"]) == 4

    straight = TSDN(TSDNConfig(**_TINY))
    straight.fit(train)
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, msg=key)


def test_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    train = synthetic_imageset(2, size=64, seed=0)
    base = {**_TINY, "epochs": 1, "checkpoint_every": 1, "checkpoint_dir": str(tmp_path)}
    TSDN(TSDNConfig(**base)).fit(train)
    with pytest.raises(DetectorError, match="another run.*lr"):
        TSDN(TSDNConfig(**{**base, "lr": 1e-4})).fit(train)


def test_normal_skip_levels_zeroes_the_shallower_skips_of_dcd_n() -> None:
    from detectors.backbones import OFFLINE_BACKBONE, create_feature_extractor
    from detectors.tsdn.model import TSDNNet

    encoder = create_feature_extractor(OFFLINE_BACKBONE, [0, 1, 2, 3, 4], "none")
    net = TSDNNet(encoder, 64, 16, [16, 16, 16, 16], 8, 16, normal_skip_levels=1).eval()
    seen = {}
    net.dcd_n.register_forward_hook(lambda module, args, out: seen.update(skips=args[1]))
    net(torch.rand(1, 3, 64, 64))
    assert len(seen["skips"]) == 4
    assert seen["skips"][0].abs().sum() > 0  # the deepest skip (stride 16) is kept
    assert all(float(s.abs().sum()) == 0 for s in seen["skips"][1:])
