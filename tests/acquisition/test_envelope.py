"""The safety envelope: pose, motion and plan checks with messages naming the pose and the limit."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from acquisition.envelope import SafetyEnvelope, tool_down_angle
from acquisition.errors import EnvelopeViolation
from acquisition.plan import PlannedPose
from calibration.transforms import Transform

DOWN = [math.pi, 0.0, 0.0]


def _tilted(angle_deg: float) -> np.ndarray:
    """A pose inside the default box whose tool axis is ``angle_deg`` from pointing down."""
    T = Transform.from_pose([0.0, -0.45, 0.4, *DOWN]) @ Transform.from_rt(
        np.array([math.radians(angle_deg), 0.0, 0.0]), np.zeros(3)
    )
    return T.to_pose()


def test_tool_down_angle():
    assert tool_down_angle([0, 0, 0, *DOWN]) == pytest.approx(0.0, abs=1e-12)
    assert tool_down_angle([0, 0, 0, 0, 0, 0]) == pytest.approx(math.pi)
    assert math.degrees(tool_down_angle(_tilted(12.0))) == pytest.approx(12.0)


def test_pose_inside_passes():
    SafetyEnvelope().check_pose([0.0, -0.45, 0.4, *DOWN], label="r0c0s0")


@pytest.mark.parametrize(
    ("pose", "message"),
    [
        ([0.0, -0.45, 0.012, *DOWN], "pose r2c3s1: z = 0.012 m is below the workspace floor 0.100 m"),
        ([0.0, -0.45, 0.9, *DOWN], "pose r2c3s1: z = 0.900 m is above the workspace ceiling 0.750 m"),
        ([0.8, -0.45, 0.4, *DOWN], "pose r2c3s1: x = 0.800 m is above the workspace maximum x 0.750 m"),
        ([0.0, -0.8, 0.4, *DOWN], "pose r2c3s1: y = -0.800 m is below the workspace minimum y -0.750 m"),
        (list(_tilted(20.0)), "pose r2c3s1: the tool z-axis is 20.0 deg from pointing down, beyond the "
                              "tolerance tool_down_tolerance_deg = 15.0 deg"),
    ],
)
def test_pose_violations_name_the_pose_and_the_limit(pose, message):
    with pytest.raises(EnvelopeViolation) as info:
        SafetyEnvelope().check_pose(pose, label="r2c3s1")
    assert str(info.value) == message


def test_unlabelled_pose_is_shown_by_value_and_nan_is_refused():
    with pytest.raises(EnvelopeViolation, match=r"pose \[0.0000, -0.4500, 0.0100"):
        SafetyEnvelope().check_pose([0.0, -0.45, 0.01, *DOWN])
    with pytest.raises(EnvelopeViolation, match="non-finite"):
        SafetyEnvelope().check_pose([0.0, math.nan, 0.3, *DOWN], label="p")


def test_tolerance_is_configurable():
    SafetyEnvelope(tool_down_tolerance_deg=25).check_pose(_tilted(20.0))
    with pytest.raises(EnvelopeViolation, match="5.0 deg"):
        SafetyEnvelope(tool_down_tolerance_deg=5).check_pose(_tilted(6.0))


def test_motion_limits():
    env = SafetyEnvelope(max_speed=0.5, max_accel=2.0, max_joint_speed=1.5, max_joint_accel=3.0)
    env.check_motion(0.5, 2.0)
    env.check_motion(1.5, 3.0, joint=True)
    with pytest.raises(EnvelopeViolation, match="linear speed 0.600 m/s exceeds max_speed 0.500 m/s"):
        env.check_motion(0.6, 1.0)
    with pytest.raises(EnvelopeViolation, match=r"linear acceleration 2.500 m/s\^2 exceeds max_accel"):
        env.check_motion(0.1, 2.5)
    with pytest.raises(EnvelopeViolation, match="joint speed 2.000 rad/s exceeds max_joint_speed 1.500"):
        env.check_motion(2.0, 1.0, joint=True)
    with pytest.raises(EnvelopeViolation, match="joint acceleration 4.000"):
        env.check_motion(1.0, 4.0, joint=True)
    with pytest.raises(EnvelopeViolation, match="must be a positive number"):
        env.check_motion(0.0, 1.0)
    with pytest.raises(EnvelopeViolation, match="must be a positive number"):
        env.check_motion(math.inf, 1.0)


def test_check_plan_names_the_first_bad_pose():
    good = [0.0, -0.45, 0.4, *DOWN]
    bad = [0.0, -0.45, 0.05, *DOWN]
    plan = [
        PlannedPose("r0c0s0", np.array(good), (0, 0), 0),
        PlannedPose("r0c1s2", np.array(bad), (0, 1), 2),
        PlannedPose("r0c2s0", np.array(bad), (0, 2), 0),
    ]
    env = SafetyEnvelope()
    with pytest.raises(EnvelopeViolation, match=r"^pose r0c1s2: z = 0.050 m is below the workspace floor"):
        env.check_plan(plan)
    with pytest.raises(EnvelopeViolation, match="linear speed"):
        env.check_plan(plan[:1], speed=1.0, accel=1.0)
    env.check_plan(plan[:1], speed=0.25, accel=1.2)


def test_envelope_config_is_validated():
    with pytest.raises(ValidationError, match="max_sped"):
        SafetyEnvelope.model_validate({"max_sped": 0.3})
    with pytest.raises(ValidationError, match=r"workspace_min.z = 0.8 must be below workspace_max.z = 0.75"):
        SafetyEnvelope(workspace_min=(-0.4, -0.7, 0.8))
    with pytest.raises(ValidationError, match="max_speed"):
        SafetyEnvelope(max_speed=-1)
