"""The settings of the line signals: the cell file's ``opcua:`` and ``mqtt:`` sections and the digital outputs.

These models import neither asyncua nor paho-mqtt (the optional ``line`` extra), so a cell file with these
sections validates on any install; the sinks import their library only when ``cell inspect --signal`` asks
for them.

Credentials: ``username`` and ``password`` may be written in the cell file; the environment variables
``CELL_OPCUA_USERNAME`` / ``CELL_OPCUA_PASSWORD`` and ``CELL_MQTT_USERNAME`` / ``CELL_MQTT_PASSWORD``, when set,
take precedence over the file (:func:`resolve_credentials`), so a password need not be stored in the file.
Relative file paths (certificates, keys) are taken from the cell file's folder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Mapping, Optional
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cell.errors import ConfigFileError

#: The environment variables that override the cell file's credentials, per section.
CREDENTIAL_ENV = {
    "opcua": ("CELL_OPCUA_USERNAME", "CELL_OPCUA_PASSWORD"),
    "mqtt": ("CELL_MQTT_USERNAME", "CELL_MQTT_PASSWORD"),
}


class DigitalOutputConfig(BaseModel):
    """The robot controller's standard digital outputs that carry the verdict (``--signal digital_output``).

    ``ok_output`` or ``nok_output`` goes high for ``pulse_s`` seconds per part; an ``error`` verdict drives
    ``nok_output`` and, when configured, ``error_output`` too: an error is never signalled as OK.
    """

    model_config = ConfigDict(extra="forbid")

    ok_output: int = Field(0, ge=0, le=7)
    nok_output: int = Field(1, ge=0, le=7)
    error_output: Optional[int] = Field(None, ge=0, le=7)
    pulse_s: float = Field(0.2, ge=0.0, le=10.0)
    queue_size: int = Field(100, ge=1, le=100000, description="pulses waiting for the outputs; oldest dropped")


class OpcUaSecurity(BaseModel):
    """How OPC UA clients authenticate (``opcua.security``).

    On a loopback endpoint anonymous clients are admitted (and a configured user too). A non-local endpoint
    (``--allow-remote``) never admits anonymous clients: it needs the server's ``certificate`` and
    ``private_key`` (messages signed and encrypted, Basic256Sha256) and at least one of a ``username`` /
    ``password`` pair or a folder of ``trusted_clients`` certificates (a client whose application certificate
    is in that folder is admitted).
    """

    model_config = ConfigDict(extra="forbid")

    username: Optional[str] = Field(None, min_length=1, max_length=128)
    password: Optional[str] = Field(None, min_length=1, max_length=1024)
    certificate: Optional[Path] = Field(None, description="server certificate, DER or PEM")
    private_key: Optional[Path] = Field(None, description="the certificate's private key, PEM")
    trusted_clients: Optional[Path] = Field(None, description="folder of trusted client certificates (.der/.pem)")


class OpcUaConfig(BaseModel):
    """The ``opcua:`` section: the OPC UA server a PLC drives (``cell inspect --signal opcua``).

    ``require_ack``: after each result the line waits for the PLC's acknowledgement before the next part,
    at most ``ack_timeout_s`` (None: as long as it takes), then stops cleanly. ``on_plc_lost``: while the
    line waits for the PLC (an acknowledgement, or the next part with ``part_feed: opcua``) and the last
    client has disconnected: ``wait`` for it to come back, or ``stop`` the line at once. The result stays
    readable in the server either way.
    """

    model_config = ConfigDict(extra="forbid")

    endpoint: str = "opc.tcp://127.0.0.1:4840"
    namespace: str = Field("urn:inspection-cell:line", min_length=1, max_length=256)
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity)
    require_ack: bool = True
    ack_timeout_s: Optional[float] = Field(None, gt=0.0)
    on_plc_lost: Literal["wait", "stop"] = "wait"

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_opc_tcp(cls, value: str) -> str:
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 0 to 65535") from None
        if parts.scheme != "opc.tcp" or not parts.hostname or port is None:
            raise ValueError("expected opc.tcp://HOST:PORT, e.g. opc.tcp://127.0.0.1:4840")
        return value

    @property
    def host(self) -> str:
        return str(urlsplit(self.endpoint).hostname)

    @property
    def port(self) -> int:
        return int(urlsplit(self.endpoint).port or 0)


class MqttTls(BaseModel):
    """``mqtt.tls``: TLS to the broker. ``ca_file``: the CA that signed the broker's certificate (default:
    the system's CAs); ``cert_file`` / ``key_file``: a client certificate, when the broker asks for one;
    ``insecure``: skip the broker's host-name check (test brokers only)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Optional[Path] = None
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None
    insecure: bool = False


class MqttConfig(BaseModel):
    """The ``mqtt:`` section: results to the MES over MQTT (``cell inspect --signal mqtt``).

    Topics: ``<topic_prefix>/state`` (retained) and ``<topic_prefix>/result`` (one message per part, QoS 1).
    Results wait in a queue of ``queue_size`` while the broker is away (the oldest is dropped and counted
    when it is full); at most ``max_inflight`` are sent and not yet acknowledged. Reconnects back off from
    ``reconnect_min_s`` to ``reconnect_max_s``. When the run ends the queue gets ``flush_timeout_s`` to drain;
    what is left is reported as lost.
    """

    model_config = ConfigDict(extra="forbid")

    broker: str = Field("127.0.0.1", min_length=1, max_length=253)
    port: int = Field(1883, ge=1, le=65535)
    tls: Optional[MqttTls] = None
    username: Optional[str] = Field(None, min_length=1, max_length=128)
    password: Optional[str] = Field(None, min_length=1, max_length=1024)
    topic_prefix: str = Field("inspection-cell", min_length=1, max_length=200)
    client_id: Optional[str] = Field(None, min_length=1, max_length=64)
    keepalive_s: int = Field(30, ge=5, le=3600)
    queue_size: int = Field(1000, ge=1, le=1_000_000)
    max_inflight: int = Field(20, ge=1, le=1000)
    reconnect_min_s: float = Field(0.5, gt=0.0, le=60.0)
    reconnect_max_s: float = Field(10.0, gt=0.0, le=600.0)
    flush_timeout_s: float = Field(5.0, ge=0.0, le=600.0)

    @field_validator("topic_prefix")
    @classmethod
    def _plain_topic(cls, value: str) -> str:
        levels = value.split("/")
        if any(ch in value for ch in "#+\x00") or value.startswith("$") or "" in levels:
            raise ValueError("a topic prefix has no wildcards (# +), no empty level (//, leading or trailing /) "
                             "and does not start with $")
        return value


def resolve_credentials(section: str, username: Optional[str], password: Optional[str],
                        environ: Mapping[str, str] = os.environ) -> tuple[Optional[str], Optional[str]]:
    """The (username, password) in force for ``section`` (``opcua`` / ``mqtt``): the environment variables
    of :data:`CREDENTIAL_ENV` when set, else the file's values. A password without a user name is an error."""
    user_var, password_var = CREDENTIAL_ENV[section]
    username = environ.get(user_var) or username
    password = environ.get(password_var) or password
    if password is not None and username is None:
        raise ConfigFileError(f"{section}: a password is set but no username (set {section}.username or {user_var})")
    return username, password


def resolve_path(path: Optional[Path], base_dir: Optional[Path], key: str) -> Optional[Path]:
    """``path`` taken from ``base_dir`` (the cell file's folder) when relative; it must be an existing file or
    folder, else one line naming ``key``."""
    if path is None:
        return None
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.exists():
        raise ConfigFileError(f"{key} = {str(path)!r}: no such file or folder")
    return path
