"""The OPC UA address space of the line: one object ``InspectionCell`` modelled on the inline vision system
of the OPC UA Machine Vision companion specification (OPC 40100), and the values a result writes into it.

Every node has a string node id ``ns=<namespace index>;s=InspectionCell.<Folder>.<Name>`` so a PLC program
can address it without browsing. Written by the cell, read-only for clients, except the two handshake inputs
(``Handshake.PartPresent``, ``Handshake.ResultAcknowledged``), which a PLC writes::

    InspectionCell
      State          String    Initializing | Ready | Busy | Error
      StateCode      Int32     0 Initializing, 1 Ready, 2 Busy, 3 Error
      LastError      String    why the line is in Error (empty otherwise)
      Job/           Campaign (String), Model (String), Threshold (Double)
      Handshake/     PartPresent (Boolean, PLC writes), ResultReady (Boolean),
                     ResultAcknowledged (Boolean, PLC writes), Start(), Acknowledge()
      Result/        Sequence (UInt32, written last), PartId, Verdict (OK | NOK | ERROR), VerdictCode
                     (Int32: 1 OK, 2 NOK, 3 ERROR), Score, Threshold (Double), DefectCount (Int32),
                     DefectX_mm, DefectY_mm, DefectArea_mm2 (Double[]), Reason (String),
                     StartedAt, FinishedAt (DateTime), Json (String: the MQTT message of the part)
      Counters/      OK, NOK, Error (UInt32): parts of this run

Deviation from OPC 40100 (documented in the README): the specification's information model (its
``VisionSystemType`` with state machine, recipe, configuration and result management, its own namespace and
structured ``ResultDataType``) is not imported; this is a flat model with the same roles (system state,
current job, per-part result, PartPresent / ResultReady / acknowledge handshake), made of plain variables a
PLC can read without custom data types. The defect list is three parallel arrays for the same reason.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from asyncua import Server, ua
from asyncua.common.node import Node

from cell.line_result import LineResult
from cell.signals.base import LineStatus

ROOT = "InspectionCell"
STATE_CODES = {"Initializing": 0, "Ready": 1, "Busy": 2, "Error": 3}
#: The OPC UA spelling of the verdicts (the result's ``error`` is ``ERROR`` here) and their codes.
VERDICT_NAMES = {"OK": "OK", "NOK": "NOK", "error": "ERROR"}
VERDICT_CODES = {"OK": 1, "NOK": 2, "error": 3}

V = ua.VariantType
#: (folder, name) -> (variant type, initial value, writable by clients)
VARIABLES: dict[tuple[str, str], tuple[ua.VariantType, Any, bool]] = {
    ("", "State"): (V.String, "Initializing", False),
    ("", "StateCode"): (V.Int32, 0, False),
    ("", "LastError"): (V.String, "", False),
    ("Job", "Campaign"): (V.String, "", False),
    ("Job", "Model"): (V.String, "", False),
    ("Job", "Threshold"): (V.Double, math.nan, False),
    ("Handshake", "PartPresent"): (V.Boolean, False, True),
    ("Handshake", "ResultReady"): (V.Boolean, False, False),
    ("Handshake", "ResultAcknowledged"): (V.Boolean, False, True),
    ("Result", "PartId"): (V.String, "", False),
    ("Result", "Verdict"): (V.String, "", False),
    ("Result", "VerdictCode"): (V.Int32, 0, False),
    ("Result", "Score"): (V.Double, math.nan, False),
    ("Result", "Threshold"): (V.Double, math.nan, False),
    ("Result", "DefectCount"): (V.Int32, 0, False),
    ("Result", "DefectX_mm"): (V.Double, [], False),
    ("Result", "DefectY_mm"): (V.Double, [], False),
    ("Result", "DefectArea_mm2"): (V.Double, [], False),
    ("Result", "Reason"): (V.String, "", False),
    ("Result", "StartedAt"): (V.DateTime, None, False),
    ("Result", "FinishedAt"): (V.DateTime, None, False),
    ("Result", "Json"): (V.String, "", False),
    ("Result", "Sequence"): (V.UInt32, 0, False),
    ("Counters", "OK"): (V.UInt32, 0, False),
    ("Counters", "NOK"): (V.UInt32, 0, False),
    ("Counters", "Error"): (V.UInt32, 0, False),
}
FOLDERS = ("Job", "Handshake", "Result", "Counters")


def node_name(folder: str, name: str) -> str:
    """The string identifier of a node, e.g. ``InspectionCell.Result.Verdict``."""
    return ".".join(p for p in (ROOT, folder, name) if p)


@dataclass
class LineNodes:
    """The built nodes: ``variables[(folder, name)]``, the objects, and the two handshake methods."""

    namespace_index: int
    root: Node
    variables: dict[tuple[str, str], Node]
    start: Node
    acknowledge: Node

    def nodeid(self, folder: str, name: str) -> ua.NodeId:
        return self.variables[(folder, name)].nodeid


def _variant(vtype: ua.VariantType, value: Any) -> ua.Variant:
    if vtype == V.DateTime and value is None:
        return ua.Variant(None, V.DateTime)
    return ua.Variant(value, vtype)


async def build_nodes(server: Server, namespace_index: int, on_start: Any, on_acknowledge: Any) -> LineNodes:
    """Create the ``InspectionCell`` tree under Objects; ``on_start`` / ``on_acknowledge`` are the handshake
    methods' callbacks (``async def cb(parent_nodeid, *args) -> ua.StatusCode | list``)."""
    idx = namespace_index
    root = await server.nodes.objects.add_object(ua.NodeId(ROOT, idx), ua.QualifiedName(ROOT, idx))
    folders = {"": root}
    for folder in FOLDERS:
        folders[folder] = await root.add_object(ua.NodeId(node_name(folder, ""), idx), ua.QualifiedName(folder, idx))
    variables: dict[tuple[str, str], Node] = {}
    for (folder, name), (vtype, initial, writable) in VARIABLES.items():
        node = await folders[folder].add_variable(ua.NodeId(node_name(folder, name), idx),
                                                  ua.QualifiedName(name, idx), _variant(vtype, initial), vtype)
        if isinstance(initial, list):
            await node.write_value_rank(1)
            await node.write_array_dimensions([0])
        if writable:
            await node.set_writable()
        variables[(folder, name)] = node
    handshake = folders["Handshake"]
    start = await handshake.add_method(ua.NodeId(node_name("Handshake", "Start"), idx), ua.QualifiedName("Start", idx),
                                       on_start, [], [])
    acknowledge = await handshake.add_method(ua.NodeId(node_name("Handshake", "Acknowledge"), idx),
                                             ua.QualifiedName("Acknowledge", idx), on_acknowledge, [], [])
    return LineNodes(idx, root, variables, start, acknowledge)


def _timestamp(iso: str) -> datetime | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    except (ValueError, AttributeError):
        return None


def _number(value: float | None) -> float:
    return math.nan if value is None or not math.isfinite(float(value)) else float(value)


def result_values(result: LineResult, sequence: int) -> list[tuple[tuple[str, str], ua.Variant]]:
    """The Result folder's new values for ``result``, ``Sequence`` last (a client that reacts to Sequence finds
    every other value of that part already written)."""
    defects = result.defects
    values: list[tuple[tuple[str, str], Any]] = [
        (("Result", "PartId"), result.part_id),
        (("Result", "Verdict"), VERDICT_NAMES[result.verdict]),
        (("Result", "VerdictCode"), VERDICT_CODES[result.verdict]),
        (("Result", "Score"), _number(result.score)),
        (("Result", "Threshold"), _number(result.threshold)),
        (("Result", "DefectCount"), len(defects)),
        (("Result", "DefectX_mm"), [float(d.x_mm) for d in defects]),
        (("Result", "DefectY_mm"), [float(d.y_mm) for d in defects]),
        (("Result", "DefectArea_mm2"), [float(d.area_mm2) for d in defects]),
        (("Result", "Reason"), result.reason),
        (("Result", "StartedAt"), _timestamp(result.started_at)),
        (("Result", "FinishedAt"), _timestamp(result.finished_at)),
        (("Result", "Json"), json.dumps(result.to_dict(), allow_nan=False)),
        (("Result", "Sequence"), int(sequence)),
    ]
    return [(key, _variant(VARIABLES[key][0], value)) for key, value in values]


def status_values(status: LineStatus) -> list[tuple[tuple[str, str], ua.Variant]]:
    """State, job and counters of a :class:`LineStatus`."""
    values: list[tuple[tuple[str, str], Any]] = [
        (("Job", "Campaign"), status.job.campaign),
        (("Job", "Model"), status.job.model),
        (("Job", "Threshold"), _number(status.job.threshold)),
        (("Counters", "OK"), int(status.counts.get("OK", 0))),
        (("Counters", "NOK"), int(status.counts.get("NOK", 0))),
        (("Counters", "Error"), int(status.counts.get("error", 0))),
        (("", "LastError"), status.reason if status.state == "Error" else ""),
        (("", "StateCode"), STATE_CODES[status.state]),
        (("", "State"), status.state),
    ]
    return [(key, _variant(VARIABLES[key][0], value)) for key, value in values]


def data_value(variant: ua.Variant) -> ua.DataValue:
    """A value stamped now (source and server time), as a client's subscription reports it."""
    now = datetime.now(timezone.utc)
    return ua.DataValue(variant, SourceTimestamp=now, ServerTimestamp=now)
