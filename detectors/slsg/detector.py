"""SLSG (self-supervised learning with structural and logical anomaly simulation, graph reasoning) as a
:class:`~detectors.base.Detector`: both training stages, scoring, state, resumable checkpoints.

Stage 1, GPT-Net (``gpt_epochs`` x ceil(N / ``gpt_batch_size``) steps): masked inpainting of good images,
Adam (generator ``lr_generator``, discriminator ``lr_discriminator``), L_R = a1 LSGAN + a2 l1 + a3 aux l2.
Stage 2, SegNet (``seg_iterations`` steps): the pre-trained encoder (frozen unless ``train_encoder_seg``) + SG
block + decoder, each batch ``batch_normal`` good + ``batch_anomalous`` simulated images, SGD (lr, momentum,
weight decay, gradient norm clipped to ``seg_grad_clip``) with cosine warm restarts every ``restart_period``
steps, loss = 0.4 focal(gamma 4) + 0.6 l1 + 0.3 aux. Steps are numbered across both stages; checkpoints
every ``checkpoint_every`` steps.

Scoring: anomaly map = softmax probability of the anomalous class (B, S, S); image score = mean of the
``top_k_pixels`` (100) highest map values.
"""
from __future__ import annotations

import math
import time
from typing import Any, ClassVar, Literal, Optional

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from detectors.backbones import FeatureExtractor, create_feature_extractor
from detectors.base import Detector, DetectorConfig, ProgressCallback
from detectors.errors import DetectorError
from detectors.registry import register
from detectors.slsg.gptnet import GPTNet, PatchDiscriminator, generator_loss, inpainting_mask, lsgan_discriminator_loss
from detectors.slsg.segnet import SegNet, segnet_loss, top_k_mean
from detectors.slsg.simulation import SimulationSettings, foreground_mask, simulate_anomaly
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


class SLSGConfig(DetectorConfig):
    """SLSG's configuration; defaults are the paper's (256 px, 8x8 grid at 80 %, large masks 40-150 px, GPT-Net
    40 epochs batch 6 lr 1e-3 / 6e-4 weights 1, 0.8, 1; SegNet 3500 iterations, 4 + 4 images, SGD lr 0.04,
    focal gamma 4, weights 0.4, 0.6, 0.3; top-100 image score; top-K 9). The paper's encoder is ResNet-18
    (``backbone: resnet18`` with ``pretrained: hub`` or a weights file); the default is tf_efficientnet_lite0,
    whose ImageNet weights are available offline."""

    backbone: str = Field("tf_efficientnet_lite0", description="timm encoder with 5 levels (strides 2..32)")
    pretrained: str = Field("offline", description="initial encoder weights: offline | hub | none | file path")
    image_size: int = Field(256, ge=64, le=2048, description="input side S in pixels")
    decoder_widths: list[int] = Field(default_factory=lambda: [256, 128, 64, 32], min_length=4, max_length=4)
    # ---- GPT-Net
    gpt_epochs: int = Field(40, ge=0, description="pre-training epochs (0: keep the initial encoder weights)")
    gpt_batch_size: int = Field(6, ge=1)
    lr_generator: float = Field(1e-3, gt=0)
    lr_discriminator: float = Field(6e-4, gt=0)
    adam_betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas of GPT-Net and D-Net")
    gpt_loss_weights: list[float] = Field(default_factory=lambda: [1.0, 0.8, 1.0], min_length=3, max_length=3,
                                          description="alpha_1 (LSGAN), alpha_2 (l1), alpha_3 (aux l2)")
    grid_size: int = Field(8, ge=1, description="the grid mask cuts the image into grid_size x grid_size cells")
    grid_ratio: float = Field(0.8, ge=0, le=1, description="share of grid cells masked")
    large_mask_px: tuple[float, float] = Field((40.0, 150.0), description="side range of large masks at 256 px")
    large_mask_count: tuple[int, int] = Field((1, 2), description="number of large masks per image (inclusive)")
    discriminator_width: int = Field(64, ge=1)
    # ---- SegNet
    seg_iterations: int = Field(3500, ge=1)
    batch_normal: int = Field(4, ge=0)
    batch_anomalous: int = Field(4, ge=1)
    seg_lr: float = Field(0.04, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-5, ge=0)
    restart_period: int = Field(500, ge=1, description="cosine warm-restart period, iterations")
    seg_grad_clip: float = Field(1.0, ge=0, description="clip SegNet's gradient norm to this (0: off); not in the paper")
    train_encoder_seg: bool = Field(False, description="fine-tune the encoder in SegNet (public code: frozen)")
    focal_gamma: float = Field(4.0, ge=0)
    seg_loss_weights: list[float] = Field(default_factory=lambda: [0.4, 0.6, 0.3], min_length=3, max_length=3,
                                          description="alpha_4 (focal), alpha_5 (l1), alpha_6 (aux)")
    sg_top_k: int = Field(9, ge=1)
    sg_reduction: int = Field(8, ge=1, description="z: f and g map C to C / z channels")
    sg_position_dim: int = Field(64, ge=4, description="C_p of the sine-cosine position code (multiple of 4)")
    sg_subtract_position: bool = True
    # ---- anomaly simulation
    logical_probability: float = Field(0.5, ge=0, le=1)
    texture_probability: float = Field(0.5, ge=0, le=1, description="structural: texture vs shuffled self-patches")
    transparency: tuple[float, float] = Field((0.2, 1.0), description="range of delta in eq. 1")
    foreground: Literal["auto", "none"] = Field("auto", description="auto: restrict simulated anomalies to the foreground")
    # ---- scoring and running
    top_k_pixels: int = Field(100, ge=1, description="image score = mean of the top-k map values")
    inference_batch_size: int = Field(8, ge=1, description="images per forward pass in predict")
    checkpoint_dir: Optional[str] = Field(None, description="folder for the resumable training checkpoint")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    prefetch_workers: int = Field(2, ge=0, description="threads simulating anomalies ahead of training (0: inline)")

    @field_validator("sg_position_dim")
    @classmethod
    def _multiple_of_four(cls, value: int) -> int:
        if value % 4:
            raise ValueError(f"must be a multiple of 4, got {value}")
        return value

    @field_validator("decoder_widths")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError(f"widths must be >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> "SLSGConfig":
        for key in ("large_mask_px", "large_mask_count", "transparency"):
            lo, hi = getattr(self, key)
            if lo < 0 or hi < lo:
                raise ValueError(f"{key} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")
        if self.transparency[1] > 1:
            raise ValueError(f"transparency must lie in [0, 1], got {self.transparency}")
        return self


class _Others:
    """The normal images (H, W, 3) except one: the pool of logical-anomaly sources."""

    def __init__(self, pool: np.ndarray, exclude: int) -> None:
        self.pool, self.exclude = pool, exclude

    def __len__(self) -> int:
        return len(self.pool) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.pool[i if i < self.exclude else i + 1]


@register
class SLSG(Detector):
    """SLSG: GPT-Net masked-inpainting pre-training, then SegNet on simulated structural/logical anomalies."""

    name: ClassVar[str] = "slsg"
    config_class: ClassVar[type[DetectorConfig]] = SLSGConfig
    config: SLSGConfig
    #: Seconds on CPU: 64 px, tiny decoder, one pre-training step, a few SegNet steps.
    smoke_config: ClassVar[dict[str, Any]] = {
        "image_size": 64,
        "decoder_widths": [8, 8, 8, 8],
        "discriminator_width": 4,
        "gpt_epochs": 1,
        "gpt_batch_size": 6,
        "seg_iterations": 12,
        "batch_normal": 2,
        "batch_anomalous": 4,
        "restart_period": 12,
        "logical_probability": 0.2,
        "transparency": (0.7, 1.0),
        "sg_position_dim": 16,
        "top_k_pixels": 100,
        "foreground": "none",
        "device": "cpu",
    }

    def __init__(self, config: SLSGConfig) -> None:
        super().__init__(config)
        self.net: Optional[SegNet] = None

    # ------------------------------------------------------------------------------------- modules
    def _encoder(self, pretrained: str) -> FeatureExtractor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            return create_feature_extractor(self.config.backbone, [0, 1, 2, 3, 4], pretrained=pretrained)

    def _segnet(self, encoder: FeatureExtractor) -> SegNet:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            try:
                net = SegNet(encoder, cfg.decoder_widths, cfg.train_encoder_seg, cfg.sg_top_k, cfg.sg_reduction,
                             cfg.sg_position_dim, cfg.sg_subtract_position)
            except ValueError as exc:
                raise DetectorError(f"slsg: backbone '{cfg.backbone}': {exc}") from None
        return net.to(self.device)

    def _gpt(self, encoder: FeatureExtractor) -> tuple[GPTNet, PatchDiscriminator]:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 2)
            try:
                gpt = GPTNet(encoder, cfg.decoder_widths)
            except ValueError as exc:
                raise DetectorError(f"slsg: backbone '{cfg.backbone}': {exc}") from None
            disc = PatchDiscriminator(cfg.discriminator_width)
        return gpt.to(self.device), disc.to(self.device)

    def _seg_lr(self, t: int) -> float:
        """SGD learning rate at SegNet step ``t``: cosine annealing to 0 with warm restarts."""
        period = self.config.restart_period
        return 0.5 * self.config.seg_lr * (1 + math.cos(math.pi * (t % period) / period))

    # ----------------------------------------------------------------------------------------- fit
    def _fit(self, train: Any, progress: ProgressCallback) -> dict[str, Any]:
        """Both stages on good images; resumes from ``checkpoint_dir`` when it holds this run's checkpoint.
        Returns ``{"gpt_loss": [...], "seg_loss": [...], "steps", "resumed_from", "train_seconds", ...}``."""
        cfg = self.config
        t0 = time.perf_counter()
        images = StackedTrainImages(train, method=self.name, image_size=cfg.image_size)
        n = len(images)
        gpt_steps = cfg.gpt_epochs * math.ceil(n / cfg.gpt_batch_size)
        total = gpt_steps + cfg.seg_iterations
        report = progress
        store = CheckpointStore(cfg.checkpoint_dir, "slsg", fingerprint(cfg, images))
        saved = store.load()
        start = int(saved["step"]) if saved is not None else 0
        history: dict[str, list[float]] = {"gpt_loss": [], "disc_loss": [], "seg_loss": []}
        if saved is not None:
            history = {k: [float(v) for v in saved["history"].get(k, [])] for k in history}
            report(start, total, f"resumed from {store.path} at step {start}")

        # ---------------- stage 1: GPT-Net
        encoder: Optional[FeatureExtractor] = None
        if start < gpt_steps:
            encoder = self._encoder(cfg.pretrained)
            gpt, disc = self._gpt(encoder)
            opt_g = torch.optim.Adam([p for p in gpt.parameters() if p.requires_grad], lr=cfg.lr_generator, betas=cfg.adam_betas)
            opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_discriminator, betas=cfg.adam_betas)
            scaler = self._grad_scaler()
            if saved is not None:
                gpt.load_state_dict(saved["gpt"])
                disc.load_state_dict(saved["disc"])
                opt_g.load_state_dict(optimizer_to(saved["opt_g"], self.device))
                opt_d.load_state_dict(optimizer_to(saved["opt_d"], self.device))
            gpt.train()
            disc.train()
            for step in range(start, gpt_steps):
                rng = step_rng(cfg.seed, step)
                idx = batch_indices(cfg.seed, step, n, cfg.gpt_batch_size)
                clean = images.images[idx]
                masks = np.stack([
                    inpainting_mask(cfg.image_size, cfg.grid_size, cfg.grid_ratio, cfg.large_mask_px,
                                    cfg.large_mask_count, rng) for _ in idx])
                keep = torch.from_numpy(~masks).unsqueeze(1).float()
                clean, masked = clean.to(self.device), (clean * keep).to(self.device)
                with self._autocast():
                    recon, aux = gpt(masked)
                # discriminator
                with self._autocast():
                    d_loss = lsgan_discriminator_loss(disc(clean), disc(recon.detach()))
                opt_d.zero_grad(set_to_none=True)
                scaler.scale(d_loss).backward()
                scaler.step(opt_d)
                # generator
                with self._autocast():
                    judgement = disc(recon)
                g_parts = generator_loss(judgement, recon, aux, clean, cfg.gpt_loss_weights)
                opt_g.zero_grad(set_to_none=True)
                scaler.scale(g_parts["total"]).backward()
                scaler.step(opt_g)
                scaler.update()
                g_loss, dl = float(g_parts["total"].detach()), float(d_loss.detach())
                if not (math.isfinite(g_loss) and math.isfinite(dl)):
                    raise DetectorError(f"slsg: GPT-Net training diverged at step {step + 1}; lower the learning rates")
                history["gpt_loss"].append(g_loss)
                history["disc_loss"].append(dl)
                done = step + 1
                if done % cfg.checkpoint_every == 0 or done == gpt_steps:
                    store.save(done, {"gpt": gpt.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                                      "opt_d": opt_d.state_dict(), "history": history})
                report(done, total, f"GPT-Net step {done}/{gpt_steps} loss G {g_loss:.4f} D {dl:.4f}")
            del gpt, disc, opt_g, opt_d

        # ---------------- stage 2: SegNet
        if start > gpt_steps:
            net = self._segnet(self._encoder("none"))
            net.load_state_dict(saved["seg"])
        else:
            if encoder is None and saved is not None and start == gpt_steps > 0:
                # resumed exactly at the end of pre-training: SegNet starts from the GPT-trained encoder
                gpt, _ = self._gpt(self._encoder("none"))
                gpt.load_state_dict(saved["gpt"])
                encoder = gpt.encoder
                del gpt
            if encoder is None:  # no pre-training configured
                encoder = self._encoder(cfg.pretrained)
            net = self._segnet(encoder)
        opt_s = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=cfg.seg_lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        if start > gpt_steps:
            opt_s.load_state_dict(optimizer_to(saved["opt_s"], self.device))
        scaler = self._grad_scaler()
        settings = SimulationSettings(
            logical_probability=cfg.logical_probability, texture_probability=cfg.texture_probability,
            transparency=tuple(cfg.transparency), restrict_to_foreground=cfg.foreground == "auto",
        )
        pool = images.images.permute(0, 2, 3, 1).numpy()  # (N, S, S, 3) float32
        foregrounds = [foreground_mask(image) for image in pool] if settings.restrict_to_foreground else None
        net.train()
        net.encoder.eval()

        def make_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            """Step ``step``'s SegNet batch on the CPU: x (B, 3, S, S) float, y (B, S, S) bool."""
            rng = step_rng(cfg.seed, step, stream=1)
            normal_idx = rng.choice(n, size=cfg.batch_normal, replace=n < cfg.batch_normal)
            source_idx = rng.choice(n, size=cfg.batch_anomalous, replace=n < cfg.batch_anomalous)
            batch, targets = [], []
            for i in normal_idx:
                batch.append(pool[i])
                targets.append(np.zeros(pool.shape[1:3], dtype=bool))
            for i in source_idx:
                image_a, mask, _ = simulate_anomaly(pool[i], _Others(pool, int(i)), rng, settings,
                                                  None if foregrounds is None else foregrounds[i])
                batch.append(image_a)
                targets.append(mask)
            return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(np.stack(targets))

        for step, (x, y) in prefetch(make_batch, range(max(start, gpt_steps), total), cfg.prefetch_workers):
            t = step - gpt_steps
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            for group in opt_s.param_groups:
                group["lr"] = self._seg_lr(t)
            with self._autocast():
                logits, aux = net(x)
            parts = segnet_loss(logits, aux, y, cfg.focal_gamma, cfg.seg_loss_weights)
            opt_s.zero_grad(set_to_none=True)
            scaler.scale(parts["total"]).backward()
            if cfg.seg_grad_clip > 0:
                scaler.unscale_(opt_s)
                torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], cfg.seg_grad_clip)
            scaler.step(opt_s)
            scaler.update()
            loss = float(parts["total"].detach())
            if not math.isfinite(loss):
                raise DetectorError(f"slsg: SegNet training diverged at step {step + 1}; lower seg_lr")
            history["seg_loss"].append(loss)
            done = step + 1
            if done % cfg.checkpoint_every == 0 or done == total:
                store.save(done, {"seg": net.state_dict(), "opt_s": opt_s.state_dict(), "history": history})
            report(done, total, f"SegNet step {t + 1}/{cfg.seg_iterations} loss {loss:.4f}")
        net.eval()
        self.net = net
        stats: dict[str, Any] = {
            **history,
            "steps": total,
            "gpt_steps": gpt_steps,
            "resumed_from": start,
            "n_train": n,
            "train_seconds": time.perf_counter() - t0,
        }
        return stats

    # ------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def _score_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, 3, S, S) float32 in [0, 1] on the device -> (scores (b,) = mean of the ``top_k_pixels``
        highest map values, maps (b, S, S) = P(anomalous) in [0, 1]). Traceable."""
        assert self.net is not None
        with self._autocast():
            logits, _ = self.net(images)
        anomaly = torch.softmax(logits.float(), dim=1)[:, 1]
        return top_k_mean(anomaly, self.config.top_k_pixels), anomaly

    # --------------------------------------------------------------------------------------- state
    def _state_dict(self) -> dict[str, torch.Tensor]:
        """SegNet's tensors (its encoder included), prefixed ``seg.``, on the CPU."""
        assert self.net is not None
        return {f"seg.{k}": v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Rebuild SegNet from :meth:`_state_dict`'s output (every encoder tensor comes from it)."""
        net = self._segnet(self._encoder("none"))  # every encoder tensor comes from the state
        part = check_state_shapes("seg.", net, state, "slsg")
        reject_unknown_tensors(state, ["seg."], [], "slsg")
        net.load_state_dict(part)
        net.eval()
        self.net = net
