"""The board spec, its image, its detection, and the printable sheets."""
from __future__ import annotations

import re
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from calibration.board_print import png_dpi, write_board, write_board_pdf, write_board_png
from calibration.charuco import CharucoBoardSpec, CharucoDetector, load_board_spec
from calibration.errors import CalibrationError, CalibrationFileError

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "calibration" / "charuco.yaml"


def test_spec_rejects_inconsistent_boards() -> None:
    with pytest.raises(ValueError, match="marker_length_m"):
        CharucoBoardSpec(square_length_m=0.02, marker_length_m=0.02)
    with pytest.raises(ValueError, match="unknown ArUco dictionary"):
        CharucoBoardSpec(dictionary="DICT_9X9_1")
    with pytest.raises(ValueError, match="needs"):
        CharucoBoardSpec(squares_x=12, squares_y=10, dictionary="DICT_4X4_50")


def test_load_board_spec_from_config_and_bad_key(tmp_path: Path) -> None:
    spec = load_board_spec(CONFIG)
    assert spec.n_corners == (spec.squares_x - 1) * (spec.squares_y - 1)
    bad = tmp_path / "b.yaml"
    bad.write_text("board: {squares_x: 9, squares_y: 7, square_length_m: 0.02, marker_length_m: 0.015, color: red}\n")
    with pytest.raises(CalibrationFileError, match=r"b.yaml: unknown key 'color'"):
        load_board_spec(bad)
    with pytest.raises(CalibrationFileError, match="not found"):
        load_board_spec(tmp_path / "missing.yaml")


def test_detect_all_corners_in_a_warped_board_image() -> None:
    spec = CharucoBoardSpec(squares_x=7, squares_y=5, square_length_m=0.03, marker_length_m=0.022)
    ppsq, margin = 80, 40
    board = spec.render(pixels_per_square=ppsq, margin_squares=margin / ppsq)
    # a known homography from board metres to image pixels (perspective view)
    H_img_board = np.array([[2200.0, 150.0, 180.0], [-100.0, 2300.0, 120.0], [0.15, 0.35, 1.0]])
    M_tex_board = np.array([[ppsq / spec.square_length_m, 0, margin - 0.5],
                            [0, ppsq / spec.square_length_m, margin - 0.5], [0, 0, 1.0]])
    H = H_img_board @ np.linalg.inv(M_tex_board)
    image = cv2.warpPerspective(board, H, (800, 600), flags=cv2.INTER_LINEAR, borderValue=90)
    det = CharucoDetector(spec).detect(np.dstack([image] * 3))  # RGB input works too
    assert det.count == spec.n_corners
    expected = np.column_stack([det.object_points[:, :2], np.ones(det.count)]) @ H_img_board.T
    expected = expected[:, :2] / expected[:, 2:]
    err = np.linalg.norm(det.corners - expected, axis=1)
    assert err.max() < 0.3
    assert np.allclose(det.object_points, spec.corner_points()[det.ids])


def test_blank_image_gives_an_empty_detection() -> None:
    det = CharucoDetector(CharucoBoardSpec()).detect(np.full((240, 320), 128, np.uint8))
    assert det.count == 0 and det.corners.shape == (0, 2) and det.image_size == (320, 240)


def test_png_sheet_is_true_scale(tmp_path: Path) -> None:
    spec = CharucoBoardSpec(squares_x=5, squares_y=4, square_length_m=0.0254, marker_length_m=0.018)
    path = write_board_png(spec, tmp_path / "board.png", dpi=300)
    assert png_dpi(path) == pytest.approx((300, 300), abs=0.01)
    img = np.asarray(Image.open(path))
    margin = int(round(10.0 * 300 / 25.4))
    # a square is exactly 300 px (1 inch) wide: the top-left square is black, its neighbour white
    row = img[margin + 150]
    assert row[margin + 5] == 0 and row[margin + 295] == 0 and row[margin + 305] == 255
    with pytest.raises(CalibrationError, match="dpi"):
        write_board_png(CharucoBoardSpec(square_length_m=0.0201, marker_length_m=0.015), tmp_path / "x.png", dpi=30)


def test_pdf_sheet_has_the_paper_size_and_parameters(tmp_path: Path) -> None:
    spec = CharucoBoardSpec(squares_x=9, squares_y=7, square_length_m=0.02, marker_length_m=0.015)
    path = write_board(spec, tmp_path / "board.pdf")
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    box = [float(v) for v in re.search(rb"MediaBox \[ ?([\d. ]+)\]", data).group(1).split()]
    assert box[2] == pytest.approx(210 / 25.4 * 72, abs=0.1) and box[3] == pytest.approx(297 / 25.4 * 72, abs=0.1)
    # the board image is placed at exactly 180 x 140 mm (points = mm / 25.4 * 72)
    streams = [zlib.decompress(m.group(1)) for m in re.finditer(rb"stream\r?\n(.*?)endstream", data, re.S)
               if m.group(1)[:2] == b"x\x9c"]
    placement = next(re.search(rb"([\d.]+) 0 0\s+-([\d.]+) 0 [\d.]+ cm /I\d+ Do", t) for t in streams if b" Do" in t)
    width_mm, height_mm = (float(v) / 72 * 25.4 for v in placement.groups())
    assert width_mm == pytest.approx(180.0, abs=0.01) and height_mm == pytest.approx(140.0, abs=0.01)
    with pytest.raises(CalibrationError, match="does not fit"):
        write_board_pdf(CharucoBoardSpec(square_length_m=0.05, marker_length_m=0.04), tmp_path / "big.pdf", paper="A4")
    with pytest.raises(CalibrationError, match=".pdf or .png"):
        write_board(spec, tmp_path / "board.svg")
    assert not (tmp_path / "big.pdf").exists()
