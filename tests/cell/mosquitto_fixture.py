"""A real MQTT broker for the tests: Debian's ``mosquitto`` on a free loopback port with a temporary config
(persistence on, so a subscriber's session and its queued QoS 1 messages survive a broker restart), and a
paho subscriber that records what it receives. Tests that need it are skipped, with the reason, where the
binary is missing (``.ci/run`` installs it)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.cell.line_fixtures import free_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None, reason="Debian package 'mosquitto' is not installed (apt-get install mosquitto; .ci/run does)")


class Broker:
    """One mosquitto process; :meth:`stop` (SIGTERM: it saves its sessions) and :meth:`start` again on the
    same port. ``extra`` lines go into the listener's config (TLS, passwords)."""

    def __init__(self, folder: Path, port: Optional[int] = None, extra: str = "") -> None:
        self.folder, self.port = folder, port or free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        user = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
        self.config.write_text(
            f"{user}listener {self.port} 127.0.0.1\n{extra or 'allow_anonymous true'}\n"
            f"persistence true\npersistence_location {folder}/\nautosave_interval 1\n"
            f"max_queued_messages 10000\nlog_dest file {folder}/mosquitto.log\n", encoding="utf-8")
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 20.0) -> "Broker":
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log_file = self.folder / "mosquitto.log"
                log = log_file.read_text(errors="replace") if log_file.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err} {log[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout:g} s") from None
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Subscriber:
    """A paho client with a persistent session (``clean_session=False``) subscribed at QoS 1 to ``topics``;
    ``messages`` holds (topic, decoded JSON, retained) in arrival order. It reconnects by itself after the
    broker returns, and the broker delivers what it queued for the session meanwhile."""

    def __init__(self, port: int, topics: list[str], client_id: str = "test-mes", **auth: Any) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, Any, bool]] = []
        self._cv = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
        if auth.get("username"):
            self.client.username_pw_set(auth["username"], auth.get("password"))
        if auth.get("ca_file"):
            self.client.tls_set(ca_certs=str(auth["ca_file"]))
        self.topics = topics
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(20):
            raise RuntimeError("the test subscriber could not subscribe")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._cv:
            self.messages.append((message.topic, json.loads(message.payload), bool(message.retain)))
            self._cv.notify_all()

    def on(self, topic: str) -> list[Any]:
        with self._cv:
            return [payload for t, payload, _ in self.messages if t == topic]

    def wait(self, predicate: Any, timeout: float = 30.0, what: str = "messages") -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; got "
                                     f"{[(t, p.get('index', p.get('state'))) for t, p, _ in self.messages]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("Debian package 'mosquitto' is not installed (apt-get install mosquitto; .ci/run does)")
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()
