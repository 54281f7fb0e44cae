"""The ``Camera`` interface and the ``Frame`` it returns (simulated and GenICam backends)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

PIXEL_FORMATS = ("Mono8", "RGB8", "BayerRG8", "Mono16", "BGR8")


@dataclass
class Frame:
    """One captured image.

    ``pixels``: uint8 or uint16 array, (H, W) for mono, (H, W, 3) RGB for colour formats (Bayer frames
    are demosaiced to RGB by the camera backend). ``device_timestamp_ns`` is None when the device has none.
    ``extra`` carries backend-specific metadata (the simulation puts its exact defect mask, (H, W) bool,
    under ``"sim_mask"``).
    """

    pixels: np.ndarray
    frame_id: int
    host_timestamp_s: float
    device_timestamp_ns: Optional[int]
    exposure_us: float
    gain_db: float
    pixel_format: str
    camera_id: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


@runtime_checkable
class Camera(Protocol):
    """An area-scan camera. Failures raise :mod:`acquisition.errors` camera exceptions.

    ``camera_id`` names the camera in stores and reports; ``serial`` is the device serial number that
    calibration files are checked against.
    """

    camera_id: str
    serial: str

    def open(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Camera": ...

    def __exit__(self, *exc: object) -> None: ...

    def configure(
        self,
        *,
        exposure_us: Optional[float] = None,
        gain_db: Optional[float] = None,
        pixel_format: Optional[str] = None,
        roi: Optional[tuple[int, int, int, int]] = None,
    ) -> None:
        """Set acquisition features; ``roi`` is (x, y, width, height) in pixels."""

    def capture(self, *, timeout_s: float = 2.0) -> Frame: ...
