"""EfficientAD (Batzner, Heckler and Koenig, WACV 2024) as a :class:`~detectors.base.Detector`.

Pipeline (B images of S x S px, s = S/4 - 8 the PDN grid, C = ``out_channels`` = 384):

    teacher (frozen; :mod:`detectors.efficientad.teacher`) -> T (B, C, s, s), standardised per channel with
        the training images' mean and std
    student: a PDN with 2C outputs -> S_st = the first C (regress T), S_ae = the last C (regress the AE)
    autoencoder (:mod:`detectors.efficientad.autoencoder`) -> A (B, C, s, s), reconstructs T from the image
    fit (``iterations`` steps of ``batch_size`` images, Adam ``lr`` / ``weight_decay``, lr / 10 for the last
        ``lr_drop_fraction``): loss = hard feature loss (T - S_st)^2 above its ``hard_quantile``
        [+ penalty: mean S_st^2 on a ``penalty_images`` image] + mean (T' - A)^2 + mean (A - S_ae)^2, where
        T', A and S_ae are computed on the colour-augmented image (the AE's input augmentation)
    maps: local = channel mean (T - S_st)^2, global = channel mean (A - S_ae)^2, each mapped linearly so its
        ``map_quantiles`` (0.9, 0.995) on the validation images go to 0 and 0.1, averaged, padded to the S/4
        grid by repeating the edge cells and bilinearly upsampled to S x S; image score = max of the map

Deviations from the paper, all deliberate and offline-forced or CPU-forced:

- Teacher: no ImageNet and no WideResNet-101 weights here. ``teacher`` chooses, without ``teacher_weights``:
  ``backbone`` (the class default, as models saved before the distilled teacher existed): the frozen offline
  backbone's (tf_efficientnet_lite0) layer-2 + layer-3 aggregated patch features resampled to the PDN grid
  (:class:`~detectors.efficientad.teacher.BackboneTeacher`); ``distilled``: the paper's recipe with Lite0 in
  place of WideResNet-101 and the training images (+ ``penalty_images``) in place of ImageNet: a PDN distilled
  at fit time from those features (:mod:`detectors.efficientad.distillation`, ``distill_*`` settings), then
  frozen; it is saved with the model (``teacher.*``) and its distillation is part of the resumable run.
  With ``teacher_weights`` (a PDN state dict in the public format, e.g. the public reproductions'
  ``teacher_small.pth``) the paper's own PDN teacher is used and saved with the model.
- Penalty images: with ``penalty_images`` (a folder; the paper uses ImageNet) each step adds the penalty term
  on one of them (resized to S x S; the paper's random greyscale is left out). Without it the penalty term is
  dropped: the student is then only kept from generalising by the hard feature loss.
- Validation images for the map quantiles: ``validation_fraction`` of the TRAINING images (drawn from
  ``seed``), held out of training (as the paper's 10 %); with a single training image that image itself.
- Map border: the paper zero-pads the s x s map to the S/4 grid (4 cells a side at S = 256). After the
  quantile normalisation 0 is the validation images' 0.9-quantile level, so the zero border made 0 the floor
  of every image score: a view whose normalised map was negative everywhere scored exactly 0, tied with
  every other such view, and the border looked hotter than a good interior (measured on the simulated cell:
  a defective view at exactly 0 sent the zero-miss threshold below every good view). Here the border repeats
  its nearest cells (``replicate``); the interior is unchanged.
- Class defaults are the paper's (70,000 iterations, batch 1); configs/detectors/efficientad.yaml holds the
  CPU recipe (far fewer iterations).

Resumable training: checkpoints every ``checkpoint_every`` steps to ``checkpoint_dir`` with
:mod:`detectors.training` (as TSDN and SLSG); every random choice (batch order, augmentation, penalty image,
dropout) is a function of ``seed`` and the step, so a resumed run gives the same model.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from detectors.base import Detector, DetectorConfig, ProgressCallback
from detectors.efficientad.autoencoder import Autoencoder
from detectors.efficientad.distillation import distil_pdn_teacher
from detectors.efficientad.losses import augment_colour, hard_feature_loss, image_map, normalise_map, penalty_loss
from detectors.efficientad.pdn import PDN, public_pdn_state
from detectors.backbones import imagenet_normalise
from detectors.efficientad.teacher import BackboneTeacher, PDNTeacher
from detectors.errors import DetectorError, ImageSetError
from detectors.model_io import check_loose_tensors, check_state_shapes, reject_unknown_tensors
from detectors.registry import register
from detectors.train_images import StackedTrainImages
from detectors.training import CheckpointStore, batch_indices, fingerprint, optimizer_to, step_rng

_LOOSE = ("teacher_mean", "teacher_std", "quantiles")


class EfficientADConfig(DetectorConfig):
    """EfficientAD's configuration; defaults are the paper's (EfficientAD-S: small PDN, 384 channels, 70,000
    iterations of batch 1, Adam 1e-4 / weight decay 1e-5, lr / 10 for the last 5 %, hard-loss quantile 0.999,
    map quantiles 0.9 / 0.995, 256 px) except the teacher (see the module doc)."""

    model_size: Literal["small", "medium"] = Field("small", description="PDN variant of student (and PDN teacher)")
    out_channels: int = Field(384, ge=1, description="teacher channels C; the student has 2C")
    teacher: Literal["backbone", "distilled"] = Field(
        "backbone", description="without teacher_weights: the frozen backbone's features, or a PDN distilled from "
        "them on the training images at fit time (the paper's teacher recipe)"
    )
    teacher_weights: Optional[str] = Field(
        None, description="PDN teacher state dict in the public format (conv1.weight ..); none: see teacher"
    )
    teacher_layers: list[int] = Field(default_factory=lambda: [2, 3], min_length=1,
                                      description="timm levels of the backbone teacher")
    distill_steps: int = Field(60_000, ge=1, description="teacher: distilled: distillation steps (the paper's "
                               "pretraining as reported: 60,000; unverified here)")
    distill_batch: int = Field(16, ge=1, description="teacher: distilled: images per distillation step "
                               "(as reported for the paper: 16)")
    distill_crop: int = Field(256, ge=36, description="teacher: distilled: px side of the aligned window trained per image")
    distill_lr: float = Field(1e-4, gt=0, description="teacher: distilled: Adam learning rate (as the student's: 1e-4)")
    iterations: int = Field(70_000, ge=1, description="training steps")
    batch_size: int = Field(1, ge=1, description="training images per step")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate")
    weight_decay: float = Field(1e-5, ge=0, description="Adam weight decay")
    lr_drop_fraction: float = Field(0.05, ge=0, lt=1, description="lr / 10 for this last share of the steps")
    hard_quantile: float = Field(0.999, ge=0, lt=1, description="hard feature loss: differences above this quantile")
    penalty_images: Optional[str] = Field(None, description="folder of penalty images (paper: ImageNet); none: no penalty")
    augment_strength: float = Field(0.2, ge=0, lt=1, description="AE input: brightness/contrast/saturation factor 1 +- this")
    validation_fraction: float = Field(0.1, ge=0, lt=1, description="training images held out for the map quantiles")
    map_quantiles: tuple[float, float] = Field((0.9, 0.995), description="validation quantiles mapped to 0 and 0.1")
    checkpoint_dir: Optional[str] = Field(None, description="folder for the resumable training checkpoint")
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")
    cpu_bf16_training: bool = Field(
        False, description="on a CPU: bf16 autocast for the student/autoencoder training steps (teacher targets, "
        "weights, optimiser and predict stay float32); CUDA follows mixed_precision"
    )

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32 or value < 64:
            raise ValueError(f"must be a multiple of 32 and >= 64 (PDN and autoencoder grids), got {value}")
        return value

    @model_validator(mode="after")
    def _quantiles(self) -> "EfficientADConfig":
        lo, hi = self.map_quantiles
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"map_quantiles must be (low, high) with 0 <= low < high <= 1, got {(lo, hi)}")
        if self.teacher == "distilled" and self.teacher_weights is not None:
            raise ValueError("teacher: distilled and teacher_weights exclude each other (a file IS the teacher)")
        if self.teacher == "distilled" and (self.distill_crop % 4 or self.distill_crop > self.image_size):
            raise ValueError(f"distill_crop must be a multiple of 4 and <= image_size {self.image_size}, "
                             f"got {self.distill_crop}")
        return self

    @property
    def pdn_teacher(self) -> bool:
        """True when the teacher is a PDN (from ``teacher_weights`` or distilled), saved with the model."""
        return self.teacher_weights is not None or self.teacher == "distilled"


def split_validation(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training indices, validation indices) of ``n`` training images: round(fraction * n) (at least 1 when
    fraction > 0) drawn from ``seed`` for validation; with n = 1 or fraction = 0 every image is in both."""
    n_val = 0 if fraction <= 0 or n < 2 else min(n - 1, max(1, round(fraction * n)))
    if n_val == 0:
        return list(range(n)), list(range(n))
    val = sorted(np.random.default_rng([int(seed), 7]).choice(n, size=n_val, replace=False).tolist())
    return [i for i in range(n) if i not in set(val)], val


def load_penalty_images(folder: str | Path, image_size: int) -> torch.Tensor:
    """Every image file of ``folder`` (sorted), resized to S x S -> (P, 3, S, S) float32 in [0, 1]."""
    from detectors.imagesets import IMAGE_SUFFIXES, read_image_file, to_image_tensor
    from detectors.input_prep import resize_for_model

    folder = Path(folder)
    if not folder.is_dir():
        raise ImageSetError(f"efficientad: penalty_images folder {folder} not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageSetError(f"efficientad: penalty_images folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return torch.stack([
        resize_for_model(to_image_tensor(read_image_file(p)[0], str(p)), (image_size, image_size)) for p in files
    ])


@register
class EfficientAD(Detector):
    """EfficientAD: student-teacher + autoencoder discrepancies of patch descriptors, quantile-normalised."""

    name: ClassVar[str] = "efficientad"
    config_class: ClassVar[type[DetectorConfig]] = EfficientADConfig
    config: EfficientADConfig
    #: Seconds on CPU: 64 px (8 x 8 PDN grid), 10 steps of 1 image, a larger learning rate.
    smoke_config: ClassVar[dict[str, Any]] = {
        "image_size": 64,
        "iterations": 10,
        "batch_size": 1,
        "lr": 1e-3,
        "validation_fraction": 0.2,
        "device": "cpu",
    }

    def __init__(self, config: EfficientADConfig) -> None:
        super().__init__(config)
        self.teacher: Optional[nn.Module] = None
        self.student: Optional[PDN] = None
        self.autoencoder: Optional[Autoencoder] = None
        self.teacher_mean: Optional[torch.Tensor] = None  # (1, C, 1, 1)
        self.teacher_std: Optional[torch.Tensor] = None  # (1, C, 1, 1)
        self.quantiles: Optional[torch.Tensor] = None  # (4,): local low, high, global low, high

    # ------------------------------------------------------------------------------------- modules
    def _backbone_teacher(self) -> BackboneTeacher:
        cfg = self.config
        return BackboneTeacher(self._frozen_backbone(cfg.teacher_layers), cfg.image_size, cfg.out_channels).to(self.device)

    def _file_teacher(self) -> PDNTeacher:
        cfg = self.config
        pdn = PDN(cfg.model_size, cfg.out_channels)
        pdn.load_state_dict(public_pdn_state(cfg.teacher_weights, cfg.model_size, cfg.out_channels))
        return PDNTeacher(pdn).to(self.device)

    def _distilled_teacher(self, images: torch.Tensor, store: CheckpointStore, saved: Optional[dict[str, Any]],
                           progress: ProgressCallback) -> tuple[PDNTeacher, list[float]]:
        """Distil a PDN from the backbone teacher's standardised features on ``images`` (N, 3, S, S)
        (:mod:`detectors.efficientad.distillation`), or take it from ``saved`` (a checkpoint of this run).
        Checkpoints of this phase carry ``phase: distill``; progress counts it before the student's steps."""
        cfg = self.config
        if saved is not None and saved.get("phase") == "student":
            pdn = PDN(cfg.model_size, cfg.out_channels)
            pdn.load_state_dict(saved["teacher_pdn"])
            return PDNTeacher(pdn).to(self.device), [float(v) for v in saved["distill_loss"]]
        backbone = self._backbone_teacher()
        b_mean, b_std = self._teacher_statistics(backbone, images)

        def targets(x: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return (backbone(x).float() - b_mean) / b_std

        total = cfg.distill_steps + cfg.iterations
        resume = saved if saved is not None and saved.get("phase") == "distill" else None
        if resume is not None:
            progress(int(saved["step"]), total, f"resumed the teacher distillation from {store.path} at step {saved['step']}")
        pdn, history = distil_pdn_teacher(
            targets, images, size=cfg.model_size, out_channels=cfg.out_channels, steps=cfg.distill_steps,
            batch=cfg.distill_batch, crop=cfg.distill_crop, lr=cfg.distill_lr, weight_decay=cfg.weight_decay,
            seed=cfg.seed, device=self.device, autocast=self._train_autocast, resume=resume,
            save=lambda step, state: store.save(step, {"phase": "distill", **state}),
            checkpoint_every=cfg.checkpoint_every, progress=lambda done, text: progress(done, total, text),
        )
        return PDNTeacher(pdn), history

    def _build_trainable(self) -> tuple[PDN, Autoencoder]:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            student = PDN(cfg.model_size, 2 * cfg.out_channels)
            autoencoder = Autoencoder(cfg.image_size, cfg.out_channels)
        return student.to(self.device), autoencoder.to(self.device)

    def _train_autocast(self) -> contextlib.AbstractContextManager:
        """The student/autoencoder forward of a training step: :meth:`_autocast` on CUDA; on a CPU bf16
        autocast when ``cpu_bf16_training`` (fast with AMX / AVX512-BF16), else float32."""
        if self.device.type == "cpu" and self.config.cpu_bf16_training:
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return self._autocast()

    @torch.no_grad()
    def _teacher_statistics(self, teacher: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std (1, C, 1, 1) of the teacher's outputs over ``images`` (the paper's: mean of
        the images' channel means; std from the mean squared deviation)."""
        size = self.config.inference_batch_size
        outs = []
        for start in range(0, images.shape[0], size):
            with self._autocast():
                outs.append(teacher(images[start : start + size].to(self.device)).float())
        mean = torch.cat([o.mean(dim=(2, 3)) for o in outs]).mean(dim=0).view(1, -1, 1, 1)
        var = torch.cat([((o - mean) ** 2).mean(dim=(2, 3)) for o in outs]).mean(dim=0).view(1, -1, 1, 1)
        std = var.sqrt()
        if not (bool(torch.isfinite(mean).all()) and bool(torch.isfinite(std).all())):
            raise DetectorError(f"{self.name}: non-finite teacher outputs (NaN or inf) on the training images")
        return mean, std.clamp_min(1e-6)

    # ----------------------------------------------------------------------------------------- fit
    def _fit(self, train: Any, progress: ProgressCallback) -> dict[str, Any]:
        """Train student and autoencoder on good images; resumes from ``checkpoint_dir`` when it holds this
        run's checkpoint. Returns ``{"loss": [...], "loss_st", "loss_ae", "loss_stae", "quantiles", ...}``."""
        cfg = self.config
        t0 = time.perf_counter()
        images = StackedTrainImages(train, method=self.name, image_size=cfg.image_size)
        train_idx, val_idx = split_validation(len(images), cfg.validation_fraction, cfg.seed)
        n = len(train_idx)
        total = cfg.iterations
        penalty = load_penalty_images(cfg.penalty_images, cfg.image_size) if cfg.penalty_images else None

        file_teacher = self._file_teacher() if cfg.teacher_weights is not None else None  # a bad file: fail first
        store = CheckpointStore(cfg.checkpoint_dir, self.name, fingerprint(cfg, images, self._fingerprint_extra(val_idx, penalty)))
        saved = store.load()
        distill_loss: list[float] = []
        offset = 0  # progress steps before the student's (the teacher distillation's)
        if file_teacher is not None:
            teacher: nn.Module = file_teacher
        elif cfg.teacher == "distilled":
            pool = images.images[train_idx] if penalty is None else torch.cat([images.images[train_idx], penalty])
            teacher, distill_loss = self._distilled_teacher(pool, store, saved, progress)
            offset = cfg.distill_steps
            if saved is not None and saved.get("phase") == "distill":
                saved = None  # consumed: the student starts from step 0
        else:
            teacher = self._backbone_teacher()
        t_mean, t_std = self._teacher_statistics(teacher, images.images[train_idx])
        student, autoencoder = self._build_trainable()
        params = list(student.parameters()) + list(autoencoder.parameters())
        optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        drop_at = int(round((1 - cfg.lr_drop_fraction) * total))
        scaler = self._grad_scaler()
        history: dict[str, list[float]] = {"loss": [], "loss_st": [], "loss_ae": [], "loss_stae": []}
        start = 0
        if saved is not None:
            student.load_state_dict(saved["student"])
            autoencoder.load_state_dict(saved["autoencoder"])
            optimizer.load_state_dict(optimizer_to(saved["optimizer"], self.device))
            history = {k: [float(v) for v in saved["history"][k]] for k in history}
            start = int(saved["step"])
            progress(offset + start, offset + total, f"resumed from {store.path} at step {start}")
        # a PDN teacher distilled here travels in every student checkpoint (the distillation is not redone)
        teacher_state = ({"teacher_pdn": teacher.pdn.state_dict(), "distill_loss": distill_loss}
                         if cfg.teacher == "distilled" else {})

        def standardised(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), self._autocast():
                return (teacher(x).float() - t_mean) / t_std

        c = cfg.out_channels
        student.train()
        autoencoder.train()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for step in range(start, total):
                torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout: a function of seed and step
                rng = step_rng(cfg.seed, step)
                idx = [train_idx[i] for i in batch_indices(cfg.seed, step, n, cfg.batch_size)]
                image = images.images[idx].to(self.device)
                image_ae = augment_colour(image, rng, cfg.augment_strength)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * (0.1 if step >= drop_at else 1.0)
                target_st, target_ae = standardised(image), standardised(image_ae)
                with self._train_autocast():
                    out_st = student(imagenet_normalise(image))[:, :c].float()
                    loss_st = hard_feature_loss(target_st, out_st, cfg.hard_quantile)
                    if penalty is not None:
                        pick = penalty[int(rng.integers(penalty.shape[0]))][None].to(self.device)
                        loss_st = loss_st + penalty_loss(student(imagenet_normalise(pick))[:, :c].float())
                    x_ae = imagenet_normalise(image_ae)
                    out_ae = autoencoder(x_ae).float()
                    out_stae = student(x_ae)[:, c:].float()
                loss_ae = ((target_ae - out_ae) ** 2).mean()
                loss_stae = ((out_ae - out_stae) ** 2).mean()
                loss = loss_st + loss_ae + loss_stae
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                values = [float(v.detach()) for v in (loss, loss_st, loss_ae, loss_stae)]
                if not all(math.isfinite(v) for v in values):
                    raise DetectorError(f"{self.name}: training diverged at step {step + 1} (loss {values[0]}); lower lr")
                for key, value in zip(history, values):
                    history[key].append(value)
                done = step + 1
                if done % cfg.checkpoint_every == 0 or done == total:
                    store.save(done, {"phase": "student", "student": student.state_dict(),
                                      "autoencoder": autoencoder.state_dict(), "optimizer": optimizer.state_dict(),
                                      "history": history, **teacher_state})
                progress(offset + done, offset + total, f"step {done}/{total} loss {values[0]:.4f}")
        student.eval()
        autoencoder.eval()
        self.teacher, self.student, self.autoencoder = teacher, student, autoencoder
        self.teacher_mean, self.teacher_std = t_mean, t_std
        self.quantiles = self._validation_quantiles(images.images[val_idx])
        return {
            **history,
            "steps": total,
            "resumed_from": start,
            "n_train": n,
            "n_validation": len(val_idx),
            "validation_held_out": len(val_idx) < len(images),
            "penalty_images": 0 if penalty is None else int(penalty.shape[0]),
            "teacher": "pdn" if cfg.teacher_weights else cfg.teacher,
            **({"distill_loss": distill_loss} if distill_loss else {}),
            "quantiles": [float(v) for v in self.quantiles.cpu()],
            "train_seconds": time.perf_counter() - t0,
        }

    def _fingerprint_extra(self, val_idx: list[int], penalty: Optional[torch.Tensor]) -> dict[str, Any]:
        """What besides the config and the images makes a checkpoint this run's: the validation split, the
        teacher file's sha256, the penalty images' count and sum."""
        extra: dict[str, Any] = {"validation": val_idx}
        if self.config.teacher_weights is not None:
            from detectors.model_dir import file_sha256

            extra["teacher.sha256"] = file_sha256(self.config.teacher_weights)
        if penalty is not None:
            extra["penalty.n"] = int(penalty.shape[0])
            extra["penalty.sum"] = round(float(penalty.double().sum()), 4)
        return extra

    @torch.no_grad()
    def _validation_quantiles(self, images: torch.Tensor) -> torch.Tensor:
        """(4,) = the ``map_quantiles`` of the local and of the global raw maps over ``images`` (N, 3, S, S)."""
        lo, hi = self.config.map_quantiles
        size = self.config.inference_batch_size
        local, glob = [], []
        for start in range(0, images.shape[0], size):
            a, b = self._raw_maps(images[start : start + size].to(self.device))
            local.append(a.flatten().double().cpu())
            glob.append(b.flatten().double().cpu())
        out = []
        for maps in (torch.cat(local).numpy(), torch.cat(glob).numpy()):
            q = np.quantile(maps, [lo, hi])
            if not np.isfinite(q).all() or q[1] <= q[0]:
                raise DetectorError(
                    f"{self.name}: validation maps give quantiles {q.tolist()} (non-finite or not increasing); "
                    "the maps cannot be normalised"
                )
            out.extend(q.tolist())
        return torch.tensor(out, dtype=torch.float32, device=self.device)

    # ------------------------------------------------------------------------------------- predict
    def _raw_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, 3, S, S) in [0, 1] on the device -> (local map, global map), each (b, s, s) float32."""
        assert self.teacher is not None and self.student is not None and self.autoencoder is not None
        c = self.config.out_channels
        x = imagenet_normalise(images)
        with self._autocast():
            t = self.teacher(images).float()
            s = self.student(x).float()
            a = self.autoencoder(x).float()
        t = (t - self.teacher_mean) / self.teacher_std
        return ((t - s[:, :c]) ** 2).mean(dim=1), ((a - s[:, c:]) ** 2).mean(dim=1)

    @torch.no_grad()
    def _score_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, 3, S, S) float32 in [0, 1] on the device -> (scores (b,) = map max, maps (b, S, S)). Traceable."""
        assert self.quantiles is not None
        local, glob = self._raw_maps(images)
        q = self.quantiles
        return image_map(0.5 * normalise_map(local, q[0], q[1]) + 0.5 * normalise_map(glob, q[2], q[3]),
                         self.config.image_size)

    # --------------------------------------------------------------------------------------- state
    def _state_dict(self) -> dict[str, torch.Tensor]:
        """``student.*``, ``autoencoder.*``, ``teacher_mean`` / ``teacher_std`` (1, C, 1, 1), ``quantiles`` (4,);
        plus ``teacher.*`` (the PDN teacher: the model does not need the file again) or, with
        ``pretrained: none``, ``backbone.*`` (the random backbone teacher), on the CPU."""
        assert self.student is not None and self.autoencoder is not None and self.quantiles is not None
        state: dict[str, torch.Tensor] = {}
        for prefix, module in self._modules_to_save().items():
            for key, value in module.state_dict().items():
                state[prefix + key] = value.detach().cpu().clone()
        state["teacher_mean"] = self.teacher_mean.detach().cpu().clone()
        state["teacher_std"] = self.teacher_std.detach().cpu().clone()
        state["quantiles"] = self.quantiles.detach().cpu().clone()
        return state

    def _modules_to_save(self) -> dict[str, nn.Module]:
        assert self.teacher is not None
        modules: dict[str, nn.Module] = {"student.": self.student, "autoencoder.": self.autoencoder}
        if isinstance(self.teacher, PDNTeacher):
            modules["teacher."] = self.teacher.pdn
        elif self.config.pretrained == "none":
            modules["backbone."] = self.teacher.backbone
        return modules

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Rebuild from :meth:`_state_dict`'s output; a missing, unexpected, mis-shaped or non-finite tensor is a
        DetectorError naming it."""
        cfg = self.config
        c = cfg.out_channels
        student, autoencoder = self._build_trainable()
        modules: dict[str, nn.Module] = {"student.": student, "autoencoder.": autoencoder}
        if cfg.pdn_teacher:
            teacher_pdn = PDN(cfg.model_size, c)
            modules["teacher."] = teacher_pdn
        elif cfg.pretrained == "none":
            modules["backbone."] = self._frozen_backbone(cfg.teacher_layers)
        parts = {prefix: check_state_shapes(prefix, module, state, self.name) for prefix, module in modules.items()}
        check_loose_tensors(state, {"teacher_mean": (1, c, 1, 1), "teacher_std": (1, c, 1, 1), "quantiles": (4,)}, self.name)
        reject_unknown_tensors(state, list(modules), list(_LOOSE), self.name)
        for key in _LOOSE:
            if not bool(torch.isfinite(state[key].float()).all()):
                raise DetectorError(f"{self.name} weights: tensor '{key}' holds non-finite values")
        for prefix, module in modules.items():
            module.load_state_dict(parts[prefix])
        student.eval()
        autoencoder.eval()
        teacher: nn.Module = PDNTeacher(teacher_pdn).to(self.device) if cfg.pdn_teacher else self._backbone_teacher()
        self.teacher, self.student, self.autoencoder = teacher, student, autoencoder
        self.teacher_mean = state["teacher_mean"].float().to(self.device)
        self.teacher_std = state["teacher_std"].float().to(self.device)
        self.quantiles = state["quantiles"].float().to(self.device)
