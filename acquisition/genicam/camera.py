"""``GenICamCamera``: the :class:`~acquisition.camera.Camera` interface on any GenTL producer through
harvesters + genicam.

Feature names differ between devices, so each setting probes its known names (``ExposureTime`` /
``ExposureTimeAbs``, ``Gain`` / ``GainRaw``) and :attr:`GenICamCamera.feature_report` says what was set
and what could not be. A software trigger is used when the device has one, free-run otherwise. Pixels
are converted from the buffer's own pixel format and copied out inside the fetch context.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from acquisition.camera import Frame
from acquisition.errors import CameraConfigError, CameraLost, CameraNotFound, CameraTimeout
from acquisition.genicam.pixel_formats import convert_buffer


class GenICamCameraConfig(BaseModel):
    """The ``camera:`` section of a real cell config (``backend: genicam``)."""

    model_config = ConfigDict(extra="forbid")

    producer: Path = Field(description="GenTL producer file (.cti) of the camera vendor")
    serial_number: Optional[str] = Field(default=None, description="camera serial; None = use 'index'")
    index: int = Field(default=0, ge=0, description="device index when no serial number is given")
    exposure_us: Optional[float] = Field(default=None, gt=0)
    gain_db: Optional[float] = Field(default=None, ge=0)
    pixel_format: Optional[str] = None
    roi: Optional[tuple[int, int, int, int]] = Field(default=None, description="x, y, width, height in pixels")
    trigger: Literal["auto", "software", "free_run"] = "auto"
    timeout_s: float = Field(default=2.0, gt=0)
    strict_features: bool = Field(default=False,
                                  description="raise when exposure/gain cannot be set (else report and go on)")


def _gentl_exceptions() -> tuple[type[BaseException], type[BaseException]]:
    from genicam.gentl import GenericException, TimeoutException

    return TimeoutException, GenericException


class GenICamCamera:
    """A GenICam camera; use as a context manager. ``camera_id`` = ``<model>-<serial>`` once open."""

    def __init__(self, config: GenICamCameraConfig) -> None:
        self.config = config
        self.camera_id = config.serial_number or f"index{config.index}"
        #: Device serial number (what calibration files are checked against); known once open.
        self.serial = config.serial_number or ""
        self._harvester: Any = None
        self._ia: Any = None
        self._software_trigger = False
        self._frame_counter = 0
        self.feature_report: list[str] = []
        self.identity: dict[str, str] = {}
        self._exposure_us = float("nan")
        self._gain_db = float("nan")

    def __enter__(self) -> "GenICamCamera":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- open / close ----------------------------------------------------------------------------
    def open(self) -> None:
        """Load the producer, find the device, apply the configured features, start acquisition."""
        if self._ia is not None:
            return
        cfg = self.config
        producer = Path(cfg.producer).expanduser()
        if not producer.is_file():
            raise CameraNotFound(f"GenTL producer file {producer} not found (camera.producer in the cell config)")
        from harvesters.core import Harvester

        h = Harvester()
        try:
            h.add_file(str(producer))
            h.update()
            devices = list(h.device_info_list)
            if not devices:
                raise CameraNotFound(f"no camera found through the GenTL producer {producer}")
            if cfg.serial_number is not None:
                serials = [str(d.serial_number) for d in devices]
                if cfg.serial_number not in serials:
                    raise CameraNotFound(f"no camera with serial number {cfg.serial_number!r} through {producer}; "
                                         f"found: {', '.join(serials)}")
                index = serials.index(cfg.serial_number)
            else:
                if cfg.index >= len(devices):
                    raise CameraNotFound(f"camera index {cfg.index} out of range: {len(devices)} device(s) "
                                         f"through {producer}")
                index = cfg.index
            info = devices[index]
            self._ia = h.create(index)
        except (CameraNotFound, CameraConfigError):
            h.reset()
            raise
        except Exception as exc:  # genicam raises its own exception family
            h.reset()
            raise CameraNotFound(f"cannot open camera through {producer}: {exc}") from None
        self._harvester = h
        self.identity = {"vendor": str(info.vendor), "model": str(info.model),
                         "serial_number": str(info.serial_number), "producer": str(producer)}
        self.camera_id = f"{info.model}-{info.serial_number}"
        self.serial = str(info.serial_number)
        try:
            self.configure(exposure_us=cfg.exposure_us, gain_db=cfg.gain_db, pixel_format=cfg.pixel_format,
                           roi=cfg.roi)
            self._setup_trigger()
            self._ia.start()
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        ia, h = self._ia, self._harvester
        self._ia = self._harvester = None
        for fn in ((lambda: ia.stop()) if ia else None, (lambda: ia.destroy()) if ia else None,
                   (lambda: h.reset()) if h else None):
            if fn is None:
                continue
            try:
                fn()
            except Exception:  # closing a lost device must not raise
                pass

    # --- features --------------------------------------------------------------------------------
    @property
    def _nodes(self) -> Any:
        if self._ia is None:
            raise CameraLost(f"camera {self.camera_id} is not open")
        return self._ia.remote_device.node_map

    def _node(self, *names: str) -> tuple[Optional[str], Any]:
        nodes = self._nodes
        for name in names:
            if hasattr(nodes, name):
                return name, getattr(nodes, name)
        return None, None

    def _set(self, names: tuple[str, ...], value: Any, what: str, strict: bool) -> bool:
        name, node = self._node(*names)
        if node is None:
            msg = f"{what}: not set, the device has none of {'/'.join(names)}"
            if strict:
                raise CameraConfigError(f"camera {self.camera_id}: {msg}")
            self.feature_report.append(msg)
            return False
        try:
            node.value = value
        except Exception as exc:
            msg = f"{what}: {name} = {value!r} refused: {exc}"
            if strict:
                raise CameraConfigError(f"camera {self.camera_id}: {msg}") from None
            self.feature_report.append(msg)
            return False
        self.feature_report.append(f"{what}: {name} = {node.value!r}")
        return True

    def configure(self, *, exposure_us: Optional[float] = None, gain_db: Optional[float] = None,
                  pixel_format: Optional[str] = None, roi: Optional[tuple[int, int, int, int]] = None) -> None:
        """Set features; pixel format and ROI failures raise CameraConfigError, exposure/gain failures too
        when ``strict_features`` (else they are listed in :attr:`feature_report`). Stops and restarts
        acquisition when it is running."""
        running = self._ia is not None and self._ia.is_acquiring()
        if running:
            self._ia.stop()
        strict = self.config.strict_features
        for name in ("ExposureAuto", "GainAuto"):
            if hasattr(self._nodes, name):
                try:
                    getattr(self._nodes, name).value = "Off"
                except Exception:
                    pass
        if exposure_us is not None and self._set(("ExposureTime", "ExposureTimeAbs"), float(exposure_us),
                                                 "exposure", strict):
            self._exposure_us = float(exposure_us)
        if gain_db is not None:
            if self._set(("Gain",), float(gain_db), "gain", False) or \
                    self._set(("GainRaw",), int(round(gain_db)), "gain (raw units)", strict):
                self._gain_db = float(gain_db)
        if pixel_format is not None:
            self._set(("PixelFormat",), pixel_format, "pixel format", True)
        if roi is not None:
            x, y, w, h = (int(v) for v in roi)
            for names, value, what in ((("OffsetX",), 0, "offset x"), (("OffsetY",), 0, "offset y"),
                                       (("Width",), w, "width"), (("Height",), h, "height")):
                if names[0].startswith("Offset") and self._node(*names)[1] is None:
                    continue
                self._set(names, value, what, True)
            for names, value, what in ((("OffsetX",), x, "offset x"), (("OffsetY",), y, "offset y")):
                if self._node(*names)[1] is not None:
                    self._set(names, value, what, True)
                elif value != 0:
                    raise CameraConfigError(f"camera {self.camera_id}: ROI offset {what} = {value} but the device "
                                            f"has no {names[0]}")
        if running:
            self._ia.start()

    def _setup_trigger(self) -> None:
        mode = self.config.trigger
        has_trigger = self._node("TriggerMode")[1] is not None and self._node("TriggerSoftware")[1] is not None
        if mode == "software" and not has_trigger:
            raise CameraConfigError(f"camera {self.camera_id}: trigger 'software' requested but the device has "
                                    f"no TriggerMode/TriggerSoftware")
        self._software_trigger = has_trigger and mode != "free_run"
        if self._software_trigger:
            for names, value in ((("TriggerSelector",), "FrameStart"), (("TriggerMode",), "On"),
                                 (("TriggerSource",), "Software")):
                if self._node(*names)[1] is not None:
                    self._set(names, value, "trigger", True)
        else:
            if self._node("TriggerMode")[1] is not None:
                self._set(("TriggerMode",), "Off", "trigger", False)
            self.feature_report.append("trigger: free-run (no software trigger used)")

    def features(self) -> dict[str, Any]:
        """Current values of the usual features the device has (for ``cell check``)."""
        out: dict[str, Any] = {}
        for name in ("DeviceModelName", "DeviceSerialNumber", "PixelFormat", "Width", "Height", "OffsetX",
                     "OffsetY", "ExposureTime", "ExposureTimeAbs", "Gain", "GainRaw", "TriggerMode",
                     "AcquisitionFrameRate"):
            _, node = self._node(name)
            if node is not None:
                try:
                    out[name] = node.value
                except Exception:
                    pass
        return out

    # --- capture ---------------------------------------------------------------------------------
    def capture(self, *, timeout_s: Optional[float] = None) -> Frame:
        """One frame: software-triggered when possible, else the next free-run frame after older queued
        ones are dropped. Raises CameraTimeout or CameraLost."""
        if self._ia is None:
            raise CameraLost(f"camera {self.camera_id} is not open")
        timeout = float(self.config.timeout_s if timeout_s is None else timeout_s)
        TimeoutException, GenericException = _gentl_exceptions()
        try:
            if self._software_trigger:
                self._nodes.TriggerSoftware.execute()
            else:
                while True:  # drop frames that were queued before this call
                    stale = self._ia.try_fetch(timeout=0.0001)
                    if stale is None:
                        break
                    stale.queue()
            with self._ia.fetch(timeout=timeout) as buffer:
                host_ts = time.time()
                component = buffer.payload.components[0]
                fmt = str(component.data_format)
                pixels = convert_buffer(component.data, component.width, component.height, fmt)
                try:
                    device_ts: Optional[int] = int(buffer.timestamp_ns)
                except Exception:
                    device_ts = None
        except TimeoutException:
            raise CameraTimeout(f"camera {self.camera_id}: no frame within {timeout:g} s") from None
        except (CameraConfigError, CameraTimeout):
            raise
        except GenericException as exc:
            raise CameraLost(f"camera {self.camera_id}: acquisition failed: {exc}") from None
        self._frame_counter += 1
        return Frame(pixels=pixels, frame_id=self._frame_counter, host_timestamp_s=host_ts,
                     device_timestamp_ns=device_ts, exposure_us=self._exposure_us, gain_db=self._gain_db,
                     pixel_format=fmt, camera_id=self.camera_id,
                     extra={"trigger": "software" if self._software_trigger else "free_run"})
