"""Patch description networks (PDN) of EfficientAD (Batzner, Heckler and Koenig, WACV 2024), small and medium.

A PDN maps images (B, 3, S, S) (already normalised with the ImageNet mean and std) to features
(B, C, S/4 - 8, S/4 - 8) with no padding anywhere (the paper's setting): at S = 256 the output is 56 x 56 and
every output cell sees a 33 x 33 px patch (small) of the input.

* small:  conv 4x4 (128) - ReLU - avg-pool 2x2/2 - conv 4x4 (256) - ReLU - avg-pool 2x2/2 - conv 3x3 (256) -
  ReLU - conv 4x4 (C)
* medium: conv 4x4 (256) - ReLU - avg-pool - conv 4x4 (512) - ReLU - avg-pool - conv 1x1 (512) - ReLU -
  conv 3x3 (512) - ReLU - conv 4x4 (C) - ReLU - conv 1x1 (C)

The convolutions are named ``conv1`` .. ``conv4`` (small) / ``conv6`` (medium), so a state dict in the public
teacher format (``conv1.weight``, ``conv1.bias``, ...; e.g. ``teacher_small.pth`` of the public
reproductions) loads directly; :func:`public_pdn_state` also accepts the ``nn.Sequential`` numbering
(``0.weight``, ``3.weight``, ...) of the other public reproduction.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from detectors.errors import DetectorError
from detectors.model_io import check_state_shapes

PDNSize = Literal["small", "medium"]
#: (in, out, kernel) of each convolution, with ``C`` standing for the output channels.
_LAYERS: dict[str, list[tuple[int, str | int, int]]] = {
    "small": [(3, 128, 4), (128, 256, 4), (256, 256, 3), (256, "C", 4)],
    "medium": [(3, 256, 4), (256, 512, 4), (512, 512, 1), (512, 512, 3), (512, "C", 4), ("C", "C", 1)],
}


def pdn_output_side(image_size: int) -> int:
    """Side of a PDN's output grid for S x S inputs (both sizes): S/4 - 8 for S divisible by 4."""
    side = image_size
    side = (side - 3) // 2  # conv 4x4, avg-pool 2x2/2
    side = (side - 3) // 2  # conv 4x4, avg-pool 2x2/2
    return side - 5  # small: conv 3x3 + conv 4x4; medium: 1x1 + 3x3 + 4x4 + 1x1 (same total)


class PDN(nn.Module):
    """A patch description network (``size`` small | medium) with ``out_channels`` output channels."""

    def __init__(self, size: PDNSize = "small", out_channels: int = 384) -> None:
        super().__init__()
        if size not in _LAYERS:
            raise ValueError(f"PDN size must be 'small' or 'medium', got {size!r}")
        self.size = size
        self.out_channels = int(out_channels)
        self.n_convs = len(_LAYERS[size])
        for i, (cin, cout, k) in enumerate(_LAYERS[size], start=1):
            cin = self.out_channels if cin == "C" else cin
            cout = self.out_channels if cout == "C" else cout
            setattr(self, f"conv{i}", nn.Conv2d(int(cin), int(cout), kernel_size=k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) ImageNet-normalised -> (B, out_channels, S/4 - 8, S/4 - 8)."""
        x = F.avg_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2, 2)
        x = F.relu(self.conv3(x))
        if self.size == "small":
            return self.conv4(x)
        x = F.relu(self.conv4(x))
        x = F.relu(self.conv5(x))
        return self.conv6(x)


def public_pdn_state(path: str | Path, size: PDNSize, out_channels: int = 384) -> dict[str, torch.Tensor]:
    """Read a PDN state dict in the public teacher format from ``path`` (``torch.load(weights_only=True)``):
    keys ``conv1.weight`` .. (or ``0.weight``, ``3.weight``, .. of an ``nn.Sequential``; a leading
    ``module.`` is dropped). Returns it with ``convN`` names, checked against :class:`PDN` (``size``,
    ``out_channels``); any mismatch is a one-line DetectorError naming the file and the tensor."""
    path = Path(path)
    if not path.is_file():
        raise DetectorError(f"efficientad: teacher_weights file {path} not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise DetectorError(f"{path}: not a readable PDN state dict ({type(exc).__name__})") from None
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise DetectorError(f"{path}: not a PDN state dict (a dict of tensors)")
    state = {k.removeprefix("module."): v for k, v in raw.items()}
    if any(k.split(".")[0].isdigit() for k in state):  # nn.Sequential numbering: convs in index order
        indices = sorted({int(k.split(".")[0]) for k in state if k.split(".")[0].isdigit()})
        rename = {i: f"conv{n}" for n, i in enumerate(indices, start=1)}
        state = {f"{rename[int(k.split('.')[0])]}.{k.split('.', 1)[1]}": v for k, v in state.items()
                 if k.split(".")[0].isdigit()}
    state = check_state_shapes("", PDN(size, out_channels), state, "efficientad", source=str(path))
    if not all(bool(torch.isfinite(v).all()) for v in state.values()):
        raise DetectorError(f"{path}: non-finite values in the PDN teacher's weights")
    return {k: v.float() for k, v in state.items()}
