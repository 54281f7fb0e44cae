"""``--signal mqtt``: results to the MES over MQTT (paho-mqtt 2.x), never stopping or slowing the line.

Topics (``mqtt.topic_prefix`` = P):

- ``P/state``: the line's state (:meth:`~cell.signals.base.LineStatus.to_dict`, schema ``cell.line-state/1``),
  retained, QoS 1; the broker publishes ``{"schema": ..., "state": "Offline"}`` there if the cell's connection
  dies (last will), and the cell does the same when ``cell inspect`` ends.
- ``P/result``: one message per part, QoS 1: :meth:`~cell.line_result.LineResult.to_dict` (schema
  ``cell.part-result/1``). QoS 1 means at least once: after a reconnect a message whose acknowledgement was
  lost is sent again, so a subscriber de-duplicates on (``campaign``, ``index``).

``publish`` only appends to a bounded queue (``queue_size``; when it is full the oldest result is dropped and
counted) and returns. A sender thread hands queued results to paho while the broker is connected, at most
``max_inflight`` unacknowledged at a time; a result leaves the sink's books only when the broker acknowledged
it (PUBACK). paho's own thread connects and reconnects with exponential back-off (``reconnect_min_s`` ..
``reconnect_max_s``), so a broker that is down at start or goes away costs the loop nothing. Outages, drops
and results still undelivered when the run ends (after ``flush_timeout_s``) are reported on the console and
counted in the campaign summary.
"""
from __future__ import annotations

import json
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional

import paho.mqtt.client as mqtt

from cell.errors import ConfigFileError
from cell.line_result import LineResult
from cell.signals.base import STATE_SCHEMA, DropOldestQueue, LineSink, LineStatus, Reporter, no_report
from cell.signals.config import MqttConfig, resolve_credentials, resolve_path

#: The state payload of a cell that is not running (last will, and the end of ``cell inspect``).
OFFLINE_STATE = "Offline"


def offline_payload(reason: str) -> bytes:
    return json.dumps({"schema": STATE_SCHEMA, "state": OFFLINE_STATE, "reason": reason}).encode()


class MqttSink(LineSink):
    """Publishes results and the line state to an MQTT broker (see the module docstring)."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, *, base_dir: Optional[Path] = None, report: Reporter = no_report,
                 environ: Mapping[str, str] = os.environ) -> None:
        super().__init__(report)
        self.config = config
        self.state_topic = f"{config.topic_prefix}/state"
        self.result_topic = f"{config.topic_prefix}/result"
        self.where = f"{config.broker}:{config.port}"
        username, password = resolve_credentials("mqtt", config.username, config.password, environ)
        self._cv = threading.Condition()
        self._queue: DropOldestQueue[tuple[LineResult, bytes]] = DropOldestQueue(config.queue_size, self.health,
                                                                                 self._cv)
        self._inflight: dict[int, LineResult] = {}
        self._acked_early: set[int] = set()
        self._state_payload: Optional[bytes] = None
        self._state_dirty = False
        self._state_mids: set[int] = set()  # retained state messages not yet acknowledged
        self._connected = False
        self._outage_noted = False
        self._ever_connected = False
        self._closing = False
        client_id = config.client_id or f"inspection-cell-{os.getpid()}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                  clean_session=True)
        self.client.max_inflight_messages_set(config.max_inflight)
        self.client.max_queued_messages_set(0)  # bounded by this sink's window, not by paho
        self.client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)  # type: ignore[arg-type]
        if username is not None:
            self.client.username_pw_set(username, password)
        if config.tls is not None:
            tls = config.tls
            ca = resolve_path(tls.ca_file, base_dir, "mqtt.tls.ca_file")
            cert = resolve_path(tls.cert_file, base_dir, "mqtt.tls.cert_file")
            key = resolve_path(tls.key_file, base_dir, "mqtt.tls.key_file")
            if (cert is None) != (key is None):
                raise ConfigFileError("mqtt.tls: cert_file and key_file go together (give both or neither)")
            try:
                self.client.tls_set(ca_certs=None if ca is None else str(ca),
                                    certfile=None if cert is None else str(cert),
                                    keyfile=None if key is None else str(key), cert_reqs=ssl.CERT_REQUIRED)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigFileError(f"mqtt.tls: cannot load the certificates: {exc}") from None
            self.client.tls_insecure_set(tls.insecure)
        self.client.will_set(self.state_topic, offline_payload("the cell's connection to the broker ended"),
                             qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start connecting in the background (a broker that is down now is retried; the line starts anyway)."""
        self.client.connect_async(self.config.broker, self.config.port, keepalive=self.config.keepalive_s)
        self.client.loop_start()
        self._sender.start()

    def close(self) -> None:
        """Give the queue ``flush_timeout_s`` to drain, report what is left as lost, say Offline, disconnect."""
        deadline = time.monotonic() + self.config.flush_timeout_s
        with self._cv:
            self._cv.wait_for(lambda: not len(self._queue) and not self._inflight and not self._state_dirty,
                              max(0.0, deadline - time.monotonic()))
            self._closing = True
            left = len(self._queue) + len(self._inflight)
            connected = self._connected
            self._cv.notify_all()
        self._sender.join(timeout=5)
        if left:
            self.health.count_failure(
                f"{left} result(s) not delivered to {self.where} within flush_timeout_s "
                f"{self.config.flush_timeout_s:g} s: lost", n=left)
        if connected:
            info = self.client.publish(self.state_topic, offline_payload("cell inspect ended"), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=min(2.0, self.config.flush_timeout_s + 0.5))
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # ------------------------------------------------------------------ sink interface (inspection thread)
    def publish(self, result: LineResult) -> None:
        payload = json.dumps(result.to_dict(), allow_nan=False).encode()
        if not self._queue.put((result, payload)):
            self.health.note(f"queue full ({self.config.queue_size}): dropped the oldest result "
                             f"({self.health.dropped} dropped so far)")

    def update_status(self, status: LineStatus) -> None:
        with self._cv:
            self._state_payload = json.dumps(status.to_dict(), allow_nan=False).encode()
            self._state_dirty = True
            self._cv.notify_all()

    def connected(self) -> bool:
        with self._cv:
            return self._connected

    def in_flight(self) -> int:
        """Results sent and not yet acknowledged by the broker."""
        with self._cv:
            return len(self._inflight)

    # ------------------------------------------------------------------ sender thread
    def _can_send(self) -> bool:
        return self._connected and (self._state_dirty or (len(self._queue) > 0
                                                          and len(self._inflight) < self.config.max_inflight))

    def _send_loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._closing or self._can_send())
                if self._closing:
                    return
                state = self._state_payload if self._state_dirty else None
                self._state_dirty = False
                item = None
                if state is None:
                    item = self._queue.pop_nowait()
            # paho calls on_publish holding its own lock: never call into paho while holding ours.
            try:
                if state is not None:
                    self._send_state(state)
                elif item is not None:
                    self._send_result(*item)
            except Exception as exc:  # noqa: BLE001 - the sender must outlive any one message
                what = "the state" if item is None else f"part {item[0].part_id}"
                self.health.count_failure(f"{what} not published: {type(exc).__name__}: {exc}",
                                          n=0 if item is None else 1)

    def _send_state(self, payload: bytes) -> None:
        info = self.client.publish(self.state_topic, payload, qos=1, retain=True)
        with self._cv:
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self._state_dirty = True  # try again after the next (re)connect
            elif info.mid in self._acked_early:
                self._acked_early.discard(info.mid)
            else:
                self._state_mids.add(info.mid)

    def _send_result(self, result: LineResult, payload: bytes) -> None:
        info = self.client.publish(self.result_topic, payload, qos=1)
        with self._cv:
            if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                # NO_CONN: the link dropped just now; paho keeps the message and sends it after reconnecting.
                if info.mid in self._acked_early:
                    self._acked_early.discard(info.mid)
                    self.health.count_sent()
                else:
                    self._inflight[info.mid] = result
            else:
                self._queue.push_back((result, payload))
                self.health.note(f"paho refused part {result.part_id}: {mqtt.error_string(info.rc)}; retrying")
                self._cv.wait(0.1)
            self._cv.notify_all()

    # ------------------------------------------------------------------ paho callbacks (paho's thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            with self._cv:
                noted, self._outage_noted = self._outage_noted, True
            if not noted:
                self.health.note(f"broker {self.where} refused the connection: {reason_code}; retrying, "
                                 "results are queued")
            return
        with self._cv:
            again = self._ever_connected or self._outage_noted
            self._connected = True
            self._ever_connected = True
            self._outage_noted = False
            self._state_dirty = self._state_payload is not None  # the will may have replaced it
            waiting = len(self._queue) + len(self._inflight)
            self._cv.notify_all()
        if again:
            self.health.note(f"connected to {self.where} again; sending {waiting} queued result(s)")

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        with self._cv:
            noted, self._outage_noted = self._outage_noted, True
        if not noted:
            self.health.note(f"cannot reach the broker {self.where}; retrying with back-off, results are queued")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cv:
            was, self._connected = self._connected, False
            closing = self._closing
            self._outage_noted = self._outage_noted or (was and not closing)
            self._cv.notify_all()
        if was and not closing:
            self.health.note(f"lost the broker {self.where} ({reason_code}); results are queued")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._cv:
            if self._inflight.pop(mid, None) is not None:
                self.health.count_sent()
            elif mid in self._state_mids:
                self._state_mids.discard(mid)
            else:
                self._acked_early.add(mid)
            self._cv.notify_all()
