"""CFA (Lee, Lee & Song 2022, "Coupled-hypersphere-based Feature Adaptation") as a Detector.

Pipeline (B images of S x S pixels; (h, w) = the first backbone layer's grid, T = h*w, C channels, D = phi's):

    images -> frozen backbone layers (default 1, 2, 3: strides 4, 8, 16) -> each 3x3 avg-pool, bilinear to
    (h, w), concat -> (B, C, h, w) -> phi = 1x1 CoordConv -> (B, D, h, w), D = round(gamma_d * C)
    memory bank: running mean over the training set of the UNTRAINED phi's (T, D) features, k-means to
                 round(gamma_c * T) centres when gamma_c < 1 -> (M, D), fixed during training
    training:    coupled-hypersphere loss (K nearest attracted inside radius r, next J repelled beyond
                 r^2 + alpha), r an nn.Parameter learned from 1e-5; AdamW(lr 1e-3, wd 5e-4, amsgrad),
                 fixed number of epochs, batch 4
    scoring:     softmin-weighted distance of eq. 5 per patch -> (B, h, w) -> bilinear to S x S ->
                 Gaussian blur sigma 4 -> anomaly map; image score = map maximum

Deviations from the paper and the official code (sungwool/CFA_for_anomaly_localization):
- Backbone: tf_efficientnet_lite0 with the offline ImageNet weights by default (WRN50-2 in the paper, which
  needs a download: ``backbone: wide_resnet50_2, pretrained: hub``). Lite0's layers 1-3 give 24+40+112 = 176
  channels; the paper splits EfficientNet maps into several per scale, here one map per scale is used.
- Input: the image resized to ``image_size`` (default 256), no 224 centre crop (the cell's captures are tiled,
  a crop would drop border pixels).
- Memory bank: the official code's procedure (running mean over the training set, then k-means) rather than
  the paper's Algorithm 1 (EMA of greedily matched nearest features). k-means is our own Lloyd iteration
  with k-means++ seeding from the config's seed (the official code uses scikit-learn's KMeans).
- Training features are extracted once and cached (the backbone is frozen, there is no augmentation).
- No model selection on the test set: the official code keeps each metric's best of 30 test evaluations;
  here the fixed schedule's final state is the model.
- Mixed precision on CUDA for the backbone and phi; distances, loss and scores are computed in float32.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar, Literal, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field, model_validator

from detectors.backbones import FeatureExtractor
from detectors.base import Detector, DetectorConfig, ProgressCallback
from detectors.image_ops import check_batch, gaussian_blur
from detectors.train_images import TrainImages
from detectors.cfa.model import (
    CoordConvDescriptor,
    MemoryBankBuilder,
    coupled_hypersphere_loss,
    multiscale_patch_features,
    softmin_score,
)
from detectors.errors import DetectorError
from detectors.model_io import check_loose_tensors, check_state_shapes, reject_unknown_tensors
from detectors.registry import register


class CFAConfig(DetectorConfig):
    """CFA's configuration; method defaults are the paper's / official code's."""

    layers: list[int] = Field(default_factory=lambda: [1, 2, 3], min_length=1, description="timm out_indices")
    gamma_c: float = Field(1.0, gt=0, le=1, description="memory bank entries = round(gamma_c * h * w)")
    gamma_d: float = Field(1.0, gt=0, le=1, description="descriptor channels D = round(gamma_d * C)")
    k: int = Field(3, ge=1, description="K nearest memory features attracted")
    j: int = Field(3, ge=0, description="J next-nearest memory features repelled (hard negatives)")
    alpha: float = Field(0.1, ge=0, description="repulsion margin")
    nu: float = Field(1e-3, gt=0, description="loss scale 1/nu")
    r_init: float = Field(1e-5, ge=0, description="initial hypersphere radius (learned)")
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(4, ge=1, description="images per step (all their patches)")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(5e-4, ge=0, description="AdamW weight decay")
    amsgrad: bool = True
    kmeans_iterations: int = Field(30, ge=0, description="Lloyd iterations of the bank compression")
    blur_sigma: float = Field(4.0, ge=0, description="Gaussian blur of the upsampled map, pixels")
    cache_features: Literal["auto", "always", "never"] = "auto"
    cache_limit_mb: float = Field(2048, gt=0, description="auto caches backbone features (float16) within this")

    @model_validator(mode="after")
    def _neighbours(self) -> "CFAConfig":
        if self.k + self.j < 1:
            raise ValueError("k + j must be at least 1")
        return self


@register
class CFA(Detector):
    """CFA: a CoordConv patch descriptor adapted with the coupled-hypersphere loss to a compressed bank."""

    name: ClassVar[str] = "cfa"
    config_class: ClassVar[type[DetectorConfig]] = CFAConfig
    config: CFAConfig
    smoke_config: ClassVar[dict[str, Any]] = {
        "image_size": 64,
        "gamma_c": 0.5,
        "epochs": 3,
        "batch_size": 2,
        "kmeans_iterations": 5,
        "blur_sigma": 1.0,
        "device": "cpu",
    }

    def __init__(self, config: CFAConfig) -> None:
        super().__init__(config)
        self.descriptor: Optional[CoordConvDescriptor] = None
        self.r: Optional[nn.Parameter] = None
        self.bank: Optional[torch.Tensor] = None

    # ----------------------------------------------------------------------------------------- modules
    @property
    def backbone(self) -> FeatureExtractor:
        """The frozen feature extractor (created on first use; may raise BackboneError)."""
        return self._frozen_backbone(self.config.layers)

    @property
    def in_channels(self) -> int:
        """C: the concatenated backbone channels."""
        return int(sum(self.backbone.channels))

    @property
    def out_channels(self) -> int:
        """D = round(gamma_d * C), at least 1."""
        return max(1, int(round(self.config.gamma_d * self.in_channels)))

    def _build(self) -> None:
        """Fresh descriptor (He init from the seed) and radius r = r_init."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self.descriptor = CoordConvDescriptor(self.in_channels, self.out_channels).to(self.device)
        self.r = nn.Parameter(torch.full((1,), float(self.config.r_init), device=self.device))

    # -------------------------------------------------------------------------------------- features
    @torch.no_grad()
    def _patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> frozen multi-scale patch features (B, C, h, w) float32 on the device."""
        with self._autocast():
            maps = self.backbone(images.to(self.device, dtype=torch.float32))
        return multiscale_patch_features([m.float() for m in maps])

    def _describe(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> phi's (B, D, h, w) float32."""
        assert self.descriptor is not None
        with self._autocast():
            out = self.descriptor(feats.to(self.device, dtype=torch.float32))
        return out.float()

    # ------------------------------------------------------------------------------------------ fit
    def _fit(self, train: Any, progress: ProgressCallback) -> dict[str, Any]:
        """Build the memory bank and adapt phi on good images for the fixed schedule.

        Returns ``{"loss": [per epoch], "loss_att", "loss_rep", "r": [per epoch], "bank_size", ...}``.
        """
        cfg = self.config
        t_start = time.perf_counter()
        images = TrainImages(train, method=self.name, role="training", image_size=cfg.image_size)
        n = len(images)
        report = progress
        self._build()
        assert self.descriptor is not None and self.r is not None

        # ---- frozen backbone features (validated; cached in float16 when they fit)
        probe = self._patch_features(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
        _, c, h, w = probe.shape
        cache_mb = n * c * h * w * 2 / 2**20
        use_cache = cfg.cache_features == "always" or (cfg.cache_features == "auto" and cache_mb <= cfg.cache_limit_mb)
        t0 = time.perf_counter()
        builder = MemoryBankBuilder()
        cache: list[torch.Tensor] = []
        self.descriptor.eval()
        for idx in images.chunks(cfg.inference_batch_size):
            batch = check_batch(images.batch(idx), image_size=cfg.image_size, method=self.name, where=images.batch_name(idx))
            feats = self._patch_features(batch)
            with torch.no_grad():
                builder.add(self._describe(feats))  # the UNTRAINED descriptor (paper sec. 3.2)
            if use_cache:
                cache.append(feats.half())
            report(0, cfg.epochs, f"memory bank {idx[-1] + 1}/{n}")
        gen = torch.Generator().manual_seed(cfg.seed)
        self.bank = builder.build(cfg.gamma_c, cfg.kmeans_iterations, gen).to(self.device)
        if cfg.k + cfg.j > self.bank.shape[0]:
            raise DetectorError(
                f"cfa: k + j = {cfg.k + cfg.j} exceeds the memory bank size {self.bank.shape[0]} "
                f"(gamma_c {cfg.gamma_c} x {h * w} patches); raise gamma_c or image_size"
            )
        features = torch.cat(cache) if use_cache else None
        del cache
        bank_s = time.perf_counter() - t0

        # ---- adaptation
        params = list(self.descriptor.parameters()) + [self.r]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad)
        scaler = self._grad_scaler()
        order_gen = torch.Generator().manual_seed(cfg.seed + 1)
        losses: list[float] = []
        att_hist: list[float] = []
        rep_hist: list[float] = []
        r_hist: list[float] = []
        t_train = time.perf_counter()
        self.descriptor.train()
        for epoch in range(cfg.epochs):
            sums = torch.zeros(3, device=self.device)
            steps = 0
            order = torch.randperm(n, generator=order_gen).tolist()
            for start in range(0, n, cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                if features is not None:
                    feats = features[idx].float().to(self.device)
                else:
                    feats = self._patch_features(images.batch(idx))
                out = self._describe(feats)  # (b, D, h, w)
                flat = out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])
                loss, att, rep = coupled_hypersphere_loss(flat, self.bank, self.r, cfg.k, cfg.j, cfg.alpha, cfg.nu)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sums += torch.stack([loss.detach(), att.detach(), rep.detach()])
                steps += 1
            mean = (sums / steps).tolist()
            losses.append(mean[0])
            att_hist.append(mean[1])
            rep_hist.append(mean[2])
            r_hist.append(float(self.r.detach().abs()))
            report(epoch + 1, cfg.epochs, f"epoch {epoch + 1}/{cfg.epochs} loss {mean[0]:.4f} r {r_hist[-1]:.3g}")
        train_s = time.perf_counter() - t_train
        self.descriptor.eval()
        del features

        stats: dict[str, Any] = {
            "loss": losses,
            "loss_att": att_hist,
            "loss_rep": rep_hist,
            "r": r_hist,
            "bank_size": list(self.bank.shape),
            "n_train": n,
            "epochs": cfg.epochs,
            "features_cached": use_cache,
            "cache_mb": round(cache_mb, 1),
            "bank_seconds": round(bank_s, 3),
            "train_loop_seconds": round(train_s, 3),
            "train_seconds": round(time.perf_counter() - t_start, 3),
            "device": str(self.device),
            "seed": cfg.seed,
        }
        return stats

    # -------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def _score_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, 3, S, S) float32 in [0, 1] on the device -> (scores (b,), maps (b, S, S)).

        Patch score = eq. 5 (softmin certainty x nearest distance, Euclidean, K nearest); the (h, w) map is
        bilinearly upsampled to S x S and blurred (sigma ``blur_sigma`` px); image score = map maximum.
        Traceable; the distances are computed one image at a time (bounding the (h*w, M) distance matrix), a
        loop over the batch that a trace unrolls (an export has a fixed batch size).
        """
        assert self.descriptor is not None and self.bank is not None
        cfg = self.config
        s = cfg.image_size
        out = self._describe(self._patch_features(images))
        b, d, h, w = out.shape
        flat = out.permute(0, 2, 3, 1).reshape(-1, d)
        patch = torch.cat([softmin_score(f, self.bank, cfg.k) for f in flat.split(h * w)]).reshape(b, 1, h, w)
        up = F.interpolate(patch, size=(s, s), mode="bilinear", align_corners=False).squeeze(1)
        maps = gaussian_blur(up, cfg.blur_sigma)
        return maps.amax(dim=(1, 2)), maps

    # --------------------------------------------------------------------------------------- state
    def _state_dict(self) -> dict[str, torch.Tensor]:
        """Descriptor weights, radius ``r`` (1,), memory bank ``bank`` (M, D), on CPU (plus the backbone's
        weights when ``pretrained: none``, so a saved random backbone is restored exactly)."""
        assert self.descriptor is not None and self.bank is not None and self.r is not None
        state = {"descriptor." + k: v.detach().cpu().clone() for k, v in self.descriptor.state_dict().items()}
        state["r"] = self.r.detach().cpu().clone()
        state["bank"] = self.bank.detach().cpu().clone()
        if self.config.pretrained == "none":
            for key, value in self.backbone.state_dict().items():
                state["backbone." + key] = value.detach().cpu().clone()
        return state

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`; a missing, unexpected or mis-shaped tensor raises DetectorError."""
        self._build()
        assert self.descriptor is not None and self.r is not None
        modules: dict[str, nn.Module] = {"descriptor.": self.descriptor}
        if self.config.pretrained == "none":
            modules["backbone."] = self.backbone
        parts = {prefix: check_state_shapes(prefix, module, state, "cfa") for prefix, module in modules.items()}
        bank = self._checked_radius_and_bank(state)
        reject_unknown_tensors(state, list(modules), ["r", "bank"], "cfa")
        for prefix, module in modules.items():
            module.load_state_dict(parts[prefix])
        with torch.no_grad():
            self.r.copy_(state["r"].to(self.device))
        self.bank = bank.float().to(self.device)
        self.descriptor.eval()

    def _checked_radius_and_bank(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """Check ``state``'s radius ``r`` (1,) and memory bank ``bank`` (M, D), M >= 1; returns the bank."""
        if "bank" not in state:
            raise DetectorError("cfa weights: missing tensor 'bank'")
        check_loose_tensors(state, {"r": (1,)}, "cfa")
        bank = state["bank"]
        if bank.ndim != 2 or bank.shape[1] != self.out_channels or bank.shape[0] < 1:
            raise DetectorError(
                f"cfa weights: tensor 'bank' has shape {tuple(bank.shape)}, config expects (M, {self.out_channels})"
            )
        return bank
