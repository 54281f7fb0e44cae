"""The N_p masked views of the Global-Net, evaluated incrementally: same arithmetic, a fraction of the cost.

:meth:`GlobalNet.forward` on the N_p views of one image (the image with patch i masked out, i = 1..N_p)
runs six partial convolutions over N_p whole G x G maps, although view i differs from the unmasked image
("the base") only near its hole, and only the 1-4 cells of the final map that the bilinear read-out at the
patch centre touches are used. :class:`MaskedViews` exploits both, exactly:

* the base pass: the Global-Net once per image with a mask of ones, keeping every layer's activation;
* per layer l and view i, a crop C_l^i of the view's activation: the bounding box of (cells whose windows
  can see the hole, propagated forward from the hole) x (cells the next crop, or the read-out, reads,
  propagated backward), enlarged to the largest crop of that layer (shifted to stay inside the map). Outside
  C_l^i the view's activation IS the base's, inside it is computed from the view's true input over the
  crop's receptive field: the previous crop pasted over the base activation, times the view's mask (the
  masks and ratios of eq. 5 depend on the geometry only and are precomputed);
* per layer, ONE batched convolution over the (B * N_p) small windows (gathers with precomputed indices).

It computes what :meth:`GlobalNet.forward` computes for every view (unit-tested); only the floating-point
summation order differs (a convolution over a window instead of the whole map). With the defaults (G 128,
hole 16 px) the crops are 10, 6, 4, 3, 6 and 2 cells wide: about 9.2 MMAC per view instead of 72
(:meth:`MaskedViews.macs_per_view`), plus one 72 MMAC base pass per image.

Shapes: images (B, 3, G, G) in [0, 1]; the plan is for N = N_p views; features (B * N_p, dim), view-major
within each image (row b * N_p + i = image b, view i).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from detectors.backbones import imagenet_normalise
from detectors.glance.model import GlobalNet


@dataclass(frozen=True)
class _LayerPlan:
    """Gather indices and masks of one partial convolution for N views; L = window side, h = crop side.

    ``base_index`` (N, Ly, Lx) int64: each window position's cell in ONE image's input map (row-major), -1 in
    the zero padding; ``crop_index`` (N, Ly, Lx): its cell in the view's previous crop (row-major), -1 outside
    it (None for the first layer); ``mask`` (N, 1, Ly, Lx) float32, first layer only: the hole mask over the
    window (0 in the padding); ``ratio``/``new_mask`` (N, 1, hy, hx) float32: eq. 5's ratio and updated mask
    of the view over its output crop.
    """

    base_index: torch.Tensor
    crop_index: torch.Tensor | None
    mask: torch.Tensor | None
    ratio: torch.Tensor
    new_mask: torch.Tensor


@dataclass(frozen=True)
class _ReadoutPlan:
    """The bilinear read-out at the patch centre (grid_sample, border padding, align_corners=False) as 4
    corners per view: ``base_index`` (N, 4) cells of the final map (-1 for a corner outside it), ``crop_index``
    (N, 4) cells of the last crop (-1 outside it), ``weights`` (N, 4, 1) float32."""

    base_index: torch.Tensor
    crop_index: torch.Tensor
    weights: torch.Tensor


def _touching(lo: int, hi: int, kernel: int, stride: int, padding: int, dilation: int, size_out: int) -> tuple[int, int]:
    """Output cells [o0, o1) of a convolution whose windows touch input cells [lo, hi) (empty stays empty)."""
    if hi <= lo:
        return 0, 0
    o0 = math.ceil((lo + padding - (kernel - 1) * dilation) / stride)
    o1 = (hi - 1 + padding) // stride + 1
    o0, o1 = max(0, o0), min(size_out, o1)
    return (o0, o1) if o1 > o0 else (0, 0)


def _axis_bounds(mask_axis: torch.Tensor) -> tuple[int, int]:
    """[first, last + 1) of the True entries of a 1-D bool tensor ((0, 0) when none)."""
    hits = mask_axis.nonzero().flatten().tolist()
    return (hits[0], hits[-1] + 1) if hits else (0, 0)


def _readout_corners(coordinate: float, size: int) -> tuple[list[int], list[float]]:
    """grid_sample's bilinear corners along one axis (align_corners=False, border padding), in float32 as
    grid_sample computes them: ([i0, i0 + 1], [w0, w1]); a corner index == ``size`` lies outside the map."""
    c = torch.tensor(coordinate, dtype=torch.float32)
    ix = ((c + 1) * size - 1) / 2
    ix = ix.clamp(0, size - 1)
    i0 = int(torch.floor(ix))
    w1 = float(ix - i0)
    return [i0, min(i0 + 1, size)], [1.0 - w1, w1]


class MaskedViews:
    """The Global-Net features of N masked views of every image, incrementally (see the module doc).

    ``MaskedViews(net, masks (N, 1, G, G), centres (N, 2) as (x, y) in [-1, 1])`` builds the plan for ``net``'s
    layer geometry (weights are read at call time, so one plan serves any trained ``net`` of that
    architecture); ``views(net, images (B, 3, G, G), start, stop)`` -> Z_g (B * (stop - start), dim) of views
    start..stop-1. Build it once per patch raster (it holds O(N * window) index tensors on ``device``).
    """

    def __init__(self, net: GlobalNet, masks: torch.Tensor, centres: torch.Tensor, device: torch.device) -> None:
        masks = masks.float().cpu()
        centres = centres.float().cpu()
        n = masks.shape[0]
        self.views = n
        layers = list(net.layers)
        # the view masks and ratios at every layer (geometry only): m[j] = input mask of layer j
        m = [masks]
        ratios = []
        for layer in layers:
            new_mask, ratio = layer.mask_update(m[-1].to(layer.ones.device))
            m.append(new_mask.cpu())
            ratios.append(ratio.cpu())
        #: eq. 5's ratio of every layer for a mask of ones (the base pass), (1, 1, H', W') each
        self.base_ratios: list[torch.Tensor] = []
        ones = torch.ones_like(masks[:1])
        for layer in layers:
            ones, ratio = layer.mask_update(ones.to(layer.ones.device))
            self.base_ratios.append(ratio.to(device))
        sizes = [t.shape[-1] for t in m]  # sizes[j] = input side of layer j, sizes[j + 1] its output side
        geom = [(l.conv.kernel_size[0], l.stride, l.padding, l.dilation) for l in layers]

        # forward: cells that can differ from the base (per view, per axis), starting from the hole
        hole = masks[:, 0] == 0
        affected = [[[_axis_bounds(hole[i].any(dim=1 - axis)) for axis in (0, 1)] for i in range(n)]]
        for j, (k, s, p, d) in enumerate(geom):
            affected.append([[_touching(*affected[-1][i][a], k, s, p, d, sizes[j + 1]) for a in (0, 1)] for i in range(n)])

        # backward: the read-out corners, then crops and windows from the last layer down
        final = sizes[-1]
        corners = [[_readout_corners(float(centres[i, 1 - a]), final) for a in (0, 1)] for i in range(n)]  # a=0: y
        need = [[(c[a][0][0], min(c[a][0][0] + 2, final)) for a in (0, 1)] for c in corners]
        crops: list[list[list[tuple[int, int]]]] = [[] for _ in layers]  # crops[j][i][a] = (start, side)
        windows: list[list[list[int]]] = [[] for _ in layers]  # windows[j][i][a] = start
        sides: list[tuple[int, int]] = [(0, 0)] * len(layers)
        for j in range(len(layers) - 1, -1, -1):
            k, s, p, d = geom[j]
            boxes = []
            for i in range(n):
                box = []
                for a in (0, 1):
                    lo, hi = max(affected[j + 1][i][a][0], need[i][a][0]), min(affected[j + 1][i][a][1], need[i][a][1])
                    box.append((lo, hi) if hi > lo else (need[i][a][0], need[i][a][0]))
                boxes.append(box)
            side = tuple(max(1, max(b[a][1] - b[a][0] for b in boxes)) for a in (0, 1))
            sides[j] = side
            for i in range(n):
                starts = [max(0, min(boxes[i][a][0], sizes[j + 1] - side[a])) for a in (0, 1)]
                crops[j].append([(starts[a], side[a]) for a in (0, 1)])
                windows[j].append([starts[a] * s - p for a in (0, 1)])
            spans = [(side[a] - 1) * s + (k - 1) * d + 1 for a in (0, 1)]
            need = [
                [(max(0, windows[j][i][a]), min(sizes[j], windows[j][i][a] + spans[a])) for a in (0, 1)] for i in range(n)
            ]

        # index tensors
        self.layers: list[_LayerPlan] = []
        for j, (k, s, p, d) in enumerate(geom):
            spans = [(sides[j][a] - 1) * s + (k - 1) * d + 1 for a in (0, 1)]
            pos = [torch.tensor([windows[j][i][a] for i in range(n)]).view(n, 1) + torch.arange(spans[a]) for a in (0, 1)]
            inside_map = [(pos[a] >= 0) & (pos[a] < sizes[j]) for a in (0, 1)]
            base = [torch.where(inside_map[a], pos[a], sizes[j]) for a in (0, 1)]  # sentinel: the padded zero row
            base_index = torch.where(
                inside_map[0].unsqueeze(2) & inside_map[1].unsqueeze(1),
                pos[0].unsqueeze(2) * sizes[j] + pos[1].unsqueeze(1),
                -1,
            )
            crop_index = None
            if j > 0:
                rel = [pos[a] - torch.tensor([crops[j - 1][i][a][0] for i in range(n)]).view(n, 1) for a in (0, 1)]
                ok = [(rel[a] >= 0) & (rel[a] < sides[j - 1][a]) for a in (0, 1)]
                crop_index = torch.where(
                    ok[0].unsqueeze(2) & ok[1].unsqueeze(1), rel[0].unsqueeze(2) * sides[j - 1][1] + rel[1].unsqueeze(1), -1
                )
            mask = _gather(F.pad(m[0].float(), (0, 1, 0, 1)), torch.arange(n), base[0], base[1]) if j == 0 else None
            out_pos = [
                torch.tensor([crops[j][i][a][0] for i in range(n)]).view(n, 1) + torch.arange(sides[j][a]) for a in (0, 1)
            ]
            ratio = _gather(ratios[j].float(), torch.arange(n), out_pos[0], out_pos[1])
            new_mask = _gather(m[j + 1].float(), torch.arange(n), out_pos[0], out_pos[1])
            self.layers.append(
                _LayerPlan(
                    base_index=base_index.to(device),
                    crop_index=None if crop_index is None else crop_index.to(device),
                    mask=None if mask is None else mask.contiguous().to(device),
                    ratio=ratio.contiguous().to(device),
                    new_mask=new_mask.contiguous().to(device),
                )
            )
        rows, cols, weights = [], [], []
        for i in range(n):
            (ry, wy), (rx, wx) = corners[i]
            rows.append([ry[0], ry[0], ry[1], ry[1]])
            cols.append([rx[0], rx[1], rx[0], rx[1]])
            weights.append([wy[0] * wx[0], wy[0] * wx[1], wy[1] * wx[0], wy[1] * wx[1]])
        rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
        last = len(layers) - 1
        start_y = torch.tensor([crops[last][i][0][0] for i in range(n)]).view(n, 1)
        start_x = torch.tensor([crops[last][i][1][0] for i in range(n)]).view(n, 1)
        rel_y, rel_x = rows_t - start_y, cols_t - start_x
        ok = (rel_y >= 0) & (rel_y < sides[last][0]) & (rel_x >= 0) & (rel_x < sides[last][1]) & (rows_t < final) & (cols_t < final)
        self.readout = _ReadoutPlan(
            base_index=torch.where((rows_t < final) & (cols_t < final), rows_t * final + cols_t, -1).to(device),
            crop_index=torch.where(ok, rel_y * sides[last][1] + rel_x, -1).to(device),
            weights=torch.tensor(weights, dtype=torch.float32).unsqueeze(2).to(device),
        )
        #: (window side, crop side) per layer, for reports: ((Ly, Lx), (hy, hx))
        self.shapes = [
            (((sides[j][0] - 1) * g[1] + (g[0] - 1) * g[3] + 1, (sides[j][1] - 1) * g[1] + (g[0] - 1) * g[3] + 1), sides[j])
            for j, g in enumerate(geom)
        ]

    def macs_per_view(self, net: GlobalNet) -> int:
        """Multiply-accumulates of the crop convolutions per view (the base pass and head not included)."""
        total = 0
        for (_, (hy, hx)), layer in zip(self.shapes, net.layers):
            w = layer.conv.weight
            total += hy * hx * w.shape[0] * w.shape[1] * w.shape[2] * w.shape[3]
        return total

    def __call__(self, net: GlobalNet, images: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Z_g of views start..stop-1 of every image: (B, 3, G, G) -> (B * (stop - start), dim), image-major."""
        stop = self.views if stop is None else stop
        b, count = images.shape[0], stop - start
        # base pass (no hole: every mask is 1, the ratios of eq. 5 are the plan's), every layer's input kept
        x = imagenet_normalise(images).contiguous(memory_format=torch.channels_last)  # like the crops (one weight layout)
        base_inputs = []
        for layer, ratio in zip(net.layers, self.base_ratios):
            base_inputs.append(x)
            raw = F.conv2d(x, layer.conv.weight, None, layer.stride, layer.padding, layer.dilation)
            x = F.leaky_relu(raw * ratio.to(raw.dtype) + layer.bias.view(1, -1, 1, 1).to(raw.dtype), net.act.negative_slope)
        base_final = x
        image_of_view = torch.arange(b, device=images.device).repeat_interleave(count)
        view = torch.arange(b * count, device=images.device)

        def per_view(t: torch.Tensor) -> torch.Tensor:  # the plan's rows for views start..stop of every image
            rows = t[start:stop]
            return rows if b == 1 else rows.repeat(b, *([1] * (t.ndim - 1)))

        crop: torch.Tensor | None = None
        for layer, plan, base in zip(net.layers, self.layers, base_inputs):
            # the view's true input over the window: its previous crop where it has one, else the base (the
            # view equals the base outside its crop), 0 in the padding; one gather from both
            xw = _gather_rows(base, crop, image_of_view, view, per_view(plan.base_index),
                              None if plan.crop_index is None else per_view(plan.crop_index))
            if crop is None:  # the first layer: the image with the hole
                assert plan.mask is not None
                xw = xw * per_view(plan.mask).to(xw.dtype)
            # later layers need no mask multiply: their input is already 0 where the view's mask is 0 (eq. 5
            # zeroes those outputs) and the mask is 1 outside the crop
            raw = F.conv2d(xw, layer.conv.weight.to(xw.dtype), None, layer.stride, 0, layer.dilation)
            # eq. 5 on the crop: raw * ratio + b where the window has a valid pixel, else 0 (ratio is 0 there)
            bias = per_view(plan.new_mask).to(raw.dtype) * layer.bias.view(1, -1, 1, 1).to(raw.dtype)
            crop = F.leaky_relu(torch.addcmul(bias, raw, per_view(plan.ratio).to(raw.dtype)), net.act.negative_slope)
        assert crop is not None
        r = self.readout
        values = _gather_rows(base_final, crop, image_of_view, view, per_view(r.base_index), per_view(r.crop_index))
        sampled = (values * per_view(r.weights).to(values.dtype)).sum(dim=1)  # (B * count, C)
        return net.head(sampled)


def _gather_rows(
    base: torch.Tensor, crop: torch.Tensor | None, image_of_view: torch.Tensor, view: torch.Tensor,
    base_index: torch.Tensor, crop_index: torch.Tensor | None,
) -> torch.Tensor:
    """One gather from the base maps (B, C, H, W) and the views' crops (V, C, hy, hx): for every view v and
    position q of ``base_index`` (V, *Q) the crop's cell ``crop_index[v, q]`` where it is >= 0, else the base
    cell ``base_index[v, q]`` of image ``image_of_view[v]`` where that is >= 0, else 0.

    Returns (V, C, Qy, Qx) (a channels-last view) for windows Q = (Qy, Qx), or (V, K, C) for K points."""
    b, c, h, w = base.shape
    parts = [base.permute(0, 2, 3, 1).reshape(-1, c)]  # channels-last maps: these are views, no copies
    lead = (-1,) + (1,) * (base_index.ndim - 1)
    index = torch.where(base_index >= 0, image_of_view.view(lead) * (h * w) + base_index, -1)
    if crop is not None and crop_index is not None:
        hy, hx = crop.shape[-2:]
        parts.append(crop.permute(0, 2, 3, 1).reshape(-1, c))
        index = torch.where(crop_index >= 0, b * h * w + view.view(lead) * (hy * hx) + crop_index, index)
    parts.append(base.new_zeros(1, c))
    table = torch.cat(parts)
    index = torch.where(index >= 0, index, table.shape[0] - 1)
    rows = table.index_select(0, index.flatten()).view(*base_index.shape, c)
    return rows.permute(0, 3, 1, 2) if base_index.ndim == 3 else rows


def _gather(source: torch.Tensor, item: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Windows ``source[item[v], :, rows[v], cols[v]]``: (M, C, H, W), (V,), (V, Ly), (V, Lx) -> (V, C, Ly, Lx)
    (a channels-last view); the plan's masks and ratios are cut with it."""
    return source[item.view(-1, 1, 1), :, rows.unsqueeze(2), cols.unsqueeze(1)].permute(0, 3, 1, 2)
