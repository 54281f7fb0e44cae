"""TSDN (two-stream decoder network) as a :class:`~detectors.base.Detector`: config, training loop, scoring.

Training (B good images of S x S px per step): SURF distorts each image (SLIC, ``n_segments`` superpixels,
``n_filled`` painted with random colours, mask M_surf); the network predicts M' (DCD_A), W' (FNE) and the
clean image R (DCD_N); loss = eq. 3 with ``loss_weights`` (lambda_r, lambda_s, lambda_g, lambda_m, lambda_f);
Adam(``lr``); a fixed number of epochs (no selection on test data). Checkpoints every ``checkpoint_every``
steps to ``checkpoint_dir`` (if set); ``fit`` resumes from a matching checkpoint there.

Scoring: map = Gaussian blur (``blur_sigma`` px) of the per-pixel L2 norm over RGB of I - R, (B, S, S);
image score = max of the map. The paper's final min-max normalisation over the test set is left out (it would
use test data, and it does not change any ranking metric).
"""
from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Optional

import torch
from pydantic import Field, field_validator

from detectors.backbones import create_feature_extractor
from detectors.base import Detector, DetectorConfig, ProgressCallback
from detectors.errors import DetectorError
from detectors.registry import register
from detectors.tsdn.model import TSDNNet, tsdn_losses
from detectors.tsdn.surf import SuperpixelCache, surf_batch
from detectors.image_ops import gaussian_blur
from detectors.model_io import check_state_shapes, reject_unknown_tensors
from detectors.train_images import StackedTrainImages
from detectors.training import (
    CheckpointStore,
    batch_indices,
    fingerprint,
    optimizer_to,
    prefetch,
    step_rng,
)


class TSDNConfig(DetectorConfig):
    """TSDN's configuration; defaults are the paper's where it gives them (352 px, N_s 400, S_s 50, Adam 7e-5,
    loss weights 1, 0.5, 1, 1, 5e-5). The paper's encoder is EfficientNet-B5 (``backbone: efficientnet_b5``
    with ``pretrained: hub`` or a weights file); the default is tf_efficientnet_lite0, whose ImageNet weights
    are available offline. Widths, epochs and batch size are not given by the paper."""

    backbone: str = Field("tf_efficientnet_lite0", description="timm encoder (5 levels, strides 2..32), fine-tuned")
    train_encoder: bool = Field(True, description="fine-tune the encoder (False: frozen, faster)")
    image_size: int = Field(352, ge=64, le=2048, description="input side S in pixels")
    channels: int = Field(256, ge=4, description="channels C of F_1/32 after the 1x1 reduction")
    decoder_widths: list[int] = Field(
        default_factory=lambda: [256, 128, 64, 32], min_length=4, max_length=4,
        description="widths of the 4 deconvolution blocks (strides 16, 8, 4, 2) of DCD_A and DCD_N",
    )
    fne_conv_channels: int = Field(64, ge=1, description="channels of the FNE convolution before flattening")
    fne_hidden: int = Field(512, ge=2, description="width of the FNE's MLP hidden layers")
    n_segments: int = Field(400, ge=2, description="N_s: SLIC superpixels per image")
    n_filled: int = Field(50, ge=1, description="S_s: superpixels filled with random colours")
    surf_probability: float = Field(1.0, ge=0, le=1, description="share of training images distorted by SURF")
    loss_weights: list[float] = Field(
        default_factory=lambda: [1.0, 0.5, 1.0, 1.0, 5e-5], min_length=5, max_length=5,
        description="lambda_r, lambda_s, lambda_g, lambda_m, lambda_f of eq. 3",
    )
    lr: float = Field(7e-5, gt=0, description="Adam learning rate")
    epochs: int = Field(100, ge=1, description="passes over the training images")
    batch_size: int = Field(8, ge=1)
    blur_sigma: float = Field(4.0, ge=0, description="Gaussian blur of the difference map, pixels")
    inference_batch_size: int = Field(8, ge=1, description="images per forward pass in predict")
    checkpoint_dir: Optional[str] = Field(None, description="folder for the resumable training checkpoint")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    normal_skip_levels: int = Field(
        4, ge=0, le=4, description="encoder skips fed to DCD_N, deepest first (paper: all 4; fewer = ablation)"
    )
    prefetch_workers: int = Field(2, ge=0, description="threads preparing SURF batches ahead (0: inline)")

    @field_validator("decoder_widths")
    @classmethod
    def _positive_widths(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError(f"widths must be >= 1, got {value}")
        return value

    @field_validator("loss_weights")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(v < 0 for v in value):
            raise ValueError(f"weights must be >= 0, got {value}")
        return value


@register
class TSDN(Detector):
    """TSDN (two-stream decoder with feature normality estimator) trained with superpixel random filling."""

    name: ClassVar[str] = "tsdn"
    config_class: ClassVar[type[DetectorConfig]] = TSDNConfig
    config: TSDNConfig
    #: Seconds on CPU: 64 px, frozen encoder, tiny widths, few superpixels, larger learning rate.
    smoke_config: ClassVar[dict[str, Any]] = {
        "train_encoder": False,
        "image_size": 64,
        "channels": 16,
        "decoder_widths": [16, 16, 16, 16],
        "fne_conv_channels": 4,
        "fne_hidden": 16,
        "n_segments": 24,
        "n_filled": 3,
        "lr": 2e-3,
        "epochs": 5,
        "batch_size": 6,
        "blur_sigma": 2.0,
        "device": "cpu",
    }

    def __init__(self, config: TSDNConfig) -> None:
        super().__init__(config)
        self.net: Optional[TSDNNet] = None

    # --------------------------------------------------------------------------------------- modules
    def _build(self, pretrained: str) -> TSDNNet:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            encoder = create_feature_extractor(cfg.backbone, [0, 1, 2, 3, 4], pretrained=pretrained)
            try:
                net = TSDNNet(encoder, cfg.image_size, cfg.channels, cfg.decoder_widths, cfg.fne_conv_channels, cfg.fne_hidden,
                              cfg.train_encoder, cfg.normal_skip_levels)
            except ValueError as exc:
                raise DetectorError(f"tsdn: backbone '{cfg.backbone}': {exc}") from None
        return net.to(self.device)

    # ------------------------------------------------------------------------------------------- fit
    def _fit(self, train: Any, progress: ProgressCallback) -> dict[str, Any]:
        """Train on good images for ``epochs``; resumes from ``checkpoint_dir`` when it holds this run's
        checkpoint. Returns ``{"loss": [per-step total], "steps", "resumed_from", "train_seconds", ...}``."""
        cfg = self.config
        t0 = time.perf_counter()
        images = StackedTrainImages(train, method=self.name, image_size=cfg.image_size)
        n = len(images)
        per_epoch = math.ceil(n / cfg.batch_size)
        total = cfg.epochs * per_epoch
        report = progress

        net = self._build(cfg.pretrained)
        optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=cfg.lr)
        scaler = self._grad_scaler()
        store = CheckpointStore(cfg.checkpoint_dir, "tsdn", fingerprint(cfg, images))
        history: list[float] = []
        start = 0
        saved = store.load()
        if saved is not None:
            net.load_state_dict(saved["model"])
            optimizer.load_state_dict(optimizer_to(saved["optimizer"], self.device))
            history = [float(v) for v in saved["history"]]
            start = int(saved["step"])
            report(start, total, f"resumed from {store.path} at step {start}")

        superpixels = SuperpixelCache(images.images, cfg.n_segments)
        if start < total:
            report(start, total, f"SLIC superpixels of {n} training images")
            superpixels.fill()

        def make_batch(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            idx = batch_indices(cfg.seed, step, n, cfg.batch_size)
            clean = images.images[idx]
            distorted, fill_mask = surf_batch(
                clean, cfg.n_segments, cfg.n_filled, step_rng(cfg.seed, step), cfg.surf_probability,
                labels=superpixels.labels(idx),
            )
            return clean, distorted, fill_mask

        net.train()
        last: dict[str, float] = {}
        for step, batch in prefetch(make_batch, range(start, total), cfg.prefetch_workers):
            clean, distorted, fill_mask = (t.to(self.device, non_blocking=True) for t in batch)
            with self._autocast():
                out = net(distorted)
            losses = tsdn_losses(out, clean, fill_mask, cfg.loss_weights)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
            last = {k: float(v.detach()) for k, v in losses.items()}
            if not math.isfinite(last["total"]):
                raise DetectorError(f"tsdn: training diverged at step {step + 1} (loss {last['total']}); lower lr")
            history.append(last["total"])
            done = step + 1
            if done % cfg.checkpoint_every == 0 or done == total:
                store.save(done, {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "history": history})
            report(done, total, f"epoch {step // per_epoch + 1}/{cfg.epochs} loss {last['total']:.4f}")
        net.eval()
        self.net = net
        stats: dict[str, Any] = {
            "loss": history,
            "final_losses": last,
            "steps": total,
            "resumed_from": start,
            "n_train": n,
            "train_seconds": time.perf_counter() - t0,
        }
        return stats

    # --------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> the clean reconstruction R (B, 3, S, S) float32 on the CPU."""
        return self.streams(images)[0]

    @torch.no_grad()
    def streams(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) in [0, 1] -> (DCD_N's reconstruction R (B, 3, S, S), DCD_A's mask M' (B, S, S) in
        [0, 1]), float32 on the CPU (checked and batched as :meth:`predict`)."""
        recon, mask = self._in_batches(images, self._streams, call="streams")
        return recon.cpu(), mask.cpu()

    def _streams(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, 3, S, S) on the device -> (R (b, 3, S, S), M' (b, S, S)) float32 on the device."""
        assert self.net is not None
        with self._autocast():
            out = self.net(images)
        return out["reconstruction"].float(), torch.sigmoid(out["mask_logits"].float())[:, 0]

    def error_maps(self, images: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw per-pixel L2 norm over RGB of I - R, its Gaussian blur = the score map), both (B, S, S), on
        the device of ``images`` and ``recon``."""
        error = torch.linalg.vector_norm(images.float() - recon, dim=1)
        return error, gaussian_blur(error, self.config.blur_sigma, truncate=3.0)  # TSDN: kernel radius 3 sigma

    @torch.no_grad()
    def _score_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, 3, S, S) float32 in [0, 1] on the device -> (scores (b,) = map max, maps (b, S, S)). Traceable."""
        _, maps = self.error_maps(images, self._streams(images)[0])
        return maps.flatten(1).amax(dim=1), maps

    # ----------------------------------------------------------------------------------------- state
    def _state_dict(self) -> dict[str, torch.Tensor]:
        """The network's tensors (encoder included: it is fine-tuned), prefixed ``net.``, on the CPU."""
        assert self.net is not None
        return {f"net.{k}": v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Rebuild the network from :meth:`_state_dict`'s output (every encoder tensor comes from it)."""
        net = self._build("none")  # every encoder tensor comes from the state
        part = check_state_shapes("net.", net, state, "tsdn")
        reject_unknown_tensors(state, ["net."], [], "tsdn")
        net.load_state_dict(part)
        net.eval()
        self.net = net
