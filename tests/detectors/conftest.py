"""Shared fixtures of the detector tests, and a tiny test-only detector that exercises the harness.

``_contract_reference`` is a per-pixel Gaussian model (mean and std of every pixel over the good training
images; map = mean over channels of the squared z-score). It is registered only while a test that asks for
the ``contract_registry`` fixture runs, so ``detectors.available()`` outside the tests never lists it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field

from detectors import registry
from detectors.base import Detector, Prediction
from detectors.errors import DetectorError, ImageSetError
from detectors.imagesets import check_images

REFERENCE_NAME = "_contract_reference"
OTHER_REFERENCE_NAME = "_contract_reference_other"
DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"


class ReferenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eps: float = Field(1e-2, gt=0, description="added to the per-pixel std (avoids division by zero)")
    seed: int = 0


class ReferenceGaussianDetector(Detector):
    """Per-pixel Gaussian anomaly model on images of one fixed size (tests only)."""

    name: ClassVar[str] = REFERENCE_NAME
    config_class: ClassVar[type[BaseModel]] = ReferenceConfig
    smoke_config: ClassVar[dict] = {}

    def __init__(self, config: ReferenceConfig) -> None:
        super().__init__(config)
        self.mean: Optional[torch.Tensor] = None
        self.std: Optional[torch.Tensor] = None

    def fit(self, train: Any, val: Any = None, progress: Any = None) -> dict[str, Any]:
        images = train.stack_images()  # raises ImageSetError on an empty set
        self.mean = images.mean(dim=0)
        self.std = images.std(dim=0, unbiased=False)
        if progress is not None:
            progress(1, 1, "fitted")
        return {"n_train": int(images.shape[0])}

    def predict(self, images: torch.Tensor) -> Prediction:
        if self.mean is None or self.std is None:
            raise DetectorError(f"{self.name}: predict called before fit or load")
        images = check_images(images)
        if tuple(images.shape[-2:]) != tuple(self.mean.shape[-2:]):
            raise ImageSetError(
                f"{self.name}: images are {tuple(images.shape[-2:])}, the model was fitted on "
                f"{tuple(self.mean.shape[-2:])}"
            )
        z = (images - self.mean) / (self.std + self.config.eps)
        maps = (z**2).mean(dim=1)
        return Prediction(score=maps.flatten(1).amax(dim=1).numpy(), anomaly_map=maps.numpy())

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.mean is None or self.std is None:
            raise DetectorError(f"{self.name}: nothing to save before fit")
        return {"mean": self.mean.clone(), "std": self.std.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"mean", "std"}:
            raise KeyError(f"expected keys mean, std; got {sorted(state)}")
        if state["mean"].ndim != 3 or state["mean"].shape != state["std"].shape:
            raise ValueError(f"bad shapes {tuple(state['mean'].shape)} / {tuple(state['std'].shape)}")
        self.mean = state["mean"].float()
        self.std = state["std"].float()


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
