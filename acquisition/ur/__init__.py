"""The real UR backend: :class:`URRobot` on ur_rtde, port probes, and a fake controller for tests."""
from acquisition.ur.probe import probe_controller
from acquisition.ur.robot import URRobot, URRobotConfig

__all__ = ["URRobot", "URRobotConfig", "probe_controller"]
