"""SLSG's anomaly simulation (paper section 3.2, eq. 1) on numpy images (H, W, 3) float32 in [0, 1].

    M   = binarised Perlin noise AND the binarised foreground of I   (structural: fine noise, threshold 0.5;
                                                                      logical: coarse noise, larger blobs)
    I_N = structural: a procedural texture (stands in for DTD) or I with its patches shuffled (homologous)
          logical:    another normal image, rotated by a random angle
    I_N gets a random brightness / contrast change;  I_A = (1 - M) I + M (delta I_N + (1 - delta) I)
Every random choice comes from the ``np.random.Generator`` passed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise (H, W) in about [-1, 1] with ``res`` = (cells along y, cells along x)."""
    h, w = shape
    ry, rx = max(1, int(res[0])), max(1, int(res[1]))
    angles = rng.uniform(0, 2 * np.pi, size=(ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.linspace(0, ry, h, endpoint=False)
    x = np.linspace(0, rx, w, endpoint=False)
    yi, xi = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - yi)[:, None], (x - xi)[None, :]

    def dot(oy: int, ox: int) -> np.ndarray:
        g = grads[(yi + oy)[:, None], (xi + ox)[None, :]]
        return g[..., 0] * (fy - oy) + g[..., 1] * (fx - ox)

    uy, ux = _fade(fy), _fade(fx)
    top = dot(0, 0) * (1 - ux) + dot(0, 1) * ux
    bottom = dot(1, 0) * (1 - ux) + dot(1, 1) * ux
    return (top * (1 - uy) + bottom * uy) * np.sqrt(2)


def fractal_noise(shape: tuple[int, int], base_res: int, octaves: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of ``octaves`` Perlin octaves (res doubling, amplitude halving), rescaled to [0, 1]."""
    total = np.zeros(shape)
    for o in range(octaves):
        total += perlin_noise(shape, (base_res * 2**o, base_res * 2**o), rng) / 2**o
    lo, hi = total.min(), total.max()
    return (total - lo) / (hi - lo + 1e-8)


def perlin_mask(size: int, rng: np.random.Generator, scale_exponents: tuple[int, int], threshold: float,
                foreground: Optional[np.ndarray] = None, tries: int = 8) -> np.ndarray:
    """Binarised Perlin noise (size, size) bool, res 2^a x 2^b with a, b in ``scale_exponents`` (inclusive);
    restricted to ``foreground`` (H, W) bool when given. Retries (up to ``tries``) while the mask is empty."""
    mask = np.zeros((size, size), dtype=bool)
    for _ in range(tries):
        a, b = rng.integers(scale_exponents[0], scale_exponents[1] + 1, size=2)
        noise = perlin_noise((size, size), (2**int(a), 2**int(b)), rng)
        mask = noise > threshold
        if foreground is not None:
            mask &= foreground
        if mask.any():
            break
    return mask


def foreground_mask(image: np.ndarray, min_fraction: float = 0.05) -> np.ndarray:
    """Binarised foreground (H, W) bool of ``image`` (H, W, 3): pixels whose colour differs from the median
    border colour by more than an Otsu threshold. Falls back to the whole image when the result covers less
    than ``min_fraction`` of it (no distinct background)."""
    from skimage.filters import threshold_otsu

    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    distance = np.linalg.norm(image - np.median(border, axis=0), axis=-1)
    if float(distance.max() - distance.min()) < 1e-6:
        return np.ones(distance.shape, dtype=bool)
    mask = distance > threshold_otsu(distance)
    if mask.mean() < min_fraction:
        return np.ones(distance.shape, dtype=bool)
    return mask


def procedural_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random texture (size, size, 3) in [0, 1]: fractal noise between two random colours, mixed with a
    random stripe pattern (stands in for the Describable Textures Dataset)."""
    t = fractal_noise((size, size), int(rng.integers(1, 5)), int(rng.integers(1, 5)), rng)
    c1, c2 = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
    texture = c1 * (1 - t[..., None]) + c2 * t[..., None]
    if rng.uniform() < 0.5:
        yy, xx = np.mgrid[0:size, 0:size]
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(3, max(4.0, size / 4))
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
        c3 = rng.uniform(0, 1, size=3)
        mix = rng.uniform(0.3, 0.7)
        texture = (1 - mix) * texture + mix * (c3 * stripes[..., None])
    return np.clip(texture, 0, 1).astype(np.float32)


def shuffled_patches(image: np.ndarray, rng: np.random.Generator, grid_choices: Sequence[int] = (4, 8)) -> np.ndarray:
    """``image`` (H, W, 3) cut into g x g blocks (g from ``grid_choices``) that are randomly permuted."""
    h, w = image.shape[:2]
    g = int(rng.choice(list(grid_choices)))
    ys = np.linspace(0, h, g + 1).astype(int)
    xs = np.linspace(0, w, g + 1).astype(int)
    bh, bw = int(np.diff(ys).min()), int(np.diff(xs).min())
    blocks = [image[ys[i] : ys[i] + bh, xs[j] : xs[j] + bw] for i in range(g) for j in range(g)]
    order = rng.permutation(len(blocks))
    out = image.copy()
    for k, src in enumerate(order):
        i, j = divmod(k, g)
        out[ys[i] : ys[i] + bh, xs[j] : xs[j] + bw] = blocks[src]
    return out


def rotated(image: np.ndarray, angle_deg: float) -> np.ndarray:
    """``image`` (H, W, 3) rotated about its centre by ``angle_deg`` (reflected borders)."""
    import cv2

    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), float(angle_deg), 1.0)
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.2, contrast: float = 0.3) -> np.ndarray:
    """Random brightness (+-``brightness``) and contrast (x 1 +- ``contrast``) change, clipped to [0, 1]."""
    c = rng.uniform(1 - contrast, 1 + contrast)
    b = rng.uniform(-brightness, brightness)
    return np.clip((image - 0.5) * c + 0.5 + b, 0, 1)


@dataclass(frozen=True)
class SimulationSettings:
    """Parameters of :func:`simulate_anomaly` (see the module docstring)."""

    logical_probability: float = 0.5
    texture_probability: float = 0.5
    transparency: tuple[float, float] = (0.2, 1.0)
    structural_scales: tuple[int, int] = (0, 5)
    structural_threshold: float = 0.5
    logical_scales: tuple[int, int] = (0, 2)
    logical_threshold: float = 0.3
    restrict_to_foreground: bool = True


def simulate_anomaly(
    image: np.ndarray, others: Sequence[np.ndarray], rng: np.random.Generator, settings: SimulationSettings,
    foreground: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """One simulated anomalous image from a normal ``image`` (H, W, 3) in [0, 1].

    ``others``: other normal images (for logical anomalies; empty -> always structural). ``foreground``:
    ``foreground_mask(image)`` when the caller already has it (it depends on the image only); computed
    here when needed and not given.
    Returns (I_A (H, W, 3) float32, M (H, W) bool, kind "texture" | "shuffle" | "logical").
    """
    size = image.shape[0]
    fg = None
    if settings.restrict_to_foreground:
        fg = foreground if foreground is not None else foreground_mask(image)
    logical = len(others) > 0 and rng.uniform() < settings.logical_probability
    if logical:
        mask = perlin_mask(size, rng, settings.logical_scales, settings.logical_threshold, fg)
        source = rotated(others[int(rng.integers(len(others)))], rng.uniform(0, 360))
        kind = "logical"
    else:
        mask = perlin_mask(size, rng, settings.structural_scales, settings.structural_threshold, fg)
        if rng.uniform() < settings.texture_probability:
            source, kind = procedural_texture(size, rng), "texture"
        else:
            source, kind = shuffled_patches(image, rng), "shuffle"
    source = jitter(source, rng)
    delta = rng.uniform(*settings.transparency)
    m = mask[..., None].astype(np.float32)
    out = (1 - m) * image + m * (delta * source + (1 - delta) * image)
    return np.clip(out, 0, 1).astype(np.float32), mask, kind
