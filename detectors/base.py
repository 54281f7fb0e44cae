"""The ``Detector`` interface every anomaly detector implements, and the ``Prediction`` it returns.

Images inside :mod:`detectors` are float tensors (B, 3, H, W) in [0, 1], RGB; masks (B, H, W) bool.
A detector is trained on good images only (``fit``) and scores new ones (``predict``): a per-image
``score`` (B,) and a per-pixel ``anomaly_map`` (B, H, W) at the input resolution; higher = more anomalous.
Models are saved as a YAML config plus a plain state dict (``weights.pt``), never as pickled modules.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import torch
from pydantic import BaseModel

#: ``progress(done, total, message)``: called during long work (fit) so a caller can show progress.
ProgressCallback = Callable[[int, int, str], None]


@dataclass
class Prediction:
    """Scores for a batch of B images of size H x W.

    ``score``: (B,) float32, higher = more anomalous. ``anomaly_map``: (B, H, W) float32 at input resolution.
    """

    score: np.ndarray
    anomaly_map: np.ndarray

    def __post_init__(self) -> None:
        self.score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        self.anomaly_map = np.asarray(self.anomaly_map, dtype=np.float32)
        if self.anomaly_map.ndim != 3 or self.anomaly_map.shape[0] != self.score.shape[0]:
            raise ValueError(
                f"anomaly_map must be (B, H, W) with B={self.score.shape[0]}, got {self.anomaly_map.shape}"
            )


class Detector(ABC):
    """Base class of all detectors. Subclasses register with :func:`detectors.registry.register`.

    Class attributes: ``name`` (registry key) and ``config_class`` (a pydantic model with
    ``extra="forbid"``; its fields are the method's configuration with the paper's defaults).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel) -> None:
        self.config = config

    @abstractmethod
    def fit(
        self,
        train: Any,
        val: Optional[Any] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> dict[str, Any]:
        """Train on good images (an ``ImageSet``). Returns a small dict of training statistics."""

    @abstractmethod
    def predict(self, images: torch.Tensor) -> Prediction:
        """Score images (B, 3, H, W) float in [0, 1] -> :class:`Prediction` at input resolution."""

    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """All learned tensors (no modules, no pickled objects)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`'s output."""

    # save/load are implemented once, in detectors.model_io, on top of state_dict/load_state_dict.
    def save(self, directory: str | Path) -> Path:
        from detectors.model_io import save_detector

        return save_detector(self, Path(directory))

    @classmethod
    def load(cls, directory: str | Path) -> "Detector":
        from detectors.model_io import load_detector

        detector = load_detector(Path(directory), expected_method=getattr(cls, "name", None))
        if not isinstance(detector, cls):
            from detectors.errors import ModelDirectoryError

            raise ModelDirectoryError(
                f"{directory}: holds a '{detector.name}' model, not a '{cls.name}' one"
            )
        return detector
