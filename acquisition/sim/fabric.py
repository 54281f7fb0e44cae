"""Procedural woven glass-fibre sheets: a plain weave of warp and weft tows, in part texture coordinates.

Texture coordinates: ``u`` = column index, ``v`` = row index of the texel grid, texel centres at integer
values, ``texel_size_m`` metres apart. Warp tows run along ``v`` (down the texture), weft tows along ``u``.
The weave is a *function* of (u, v) with per-sheet random parameters, so a patch of the sheet can be
re-evaluated with a tow removed (missing / broken thread) or with mirrored coordinates (fold):
:class:`WeavePattern` does that; :func:`make_weave` draws a new sheet's pattern from a random generator and
:func:`render_sheet` turns it into the sheet's RGB albedo.

Shading is a reflectance (albedo) in [0, 1]: rounded tow cross-sections, crimp where a tow dives under
its neighbour, fibre striations along each tow, fine fibre grain, darker gaps between tows, a sheen that
depends on the tow direction relative to the light azimuth and a mild illumination gradient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class FabricConfig(BaseModel):
    """Appearance of the woven sheet (lengths in metres; amplitudes relative to the mean albedo)."""

    model_config = ConfigDict(extra="forbid")

    tow_pitch_m: float = Field(2.2e-3, gt=0.0, le=0.05, description="centre-to-centre spacing of the tows")
    tow_fill: float = Field(0.86, gt=0.3, le=1.0, description="tow width as a fraction of the pitch")
    pitch_jitter: float = Field(0.04, ge=0.0, le=0.3, description="relative per-sheet variation of the pitch")
    skew_deg: float = Field(0.8, ge=0.0, le=10.0, description="max rotation of the weave against the sheet edges")
    waviness_m: float = Field(0.12e-3, ge=0.0, le=5e-3, description="amplitude of the slow meander of the tows")
    brightness: float = Field(0.70, gt=0.0, le=1.0, description="mean albedo of a tow")
    gap_brightness: float = Field(0.20, ge=0.0, le=1.0, description="albedo seen through the gaps between tows")
    fibre_noise: float = Field(0.07, ge=0.0, le=1.0, description="amplitude of the striations along the tows")
    grain_noise: float = Field(0.04, ge=0.0, le=1.0, description="amplitude of the per-texel fibre grain")
    sheen: float = Field(0.12, ge=0.0, le=1.0, description="direction-dependent specular-looking modulation")
    illumination_gradient: float = Field(0.08, ge=0.0, le=0.5, description="relative brightness change across the sheet")
    tint_rgb: tuple[float, float, float] = Field(
        (1.0, 0.97, 0.90), description="colour of the glass fibre (multiplies the grey albedo)"
    )


@dataclass(frozen=True)
class TexelGrid:
    """The sheet's texel grid and its mapping to the part frame.

    Part frame: origin at the sheet centre, x along the texture columns, y against the texture rows (so a
    camera looking down the part's -z axis sees the texture unmirrored), z up, metres. Texel (u, v) has its
    centre at ``x = (u - (W - 1) / 2) * s``, ``y = -(v - (H - 1) / 2) * s``.
    """

    shape: tuple[int, int]
    texel_size_m: float

    @property
    def size_m(self) -> tuple[float, float]:
        """Sheet width and height, metres."""
        return self.shape[1] * self.texel_size_m, self.shape[0] * self.texel_size_m

    def to_part(self, uv: np.ndarray) -> np.ndarray:
        """Texel coordinates (N, 2) (u, v) -> part-frame points (N, 2) (x, y), metres."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        h, w = self.shape
        s = self.texel_size_m
        return np.stack([(uv[:, 0] - (w - 1) / 2.0) * s, -(uv[:, 1] - (h - 1) / 2.0) * s], axis=-1)

    def to_texel(self, xy: np.ndarray) -> np.ndarray:
        """Part-frame points (N, 2) (x, y), metres -> texel coordinates (N, 2) (u, v)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        h, w = self.shape
        s = self.texel_size_m
        return np.stack([xy[:, 0] / s + (w - 1) / 2.0, -xy[:, 1] / s + (h - 1) / 2.0], axis=-1)

    def part_to_texel_matrix(self) -> np.ndarray:
        """3x3 matrix A with ``[u, v, 1] = A @ [x, y, 1]`` (part metres -> texel coordinates)."""
        h, w = self.shape
        s = self.texel_size_m
        return np.array([[1.0 / s, 0.0, (w - 1) / 2.0], [0.0, -1.0 / s, (h - 1) / 2.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class WeavePattern:
    """One sheet's weave: geometry parameters and its noise fields, evaluable on any texel patch.

    ``pitch_*`` and ``meander_*`` in texels; ``angle`` (rad) rotates the weave against the sheet edges;
    ``light_azimuth`` (rad) is the direction of the sheen's light in texture coordinates. Noise fields are
    (H, W) float32 arrays over the whole sheet.
    """

    shape: tuple[int, int]
    config: FabricConfig
    pitch_warp: float
    pitch_weft: float
    phase_warp: float
    phase_weft: float
    angle: float
    meander_warp: np.ndarray  # (H,) offset of warp tows (texels) as a function of the row
    meander_weft: np.ndarray  # (W,) offset of weft tows (texels) as a function of the column
    light_azimuth: float
    gradient_direction: float
    warp_noise: np.ndarray  # (H, W) striations elongated along v
    weft_noise: np.ndarray  # (H, W) striations elongated along u
    grain: np.ndarray  # (H, W) per-texel grain

    # --- weave coordinates ---------------------------------------------------------------------------
    def tow_coordinates(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Texel coordinates (broadcastable arrays) -> continuous warp and weft tow coordinates.

        ``a``: across the warp tows (tow ``i`` covers ``a`` in [i, i+1)); ``b``: across the weft tows.
        Both in tow units (pitches).
        """
        c, s = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
        h, w = self.shape
        vi = np.clip(v, 0, h - 1).astype(np.float32)
        ui = np.clip(u, 0, w - 1).astype(np.float32)
        mw = np.interp(vi, np.arange(h, dtype=np.float32), self.meander_warp).astype(np.float32)
        mf = np.interp(ui, np.arange(w, dtype=np.float32), self.meander_weft).astype(np.float32)
        a = c * u + s * v
        a += mw
        a *= np.float32(1.0 / self.pitch_warp)
        a += np.float32(self.phase_warp)
        b = c * v - s * u
        b += mf
        b *= np.float32(1.0 / self.pitch_weft)
        b += np.float32(self.phase_weft)
        return a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)

    def shade(
        self,
        u: np.ndarray,
        v: np.ndarray,
        rows: slice,
        cols: slice,
        hidden: Optional["HiddenTow"] = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Grey albedo of the weave at texel coordinates ``u, v`` (patch shape (h, w), float32).

        ``rows, cols`` select the noise fields' patch that goes with the output (same shape). ``hidden``
        removes one tow over a span (missing / broken thread). Returns ``(albedo, hidden_cover)``: the
        albedo (h, w) float32 in [0, 1] and a bool (h, w) map of where the hidden tow would have been.
        """
        cfg = self.config
        a, b = self.tow_coordinates(u, v)
        shape = np.broadcast_shapes(a.shape, b.shape)
        a = np.broadcast_to(a, shape)
        b = np.broadcast_to(b, shape)
        ia = np.floor(a)
        ib = np.floor(b)
        half = np.float32(cfg.tow_fill / 2.0)
        fa = a - ia  # 0..1 across a warp tow's pitch
        fb = b - ib
        da = (fa - np.float32(0.5)) / half  # -1..1 across a warp tow
        db = (fb - np.float32(0.5)) / half
        warp_cover = np.abs(da) < 1.0
        weft_cover = np.abs(db) < 1.0
        hidden_cover = None
        if hidden is not None:
            if hidden.direction == "warp":
                hidden_cover = warp_cover & (ia == hidden.index) & (b >= hidden.start) & (b < hidden.stop)
                warp_cover &= ~hidden_cover
            else:
                hidden_cover = weft_cover & (ib == hidden.index) & (a >= hidden.start) & (a < hidden.stop)
                weft_cover &= ~hidden_cover
        # plain weave: at crossing (i, j) the warp is on top when i + j is even
        warp_top = ((ia.astype(np.int32) + ib.astype(np.int32)) & 1) == 0

        az = self.light_azimuth
        # sheen: tows across the light direction glint more; one flank of each tow catches the light
        dir_warp = np.float32(1.0 + cfg.sheen * np.cos(2.0 * (az - (self.angle + np.pi / 2))))
        dir_weft = np.float32(1.0 + cfg.sheen * np.cos(2.0 * (az - self.angle)))
        flank_warp = np.float32(0.5 * cfg.sheen * np.cos(az - self.angle))
        flank_weft = np.float32(0.5 * cfg.sheen * np.sin(az - self.angle))
        br = np.float32(cfg.brightness)
        fibre = np.float32(cfg.fibre_noise)

        def tow_value(d: np.ndarray, f_along: np.ndarray, direction: np.float32, flank: np.float32,
                      noise: np.ndarray) -> np.ndarray:
            # rounded cross-section sqrt(1 - d^2), crimp 4 f (1 - f) (darker where the tow dives under the
            # crossing tow), sheen and flank highlight, fibre striations along the tow
            prof = np.clip(1.0 - d * d, 0.0, 1.0)
            np.sqrt(prof, out=prof)
            prof *= np.float32(0.45)
            prof += np.float32(0.55)
            crimp = f_along * (np.float32(1.0) - f_along)
            crimp *= np.float32(0.88)
            crimp += np.float32(0.78)
            prof *= crimp
            shade = d * flank
            shade += direction
            prof *= shade
            shade = noise * fibre
            shade += np.float32(1.0)
            prof *= shade
            prof *= br
            return prof

        warp_val = tow_value(da, fb, dir_warp, flank_warp, self.warp_noise[rows, cols])
        weft_val = tow_value(db, fa, dir_weft, flank_weft, self.weft_noise[rows, cols])
        show_warp = warp_cover & (warp_top | ~weft_cover)
        show_weft = weft_cover & ~show_warp
        out = np.full(shape, np.float32(cfg.gap_brightness), dtype=np.float32)
        np.copyto(out, warp_val, where=show_warp)
        np.copyto(out, weft_val, where=show_weft)
        if hidden_cover is None:
            hidden_cover = np.zeros(shape, dtype=bool)
        else:
            out[hidden_cover] *= np.float32(0.8)  # what a removed tow uncovers lies deeper, in its shadow
        grain = self.grain[rows, cols] * np.float32(cfg.grain_noise)
        grain += np.float32(1.0)
        out *= grain
        np.clip(out, 0.0, 1.0, out=out)
        return out, hidden_cover

    def lighting(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Relative illumination (broadcast shape of u, v) float32: a mild linear gradient over the sheet."""
        h, w = self.shape
        d = self.gradient_direction
        x = (u - (w - 1) / 2.0) / max(w, h) * 2.0
        y = (v - (h - 1) / 2.0) / max(w, h) * 2.0
        return (1.0 + self.config.illumination_gradient * (np.cos(d) * x + np.sin(d) * y)).astype(np.float32)

    def colorize(self, grey: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Grey albedo (h, w) -> lit RGB albedo (h, w, 3) float32 in [0, 1]."""
        lit = grey * self.lighting(u, v)
        tint = np.asarray(self.config.tint_rgb, dtype=np.float32)
        return np.clip(lit[..., None] * tint, 0.0, 1.0)

    def render_patch(
        self, rows: slice, cols: slice, hidden: Optional["HiddenTow"] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """RGB albedo (h, w, 3) float32 of a texel patch and the hidden tow's cover (h, w) bool."""
        u = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :]
        v = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None]
        grey, cover = self.shade(u, v, rows, cols, hidden)
        return self.colorize(grey, u, v), cover


@dataclass(frozen=True)
class HiddenTow:
    """A tow removed over a span: ``direction`` "warp" or "weft", tow ``index``, span [start, stop) in the
    other family's tow coordinate (pitches along the tow)."""

    direction: str
    index: int
    start: float
    stop: float


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], factor: tuple[int, int]) -> np.ndarray:
    """Unit-variance-ish noise (H, W) float32, correlated over ``factor`` = (rows, cols) texels."""
    h, w = shape
    small = rng.standard_normal((max(2, h // factor[0]), max(2, w // factor[1])), dtype=np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    std = float(big[::7, ::7].std()) or 1.0  # a subsample estimates the spread well and costs 1/49
    big *= np.float32(1.0 / std)
    return big


def _meander(rng: np.random.Generator, n: int, amplitude: float, pitch: float) -> np.ndarray:
    """A slow 1-D offset (n,) float32 in texels: a few random sinusoids with wavelengths of 10-60 pitches."""
    t = np.arange(n, dtype=np.float64)
    out = np.zeros(n)
    for _ in range(3):
        wavelength = rng.uniform(10.0, 60.0) * pitch
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * t / wavelength + rng.uniform(0, 2 * np.pi))
    return (out / 3.0 * amplitude).astype(np.float32)


def make_weave(config: FabricConfig, shape: tuple[int, int], texel_size_m: float, rng: np.random.Generator) -> WeavePattern:
    """Draw one sheet's weave parameters and noise fields for a texel grid of ``shape`` = (H, W)."""
    h, w = shape
    pitch = config.tow_pitch_m / texel_size_m
    if pitch < 4.0:
        raise ValueError(
            f"tow_pitch_m {config.tow_pitch_m} is only {pitch:.1f} texels of {texel_size_m} m; need >= 4 to draw a weave"
        )
    j = config.pitch_jitter
    stretch = max(2, int(round(pitch * 1.5)))
    return WeavePattern(
        shape=(h, w),
        config=config,
        pitch_warp=pitch * (1.0 + rng.uniform(-j, j)),
        pitch_weft=pitch * (1.0 + rng.uniform(-j, j)),
        phase_warp=float(rng.uniform(0, 1)),
        phase_weft=float(rng.uniform(0, 1)),
        angle=float(np.deg2rad(rng.uniform(-config.skew_deg, config.skew_deg))),
        meander_warp=_meander(rng, h, config.waviness_m / texel_size_m, pitch),
        meander_weft=_meander(rng, w, config.waviness_m / texel_size_m, pitch),
        light_azimuth=float(rng.uniform(0, 2 * np.pi)),
        gradient_direction=float(rng.uniform(0, 2 * np.pi)),
        warp_noise=_smooth_noise(rng, shape, (stretch * 4, 1)),
        weft_noise=_smooth_noise(rng, shape, (1, stretch * 4)),
        grain=_smooth_noise(rng, shape, (1, 1)),
    )


def render_sheet(weave: WeavePattern) -> np.ndarray:
    """The whole sheet's lit RGB albedo, (H, W, 3) uint8 (albedo 1.0 = 255)."""
    h, w = weave.shape
    u = np.arange(w, dtype=np.float32)[None, :]
    v = np.arange(h, dtype=np.float32)[:, None]
    grey, _ = weave.shade(u, v, slice(0, h), slice(0, w))
    grey *= weave.lighting(u, v)
    channels = [cv2.convertScaleAbs(grey, alpha=255.0 * float(t)) for t in weave.config.tint_rgb]  # saturating
    return cv2.merge(channels)
