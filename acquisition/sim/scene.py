"""The simulated world under the camera: a table, and on it a woven part (or a calibration board).

Frames: the robot base frame (metres). A part's frame has its origin at the sheet centre, x along the
texture columns, y against the texture rows, z up, lying on the table plane (see
:class:`acquisition.sim.fabric.TexelGrid`). Each new part is a fresh random sheet placed at the nominal
position with a few millimetres and degrees of jitter (as an operator places sheets), good or carrying
1-3 defects whose exact regions the scene keeps.

What the camera renders is a :class:`Surface`: a flat textured rectangle in the base frame with a
mapping from its own plane coordinates to texels, plus the table colour around it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from acquisition.sim.defects import DEFECT_KINDS, SUBTLE_KINDS, Defect, draw_defect, sample_defect
from acquisition.sim.fabric import FabricConfig, TexelGrid, _smooth_noise, make_weave, render_sheet
from calibration.transforms import Transform


class PlacementConfig(BaseModel):
    """Where parts lie: nominal centre (base frame, metres) and yaw, plus per-part placement jitter."""

    model_config = ConfigDict(extra="forbid")

    center_m: tuple[float, float, float] = Field((0.0, -0.45, 0.0), description="nominal sheet centre, base frame")
    yaw_deg: float = Field(0.0, ge=-180.0, le=180.0, description="nominal rotation of the sheet about base z")
    jitter_mm: float = Field(3.0, ge=0.0, le=50.0, description="max offset of a placement in x and in y")
    jitter_deg: float = Field(2.0, ge=0.0, le=45.0, description="max extra rotation of a placement about z")


class DefectsConfig(BaseModel):
    """How often parts are defective and which defects they carry."""

    model_config = ConfigDict(extra="forbid")

    probability: float = Field(0.5, ge=0.0, le=1.0, description="chance that a part of unspecified kind is defective")
    count: tuple[int, int] = Field((1, 3), description="min and max number of defects on a defective part")
    kinds: list[str] = Field(default_factory=lambda: list(DEFECT_KINDS), description="defect kinds to draw from")
    margin_mm: float = Field(4.0, ge=0.0, le=100.0, description="min distance of a defect from the sheet edge and other defects")

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one defect kind is needed")
        unknown = [k for k in value if k not in DEFECT_KINDS]
        if unknown:
            raise ValueError(f"unknown defect kind(s) {unknown}; known: {', '.join(DEFECT_KINDS)}")
        return value

    @field_validator("count")
    @classmethod
    def _count_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        lo, hi = value
        if lo < 1 or hi < lo or hi > 10:
            raise ValueError(f"count must be (min, max) with 1 <= min <= max <= 10, got {value}")
        return value


class HardSceneConfig(BaseModel):
    """What ``difficulty: hard`` changes. Subtle defects (:data:`~acquisition.sim.defects.SUBTLE_KINDS` unless
    ``defects.kinds`` is set, visibility ``defect_contrast``) and normal variation that is NOT a defect: per-part
    lighting drift, slight waviness of the sheet's tows, glints, fibre-density variation.

    Set by measurement (``benchmarks/bench_hard_preset.py``, README "Measured: bench_hard_preset"): a full-size
    SimpleNet trained on 8 good hard sheets, scored on 24 good and 24 defective sheets. With the first subtle
    defects (stain strength 0.10-0.22, broken-thread gap 0.8-2 mm with 1-2 strands) the per-image AUROC was 0.79
    at the knob's top: stains (0.66) and broken threads (0.79) sat in the model's noise, and switching off any
    one normal variation (glints, density shading, lighting drift, waviness, gradient) moved the good images'
    scores by at most 0.04 (of a 0.7-1.9 spread): the variation is not what made it hard, the invisible defects
    were. Stains now darken by 0.30-0.50, broken threads leave a 1.5-3.5 mm gap with 2-3 frayed strands; at
    ``defect_contrast`` 1.0 the AUROC is 0.88 (95 % interval over sheets 0.82-0.93; 0.78 at 0.8, 0.64 at 0.6),
    the value nearest 0.9, so 1.0 is the preset. The variation keeps its first values."""

    model_config = ConfigDict(extra="forbid")

    defect_contrast: float = Field(1.0, gt=0.0, le=1.0, description="visibility (opacity) of the subtle defects; "
                                   "1.0: SimpleNet's per-image AUROC 0.88 (bench_hard_preset)")
    lighting_drift: float = Field(0.10, ge=0.0, le=0.5, description="max relative brightness change between parts")
    density_variation: float = Field(0.06, ge=0.0, le=0.5, description="amplitude of slow fibre-density shading")
    density_scale_m: float = Field(0.015, gt=0.0, le=0.5, description="size of the density patches")
    glints: tuple[int, int] = Field((2, 8), description="min and max glints (small bright specks) per part")
    glint_gain: float = Field(0.35, ge=0.0, le=2.0, description="relative brightening at a glint's centre")
    waviness_m: float = Field(0.5e-3, ge=0.0, le=5e-3, description="meander amplitude of the tows (default 0.12 mm)")
    illumination_gradient: float = Field(0.15, ge=0.0, le=0.5, description="brightness change across the sheet")

    @field_validator("glints")
    @classmethod
    def _glint_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        lo, hi = value
        if lo < 0 or hi < lo or hi > 100:
            raise ValueError(f"glints must be (min, max) with 0 <= min <= max <= 100, got {value}")
        return value


class SceneConfig(BaseModel):
    """The simulated scene: sheet size and texel pitch, fabric look, placement, defects, table colour.

    ``difficulty``: ``default`` (the scene as it always was) or ``hard`` (see :class:`HardSceneConfig`).
    """

    model_config = ConfigDict(extra="forbid")

    sheet_width_m: float = Field(0.30, gt=0.0, le=2.0, description="sheet size along the part x axis")
    sheet_height_m: float = Field(0.25, gt=0.0, le=2.0, description="sheet size along the part y axis")
    texel_size_m: float = Field(1.0e-4, ge=1e-5, le=1e-3, description="texture resolution (0.1 mm)")
    fabric: FabricConfig = Field(default_factory=FabricConfig)
    placement: PlacementConfig = Field(default_factory=PlacementConfig)
    defects: DefectsConfig = Field(default_factory=DefectsConfig)
    table_rgb: tuple[float, float, float] = Field((0.14, 0.14, 0.15), description="albedo of the table, 0..1 per channel")
    difficulty: Literal["default", "hard"] = Field("default", description="default, or hard: subtle defects and "
                                                   "normal variation that is not a defect")
    hard: HardSceneConfig = Field(default_factory=HardSceneConfig)

    @model_validator(mode="after")
    def _texture_size(self) -> "SceneConfig":
        w = self.sheet_width_m / self.texel_size_m
        h = self.sheet_height_m / self.texel_size_m
        if w * h > 40e6:
            raise ValueError(
                f"sheet {self.sheet_width_m} x {self.sheet_height_m} m at texel_size_m {self.texel_size_m} "
                f"needs {w * h / 1e6:.0f} M texels; the limit is 40 M"
            )
        if w < 16 or h < 16:
            raise ValueError(f"sheet is only {w:.0f} x {h:.0f} texels; need at least 16 x 16")
        pitch = self.fabric.tow_pitch_m / self.texel_size_m
        if pitch < 4.0:
            raise ValueError(
                f"fabric.tow_pitch_m {self.fabric.tow_pitch_m} is only {pitch:.1f} texels of texel_size_m "
                f"{self.texel_size_m}; need >= 4 texels per tow"
            )
        return self


@dataclass
class Surface:
    """A flat textured rectangle the camera can see.

    ``T_base_surface``: the surface frame (its plane is z = 0). ``surface_to_texel``: 3x3 matrix mapping
    surface-plane points ``[x, y, 1]`` (metres) to texel coordinates ``[u, v, 1]`` (texel centres at
    integers). ``rgb`` (H, W, 3) (None: made from ``gray`` when first needed) and ``gray`` (H, W) uint8
    textures; ``labels`` (H, W) uint8 defect label map
    (0 = no defect) or None; ``label_kinds`` maps label -> defect kind; ``label_boxes`` label -> texel box
    (col0, row0, col1, row1) inclusive. ``background_rgb``: what the camera
    sees off the surface (the table), 0..255 per channel.
    """

    T_base_surface: Transform
    surface_to_texel: np.ndarray
    rgb: Optional[np.ndarray]
    gray: np.ndarray
    labels: Optional[np.ndarray]
    label_kinds: dict[int, str]
    background_rgb: tuple[float, float, float]
    label_boxes: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    part_id: Optional[str] = None
    is_defective: bool = False
    _pyramid: dict = field(default_factory=dict, repr=False)

    def level(self, level: int, color: bool) -> np.ndarray:
        """The texture at pyramid ``level`` (0 = full resolution; level L texel i is centred on level-0
        texel ``i * 2**L``), built by Gaussian pyrDown on first use and kept."""
        key = (level, color)
        if level == 0:
            if not color:
                return self.gray
            if self.rgb is None:  # a grey board shown to a colour camera: expanded on first use
                self.rgb = cv2.cvtColor(self.gray, cv2.COLOR_GRAY2RGB)
            return self.rgb
        img = self._pyramid.get(key)
        if img is None:
            img = cv2.pyrDown(self.level(level - 1, color))
            self._pyramid[key] = img
        return img


@dataclass
class PartInstance:
    """One simulated part: a woven sheet, where it lies, and its defects.

    ``T_base_part``: the part frame in the base frame. ``albedo`` (H, W, 3) uint8 RGB texture over the
    sheet; ``label_map`` (H, W) uint8: 0 on good fabric, ``defect.label`` inside each defect. ``kind`` is
    "good" or "defective".
    """

    part_id: str
    kind: str
    T_base_part: Transform
    grid: TexelGrid
    albedo: np.ndarray
    label_map: np.ndarray
    defects: list[Defect]
    _gray: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def is_defective(self) -> bool:
        return bool(self.defects)

    @property
    def size_m(self) -> tuple[float, float]:
        """Sheet width (part x) and height (part y), metres."""
        return self.grid.size_m

    @property
    def texel_size_m(self) -> float:
        return self.grid.texel_size_m

    @property
    def albedo_gray(self) -> np.ndarray:
        """Grey texture (H, W) uint8 (ITU-R 601 luma of the RGB albedo)."""
        if self._gray is None:
            self._gray = cv2.cvtColor(self.albedo, cv2.COLOR_RGB2GRAY)
        return self._gray

    def defect_mask(self) -> np.ndarray:
        """(H, W) bool: texels inside any defect."""
        return self.label_map > 0

    def part_to_base(self, xy: np.ndarray) -> np.ndarray:
        """Part-plane points (N, 2) metres -> base-frame points (N, 3)."""
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        return self.T_base_part.apply(np.concatenate([xy, np.zeros((len(xy), 1))], axis=1))

    def surface(self, table_rgb: Sequence[float]) -> Surface:
        return Surface(
            T_base_surface=self.T_base_part,
            surface_to_texel=self.grid.part_to_texel_matrix(),
            rgb=self.albedo,
            gray=self.albedo_gray,
            labels=self.label_map if self.defects else None,
            label_kinds={d.label: d.kind for d in self.defects},
            label_boxes={
                d.label: (d.texel_origin[1], d.texel_origin[0],
                          d.texel_origin[1] + d.mask.shape[1] - 1, d.texel_origin[0] + d.mask.shape[0] - 1)
                for d in self.defects
            },
            background_rgb=tuple(float(c) * 255.0 for c in table_rgb),  # type: ignore[arg-type]
            part_id=self.part_id,
            is_defective=self.is_defective,
        )


def part_seed(seed: int, part_id: str) -> np.random.SeedSequence:
    """The random stream of one part: a function of the scene seed and the part id only."""
    digest = hashlib.sha256(part_id.encode("utf-8")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *words])


class Scene:
    """The table, and on it the current part, a calibration board, or nothing.

    ``new_part(part_id)`` is deterministic in (seed, part_id): the same id gives the same sheet, placement
    and defects in any process.
    """

    def __init__(self, config: SceneConfig | None = None, seed: int = 0) -> None:
        self.config = config or SceneConfig()
        self.seed = int(seed)
        self._part: Optional[PartInstance] = None
        self._surface: Optional[Surface] = None

    # --- what is on the table ------------------------------------------------------------------------
    @property
    def current_part(self) -> Optional[PartInstance]:
        """The part on the table, or None (empty table or a board)."""
        return self._part

    @property
    def surface(self) -> Optional[Surface]:
        """What the camera renders: the current part or board, None for the bare table."""
        return self._surface

    @property
    def table_rgb(self) -> tuple[float, float, float]:
        """Table colour 0..255 per channel."""
        return tuple(float(c) * 255.0 for c in self.config.table_rgb)  # type: ignore[return-value]

    @property
    def nominal_T_base_part(self) -> Transform:
        """Where a part lies without placement jitter (pose plans aim at it)."""
        p = self.config.placement
        return Transform.from_rt(np.array([0.0, 0.0, np.deg2rad(p.yaw_deg)]), p.center_m)

    def load_part(self, part: PartInstance) -> None:
        """Put ``part`` on the table (replacing whatever was there)."""
        self._part = part
        self._surface = part.surface(self.config.table_rgb)

    def clear(self) -> None:
        """Remove the part or board: the camera sees the bare table."""
        self._part = None
        self._surface = None

    def set_board(
        self,
        texture: np.ndarray,
        pixel_size_m: float,
        T_base_board: Transform,
        origin_px: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        """Show a flat printed texture (e.g. a ChArUco board image) instead of a part.

        ``texture``: (H, W) or (H, W, 3) uint8 image, ``pixel_size_m`` metres per texture pixel.
        ``T_base_board``: the board frame in the base frame, OpenCV's board convention: x along the
        texture columns, y along its rows, z into the board (a board lying face up has z pointing down).
        ``origin_px``: where the board frame's origin lies in the texture, in pixel-edge coordinates
        ((0, 0) = the outer top-left corner of the image; use (margin, margin) for a board image with a
        white margin). Board point (x, y, 0) shows texture position ``origin_px + (x, y) / pixel_size_m``.
        """
        tex = np.asarray(texture)
        if tex.dtype != np.uint8 or tex.ndim not in (2, 3) or (tex.ndim == 3 and tex.shape[2] != 3):
            raise ValueError(f"board texture must be uint8 (H, W) or (H, W, 3), got {tex.dtype} {tex.shape}")
        if not (np.isfinite(pixel_size_m) and pixel_size_m > 0):
            raise ValueError(f"board pixel_size_m must be > 0, got {pixel_size_m}")
        if tex.ndim == 2:
            gray = np.ascontiguousarray(tex)
            rgb = None
        else:
            rgb = np.ascontiguousarray(tex)
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        s = float(pixel_size_m)
        ox, oy = float(origin_px[0]), float(origin_px[1])
        to_texel = np.array([[1.0 / s, 0.0, ox - 0.5], [0.0, 1.0 / s, oy - 0.5], [0.0, 0.0, 1.0]])
        self._part = None
        self._surface = Surface(
            T_base_surface=T_base_board,
            surface_to_texel=to_texel,
            rgb=rgb,
            gray=gray,
            labels=None,
            label_kinds={},
            background_rgb=self.table_rgb,
        )

    # --- parts ---------------------------------------------------------------------------------------
    def new_part(
        self, part_id: str, kind: Literal["good", "defective"] | None = None, load: bool = True
    ) -> PartInstance:
        """Make part ``part_id`` (a new random sheet, placement and defects) and, by default, put it on the
        table. ``kind`` forces good/defective; None draws it with ``defects.probability``."""
        if kind not in (None, "good", "defective"):
            raise ValueError(f"part kind must be 'good', 'defective' or None, got {kind!r}")
        if not isinstance(part_id, str) or not part_id:
            raise ValueError(f"part_id must be a non-empty string, got {part_id!r}")
        cfg = self.config
        rng = np.random.default_rng(part_seed(self.seed, part_id))
        if kind is None:
            kind = "defective" if rng.random() < cfg.defects.probability else "good"
        shape = (int(round(cfg.sheet_height_m / cfg.texel_size_m)), int(round(cfg.sheet_width_m / cfg.texel_size_m)))
        grid = TexelGrid(shape, cfg.texel_size_m)
        hard = cfg.difficulty == "hard"
        fabric = cfg.fabric
        if hard:
            fabric = fabric.model_copy(update={"waviness_m": cfg.hard.waviness_m,
                                               "illumination_gradient": cfg.hard.illumination_gradient})
        weave = make_weave(fabric, shape, cfg.texel_size_m, rng)
        albedo = render_sheet(weave)
        label_map = np.zeros(shape, dtype=np.uint8)
        defects: list[Defect] = []
        if kind == "defective":
            lo, hi = cfg.defects.count
            defects = self._draw_defects(int(rng.integers(lo, hi + 1)), albedo, label_map, weave, grid, rng, part_id)
        if hard:
            _normal_variation(albedo, cfg.hard, cfg.texel_size_m, rng)
        p = cfg.placement
        dx, dy = rng.uniform(-p.jitter_mm, p.jitter_mm, 2) * 1e-3
        yaw = np.deg2rad(p.yaw_deg + rng.uniform(-p.jitter_deg, p.jitter_deg))
        center = np.asarray(p.center_m, dtype=float) + [dx, dy, 0.0]
        part = PartInstance(
            part_id=part_id,
            kind=kind,
            T_base_part=Transform.from_rt(np.array([0.0, 0.0, yaw]), center),
            grid=grid,
            albedo=albedo,
            label_map=label_map,
            defects=defects,
        )
        if load:
            self.load_part(part)
        return part

    def _draw_defects(self, count, albedo, label_map, weave, grid, rng, part_id) -> list[Defect]:
        cfg = self.config.defects
        s = grid.texel_size_m
        h, w = grid.shape
        margin = cfg.margin_mm * 1e-3 / s
        placed: list[tuple[float, float, float]] = []  # (u, v, radius texels)
        defects: list[Defect] = []
        attempts = 0
        hard = self.config.difficulty == "hard"
        kinds = list(SUBTLE_KINDS) if hard and list(cfg.kinds) == list(DEFECT_KINDS) else cfg.kinds
        while len(defects) < count and attempts < 60:
            attempts += 1
            spec = sample_defect(str(rng.choice(kinds)), rng, subtle=hard, contrast=self.config.hard.defect_contrast)
            r = spec.radius_m / s
            lo_u, hi_u = r + margin, w - 1 - r - margin
            lo_v, hi_v = r + margin, h - 1 - r - margin
            if lo_u >= hi_u or lo_v >= hi_v:
                continue  # this defect does not fit on the sheet; draw another
            for _ in range(40):
                u, v = rng.uniform(lo_u, hi_u), rng.uniform(lo_v, hi_v)
                if all(np.hypot(u - pu, v - pv) > r + pr + margin for pu, pv, pr in placed):
                    break
            else:
                continue
            defect = draw_defect(spec, len(defects) + 1, (u, v), albedo, weave, grid, rng)
            if defect is None:
                continue
            r0, c0 = defect.texel_origin
            mh, mw = defect.mask.shape
            label_map[r0 : r0 + mh, c0 : c0 + mw][defect.mask] = defect.label
            placed.append((u, v, r))
            defects.append(defect)
        if not defects:
            raise ValueError(
                f"part {part_id!r}: no defect of kinds {cfg.kinds} fits on a "
                f"{grid.size_m[0] * 1e3:.0f} x {grid.size_m[1] * 1e3:.0f} mm sheet with margin {cfg.margin_mm} mm"
            )
        return defects


def _normal_variation(albedo: np.ndarray, hard: HardSceneConfig, texel_size_m: float, rng: np.random.Generator) -> None:
    """The hard scene's variation that is NOT a defect, applied in place to the sheet's albedo (H, W, 3) uint8
    after its defects: a slow fibre-density shading, a lighting drift of the whole part and a few glints."""
    h, w = albedo.shape[:2]
    factor = max(2, int(round(hard.density_scale_m / texel_size_m)))
    shading = 1.0 + hard.density_variation * np.clip(_smooth_noise(rng, (h, w), (factor, factor)), -2.5, 2.5)
    shading *= 1.0 + rng.uniform(-hard.lighting_drift, hard.lighting_drift)
    lo, hi = hard.glints
    n = int(rng.integers(lo, hi + 1))
    for _ in range(n):
        r = rng.uniform(0.3e-3, 1.0e-3) / texel_size_m
        u, v = rng.uniform(0, w), rng.uniform(0, h)
        r0, r1 = max(0, int(v - 3 * r)), min(h, int(v + 3 * r) + 1)
        c0, c1 = max(0, int(u - 3 * r)), min(w, int(u + 3 * r) + 1)
        yy, xx = np.mgrid[r0:r1, c0:c1]
        shading[r0:r1, c0:c1] *= 1.0 + hard.glint_gain * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * r * r))
    for c in range(albedo.shape[2]):
        albedo[:, :, c] = np.clip(albedo[:, :, c] * shading, 0, 255).astype(np.uint8)
