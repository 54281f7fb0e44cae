"""Defects of the reference cell drawn onto a woven sheet, each with its exact region.

Kinds (their names are the MVTec ``defect_type`` of the images that show them): foreign objects lying
on the sheet (``nut``, ``washer``, ``screwdriver``, ``metal_part``), and faults of the fabric itself
(``fold``, ``stain``, ``missing_thread``, ``broken_thread``).

A defect is drawn into a patch of the sheet's RGB albedo (uint8, (H, W, 3), texel coordinates as in
:mod:`acquisition.sim.fabric`) and returns the exact set of texels it changed (a bool mask over that
patch): that mask is the ground truth the simulated camera renders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from acquisition.sim.fabric import HiddenTow, TexelGrid, WeavePattern

FOREIGN_OBJECT_KINDS = ("nut", "washer", "screwdriver", "metal_part")
FABRIC_FAULT_KINDS = ("fold", "stain", "missing_thread", "broken_thread")
DEFECT_KINDS = FOREIGN_OBJECT_KINDS + FABRIC_FAULT_KINDS
#: The kinds of the ``hard`` scene (subtle variants, see :func:`sample_defect`): no bright tools on the sheet.
SUBTLE_KINDS = ("broken_thread", "missing_thread", "stain", "fold", "metal_part")

_SUPERSAMPLE = 4  # polygons are rasterised at 4x and area-averaged: anti-aliased edges, exact coverage


@dataclass(frozen=True)
class Defect:
    """One defect on a part.

    ``label``: its value in the part's label map (1, 2, ...). ``center_m``: (x, y) in the part frame,
    metres; ``bbox_m``: (x_min, y_min, x_max, y_max) in the part frame; ``polygon_m``: (N, 2) convex hull
    of its region in the part frame. ``texel_origin``: (row, col) of ``mask``'s top-left texel;
    ``mask``: (h, w) bool, the exact texels the defect changed.
    """

    kind: str
    label: int
    center_m: tuple[float, float]
    bbox_m: tuple[float, float, float, float]
    polygon_m: np.ndarray
    texel_origin: tuple[int, int]
    mask: np.ndarray


@dataclass(frozen=True)
class DefectSpec:
    """A sampled defect before placement: ``kind``, its random ``params`` and ``radius_m``, the radius of
    a disc around its centre that contains everything it draws."""

    kind: str
    params: dict
    radius_m: float


@dataclass
class _Patch:
    """A square texel patch around a defect centre: slices and local coordinates (texels, from the centre)."""

    rows: slice
    cols: slice
    x: np.ndarray  # (1, w) float32, u - uc
    y: np.ndarray  # (h, 1) float32, v - vc
    uc: float
    vc: float

    @classmethod
    def around(cls, uc: float, vc: float, radius: float, shape: tuple[int, int]) -> "_Patch":
        h, w = shape
        r0, r1 = max(0, int(np.floor(vc - radius))), min(h, int(np.ceil(vc + radius)) + 1)
        c0, c1 = max(0, int(np.floor(uc - radius))), min(w, int(np.ceil(uc + radius)) + 1)
        x = (np.arange(c0, c1, dtype=np.float32) - np.float32(uc))[None, :]
        y = (np.arange(r0, r1, dtype=np.float32) - np.float32(vc))[:, None]
        return cls(slice(r0, r1), slice(c0, c1), x, y, uc, vc)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.stop - self.rows.start, self.cols.stop - self.cols.start

    def u(self) -> np.ndarray:
        return self.x + np.float32(self.uc)

    def v(self) -> np.ndarray:
        return self.y + np.float32(self.vc)

    def coverage(self, polygons: list[np.ndarray], holes: list[np.ndarray] = ()) -> np.ndarray:
        """Anti-aliased coverage (h, w) float32 in [0, 1] of polygons (each (N, 2), local texel coords
        from the centre), minus holes."""
        h, w = self.shape
        ss = _SUPERSAMPLE
        canvas = np.zeros((h * ss, w * ss), dtype=np.uint8)
        offset = np.array([self.uc - self.cols.start, self.vc - self.rows.start])

        def to_canvas(poly: np.ndarray) -> np.ndarray:
            # texel centre c covers [c - 0.5, c + 0.5); supersampled pixel k covers [k/ss, (k+1)/ss) - 0.5
            pts = ((np.asarray(poly, dtype=np.float64) + offset + 0.5) * ss - 0.5) * 16.0
            return np.round(pts).astype(np.int32).reshape(-1, 1, 2)

        cv2.fillPoly(canvas, [to_canvas(p) for p in polygons], 255, lineType=cv2.LINE_8, shift=4)
        if holes:
            cv2.fillPoly(canvas, [to_canvas(p) for p in holes], 0, lineType=cv2.LINE_8, shift=4)
        cov = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        return cov


# --- shapes ----------------------------------------------------------------------------------------
def _rot(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.asarray(points, dtype=np.float64) @ np.array([[c, s], [-s, c]])


def _regular_polygon(radius: float, n: int, angle: float) -> np.ndarray:
    t = angle + np.arange(n) * 2 * np.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=-1)


def _rounded_rect(length: float, width: float, angle: float, center: tuple[float, float], n: int = 10) -> np.ndarray:
    """A rectangle with semicircular ends along its length, (M, 2)."""
    r = width / 2.0
    half = max(0.0, length / 2.0 - r)
    t1 = np.linspace(-np.pi / 2, np.pi / 2, n)
    t2 = np.linspace(np.pi / 2, 3 * np.pi / 2, n)
    right = np.stack([half + r * np.cos(t1), r * np.sin(t1)], axis=-1)
    left = np.stack([-half + r * np.cos(t2), r * np.sin(t2)], axis=-1)
    return _rot(np.concatenate([right, left]), angle) + np.asarray(center)


# --- shading ---------------------------------------------------------------------------------------
def _metal(patch: _Patch, cov: np.ndarray, base_rgb: np.ndarray, radius: float, rng: np.random.Generator,
           weave: WeavePattern) -> np.ndarray:
    """Shaded metal colour (h, w, 3) float32: darker rim, a directional gradient and a specular streak."""
    inside = (cov > 0).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3).astype(np.float32)
    rim = np.clip(dist / max(2.0, 0.15 * radius), 0.0, 1.0)
    az = weave.light_azimuth
    proj = (np.cos(az) * patch.x + np.sin(az) * patch.y) / np.float32(max(radius, 1.0))
    grad = 0.85 - 0.2 * proj
    offset = rng.uniform(-0.4, 0.4)
    streak = np.exp(-(((proj - offset) / 0.12) ** 2)) * rng.uniform(0.15, 0.35)
    value = (0.45 + 0.55 * rim) * grad
    lit = weave.lighting(patch.u(), patch.v())
    rgb = value[..., None] * base_rgb[None, None, :] + streak[..., None]
    return np.clip(rgb * lit[..., None], 0.0, 1.0).astype(np.float32)


def _blend(albedo: np.ndarray, patch: _Patch, cov: np.ndarray, colour: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Alpha-blend ``colour`` (h, w, 3) float [0, 1] into the albedo patch by coverage (times ``strength``
    (0..1]: a faint defect); return the mask (where the coverage is at least half, whatever the strength)."""
    region = albedo[patch.rows, patch.cols].astype(np.float32) / 255.0
    alpha = cov if strength == 1.0 else cov * np.float32(strength)
    out = region * (1.0 - alpha[..., None]) + colour * alpha[..., None]
    albedo[patch.rows, patch.cols] = np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
    return cov >= 0.5


_STEEL = np.array([0.62, 0.64, 0.68], dtype=np.float32)
_BRASS = np.array([0.78, 0.64, 0.32], dtype=np.float32)
_DARK_STEEL = np.array([0.35, 0.36, 0.38], dtype=np.float32)
_HANDLE_COLOURS = np.array(
    [[0.80, 0.12, 0.10], [0.95, 0.78, 0.10], [0.12, 0.30, 0.75], [0.10, 0.10, 0.10], [0.15, 0.55, 0.20]],
    dtype=np.float32,
)
_STAIN_COLOURS = np.array(
    [[0.50, 0.38, 0.22], [0.30, 0.30, 0.28], [0.62, 0.36, 0.18], [0.55, 0.55, 0.30]], dtype=np.float32
)


# --- samplers: kind -> params and bounding radius (metres) ----------------------------------------
def _sample_nut(rng: np.random.Generator) -> tuple[dict, float]:
    r = rng.uniform(3.0e-3, 6.0e-3)
    return {"radius": r, "angle": rng.uniform(0, np.pi), "hole": rng.uniform(0.45, 0.6),
            "colour": "brass" if rng.random() < 0.25 else "steel"}, r * 1.05


def _sample_washer(rng: np.random.Generator) -> tuple[dict, float]:
    r = rng.uniform(4.0e-3, 8.0e-3)
    return {"radius": r, "hole": rng.uniform(0.4, 0.55)}, r * 1.05


def _sample_screwdriver(rng: np.random.Generator) -> tuple[dict, float]:
    shaft = rng.uniform(35e-3, 60e-3)
    handle = rng.uniform(30e-3, 45e-3)
    return {
        "shaft_length": shaft,
        "shaft_width": rng.uniform(2.5e-3, 4.0e-3),
        "handle_length": handle,
        "handle_width": rng.uniform(10e-3, 14e-3),
        "angle": rng.uniform(0, 2 * np.pi),
        "handle_colour": int(rng.integers(len(_HANDLE_COLOURS))),
    }, (shaft + handle) / 2.0 + 8e-3


def _sample_metal_part(rng: np.random.Generator) -> tuple[dict, float]:
    size = rng.uniform(4e-3, 10e-3)
    n = int(rng.integers(5, 9))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = size * rng.uniform(0.55, 1.0, n)
    return {"vertices": np.stack([radii * np.cos(t), radii * np.sin(t)], axis=-1), "size": size,
            "hole": bool(rng.random() < 0.5), "dark": bool(rng.random() < 0.4)}, size * 1.05


def _sample_fold(rng: np.random.Generator) -> tuple[dict, float]:
    length = rng.uniform(20e-3, 60e-3)
    return {"length": length, "width": rng.uniform(3e-3, 8e-3), "angle": rng.uniform(0, np.pi),
            "shift": rng.uniform(2.0, 6.0)}, length / 2.0 + 1e-3


def _sample_stain(rng: np.random.Generator) -> tuple[dict, float]:
    r = rng.uniform(3e-3, 12e-3)
    return {"radius": r, "strength": rng.uniform(0.35, 0.7), "colour": int(rng.integers(len(_STAIN_COLOURS)))}, r * 1.25


def _sample_missing_thread(rng: np.random.Generator) -> tuple[dict, float]:
    length = rng.uniform(15e-3, 45e-3)
    return {"length": length, "direction": "warp" if rng.random() < 0.5 else "weft"}, length / 2.0 + 4e-3


def _sample_broken_thread(rng: np.random.Generator) -> tuple[dict, float]:
    gap = rng.uniform(1.5e-3, 4e-3)
    return {"gap": gap, "direction": "warp" if rng.random() < 0.5 else "weft",
            "strands": int(rng.integers(3, 7))}, gap / 2.0 + 8e-3


_SAMPLERS: dict[str, Callable[[np.random.Generator], tuple[dict, float]]] = {
    "nut": _sample_nut,
    "washer": _sample_washer,
    "screwdriver": _sample_screwdriver,
    "metal_part": _sample_metal_part,
    "fold": _sample_fold,
    "stain": _sample_stain,
    "missing_thread": _sample_missing_thread,
    "broken_thread": _sample_broken_thread,
}


def _subtle(kind: str, rng: np.random.Generator, contrast: float) -> tuple[dict, float]:
    """The ``hard`` scene's subtle variant of ``kind``: a single short broken or missing thread, a faint small
    stain, a shallow narrow fold, a small metal part of fibre-like grey (halfway from the fabric's grey to steel).
    ``contrast`` (0..1] is how visible each is: the opacity with which the fold, the metal part and the broken or
    missing thread are blended into the fabric (for a thread: the share of the tow's filaments gone), and the
    stain's darkening. The defect's region (its mask) does not depend on it, except a stain's faint rim.
    The stain's darkening (0.30-0.50 at contrast 1) and the broken thread's gap (1.5-3.5 mm, 2-3 frayed strands)
    were raised from 0.10-0.22 and 0.8-2 mm / 1-2 strands by measurement (bench_hard_preset: those were below
    the model's noise, per-image AUROC 0.66 and 0.79); the random draws are the same, so the same seed gives
    defects at nearly the same places."""
    if kind == "stain":
        r = rng.uniform(2.5e-3, 6e-3)
        return {"radius": r, "strength": contrast * rng.uniform(0.30, 0.50),
                "colour": int(rng.integers(len(_STAIN_COLOURS)))}, r * 1.25
    if kind == "fold":
        length = rng.uniform(10e-3, 25e-3)
        return {"length": length, "width": rng.uniform(2e-3, 4e-3), "angle": rng.uniform(0, np.pi),
                "shift": rng.uniform(0.6, 1.5), "depth": rng.uniform(0.3, 0.6),
                "visibility": float(contrast)}, length / 2.0 + 1e-3
    if kind == "missing_thread":
        length = rng.uniform(6e-3, 15e-3)
        return {"length": length, "direction": "warp" if rng.random() < 0.5 else "weft",
                "visibility": float(contrast)}, length / 2.0 + 4e-3
    if kind == "broken_thread":
        gap = rng.uniform(1.5e-3, 3.5e-3)
        return {"gap": gap, "direction": "warp" if rng.random() < 0.5 else "weft",
                "strands": int(rng.integers(2, 4)), "visibility": float(contrast)}, gap / 2.0 + 8e-3
    if kind == "metal_part":
        params, radius = _sample_metal_part(rng)
        size = rng.uniform(2e-3, 4e-3)
        params.update(vertices=params["vertices"] / params["size"] * size, size=size, hole=False, dark=False,
                      fibre=0.5, visibility=float(contrast))
        return params, size * 1.05
    raise ValueError(f"defect kind {kind!r} has no subtle variant; subtle kinds: {', '.join(SUBTLE_KINDS)}")


def sample_defect(kind: str, rng: np.random.Generator, *, subtle: bool = False, contrast: float = 1.0) -> DefectSpec:
    """Draw the random parameters of one defect of ``kind`` (one of :data:`DEFECT_KINDS`); ``subtle``: the
    ``hard`` scene's variant (one of :data:`SUBTLE_KINDS`, ``contrast`` scaling its visibility)."""
    if kind not in _SAMPLERS:
        raise ValueError(f"unknown defect kind {kind!r}; known: {', '.join(DEFECT_KINDS)}")
    params, radius = _subtle(kind, rng, contrast) if subtle else _SAMPLERS[kind](rng)
    return DefectSpec(kind=kind, params=params, radius_m=float(radius))


# --- drawers: draw into the albedo, return (patch, mask) -------------------------------------------
def _draw_nut(p: dict, patch: _Patch, albedo, weave, rng, s) -> np.ndarray:
    r = p["radius"] / s
    outer = _regular_polygon(r, 6, p["angle"])
    hole = _regular_polygon(r * p["hole"], 32, 0.0)
    cov = patch.coverage([outer], [hole])
    colour = _metal(patch, cov, _BRASS if p["colour"] == "brass" else _STEEL, r, rng, weave)
    return _blend(albedo, patch, cov, colour)


def _draw_washer(p: dict, patch: _Patch, albedo, weave, rng, s) -> np.ndarray:
    r = p["radius"] / s
    cov = patch.coverage([_regular_polygon(r, 64, 0.0)], [_regular_polygon(r * p["hole"], 48, 0.0)])
    return _blend(albedo, patch, cov, _metal(patch, cov, _STEEL * 1.1, r, rng, weave))


def _draw_screwdriver(p: dict, patch: _Patch, albedo, weave, rng, s) -> np.ndarray:
    a = p["angle"]
    d = np.array([np.cos(a), np.sin(a)])
    ls, ws = p["shaft_length"] / s, p["shaft_width"] / s
    lh, wh = p["handle_length"] / s, p["handle_width"] / s
    total = ls + lh
    shaft_c = d * (-total / 2.0 + ls / 2.0)
    handle_c = d * (total / 2.0 - lh / 2.0)
    # shaft: a rectangle with a flat tip; handle: a rounded rectangle, slightly overlapping the shaft
    hs = np.array([[-ls / 2, -ws / 2], [ls / 2, -ws / 2], [ls / 2, ws / 2], [-ls / 2, ws / 2]])
    tip = np.array([[-ls / 2 - ws * 0.6, -ws * 0.2], [-ls / 2, -ws / 2], [-ls / 2, ws / 2], [-ls / 2 - ws * 0.6, ws * 0.2]])
    shaft_poly = _rot(hs, a) + shaft_c
    tip_poly = _rot(tip, a) + shaft_c
    handle_poly = _rounded_rect(lh, wh, a, tuple(handle_c))
    cov_shaft = patch.coverage([shaft_poly, tip_poly])
    cov_handle = patch.coverage([handle_poly])
    metal = _metal(patch, cov_shaft, _STEEL, ws * 2, rng, weave)
    handle_rgb = _HANDLE_COLOURS[p["handle_colour"]]
    plastic = _metal(patch, cov_handle, handle_rgb, wh, rng, weave)
    colour = np.where((cov_handle > 0)[..., None], plastic, metal)
    cov = np.maximum(cov_shaft, cov_handle)
    return _blend(albedo, patch, cov, colour)


def _draw_metal_part(p: dict, patch: _Patch, albedo, weave, rng, s) -> np.ndarray:
    verts = p["vertices"] / s
    hull = cv2.convexHull(verts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    holes = [_regular_polygon(p["size"] / s * 0.2, 24, 0.0)] if p["hole"] else []
    cov = patch.coverage([hull], holes)
    base = _DARK_STEEL if p["dark"] else _STEEL
    if "fibre" in p:  # the hard scene: grey like the fibre, ``fibre`` (0..1] of the way from the fabric to steel
        fabric = np.float32(weave.config.brightness) * np.asarray(weave.config.tint_rgb, dtype=np.float32)
        base = (fabric + np.float32(p["fibre"]) * (_STEEL - fabric)).astype(np.float32)
    return _blend(albedo, patch, cov, _metal(patch, cov, base, p["size"] / s, rng, weave), p.get("visibility", 1.0))


def _draw_fold(p: dict, patch: _Patch, albedo, weave, rng, s) -> np.ndarray:
    a = p["angle"]
    c, si = np.float32(np.cos(a)), np.float32(np.sin(a))
    half_len = p["length"] / s / 2.0
    half_w = p["width"] / s / 2.0
    along = c * patch.x + si * patch.y
    across = -si * patch.x + c * patch.y
    sl = along / np.float32(half_len)
    hw = np.float32(half_w) * np.clip(1.0 - sl * sl, 0.0, 1.0) ** 0.4
    inside = (np.abs(sl) < 1.0) & (np.abs(across) < hw) & (hw > 0.5)
    t = np.where(inside, across / np.maximum(hw, 1e-3), 0.0).astype(np.float32)
    # the folded-over layer: the weave mirrored about the fold line and brought from ``shift`` widths away
    shift = np.float32(p["shift"] * half_w * 2.0)
    src_x = c * along - (-si) * (across - shift)
    src_y = si * along - c * (across - shift)
    u = (src_x + np.float32(patch.uc)).astype(np.float32)
    v = (src_y + np.float32(patch.vc)).astype(np.float32)
    grey, _ = weave.shade(u, v, patch.rows, patch.cols)
    ridge = 0.85 + 0.5 * (1.0 - t * t) * (0.5 - 0.5 * t)
    crease = 1.0 - 0.55 * np.exp(-(((np.abs(t) - 1.0) / 0.12) ** 2))
    if "depth" in p:  # a shallow fold (the hard scene): ridge and crease ``depth`` (0..1] of the default's
        depth = np.float32(p["depth"])
        ridge = 1.0 + depth * (ridge - 1.0)
        crease = 1.0 - depth * (1.0 - crease)
    grey = np.clip(grey * ridge * crease, 0.0, 1.0)
    colour = weave.colorize(grey, patch.u(), patch.v())
    return _blend(albedo, patch, inside.astype(np.float32), colour, p.get("visibility", 1.0))


def _draw_stain(p: dict, patch: _Patch, albedo, weave, rng, s) -> np.ndarray:
    r = p["radius"] / s
    h, w = patch.shape
    small = rng.standard_normal((6, 6)).astype(np.float32)
    noise = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    noise = np.clip(noise / max(float(noise.std()), 1e-6), -2.0, 2.0)
    rr = (patch.x ** 2 + patch.y ** 2) / np.float32(r * r)
    f = 1.0 - rr + 0.35 * noise
    alpha = np.clip((f - 0.3) / 0.15, 0.0, 1.0)
    alpha *= 1.0 + 0.35 * np.exp(-(((f - 0.35) / 0.08) ** 2))  # darker drying rim
    alpha = np.clip(alpha * np.float32(p["strength"]), 0.0, 1.0)
    colour = _STAIN_COLOURS[p["colour"]]
    region = albedo[patch.rows, patch.cols].astype(np.float32) / 255.0
    out = region * (1.0 - alpha[..., None] * (1.0 - colour))
    albedo[patch.rows, patch.cols] = np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
    return alpha > 0.02


def _tow_through_centre(weave: WeavePattern, patch: _Patch, direction: str) -> tuple[HiddenTow, float, float]:
    """The tow (warp or weft) passing nearest the patch centre, its index and centre-line coordinate."""
    a, b = weave.tow_coordinates(np.float32(patch.uc), np.float32(patch.vc))
    a, b = float(a), float(b)
    if direction == "warp":
        return HiddenTow("warp", int(np.floor(a)), 0.0, 0.0), a, b
    return HiddenTow("weft", int(np.floor(b)), 0.0, 0.0), a, b


def _draw_missing_thread(p: dict, patch: _Patch, albedo, weave, rng, s) -> np.ndarray:
    tow, a, b = _tow_through_centre(weave, patch, p["direction"])
    pitch_along = weave.pitch_weft if tow.direction == "warp" else weave.pitch_warp
    half = p["length"] / s / 2.0 / pitch_along
    centre = b if tow.direction == "warp" else a
    hidden = HiddenTow(tow.direction, tow.index, centre - half, centre + half)
    rgb, cover = weave.render_patch(patch.rows, patch.cols, hidden)
    return _blend(albedo, patch, cover.astype(np.float32), rgb, p.get("visibility", 1.0))


def _draw_broken_thread(p: dict, patch: _Patch, albedo, weave, rng, s) -> np.ndarray:
    tow, a, b = _tow_through_centre(weave, patch, p["direction"])
    warp = tow.direction == "warp"
    pitch_along = weave.pitch_weft if warp else weave.pitch_warp
    pitch_across = weave.pitch_warp if warp else weave.pitch_weft
    gap = p["gap"] / s
    centre = b if warp else a
    hidden = HiddenTow(tow.direction, tow.index, centre - gap / 2.0 / pitch_along, centre + gap / 2.0 / pitch_along)
    rgb, cover = weave.render_patch(patch.rows, patch.cols, hidden)
    # frayed strands at both broken ends, drawn as thin anti-aliased polylines
    ang = weave.angle
    along_dir = np.array([-np.sin(ang), np.cos(ang)]) if warp else np.array([np.cos(ang), np.sin(ang)])
    across_dir = np.array([along_dir[1], -along_dir[0]])
    across_off = ((tow.index + 0.5) - (a if warp else b)) * pitch_across
    mid = np.array([patch.uc, patch.vc]) + across_dir * across_off
    h, w = patch.shape
    canvas = np.zeros((h, w), dtype=np.uint8)
    origin = np.array([patch.cols.start, patch.rows.start], dtype=np.float64)
    half_tow = weave.config.tow_fill * pitch_across / 2.0
    for sign in (-1.0, 1.0):
        end = mid + sign * along_dir * gap / 2.0
        for _ in range(p["strands"]):
            start = end + across_dir * rng.uniform(-half_tow, half_tow)
            length = rng.uniform(1.5e-3, 5e-3) / s
            theta = rng.uniform(-0.6, 0.6)
            bend = rng.uniform(-0.8, 0.8)
            ts = np.linspace(0.0, 1.0, 12)[:, None]
            direction = _rot((-sign * along_dir)[None, :], theta)[0]
            normal = np.array([direction[1], -direction[0]])
            pts = start + ts * length * direction + (ts ** 2) * bend * length * 0.3 * normal - origin
            cv2.polylines(canvas, [np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)], False, 255,
                          thickness=1, lineType=cv2.LINE_AA, shift=4)
    alpha = canvas.astype(np.float32) / 255.0
    strand = weave.colorize(np.full((h, w), min(1.0, weave.config.brightness * 1.25), np.float32), patch.u(), patch.v())
    colour = np.where(cover[..., None], rgb, strand)
    cov = np.maximum(cover.astype(np.float32), alpha)
    return _blend(albedo, patch, cov, colour, p.get("visibility", 1.0))


_DRAWERS = {
    "nut": _draw_nut,
    "washer": _draw_washer,
    "screwdriver": _draw_screwdriver,
    "metal_part": _draw_metal_part,
    "fold": _draw_fold,
    "stain": _draw_stain,
    "missing_thread": _draw_missing_thread,
    "broken_thread": _draw_broken_thread,
}


def draw_defect(
    spec: DefectSpec,
    label: int,
    center_uv: tuple[float, float],
    albedo: np.ndarray,
    weave: WeavePattern,
    grid: TexelGrid,
    rng: np.random.Generator,
) -> Defect | None:
    """Draw ``spec`` centred at texel ``center_uv`` into ``albedo`` (H, W, 3) uint8, in place.

    Returns the :class:`Defect` with its exact mask, or None when the drawing changed no texel (e.g. a
    fold narrower than a texel); the caller then draws another one.
    """
    s = grid.texel_size_m
    patch = _Patch.around(center_uv[0], center_uv[1], spec.radius_m / s, grid.shape)
    mask = _DRAWERS[spec.kind](spec.params, patch, albedo, weave, rng, s)
    if not mask.any():
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    mask = np.ascontiguousarray(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    r0, c0 = patch.rows.start + int(rows[0]), patch.cols.start + int(cols[0])
    vv, uu = np.nonzero(mask)
    pts = np.stack([uu + c0, vv + r0], axis=-1).astype(np.float32)
    hull_uv = cv2.convexHull(pts).reshape(-1, 2).astype(np.float64)
    # the hull of texel centres, grown by half a texel so it encloses the texels' area
    centroid = hull_uv.mean(axis=0)
    grow = hull_uv - centroid
    norms = np.linalg.norm(grow, axis=1, keepdims=True)
    hull_uv = hull_uv + grow / np.maximum(norms, 1e-9) * 0.71
    polygon = grid.to_part(hull_uv)
    corners = grid.to_part(np.array([[c0 - 0.5, r0 - 0.5], [c0 + mask.shape[1] - 0.5, r0 + mask.shape[0] - 0.5]]))
    bbox = (float(corners[:, 0].min()), float(corners[:, 1].min()), float(corners[:, 0].max()), float(corners[:, 1].max()))
    center = grid.to_part(np.array([center_uv]))[0]
    return Defect(
        kind=spec.kind,
        label=label,
        center_m=(float(center[0]), float(center[1])),
        bbox_m=bbox,
        polygon_m=polygon,
        texel_origin=(r0, c0),
        mask=mask,
    )
