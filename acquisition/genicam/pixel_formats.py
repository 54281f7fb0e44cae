"""GenICam pixel formats -> numpy images, decided by the BUFFER's own ``data_format``.

Output: (H, W) uint8 for Mono8, (H, W) uint16 for Mono10/12/14/16 (unpacked, LSB-aligned), (H, W, 3)
uint8 RGB for every colour format (BGR reordered, alpha dropped, Bayer demosaiced). GenICam names the
Bayer tile by its first row: ``BayerRG8`` is an R G / G B tile, which OpenCV calls ``BayerRGGB``
(``cv2.COLOR_BayerRGGB2BGR``; OpenCV's ``COLOR_BayerRG2BGR`` would swap red and blue).
"""
from __future__ import annotations

import cv2
import numpy as np

from acquisition.errors import CameraConfigError

_MONO16 = ("Mono10", "Mono12", "Mono14", "Mono16")
#: GenICam Bayer 8-bit names -> OpenCV demosaicing codes (output RGB, in one conversion).
_BAYER = {
    "BayerRG8": cv2.COLOR_BayerRGGB2RGB,
    "BayerGR8": cv2.COLOR_BayerGRBG2RGB,
    "BayerGB8": cv2.COLOR_BayerGBRG2RGB,
    "BayerBG8": cv2.COLOR_BayerBGGR2RGB,
}
SUPPORTED_FORMATS = ("Mono8", *_MONO16, "RGB8", "BGR8", "RGBa8", "BGRa8", *_BAYER)


def convert_buffer(data: np.ndarray, width: int, height: int, pixel_format: str) -> np.ndarray:
    """Turn one GenTL buffer component into an image (a NEW array: safe after the buffer is queued back).

    ``data``: the component's flat array (uint8 or uint16 as harvesters gives it); ``width``/``height``
    in pixels. Raises CameraConfigError for an unsupported format or a buffer of the wrong size.
    """
    flat = np.asarray(data).reshape(-1)
    w, h = int(width), int(height)

    def shaped(channels: int, dtype: type) -> np.ndarray:
        raw = flat.view(np.uint8) if flat.dtype != np.uint8 else flat
        itemsize = np.dtype(dtype).itemsize
        need = w * h * channels * itemsize
        if raw.size < need:
            raise CameraConfigError(f"{pixel_format} buffer holds {raw.size} bytes, {w}x{h} needs {need}")
        arr = raw[:need].view(dtype)
        return arr.reshape((h, w, channels) if channels > 1 else (h, w))

    if pixel_format == "Mono8":
        return shaped(1, np.uint8).copy()
    if pixel_format in _MONO16:
        return shaped(1, np.uint16).copy()
    if pixel_format == "RGB8":
        return shaped(3, np.uint8).copy()
    if pixel_format == "BGR8":
        return np.ascontiguousarray(shaped(3, np.uint8)[:, :, ::-1])
    if pixel_format == "RGBa8":
        return np.ascontiguousarray(shaped(4, np.uint8)[:, :, :3])
    if pixel_format == "BGRa8":
        return np.ascontiguousarray(shaped(4, np.uint8)[:, :, 2::-1])
    if pixel_format in _BAYER:
        return cv2.cvtColor(shaped(1, np.uint8), _BAYER[pixel_format])
    raise CameraConfigError(
        f"pixel format {pixel_format!r} is not supported; supported: {', '.join(SUPPORTED_FORMATS)}")
