"""Building a cell (robot, camera, scene, safety envelope, pose plan) from a cell YAML and a campaign YAML.

A cell file (``configs/cells/*.yaml``) has the sections ``robot``, ``camera``, ``scene``, ``envelope``,
``clock``, ``capture`` and the keys ``name`` and ``seed``; each device section names its ``backend``
(``sim`` today; the real cell adds ``ur5`` / ``genicam``). A campaign file (``configs/campaigns/*.yaml``)
has the ``plan:`` section (:class:`acquisition.plan.PlanConfig`) and an optional ``description``.
Every error names the file and the key (``cell.config.validate_mapping``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from acquisition.envelope import SafetyEnvelope
from acquisition.plan import PlanConfig, PlannedPose, footprint_from_camera, make_plan
from acquisition.sim.camera import SimCamera, SimCameraConfig
from acquisition.sim.clock import SimClock
from acquisition.sim.robot import SimRobot, SimRobotConfig
from acquisition.sim.scene import Scene, SceneConfig
from calibration.camera_model import CameraModel
from calibration.transforms import Transform
from cell.config import read_yaml_mapping, validate_mapping
from cell.errors import ConfigFileError


class SimRobotSection(SimRobotConfig):
    """``robot:`` of a cell file with ``backend: sim``: the simulated UR5's settings."""

    backend: Literal["sim"] = "sim"


class SimCameraSection(SimCameraConfig):
    """``camera:`` of a cell file with ``backend: sim``: the simulated camera's settings."""

    backend: Literal["sim"] = "sim"


class ClockConfig(BaseModel):
    """The simulation clock: 0 = as fast as possible, 1 = real time, 10 = ten times real time."""

    model_config = ConfigDict(extra="forbid")

    realtime_factor: float = Field(0.0, ge=0.0, le=1000.0)


class CaptureSettings(BaseModel):
    """How a campaign captures: the camera timeout and how often a timed-out capture is retried."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(2.0, gt=0.0, le=60.0, description="camera capture timeout, s")
    camera_retries: int = Field(2, ge=0, le=20, description="extra attempts after a camera timeout")


class CellConfig(BaseModel):
    """A whole cell file (``configs/cells/*.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "sim"
    seed: int = Field(0, description="seed of the scene (parts, defects) and the sensor noise")
    robot: SimRobotSection = Field(default_factory=SimRobotSection)
    camera: SimCameraSection = Field(default_factory=SimCameraSection)
    scene: SceneConfig = Field(default_factory=SceneConfig)
    envelope: SafetyEnvelope = Field(default_factory=SafetyEnvelope)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)


class CampaignFile(BaseModel):
    """A campaign file (``configs/campaigns/*.yaml``): the pose plan and a description."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    plan: PlanConfig = Field(default_factory=PlanConfig)


def load_cell_config(path: str | Path) -> CellConfig:
    """Read and validate a cell file; errors name the file and the key."""
    return validate_mapping(str(path), read_yaml_mapping(path), CellConfig)


def load_campaign_file(path: str | Path) -> CampaignFile:
    """Read and validate a campaign file; errors name the file and the key."""
    return validate_mapping(str(path), read_yaml_mapping(path), CampaignFile)


@dataclass
class Cell:
    """A built cell. Use as a context manager: connects the robot and opens the camera, closes both.

    ``scene`` and ``clock`` exist for the simulated cell only; ``camera_model`` and ``T_flange_cam``
    (camera in the TCP frame) are the simulation's true geometry.
    """

    config: CellConfig
    source: str
    robot: SimRobot
    camera: SimCamera
    envelope: SafetyEnvelope
    scene: Optional[Scene]
    clock: Optional[SimClock]
    camera_model: CameraModel
    T_flange_cam: Transform

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

    def on_new_part(self, part_id: str) -> Optional[str]:
        """Put part ``part_id`` on the table (the sim draws it from (seed, part_id)); returns its truth label."""
        if self.scene is None:
            return None
        return self.scene.new_part(part_id).kind

    def plan(self, plan_config: PlanConfig) -> list[PlannedPose]:
        """The campaign's poses, aimed so that the CAMERA sits at each planned view.

        Without ``plan.footprint_m`` the footprint comes from the camera model at the working distance.
        """
        footprint = None
        if plan_config.footprint_m is None:
            footprint = footprint_from_camera(self.camera_model, plan_config.working_distance_m)
        # The sim camera hangs off the TCP frame, so its mount is composed with the TCP (no extra offset).
        return make_plan(plan_config, footprint=footprint, T_flange_cam=self.T_flange_cam)

    def describe(self) -> dict[str, Any]:
        """Geometry a later tool needs (labelling carry-over, calibration checks), JSON-friendly."""
        return {
            "backend": {"robot": self.config.robot.backend, "camera": self.config.camera.backend},
            "camera_model": self.camera_model.to_dict(),
            "T_flange_cam": [float(v) for v in self.T_flange_cam.to_pose()],
            "camera_id": self.camera.camera_id,
        }


def build_cell(
    config: CellConfig,
    *,
    source: str = "<cell config>",
    seed: Optional[int] = None,
    defect_rate: Optional[float] = None,
) -> Cell:
    """Make the robot, camera, scene and envelope of ``config``.

    ``seed`` overrides the file's seed; ``defect_rate`` in [0, 1] overrides ``scene.defects.probability``.
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
    clock = SimClock(config.clock.realtime_factor)
    robot_cfg = SimRobotConfig.model_validate(config.robot.model_dump(exclude={"backend"}))
    camera_cfg = SimCameraConfig.model_validate(config.camera.model_dump(exclude={"backend"}))
    robot = SimRobot(robot_cfg, clock=clock, envelope=config.envelope)
    scene = Scene(config.scene, seed=config.seed)
    camera = SimCamera(camera_cfg, robot, scene, seed=config.seed)
    return Cell(
        config=config, source=source, robot=robot, camera=camera, envelope=config.envelope, scene=scene,
        clock=clock, camera_model=camera.camera_model, T_flange_cam=camera.T_flange_cam,
    )


def load_cell(path: str | Path, *, seed: Optional[int] = None, defect_rate: Optional[float] = None) -> Cell:
    """:func:`load_cell_config` then :func:`build_cell`."""
    return build_cell(load_cell_config(path), source=str(path), seed=seed, defect_rate=defect_rate)
