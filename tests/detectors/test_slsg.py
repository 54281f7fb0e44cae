"""SLSG: inpainting masks, anomaly simulation, SG block graph, losses and score, config file, resume."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detectors import registry
from detectors.slsg import SLSG, SLSGConfig
from detectors.slsg.gptnet import grid_mask, inpainting_mask, large_masks
from detectors.slsg.segnet import (
    SGBlock,
    focal_loss,
    graph_neighbours,
    max_relative,
    positional_similarity,
    sincos_position_encoding,
    top_k_mean,
)
from detectors.slsg.simulation import (
    SimulationSettings,
    foreground_mask,
    perlin_mask,
    simulate_anomaly,
)
from detectors.synthetic import synthetic_imageset

REPO = Path(__file__).resolve().parents[2]


def test_grid_mask_covers_80_percent_of_whole_cells() -> None:
    mask = grid_mask(256, 8, 0.8, np.random.default_rng(0))
    cells = mask.reshape(8, 32, 8, 32).transpose(0, 2, 1, 3).reshape(64, -1)
    assert all(c.all() or not c.any() for c in cells)  # every 32x32 cell fully masked or not at all
    assert cells.all(axis=1).sum() == round(0.8 * 64)
    assert mask.mean() == pytest.approx(51 / 64)


def test_large_masks_have_sides_in_range() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        mask = large_masks(256, 1, (40, 150), rng)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert 40 <= len(rows) <= 150 and 40 <= len(cols) <= 150
        assert mask.sum() == len(rows) * len(cols)  # one solid rectangle


def test_inpainting_mask_is_grid_plus_large_masks_scaled_to_the_image() -> None:
    rng = np.random.default_rng(2)
    fractions = [inpainting_mask(128, 8, 0.8, (40, 150), (1, 2), rng).mean() for _ in range(10)]
    assert min(fractions) >= 51 / 64 - 1e-9 and max(fractions) <= 1.0
    assert max(fractions) > 51 / 64  # the large masks add to the grid


def test_perlin_masks_stay_inside_the_foreground() -> None:
    foreground = np.zeros((64, 64), dtype=bool)
    foreground[10:50, 5:40] = True
    rng = np.random.default_rng(3)
    for _ in range(10):
        mask = perlin_mask(64, rng, (0, 4), 0.3, foreground)
        assert mask.any() and not (mask & ~foreground).any()


def test_foreground_mask_finds_an_object_on_a_plain_background() -> None:
    image = np.full((64, 64, 3), 0.1, dtype=np.float32)
    image[20:44, 16:48] = (0.8, 0.7, 0.2)
    fg = foreground_mask(image)
    assert fg[20:44, 16:48].all() and fg.sum() == 24 * 32
    assert foreground_mask(np.full((32, 32, 3), 0.5, dtype=np.float32)).all()  # no background: everything


@pytest.mark.parametrize("logical", [0.0, 1.0])
def test_simulated_anomaly_changes_only_the_masked_foreground(logical: float) -> None:
    rng = np.random.default_rng(4)
    image = np.full((64, 64, 3), 0.05, dtype=np.float32)
    image[8:56, 8:56] = np.random.default_rng(5).uniform(0.3, 0.7, size=(48, 48, 3))
    other = np.random.default_rng(6).uniform(size=(64, 64, 3)).astype(np.float32)
    settings = SimulationSettings(logical_probability=logical, transparency=(1.0, 1.0))
    out, mask, kind = simulate_anomaly(image, [other], rng, settings)
    assert (kind == "logical") == (logical == 1.0)
    assert mask.any() and not mask[:8].any() and not mask[:, :8].any()
    assert np.array_equal(out[~mask], image[~mask])
    assert np.abs(out[mask] - image[mask]).mean() > 0.02


def test_positional_similarity_is_highest_for_nearby_nodes() -> None:
    wp = positional_similarity(6, 6, 32)
    assert wp.shape == (36, 36) and torch.allclose(wp.diagonal(), torch.ones(36))
    centre = 2 * 6 + 2
    assert wp[centre, centre + 1] > wp[centre, centre + 3] and wp[centre, centre + 6] > wp[centre, centre + 18]


def _grid_neighbours(index: int, h: int, w: int) -> set[int]:
    y, x = divmod(index, w)
    return {(y + dy) * w + x + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)
            if 0 <= y + dy < h and 0 <= x + dx < w}


def test_sg_graph_excludes_the_positional_neighbours() -> None:
    h = w = 6
    wp = positional_similarity(h, w, 32)
    # spatially smooth semantics: without the subtraction the top-9 are the node's own neighbourhood
    smooth = sincos_position_encoding(h, w, 32)[None]
    plain = graph_neighbours(smooth, smooth, None, 9)[0]
    assert all(set(plain[i].tolist()) == _grid_neighbours(i, h, w) for i in (14, 15, 20, 21))
    # equal semantics everywhere: after subtracting W_p no node links to itself or its 8 neighbours
    flat = torch.ones(1, h * w, 8)
    edges = graph_neighbours(flat, flat, wp, 9)[0]
    for i in range(h * w):
        assert not set(edges[i].tolist()) & _grid_neighbours(i, h, w)


def test_max_relative_graph_convolution() -> None:
    x = torch.tensor([[[0.0, 1.0], [2.0, -1.0], [5.0, 0.0]]])  # (1, 3 nodes, 2 channels)
    neighbours = torch.tensor([[[1, 2], [0, 2], [0, 1]]])
    out = max_relative(x, neighbours)
    assert torch.allclose(out[0, 0], torch.tensor([5.0, -1.0]))  # max(x1 - x0, x2 - x0)
    assert torch.allclose(out[0, 2], torch.tensor([-3.0, 1.0]))


def test_sg_block_keeps_the_shape() -> None:
    torch.manual_seed(0)
    block = SGBlock(32, reduction=8, top_k=9, position_dim=16)
    x = torch.randn(2, 32, 5, 7)
    assert block(x).shape == (2, 32, 5, 7)
    assert block.neighbours(x).shape == (2, 35, 9)


def test_top_100_image_score() -> None:
    maps = torch.zeros(2, 32, 32)
    maps[0].view(-1)[:100] = 1.0
    maps[1].view(-1)[:50] = 1.0
    maps[1].view(-1)[50:250] = 0.5
    assert torch.allclose(top_k_mean(maps, 100), torch.tensor([1.0, 0.75]))
    assert torch.allclose(top_k_mean(torch.ones(1, 5, 5), 100), torch.tensor([1.0]))  # fewer pixels than k


def test_focal_loss_with_gamma_zero_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(2, 2, 8, 8), (torch.rand(2, 8, 8) > 0.5).long()
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert float(focal_loss(logits, target, 0.0)) == pytest.approx(float(ce), rel=1e-5)
    assert float(focal_loss(logits, target, 4.0)) < float(ce)


def test_config_file_validates_and_paper_defaults() -> None:
    import yaml

    data = yaml.safe_load((REPO / "configs" / "detectors" / "slsg.yaml").read_text())
    assert data["method"] == "slsg"
    registry.validate_config("slsg", data["config"])
    cfg = SLSGConfig()
    assert (cfg.grid_size, cfg.grid_ratio, cfg.large_mask_px, cfg.sg_top_k, cfg.top_k_pixels) == (8, 0.8, (40, 150), 9, 100)
    assert cfg.seg_loss_weights == [0.4, 0.6, 0.3] and cfg.gpt_loss_weights == [1.0, 0.8, 1.0]


def test_training_resumes_across_the_two_stages(tmp_path: Path) -> None:
    train = synthetic_imageset(4, size=64, seed=0)
    config = SLSGConfig(**{**SLSG.smoke_config, "pretrained": "none", "gpt_epochs": 2, "gpt_batch_size": 2, "seg_iterations": 2,
                           "checkpoint_dir": str(tmp_path), "checkpoint_every": 1})
    seen: list[int] = []

    def interrupt(done: int, total: int, message: str) -> None:
        seen.append(done)
        if done == 3:  # inside GPT-Net pre-training (4 steps), before SegNet (2 steps)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SLSG(config).fit(train, progress=interrupt)
    after: list[int] = []
    detector = SLSG(config)
    stats = detector.fit(train, progress=lambda done, total, message: after.append(done))
    assert stats["resumed_from"] == 3 and stats["steps"] == 6 and stats["gpt_steps"] == 4
    assert after == [3, 4, 5, 6]
    assert len(stats["gpt_loss"]) == 4 and len(stats["seg_loss"]) == 2
    prediction = detector.predict(train.stack_images()[:1])
    assert prediction.anomaly_map.shape == (1, 64, 64)
    # a finished checkpoint resumes to the end immediately
    again = SLSG(config).fit(train)
    assert again["resumed_from"] == 6


def test_resuming_at_the_end_of_pretraining_keeps_the_pretrained_encoder(tmp_path: Path) -> None:
    # Interrupted right after the last GPT-Net step (whose checkpoint holds only GPT-Net): the resumed SegNet
    # must start from the pre-trained encoder, exactly as an uninterrupted run does.
    train = synthetic_imageset(4, size=64, seed=0)
    base = {**SLSG.smoke_config, "pretrained": "none", "gpt_epochs": 2, "gpt_batch_size": 2, "seg_iterations": 2}
    config = SLSGConfig(**base, checkpoint_dir=str(tmp_path), checkpoint_every=1)

    def interrupt(done: int, total: int, message: str) -> None:
        if done == 4:  # the last of 4 GPT-Net steps
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SLSG(config).fit(train, progress=interrupt)
    resumed = SLSG(config)
    assert resumed.fit(train)["resumed_from"] == 4
    straight = SLSG(SLSGConfig(**base))
    straight.fit(train)
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, msg=key)
