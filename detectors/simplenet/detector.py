"""SimpleNet as a :class:`~detectors.base.Detector`: configuration, training loop, scoring, state.

Pipeline (shapes for B images of S x S pixels, h x w = the first layer's patch grid, D = ``target_dim``):

    images (B,3,S,S) -> frozen backbone layers (default 2+3) -> FeatureAggregator -> (B,h,w,D)
    [optional: per-dimension standardisation with training statistics]
    training: adaptor(features) = a;  a + N(0, noise_std^2) = fake;  loss = truncated L1 on D(a), D(fake)
    scoring:  -discriminator(adaptor(features)) -> (B,h,w) -> bilinear to (S,S) -> Gaussian blur sigma 4
              image score = max of the map
              (computed by :class:`~detectors.simplenet.folded.FoldedHead`: the same function with its linear
              steps folded, built from the fitted modules at the end of fit and load)

The backbone is frozen and there is no augmentation, so the aggregated features of the training set are
extracted once and cached (on the training device) when they fit in ``cache_limit_mb``.
The schedule is fixed (``meta_epochs`` x ``epochs_per_meta``): no checkpoint is ever chosen on test data
(the reference evaluates on the test set after every meta-epoch and keeps the best; here meta-epochs only
group the loss statistics).

Differences from the reference code (DonaldRR/SimpleNet), all deliberate:
- image score = max of the blurred map (MVTec convention); the reference takes the max of the raw patch
  scores. The map itself is the same (bilinear upsampling, Gaussian blur sigma 4).
- ``feature_norm: standardize`` (off by default) is not in the reference: it exists for backbones whose
  aggregated features are far larger than WideResNet-50's (EfficientNet-Lite0: per-dimension std ~4.6),
  for which the reference noise is invisible within a short schedule. See configs/detectors/simplenet.yaml.
- no cosine learning-rate schedule and no mixing of several noise levels (the reference's options are off
  in its MVTec recipe too).
"""
from __future__ import annotations

import time
from typing import Any, ClassVar, Literal, Optional

import torch
from pydantic import Field

from detectors.backbones import FeatureExtractor
from detectors.base import Detector, DetectorConfig, ProgressCallback
from detectors.registry import register
from detectors.image_ops import check_batch
from detectors.model_io import check_loose_tensors, check_state_shapes, reject_unknown_tensors
from detectors.train_images import TrainImages
from detectors.simplenet.folded import FoldedHead
from detectors.simplenet.model import (
    Adaptor,
    AnomalousFeatureGenerator,
    Discriminator,
    FeatureAggregator,
    truncated_l1_loss,
)


class SimpleNetConfig(DetectorConfig):
    """SimpleNet's configuration. Method defaults are the reference recipe (DonaldRR/SimpleNet ``run.sh``).

    The backbone default is ``tf_efficientnet_lite0`` with offline ImageNet weights because it works without
    a network; the reference backbone is ``wide_resnet50_2`` (``pretrained: hub`` or a local weights file).
    """

    layers: list[int] = Field(default_factory=lambda: [2, 3], min_length=1, description="timm out_indices")
    patch_size: int = Field(3, ge=1, le=9, description="neighbourhood of the local feature aggregation")
    pretrain_dim: int = Field(1536, ge=8, description="per-layer pooled feature length")
    target_dim: int = Field(1536, ge=8, description="aggregated feature length D (adaptor is D x D)")
    hidden_dim: int = Field(1024, ge=8, description="discriminator hidden width")
    feature_norm: Literal["none", "standardize"] = Field(
        "none",
        description="standardize: per-dimension mean/std of the training features, applied before the "
        "adaptor (not in the reference; for backbones whose features are far larger than WRN50's)",
    )
    noise_std: float = Field(0.015, gt=0, description="std of the Gaussian anomalous-feature noise")
    margin: float = Field(0.5, gt=0, description="truncated-L1 margin (th)")
    meta_epochs: int = Field(40, ge=1)
    epochs_per_meta: int = Field(4, ge=1, description="the reference's gan_epochs")
    batch_size: int = Field(8, ge=1, description="images per training step (all their patches)")
    adaptor_lr: float = Field(1e-4, gt=0, description="AdamW learning rate of the adaptor")
    discriminator_lr: float = Field(2e-4, gt=0, description="Adam learning rate of the discriminator")
    discriminator_weight_decay: float = Field(1e-5, ge=0)
    blur_sigma: float = Field(4.0, ge=0, description="Gaussian blur of the upsampled map, pixels")
    cache_features: Literal["auto", "always", "never"] = "auto"
    cache_limit_mb: float = Field(4096, gt=0, description="auto caches when the cache fits in this")


def _finish_stats(total: torch.Tensor, total_sq: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    mean = total / count
    std = (total_sq / count - mean * mean).clamp(min=0).sqrt().clamp(min=1e-6)
    return mean.float(), std.float()


@torch.no_grad()
def _mean_std(features: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and std (D,) of (N, D) features, accumulated in float64 by chunks."""
    d = features.shape[1]
    total = torch.zeros(d, dtype=torch.float64, device=features.device)
    total_sq = torch.zeros(d, dtype=torch.float64, device=features.device)
    for start in range(0, features.shape[0], chunk):
        part = features[start : start + chunk].double()
        total += part.sum(0)
        total_sq += (part * part).sum(0)
    return _finish_stats(total, total_sq, features.shape[0])


@register
class SimpleNet(Detector):
    """SimpleNet (Liu et al. 2023): adapted backbone patch features vs. Gaussian-perturbed ones."""

    name: ClassVar[str] = "simplenet"
    config_class: ClassVar[type[DetectorConfig]] = SimpleNetConfig
    config: SimpleNetConfig
    #: Trains in a few seconds on a few 64-px images (contract tests, quick demos): standardised features,
    #: larger noise and 10x learning rates so that 64 tiny steps visibly learn.
    smoke_config: ClassVar[dict[str, Any]] = {
        "image_size": 64,
        "pretrain_dim": 32,
        "target_dim": 32,
        "hidden_dim": 32,
        "feature_norm": "standardize",
        "noise_std": 0.3,
        "adaptor_lr": 1e-3,
        "discriminator_lr": 2e-3,
        "meta_epochs": 4,
        "epochs_per_meta": 4,
        "batch_size": 2,
        "device": "cpu",
    }

    def __init__(self, config: SimpleNetConfig) -> None:
        super().__init__(config)
        self._aggregator: Optional[FeatureAggregator] = None
        self.adaptor: Optional[Adaptor] = None
        self.discriminator: Optional[Discriminator] = None
        self._norm: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # (mean (D,), std (D,))
        self._head: Optional[FoldedHead] = None  # scoring, folded from the fitted modules

    # ----------------------------------------------------------------------------------------- modules
    @property
    def backbone(self) -> FeatureExtractor:
        """The frozen feature extractor (created on first use; may raise BackboneError)."""
        return self._frozen_backbone(self.config.layers)

    @property
    def aggregator(self) -> FeatureAggregator:
        """The parameter-free local feature aggregation of the backbone's layers (created on first use)."""
        if self._aggregator is None:
            cfg = self.config
            self._aggregator = FeatureAggregator(self.backbone.channels, cfg.pretrain_dim, cfg.target_dim, cfg.patch_size)
        return self._aggregator

    def _build_heads(self) -> None:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.adaptor = Adaptor(cfg.target_dim).to(self.device)
            self.discriminator = Discriminator(cfg.target_dim, cfg.hidden_dim).to(self.device)

    # ------------------------------------------------------------------------------------ validation
    def _check_images(self, images: Any, where: str) -> torch.Tensor:
        """Check a (B,3,S,S) float batch in [0,1]; raise ImageSetError with one line otherwise."""
        return check_batch(images, image_size=self.config.image_size, method=self.name, where=where)

    # -------------------------------------------------------------------------------------- features
    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) in [0,1] -> aggregated local features (B, h, w, D) float32 on the device."""
        with self._autocast():
            maps = self.backbone(images.to(self.device, dtype=torch.float32))
        feats = self.aggregator([m.float() for m in maps])
        if self._norm is not None:
            mean, std = self._norm
            feats = (feats - mean) / std
        return feats

    @torch.no_grad()
    def _grid(self) -> tuple[int, int]:
        """Patch grid (h, w) of the first layer at the configured image size (one backbone pass)."""
        s = self.config.image_size
        first = self.backbone(torch.zeros(1, 3, s, s, device=self.device))[0]
        return int(first.shape[2]), int(first.shape[3])

    # ------------------------------------------------------------------------------------------ fit
    def _fit(self, train: Any, progress: ProgressCallback) -> dict[str, Any]:
        """Train adaptor + discriminator on good images for the fixed schedule. Returns ``{"loss": [per
        meta-epoch mean], "p_normal", "p_anomalous", ..., "train_seconds": ...}``."""
        cfg = self.config
        t_start = time.perf_counter()
        images = TrainImages(train, method=self.name, role="training", image_size=cfg.image_size)
        n = len(images)
        total_epochs = cfg.meta_epochs * cfg.epochs_per_meta
        report = progress

        # Fresh heads and generators from the seed: fit() twice with one seed gives the same model.
        self._build_heads()
        self._head = None
        assert self.adaptor is not None and self.discriminator is not None
        batch_gen = torch.Generator().manual_seed(cfg.seed)
        noise_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        noise = AnomalousFeatureGenerator(cfg.noise_std, noise_gen)

        # ---- frozen features: extract once when the cache fits
        h, w = self._grid()
        cache_mb = n * h * w * cfg.target_dim * 4 / 2**20
        use_cache = cfg.cache_features == "always" or (
            cfg.cache_features == "auto" and cache_mb <= cfg.cache_limit_mb
        )
        t0 = time.perf_counter()
        self._norm = None
        cache: Optional[torch.Tensor] = None
        if use_cache:
            chunks = []
            for start in range(0, n, cfg.inference_batch_size):
                idx = list(range(start, min(n, start + cfg.inference_batch_size)))
                batch = self._check_images(images.batch(idx), images.batch_name(idx))
                chunks.append(self._features(batch))
                report(0, cfg.meta_epochs, f"extracting features {idx[-1] + 1}/{n}")
            cache = torch.cat(chunks)  # (N, h, w, D), raw
            chunks.clear()
            if cfg.feature_norm == "standardize":
                self._norm = _mean_std(cache.reshape(-1, cfg.target_dim))
                cache.sub_(self._norm[0]).div_(self._norm[1])
        elif cfg.feature_norm == "standardize":
            self._norm = self._feature_stats(images)  # also validates every image
        else:
            # Validate everything before the long loop so a bad image fails fast.
            for start in range(0, n, cfg.inference_batch_size):
                idx = list(range(start, min(n, start + cfg.inference_batch_size)))
                self._check_images(images.batch(idx), images.batch_name(idx))
        extract_s = time.perf_counter() - t0

        adaptor_opt = torch.optim.AdamW(self.adaptor.parameters(), lr=cfg.adaptor_lr)
        disc_opt = torch.optim.Adam(
            self.discriminator.parameters(),
            lr=cfg.discriminator_lr,
            weight_decay=cfg.discriminator_weight_decay,
        )
        scaler = self._grad_scaler()

        self.adaptor.train()
        self.discriminator.train()
        losses: list[float] = []
        p_normal: list[float] = []
        p_anomalous: list[float] = []
        t_train = time.perf_counter()
        for meta in range(cfg.meta_epochs):
            loss_sum = torch.zeros((), device=self.device)
            pn_sum = torch.zeros((), device=self.device)
            pa_sum = torch.zeros((), device=self.device)
            steps = 0
            for _ in range(cfg.epochs_per_meta):
                order = torch.randperm(n, generator=batch_gen).tolist()
                for start in range(0, n, cfg.batch_size):
                    idx = order[start : start + cfg.batch_size]
                    if cache is not None:
                        feats = cache[idx]
                    else:
                        feats = self._features(images.batch(idx))
                    feats = feats.reshape(-1, cfg.target_dim)
                    loss, pn, pa = self._train_step(feats, noise, adaptor_opt, disc_opt, scaler)
                    loss_sum += loss
                    pn_sum += pn
                    pa_sum += pa
                    steps += 1
            losses.append(float(loss_sum) / steps)
            p_normal.append(float(pn_sum) / steps)
            p_anomalous.append(float(pa_sum) / steps)
            report(
                meta + 1,
                cfg.meta_epochs,
                f"meta-epoch {meta + 1}/{cfg.meta_epochs} loss {losses[-1]:.4f} "
                f"p_normal {p_normal[-1]:.3f} p_anomalous {p_anomalous[-1]:.3f}",
            )
        train_s = time.perf_counter() - t_train
        self.adaptor.eval()
        self.discriminator.eval()
        del cache
        self._fold_head()

        stats: dict[str, Any] = {
            "loss": losses,
            "p_normal": p_normal,
            "p_anomalous": p_anomalous,
            "n_train": n,
            "epochs": total_epochs,
            "features_cached": use_cache,
            "cache_mb": round(cache_mb, 1),
            "extract_seconds": round(extract_s, 3),
            "train_loop_seconds": round(train_s, 3),
            "train_seconds": round(time.perf_counter() - t_start, 3),
            "device": str(self.device),
            "seed": cfg.seed,
        }
        return stats

    @torch.no_grad()
    def _feature_stats(self, images: TrainImages) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std (D,) of the aggregated training features (one streaming pass)."""
        d = self.config.target_dim
        total = torch.zeros(d, dtype=torch.float64, device=self.device)
        total_sq = torch.zeros(d, dtype=torch.float64, device=self.device)
        count = 0
        for start in range(0, len(images), self.config.inference_batch_size):
            idx = list(range(start, min(len(images), start + self.config.inference_batch_size)))
            batch = self._check_images(images.batch(idx), images.batch_name(idx))
            feats = self._features(batch).reshape(-1, d).double()
            total += feats.sum(0)
            total_sq += (feats * feats).sum(0)
            count += feats.shape[0]
        return _finish_stats(total, total_sq, count)

    def _train_step(
        self,
        feats: torch.Tensor,
        noise: AnomalousFeatureGenerator,
        adaptor_opt: torch.optim.Optimizer,
        disc_opt: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step on (N, D) good features. Returns detached (loss, share normal > margin, share anomalous < -margin)."""
        assert self.adaptor is not None and self.discriminator is not None
        adaptor_opt.zero_grad(set_to_none=True)
        disc_opt.zero_grad(set_to_none=True)
        m = self.config.margin
        with self._autocast():
            adapted = self.adaptor(feats)
            fake = noise(adapted)
            scores = self.discriminator(torch.cat([adapted, fake])).float()
        normal_scores, anomalous_scores = scores[: len(adapted)], scores[len(adapted) :]
        loss = truncated_l1_loss(normal_scores, anomalous_scores, m)
        scaler.scale(loss).backward()
        scaler.step(adaptor_opt)
        scaler.step(disc_opt)
        scaler.update()
        with torch.no_grad():
            pn = (normal_scores >= m).float().mean()
            pa = (anomalous_scores < -m).float().mean()
        return loss.detach(), pn, pa

    # -------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def _score_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b,3,S,S) float32 in [0,1] on the device -> (scores (b,), maps (b,S,S)).

        Patch score = -D(adaptor(feature)) (the folded head: same function, see
        :mod:`detectors.simplenet.folded`); the (h,w) patch map is bilinearly upsampled to S x S and blurred
        with a Gaussian of ``blur_sigma`` pixels; the image score is the map's maximum. Traceable.
        """
        assert self._head is not None
        with self._autocast():
            maps = self.backbone(images.to(self.device, dtype=torch.float32))
        patch = self._head([m.float() for m in maps])  # (b, h, w), float32
        maps = self._head.anomaly_map(patch)  # (b, S, S): upsampled and blurred
        return maps.amax(dim=(1, 2)), maps

    # --------------------------------------------------------------------------------------- state
    def _state_dict(self) -> dict[str, torch.Tensor]:
        """Adaptor and discriminator tensors (incl. BatchNorm running stats), on CPU.

        With ``pretrained: none`` the (random) backbone weights are included too, so a saved model
        does not depend on how the random initialisation is reproduced.
        """
        assert self.adaptor is not None and self.discriminator is not None
        state: dict[str, torch.Tensor] = {}
        for prefix, module in (("adaptor.", self.adaptor), ("discriminator.", self.discriminator)):
            for key, value in module.state_dict().items():
                state[prefix + key] = value.detach().cpu().clone()
        if self._norm is not None:
            state["norm.mean"] = self._norm[0].detach().cpu().clone()
            state["norm.std"] = self._norm[1].detach().cpu().clone()
        if self.config.pretrained == "none":
            for key, value in self.backbone.state_dict().items():
                state["backbone." + key] = value.detach().cpu().clone()
        return state

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore adaptor + discriminator (and a random backbone) from :meth:`state_dict`'s output.

        Missing, unexpected or mis-shaped tensors raise DetectorError naming the first offending key.
        """
        self._build_heads()
        assert self.adaptor is not None and self.discriminator is not None
        modules = {"adaptor.": self.adaptor, "discriminator.": self.discriminator}
        if self.config.pretrained == "none":
            modules["backbone."] = self.backbone
        for prefix, module in modules.items():
            module.load_state_dict(check_state_shapes(prefix, module, state, "simplenet"))
        self._norm = None
        if self.config.feature_norm == "standardize":
            check_loose_tensors(state, {key: (self.config.target_dim,) for key in ("norm.mean", "norm.std")}, "simplenet")
            self._norm = (
                state["norm.mean"].float().to(self.device),
                state["norm.std"].float().to(self.device),
            )
            loose = ["norm.mean", "norm.std"]
        else:
            loose = []
        reject_unknown_tensors(state, list(modules), loose, "simplenet")
        self.adaptor.eval()
        self.discriminator.eval()
        self._fold_head()

    def _fold_head(self) -> None:
        """(Re)build the folded scoring head from the fitted aggregator, norm, adaptor and discriminator."""
        assert self.adaptor is not None and self.discriminator is not None
        cfg = self.config
        with torch.no_grad():
            grids = [tuple(m.shape[-2:]) for m in self.backbone(torch.zeros(1, 3, cfg.image_size, cfg.image_size, device=self.device))]
        self._head = FoldedHead(self.aggregator, self.adaptor, self.discriminator, self._norm, grids=grids,
                                image_size=cfg.image_size, blur_sigma=cfg.blur_sigma)
