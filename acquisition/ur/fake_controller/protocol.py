"""RTDE wire format (protocol version 2), written from Universal Robots' public RTDE description.

Every message is ``uint16 size`` (header included) ``uint8 type`` then a payload, all big-endian.
This module knows the message types, the data types of recipe fields and the name -> type table of
the variables the fake controller serves; it does no I/O.
"""
from __future__ import annotations

import struct
from typing import Iterable

HEADER = struct.Struct(">HB")

REQUEST_PROTOCOL_VERSION = ord("V")
GET_URCONTROL_VERSION = ord("v")
TEXT_MESSAGE = ord("M")
DATA_PACKAGE = ord("U")
SETUP_OUTPUTS = ord("O")
SETUP_INPUTS = ord("I")
START = ord("S")
PAUSE = ord("P")

PROTOCOL_VERSION = 2

#: struct format of each RTDE data type.
TYPE_FORMATS: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "B",
    "UINT32": "I",
    "UINT64": "Q",
    "INT32": "i",
    "DOUBLE": "d",
    "VECTOR3D": "3d",
    "VECTOR6D": "6d",
    "VECTOR6INT32": "6i",
    "VECTOR6UINT32": "6I",
}

_V6 = "VECTOR6D"
#: Output (controller -> client) variables and their types.
OUTPUT_TYPES: dict[str, str] = {
    "timestamp": "DOUBLE",
    "target_q": _V6, "target_qd": _V6, "target_qdd": _V6, "target_current": _V6, "target_moment": _V6,
    "actual_q": _V6, "actual_qd": _V6, "actual_current": _V6, "actual_current_window": _V6,
    "joint_control_output": _V6, "actual_TCP_pose": _V6, "actual_TCP_speed": _V6, "actual_TCP_force": _V6,
    "target_TCP_pose": _V6, "target_TCP_speed": _V6, "actual_digital_input_bits": "UINT64",
    "joint_temperatures": _V6, "actual_execution_time": "DOUBLE", "robot_mode": "INT32",
    "joint_mode": "VECTOR6INT32", "safety_mode": "INT32", "safety_status": "INT32",
    "actual_tool_accelerometer": "VECTOR3D", "speed_scaling": "DOUBLE", "target_speed_fraction": "DOUBLE",
    "actual_momentum": "DOUBLE", "actual_main_voltage": "DOUBLE", "actual_robot_voltage": "DOUBLE",
    "actual_robot_current": "DOUBLE", "actual_joint_voltage": _V6, "actual_digital_output_bits": "UINT64",
    "runtime_state": "UINT32", "elbow_position": "VECTOR3D", "elbow_velocity": "VECTOR3D",
    "robot_status_bits": "UINT32", "safety_status_bits": "UINT32", "analog_io_types": "UINT32",
    "standard_analog_input0": "DOUBLE", "standard_analog_input1": "DOUBLE",
    "standard_analog_output0": "DOUBLE", "standard_analog_output1": "DOUBLE", "io_current": "DOUBLE",
    "euromap67_input_bits": "UINT32", "euromap67_output_bits": "UINT32",
    "euromap67_24V_voltage": "DOUBLE", "euromap67_24V_current": "DOUBLE", "tool_mode": "UINT32",
    "tool_analog_input_types": "UINT32", "tool_analog_input0": "DOUBLE", "tool_analog_input1": "DOUBLE",
    "tool_output_voltage": "INT32", "tool_output_current": "DOUBLE", "tool_temperature": "DOUBLE",
    "tcp_force_scalar": "DOUBLE", "output_bit_registers0_to_31": "UINT32",
    "output_bit_registers32_to_63": "UINT32", "input_bit_registers0_to_31": "UINT32",
    "input_bit_registers32_to_63": "UINT32", "payload": "DOUBLE", "payload_cog": "VECTOR3D",
    "payload_inertia": _V6, "script_control_line": "UINT32", "ft_raw_wrench": _V6,
    "joint_position_deviation_ratio": "DOUBLE", "collision_detection_ratio": "DOUBLE",
    "time_scale_source": "UINT32", "actual_current_as_torque": _V6, "target_current_as_torque": _V6,
}
for _i in range(48):
    OUTPUT_TYPES[f"output_int_register_{_i}"] = "INT32"
    OUTPUT_TYPES[f"output_double_register_{_i}"] = "DOUBLE"
    OUTPUT_TYPES[f"input_int_register_{_i}"] = "INT32"
    OUTPUT_TYPES[f"input_double_register_{_i}"] = "DOUBLE"
for _i in range(64, 128):
    OUTPUT_TYPES[f"output_bit_register_{_i}"] = "BOOL"
    OUTPUT_TYPES[f"input_bit_register_{_i}"] = "BOOL"

#: Input (client -> controller) variables and their types.
INPUT_TYPES: dict[str, str] = {
    "speed_slider_mask": "UINT32", "speed_slider_fraction": "DOUBLE",
    "standard_digital_output_mask": "UINT8", "standard_digital_output": "UINT8",
    "configurable_digital_output_mask": "UINT8", "configurable_digital_output": "UINT8",
    "tool_digital_output_mask": "UINT8", "tool_digital_output": "UINT8",
    "standard_analog_output_mask": "UINT8", "standard_analog_output_type": "UINT8",
    "standard_analog_output_0": "DOUBLE", "standard_analog_output_1": "DOUBLE",
    "input_bit_registers0_to_31": "UINT32", "input_bit_registers32_to_63": "UINT32",
    "external_force_torque": _V6,
}
for _i in range(48):
    INPUT_TYPES[f"input_int_register_{_i}"] = "INT32"
    INPUT_TYPES[f"input_double_register_{_i}"] = "DOUBLE"
for _i in range(64, 128):
    INPUT_TYPES[f"input_bit_register_{_i}"] = "BOOL"

NOT_FOUND = "NOT_FOUND"


class ProtocolError(Exception):
    """A malformed RTDE message."""


def pack_message(msg_type: int, payload: bytes = b"") -> bytes:
    """Frame ``payload`` as one RTDE message of ``msg_type``."""
    return HEADER.pack(HEADER.size + len(payload), msg_type) + payload


def recipe_struct(types: Iterable[str]) -> struct.Struct:
    """The big-endian struct of a data package body (after the recipe id) for these field types."""
    return struct.Struct(">" + "".join(TYPE_FORMATS[t] for t in types))


def flatten(value: object, rtde_type: str) -> list:
    """One field value as the flat list of scalars ``struct`` expects."""
    if rtde_type.startswith("VECTOR"):
        return [float(v) if "D" in rtde_type[-1] else int(v) for v in value]  # type: ignore[union-attr]
    if rtde_type == "DOUBLE":
        return [float(value)]  # type: ignore[arg-type]
    if rtde_type == "BOOL":
        return [bool(value)]
    return [int(value)]  # type: ignore[call-overload]


def unflatten(values: tuple, types: list[str]) -> list:
    """Regroup the scalars from ``struct.unpack`` into one value per field."""
    out: list = []
    i = 0
    for t in types:
        n = 6 if t.startswith("VECTOR6") else 3 if t.startswith("VECTOR3") else 1
        out.append(list(values[i:i + n]) if n > 1 else values[i])
        i += n
    return out
