"""Distilling EfficientAD's PDN teacher from the frozen backbone's patch features (the paper's teacher recipe,
on the images that are available here).

The paper distils a PDN (33 x 33 px receptive field) from a WideResNet-101's layer-2 + layer-3 patch
features on ImageNet, then freezes it as the teacher. Offline there is neither, so the targets are the frozen
Lite0 backbone teacher's features (:class:`~detectors.efficientad.teacher.BackboneTeacher`, standardised per
channel over the training images) and the images are the TRAINING images (plus ``penalty_images`` when a
folder is given), each drawn with a random flip / quarter turn.

Crops, exactly: a PDN has no padding, so its output cell (i, j) is a function of input pixels
[4i, 4i + 33) x [4j, 4j + 33) only; on a crop whose corner sits at pixel (4a, 4b), crop cell (i, j) IS full-image
cell (a + i, b + j). A step therefore computes the targets on whole S x S images (the backbone's receptive
field is the whole image) and trains the PDN on one random ``crop`` x ``crop`` window of each, aligned to the
stride 4: the same loss as on the whole image restricted to those cells, at (crop / S)^2 of the cost, so one
step sees ``batch`` images instead of one.

Loss: mean squared error over channels and cells (the paper's distillation loss); Adam.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
import torch

from detectors.backbones import imagenet_normalise
from detectors.efficientad.pdn import PDN, pdn_output_side
from detectors.errors import DetectorError
from detectors.training import batch_indices, optimizer_to, step_rng

#: ``save(step, state)``: called with {"teacher_pdn", "optimizer", "history"} every ``checkpoint_every`` steps.
SaveCallback = Callable[[int, dict[str, Any]], None]


def random_flip_turn(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(B, 3, S, S) -> the same images, each flipped left-right with p = 1/2 and turned by 0-3 quarter turns."""
    out = []
    for image in images:
        if rng.random() < 0.5:
            image = image.flip(-1)
        out.append(torch.rot90(image, int(rng.integers(4)), dims=(-2, -1)))
    return torch.stack(out)


def aligned_crop_corners(image_size: int, crop: int, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """``count`` random crop corners (row, col) in OUTPUT cells: crop cell (i, j) = full cell (row + i, col + j),
    pixel corner (4 row, 4 col); every crop lies inside the S x S image."""
    cells = pdn_output_side(image_size) - pdn_output_side(crop)
    return [(int(rng.integers(cells + 1)), int(rng.integers(cells + 1))) for _ in range(count)]


def distil_pdn_teacher(
    targets: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    size: str,
    out_channels: int,
    steps: int,
    batch: int,
    crop: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
    autocast: Callable[[], Any],
    resume: Optional[dict[str, Any]] = None,
    save: Optional[SaveCallback] = None,
    checkpoint_every: int = 500,
    progress: Optional[Callable[[int, str], None]] = None,
) -> tuple[PDN, list[float]]:
    """Train a PDN (``size``, ``out_channels``) to regress ``targets(images)`` ((B, 3, S, S) in [0, 1] ->
    (B, C, S/4 - 8, S/4 - 8), standardised backbone features) on ``images`` (N, 3, S, S) in [0, 1], CPU.

    ``steps`` Adam steps (``lr``, ``weight_decay``) of ``batch`` images (drawn from ``seed`` and the step), one
    aligned ``crop`` x ``crop`` px window each (``crop`` a multiple of 4, 36..S); ``autocast()`` wraps the
    PDN's forward. ``resume`` = a state ``save`` wrote (continues after its step; every random choice is a
    function of ``seed`` and the step, so the result equals an uninterrupted run). Returns (the PDN, in eval
    mode, on ``device``; the loss per step). A non-finite loss is a DetectorError."""
    side = images.shape[-1]
    if crop % 4 or not 36 <= crop <= side:
        raise DetectorError(f"efficientad: distill_crop must be a multiple of 4 in 36..{side}, got {crop}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 101)
        pdn = PDN(size, out_channels)  # type: ignore[arg-type]
    pdn = pdn.to(device)
    optimizer = torch.optim.Adam(pdn.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[float] = []
    start = 0
    if resume is not None:
        pdn.load_state_dict(resume["teacher_pdn"])
        optimizer.load_state_dict(optimizer_to(resume["optimizer"], device))
        history = [float(v) for v in resume["history"]]
        start = len(history)
    cells = pdn_output_side(crop)
    pdn.train()
    for step in range(start, steps):
        rng = step_rng(seed, step, stream=5)
        idx = batch_indices(seed + 5, step, images.shape[0], batch)
        picked = random_flip_turn(images[idx], rng).to(device)
        with torch.no_grad():
            full = targets(picked).float()
        corners = aligned_crop_corners(side, crop, len(idx), rng)
        windows = torch.stack([picked[k, :, 4 * r : 4 * r + crop, 4 * c : 4 * c + crop] for k, (r, c) in enumerate(corners)])
        wanted = torch.stack([full[k, :, r : r + cells, c : c + cells] for k, (r, c) in enumerate(corners)])
        with autocast():
            out = pdn(imagenet_normalise(windows)).float()
        loss = ((out - wanted) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise DetectorError(f"efficientad: teacher distillation diverged at step {step + 1} (loss {value}); lower distill_lr")
        history.append(value)
        done = step + 1
        if save is not None and (done % checkpoint_every == 0 or done == steps):
            save(done, {"teacher_pdn": pdn.state_dict(), "optimizer": optimizer.state_dict(), "history": history})
        if progress is not None:
            progress(done, f"teacher distillation {done}/{steps} loss {value:.4f}")
    pdn.eval()
    for p in pdn.parameters():
        p.requires_grad_(False)
    return pdn, history

