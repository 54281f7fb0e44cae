"""The detector skeleton: ``DetectorConfig``, the ``Detector`` base class, and the ``Prediction`` it returns.

Images inside :mod:`detectors` are float tensors (B, 3, H, W) in [0, 1], RGB; masks (B, H, W) bool.
A detector is trained on good images only (``fit``) and scores new ones (``predict``): a per-image
``score`` (B,) and a per-pixel ``anomaly_map`` (B, H, W) at the input resolution; higher = more anomalous.
Models are saved as a YAML config plus a plain state dict (``weights.pt``), never as pickled modules.

What the base does, once for every method:

* ``self.device`` (from ``config.device``), :meth:`Detector._autocast` and :meth:`Detector._grad_scaler`
  (mixed precision on CUDA, float32 elsewhere), :meth:`Detector._frozen_backbone` (the lazily built, frozen,
  shared pretrained extractor of ``config.backbone``);
* :meth:`Detector.fit`: runs the method's ``_fit``; when it raises, the previous model (or none) is put back,
  so nothing half-trained survives; with a validation set it adds ``stats["val"]``
  (:func:`score_summary` of the validation images' scores: one schema for every method);
* :meth:`Detector.predict`: checks the batch once (:func:`detectors.image_ops.check_batch`), cuts it into
  ``inference_batch_size`` chunks, calls the method's pure-tensor ``_score_batch`` on each (on the device),
  concatenates on the device and converts to numpy once;
* :meth:`Detector.state_dict` / :meth:`Detector.load_state_dict`: the not-fitted error, and a failed load
  leaves the detector as it was;
* one not-fitted error: ``"<name>: <call>() called before fit() or load()"``.

How to write a method (a package ``detectors/<name>/``: ``model.py`` with the networks, ``detector.py`` with
the glue; add it to ``registry._BUILTIN_MODULES``). What a method must provide: ``name``, ``config_class`` (a
:class:`DetectorConfig` subclass), ``smoke_config`` (a dict valid for it), ``_fit``, ``_score_batch``,
``_state_dict`` and ``_load_state_dict``; :func:`detectors.registry.register` refuses a class that lacks any
of them, naming what is missing. A frozen pretrained backbone comes from ``self._frozen_backbone(layers)``;
training batches go through ``TrainImages`` / ``StackedTrainImages`` and
:func:`detectors.image_ops.check_batch` (data first, the rest keyword-only)::

    class MyConfig(DetectorConfig):          # shared fields inherited; redefine one to change its default
        k: int = Field(3, ge=1)              # the method's own fields, paper defaults

    @register                                # checks: name, config_class, smoke_config, no abstract left
    class My(Detector):
        name = "my"
        config_class = MyConfig
        smoke_config = {"image_size": 64, "device": "cpu", ...}  # trains in seconds on six 64-px images

        def _fit(self, train, progress) -> dict:            # train: an ImageSet / Samples / (N,3,S,S) tensor
            images = TrainImages(train, method=self.name, role="training", image_size=self.config.image_size)
            ...                                              # build modules afresh, assign them, train
            return {"loss": [...], ...}                     # JSON-able statistics

        def _score_batch(self, images) -> tuple[Tensor, Tensor]:   # (b,3,S,S) on self.device
            ...                                              # -> scores (b,), maps (b,S,S), float32
        def _state_dict(self) -> dict[str, Tensor]: ...      # learned tensors only, on the CPU
        def _load_state_dict(self, state) -> None: ...       # rebuild modules from ``state`` (untrusted)

Rules the base relies on: ``_fit`` and ``_load_state_dict`` build their modules and tensors afresh and
assign them to attributes (they never modify the current model's tensors in place; with ``pretrained: none``
the base hands ``_load_state_dict`` a fresh frozen backbone to load into), so restoring the attributes
restores the model; ``_score_batch`` is pure tensor code (no numpy, no ``.item()``/``float()``/``.cpu()``, no
Python branch on tensor values; Python branches on shapes and the config are fine) so that
:class:`detectors.inference.InferenceModule` can trace, export or compile it (the contract suite checks that
``torch.export`` captures it and that it computes exactly what ``predict`` does); random choices come from
``config.seed``.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Optional, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from detectors.device import autocast_context, grad_scaler, resolve_device
from detectors.errors import DetectorError

if TYPE_CHECKING:
    from detectors.backbones import FeatureExtractor

#: ``progress(done, total, message)``: called during long work (fit) so a caller can show progress.
ProgressCallback = Callable[[int, int, str], None]


def _no_progress(done: int, total: int, message: str) -> None:
    """The progress callback of a caller that wants none."""


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


class DetectorConfig(BaseModel):
    """The configuration fields every detector has (a method's config class subclasses this one).

    Unknown keys are refused (``extra="forbid"``). A method that needs another default or range for a shared
    field redefines it (e.g. TSDN: ``image_size`` 352 in [64, 2048]); the field keeps its place and name, so
    a ``config.yaml`` written before this base existed still loads unchanged.
    """

    model_config = ConfigDict(extra="forbid")

    backbone: str = Field("tf_efficientnet_lite0", description="timm model name of the backbone")
    pretrained: str = Field("offline", description="offline | hub | none | path to a state-dict file")
    image_size: int = Field(256, ge=32, le=4096, description="input side S in pixels (images are S x S)")
    inference_batch_size: int = Field(16, ge=1, description="images per forward pass in predict")
    mixed_precision: bool = Field(True, description="autocast on CUDA (no effect on CPU)")
    device: str = Field("auto", description="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N | mps")
    seed: int = Field(0, description="every random choice of the method flows from this")


def score_summary(scores: np.ndarray) -> dict[str, float]:
    """Statistics of image scores (N,): ``{"n", "score_mean", "score_std" (population), "score_q99"
    (linear interpolation), "score_max"}``; the schema of ``fit``'s ``stats["val"]`` for every method."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return {
        "n": int(s.size),
        "score_mean": float(s.mean()),
        "score_std": float(s.std()),
        "score_q99": float(np.quantile(s, 0.99)),
        "score_max": float(s.max()),
    }


class Detector(ABC):
    """Base class of all detectors (see the module docstring for how to write one).

    Class attributes: ``name`` (registry key), ``config_class`` (a :class:`DetectorConfig` subclass whose
    fields are the method's configuration with the paper's defaults) and ``smoke_config`` (config overrides
    with which the method trains in seconds on six 64-px images: contract tests, quick demos).
    """

    name: ClassVar[str]
    config_class: ClassVar[type[DetectorConfig]]
    smoke_config: ClassVar[dict[str, Any]]

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.device: torch.device = resolve_device(config.device)
        self._fitted = False
        self._frozen: Optional["FeatureExtractor"] = None

    # ------------------------------------------------------------------------------------ the method
    @abstractmethod
    def _fit(self, train: Any, progress: ProgressCallback) -> dict[str, Any]:
        """Train on the good images ``train`` (an ImageSet, a sequence of Samples or an (N, 3, S, S) tensor);
        return JSON-able training statistics. Build modules afresh; report through ``progress``."""

    @abstractmethod
    def _score_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` (b, 3, S, S) float32 in [0, 1] on ``self.device`` -> (scores (b,), maps (b, S, S)),
        float32 on ``self.device``; pure tensor code (no host synchronisation)."""

    @abstractmethod
    def _state_dict(self) -> dict[str, torch.Tensor]:
        """All learned tensors of a fitted detector (no modules, no pickled objects), on the CPU."""

    @abstractmethod
    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Rebuild the model from ``state`` (:meth:`_state_dict`'s output, read from a file: untrusted; a
        missing, unexpected or mis-shaped tensor is a one-line :class:`DetectorError` naming it)."""

    # ------------------------------------------------------------------------------- the public calls
    @property
    def fitted(self) -> bool:
        """True once :meth:`fit` or :meth:`load_state_dict` succeeded."""
        return self._fitted

    def fit(
        self,
        train: Any,
        val: Optional[Any] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> dict[str, Any]:
        """Train on good images: ``train`` is an ImageSet, a sequence of Samples or an (N, 3, S, S) tensor, S =
        ``image_size``. ``val`` (optional, same forms) is only scored after training: ``stats["val"]`` =
        :func:`score_summary` of its image scores; it never influences training. Returns the statistics.

        When training (or scoring ``val``) raises, the previous model (or none) stays in place.
        """
        with self._restored_on_error():
            self._fitted = False  # a progress callback that predicts mid-training gets the not-fitted error
            stats = self._fit(train, progress or _no_progress)
            self._fitted = True
            if val is not None:
                stats["val"] = self.validation_stats(val)
        return stats

    def validation_stats(self, val: Any) -> dict[str, float]:
        """:func:`score_summary` of the scores of the images ``val`` (ImageSet / Samples / tensor)."""
        from detectors.train_images import TrainImages

        images = TrainImages(val, method=self.name, role="validation", image_size=self.config.image_size)
        chunks = images.chunks(self.config.inference_batch_size)
        return score_summary(np.concatenate([self.predict(images.batch(idx)).score for idx in chunks]))

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Prediction:
        """Score (B, 3, S, S) float images in [0, 1] -> :class:`Prediction` (score (B,), anomaly_map (B, S, S)).

        Bad input (not a tensor, wrong shape, size or dtype, values outside [0, 1], an empty batch) is a
        one-line :class:`~detectors.errors.ImageSetError`; before fit/load a :class:`DetectorError`.
        """
        scores, maps = self._in_batches(images, self._score_batch, call="predict")
        return Prediction(score=scores.cpu().numpy(), anomaly_map=maps.cpu().numpy())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All learned tensors (no modules, no pickled objects), on the CPU."""
        self._require_fitted("state_dict")
        return self._state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`'s output; on an error the detector stays as it was."""
        with self._restored_on_error():
            if self.config.pretrained == "none":
                # a random frozen backbone is part of the state: load it into a fresh extractor, so that a
                # state that fails half-way leaves the current one untouched
                self._frozen = None
            self._load_state_dict(state)
            self._fitted = True

    # save/load are implemented once, in detectors.model_dir, on top of state_dict/load_state_dict.
    def save(self, directory: str | Path) -> Path:
        from detectors.model_dir import save_detector

        return save_detector(self, Path(directory))

    @classmethod
    def load(cls, directory: str | Path) -> "Detector":
        from detectors.model_dir import load_detector

        detector = load_detector(Path(directory), expected_method=getattr(cls, "name", None))
        if not isinstance(detector, cls):
            from detectors.errors import ModelDirectoryError

            raise ModelDirectoryError(
                f"{directory}: holds a '{detector.name}' model, not a '{cls.name}' one"
            )
        return detector

    # ---------------------------------------------------------------------------- helpers for methods
    def _autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision on CUDA when ``config.mixed_precision`` (bf16 where supported, else fp16); a no-op
        elsewhere."""
        return autocast_context(self.device, self.config.mixed_precision)

    def _grad_scaler(self) -> "torch.amp.GradScaler":
        """The gradient scaler that goes with :meth:`_autocast` (active only for fp16 on CUDA)."""
        return grad_scaler(self.device, self.config.mixed_precision)

    def _frozen_backbone(self, layers: Sequence[int]) -> "FeatureExtractor":
        """The frozen feature extractor of ``config.backbone`` at timm ``layers`` with ``config.pretrained``
        weights, on ``self.device`` in eval mode, built on first use (may raise BackboneError). Pretrained
        extractors are shared within the process; ``pretrained: none`` draws random weights from
        ``config.seed``. One per detector: every call must ask for the same ``layers``."""
        from detectors.backbones import frozen_feature_extractor

        if self._frozen is None:
            cfg = self.config
            self._frozen = frozen_feature_extractor(cfg.backbone, layers, cfg.pretrained, self.device, cfg.seed)
        elif list(self._frozen.layers) != [int(i) for i in layers]:
            raise DetectorError(
                f"{self.name}: frozen backbone built for layers {self._frozen.layers}, asked for {list(layers)}"
            )
        return self._frozen

    def _require_fitted(self, call: str) -> None:
        """The one not-fitted error: ``"<name>: <call>() called before fit() or load()"``."""
        if not self._fitted:
            raise DetectorError(f"{self.name}: {call}() called before fit() or load()")

    def _in_batches(
        self, images: Any, score: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], call: str
    ) -> tuple[torch.Tensor, ...]:
        """Check ``images`` once, run ``score`` on chunks of ``inference_batch_size`` images on the device
        and concatenate its output tensors (on the device). ``call`` names the public call in errors."""
        from detectors.image_ops import check_batch

        self._require_fitted(call)
        images = check_batch(images, image_size=self.config.image_size, method=self.name, where=f"{self.name} {call}")
        size = self.config.inference_batch_size
        outputs = [score(images[start : start + size].to(self.device)) for start in range(0, images.shape[0], size)]
        return tuple(torch.cat(parts) for parts in zip(*outputs))

    @contextlib.contextmanager
    def _restored_on_error(self) -> Iterator[None]:
        """Snapshot the detector's attributes; put them back when the block raises (anything, Ctrl-C too)."""
        snapshot = dict(self.__dict__)
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(snapshot)
            raise
