"""Printable ChArUco sheets at true scale (PNG with its DPI recorded, PDF of an exact paper size).

The sheet shows the board, its parameters, and a 50 mm check bar: after printing, measure one square and
the bar; they must read exactly the printed values (print at 100 %, no "fit to page").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from calibration._atomic import atomic_write
from calibration.charuco import CharucoBoardSpec
from calibration.errors import CalibrationError

#: Paper sizes (width, height) in millimetres, portrait.
PAPER_SIZES_MM: dict[str, tuple[float, float]] = {
    "A4": (210.0, 297.0),
    "A3": (297.0, 420.0),
    "A2": (420.0, 594.0),
    "letter": (215.9, 279.4),
}
MM_PER_INCH = 25.4
#: Room below the board for the text and the check bar, millimetres.
_CAPTION_MM = 28.0
_CHECK_BAR_MM = 50.0


def _sheet_text(spec: CharucoBoardSpec) -> list[str]:
    w, h = spec.size_m
    return [
        spec.describe(),
        f"board {w * 1e3:.1f} x {h * 1e3:.1f} mm, {spec.n_corners} inner corners. "
        "Print at 100 % (no fit-to-page); check one square measures "
        f"{spec.square_length_m * 1e3:.2f} mm and the bar {_CHECK_BAR_MM:.0f} mm.",
    ]


def choose_paper(spec: CharucoBoardSpec, margin_mm: float = 10.0) -> tuple[str, bool]:
    """Smallest paper (name, landscape?) that holds the board, its margins and the caption."""
    w, h = spec.size_m[0] * 1e3 + 2 * margin_mm, spec.size_m[1] * 1e3 + 2 * margin_mm + _CAPTION_MM
    for name, (pw, ph) in PAPER_SIZES_MM.items():
        if name == "letter":
            continue
        if w <= pw and h <= ph:
            return name, False
        if w <= ph and h <= pw:
            return name, True
    raise CalibrationError(
        f"board {spec.size_m[0] * 1e3:.0f} x {spec.size_m[1] * 1e3:.0f} mm does not fit on A2 paper; "
        "use smaller squares or fewer of them"
    )


def write_board_png(spec: CharucoBoardSpec, path: str | Path, dpi: int = 300, margin_mm: float = 10.0) -> Path:
    """PNG of the board plus its caption at ``dpi`` (recorded in the file), squares exactly to scale.

    The square side in pixels is rounded to a whole number at ``dpi``; if that rounding would change the
    printed size by more than 0.5 % the call fails and names a DPI that works.
    """
    px_per_mm = dpi / MM_PER_INCH
    square_px_exact = spec.square_length_m * 1e3 * px_per_mm
    square_px = int(round(square_px_exact))
    if square_px < 8 or abs(square_px - square_px_exact) / square_px_exact > 0.005:
        raise CalibrationError(
            f"at {dpi} dpi a {spec.square_length_m * 1e3:.2f} mm square is {square_px_exact:.2f} px, which cannot be "
            f"printed to scale; use a higher dpi (e.g. 600 or 1200)"
        )
    board = spec.render(pixels_per_square=square_px)
    margin = int(round(margin_mm * px_per_mm))
    caption = int(round(_CAPTION_MM * px_per_mm))
    height = board.shape[0] + 2 * margin + caption
    width = max(board.shape[1] + 2 * margin, int(round(150 * px_per_mm)))
    sheet = Image.new("L", (width, height), 255)
    sheet.paste(Image.fromarray(board), (margin, margin))
    draw = ImageDraw.Draw(sheet)
    font_px = max(10, int(round(3.0 * px_per_mm)))
    try:
        font = ImageFont.load_default(size=font_px)
    except TypeError:  # Pillow < 10.1 has no sized default font
        font = ImageFont.load_default()
    y = margin + board.shape[0] + int(round(4 * px_per_mm))
    for line in _sheet_text(spec):
        draw.text((margin, y), line, fill=0, font=font)
        y += int(round(font_px * 1.4))
    bar_len = int(round(_CHECK_BAR_MM * px_per_mm))
    bar_h = max(2, int(round(1.5 * px_per_mm)))
    y += int(round(2 * px_per_mm))
    draw.rectangle([margin, y, margin + bar_len - 1, y + bar_h - 1], fill=0)
    return atomic_write(path, lambda p: sheet.save(p, format="PNG", dpi=(dpi, dpi)))


def write_board_pdf(
    spec: CharucoBoardSpec, path: str | Path, paper: str | None = None, margin_mm: float = 10.0
) -> Path:
    """PDF of one sheet of ``paper`` (A4, A3, A2, letter; default: the smallest A size that fits) with the
    board at exact physical size (the board image is embedded unresampled), its parameters and a check bar.
    """
    from matplotlib.figure import Figure  # imported here: only printing needs matplotlib

    if paper is None:
        paper, landscape = choose_paper(spec, margin_mm)
    else:
        if paper not in PAPER_SIZES_MM:
            raise CalibrationError(f"unknown paper {paper!r}; choose one of {', '.join(PAPER_SIZES_MM)}")
        pw, ph = PAPER_SIZES_MM[paper]
        bw, bh = spec.size_m[0] * 1e3 + 2 * margin_mm, spec.size_m[1] * 1e3 + 2 * margin_mm + _CAPTION_MM
        if bw <= pw and bh <= ph:
            landscape = False
        elif bw <= ph and bh <= pw:
            landscape = True
        else:
            raise CalibrationError(
                f"board {spec.size_m[0] * 1e3:.0f} x {spec.size_m[1] * 1e3:.0f} mm with margins does not fit on "
                f"{paper} ({pw:.0f} x {ph:.0f} mm)"
            )
    pw, ph = PAPER_SIZES_MM[paper]
    if landscape:
        pw, ph = ph, pw
    board_w, board_h = spec.size_m[0] * 1e3, spec.size_m[1] * 1e3
    fig = Figure(figsize=(pw / MM_PER_INCH, ph / MM_PER_INCH))
    left = (pw - board_w) / 2.0
    top = margin_mm
    bottom = ph - top - board_h
    ax = fig.add_axes((left / pw, bottom / ph, board_w / pw, board_h / ph))
    image = spec.render(pixels_per_square=64)
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="none", aspect="auto",
              extent=(0.0, board_w, board_h, 0.0))
    ax.set_axis_off()
    y = bottom - 6.0
    for line in _sheet_text(spec):
        fig.text(left / pw, y / ph, line, fontsize=7, va="top", ha="left", family="monospace")
        y -= 4.5
    y -= 4.0
    bar = fig.add_axes((left / pw, y / ph, _CHECK_BAR_MM / pw, 1.5 / ph))
    bar.set_facecolor("black")
    bar.set_xticks([])
    bar.set_yticks([])
    for spine in bar.spines.values():
        spine.set_visible(False)
    fig.text((left + _CHECK_BAR_MM + 2.0) / pw, (y + 0.75) / ph, f"{_CHECK_BAR_MM:.0f} mm", fontsize=7,
             va="center", family="monospace")
    fig.text(left / pw, 5.0 / ph, f"paper {paper}{' landscape' if landscape else ''}", fontsize=6,
             va="bottom", family="monospace")
    return atomic_write(path, lambda p: fig.savefig(p, format="pdf"))


def write_board(spec: CharucoBoardSpec, path: str | Path, **kwargs) -> Path:  # noqa: ANN003
    """Dispatch on the suffix: ``.pdf`` -> :func:`write_board_pdf`, ``.png`` -> :func:`write_board_png`."""
    suffix = Path(path).suffix.lower()
    if suffix == ".pdf":
        return write_board_pdf(spec, path, **kwargs)
    if suffix == ".png":
        return write_board_png(spec, path, **kwargs)
    raise CalibrationError(f"{path}: board sheets are written as .pdf or .png, not {suffix or 'no suffix'!r}")


def png_dpi(path: str | Path) -> tuple[float, float]:
    """The DPI recorded in a PNG (for checks)."""
    with Image.open(path) as img:
        dpi = img.info.get("dpi")
    if dpi is None:
        raise CalibrationError(f"{path}: PNG has no DPI record")
    return float(np.round(dpi[0], 3)), float(np.round(dpi[1], 3))
