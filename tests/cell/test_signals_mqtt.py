"""MQTT results with a real broker (Debian's mosquitto) and a real paho subscriber acting as the MES: one
QoS 1 message per part in the documented schema, a retained state topic, and the faults: a broker down at
start or killed mid-run never stops the line, its results arrive once the broker is back (duplicates only
of messages in flight at the outage, as QoS 1 allows), a full queue drops the oldest with a counter, and
the loss is reported on the console and in the store."""
from __future__ import annotations

import signal
import time

import pytest

pytest.importorskip("paho.mqtt.client", reason="the optional 'line' extra (paho-mqtt) is not installed")

from cell.errors import ConfigFileError  # noqa: E402
from cell.line_result import RESULT_SCHEMA  # noqa: E402
from cell.signals import LineSignals, MqttConfig  # noqa: E402
from cell.signals.base import STATE_SCHEMA  # noqa: E402
from tests.cell.line_fixtures import LineRun, free_port, wait_for  # noqa: E402
from tests.cell.mosquitto_fixture import Broker, Subscriber, broker, needs_mosquitto  # noqa: E402, F401 - fixture

pytestmark = needs_mosquitto

RESULT_KEYS = {"schema", "part_id", "campaign", "index", "verdict", "reason", "score", "threshold", "defect_count",
               "defects", "coverage", "model", "truth", "part_map", "started_at", "finished_at", "extra"}
STATE_KEYS = {"schema", "state", "reason", "since", "campaign", "model", "threshold", "counts"}


def mqtt_sink(port: int, notes: list[str], **overrides):
    from cell.signals.mqtt import MqttSink

    config = MqttConfig(port=port, topic_prefix="plant/cell1", reconnect_min_s=0.1, reconnect_max_s=0.5,
                        flush_timeout_s=10.0, **overrides)
    return MqttSink(config, report=notes.append)


def indices(sub: Subscriber) -> list[int]:
    return [m["index"] for m in sub.on("plant/cell1/result")]


def test_each_part_is_one_qos1_message_and_the_state_is_retained(tmp_path, broker):
    sub = Subscriber(broker.port, ["plant/cell1/#"])
    notes: list[str] = []
    sink = mqtt_sink(broker.port, notes)
    with LineSignals([sink]) as signals:
        run = LineRun(tmp_path, signals, parts=3, threshold=-1.0).start()
        summary = run.join()
        sub.wait(lambda s: len(indices(s)) == 3, what="3 results")
    results = sub.on("plant/cell1/result")
    assert [m["index"] for m in results] == [1, 2, 3]
    for message, record, part in zip(results, run.records, summary.results):
        assert set(message) == RESULT_KEYS and message["schema"] == RESULT_SCHEMA
        assert message["part_id"] == record.part_id == part.part_id
        assert message["verdict"] == record.verdict == "NOK"
        assert message["score"] == pytest.approx(part.max_score) and message["threshold"] == -1.0
        assert message["campaign"] == "line" and message["defects"] == [] and message["defect_count"] == 0
        assert message["extra"]["heatmaps"] == part.heatmaps
    states = sub.on("plant/cell1/state")
    assert all(set(s) == STATE_KEYS and s["schema"] == STATE_SCHEMA for s in states[:-1])
    assert {"Busy", "Ready"} <= {s["state"] for s in states}
    assert states[-2]["counts"] == {"OK": 0, "NOK": 3, "error": 0}
    assert states[-1] == {"schema": STATE_SCHEMA, "state": "Offline", "reason": "cell inspect ended"}
    sub.close()
    late = Subscriber(broker.port, ["plant/cell1/state"], client_id="late-mes")  # a MES that connects later
    late.wait(lambda s: s.on("plant/cell1/state"), what="the retained state")
    assert late.messages[0][1]["state"] == "Offline" and late.messages[0][2] is True
    late.close()
    assert sink.health.to_dict()["sent"] == 3 and sink.health.failed == 0 and sink.health.dropped == 0
    assert not notes


def test_broker_down_at_start_the_line_goes_on_and_results_arrive_when_it_returns(tmp_path, broker):
    sub = Subscriber(broker.port, ["plant/cell1/result"])  # the MES's persistent session is on the broker
    broker.stop()
    notes: list[str] = []
    sink = mqtt_sink(broker.port, notes)
    with LineSignals([sink]) as signals:
        summary = LineRun(tmp_path, signals, parts=4).start().join()
        assert len(summary.results) == 4 and summary.stopped_early is None  # the line did not wait
        assert sink.health.sent == 0 and sink.health.pending == 4
        assert any("cannot reach the broker" in n for n in notes)
        broker.start()
        sub.wait(lambda s: sorted(set(indices(s))) == [1, 2, 3, 4], what="the 4 queued results")
        wait_for(lambda: sink.health.sent == 4, what="the broker's acknowledgements")
    assert indices(sub) == [1, 2, 3, 4]  # in order, none twice: none was in flight when the broker was away
    assert sink.health.dropped == 0 and sink.health.failed == 0
    sub.close()


def test_broker_killed_mid_run_results_are_delivered_after_it_returns(tmp_path, broker):
    sub = Subscriber(broker.port, ["plant/cell1/result"])
    subscribed_at = time.time()
    notes: list[str] = []
    sink = mqtt_sink(broker.port, notes)
    seen: dict[str, object] = {}

    def kill_broker_before_part(index: int, part_id: str) -> None:
        # before part 4: the line is pipelined (a verdict is published from the robot's thread once the worker
        # has it, possibly while the next part runs), so waiting here for part 3's verdict would wait for
        # ourselves; with the queue's depth (2) and 4 poses per part, parts 1-2 are published by now
        if index == 4:
            sub.wait(lambda s: {1, 2} <= set(indices(s)), what="parts 1-2 before the outage")
            # the MES's session is on disk (autosaved every second), so it survives a SIGKILL of the broker
            db = broker.folder / "mosquitto.db"
            wait_for(lambda: db.exists() and db.stat().st_mtime > subscribed_at, timeout=60,
                     what="an autosave of the broker after the MES subscribed")
            broker.stop(signal.SIGKILL)
            wait_for(lambda: not sink.connected(), what="the sink to notice the outage")
            seen["in_flight"] = sink.in_flight()

    with LineSignals([sink]) as signals:
        summary = LineRun(tmp_path, signals, parts=6, before_part=kill_broker_before_part).start().join()
        assert len(summary.results) == 6 and summary.stopped_early is None
        assert any("lost the broker" in n for n in notes)
        broker.start()
        sub.wait(lambda s: sorted(set(indices(s))) == [1, 2, 3, 4, 5, 6], what="all 6 results")
        wait_for(lambda: sink.health.sent == 6, what="every result acknowledged")
    got = indices(sub)
    duplicates = len(got) - len(set(got))
    assert duplicates <= seen["in_flight"], got  # QoS 1: only a message unacknowledged at the outage repeats
    assert any("connected to" in n and "again" in n for n in notes)
    assert sink.health.dropped == 0 and sink.health.failed == 0
    sub.close()


def test_a_full_queue_drops_the_oldest_and_counts_it(tmp_path, broker):
    sub = Subscriber(broker.port, ["plant/cell1/result"])
    broker.stop()
    notes: list[str] = []
    sink = mqtt_sink(broker.port, notes, queue_size=2)
    with LineSignals([sink]) as signals:
        LineRun(tmp_path, signals, parts=5).start().join()
        assert sink.health.dropped == 3 and sink.health.pending == 2
        assert any("dropped the oldest" in n for n in notes)
        broker.start()
        sub.wait(lambda s: len(indices(s)) == 2, what="the 2 results left in the queue")
        wait_for(lambda: sink.health.sent == 2, what="acknowledgements")
    assert indices(sub) == [4, 5]
    sub.close()


def test_results_still_queued_when_the_run_ends_are_reported_lost_in_the_store(tmp_path, monkeypatch):
    # Through `cell inspect`'s own path: the counters land in the campaign summary and on the console.
    from rich.console import Console

    import cell.commands.inspect as inspect_command
    from cell.commands.inspect import LineOptions
    from cell.inspection import InspectConfig
    from detectors.input_prep import InputSpec
    from detectors.model_dir import TrainedModel
    from detectors.thresholds import ThresholdDecision
    from acquisition.store import CaptureStore
    from tests.cell.sim_fixtures import DEMO_CAMPAIGN, LocalContrastDetector, small_cell

    cell = small_cell(seed=2)
    dead = free_port()  # nothing listens here
    cell.config = cell.config.model_copy(update={"mqtt": MqttConfig(
        port=dead, queue_size=2, flush_timeout_s=0.2, reconnect_min_s=0.1, reconnect_max_s=0.2)})
    monkeypatch.setattr(inspect_command, "load_model_for_runtime", lambda directory, **kw: TrainedModel(
        directory, LocalContrastDetector(), InputSpec(mode="tile", scale=1.0), ThresholdDecision(1e9, "manual")))
    from cell.part_threshold import PartThreshold

    monkeypatch.setattr(inspect_command, "read_part_threshold",
                        lambda directory: PartThreshold(ThresholdDecision(1e9, "manual")))  # every part OK
    log = tmp_path / "console.txt"
    with open(log, "w") as out:
        summary = inspect_command.inspect_on_cell(
            cell=cell, campaign_path=DEMO_CAMPAIGN, model_dir=tmp_path / "model", store_path=tmp_path / "store",
            parts=4, name="line", config=InspectConfig(), line=LineOptions(signals=["mqtt"]),
            console=Console(file=out, width=200))
    assert len(summary.results) == 4
    with CaptureStore(tmp_path / "store") as store:
        recorded = store.campaign_status("line").summary
    mqtt = recorded["signals"]["mqtt"]
    assert mqtt["dropped"] == 2 and mqtt["failed"] == 2 and mqtt["sent"] == 0
    assert recorded["counts"] == {"OK": 4, "NOK": 0, "error": 0}  # the run's own summary is kept
    text = log.read_text()
    assert "dropped the oldest" in text and "2 result(s) not delivered" in text and "mqtt: sent 0, dropped 2" in text


def test_credentials_from_the_environment_and_tls_reach_a_broker_that_requires_them(tmp_path):
    import subprocess

    import paho.mqtt.client  # noqa: F401 - the line extra

    from cell.signals.mqtt import MqttSink
    from tests.cell.tls_fixture import write_ca_and_server_cert

    ca, cert, key = write_ca_and_server_cert(tmp_path / "tls", "localhost")
    passwords = tmp_path / "passwd"
    passwords.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "line", "s3cret"], check=True, capture_output=True)
    b = Broker(tmp_path / "broker", extra=f"allow_anonymous false\npassword_file {passwords}\n"
                                          f"cafile {ca}\ncertfile {cert}\nkeyfile {key}").start()
    try:
        sub = Subscriber(b.port, ["plant/cell1/result"], username="line", password="s3cret", ca_file=ca)
        config = MqttConfig(broker="localhost", port=b.port, topic_prefix="plant/cell1", username="wrong",
                            tls={"ca_file": ca}, reconnect_min_s=0.1, reconnect_max_s=0.5)
        env = {"CELL_MQTT_USERNAME": "line", "CELL_MQTT_PASSWORD": "s3cret"}  # override the file's username
        sink = MqttSink(config, environ=env)
        with LineSignals([sink]) as signals:
            LineRun(tmp_path, signals, parts=2).start().join()
            sub.wait(lambda s: len(indices(s)) == 2, what="2 results over TLS")
        sub.close()
    finally:
        b.stop()


def test_mqtt_section_errors_name_the_key(tmp_path):
    from cell.cell_factory import load_cell_config
    from cell.signals.config import resolve_credentials

    path = tmp_path / "cell.yaml"
    for body, needle in [("mqtt:\n  brokr: x\n", "unknown key 'mqtt.brokr'"),
                         ("mqtt:\n  topic_prefix: plant/#\n", "mqtt.topic_prefix"),
                         ("mqtt:\n  topic_prefix: /plant\n", "empty level"),
                         ("mqtt:\n  port: 0\n", "mqtt.port"),
                         ("mqtt:\n  tls: {ca: x}\n", "unknown key 'mqtt.tls.ca'")]:
        path.write_text(body)
        with pytest.raises(ConfigFileError, match=needle):
            load_cell_config(path)
    assert resolve_credentials("mqtt", "a", "b", {"CELL_MQTT_PASSWORD": "env"}) == ("a", "env")
    with pytest.raises(ConfigFileError, match="CELL_MQTT_USERNAME"):
        resolve_credentials("mqtt", None, "pw", {})
    from cell.signals.mqtt import MqttSink

    with pytest.raises(ConfigFileError, match="mqtt.tls.ca_file"):
        MqttSink(MqttConfig(tls={"ca_file": tmp_path / "missing.pem"}))


def test_a_cell_that_dies_leaves_offline_as_its_retained_state(tmp_path, broker):
    # The last will: the broker publishes it when the cell's connection ends without a goodbye.
    import signal
    import subprocess
    import sys

    from tests.cell.sim_fixtures import REPO

    script = ("import sys, time\n"
              "from cell.signals import MqttConfig, LineStatus\n"
              "from cell.signals.mqtt import MqttSink\n"
              f"sink = MqttSink(MqttConfig(port={broker.port}, topic_prefix='plant/cell1'))\n"
              "sink.start()\n"
              "while not sink.connected(): time.sleep(0.01)\n"
              "sink.update_status(LineStatus('Busy'))\n"
              "print('ready', flush=True)\n"
              "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "ready"
        sub = Subscriber(broker.port, ["plant/cell1/state"])
        sub.wait(lambda s: any(m["state"] == "Busy" for m in s.on("plant/cell1/state")), what="Busy")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        sub.wait(lambda s: s.on("plant/cell1/state")[-1]["state"] == "Offline", what="the last will")
        assert sub.on("plant/cell1/state")[-1]["reason"] == "the cell's connection to the broker ended"
        sub.close()
    finally:
        proc.kill()
        proc.wait()
