"""The training plumbing shared by TSDN and SLSG (detectors/training.py): prefetching, batch order, fingerprint.

Resuming from a checkpoint is exercised end to end by the detectors' own tests (test_tsdn.py, test_slsg.py).
"""
from __future__ import annotations

import pytest
import torch

from detectors.train_images import StackedTrainImages
from detectors.training import NON_LEARNING_KEYS, batch_indices, fingerprint, prefetch


def test_prefetch_keeps_step_order_and_raises_the_builders_error() -> None:
    assert [s for s, _ in prefetch(lambda step: step * step, range(3, 12), workers=3)] == list(range(3, 12))
    assert [b for _, b in prefetch(lambda step: step * step, range(5), workers=2)] == [0, 1, 4, 9, 16]

    def broken(step: int) -> int:
        if step == 4:
            raise ValueError("batch 4 is broken")
        return step

    seen = []
    with pytest.raises(ValueError, match="batch 4"):
        for step, _ in prefetch(broken, range(10), workers=2):
            seen.append(step)
    assert seen == [0, 1, 2, 3]


def test_batch_indices_cover_each_image_once_per_epoch_with_a_short_last_batch() -> None:
    n, batch_size = 7, 3  # 3 steps per epoch: 3 + 3 + 1 images
    for epoch in range(2):
        batches = [batch_indices(5, 3 * epoch + k, n, batch_size) for k in range(3)]
        assert [len(b) for b in batches] == [3, 3, 1]
        assert sorted(i for b in batches for i in b) == list(range(n))
    assert batch_indices(5, 0, n, batch_size) == batch_indices(5, 0, n, batch_size)  # a function of (seed, step)
    assert [batch_indices(5, k, n, batch_size) for k in range(3)] != [batch_indices(6, k, n, batch_size) for k in range(3)]


def test_fingerstampignores_non_learning_keys_and_names_the_training_set() -> None:
    train = StackedTrainImages(
        torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)), method="test", image_size=64
    )
    config = {"lr": 1e-3, **{key: "x" for key in NON_LEARNING_KEYS}}
    stamp = fingerprint(config, train, extra={"stage": 2})
    assert stamp == fingerprint({**config, "device": "cuda", "checkpoint_every": 9}, train, extra={"stage": 2})
    assert stamp["lr"] == repr(1e-3) and stamp["train.n"] == "2" and stamp["stage"] == "2"
    assert not set(NON_LEARNING_KEYS) & set(stamp)
    other = StackedTrainImages(
        torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)), method="test", image_size=64
    )
    assert fingerprint(config, other)["train.digest"] != stamp["train.digest"]
