"""The line signals: every consumer of a part's :class:`~cell.line_result.LineResult` is a
:class:`~cell.signals.base.LineSink` (digital outputs, the OPC UA server, the MQTT publisher, the live line
page), and :class:`~cell.signals.line_signals.LineSignals` hands each result to all of them.

Submodules: :mod:`.base` (the sink interface, health counters, the bounded queue), :mod:`.config` (the cell
file's ``opcua:`` / ``mqtt:`` sections; no third-party imports), :mod:`.factory` (``--signal``),
:mod:`.digital_output`, :mod:`.opcua` + :mod:`.opcua_nodes` (asyncua), :mod:`.mqtt` (paho-mqtt).
"""
from cell.signals.base import LINE_STATES, LineJob, LineSink, LineStatus, SinkHealth
from cell.signals.config import DigitalOutputConfig, MqttConfig, OpcUaConfig
from cell.signals.factory import SIGNAL_KINDS, build_sinks, parse_signal_kinds
from cell.signals.line_signals import LineSignals

__all__ = [
    "LINE_STATES", "LineJob", "LineSink", "LineStatus", "SinkHealth", "DigitalOutputConfig", "MqttConfig",
    "OpcUaConfig", "SIGNAL_KINDS", "build_sinks", "parse_signal_kinds", "LineSignals",
]
