"""Short socket probes of a UR controller, run BEFORE any ur_rtde constructor.

ur_rtde's constructors have no connect deadline (an unreachable host blocks ~134 s), hang forever on a
peer that accepts but never answers, and hold Python's GIL meanwhile. These probes fail in at most
``timeout_s`` with a one-line :class:`~acquisition.errors.ConnectionLost` naming the host and port.
"""
from __future__ import annotations

import socket
import struct
import time

from acquisition.errors import ConnectionLost

RTDE_PORT = 30004
DASHBOARD_PORT = 29999
SCRIPT_PORT = 30003

_RTDE_HEADER = struct.Struct(">HB")
_REQUEST_PROTOCOL_VERSION = ord("V")


def _open(host: str, port: int, what: str, timeout_s: float) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=timeout_s)
    except ConnectionRefusedError:
        raise ConnectionLost(
            f"UR controller {host}: {what} port {port} refused the connection (wrong IP, or the controller is off)"
        ) from None
    except socket.timeout:
        raise ConnectionLost(
            f"UR controller {host}: no answer on {what} port {port} within {timeout_s:g} s (host unreachable?)"
        ) from None
    except OSError as exc:
        raise ConnectionLost(f"UR controller {host}: cannot reach {what} port {port}: {exc.strerror or exc}") from None


def _read(sock: socket.socket, n: int, host: str, port: int, what: str, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ConnectionLost(f"UR controller {host}: {what} port {port} accepted but did not answer in time")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout:
            raise ConnectionLost(
                f"UR controller {host}: {what} port {port} accepted but did not answer in time"
            ) from None
        except OSError as exc:
            raise ConnectionLost(f"UR controller {host}: {what} port {port} failed: {exc.strerror or exc}") from None
        if not chunk:
            raise ConnectionLost(f"UR controller {host}: {what} port {port} closed the connection at once")
        buf.extend(chunk)
    return bytes(buf)


def probe_rtde(host: str, port: int = RTDE_PORT, timeout_s: float = 2.0) -> None:
    """Connect to RTDE and negotiate protocol version 2; raise ConnectionLost unless accepted in time."""
    deadline = time.monotonic() + timeout_s
    with _open(host, port, "RTDE", timeout_s) as sock:
        sock.sendall(_RTDE_HEADER.pack(_RTDE_HEADER.size + 2, _REQUEST_PROTOCOL_VERSION) + struct.pack(">H", 2))
        size, msg_type = _RTDE_HEADER.unpack(_read(sock, _RTDE_HEADER.size, host, port, "RTDE", deadline))
        body = _read(sock, max(0, size - _RTDE_HEADER.size), host, port, "RTDE", deadline)
        if msg_type != _REQUEST_PROTOCOL_VERSION or not body or body[0] != 1:
            raise ConnectionLost(f"UR controller {host}: RTDE port {port} refused protocol version 2 "
                                 f"(controller software too old, or not a UR controller)")


def probe_dashboard(host: str, port: int = DASHBOARD_PORT, timeout_s: float = 2.0) -> str:
    """Connect to the dashboard server and read its welcome line (returned)."""
    deadline = time.monotonic() + timeout_s
    with _open(host, port, "dashboard", timeout_s) as sock:
        line = bytearray()
        while not line.endswith(b"\n"):
            line.extend(_read(sock, 1, host, port, "dashboard", deadline))
            if len(line) > 512:
                break
        try:
            sock.sendall(b"quit\n")
        except OSError:
            pass
        return line.decode("utf-8", "replace").strip()


def probe_port(host: str, port: int, what: str, timeout_s: float = 2.0) -> None:
    """Plain TCP connect (used for the script port, which sends nothing on connect)."""
    with _open(host, port, what, timeout_s):
        pass


def probe_controller(host: str, timeout_s: float = 2.0) -> None:
    """Probe everything ur_rtde's constructors will use: RTDE, dashboard, script port."""
    probe_rtde(host, RTDE_PORT, timeout_s)
    probe_dashboard(host, DASHBOARD_PORT, timeout_s)
    probe_port(host, SCRIPT_PORT, "script", timeout_s)
