"""PatchCore as a :class:`~detectors.base.Detector`: configuration, memory-bank construction, scoring, state.

Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022. Pipeline (B images of S x S
pixels, h x w = the first layer's patch grid, D = ``target_dim``, N = n_train * h * w training patches):

    images (B,3,S,S) -> frozen backbone layers 2+3 -> FeatureAggregator (3x3 neighbourhoods, adaptive
        average pooling to pretrain_dim per layer then target_dim, layer 3 upsampled to layer 2's grid)
        -> patch features (B, h, w, D)
    fit:   pass 1: every training patch projected to ``projection_dim`` (Gaussian random projection,
           Johnson-Lindenstrauss) and kept, (projection_dim, N) float32;
           greedy k-center coreset of round(coreset_ratio * N) patches on the projections (Algorithm 1);
           pass 2: the same features recomputed, the chosen patches' FULL features kept -> memory bank (M, D)
    score: nearest-bank-entry distance per patch (chunked) -> (B, h, w) -> bilinear to S x S -> Gaussian
           blur sigma 4 = anomaly map; image score = eq. 7 (max patch distance re-weighted by how far the test
           patch lies from the b bank entries around its nearest one)

Memory: the full (N, D) training features are never held: pass 1 keeps only their (projection_dim, N)
projections (1,000 images at 256 px with Lite0: N = 1,024,000, 0.5 GB), pass 2 only the chosen rows; the
coreset selection updates (N,) vectors in place, and every distance matrix at scoring time is computed in
blocks of ``distance_chunk_mb``. See benchmarks/bench_patchcore_memory.py for the measured peak.

Differences from the paper and its official code (amazon-science/patchcore-inspection), all deliberate:
- Backbone: tf_efficientnet_lite0 with the offline ImageNet weights (WideResNet-50-2 in the paper; no
  WideResNet weights ship offline here: ``backbone: wide_resnet50_2, pretrained: hub`` or a weights file).
  Lite0's timm levels 2+3 (strides 8 and 16, 40 + 112 channels) play the role of WRN50's layer2 + layer3.
- Input: the image resized to ``image_size`` (256), no centre crop to 224 (the cell's captures are tiled; a
  crop would drop border pixels). At 256 px the patch grid is 32 x 32 for both backbones.
- The random projection is a dense Gaussian matrix N(0, 1/k) drawn from ``seed`` (the paper: "random linear
  projections"; the official code uses an untrained torch Linear layer). The first coreset element is drawn
  from ``seed`` (Algorithm 1 leaves it open).
- Two passes over the training images (features recomputed for the chosen patches) instead of holding all
  features: the memory bound. The backbone is frozen, so both passes see the same numbers (on the CPU bit for
  bit; on a GPU non-deterministic kernels may change the last bits: the bank holds pass 2's features).
- Eq. 7's b (``neighbours``): the paper's text gives no value; 9 here. N_b(m*) includes m* itself.
- Exact nearest neighbours by chunked matrix products (the paper uses faiss).
- Image score = eq. 7 on the raw patch distances (as the paper); the map is the upsampled, blurred patch
  distances (as the paper). Other methods here take the max of the blurred map: PatchCore keeps its own score.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from detectors.backbones import FeatureExtractor
from detectors.base import Detector, DetectorConfig, ProgressCallback
from detectors.errors import DetectorError
from detectors.image_ops import check_batch, gaussian_blur
from detectors.model_io import check_state_shapes, reject_unknown_tensors
from detectors.patch_features import FeatureAggregator
from detectors.patchcore.model import (
    all_finite,
    gaussian_projection,
    greedy_coreset,
    nearest_neighbours,
    reweighted_image_score,
)
from detectors.registry import register
from detectors.train_images import TrainImages


class PatchCoreConfig(DetectorConfig):
    """PatchCore's configuration; method defaults are the paper's (PatchCore-10 %, WRN50 layers 2+3).

    The backbone default is ``tf_efficientnet_lite0`` with offline ImageNet weights (works without a network);
    the paper's is ``wide_resnet50_2``.
    """

    inference_batch_size: int = Field(
        4, ge=1, description="images per forward pass in both fit passes and in predict (4, not the base's 16: "
        "smaller per-batch temporaries in fit; measured peaks in the README, benchmarks/bench_patchcore_memory.py)"
    )
    layers: list[int] = Field(default_factory=lambda: [2, 3], min_length=1, description="timm out_indices")
    patch_size: int = Field(3, ge=1, le=9, description="neighbourhood p of the locally aware patch features")
    pretrain_dim: int = Field(1024, ge=1, description="per-layer adaptive-average-pooled feature length")
    target_dim: int = Field(1024, ge=1, description="patch feature length D (memory-bank width)")
    coreset_ratio: float = Field(
        0.1, gt=0, le=1, description="memory bank = this share of all training patches (paper Table 1: 0.25, 0.1, 0.01)"
    )
    projection_dim: int = Field(128, ge=1, description="random-projection dimension of the coreset distances")
    neighbours: int = Field(
        9, ge=2, description="b of eq. 7: bank entries around m* (itself included) in the image-score weight"
    )
    blur_sigma: float = Field(4.0, ge=0, description="Gaussian blur of the upsampled map, pixels")
    distance_chunk_mb: float = Field(64, gt=0, description="memory of one block of a distance matrix, MiB")


def memory_bank_size(n_images: int, patches_per_image: int, coreset_ratio: float) -> int:
    """M = round(coreset_ratio * N), N = n_images * patches_per_image, at least 1 and at most N."""
    n = n_images * patches_per_image
    return max(1, min(n, round(coreset_ratio * n)))


@register
class PatchCore(Detector):
    """PatchCore: a coreset-subsampled memory bank of locally aware patch features, nearest-neighbour scores."""

    name: ClassVar[str] = "patchcore"
    config_class: ClassVar[type[DetectorConfig]] = PatchCoreConfig
    config: PatchCoreConfig
    #: Builds in about a second on six 64-px images (8 x 8 patch grid, 384 patches, a 96-entry bank).
    smoke_config: ClassVar[dict[str, Any]] = {
        "image_size": 64,
        "pretrain_dim": 64,
        "target_dim": 64,
        "coreset_ratio": 0.25,
        "projection_dim": 16,
        "blur_sigma": 1.0,
        "device": "cpu",
    }

    def __init__(self, config: PatchCoreConfig) -> None:
        super().__init__(config)
        self._aggregator: Optional[FeatureAggregator] = None
        self.bank: Optional[torch.Tensor] = None  # (M, D) float32 on the device

    # ----------------------------------------------------------------------------------------- modules
    @property
    def backbone(self) -> FeatureExtractor:
        """The frozen feature extractor (created on first use; may raise BackboneError)."""
        return self._frozen_backbone(self.config.layers)

    @property
    def aggregator(self) -> FeatureAggregator:
        """The parameter-free locally aware patch-feature aggregation (created on first use)."""
        if self._aggregator is None:
            cfg = self.config
            self._aggregator = FeatureAggregator(self.backbone.channels, cfg.pretrain_dim, cfg.target_dim, cfg.patch_size)
        return self._aggregator

    @property
    def _chunk_elements(self) -> int:
        return max(1, int(self.config.distance_chunk_mb * 2**20 / 4))

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> locally aware patch features (B, h, w, D) float32 on the device."""
        with self._autocast():
            maps = self.backbone(images.to(self.device, dtype=torch.float32))
        return self.aggregator([m.float() for m in maps])

    # ------------------------------------------------------------------------------------------ fit
    @torch.no_grad()
    def _fit(self, train: Any, progress: ProgressCallback) -> dict[str, Any]:
        """Build the memory bank from good images. Returns ``{"bank_size": [M, D], "n_patches": N, ...}``."""
        cfg = self.config
        t_start = time.perf_counter()
        images = TrainImages(train, method=self.name, role="training", image_size=cfg.image_size)
        n = len(images)
        chunks = images.chunks(cfg.inference_batch_size)
        d = cfg.target_dim
        projection = gaussian_projection(d, cfg.projection_dim, cfg.seed).to(self.device)

        # ---- pass 1: project every training patch (the full features are not kept)
        t0 = time.perf_counter()
        projected: Optional[torch.Tensor] = None  # (projection_dim, N)
        per_image = 0
        for step, idx in enumerate(chunks):
            batch = check_batch(images.batch(idx), image_size=cfg.image_size, method=self.name, where=images.batch_name(idx))
            feats = self._features(batch)
            if projected is None:
                per_image = feats.shape[1] * feats.shape[2]
                # zeros, not empty: the whole buffer is resident from the first batch on (the peak shows at
                # once, not when the last column is written)
                projected = torch.zeros(cfg.projection_dim, n * per_image, device=self.device)
            flat = feats.reshape(-1, d)
            self._check_finite(flat, images.batch_name(idx))
            start = idx[0] * per_image
            projected[:, start : start + flat.shape[0]] = (flat @ projection).T
            progress(0, 3, f"features {idx[-1] + 1}/{n}")
        assert projected is not None
        n_patches = n * per_image
        n_bank = memory_bank_size(n, per_image, cfg.coreset_ratio)
        if n_bank < 2:
            raise DetectorError(
                f"{self.name}: coreset_ratio {cfg.coreset_ratio} of {n_patches} training patches leaves a memory bank "
                f"of {n_bank}; eq. 7 needs at least 2 entries: raise coreset_ratio or train on more images"
            )
        extract_s = time.perf_counter() - t0

        # ---- greedy coreset on the projections
        t0 = time.perf_counter()
        first: Optional[int] = None
        if n_bank < n_patches:
            gen = torch.Generator().manual_seed(cfg.seed)
            first = int(torch.randint(n_patches, (1,), generator=gen))
            chosen = greedy_coreset(
                projected, n_bank, first=first,
                progress=lambda i, total: progress(1, 3, f"coreset {i}/{total}"),
            )
        else:
            chosen = torch.arange(n_patches, device=self.device)
        del projected
        chosen = torch.sort(chosen.to(self.device)).values  # bank rows in training-patch order
        coreset_s = time.perf_counter() - t0

        # ---- pass 2: the chosen patches' full features
        t0 = time.perf_counter()
        bank = torch.zeros(n_bank, d, device=self.device)
        for idx in chunks:
            lo = idx[0] * per_image
            hi = lo + len(idx) * per_image
            a, b = torch.searchsorted(chosen, torch.tensor([lo, hi], device=self.device)).tolist()
            if a == b:
                continue
            batch = check_batch(images.batch(idx), image_size=cfg.image_size, method=self.name, where=images.batch_name(idx))
            flat = self._features(batch).reshape(-1, d)
            bank[a:b] = flat[chosen[a:b] - lo]
            progress(2, 3, f"memory bank {idx[-1] + 1}/{n}")
        self._check_finite(bank, "memory bank")
        self.bank = bank
        progress(3, 3, f"memory bank {n_bank} x {d}")
        return {
            "bank_size": [n_bank, d],
            "n_train": n,
            "n_patches": n_patches,
            "coreset_first": first,
            "extract_seconds": round(extract_s, 3),
            "coreset_seconds": round(coreset_s, 3),
            "bank_seconds": round(time.perf_counter() - t0, 3),
            "train_seconds": round(time.perf_counter() - t_start, 3),
            "device": str(self.device),
            "seed": cfg.seed,
        }

    def _check_finite(self, values: torch.Tensor, where: str) -> None:
        """A NaN or infinite feature (a broken backbone or weights file) is an error, never a silent score."""
        if not all_finite(values):
            raise DetectorError(f"{self.name}: {where}: non-finite patch features (NaN or inf) from the backbone")

    # -------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def _score_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, 3, S, S) float32 in [0, 1] on the device -> (scores (b,), maps (b, S, S)).

        Patch score = distance to the nearest memory-bank entry; map = bilinear upsampling to S x S + Gaussian
        blur (``blur_sigma`` px); image score = eq. 7 on the raw patch scores. Traceable (the distance blocks'
        sizes follow from the shapes).
        """
        assert self.bank is not None
        cfg = self.config
        s = cfg.image_size
        feats = self._features(images)  # (b, h, w, D)
        b, h, w, d = feats.shape
        dist, idx = nearest_neighbours(feats.reshape(-1, d), self.bank, chunk_elements=self._chunk_elements)
        score = reweighted_image_score(
            feats.reshape(b, h * w, d), dist.reshape(b, h * w), idx.reshape(b, h * w), self.bank, cfg.neighbours
        )
        up = F.interpolate(dist.reshape(b, 1, h, w), size=(s, s), mode="bilinear", align_corners=False).squeeze(1)
        return score, gaussian_blur(up, cfg.blur_sigma)

    # --------------------------------------------------------------------------------------- state
    def _state_dict(self) -> dict[str, torch.Tensor]:
        """The memory bank ``bank`` (M, D) on the CPU (plus the backbone's weights when ``pretrained: none``,
        so a saved random backbone is restored exactly)."""
        assert self.bank is not None
        state = {"bank": self.bank.detach().cpu().clone()}
        if self.config.pretrained == "none":
            for key, value in self.backbone.state_dict().items():
                state["backbone." + key] = value.detach().cpu().clone()
        return state

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`; a missing, unexpected, mis-shaped or non-finite tensor raises
        DetectorError naming it."""
        modules: dict[str, nn.Module] = {}
        if self.config.pretrained == "none":
            modules["backbone."] = self.backbone
        parts = {prefix: check_state_shapes(prefix, module, state, self.name) for prefix, module in modules.items()}
        if "bank" not in state:
            raise DetectorError(f"{self.name} weights: missing tensor 'bank'")
        bank = state["bank"]
        d = self.config.target_dim
        if not isinstance(bank, torch.Tensor) or bank.ndim != 2 or bank.shape[1] != d or bank.shape[0] < 2:
            shape = tuple(bank.shape) if isinstance(bank, torch.Tensor) else type(bank).__name__
            raise DetectorError(f"{self.name} weights: tensor 'bank' has shape {shape}, config expects (M, {d}) with M >= 2")
        if not bank.is_floating_point() or not all_finite(bank):
            raise DetectorError(f"{self.name} weights: tensor 'bank' holds non-finite or non-float values")
        reject_unknown_tensors(state, list(modules), ["bank"], self.name)
        for prefix, module in modules.items():
            module.load_state_dict(parts[prefix])
        self.bank = bank.float().to(self.device)

