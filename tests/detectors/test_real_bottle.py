"""SimpleNet on a small real subset of MVTec AD bottle (../shared/data/bottle; skipped when absent).

20 good training images and 6 test images per type at 128 px, the offline EfficientNet-Lite0 backbone and
a short fixed schedule. With 6 good and 18 defective test images, an image AUROC >= 0.85 by chance has a
probability well under 1 %; the full benchmark (benchmarks/bench_detectors.py) reaches far more.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import detectors.simplenet  # noqa: F401  (registers "simplenet")
from detectors import create
from detectors.imagesets import MVTecImageSet
from detectors.metrics import image_auroc, pixel_auroc

DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"
BOTTLE = DATA_ROOT / "bottle"
SIZE = 128

CONFIG = dict(
    image_size=SIZE,
    pretrain_dim=384,
    target_dim=384,
    hidden_dim=1024,
    feature_norm="standardize",
    noise_std=0.3,
    meta_epochs=3,
    epochs_per_meta=4,
    batch_size=4,
    device="cpu",
    seed=0,
)


@pytest.fixture(scope="module")
def bottle() -> Path:
    if not (BOTTLE / "train" / "good").is_dir():
        pytest.skip(f"MVTec bottle data not found at {BOTTLE} (expected ../shared/data/bottle beside the repo)")
    return BOTTLE


@pytest.mark.slow
def test_simplenet_separates_real_bottle_defects(bottle: Path) -> None:
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is faster on a shared machine
    try:
        train = MVTecImageSet(bottle, "train", image_size=SIZE).subset(range(20))
        test = MVTecImageSet(bottle, "test", image_size=SIZE, max_per_type=6)
        det = create("simplenet", **CONFIG)
        stats = det.fit(train)
        pred = det.predict(test.stack_images())
    finally:
        torch.set_num_threads(old_threads)
    labels = test.labels
    assert (labels == 0).sum() == 6 and (labels == 1).sum() == 18
    assert stats["loss"][-1] < stats["loss"][0]
    auroc = image_auroc(pred.score, labels)
    assert auroc >= 0.85, f"image AUROC {auroc:.3f} on the bottle subset"
    assert pred.score[labels == 1].mean() > pred.score[labels == 0].mean()
    p_auroc = pixel_auroc(pred.anomaly_map, test.stack_masks().numpy())
    assert p_auroc >= 0.85, f"pixel AUROC {p_auroc:.3f} on the bottle subset"
