"""Glancing at the Patch (Wang, Wu, Cui & Shen, CVPR 2021) as a Detector.

Pipeline (images S x S px, patches P x P px every ``patch_stride`` px, Global-Net input G x G px):

    stage 1, Local-Net L (pre-training): a fixed pool of ``distill_patches`` random training patches p whose
        teacher targets are computed once; R(p) = global-average-pooled maps (layers ``teacher_layers``) of the frozen pretrained backbone on p resized to ``teacher_size``,
        standardised per dimension; loss lambda_k ||D(L(p)) - R(p)||^2 + lambda_c l_c (compactness);
        afterwards L is frozen and its outputs are standardised per dimension (Z_l).
    stage 2, Global-Net G + DAD head: a random patch per image; Z_g = G(image with the patch masked out);
        l = l_IAD(Z_l, Z_g) + lambda_t CE(C(Z*, Z_g)), Z* = Z_l (class 0) or Z_l of the stained patch (class 1).
    inference: all N_p patches of the raster; s = lambda_s s_IAD + (1 - lambda_s) s_DAD (s_DAD = P(stained));
        the map is the inverse-distance-weighted interpolation of the patch scores; image score = map max.
        The N_p masked views of an image are scored incrementally (:class:`MaskedViews`: one unmasked base
        pass, then per layer one batched convolution over small crops around the holes; exactly the maths of
        N_p whole Global-Net passes at G x G, :mod:`detectors.glance.reference`), the N_p patches as one
        Local-Net batch; with the defaults (S 256, P 32, stride 16 -> N_p = 225, G 128) about 2.2 + 4.4 GMAC
        per image instead of 225 x 0.072 + 225 x 0.020 = 21 GMAC.

Deviations from the paper (no official code exists):
- The Local-Net is distilled from the pretrained backbone (default tf_efficientnet_lite0, offline ImageNet
  weights; the paper uses ResNet-18) on patches of the TARGET training images only: the paper's first
  distillation on ImageNet is impossible here (no ImageNet). Teacher features are standardised (as in the
  uninformed-students distillation the paper follows); compactness is the mean off-diagonal correlation.
- The Global-Net sees the image downsampled to ``global_size`` (default S/2) to bound the per-patch cost;
  its feature for a patch is its final map sampled at the patch centre (the paper does not say how the
  global feature is read out). Architecture, widths, lambda_k = lambda_c = lambda_t = 1, Adam learning rates
  and step counts are ours (the supplementary material with the paper's values is not available).
- Local features are standardised with training-set statistics so that s_IAD is on a scale comparable
  to s_DAD in [0, 1]; the paper combines the raw values.
- The paper writes y = 0 for real and 1 for stained patches yet s_DAD = 1 - C(.); here the classifier's
  P(stained) is s_DAD, which is the evident intent (high = anomalous).
- Stains are opaque random-colour ellipses with semi-axes P/16..P/5 (the paper: "random small stain").
- No model selection on test data: fixed step counts, the final state is the model.
"""
from __future__ import annotations

import time
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from detectors.backbones import FeatureExtractor
from detectors.base import Detector, DetectorConfig, ProgressCallback
from detectors.errors import DetectorError
from detectors.image_ops import check_batch
from detectors.train_images import TrainImages
from detectors.glance.model import (
    DADHead,
    GlobalNet,
    LocalNet,
    add_stain,
    compactness_loss,
    crop_patches,
    distillation_loss,
    gather_patches,
    hole_masks,
    iad_score,
    idw_sparse,
    idw_weights,
    joint_score,
    patch_centres,
    patch_grid,
    patch_index,
)
from detectors.glance.masked_views import MaskedViews
from detectors.model_io import check_loose_tensors, check_state_shapes, reject_unknown_tensors
from detectors.registry import register


class GlanceConfig(DetectorConfig):
    """Glancing at the Patch's configuration (lambda_s = 0.8 from the paper; the rest see the module doc).
    ``backbone`` is the pretrained teacher; ``inference_batch_size`` (images per chunk in predict) was added
    with the shared :class:`DetectorConfig` (each image's N_p views are batched by ``views_per_pass``)."""

    teacher_layers: list[int] = Field(default_factory=lambda: [2, 3], min_length=1, description="timm out_indices")
    teacher_size: int = Field(64, ge=16, description="patches are resized to this for the teacher, px")
    patch_size: int = Field(32, ge=8, description="patch side P in pixels")
    patch_stride: int = Field(16, ge=1, description="raster step between patches, px")
    global_size: int = Field(128, ge=16, description="side G of the Global-Net input, px")
    feature_dim: int = Field(128, ge=4, description="local / global feature length")
    local_width: int = Field(32, ge=4)
    global_width: int = Field(32, ge=4)
    dad_hidden: int = Field(128, ge=4, description="hidden width of the DAD classifier")
    lambda_k: float = Field(1.0, ge=0, description="distillation loss weight")
    lambda_c: float = Field(1.0, ge=0, description="compactness loss weight")
    lambda_t: float = Field(1.0, ge=0, description="DAD loss weight in the Global-Net objective")
    lambda_s: float = Field(0.8, ge=0, le=1, description="score weight of s_IAD (paper: 0.8)")
    distill_patches: int = Field(4096, ge=2, description="random training patches whose teacher targets are computed once")
    local_steps: int = Field(1500, ge=1)
    local_batch: int = Field(64, ge=2, description="patches per Local-Net step")
    local_lr: float = Field(1e-3, gt=0)
    global_steps: int = Field(3000, ge=1)
    global_batch: int = Field(16, ge=1, description="masked views per Global-Net step")
    global_lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    idw_power: float = Field(2.0, gt=0)
    views_per_pass: int = Field(0, ge=0, description="masked views per (incremental) Global-Net pass; 0 = all of an image")

    @model_validator(mode="after")
    def _sizes(self) -> "GlanceConfig":
        if self.patch_size > self.image_size:
            raise ValueError(f"patch_size {self.patch_size} exceeds image_size {self.image_size}")
        if self.global_size > self.image_size:
            raise ValueError(f"global_size {self.global_size} exceeds image_size {self.image_size}")
        if self.patch_size * self.global_size < self.image_size:
            raise ValueError("the patch would vanish in the Global-Net input: need patch_size * global_size >= image_size")
        return self


@register
class Glance(Detector):
    """Glancing at the Patch: Local-Net vs Global-Net feature comparison (IAD + DAD heads)."""

    name: ClassVar[str] = "glance"
    config_class: ClassVar[type[DetectorConfig]] = GlanceConfig
    config: GlanceConfig
    smoke_config: ClassVar[dict[str, Any]] = {
        "image_size": 64,
        "patch_size": 16,
        "patch_stride": 8,
        "global_size": 32,
        "teacher_size": 32,
        "feature_dim": 32,
        "local_width": 16,
        "global_width": 16,
        "dad_hidden": 32,
        "distill_patches": 128,
        "local_steps": 30,
        "local_batch": 32,
        "global_steps": 30,
        "global_batch": 8,
        "device": "cpu",
    }

    def __init__(self, config: GlanceConfig) -> None:
        super().__init__(config)
        self.local: Optional[LocalNet] = None
        self.decoder: Optional[torch.nn.Linear] = None
        self.global_net: Optional[GlobalNet] = None
        self.dad: Optional[DADHead] = None
        self.local_mean: Optional[torch.Tensor] = None
        self.local_std: Optional[torch.Tensor] = None
        self._boxes = patch_grid(config.image_size, config.patch_size, config.patch_stride)
        self._idw: Optional[torch.Tensor] = None
        self._idw_sparse: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._views: Optional[MaskedViews] = None  # the incremental plan of the masked views (with the networks)
        self._patch_rows, self._patch_cols = patch_index(self._boxes, config.patch_size, self.device)

    # ----------------------------------------------------------------------------------------- modules
    @property
    def teacher(self) -> FeatureExtractor:
        """The frozen pretrained teacher (created on first use; may raise BackboneError)."""
        return self._frozen_backbone(self.config.teacher_layers)

    @property
    def idw(self) -> torch.Tensor:
        """(N_p, S, S) inverse-distance weights of the patch raster (eq. 13; computed on first use)."""
        if self._idw is None:
            cfg = self.config
            self._idw = idw_weights(cfg.image_size, self._boxes, cfg.patch_size, cfg.idw_power).to(self.device)
        return self._idw

    @property
    def idw_entries(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:attr:`idw` as its nonzero entries per pixel, :func:`idw_sparse` (index, weight) each (K, S, S)."""
        return self._ensure_idw_entries()

    def _ensure_idw_entries(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._idw_sparse is None:
            self._idw_sparse = idw_sparse(self.idw)
            self._idw = None  # the dense weights (N_p x S x S floats) are rebuilt only if asked for again
        return self._idw_sparse

    @property
    def patches_per_image(self) -> int:
        """N_p: patches (= masked Global-Net views) scored per image."""
        return len(self._boxes)

    def _build(self, teacher_dim: int) -> None:
        """Fresh networks from the seed; ``teacher_dim`` = length T of the teacher's pooled features."""
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.local = LocalNet(cfg.feature_dim, cfg.local_width).to(self.device)
            self.decoder = torch.nn.Linear(cfg.feature_dim, teacher_dim).to(self.device)
            self.global_net = GlobalNet(cfg.feature_dim, cfg.global_width).to(self.device)
            self.dad = DADHead(cfg.feature_dim, cfg.dad_hidden).to(self.device)
        masks, centres = self._view_geometry(self._boxes)
        self._views = MaskedViews(self.global_net, masks, centres, self.device)  # geometry only, no weights
        self._ensure_idw_entries()  # geometry only: built here, not inside a trace of _score_batch
        self.local_mean = torch.zeros(cfg.feature_dim, device=self.device)
        self.local_std = torch.ones(cfg.feature_dim, device=self.device)

    # ------------------------------------------------------------------------------------- features
    @torch.no_grad()
    def _teacher_features(self, patches: torch.Tensor) -> torch.Tensor:
        """R(p): (N, 3, P, P) -> (N, T) global-average-pooled teacher maps (unstandardised), float32."""
        size = self.config.teacher_size
        x = F.interpolate(patches, size=(size, size), mode="bilinear", align_corners=False)
        with self._autocast():
            maps = self.teacher(x)
        return torch.cat([m.float().mean(dim=(2, 3)) for m in maps], dim=1)

    def _local_features(self, patches: torch.Tensor) -> torch.Tensor:
        """Z_l: standardised Local-Net features (N, dim) float32."""
        assert self.local is not None and self.local_mean is not None and self.local_std is not None
        with self._autocast():
            z = self.local(patches)
        return (z.float() - self.local_mean) / self.local_std

    def _view_geometry(self, boxes: list[tuple[float, float]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(hole masks, patch centres) of the masked views of ``boxes`` (see :func:`hole_masks`)."""
        cfg = self.config
        return (hole_masks(boxes, cfg.patch_size, cfg.image_size, cfg.global_size, self.device),
                patch_centres(boxes, cfg.patch_size, cfg.image_size, self.device))

    def _global_features(
        self, images: torch.Tensor, image_index: list[int], boxes: list[tuple[float, float]],
        geometry: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Z_g for the views (image ``image_index[i]`` of ``images`` (B, 3, G, G), patch ``boxes[i]``) -> (N, dim).
        ``geometry``: :meth:`_view_geometry` of ``boxes`` when already computed (the fixed inference grid)."""
        assert self.global_net is not None
        masks, centres = geometry if geometry is not None else self._view_geometry(boxes)
        views = images[image_index]
        with self._autocast():
            z = self.global_net(views, masks, centres)
        return z.float()

    def _to_global(self, images: torch.Tensor) -> torch.Tensor:
        g = self.config.global_size
        if images.shape[-1] == g:
            return images
        return F.interpolate(images, size=(g, g), mode="bilinear", align_corners=False, antialias=True)

    # ------------------------------------------------------------------------------------------ fit
    def _fit(self, train: Any, progress: ProgressCallback) -> dict[str, Any]:
        """Stage 1 (Local-Net distillation) then stage 2 (Global-Net + DAD head) on good images.
        Returns loss histories and timings."""
        cfg = self.config
        t_start = time.perf_counter()
        data = TrainImages(train, method=self.name, role="training", image_size=cfg.image_size)
        report = progress
        # The training images are held in memory (float32): validated once, re-cropped every step.
        images = torch.cat(
            [
                check_batch(data.batch(idx), image_size=cfg.image_size, method=self.name, where=data.batch_name(idx))
                for idx in data.chunks(32)
            ]
        ).to(self.device)
        n = images.shape[0]
        self._build(int(sum(self.teacher.channels)))
        assert self.local is not None and self.decoder is not None and self.global_net is not None and self.dad is not None
        gen = torch.Generator().manual_seed(cfg.seed)
        total_steps = cfg.local_steps + cfg.global_steps
        span = cfg.image_size - cfg.patch_size + 1

        def random_boxes(count: int) -> tuple[list[int], list[tuple[int, int]]]:
            idx = torch.randint(n, (count,), generator=gen).tolist()
            yx = torch.randint(span, (count, 2), generator=gen).tolist()
            return idx, [(int(y), int(x)) for y, x in yx]

        # ---- stage 1: teacher targets of a fixed pool of random patches (one batched teacher pass), then
        #      distillation on mini-batches drawn from the pool
        t0 = time.perf_counter()
        pool_idx, pool_boxes = random_boxes(cfg.distill_patches)
        pool = crop_patches(images, pool_boxes, cfg.patch_size, pool_idx)  # (N_pool, 3, P, P)
        targets = torch.cat([self._teacher_features(pool[i : i + 256]) for i in range(0, len(pool), 256)])
        targets = (targets - targets.mean(0)) / targets.std(0).clamp_min(1e-6)
        report(0, total_steps, f"teacher features of {len(pool)} patches")
        opt = torch.optim.Adam(
            list(self.local.parameters()) + list(self.decoder.parameters()), lr=cfg.local_lr, weight_decay=cfg.weight_decay
        )
        scaler = self._grad_scaler()
        local_hist: list[float] = []
        acc, acc_n = torch.zeros(3, device=self.device), 0
        log_every = max(1, cfg.local_steps // 10)
        self.local.train()
        for step in range(cfg.local_steps):
            pick = torch.randint(len(pool), (cfg.local_batch,), generator=gen).to(self.device)
            patches, target = pool[pick], targets[pick]
            with self._autocast():
                z = self.local(patches)
                decoded = self.decoder(z)
            l_k = distillation_loss(decoded, target)
            l_c = compactness_loss(z)
            loss = cfg.lambda_k * l_k + cfg.lambda_c * l_c
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            acc += torch.stack([loss.detach(), l_k.detach(), l_c.detach()])
            acc_n += 1
            if (step + 1) % log_every == 0 or step + 1 == cfg.local_steps:
                local_hist.append(float(acc[0] / acc_n))
                report(step + 1, total_steps, f"local-net step {step + 1}/{cfg.local_steps} loss {local_hist[-1]:.4f}")
                acc, acc_n = torch.zeros(3, device=self.device), 0
        self.local.eval()
        with torch.no_grad():  # standardisation of Z_l
            stat_idx, stat_boxes = random_boxes(max(512, 4 * cfg.feature_dim))
            with self._autocast():
                z = self.local(crop_patches(images, stat_boxes, cfg.patch_size, stat_idx)).float()
            self.local_mean = z.mean(0)
            self.local_std = z.std(0).clamp_min(1e-6)
        local_s = time.perf_counter() - t0

        # ---- stage 2: Global-Net + DAD head
        t0 = time.perf_counter()
        global_images = self._to_global(images)
        opt = torch.optim.Adam(
            list(self.global_net.parameters()) + list(self.dad.parameters()), lr=cfg.global_lr, weight_decay=cfg.weight_decay
        )
        scaler = self._grad_scaler()
        hist: dict[str, list[float]] = {"loss": [], "iad": [], "dad": [], "dad_accuracy": []}
        acc, acc_n = torch.zeros(4, device=self.device), 0
        log_every = max(1, cfg.global_steps // 10)
        self.global_net.train()
        self.dad.train()
        labels = torch.cat([torch.zeros(cfg.global_batch), torch.ones(cfg.global_batch)]).long().to(self.device)
        for step in range(cfg.global_steps):
            idx, boxes = random_boxes(cfg.global_batch)
            patches = crop_patches(images, boxes, cfg.patch_size, idx)
            stained, _ = add_stain(patches, gen)
            with torch.no_grad():
                z_l = self._local_features(torch.cat([patches, stained]))
            z_pos, z_neg = z_l[: cfg.global_batch], z_l[cfg.global_batch :]
            z_g = self._global_features(global_images, idx, boxes)
            l_iad = iad_score(z_pos, z_g).mean()
            with self._autocast():
                logits = self.dad(torch.cat([z_pos, z_neg]), torch.cat([z_g, z_g])).float()
            l_dad = F.cross_entropy(logits, labels)
            loss = l_iad + cfg.lambda_t * l_dad
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                accuracy = (logits.argmax(1) == labels).float().mean()
            acc += torch.stack([loss.detach(), l_iad.detach(), l_dad.detach(), accuracy])
            acc_n += 1
            if (step + 1) % log_every == 0 or step + 1 == cfg.global_steps:
                mean = (acc / acc_n).tolist()
                for key, value in zip(hist, mean):
                    hist[key].append(value)
                report(
                    cfg.local_steps + step + 1,
                    total_steps,
                    f"global-net step {step + 1}/{cfg.global_steps} loss {mean[0]:.4f} iad {mean[1]:.4f} "
                    f"dad {mean[2]:.4f} acc {mean[3]:.3f}",
                )
                acc, acc_n = torch.zeros(4, device=self.device), 0
        self.global_net.eval()
        self.dad.eval()
        global_s = time.perf_counter() - t0
        del images, global_images, pool, targets

        stats: dict[str, Any] = {
            "local_loss": local_hist,
            "global_loss": hist["loss"],
            "iad_loss": hist["iad"],
            "dad_loss": hist["dad"],
            "dad_accuracy": hist["dad_accuracy"],
            "n_train": n,
            "patches_per_image": self.patches_per_image,
            "local_seconds": round(local_s, 3),
            "global_seconds": round(global_s, 3),
            "train_seconds": round(time.perf_counter() - t_start, 3),
            "device": str(self.device),
            "seed": cfg.seed,
        }
        return stats

    # -------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def patch_scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-patch scores of (B, 3, S, S) images: {"iad", "dad", "score"} each (B, N_p), raster order, on
        the device (checked and batched as :meth:`predict`)."""
        iad, dad, score = self._in_batches(images, self._patch_scores, call="patch_scores")
        return {"iad": iad, "dad": dad, "score": score}

    def _patch_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(b, 3, S, S) on the device -> (s_IAD, s_DAD, joint score), each (b, N_p).

        Z_g of the N_p masked views of every image: :class:`MaskedViews` (incremental, exact maths; one image
        and at most ``views_per_pass`` of its views per pass); Z_l: each image's N_p patches in one
        channels-last Local-Net batch.
        :func:`detectors.glance.reference.reference_patch_scores` is the straightforward computation (every
        masked view through :meth:`GlobalNet.forward`) that this equals within float rounding.
        """
        cfg = self.config
        assert self._views is not None and self.global_net is not None and self.dad is not None
        b, n_p = images.shape[0], len(self._boxes)
        per_pass = cfg.views_per_pass or n_p
        global_images = self._to_global(images)
        with self._autocast():  # one image's views (at most per_pass of them) per pass: memory stays flat in b
            z_g = torch.cat(
                [
                    self._views(self.global_net, global_images[i : i + 1], start, min(start + per_pass, n_p))
                    for i in range(b)
                    for start in range(0, n_p, per_pass)
                ]
            ).float()
        z_l = torch.cat([self._local_features(gather_patches(images[i], self._patch_rows, self._patch_cols)) for i in range(b)])
        with self._autocast():
            logits = self.dad(z_l, z_g).float()
        s_iad = iad_score(z_l, z_g)
        s_dad = logits.softmax(dim=1)[:, 1]
        s = joint_score(s_iad, s_dad, cfg.lambda_s)
        return s_iad.view(b, n_p), s_dad.view(b, n_p), s.view(b, n_p)

    @torch.no_grad()
    def _score_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, 3, S, S) float32 in [0, 1] on the device -> (scores (b,), maps (b, S, S)).

        Map = IDW interpolation of the joint patch scores (eq. 13; the K <= 4 nonzero weights per pixel with the
        defaults, :attr:`idw_entries`, instead of the dense (N_p, S, S) product); image score = map maximum. Traceable; the
        loop over the batch's images (one Local-Net batch of N_p patches each) unrolls in a trace (an export
        has a fixed batch size).
        """
        index, weight = self.idw_entries
        anomaly_map = (self._patch_scores(images)[2][:, index] * weight).sum(dim=1)  # sparse eq. 13 IDW
        return anomaly_map.amax(dim=(1, 2)), anomaly_map

    # --------------------------------------------------------------------------------------- state
    def _modules(self) -> dict[str, torch.nn.Module]:
        assert self.local is not None and self.decoder is not None and self.global_net is not None and self.dad is not None
        return {"local.": self.local, "decoder.": self.decoder, "global.": self.global_net, "dad.": self.dad}

    def _state_dict(self) -> dict[str, torch.Tensor]:
        """Local-Net, decoder, Global-Net, DAD head tensors and the Z_l standardisation (mean, std), on CPU
        (plus the teacher's weights when ``pretrained: none``)."""
        assert self.local_mean is not None and self.local_std is not None
        state = {p + k: v.detach().cpu().clone() for p, m in self._modules().items() for k, v in m.state_dict().items()}
        state["local_mean"] = self.local_mean.detach().cpu().clone()
        state["local_std"] = self.local_std.detach().cpu().clone()
        if self.config.pretrained == "none":
            state.update({"teacher." + k: v.detach().cpu().clone() for k, v in self.teacher.state_dict().items()})
        return state

    def _load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`; a missing, unexpected or mis-shaped tensor raises DetectorError."""
        decoder_weight = state.get("decoder.weight")
        if decoder_weight is None or decoder_weight.ndim != 2:
            raise DetectorError("glance weights: missing tensor 'decoder.weight' (2-D)")
        self._build(int(decoder_weight.shape[0]))
        modules = self._modules()
        if self.config.pretrained == "none":
            modules["teacher."] = self.teacher
        parts = {prefix: check_state_shapes(prefix, module, state, "glance") for prefix, module in modules.items()}
        standardisation = {key: (self.config.feature_dim,) for key in ("local_mean", "local_std")}
        check_loose_tensors(state, standardisation, "glance")
        reject_unknown_tensors(state, list(modules), list(standardisation), "glance")
        for prefix, module in modules.items():
            module.load_state_dict(parts[prefix])
            module.eval()
        self.local_mean = state["local_mean"].float().to(self.device)
        self.local_std = state["local_std"].float().to(self.device)
