"""PatchCore specifics: the greedy coreset, the eq. 7 image score, chunked nearest neighbours, the memory bank,
state save/load, the config.

The registry contract tests (test_contract.py) cover fit/predict/save/load/export for "patchcore"; importing
:mod:`detectors.patchcore` here registers it for this session too.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import detectors.patchcore  # noqa: F401  (registers "patchcore")
from detectors import registry
from detectors.errors import DetectorConfigError, DetectorError, ModelDirectoryError
from detectors.patchcore import PatchCore, PatchCoreConfig, memory_bank_size
from detectors.patchcore.model import (
    all_finite,
    gaussian_projection,
    greedy_coreset,
    greedy_coreset_reference,
    nearest_neighbours,
    reweighted_image_score,
)
from detectors.synthetic import add_defect, synthetic_imageset, textured_images

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------- coreset
def test_greedy_coreset_hand_case_picks_the_farthest_point_each_step() -> None:
    # points on a line: 0, 1, 2, 10, 11, 20 (one coordinate: columns (1, N))
    points = torch.tensor([[0.0, 1.0, 2.0, 10.0, 11.0, 20.0]])
    # from 0: farthest is 20; then min distances to {0, 20}: 1, 2, 10, 9 -> 10; then 1, 2, (11: 1) -> 2
    assert greedy_coreset(points, 4, first=0).tolist() == [0, 5, 3, 2]
    # from 11: farthest 0; then to {11, 0}: 1->1, 2->2, 10->1, 20->9 -> 20; then 1->1, 2->2, 10->1 -> 2
    assert greedy_coreset(points, 4, first=4).tolist() == [4, 0, 5, 2]


def test_greedy_coreset_has_the_k_center_property_on_random_points() -> None:
    gen = torch.Generator().manual_seed(0)
    points = torch.randn(400, 5, generator=gen, dtype=torch.float64)
    chosen = greedy_coreset(points.T, 40, first=7)
    assert chosen.tolist() == greedy_coreset_reference(points, 40, first=7).tolist()
    assert len(set(chosen.tolist())) == 40
    # each choice is the point farthest from the ones chosen before it, and the covering radius never grows
    radii = []
    for i in range(1, 40):
        nearest = torch.cdist(points, points[chosen[:i]]).min(dim=1).values
        assert int(nearest.argmax()) == int(chosen[i])
        radii.append(float(nearest.max()))
    assert all(a >= b for a, b in zip(radii, radii[1:]))
    # 2-approximation of the optimal k-center radius: every pair of chosen points is >= the final radius apart
    final = float(torch.cdist(points, points[chosen]).min(dim=1).values.max())
    pair = torch.cdist(points[chosen], points[chosen]) + torch.eye(40, dtype=torch.float64) * 1e9
    assert float(pair.min()) >= final - 1e-12


def test_greedy_coreset_refuses_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_select must be in"):
        greedy_coreset(torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="first must be in"):
        greedy_coreset(torch.zeros(2, 3), 2, first=3)


def test_gaussian_projection_keeps_distances_johnson_lindenstrauss() -> None:
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(50, 1024, generator=gen)
    proj = gaussian_projection(1024, 128, seed=0)
    assert proj.shape == (1024, 128)
    assert torch.equal(proj, gaussian_projection(1024, 128, seed=0))  # from the seed
    original = torch.pdist(points)
    projected = torch.pdist(points @ proj)
    ratio = projected / original
    assert 0.75 < float(ratio.min()) and float(ratio.max()) < 1.25
    assert abs(float(ratio.mean()) - 1.0) < 0.05


# ---------------------------------------------------------------------------------- nearest neighbours
def test_chunked_nearest_neighbours_match_brute_force() -> None:
    gen = torch.Generator().manual_seed(2)
    queries = torch.randn(37, 6, generator=gen)
    bank = torch.randn(53, 6, generator=gen)
    bank[40] = bank[3]  # a duplicate: ties go to the lower index
    queries[0] = bank[3]
    expected = torch.cdist(queries, bank)
    for chunk in (1, 37 * 5, 10**9):  # one bank row per block, several rows, one block
        dist, idx = nearest_neighbours(queries, bank, chunk_elements=chunk)
        # |q|^2 - 2 q.m + |m|^2 in float32 cancels at distance 0: the squared distance is off by about
        # eps * |q|^2 (1e-6 here), its square root by about 1e-3, and how much depends on the CPU's matmul
        # kernels (AMX machines showed 1.4e-3); away from 0 the distances agree to rtol 1e-5.
        torch.testing.assert_close(dist[1:], expected.min(dim=1).values[1:], atol=1e-4, rtol=1e-5)
        assert float(dist[0]) < 5e-3
        assert torch.equal(idx, expected.argmin(dim=1))
        assert int(idx[0]) == 3


# ------------------------------------------------------------------------------------- image score
def test_reweighted_image_score_hand_case() -> None:
    bank = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    # one image, two patches; the second (at (0, -2)) is the most anomalous: s* = 2, m* = bank[0]
    feats = torch.tensor([[[0.1, 0.0], [0.0, -2.0]]])
    dist, idx = nearest_neighbours(feats.reshape(-1, 2), bank)
    score = reweighted_image_score(feats, dist.reshape(1, 2), idx.reshape(1, 2), bank, neighbours=3)
    # N_3(m*) = {(0,0), (1,0), (0,1)} ((5,5) is farther from m*); distances of m_test* to them: 2, sqrt(5), 3
    d = [2.0, math.sqrt(5.0), 3.0]
    expected = (1.0 - math.exp(d[0]) / sum(math.exp(x) for x in d)) * 2.0
    assert float(score[0]) == pytest.approx(expected, rel=1e-5)


def test_reweighting_raises_the_score_of_a_patch_whose_nearest_entry_is_isolated() -> None:
    # same s* = 1 for both images; image A's nearest entry sits in a tight cluster, image B's is isolated
    bank = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [10.0, 10.0], [20.0, 0.0], [0.0, 20.0]])
    feats = torch.tensor([[[0.0, -1.0]], [[10.0, 9.0]]])
    dist, idx = nearest_neighbours(feats.reshape(-1, 2), bank)
    assert torch.allclose(dist, torch.ones(2))
    score = reweighted_image_score(feats, dist.reshape(2, 1), idx.reshape(2, 1), bank, neighbours=3)
    assert float(score[1]) > float(score[0])
    assert 0 < float(score[0]) < 1 and float(score[1]) < 1  # the weight is in (0, 1), times s* = 1


def test_reweighted_score_is_stable_for_large_distances() -> None:
    bank = torch.tensor([[0.0], [1.0], [2.0]])
    feats = torch.tensor([[[500.0]]])
    dist, idx = nearest_neighbours(feats.reshape(-1, 1), bank)
    score = reweighted_image_score(feats, dist.reshape(1, 1), idx.reshape(1, 1), bank, neighbours=3)
    assert torch.isfinite(score).all() and float(score[0]) > 0


# ------------------------------------------------------------------------------------------ detector
def _smoke(**overrides) -> PatchCore:
    return registry.create("patchcore", **{**PatchCore.smoke_config, **overrides})


def test_class_defaults_are_the_papers() -> None:
    cfg = PatchCoreConfig()
    assert cfg.layers == [2, 3] and cfg.patch_size == 3
    assert cfg.pretrain_dim == cfg.target_dim == 1024
    assert cfg.coreset_ratio == 0.1 and cfg.projection_dim == 128 and cfg.blur_sigma == 4.0


def test_config_file_validates() -> None:
    from cell.training import load_train_config

    config = load_train_config(REPO / "configs" / "detectors" / "patchcore.yaml")
    assert config.method == "patchcore"
    registry.validate_config("patchcore", config.config)


@pytest.mark.parametrize("key,value", [("coreset_ratio", 0.0), ("coreset_ratio", 1.5), ("neighbours", 1)])
def test_bad_config_values_are_refused_naming_the_key(key: str, value: float) -> None:
    with pytest.raises(DetectorConfigError, match=key):
        registry.create("patchcore", **{key: value})


@pytest.fixture(scope="module")
def fitted() -> tuple[PatchCore, dict]:
    detector = _smoke()
    stats = detector.fit(synthetic_imageset(6, size=64, seed=0))
    return detector, stats


def test_memory_bank_is_the_chosen_share_of_real_training_patches(fitted) -> None:
    detector, stats = fitted
    train = synthetic_imageset(6, size=64, seed=0).stack_images()
    feats = detector._features(train)  # (6, 8, 8, D): the patch features of every training patch
    all_patches = feats.reshape(-1, feats.shape[-1])
    n_bank = memory_bank_size(6, feats.shape[1] * feats.shape[2], 0.25)
    assert stats["bank_size"] == [n_bank, 64] and stats["n_patches"] == all_patches.shape[0] == 384
    assert detector.bank is not None and detector.bank.shape == (96, 64)
    # every bank row is one of the training patch features, each a different one
    diff = torch.cdist(detector.bank.double(), all_patches.double(), compute_mode="donot_use_mm_for_euclid_dist")
    dist, idx = diff.min(dim=1)
    assert float(dist.max()) < 1e-4
    assert len(set(idx.tolist())) == n_bank


def test_a_training_patch_scores_near_zero_and_a_defect_high(fitted) -> None:
    detector, _ = fitted
    clean = textured_images(1, size=64, seed=99)[0]
    defective, mask = add_defect(clean, "patch", seed=3, scale=0.25)
    pred = detector.predict(torch.stack([clean, defective]))
    m = pred.anomaly_map[1]
    inside, outside = m[mask.numpy().astype(bool)].mean(), m[~mask.numpy().astype(bool)].mean()
    assert inside > 2 * outside
    assert pred.score[1] > 2 * pred.score[0]


def test_fit_refuses_a_bank_of_fewer_than_two_entries() -> None:
    with pytest.raises(DetectorError, match="at least 2 entries"):
        _smoke(coreset_ratio=0.001).fit(synthetic_imageset(1, size=64, seed=0))


def test_nan_features_are_an_error_not_a_score(monkeypatch: pytest.MonkeyPatch) -> None:
    detector = _smoke()
    monkeypatch.setattr(PatchCore, "_features", lambda self, images: torch.full((images.shape[0], 8, 8, 64), float("nan")))
    with pytest.raises(DetectorError, match="non-finite patch features"):
        detector.fit(synthetic_imageset(2, size=64, seed=0))
    assert not detector.fitted


def test_state_round_trip_gives_identical_predictions(fitted, tmp_path: Path) -> None:
    detector, _ = fitted
    state = detector.state_dict()
    assert sorted(state) == ["bank"] and state["bank"].device.type == "cpu"
    fresh = _smoke()
    fresh.load_state_dict(state)
    images = torch.stack([textured_images(1, size=64, seed=5)[0], add_defect(textured_images(1, size=64, seed=5)[0], "blob", seed=1)[0]])
    a, b = detector.predict(images), fresh.predict(images)
    assert (a.score == b.score).all() and (a.anomaly_map == b.anomaly_map).all()
    loaded = PatchCore.load(detector.save(tmp_path / "model"))
    c = loaded.predict(images)
    assert (a.score == c.score).all() and (a.anomaly_map == c.anomaly_map).all()


@pytest.mark.parametrize(
    "state,match",
    [
        ({}, "missing tensor 'bank'"),
        ({"bank": torch.zeros(10, 63)}, "'bank' has shape"),
        ({"bank": torch.zeros(1, 64)}, "M >= 2"),
        ({"bank": torch.full((4, 64), float("nan"))}, "non-finite"),
        ({"bank": torch.zeros(4, 64), "extra": torch.zeros(1)}, "unexpected tensor 'extra'"),
    ],
)
def test_bad_state_is_refused_and_the_model_kept(fitted, state: dict, match: str) -> None:
    detector, _ = fitted
    before = detector.bank
    with pytest.raises(DetectorError, match=match):
        detector.load_state_dict(state)
    assert detector.bank is before and detector.fitted


def test_a_directory_with_a_bad_bank_is_a_model_directory_error(fitted, tmp_path: Path) -> None:
    detector, _ = fitted
    directory = detector.save(tmp_path / "model")
    torch.save({"bank": torch.full((4, 64), float("inf"))}, directory / "weights.pt")
    with pytest.raises(ModelDirectoryError, match="weights.pt"):
        PatchCore.load(directory)


def test_all_finite_finds_one_bad_value_in_any_block() -> None:
    bank = torch.zeros(50, 6)
    assert all_finite(bank, chunk_elements=12)  # blocks of 2 rows
    for row, value in ((0, float("nan")), (49, float("inf")), (23, float("-inf"))):
        bad = bank.clone()
        bad[row, 3] = value
        assert not all_finite(bad, chunk_elements=12)
        assert not all_finite(bad)  # one block
    assert all_finite(torch.zeros(0, 6))
