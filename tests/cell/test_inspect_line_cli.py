"""``cell inspect`` with line signals through the real CLI: OPC UA, MQTT (a real broker and subscriber) and
the live page in one run, and the one-line refusals of bad settings before the model is loaded or the robot
moves. The model is replaced by the test detector (what is tested is the line's wiring, not scoring)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

import cell.commands.inspect as inspect_command
from acquisition.store import CaptureStore
from cell.cli import main
from detectors.input_prep import InputSpec
from detectors.model_dir import TrainedModel
from cell.part_threshold import PartThreshold
from detectors.thresholds import ThresholdDecision
from tests.cell.line_fixtures import free_port
from tests.cell.mosquitto_fixture import Subscriber, broker, needs_mosquitto  # noqa: F401 - fixture
from tests.cell.sim_fixtures import DEMO_CAMPAIGN, SIM_CELL, LocalContrastDetector

NO_MODEL_NEEDED = "model-is-never-loaded"


def cell_file(tmp_path: Path, **sections) -> Path:
    config = yaml.safe_load(SIM_CELL.read_text())
    config["camera"].update(width=320, height=256, pixel_size_um=21.2)
    config["scene"].update(sheet_width_m=0.12, sheet_height_m=0.10)
    config.update(sections)
    path = tmp_path / "cell.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def inspect_args(tmp_path: Path, cell: Path, *extra: str) -> list[str]:
    return ["inspect", "--cell", str(cell), "--campaign", str(DEMO_CAMPAIGN), "--model", str(tmp_path / NO_MODEL_NEEDED),
            "--store", str(tmp_path / "store"), "--parts", "2", "--name", "line", *extra]


@pytest.fixture()
def test_model(monkeypatch):
    monkeypatch.setattr(inspect_command, "load_model_for_runtime", lambda directory, **kw: TrainedModel(
        directory, LocalContrastDetector(), InputSpec(mode="tile", scale=1.0), ThresholdDecision(-1.0, "manual")))
    monkeypatch.setattr(inspect_command, "read_part_threshold",
                        lambda directory: PartThreshold(ThresholdDecision(-1.0, "manual")))  # every part NOK


@pytest.mark.parametrize("sections, extra, message", [
    ({}, ["--signal", "opcua,plc"], "unknown signal 'plc'"),
    ({}, ["--serve", "--host", "0.0.0.0"], "the live line page has no authentication; pass --allow-remote"),
    ({"opcua": {"endpoint": "opc.tcp://0.0.0.0:4840"}}, ["--signal", "opcua"],
     "the OPC UA server has no authentication; pass --allow-remote"),
    ({"opcua": {"endpoint": "opc.tcp://0.0.0.0:4840"}}, ["--signal", "opcua", "--allow-remote"],
     "a non-local endpoint needs opcua.security.certificate"),
    ({"part_feed": {"mode": "opcua"}}, [], "part_feed.mode 'opcua' needs the OPC UA server: add opcua to --signal"),
    ({"mqtt": {"broker": "x", "qos": 2}}, ["--signal", "mqtt"], "unknown key 'mqtt.qos'"),
    ({}, ["--signal", "digital_output"], "--signal digital_output needs a robot with digital outputs"),
])
def test_bad_line_settings_are_one_line_before_anything_runs(tmp_path, capsys, sections, extra, message):
    code = main(inspect_args(tmp_path, cell_file(tmp_path, **sections), *extra))
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "store").exists()  # nothing ran


@needs_mosquitto
def test_opcua_mqtt_and_the_live_page_in_one_run(tmp_path, capsys, broker, test_model):
    from asyncua import Client

    opcua_port = free_port()
    cell = cell_file(tmp_path, opcua={"endpoint": f"opc.tcp://127.0.0.1:{opcua_port}", "require_ack": False},
                     mqtt={"port": broker.port, "topic_prefix": "plant/cell1"})
    sub = Subscriber(broker.port, ["plant/cell1/result"])
    try:
        code = main(inspect_args(tmp_path, cell, "--signal", "opcua,mqtt", "--serve", "--port", "0"))
        out = capsys.readouterr().out
        assert code == 0, out
        sub.wait(lambda s: len(s.on("plant/cell1/result")) == 2, what="2 results")
    finally:
        sub.close()
    assert f"OPC UA server at opc.tcp://127.0.0.1:{opcua_port}" in out and "live line page at http://127.0.0.1:" in out
    assert "opcua: sent 2, dropped 0, failed 0, rejected 0" in out and "mqtt: sent 2, dropped 0" in out
    with CaptureStore(tmp_path / "store") as store:
        summary = store.campaign_status("line").summary
        records = store.inspections()
    assert set(summary["signals"]) == {"opcua", "mqtt", "line_view"} and summary["counts"]["NOK"] == 2
    assert [m["part_id"] for m in sub.on("plant/cell1/result")] == [r.part_id for r in records]

    async def server_is_gone():
        try:
            await Client(f"opc.tcp://127.0.0.1:{opcua_port}", timeout=2).connect()
        except Exception:  # noqa: BLE001
            return True
        return False

    assert asyncio.run(server_is_gone())  # closed with the run


def test_the_readme_plc_simulator_drives_cell_inspect(tmp_path, capsys, test_model):
    # The README's way to try the OPC UA handshake without a PLC: `python -m cell.signals.plc_sim` beside
    # `cell inspect --signal opcua` (require_ack: the line waits for each acknowledgement).
    import threading
    import time

    from cell.signals import plc_sim

    port = free_port()
    cell = cell_file(tmp_path, opcua={"endpoint": f"opc.tcp://127.0.0.1:{port}"})
    box: dict = {}

    def plc() -> None:
        deadline = time.monotonic() + 120
        while True:  # until the server is up
            box["code"] = plc_sim.main(["--endpoint", f"opc.tcp://127.0.0.1:{port}", "--parts", "2"])
            if box["code"] == 0 or time.monotonic() > deadline:
                return
            time.sleep(0.1)

    thread = threading.Thread(target=plc, daemon=True)
    thread.start()
    assert main(inspect_args(tmp_path, cell, "--signal", "opcua")) == 0
    thread.join(60)
    out = capsys.readouterr().out
    assert box["code"] == 0
    assert "line-0001  NOK" in out and "line-0002  NOK" in out
    assert "opcua: sent 2, dropped 0, failed 0, rejected 0" in out
