"""Building a cell (robot, camera, scene, safety envelope, pose plan) from a cell YAML and a campaign YAML.

A cell file (``configs/cells/*.yaml``) has the sections ``robot``, ``camera``, ``scene``, ``envelope``,
``clock``, ``capture`` and the keys ``name``, ``seed`` and ``calibration``; each device section names its
``backend``: ``sim`` (the simulated UR5 / camera) or ``ur5`` (ur_rtde) / ``genicam`` (harvesters). A simulated
camera may ride on a real robot (it renders the scene at the robot's pose); a real camera needs a real robot.
``calibration`` names the calibration file in force (``cell calibrate``): its camera model and hand-eye
transform are then used for planning, and its id is recorded with every campaign. A real camera needs one
to plan poses. A campaign file (``configs/campaigns/*.yaml``)
has the ``plan:`` section (:class:`acquisition.plan.PlanConfig`) and an optional ``description``.
Every error names the file and the key (``cell.config.validate_mapping``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from typing_extensions import Annotated

from acquisition.envelope import SafetyEnvelope
from acquisition.errors import ConfigError, EnvelopeViolation
from acquisition.genicam.camera import GenICamCamera, GenICamCameraConfig
from acquisition.plan import PlanConfig, PlannedPose, footprint_from_camera, make_plan
from acquisition.sim.camera import SimCamera, SimCameraConfig
from acquisition.sim.clock import SimClock
from acquisition.sim.robot import SimRobot, SimRobotConfig
from acquisition.sim.scene import Scene, SceneConfig
from acquisition.ur.robot import URRobot, URRobotConfig
from calibration.calibration_file import CalibrationFile, load_calibration
from calibration.camera_model import CameraModel
from calibration.transforms import Transform
from cell.config import read_yaml_mapping, validate_mapping
from cell.errors import CampaignError, CellError, ConfigFileError
from cell.signals.config import MqttConfig, OpcUaConfig


class SimRobotSection(SimRobotConfig):
    """``robot:`` of a cell file with ``backend: sim``: the simulated UR5's settings."""

    backend: Literal["sim"] = "sim"


class SimCameraSection(SimCameraConfig):
    """``camera:`` of a cell file with ``backend: sim``: the simulated camera's settings."""

    backend: Literal["sim"] = "sim"


class URRobotSection(URRobotConfig):
    """``robot:`` of a cell file with ``backend: ur5``: a real UR5 over ur_rtde."""

    backend: Literal["ur5"]


class GenICamCameraSection(GenICamCameraConfig):
    """``camera:`` of a cell file with ``backend: genicam``: a real camera over harvesters."""

    backend: Literal["genicam"]


def _backend_of(default: str):
    def pick(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get("backend", default))
        return str(getattr(value, "backend", default))

    return pick


RobotSection = Annotated[
    Union[Annotated[SimRobotSection, Tag("sim")], Annotated[URRobotSection, Tag("ur5")]],
    Discriminator(_backend_of("sim"), custom_error_type="backend", custom_error_message="backend must be sim or ur5"),
]
CameraSection = Annotated[
    Union[Annotated[SimCameraSection, Tag("sim")], Annotated[GenICamCameraSection, Tag("genicam")]],
    Discriminator(
        _backend_of("sim"), custom_error_type="backend", custom_error_message="backend must be sim or genicam"
    ),
]


class ClockConfig(BaseModel):
    """The simulation clock: 0 = as fast as possible, 1 = real time, 10 = ten times real time."""

    model_config = ConfigDict(extra="forbid")

    realtime_factor: float = Field(0.0, ge=0.0, le=1000.0)


class CaptureSettings(BaseModel):
    """How a campaign captures: the camera timeout and how often a timed-out capture is retried."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(2.0, gt=0.0, le=60.0, description="camera capture timeout, s")
    camera_retries: int = Field(2, ge=0, le=20, description="extra attempts after a camera timeout")


class PartFeedConfig(BaseModel):
    """How a real cell learns that the next part is on the table (the simulation places it itself).

    ``prompt``: ask the operator on the terminal; ``digital_input``: wait for the robot's standard digital
    input ``input`` to go high (a part-present sensor or the line's handshake), at most ``timeout_s``;
    ``opcua``: wait for the PLC to set PartPresent (or call Start) on the OPC UA server of
    ``cell inspect --signal opcua``, at most ``timeout_s`` (the simulated cell waits too, then draws the part);
    ``none``: do not wait (parts are already in place).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["prompt", "digital_input", "opcua", "none"] = "prompt"
    input: int = Field(0, ge=0, le=7)
    timeout_s: float = Field(600.0, gt=0.0)


class CellConfig(BaseModel):
    """A whole cell file (``configs/cells/*.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "sim"
    seed: int = Field(0, description="seed of the scene (parts, defects) and the sensor noise")
    robot: RobotSection = Field(default_factory=SimRobotSection)
    camera: CameraSection = Field(default_factory=SimCameraSection)
    calibration: Optional[Path] = Field(
        None, description="calibration file in force (relative paths: to the cell file's folder)"
    )
    part_feed: PartFeedConfig = Field(default_factory=PartFeedConfig)
    scene: SceneConfig = Field(default_factory=SceneConfig)
    envelope: SafetyEnvelope = Field(default_factory=SafetyEnvelope)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    opcua: Optional[OpcUaConfig] = Field(None, description="the OPC UA server of `cell inspect --signal opcua`")
    mqtt: Optional[MqttConfig] = Field(None, description="the MQTT broker of `cell inspect --signal mqtt`")


class CampaignFile(BaseModel):
    """A campaign file (``configs/campaigns/*.yaml``): the pose plan and a description."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    plan: PlanConfig = Field(description="the pose plan (required: a file without one is a mistake, not a default)")


def load_cell_config(path: str | Path) -> CellConfig:
    """Read and validate a cell file; errors name the file and the key."""
    return validate_mapping(str(path), read_yaml_mapping(path), CellConfig)


def load_campaign_file(path: str | Path) -> CampaignFile:
    """Read and validate a campaign file; errors name the file and the key."""
    return validate_mapping(str(path), read_yaml_mapping(path), CampaignFile)


@dataclass
class Cell:
    """A built cell. Use as a context manager: connects the robot and opens the camera, closes both.

    ``scene`` and ``clock`` exist for a simulated camera / robot only. ``camera_model`` and ``T_flange_cam``
    (camera in the TCP frame) come from the calibration file in force, else from the simulation's truth;
    a real camera without a calibration file has neither (planning then needs ``plan.footprint_m`` and
    aims the TCP rather than the camera). ``calibration_id`` is recorded with every campaign.
    """

    config: CellConfig
    source: str
    robot: Any
    camera: Any
    envelope: SafetyEnvelope
    scene: Optional[Scene]
    clock: Optional[SimClock]
    camera_model: Optional[CameraModel]
    T_flange_cam: Optional[Transform]
    calibration: Optional[CalibrationFile] = None
    part_feed: PartFeedConfig = field(default_factory=PartFeedConfig)
    prompt: Callable[[str], Any] = input
    camera_serial: Optional[str] = None  # the serial the cell file names; a calibration file must match it
    #: ``part_feed: opcua``: waits until the PLC has put part ``part_id`` in place (set by ``cell inspect``).
    line_feed: Optional[Callable[[str], None]] = None

    @property
    def calibration_id(self) -> Optional[str]:
        return self.calibration.calibration_id if self.calibration is not None else None

    def __enter__(self) -> "Cell":
        self.robot.connect()
        try:
            self.camera.open()
        except BaseException:
            self.robot.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.camera.close()
        finally:
            self.robot.close()

    @property
    def feed_waits(self) -> bool:
        """True when :meth:`on_new_part` can wait (for the operator, a part sensor or the PLC): the line must
        then have told the last part's verdict before it waits for the next part."""
        return self.part_feed.mode == "opcua" or (self.scene is None and self.part_feed.mode != "none")

    def on_new_part(self, part_id: str) -> Optional[str]:
        """Get part ``part_id`` onto the table. The simulation draws it from (seed, part_id) and returns its
        truth label; a real cell waits as ``part_feed`` says and returns None (no truth). With ``part_feed:
        opcua`` both wait for the PLC first."""
        if self.part_feed.mode == "opcua":
            if self.line_feed is None:
                raise CellError(f"{self.source}: part_feed.mode 'opcua' needs the OPC UA server: run "
                                "`cell inspect --signal opcua`")
            self.line_feed(part_id)
        if self.scene is not None:
            return self.scene.new_part(part_id).kind
        if self.part_feed.mode == "prompt":
            self.prompt(f"place part {part_id} on the table, then press Enter ")
        elif self.part_feed.mode == "digital_input":
            self._wait_for_input(part_id)
        return None

    def _wait_for_input(self, part_id: str) -> None:
        read = getattr(self.robot, "digital_input", None)
        if read is None:
            raise CellError(f"part_feed.mode 'digital_input' needs a robot with digital inputs ({type(self.robot).__name__})")
        deadline = time.monotonic() + self.part_feed.timeout_s
        while not read(self.part_feed.input):
            if time.monotonic() > deadline:
                raise CellError(
                    f"no part arrived for {part_id}: digital input {self.part_feed.input} stayed low "
                    f"for {self.part_feed.timeout_s:g} s"
                )
            time.sleep(0.05)

    def plan(self, plan_config: PlanConfig, source: str = "") -> list[PlannedPose]:
        """The campaign's poses, aimed so that the CAMERA sits at each planned view.

        Without ``plan.footprint_m`` the footprint comes from the camera model at the working distance.
        ``source`` (the campaign file) prefixes the errors: too many poses, a pose outside the envelope.
        """
        prefix = f"{source}: " if source else ""
        footprint = None
        if plan_config.footprint_m is None:
            if self.camera_model is None:
                raise CellError(
                    f"{self.source}: the camera has no model to plan with: set 'calibration:' in the cell file "
                    "(run `cell calibrate`) or give plan.footprint_m in the campaign file"
                )
            footprint = footprint_from_camera(self.camera_model, plan_config.working_distance_m)
        # The camera hangs off the TCP frame, so its mount is composed with the TCP (no extra offset).
        # Each pose is checked against the envelope as it is generated (a huge plan fails at its first bad pose).
        try:
            return make_plan(plan_config, footprint=footprint, T_flange_cam=self.T_flange_cam, envelope=self.envelope)
        except EnvelopeViolation as exc:
            raise CampaignError(f"{prefix}the pose plan is refused before any motion: {exc}") from exc
        except ConfigError as exc:
            raise ConfigFileError(f"{prefix}{exc}") from exc

    def describe(self) -> dict[str, Any]:
        """Geometry a later tool needs (labelling carry-over, calibration checks), JSON-friendly."""
        return {
            "backend": {"robot": self.config.robot.backend, "camera": self.config.camera.backend},
            "camera_model": None if self.camera_model is None else self.camera_model.to_dict(),
            "T_flange_cam": None if self.T_flange_cam is None else [float(v) for v in self.T_flange_cam.to_pose()],
            "camera_id": self.camera.camera_id,
            "calibration_id": self.calibration_id,
        }


def calibration_path(config: CellConfig, source: str, override: Optional[Path] = None) -> Optional[Path]:
    """The calibration file in force for ``config`` read from ``source`` (relative paths are taken from the
    cell file's folder), or ``override``; None when there is none."""
    path = override if override is not None else config.calibration
    if path is None:
        return None
    if not path.is_absolute() and override is None and source and not source.startswith("<"):
        path = Path(source).parent / path
    return path


def build_cell(
    config: CellConfig,
    *,
    source: str = "<cell config>",
    seed: Optional[int] = None,
    defect_rate: Optional[float] = None,
    calibration: Optional[Path] = None,
) -> Cell:
    """Make the robot, camera, scene and envelope of ``config``.

    ``seed`` overrides the file's seed; ``defect_rate`` in [0, 1] overrides ``scene.defects.probability``;
    ``calibration`` overrides the file's calibration file.
    """
    updates: dict[str, Any] = {}
    if seed is not None:
        updates["seed"] = int(seed)
    if defect_rate is not None:
        if not 0.0 <= float(defect_rate) <= 1.0:
            raise ConfigFileError(f"--defect-rate = {defect_rate!r}: must be between 0 and 1")
        defects = config.scene.defects.model_copy(update={"probability": float(defect_rate)})
        updates["scene"] = config.scene.model_copy(update={"defects": defects})
    if updates:
        config = config.model_copy(update=updates)

    clock: Optional[SimClock] = None
    if config.robot.backend == "sim":
        clock = SimClock(config.clock.realtime_factor)
        robot_cfg = SimRobotConfig.model_validate(config.robot.model_dump(exclude={"backend"}))
        robot: Any = SimRobot(robot_cfg, clock=clock, envelope=config.envelope)
    else:
        robot = URRobot(URRobotConfig.model_validate(config.robot.model_dump(exclude={"backend"})),
                        envelope=config.envelope)

    scene: Optional[Scene] = None
    camera_model: Optional[CameraModel] = None
    T_flange_cam: Optional[Transform] = None
    if config.camera.backend == "sim":
        camera_cfg = SimCameraConfig.model_validate(config.camera.model_dump(exclude={"backend"}))
        scene = Scene(config.scene, seed=config.seed)
        camera: Any = SimCamera(camera_cfg, robot, scene, seed=config.seed)
        camera_model, T_flange_cam = camera.camera_model, camera.T_flange_cam
        serial: Optional[str] = camera_cfg.serial
    else:
        if config.robot.backend == "sim":
            raise ConfigFileError(
                f"{source}: key 'camera.backend' = 'genicam' needs a real robot (robot.backend: ur5): "
                "a real camera cannot look at the simulated scene"
            )
        camera_cfg = GenICamCameraConfig.model_validate(config.camera.model_dump(exclude={"backend"}))
        camera = GenICamCamera(camera_cfg)
        serial = camera_cfg.serial_number

    calibration_file: Optional[CalibrationFile] = None
    path = calibration_path(config, source, calibration)
    if path is not None:
        calibration_file = load_calibration(path, expected_serial=serial)
        camera_model, T_flange_cam = calibration_file.camera, calibration_file.T_flange_cam
    return Cell(
        config=config, source=source, robot=robot, camera=camera, envelope=config.envelope, scene=scene,
        clock=clock, camera_model=camera_model, T_flange_cam=T_flange_cam, calibration=calibration_file,
        part_feed=config.part_feed, camera_serial=serial,
    )


def load_cell(
    path: str | Path,
    *,
    seed: Optional[int] = None,
    defect_rate: Optional[float] = None,
    calibration: Optional[Path] = None,
) -> Cell:
    """:func:`load_cell_config` then :func:`build_cell`."""
    return build_cell(
        load_cell_config(path), source=str(path), seed=seed, defect_rate=defect_rate, calibration=calibration
    )
