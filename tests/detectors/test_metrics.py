"""Metrics against small cases computed by hand (the comments show the arithmetic)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detectors.metrics import aupro, evaluate, f1_max, image_auroc, pg0, pixel_auroc, pro_curve


# ---------------------------------------------------------------------------------------------- AUROC
def test_image_auroc_hand_case() -> None:
    # defects {0.35, 0.8} vs good {0.1, 0.4}: pairs won 0.35>0.1, 0.8>0.1, 0.8>0.4; lost 0.35<0.4 -> 3/4
    assert image_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_image_auroc_ties_count_half_and_one_class_is_nan() -> None:
    assert image_auroc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)
    assert math.isnan(image_auroc([0.1, 0.2], [0, 0]))


def test_pixel_auroc_hand_case_accepts_tensors() -> None:
    # image 0: good pixels 0.1, 0.4; image 1: defect pixels 0.35, 0.8 and good pixel 0.2, 0.9
    maps = torch.tensor([[[0.1, 0.4]], [[0.35, 0.8]], [[0.2, 0.9]]])
    masks = torch.tensor([[[0, 0]], [[1, 1]], [[0, 0]]], dtype=torch.bool)
    # positives {0.35, 0.8} vs negatives {0.1, 0.4, 0.2, 0.9}: 0.35 beats 0.1, 0.2 (2); 0.8 beats 0.1, 0.4, 0.2 (3)
    # -> 5 / 8
    assert pixel_auroc(maps, masks) == pytest.approx(5 / 8)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="same shape"):
        pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), bool))
    with pytest.raises(ValueError, match="labels must be 0"):
        image_auroc([0.1, 0.2], [0, 2])


# ---------------------------------------------------------------------------------------------- AUPRO
def _toy_aupro_case() -> tuple[np.ndarray, np.ndarray]:
    """Two 2x3 images.

    image 0, all good:        0.10 0.20 0.30 / 0.40 0.45 0.50
    image 1 scores:           0.95 0.05 0.45 / 0.55 0.15 0.25
    image 1 mask:                1    0    1 /    1    0    0
    Components (8-connectivity): A = {(0,0), (1,0)} (area 2), B = {(0,2)} (area 1): column 1 separates them.
    Good pixels: 6 + 3 = 9, so each good pixel above threshold adds 1/9 to the FPR.
    Sweep, descending (pixel "above" when score >= t), points (FPR, PRO = mean over A, B of covered share):
      t=0.95: A half covered              -> (0,   (0.5 + 0) / 2 = 0.25)
      t=0.55: A fully covered             -> (0,   (1 + 0) / 2 = 0.5)
      t=0.50: one good pixel              -> (1/9, 0.5)
      t=0.45: one good pixel AND B (a tie)-> (2/9, 1.0)
      t=0.40 ...                          -> (3/9, 1.0) ...
    """
    maps = np.array(
        [
            [[0.10, 0.20, 0.30], [0.40, 0.45, 0.50]],
            [[0.95, 0.05, 0.45], [0.55, 0.15, 0.25]],
        ],
        dtype=np.float32,
    )
    masks = np.array([[[0, 0, 0], [0, 0, 0]], [[1, 0, 1], [1, 0, 0]]], dtype=bool)
    return maps, masks


def test_pro_curve_points_by_hand() -> None:
    fpr, pro = pro_curve(*_toy_aupro_case())
    assert fpr[:6] == pytest.approx([0, 0, 0, 1 / 9, 2 / 9, 3 / 9])
    assert pro[:6] == pytest.approx([0, 0.25, 0.5, 0.5, 1.0, 1.0])
    assert fpr[-1] == pytest.approx(1.0) and pro[-1] == pytest.approx(1.0)


def test_aupro_by_hand_at_0_3() -> None:
    # trapezoids up to FPR 0.3 (vertical steps add nothing):
    #   (0, .5)   -> (1/9, .5): 0.5 * 1/9              = 1/18
    #   (1/9, .5) -> (2/9, 1):  (0.5 + 1) / 2 * 1/9     = 1/12
    #   (2/9, 1)  -> (0.3, 1):  1 * (0.3 - 2/9)         = 0.3 - 2/9
    # area = 1/18 + 1/12 + 0.3 - 2/9 = 0.216666...; divided by 0.3 -> 0.72222... = 13/18
    assert aupro(*_toy_aupro_case(), fpr_limit=0.3) == pytest.approx(13 / 18)


def test_aupro_interpolates_at_the_limit() -> None:
    # limit 1/6 lies half-way along the diagonal (1/9, .5) -> (2/9, 1): PRO there = 0.75
    # area = 1/18 + (0.5 + 0.75) / 2 * (1/6 - 1/9) = 8/144 + 5/144 = 13/144; / (1/6) -> 13/24
    assert aupro(*_toy_aupro_case(), fpr_limit=1 / 6) == pytest.approx(13 / 24)


def test_aupro_components_are_8_connected() -> None:
    # mask 1 0 0 / 0 1 1: one component of area 3 with 8-connectivity (two, areas 1 and 2, with 4-connectivity).
    # At the top score (0.9 on the corner pixel) PRO = 1/3 (8-conn); 4-connectivity would give (1 + 0) / 2.
    maps = np.array([[[0.9, 0.1, 0.2], [0.3, 0.4, 0.5]]])
    masks = np.array([[[1, 0, 0], [0, 1, 1]]], dtype=bool)
    fpr, pro = pro_curve(maps, masks)
    assert (fpr[1], pro[1]) == pytest.approx((0.0, 1 / 3))


def test_aupro_perfect_and_undefined() -> None:
    masks = np.zeros((2, 8, 8), bool)
    masks[1, 2:5, 3:6] = True
    assert aupro(masks.astype(np.float32), masks) == pytest.approx(1.0)
    assert math.isnan(aupro(np.random.default_rng(0).random((2, 8, 8)), np.zeros((2, 8, 8), bool)))


def test_aupro_random_maps_are_near_chance() -> None:
    # Random scores: PRO(t) ~= FPR(t), so the normalised area up to 0.3 is ~0.15.
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 64, 64), bool)
    masks[:, 10:30, 10:30] = True
    assert aupro(rng.random(masks.shape), masks) == pytest.approx(0.15, abs=0.02)


# ---------------------------------------------------------------------------------------------- F1, PG0
def test_f1_max_hand_case() -> None:
    # cuts (flag score >= v): v=0.8 P=1 R=.5 F1=.667; v=0.4 P=.5 R=.5 F1=.5; v=0.35 P=2/3 R=1 F1=0.8; v=0.1 F1=.667
    scores = np.array([0.1, 0.4, 0.35, 0.8], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    f1, threshold = f1_max(scores, labels)
    assert f1 == pytest.approx(0.8)
    assert threshold < np.float32(0.35)
    assert ((scores > threshold) == np.array([False, True, True, True])).all()


def test_pg0_hand_case_with_tie() -> None:
    # good {0.1, 0.2, 0.6, 0.3}, defective {0.3, 0.9}: threshold just below 0.3 (lowest defect);
    # good 0.1, 0.2 pass; 0.6 is rejected; 0.3 ties with the lowest defect and is rejected -> 2/4
    scores = np.array([0.1, 0.2, 0.6, 0.3, 0.3, 0.9], dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 1, 1])
    value, threshold = pg0(scores, labels)
    assert value == pytest.approx(0.5)
    assert (scores[labels == 1] > threshold).all(), "a defect would be missed"
    assert (scores[labels == 0] <= threshold).sum() == 2


def test_pg0_seed_cell_example() -> None:
    # the seed cell: all defects caught at 0.14 while 36 of 100 good sheets score above it -> PG0 0.64
    good = np.concatenate([np.linspace(0.01, 0.13, 64), np.linspace(0.15, 0.5, 36)])
    defects = np.array([0.14, 0.3, 0.7])
    value, threshold = pg0(np.concatenate([good, defects]), [0] * 100 + [1] * 3)
    assert value == pytest.approx(0.64)
    assert threshold < 0.14 and threshold > 0.13


def test_pg0_threshold_works_in_float32_and_float64() -> None:
    scores = np.array([0.25, 0.3], dtype=np.float32)
    _, threshold = pg0(scores, [0, 1])
    assert scores[1] > threshold and np.float64(scores[1]) > threshold
    assert scores[0] <= threshold


def test_pg0_without_defects_is_nan() -> None:
    value, threshold = pg0([0.1, 0.2], [0, 0])
    assert math.isnan(value) and math.isnan(threshold)


# ---------------------------------------------------------------------------------------------- evaluate
def test_evaluate_collects_all_metrics_and_per_type() -> None:
    maps, masks = _toy_aupro_case()
    maps = np.concatenate([maps, maps[1:] * 0.5])
    masks = np.concatenate([masks, masks[1:]])
    scores = maps.reshape(3, -1).max(axis=1)  # 0.5, 0.95, 0.475
    labels = [0, 1, 1]
    result = evaluate(scores, labels, maps, masks, defect_types=["good", "crack", "hole"])
    assert result["n_images"] == 3 and result["n_good"] == 1 and result["n_defective"] == 2
    assert result["image_auroc"] == pytest.approx(0.5)  # 0.95 > 0.5 won, 0.475 < 0.5 lost
    assert result["pg0"] == pytest.approx(0.0)  # 0.5 >= lowest defect 0.475
    assert 0 < result["aupro"] <= 1 and 0 < result["pixel_auroc"] <= 1
    assert set(result["per_defect_type"]) == {"crack", "hole"}
    assert result["per_defect_type"]["crack"]["image_auroc"] == pytest.approx(1.0)
    assert result["per_defect_type"]["hole"]["image_auroc"] == pytest.approx(0.0)
    assert result["per_defect_type"]["crack"]["aupro"] == pytest.approx(13 / 18)


def test_pro_curve_matches_a_naive_threshold_loop() -> None:
    # Independent slow reference: for each distinct value t, label components and measure overlap directly.
    from scipy import ndimage

    rng = np.random.default_rng(3)
    maps = np.round(rng.random((3, 10, 12)), 1)  # rounded: many ties
    masks = np.zeros((3, 10, 12), bool)
    masks[0, 1:4, 2:6] = True
    masks[0, 7:9, 8:11] = True
    masks[2, 5, 5] = True
    masks[2, 6, 6] = True  # diagonal neighbour: same 8-connected component
    components = []
    for i in range(3):
        lab, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
        components += [(i, lab == k) for k in range(1, n + 1)]
    assert len(components) == 3
    expected_fpr, expected_pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        expected_fpr.append((above & ~masks).sum() / (~masks).sum())
        expected_pro.append(np.mean([above[i][comp].mean() for i, comp in components]))
    fpr, pro = pro_curve(maps, masks)
    np.testing.assert_allclose(fpr, expected_fpr, atol=1e-12)
    np.testing.assert_allclose(pro, expected_pro, atol=1e-12)
