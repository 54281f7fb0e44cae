"""Benchmark of the line signals: latency from a part's verdict to the MQTT message a subscriber receives and
to the OPC UA value change a subscribed client sees, on the simulated cell.

The loop is the real ``run_inspection`` on the small simulated cell (320x256 camera, the 2 x 2 demo plan) with
``part_feed: opcua``: :class:`cell.signals.plc_sim.PlcSimulator` (asyncua) in this process acts as the PLC
through the whole handshake (PartPresent -> ResultReady -> ResultAcknowledged) and is subscribed to
``Result.Sequence`` (publishing interval ``--publishing-interval-ms``, 0 = as soon as it changes); a paho
client subscribes to the result topic on a mosquitto broker this benchmark starts on a free port. The
detector is a scoring stub (the image's mean grey level as the score, a zero map): what is measured is the
signal path, not the model.

The verdict time is when the loop hands the result to the signals (a recording sink placed first in
:class:`~cell.signals.LineSignals`); the receipt times are taken in the subscribers' callbacks, all with
``time.perf_counter`` in one process. Median, p99 and max over ``--parts`` parts, written to
benchmarks/results/signals.json with the machine's load.

Run:  nice -n 10 .venv/bin/python -m benchmarks.bench_signals [--parts 200] [--publishing-interval-ms 0]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.timing import write_json  # noqa: E402

SIM_CELL = REPO / "configs" / "cells" / "sim.yaml"
DEMO_CAMPAIGN = REPO / "configs" / "campaigns" / "demo.yaml"
TOPIC_PREFIX = "bench/cell"


class MeanScoreStub:
    """The scoring stub: score = the image's mean grey level, map = zeros (microseconds per image)."""

    config = SimpleNamespace(image_size=64)

    def predict(self, images: Any) -> Any:
        from detectors.base import Prediction

        arr = images.numpy()
        maps = np.zeros(arr.shape[:1] + arr.shape[2:], np.float32)
        return Prediction(score=arr.mean(axis=(1, 2, 3)), anomaly_map=maps)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(binary: str, folder: Path) -> tuple[subprocess.Popen, int]:
    """A throw-away broker on a free loopback port (no persistence)."""
    port = free_port()
    conf = folder / "mosquitto.conf"
    user = "user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    conf.write_text(f"{user}listener {port} 127.0.0.1\nallow_anonymous true\n", encoding="utf-8")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"error: {binary} did not start a broker on port {port}")
            time.sleep(0.05)


def stats_ms(latencies_s: list[float]) -> dict[str, float | int]:
    ms = 1e3 * np.asarray(latencies_s)
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "min_ms": float(ms.min()), "n": int(ms.size)}


class PlcThread:
    """:class:`~cell.signals.plc_sim.PlcSimulator` (the PLC's handshake) in a thread with its own asyncio loop;
    ``seen`` maps each Result.Sequence value to its receipt time."""

    def __init__(self, endpoint: str, parts: int, interval_ms: float) -> None:
        from cell.signals.plc_sim import PlcSimulator

        self.seen: dict[int, float] = {}
        self.error: BaseException | None = None
        self._connected = threading.Event()
        self.plc = PlcSimulator(endpoint, parts, publishing_interval_ms=interval_ms, timeout_s=120.0,
                                on_sequence=lambda seq, t: self.seen.setdefault(seq, t))
        self.thread = threading.Thread(target=self._run, name="bench-plc", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.plc.run(self._connected.set))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            self.error = exc
            self._connected.set()

    def start(self) -> None:
        self.thread.start()
        self._connected.wait(60)
        if self.error is not None:
            raise self.error

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=200, help="parts inspected (default 200)")
    parser.add_argument("--publishing-interval-ms", type=float, default=0.0,
                        help="the OPC UA client's requested publishing interval (0: immediately)")
    parser.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto",
                        help="the mosquitto broker binary")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "signals.json")
    args = parser.parse_args(argv)
    if args.parts < 1:
        parser.error(f"argument --parts: must be at least 1, got {args.parts}")
    if not Path(args.mosquitto).exists():
        parser.error(f"argument --mosquitto: {args.mosquitto} not found (apt-get install mosquitto)")

    import paho.mqtt.client as mqtt

    from acquisition.store import CaptureStore
    from cell.cell_factory import PartFeedConfig, build_cell, load_campaign_file, load_cell_config
    from cell.inspection import InspectConfig, run_inspection
    from detectors.input_prep import InputSpec
    from cell.signals import LineJob, LineSignals, LineSink, MqttConfig, OpcUaConfig
    from cell.signals.mqtt import MqttSink
    from cell.signals.opcua import OpcUaSink
    from detectors.thresholds import ThresholdDecision

    verdicts: dict[int, float] = {}
    load_before = list(os.getloadavg())

    class VerdictClock(LineSink):
        name = "verdict_clock"

        def publish(self, result: Any) -> None:
            verdicts[result.index] = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="bench_signals_") as tmp_name:
        tmp = Path(tmp_name)
        broker, port = start_mosquitto(args.mosquitto, tmp)
        received: dict[int, float] = {}
        subscribed = threading.Event()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-mes")
        sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{TOPIC_PREFIX}/result", qos=1)
        sub.on_subscribe = lambda *a: subscribed.set()
        sub.on_message = lambda c, u, m: received.setdefault(json.loads(m.payload)["index"], time.perf_counter())
        sub.connect("127.0.0.1", port)
        sub.loop_start()
        try:
            if not subscribed.wait(20):
                raise SystemExit("error: the benchmark's MQTT subscriber could not subscribe")
            config = load_cell_config(SIM_CELL)
            camera = config.camera.model_copy(update={"width": 320, "height": 256, "pixel_size_um": 21.2})
            scene = config.scene.model_copy(update={"sheet_width_m": 0.12, "sheet_height_m": 0.10})
            cell = build_cell(config.model_copy(update={"camera": camera, "scene": scene}), source="bench cell",
                              seed=3)
            cell.part_feed = PartFeedConfig(mode="opcua", timeout_s=120.0)
            opcua = OpcUaSink(OpcUaConfig(endpoint=f"opc.tcp://127.0.0.1:{free_port()}"), part_timeout_s=120.0)
            mqtt_sink = MqttSink(MqttConfig(port=port, topic_prefix=TOPIC_PREFIX))
            signals = LineSignals([VerdictClock(), opcua, mqtt_sink])
            campaign_file = load_campaign_file(DEMO_CAMPAIGN)
            plan = cell.plan(campaign_file.plan)
            with CaptureStore(tmp / "store", create=True) as store, signals, cell:
                cell.line_feed = opcua.wait_for_part
                plc = PlcThread(opcua.config.endpoint, args.parts, args.publishing_interval_ms)
                plc.start()
                signals.set_job(LineJob("bench", "mean-score stub", 0.5))
                started = time.perf_counter()
                summary = run_inspection(
                    robot=cell.robot, camera=cell.camera, store=store, plan=plan, speed=campaign_file.plan.speed,
                    accel=campaign_file.plan.accel, envelope=cell.envelope, parts=args.parts, campaign="bench",
                    detector=MeanScoreStub(), spec=InputSpec(mode="tile", scale=1.0),
                    threshold=ThresholdDecision(0.5, "manual"), config=InspectConfig(heatmaps="none"),
                    on_new_part=cell.on_new_part, signal=signals)
                loop_s = time.perf_counter() - started
                plc.join(60)
                deadline = time.monotonic() + 30
                while (len(received) < args.parts or len(plc.seen) < args.parts) and time.monotonic() < deadline:
                    time.sleep(0.01)
            if plc.error is not None:
                raise plc.error
            if summary.stopped_early:
                raise SystemExit(f"error: the line stopped early: {summary.stopped_early}")
        finally:
            sub.disconnect()
            sub.loop_stop()
            broker.terminate()
            broker.wait(10)
    missing_mqtt = sorted(set(verdicts) - set(received))
    missing_opcua = sorted(set(verdicts) - set(plc.seen))
    if missing_mqtt or missing_opcua:
        raise SystemExit(f"error: results not seen: MQTT {missing_mqtt[:5]}, OPC UA {missing_opcua[:5]}")
    import asyncua
    import paho.mqtt

    result = {
        "what": "latency from the verdict (result handed to the line signals) to the MQTT message received by a "
                "subscriber and to the OPC UA Result.Sequence change seen by a subscribed client; simulated cell, "
                "mean-score stub detector, full PLC handshake, all in one process",
        "parts": args.parts,
        "mqtt": stats_ms([received[i] - verdicts[i] for i in sorted(verdicts)]),
        "opcua": stats_ms([plc.seen[i] - verdicts[i] for i in sorted(verdicts)]),
        "opcua_publishing_interval_ms": args.publishing_interval_ms,
        "loop_s_per_part": loop_s / args.parts,
        "signals": signals.health(),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": list(os.getloadavg()),
                    "python": platform.python_version(),
                    "asyncua": asyncua.__version__, "paho_mqtt": paho.mqtt.__version__,
                    "mosquitto": args.mosquitto},
    }
    write_json(args.out, result)
    print(f"MQTT  median {result['mqtt']['median_ms']:.2f} ms, p99 {result['mqtt']['p99_ms']:.2f} ms; "
          f"OPC UA median {result['opcua']['median_ms']:.2f} ms, p99 {result['opcua']['p99_ms']:.2f} ms "
          f"over {args.parts} parts -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
