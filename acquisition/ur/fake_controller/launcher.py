"""Start the fake controller in a separate process and talk to its control channel.

ur_rtde's constructors hold the GIL while they block, so the fake must never run in the test's own
process. Usage::

    with FakeControllerProcess(host="127.0.0.7") as fake:
        ...                      # point URRobot at fake.host
        fake.command("protective_stop")
        fake.state()["pose"]
"""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from acquisition.ur.probe import DASHBOARD_PORT, RTDE_PORT, SCRIPT_PORT

REPO_ROOT = Path(__file__).resolve().parents[3]


class FakeControllerError(RuntimeError):
    """The fake controller did not start or did not answer its control channel."""


class FakeControllerProcess:
    """A running ``python -m acquisition.ur.fake_controller`` subprocess."""

    def __init__(self, host: str = "127.0.0.1", controller_version: str = "3.15.7",
                 tick_hz: Optional[float] = None, start_timeout_s: float = 20.0) -> None:
        self.host = host
        self.controller_version = controller_version
        self.tick_hz = tick_hz
        self.start_timeout_s = start_timeout_s
        self.proc: Optional[subprocess.Popen] = None
        self.control_port = 0
        self._sock: Optional[socket.socket] = None
        self._file: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> "FakeControllerProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        cmd = [sys.executable, "-m", "acquisition.ur.fake_controller", "--host", self.host,
               "--controller-version", self.controller_version, "--exit-with-stdin"]
        if self.tick_hz:
            cmd += ["--tick-hz", str(self.tick_hz)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     cwd=str(REPO_ROOT))
        line_box: list[str] = []
        reader = threading.Thread(target=lambda: line_box.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(self.start_timeout_s)
        line = line_box[0] if line_box else ""
        if not line.startswith("FAKE_UR_READY "):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
            raise FakeControllerError(f"fake UR controller on {self.host} did not start: {err.strip()[-500:]}")
        info = json.loads(line.split(" ", 1)[1])
        self.control_port = int(info["control_port"])
        # Drain stderr so the child never blocks on a full pipe.
        self.log: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self._sock = socket.create_connection((self.host, self.control_port), timeout=10)
        self._file = self._sock.makefile("rwb")

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())

    def command(self, cmd: str, **kwargs: Any) -> dict[str, Any]:
        """Send one control request (``state``, ``protective_stop``, ``emergency_stop(pressed)``,
        ``set_digital_input(n, value)``, ``drop``, ``link_down``, ``link_up``, ``freeze``, ``unfreeze``)."""
        if self._file is None:
            raise FakeControllerError("fake controller not started")
        with self._lock:
            self._file.write((json.dumps({"cmd": cmd, **kwargs}) + "\n").encode())
            self._file.flush()
            raw = self._file.readline()
        if not raw:
            raise FakeControllerError(f"fake controller closed its control channel during {cmd!r}")
        reply = json.loads(raw)
        if not reply.get("ok"):
            raise FakeControllerError(f"fake controller refused {cmd!r}: {reply.get('error')}")
        return reply

    def state(self) -> dict[str, Any]:
        return self.command("state")["state"]

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            if self._file is not None:
                self.command("shutdown")
        except (OSError, FakeControllerError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._file = None
        self.proc = None


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Block until ``host:port`` accepts a TCP connection or raise FakeControllerError."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise FakeControllerError(f"{host}:{port} did not open within {timeout_s} s") from None
            time.sleep(0.05)


def free_loopback_host(rng: Optional[random.Random] = None) -> str:
    """A 127.0.0.x address (x in 20..250) where nothing listens on the UR ports.

    ur_rtde hard-codes its ports, so concurrent fakes (parallel test sessions) each take an address.
    """
    rng = rng or random.Random()
    for _ in range(50):
        host = f"127.0.0.{rng.randint(20, 250)}"
        busy = False
        for port in (RTDE_PORT, DASHBOARD_PORT, SCRIPT_PORT):
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex((host, port)) == 0:
                    busy = True
                    break
        if not busy:
            return host
    raise FakeControllerError("no free 127.0.0.x address for a fake UR controller")


def start_fake(**kwargs: Any) -> FakeControllerProcess:
    """Start a fake controller on a free loopback address (retrying if another session took it)."""
    last: Optional[Exception] = None
    for _ in range(5):
        fake = FakeControllerProcess(host=free_loopback_host(), **kwargs)
        try:
            fake.start()
            return fake
        except FakeControllerError as exc:
            last = exc
    raise FakeControllerError(f"could not start the fake UR controller: {last}")
