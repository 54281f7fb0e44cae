"""``--signal digital_output,opcua,mqtt``: parse the list and build the sinks it names.

asyncua and paho-mqtt (the optional ``line`` extra) are imported only for the signals asked for; a missing
package is one line naming it.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional

from cell.errors import CellError
from cell.signals.base import LineSink, Reporter, no_report
from cell.signals.config import DigitalOutputConfig, MqttConfig, OpcUaConfig

#: The line signals ``--signal`` may name, and the package each needs.
SIGNAL_KINDS = {"digital_output": None, "opcua": "asyncua", "mqtt": "paho-mqtt"}


def parse_signal_kinds(text: str) -> list[str]:
    """``"digital_output,opcua"`` -> ``["digital_output", "opcua"]``; ``"none"`` or ``""`` -> ``[]``.
    An unknown or repeated name is a one-line error."""
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in SIGNAL_KINDS]
    if unknown:
        raise CellError(f"--signal {text!r}: unknown signal {unknown[0]!r}; expected 'none' or a comma-separated "
                        f"list of {', '.join(SIGNAL_KINDS)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CellError(f"--signal {text!r}: {repeated[0]!r} is named twice")
    return names


def _module(kind: str) -> Any:
    try:
        return importlib.import_module(f"cell.signals.{kind}")
    except ImportError as exc:
        package = SIGNAL_KINDS[kind]
        raise CellError(f"--signal {kind} needs the Python package {package} ({exc}); install the line extra: "
                        "pip install '.[line]'") from None


def build_sinks(
    kinds: list[str],
    *,
    robot: Any = None,
    digital_output: Optional[DigitalOutputConfig] = None,
    opcua: Optional[OpcUaConfig] = None,
    mqtt: Optional[MqttConfig] = None,
    allow_remote: bool = False,
    base_dir: Optional[Path] = None,
    part_timeout_s: Optional[float] = None,
    report: Reporter = no_report,
) -> list[LineSink]:
    """The sinks of ``kinds`` (not started), configured from the cell file's sections (defaults where a
    section is absent). ``base_dir``: the cell file's folder, for relative certificate paths."""
    sinks: list[LineSink] = []
    for kind in kinds:
        if kind == "digital_output":
            from cell.signals.digital_output import DigitalOutputSink

            sinks.append(DigitalOutputSink(robot, digital_output or DigitalOutputConfig(), report=report))
        elif kind == "opcua":
            sinks.append(_module("opcua").OpcUaSink(opcua or OpcUaConfig(), allow_remote=allow_remote,
                                                    base_dir=base_dir, part_timeout_s=part_timeout_s,
                                                    report=report))
        elif kind == "mqtt":
            sinks.append(_module("mqtt").MqttSink(mqtt or MqttConfig(), base_dir=base_dir, report=report))
        else:  # parse_signal_kinds keeps this unreachable
            raise CellError(f"unknown signal {kind!r}")
    return sinks
