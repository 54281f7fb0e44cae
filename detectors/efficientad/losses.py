"""EfficientAD's training losses, input augmentation and map normalisation (pure tensor functions).

Shapes: features (B, C, s, s); maps (B, s, s); images (B, 3, S, S) in [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def hard_feature_loss(teacher: torch.Tensor, student: torch.Tensor, quantile: float = 0.999) -> torch.Tensor:
    """Mean of the squared differences (teacher - student)^2 at or above their ``quantile`` (the paper's hard
    feature loss: only the hardest 0.1 % of the (B, C, s, s) differences count)."""
    distance = (teacher - student) ** 2
    flat = distance.detach().flatten()
    # torch.quantile's linear interpolation (the public code's) between the order statistics lo and lo + 1,
    # both among the n - lo largest values: one partial top-k on the device, no full sort, no size limit
    n = flat.numel()
    position = quantile * (n - 1)
    lo = int(np.floor(position))
    top = torch.topk(flat, n - lo, largest=True, sorted=True).values  # descending: top[-1] = order stat lo
    v_lo = top[-1]
    v_hi = top[-2] if top.numel() > 1 else top[-1]
    threshold = v_lo + (position - lo) * (v_hi - v_lo)
    return distance[distance >= threshold].mean()


def penalty_loss(student_on_penalty: torch.Tensor) -> torch.Tensor:
    """The paper's penalty: mean square of the student's teacher-half outputs on a penalty image."""
    return (student_on_penalty**2).mean()


def augment_colour(images: torch.Tensor, rng: np.random.Generator, strength: float = 0.2) -> torch.Tensor:
    """The autoencoder's input augmentation: ONE of brightness, contrast, saturation (chosen at random),
    with a factor uniform in [1 - strength, 1 + strength] (the paper: 0.8 .. 1.2); result clamped to [0, 1]."""
    kind = int(rng.integers(3))
    factor = float(rng.uniform(1 - strength, 1 + strength))
    if kind == 0:
        out = images * factor
    else:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        gray = (images * weights).sum(dim=1, keepdim=True)
        if kind == 1:  # contrast: blend with the mean grey level
            out = gray.mean(dim=(1, 2, 3), keepdim=True) + factor * (images - gray.mean(dim=(1, 2, 3), keepdim=True))
        else:  # saturation: blend with the grey image
            out = gray + factor * (images - gray)
    return out.clamp(0.0, 1.0)


def normalise_map(maps: torch.Tensor, q_low: torch.Tensor, q_high: torch.Tensor) -> torch.Tensor:
    """Map the validation quantiles ``q_low`` -> 0 and ``q_high`` -> 0.1 (linear; the paper's normalisation)."""
    return 0.1 * (maps - q_low) / (q_high - q_low)


def image_map(maps: torch.Tensor, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PDN-grid maps (B, s, s) -> (image scores (B,) = map max, maps (B, S, S)): padded to the S/4 grid, the
    border cells no patch is centred on taking their nearest cell's value (the paper pads zeros: see the
    detector module's deviations), then bilinearly upsampled to S x S. Traceable."""
    pad = (image_size // 4 - maps.shape[-1]) // 2
    maps = F.pad(maps[:, None], (pad, pad, pad, pad), mode="replicate")
    maps = F.interpolate(maps, size=(image_size, image_size), mode="bilinear", align_corners=False)[:, 0]
    return maps.flatten(1).amax(dim=1), maps
