"""The fake UR controller's servers: RTDE (30004), dashboard (29999), script sink (30003) and a
JSON-lines control channel through which a test injects faults.

Threads: one accept loop per listening port, one reader per connection, one tick loop that advances
the :class:`RobotModel` at the controller frequency (125 Hz for controller version 3.x, 500 Hz for
5.x and later) and streams data packages to every started RTDE connection at its requested rate.
"""
from __future__ import annotations

import json
import re
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from acquisition.ur.fake_controller import protocol as P
from acquisition.ur.fake_controller.robot_model import RobotModel
from acquisition.ur.probe import DASHBOARD_PORT, RTDE_PORT, SCRIPT_PORT  # noqa: F401 - the fake serves these

SEND_TIMEOUT_S = 0.5  # a client that does not read for this long is dropped, like a real controller does


def _log(message: str) -> None:
    print(f"fake-ur: {message}", file=sys.stderr, flush=True)


@dataclass
class _Recipe:
    names: list[str]
    types: list[str]
    packer: struct.Struct
    frequency: float = 0.0


@dataclass
class _RtdeConnection:
    sock: socket.socket
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    output: Optional[_Recipe] = None
    output_id: int = 0
    inputs: dict[int, _Recipe] = field(default_factory=dict)
    started: bool = False
    ticks_per_package: int = 1
    tick_count: int = 0
    closed: bool = False

    def send(self, data: bytes) -> None:
        with self.send_lock:
            self.sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf.extend(chunk)
    return bytes(buf)


class FakeController:
    """A UR5 controller stand-in on ``host`` (a loopback address).

    ``controller_version``: (major, minor, bugfix, build) reported over RTDE and the dashboard;
    ``tick_hz``: None = 125 Hz for major <= 3 else 500 Hz.
    """

    def __init__(self, host: str = "127.0.0.1", controller_version: tuple[int, int, int, int] = (3, 15, 7, 106331),
                 tick_hz: Optional[float] = None, serial_number: str = "2018300042") -> None:
        self.host = host
        self.version = controller_version
        self.tick_hz = float(tick_hz or (125.0 if controller_version[0] <= 3 else 500.0))
        self.serial_number = serial_number
        self.model = RobotModel()
        self.answering = threading.Event()
        self.answering.set()
        self.stopping = threading.Event()
        self._listeners: dict[int, socket.socket] = {}
        self._connections: list[socket.socket] = []
        self._rtde: list[_RtdeConnection] = []
        self._conn_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.control_sock: Optional[socket.socket] = None

    # --- life cycle ------------------------------------------------------------------------------
    def start(self, control_port: int = 0) -> int:
        """Bind every port, start the threads; returns the control channel's port."""
        self._open_listeners()
        self.control_sock = socket.create_server((self.host, control_port))
        self._spawn(self._accept_loop, self.control_sock, self._serve_control, "control")
        self._spawn(self._tick_loop)
        return self.control_sock.getsockname()[1]

    def _spawn(self, target: Callable, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _open_listeners(self) -> None:
        handlers = {RTDE_PORT: self._serve_rtde, DASHBOARD_PORT: self._serve_dashboard, SCRIPT_PORT: self._serve_script}
        for port, handler in handlers.items():
            if port in self._listeners:
                continue
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            sock.listen(8)
            self._listeners[port] = sock
            self._spawn(self._accept_loop, sock, handler, str(port))

    def _close_listeners(self) -> None:
        for sock in self._listeners.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._listeners.clear()

    def drop_connections(self) -> None:
        """Close every client connection (RTDE, dashboard, script) with a reset."""
        with self._conn_lock:
            conns, self._connections = self._connections, []
            for c in self._rtde:
                c.closed = True
            self._rtde = []
        for sock in conns:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            except OSError:
                pass

    def link_down(self) -> None:
        """Like a pulled cable on the controller side: connections reset, new ones refused."""
        self._close_listeners()
        self.drop_connections()

    def link_up(self) -> None:
        self._open_listeners()

    def shutdown(self) -> None:
        self.stopping.set()
        self.answering.set()
        self._close_listeners()
        self.drop_connections()
        if self.control_sock is not None:
            self.control_sock.close()

    def _accept_loop(self, listener: socket.socket, handler: Callable[[socket.socket], None], name: str) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # listener closed
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                sock.close()  # the peer already reset the connection
                continue
            if name != "control":
                with self._conn_lock:
                    self._connections.append(sock)
            self._spawn(self._run_handler, handler, sock)

    def _run_handler(self, handler: Callable[[socket.socket], None], sock: socket.socket) -> None:
        try:
            handler(sock)
        except (OSError, ConnectionError, P.ProtocolError):
            pass
        finally:
            with self._conn_lock:
                if sock in self._connections:
                    self._connections.remove(sock)
                self._rtde = [c for c in self._rtde if c.sock is not sock]
            try:
                sock.close()
            except OSError:
                pass

    # --- RTDE ------------------------------------------------------------------------------------
    def _serve_rtde(self, sock: socket.socket) -> None:
        # A send blocked this long fails (the reader keeps blocking reads: an idle client is fine).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(SEND_TIMEOUT_S), int(SEND_TIMEOUT_S % 1 * 1e6)))
        conn = _RtdeConnection(sock)
        with self._conn_lock:
            self._rtde.append(conn)
        while not self.stopping.is_set():
            size, msg_type = P.HEADER.unpack(_recv_exact(sock, P.HEADER.size))
            if size < P.HEADER.size:
                raise P.ProtocolError(f"bad size {size}")
            payload = _recv_exact(sock, size - P.HEADER.size)
            self.answering.wait()
            if conn.closed:
                return
            self._handle_rtde(conn, msg_type, payload)

    def _handle_rtde(self, conn: _RtdeConnection, msg_type: int, payload: bytes) -> None:
        if msg_type == P.REQUEST_PROTOCOL_VERSION:
            (version,) = struct.unpack(">H", payload[:2])
            conn.send(P.pack_message(msg_type, struct.pack(">B", 1 if version in (1, 2) else 0)))
        elif msg_type == P.GET_URCONTROL_VERSION:
            conn.send(P.pack_message(msg_type, struct.pack(">IIII", *self.version)))
        elif msg_type == P.SETUP_OUTPUTS:
            (frequency,) = struct.unpack(">d", payload[:8])
            names = [n for n in payload[8:].decode("ascii").split(",") if n]
            types = [P.OUTPUT_TYPES.get(n, P.NOT_FOUND) for n in names]
            conn.output_id += 1
            if P.NOT_FOUND in types:
                recipe_id = 0
            else:
                recipe_id = conn.output_id
                conn.output = _Recipe(names, types, P.recipe_struct(types), frequency)
                freq = min(max(frequency, 1.0), self.tick_hz)
                conn.ticks_per_package = max(1, round(self.tick_hz / freq))
            conn.send(P.pack_message(msg_type, struct.pack(">B", recipe_id) + ",".join(types).encode("ascii")))
        elif msg_type == P.SETUP_INPUTS:
            names = [n for n in payload.decode("ascii").split(",") if n]
            types = [P.INPUT_TYPES.get(n, P.NOT_FOUND) for n in names]
            if P.NOT_FOUND in types:
                recipe_id = 0
            else:
                recipe_id = len(conn.inputs) + 1
                conn.inputs[recipe_id] = _Recipe(names, types, P.recipe_struct(types))
            conn.send(P.pack_message(msg_type, struct.pack(">B", recipe_id) + ",".join(types).encode("ascii")))
        elif msg_type == P.START:
            conn.started = conn.output is not None or bool(conn.inputs)
            conn.send(P.pack_message(msg_type, struct.pack(">B", 1 if conn.started else 0)))
        elif msg_type == P.PAUSE:
            conn.started = False
            conn.send(P.pack_message(msg_type, struct.pack(">B", 1)))
        elif msg_type == P.DATA_PACKAGE:
            recipe = conn.inputs.get(payload[0])
            if recipe is None:
                _log(f"data package for unknown input recipe {payload[0]}")
                return
            values = P.unflatten(recipe.packer.unpack(payload[1:1 + recipe.packer.size]), recipe.types)
            with self.model.lock:
                self.model.apply_inputs(recipe.names, values)
        elif msg_type == P.TEXT_MESSAGE:
            pass
        else:
            _log(f"unknown RTDE message type {msg_type}")

    def _package(self, conn: _RtdeConnection) -> bytes:
        recipe = conn.output
        assert recipe is not None
        flat: list = []
        for name, t in zip(recipe.names, recipe.types):
            value = self.model.output_value(name)
            if value is None:
                value = [0] * (6 if t.startswith("VECTOR6") else 3) if t.startswith("VECTOR") else 0
            flat.extend(P.flatten(value, t))
        return P.pack_message(P.DATA_PACKAGE, struct.pack(">B", conn.output_id) + recipe.packer.pack(*flat))

    def _tick_loop(self) -> None:
        period = 1.0 / self.tick_hz
        last = time.monotonic()
        next_tick = last + period
        while not self.stopping.is_set():
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.monotonic()
            next_tick += period
            if next_tick < now - 10 * period:  # fell far behind (machine busy): do not try to catch up
                next_tick = now + period
            packages: list[tuple[_RtdeConnection, bytes]] = []
            with self.model.lock:
                self.model.tick(now - last)
                for message in self.model.messages:
                    _log(message)
                self.model.messages.clear()
                if self.answering.is_set():
                    with self._conn_lock:
                        conns = [c for c in self._rtde if c.started and c.output is not None]
                    for c in conns:
                        c.tick_count += 1
                        if c.tick_count >= c.ticks_per_package:
                            c.tick_count = 0
                            packages.append((c, self._package(c)))
            last = now
            for c, data in packages:
                try:
                    c.send(data)
                except OSError:
                    c.closed = True
                    try:
                        c.sock.close()
                    except OSError:
                        pass

    # --- dashboard -------------------------------------------------------------------------------
    def _polyscope_version(self) -> str:
        major, minor, bugfix, build = self.version
        return f"URSoftware {major}.{minor}.{bugfix}.{build} (Jan 01 2024)"

    def _serve_dashboard(self, sock: socket.socket) -> None:
        sock.sendall(b"Connected: Universal Robots Dashboard Server\n")
        buf = b""
        while not self.stopping.is_set():
            chunk = sock.recv(4096)
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self.answering.wait()
                reply = self._dashboard_reply(line.decode("utf-8", "replace").strip())
                sock.sendall((reply + "\n").encode())
                if reply == "Disconnected":
                    return

    def _dashboard_reply(self, command: str) -> str:
        m = self.model
        lower = command.lower()
        with m.lock:
            safety = {1: "NORMAL", 3: "PROTECTIVE_STOP", 7: "ROBOT_EMERGENCY_STOP"}[m.safety_mode]
            if lower == "polyscopeversion":
                return self._polyscope_version()
            if lower == "version":
                return ".".join(str(v) for v in self.version)
            if lower == "get serial number":
                return self.serial_number
            if lower == "get robot model":
                return "UR5"
            if lower == "is in remote control":
                return "true"
            if lower == "robotmode":
                return "Robotmode: " + ("POWER_OFF" if m.emergency_stopped else "RUNNING")
            if lower == "safetymode":
                return f"Safetymode: {safety}"
            if lower == "safetystatus":
                return f"Safetystatus: {safety}"
            if lower == "unlock protective stop":
                m.unlock_protective_stop()
                return "Protective stop releasing"
            if lower == "close safety popup":
                return "closing safety popup"
            if lower == "close popup":
                return "closing popup"
            if lower.startswith("popup"):
                return "showing popup"
            if lower.startswith("addtolog"):
                return "Added log message"
            if lower == "stop":
                m.stop_script()
                return "Stopped"
            if lower == "play":
                return "Failed to execute: play"
            if lower == "pause":
                return "Pausing program"
            if lower == "running":
                return f"Program running: {'true' if m.script_running else 'false'}"
            if lower == "programstate":
                return "PLAYING rtde_control" if m.script_running else "STOPPED <unnamed>"
            if lower == "isprogramsaved":
                return "true <unnamed>"
            if lower == "get loaded program":
                return "No program loaded"
            if lower == "power on":
                return "Powering on"
            if lower == "power off":
                return "Powering off"
            if lower == "brake release":
                return "Brake releasing"
            if lower == "restart safety":
                m.unlock_protective_stop()
                return "Restarting safety"
            if lower.startswith("setuserrole"):
                return "Setting user role"
            if lower == "quit":
                return "Disconnected"
        return f"could not understand: '{command}'"

    # --- script sink -----------------------------------------------------------------------------
    _PROGRAM = re.compile(r"^def (\w+)\(\):\n.*?^end\b", re.S | re.M)

    def _serve_script(self, sock: socket.socket) -> None:
        buf = ""
        while not self.stopping.is_set():
            chunk = sock.recv(65536)
            if not chunk:
                return
            self.answering.wait()
            buf += chunk.decode("utf-8", "replace")
            while True:
                match = self._PROGRAM.search(buf)
                if match is None:
                    break
                buf = buf[match.end():]
                with self.model.lock:
                    self.model.start_script()
                _log(f"program '{match.group(1)}' started ({match.end() - match.start()} characters)")

    # --- control channel -------------------------------------------------------------------------
    def _serve_control(self, sock: socket.socket) -> None:
        f = sock.makefile("rwb")
        for raw in f:
            try:
                request = json.loads(raw)
                reply = {"ok": True, **(self.control(request) or {})}
            except Exception as exc:  # reported to the test, never kills the fake
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            f.write((json.dumps(reply) + "\n").encode())
            f.flush()

    def control(self, request: dict[str, Any]) -> Optional[dict[str, Any]]:
        """Execute one fault-injection / inspection request (see :mod:`acquisition.ur.fake_controller`)."""
        cmd = request.get("cmd")
        m = self.model
        if cmd == "state":
            with m.lock:
                return {"state": m.snapshot()}
        if cmd == "protective_stop":
            with m.lock:
                m.protective_stop()
            return None
        if cmd == "emergency_stop":
            with m.lock:
                m.set_emergency_stop(bool(request.get("pressed", True)))
            return None
        if cmd == "set_digital_input":
            n, value = int(request["n"]), bool(request["value"])
            with m.lock:
                m.digital_in = (m.digital_in | (1 << n)) if value else (m.digital_in & ~(1 << n))
            return None
        if cmd == "drop":
            self.drop_connections()
            return None
        if cmd == "link_down":
            self.link_down()
            return None
        if cmd == "link_up":
            self.link_up()
            return None
        if cmd == "freeze":
            self.answering.clear()
            return None
        if cmd == "unfreeze":
            self.answering.set()
            return None
        if cmd == "shutdown":
            threading.Timer(0.05, self.shutdown).start()
            return None
        raise ValueError(f"unknown control command {cmd!r}")
