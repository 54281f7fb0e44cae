"""A simulated GenICam-like area-scan camera fixed to the robot flange, looking at the simulated scene.

Each capture asks the robot for its TCP pose, places the camera at ``T_base_cam = T_base_tcp @
T_flange_cam``, renders the scene's surface through the true :class:`CameraModel` (pinhole + lens
distortion), then applies the sensor: vignetting, exposure and gain, shot and read noise, clipping to
8 bits. Pixel formats: Mono8 (H, W), RGB8 (H, W, 3), BayerRG8 (an RGGB mosaic with its noise,
demosaiced to (H, W, 3) RGB as :class:`acquisition.camera.Frame` specifies).

For the simulation only, every frame carries its exact defect mask in ``extra["sim_mask"]``, the kinds in
view in ``extra["sim_defect_types"]`` and which kind each defect pixel shows in ``extra["sim_defect_labels"]``.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from acquisition.camera import Frame
from acquisition.errors import CameraConfigError, CameraError, CameraLost, CameraTimeout
from acquisition.sim.render import PlaneRenderer
from acquisition.sim.scene import Scene
from calibration.camera_model import CameraModel
from calibration.transforms import Transform

SIM_PIXEL_FORMATS = ("Mono8", "RGB8", "BayerRG8")
EXPOSURE_RANGE_US = (10.0, 1_000_000.0)
GAIN_RANGE_DB = (0.0, 24.0)


class FlangeMountConfig(BaseModel):
    """The camera's pose in the flange (TCP) frame, as a person types it: millimetres and degrees.

    ``rotation_deg`` is a rotation vector whose length is the angle in degrees (UR convention, in degrees).
    Default: the camera 80 mm below the flange along the tool z axis, a few mm off-centre, its optical
    axis along the tool z axis within a degree.
    """

    model_config = ConfigDict(extra="forbid")

    translation_mm: tuple[float, float, float] = (12.0, -7.0, 80.0)
    rotation_deg: tuple[float, float, float] = (0.4, -0.6, 1.5)

    def transform(self) -> Transform:
        """T_flange_cam (metres, radians)."""
        return Transform.from_rt(np.deg2rad(np.asarray(self.rotation_deg, dtype=float)),
                                 np.asarray(self.translation_mm, dtype=float) * 1e-3)


class NoiseConfig(BaseModel):
    """Sensor noise, in electrons at 0 dB gain (one DN = full_well_e / 255 electrons)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    full_well_e: float = Field(10000.0, gt=0.0, description="electrons that fill 255 DN at 0 dB gain")
    read_noise_e: float = Field(8.0, ge=0.0, description="read noise, electrons RMS")


class CameraFaultsConfig(BaseModel):
    """Faults injected from the configuration: the N-th capture of the camera's life (1-based)."""

    model_config = ConfigDict(extra="forbid")

    timeout_on_capture: Optional[int] = Field(None, ge=1)
    lost_on_capture: Optional[int] = Field(None, ge=1)


class SimCameraConfig(BaseModel):
    """The simulated camera: sensor, lens, mount, acquisition settings, noise, identity, faults."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(1280, ge=16, le=8192)
    height: int = Field(1024, ge=16, le=8192)
    focal_length_mm: float = Field(25.0, gt=0.0, le=500.0)
    pixel_size_um: float = Field(5.3, gt=0.0, le=50.0)
    dist: tuple[float, float, float, float, float] = Field(
        (-0.08, 0.12, 0.0004, -0.0003, 0.0), description="OpenCV distortion (k1, k2, p1, p2, k3)"
    )
    principal_offset_px: tuple[float, float] = Field((6.0, -4.0), description="principal point minus image centre")
    flange_to_camera: FlangeMountConfig = Field(default_factory=FlangeMountConfig)
    exposure_us: float = Field(4000.0, description="exposure time, microseconds")
    reference_exposure_us: float = Field(4000.0, gt=0.0, description="exposure at which albedo 1.0 reaches 255 DN at 0 dB")
    gain_db: float = Field(0.0, description="analogue gain, dB")
    pixel_format: str = "Mono8"
    vignetting: float = Field(0.12, ge=0.0, lt=1.0, description="relative light falloff in the image corners")
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    camera_id: str = "sim-cam-0"
    serial: str = "SIM00001"
    faults: CameraFaultsConfig = Field(default_factory=CameraFaultsConfig)

    @field_validator("pixel_format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in SIM_PIXEL_FORMATS:
            raise ValueError(f"pixel_format {value!r} is not one of {', '.join(SIM_PIXEL_FORMATS)}")
        return value

    @field_validator("exposure_us")
    @classmethod
    def _exposure(cls, value: float) -> float:
        lo, hi = EXPOSURE_RANGE_US
        if not lo <= value <= hi:
            raise ValueError(f"exposure_us {value} outside [{lo:g}, {hi:g}]")
        return value

    @field_validator("gain_db")
    @classmethod
    def _gain(cls, value: float) -> float:
        lo, hi = GAIN_RANGE_DB
        if not lo <= value <= hi:
            raise ValueError(f"gain_db {value} outside [{lo:g}, {hi:g}]")
        return value

    def camera_model(self) -> CameraModel:
        """The true intrinsics and distortion of this camera."""
        return CameraModel.from_lens(
            self.width, self.height, self.focal_length_mm * 1e-3, self.pixel_size_um * 1e-6,
            dist=self.dist, principal_offset_px=self.principal_offset_px,
        )


def _combined_type(kinds: list[str]) -> str:
    """MVTec-style defect type of an image: "good", the one kind, or "combined"."""
    if not kinds:
        return "good"
    return kinds[0] if len(kinds) == 1 else "combined"


def _kind_labels(labels: np.ndarray, rect: tuple[int, int, int, int], label_kinds: dict[int, str],
                 kinds: list[str]) -> np.ndarray:
    """Defect labels (h, w) uint8 -> kind labels (h, w) uint8: 1 + the index in ``kinds`` of each defect
    label's kind (labels without a known kind count as the first kind, so the result > 0 is the mask);
    only ``rect`` (x0, y0, x1, y1) of ``labels`` can be non-zero."""
    lut = np.zeros(256, dtype=np.uint8)
    for label in range(1, 256):
        kind = label_kinds.get(label)
        lut[label] = 1 + kinds.index(kind) if kind in kinds else 1
    out = np.zeros(labels.shape, dtype=np.uint8)
    x0, y0, x1, y1 = rect
    out[y0:y1, x0:x1] = cv2.LUT(np.ascontiguousarray(labels[y0:y1, x0:x1]), lut)
    return out


class SimCamera:
    """Simulated camera on the flange of ``robot`` (anything with ``tcp_pose() -> (6,)``) viewing ``scene``.

    Implements :class:`acquisition.camera.Camera`. ``seed`` drives the sensor noise: two cameras with the
    same seed, robot pose and scene give identical frames. The mount ``T_flange_cam`` is relative to the
    frame ``robot.tcp_pose()`` reports (the flange when the robot's TCP offset is zero), as hand-eye
    calibration estimates it.
    """

    def __init__(self, config: SimCameraConfig | None, robot: Any, scene: Scene, seed: int = 0) -> None:
        self.config = config or SimCameraConfig()
        self.robot = robot
        self.scene = scene
        self.camera_id = self.config.camera_id
        self.serial = self.config.serial
        self._model = self.config.camera_model()
        self._T_flange_cam = self.config.flange_to_camera.transform()
        self._rng = np.random.default_rng(seed)
        self._exposure_us = float(self.config.exposure_us)
        self._gain_db = float(self.config.gain_db)
        self._pixel_format = self.config.pixel_format
        self._roi: tuple[int, int, int, int] = (0, 0, self._model.width, self._model.height)
        self._renderer = PlaneRenderer(self._model, self._roi)
        self._gain_map: Optional[np.ndarray] = None
        self._gain_map3: Optional[np.ndarray] = None
        self._buffers: dict[str, np.ndarray] = {}
        self._open = False
        self._lost = False
        self._frame_id = 0
        self._captures = 0  # capture attempts over the camera's life
        self._faults: dict[str, int] = {}
        f = self.config.faults
        if f.timeout_on_capture is not None:
            self._faults["timeout"] = f.timeout_on_capture
        if f.lost_on_capture is not None:
            self._faults["lost"] = f.lost_on_capture
        self._t_open = time.monotonic_ns()

    # --- truth for calibration tests -----------------------------------------------------------------
    @property
    def camera_model(self) -> CameraModel:
        """The true camera model (full sensor)."""
        return self._model

    @property
    def T_flange_cam(self) -> Transform:  # noqa: N802 - the frame names are the point
        """The true camera pose in the flange (robot TCP) frame."""
        return self._T_flange_cam

    def T_base_cam(self) -> Transform:  # noqa: N802
        """Where the camera is now: the robot's TCP pose composed with the mount."""
        return Transform.from_pose(np.asarray(self.robot.tcp_pose(), dtype=float)) @ self._T_flange_cam

    # --- state ---------------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def exposure_us(self) -> float:
        return self._exposure_us

    @property
    def gain_db(self) -> float:
        return self._gain_db

    @property
    def pixel_format(self) -> str:
        return self._pixel_format

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) in sensor pixels."""
        return self._roi

    # --- Camera protocol -----------------------------------------------------------------------------
    def open(self) -> None:
        """Open the device; also clears a previous ``lost`` state (as re-enumerating a camera would)."""
        self._open = True
        self._lost = False
        self._t_open = time.monotonic_ns()

    def close(self) -> None:
        self._open = False

    def __enter__(self) -> "SimCamera":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def configure(
        self,
        *,
        exposure_us: Optional[float] = None,
        gain_db: Optional[float] = None,
        pixel_format: Optional[str] = None,
        roi: Optional[tuple[int, int, int, int]] = None,
    ) -> None:
        """Set acquisition features; a value the camera cannot take raises CameraConfigError and changes nothing."""
        if exposure_us is not None:
            lo, hi = EXPOSURE_RANGE_US
            if not (np.isfinite(exposure_us) and lo <= exposure_us <= hi):
                raise CameraConfigError(f"camera {self.camera_id}: exposure_us {exposure_us} outside [{lo:g}, {hi:g}]")
        if gain_db is not None:
            lo, hi = GAIN_RANGE_DB
            if not (np.isfinite(gain_db) and lo <= gain_db <= hi):
                raise CameraConfigError(f"camera {self.camera_id}: gain_db {gain_db} outside [{lo:g}, {hi:g}]")
        if pixel_format is not None and pixel_format not in SIM_PIXEL_FORMATS:
            raise CameraConfigError(
                f"camera {self.camera_id}: pixel_format {pixel_format!r} not supported; use {', '.join(SIM_PIXEL_FORMATS)}"
            )
        if roi is not None and len(tuple(roi)) != 4:
            raise CameraConfigError(f"camera {self.camera_id}: roi must be (x, y, width, height), got {roi!r}")
        fmt = pixel_format or self._pixel_format
        x, y, w, h = (int(v) for v in (roi if roi is not None else self._roi))
        even = fmt == "BayerRG8"
        if (x < 0 or y < 0 or w < 1 or h < 1 or x + w > self._model.width or y + h > self._model.height
                or (even and (x % 2 or y % 2 or w % 2 or h % 2))):
            raise CameraConfigError(
                f"camera {self.camera_id}: roi {(x, y, w, h)} does not fit the {self._model.width}x{self._model.height} "
                f"sensor{' (BayerRG8 needs even offsets and sizes)' if even else ''}"
            )
        if exposure_us is not None:
            self._exposure_us = float(exposure_us)
        if gain_db is not None:
            self._gain_db = float(gain_db)
        if pixel_format is not None:
            self._pixel_format = pixel_format
        if roi is not None:
            new_roi = tuple(int(v) for v in roi)
            if new_roi != self._roi:
                self._roi = new_roi  # type: ignore[assignment]
                self._renderer = PlaneRenderer(self._model, self._roi)
        self._gain_map = None

    def inject_fault(self, *, timeout_on_capture: Optional[int] = None, lost_on_capture: Optional[int] = None) -> None:
        """Make the N-th capture from now (1 = the next one) raise CameraTimeout, or CameraLost (after which
        every capture raises CameraLost until the camera is opened again)."""
        for name, n in (("timeout", timeout_on_capture), ("lost", lost_on_capture)):
            if n is not None:
                if int(n) < 1:
                    raise ValueError(f"{name}_on_capture must be >= 1, got {n}")
                self._faults[name] = self._captures + int(n)

    def capture(self, *, timeout_s: float = 2.0) -> Frame:
        """Render one frame at the robot's current pose.

        Raises CameraError when not open, CameraTimeout / CameraLost on an injected fault; an error of
        ``robot.tcp_pose()`` (e.g. ConnectionLost of a disconnected SimRobot) propagates unchanged.
        """
        if not self._open:
            raise CameraError(f"camera {self.camera_id} is not open; call open() or use it as a context manager")
        if self._lost:
            raise CameraLost(f"camera {self.camera_id} (serial {self.serial}) was lost; reopen it")
        self._captures += 1
        if self._faults.get("lost") == self._captures:
            del self._faults["lost"]
            self._lost = True
            raise CameraLost(f"camera {self.camera_id} (serial {self.serial}) stopped answering (capture {self._captures})")
        if self._faults.get("timeout") == self._captures:
            del self._faults["timeout"]
            raise CameraTimeout(f"camera {self.camera_id}: no frame within {timeout_s} s (capture {self._captures})")
        T_base_cam = self.T_base_cam()
        pixels, mask, kinds, kind_labels = self.render_with_kinds(T_base_cam)
        self._frame_id += 1
        surface = self.scene.surface
        clock = getattr(self.robot, "clock", None)
        if clock is not None and hasattr(clock, "now"):
            device_ts = int(round(float(clock.now()) * 1e9))
        else:
            device_ts = time.monotonic_ns() - self._t_open
        return Frame(
            pixels=pixels,
            frame_id=self._frame_id,
            host_timestamp_s=time.time(),
            device_timestamp_ns=device_ts,
            exposure_us=self._exposure_us,
            gain_db=self._gain_db,
            pixel_format=self._pixel_format,
            camera_id=self.camera_id,
            extra={
                "sim_mask": mask,
                "sim_defect_types": kinds,
                "sim_defect_type": _combined_type(kinds),
                "sim_defect_labels": kind_labels,
                "sim_part_id": surface.part_id if surface is not None else None,
                "sim_part_defective": bool(surface.is_defective) if surface is not None else False,
                "sim_T_base_cam": [float(v) for v in T_base_cam.to_pose()],
                "serial": self.serial,
            },
        )

    # --- rendering -----------------------------------------------------------------------------------
    def render(self, T_base_cam: Transform) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Image (uint8, shape per pixel format), exact defect mask (h, w) bool and the visible defect
        kinds (sorted), seen from ``T_base_cam``. Uses and advances the noise generator."""
        return self.render_with_kinds(T_base_cam)[:3]

    def render_with_kinds(self, T_base_cam: Transform) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        """:meth:`render`, plus the kind of every defect pixel: (h, w) uint8, 0 = no defect and k = the
        k-th of the returned kinds (so ``kind_labels > 0`` is exactly the mask)."""
        fmt = self._pixel_format
        color = fmt != "Mono8"
        surface = self.scene.surface
        result = self._renderer.render(surface, T_base_cam, color, self.scene.table_rgb)
        h, w = result.image.shape[:2]
        if result.labels is not None and result.label_rect is not None:
            mask = result.labels > 0  # a real bool array (a .view(bool) of 0/255 would hold 255 bytes)
            x0, y0, x1, y1 = result.label_rect
            counts = np.bincount(result.labels[y0:y1, x0:x1].ravel(), minlength=256)
            kinds = sorted({surface.label_kinds[int(k)] for k in np.flatnonzero(counts[1:]) + 1 if int(k) in surface.label_kinds})
            kind_labels = _kind_labels(result.labels, result.label_rect, surface.label_kinds, kinds)
        else:
            mask = np.zeros((h, w), dtype=bool)
            kinds = []
            kind_labels = np.zeros((h, w), dtype=np.uint8)
        image = result.image
        if fmt == "BayerRG8":
            image = self._mosaic(image)
        raw = self._sensor(image)
        if fmt == "BayerRG8":
            # OpenCV names Bayer patterns by the second row: an RGGB sensor is its "BG" pattern
            raw = cv2.cvtColor(raw, cv2.COLOR_BayerBG2RGB)
        return raw, mask, kinds, kind_labels

    def _mosaic(self, rgb: np.ndarray) -> np.ndarray:
        """(h, w, 3) RGB -> (h, w) RGGB mosaic (R at even rows/cols of the sensor)."""
        x0, y0 = self._roi[0] % 2, self._roi[1] % 2
        out = np.empty(rgb.shape[:2], dtype=np.uint8)
        out[y0::2, x0::2] = rgb[y0::2, x0::2, 0]
        out[y0::2, 1 - x0::2] = rgb[y0::2, 1 - x0::2, 1]
        out[1 - y0::2, x0::2] = rgb[1 - y0::2, x0::2, 1]
        out[1 - y0::2, 1 - x0::2] = rgb[1 - y0::2, 1 - x0::2, 2]
        return out

    def _gain(self, channels: int) -> tuple[np.ndarray, float]:
        """Per-pixel factor (h, w) or (h, w, 3) float32 from albedo DN to signal DN (vignetting x exposure x
        gain), and the linear gain."""
        gain_lin = 10.0 ** (self._gain_db / 20.0)
        if self._gain_map is None:
            x, y, w, h = self._roi
            m = self._model
            u = (np.arange(x, x + w, dtype=np.float32) - np.float32(m.cx)) / np.float32(m.width / 2.0)
            v = (np.arange(y, y + h, dtype=np.float32) - np.float32(m.cy)) / np.float32(m.height / 2.0)
            r2 = (u[None, :] ** 2 + v[:, None] ** 2) / 2.0
            vig = 1.0 - np.float32(self.config.vignetting) * r2
            scale = self._exposure_us / self.config.reference_exposure_us * gain_lin
            self._gain_map = np.ascontiguousarray(vig * np.float32(scale), dtype=np.float32)
            self._gain_map3 = None
        if channels == 1:
            return self._gain_map, gain_lin
        if self._gain_map3 is None:
            self._gain_map3 = cv2.merge([self._gain_map] * 3)
        return self._gain_map3, gain_lin

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 scratch array kept between frames (avoids page-faulting fresh memory every frame)."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape:
            buf = np.empty(shape, dtype=np.float32)
            self._buffers[name] = buf
        return buf

    def _sensor(self, image: np.ndarray) -> np.ndarray:
        """Albedo image uint8 -> sensor output uint8 (same shape): exposure, gain, vignetting, shot and read
        noise, rounding and clipping to 0..255.

        Noise in DN: variance ``k * S + (read_e * k)**2`` with ``k`` DN per electron (Poisson shot noise of
        the ``S / k`` electrons, Gaussian approximation) - drawn fresh every frame from a seed taken from
        the camera's generator.
        """
        channels = 1 if image.ndim == 2 else image.shape[2]
        gain_map, gain_lin = self._gain(channels)
        signal = cv2.multiply(image, gain_map, dst=self._buffer("signal", image.shape), dtype=cv2.CV_32F)
        noise = self.config.noise
        if not noise.enabled:
            return cv2.add(signal, 0.0, dtype=cv2.CV_8U)
        k = 255.0 / noise.full_well_e * gain_lin  # DN per electron
        std = cv2.addWeighted(signal, k, signal, 0.0, (noise.read_noise_e * k) ** 2, dst=self._buffer("std", image.shape))
        cv2.sqrt(std, dst=std)
        gauss = self._buffer("gauss", image.shape)
        # OpenCV's RNG is thread-local: seeding it right before use makes the draw depend on our seed only
        cv2.setRNGSeed(int(self._rng.integers(1, 2**31 - 1)))
        cv2.randn(gauss, (0.0,) * channels, (1.0,) * channels)
        cv2.multiply(std, gauss, dst=std)
        return cv2.add(signal, std, dtype=cv2.CV_8U)
