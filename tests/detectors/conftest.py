"""Shared fixtures of the detector tests, and a tiny test-only detector that exercises the harness.

``_contract_reference`` is a per-pixel Gaussian model (mean and std of every pixel over the good training
images; map = mean over channels of the squared z-score), written on the detector skeleton like a method. It is registered only while a test that asks for
the ``contract_registry`` fixture runs, so ``detectors.available()`` outside the tests never lists it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import pytest
import torch
from pydantic import Field

from detectors import registry
from detectors.base import Detector, DetectorConfig
from detectors.train_images import StackedTrainImages

REFERENCE_NAME = "_contract_reference"
OTHER_REFERENCE_NAME = "_contract_reference_other"
#: the real datasets: $CELL_TEST_DATA when set (e.g. /work/shared/data from a worktree), else ../shared/data
DATA_ROOT = Path(os.environ.get("CELL_TEST_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


class ReferenceConfig(DetectorConfig):
    eps: float = Field(1e-2, gt=0, description="added to the per-pixel std (avoids division by zero)")
    image_size: int = Field(64, ge=4, le=4096, description="input side S in pixels (any size: no backbone)")


class ReferenceGaussianDetector(Detector):
    """Per-pixel Gaussian anomaly model on images of ``image_size`` (tests only): the smallest method on the
    detector skeleton (``_fit``, ``_score_batch``, ``_state_dict``, ``_load_state_dict``)."""

    name: ClassVar[str] = REFERENCE_NAME
    config_class: ClassVar[type[DetectorConfig]] = ReferenceConfig
    smoke_config: ClassVar[dict] = {"device": "cpu"}

    def __init__(self, config: ReferenceConfig) -> None:
        super().__init__(config)
        self.mean: Optional[torch.Tensor] = None
        self.std: Optional[torch.Tensor] = None

    def _fit(self, train: Any, progress: Any) -> dict[str, Any]:
        images = StackedTrainImages(train, method=self.name, image_size=self.config.image_size).images
        images = images.to(self.device)
        self.mean = images.mean(dim=0)
        self.std = images.std(dim=0, unbiased=False)
        progress(1, 1, "fitted")
        return {"n_train": int(images.shape[0])}

    def _score_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (images - self.mean) / (self.std + self.config.eps)
        maps = (z**2).mean(dim=1)
        return maps.flatten(1).amax(dim=1), maps

    def _state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.cpu().clone(), "std": self.std.cpu().clone()}

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"mean", "std"}:
            raise KeyError(f"expected keys mean, std; got {sorted(state)}")
        s = self.config.image_size
        if tuple(state["mean"].shape) != (3, s, s) or state["mean"].shape != state["std"].shape:
            raise ValueError(f"bad shapes {tuple(state['mean'].shape)} / {tuple(state['std'].shape)}")
        self.mean = state["mean"].float().to(self.device)
        self.std = state["std"].float().to(self.device)


class OtherReferenceDetector(ReferenceGaussianDetector):
    """The same model under another method name: for 'another method's directory' tests."""

    name: ClassVar[str] = OTHER_REFERENCE_NAME


@pytest.fixture
def contract_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, type[Detector]]:
    """Registers the test-only detectors for the duration of one test; returns the registry dict."""
    registry._import_builtin_detectors()
    monkeypatch.setitem(registry._REGISTRY, REFERENCE_NAME, ReferenceGaussianDetector)
    monkeypatch.setitem(registry._REGISTRY, OTHER_REFERENCE_NAME, OtherReferenceDetector)
    return registry._REGISTRY


@pytest.fixture(scope="session")
def data_root() -> Path:
    """../shared/data, or skip with the reason when it is absent."""
    if not DATA_ROOT.is_dir():
        pytest.skip(f"real datasets not found at {DATA_ROOT}")
    return DATA_ROOT


def contract_names() -> list[str]:
    """Every registered detector plus the test-only reference (parametrisation of the contract tests)."""
    return sorted(set(registry.available()) | {REFERENCE_NAME})


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
