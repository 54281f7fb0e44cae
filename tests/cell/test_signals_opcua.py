"""The OPC UA server with a real asyncua client acting as the PLC, through the whole handshake with the
simulated line (PartPresent or Start() -> Busy -> ResultReady with the result -> acknowledge -> Ready), and
the faults: a PLC that disconnects mid-handshake (the result stays readable; the line waits or stops as
configured), malformed requests (refused, counted, the line unaffected), remote endpoints without security."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

asyncua = pytest.importorskip("asyncua", reason="the optional 'line' extra (asyncua) is not installed")
from asyncua import Client, ua  # noqa: E402

from cell.errors import CellError, ConfigFileError  # noqa: E402
from cell.line_result import RESULT_SCHEMA  # noqa: E402
from cell.local_http import LocalServerError  # noqa: E402
from cell.signals import LineSignals, OpcUaConfig  # noqa: E402
from cell.signals.opcua import OpcUaSink  # noqa: E402
from tests.cell.line_fixtures import LineRun, free_port, wait_for  # noqa: E402

NAMESPACE = "urn:inspection-cell:line"


def opcua_sink(notes: list[str], **overrides) -> OpcUaSink:
    config = OpcUaConfig(endpoint=f"opc.tcp://127.0.0.1:{free_port()}", **overrides)
    return OpcUaSink(config, part_timeout_s=60.0, report=notes.append)


class PLC:
    """A PLC program's view of the server: named nodes, polled reads (every 10 ms) with a deadline."""

    def __init__(self, client: Client, ns: int) -> None:
        self.client, self.ns = client, ns

    @classmethod
    async def connect(cls, url: str, **kwargs) -> "PLC":
        client = Client(url, timeout=10)
        for key, value in kwargs.items():
            getattr(client, key)(*value) if isinstance(value, tuple) else getattr(client, key)(value)
        await client.connect()
        return cls(client, await client.get_namespace_index(NAMESPACE))

    def node(self, path: str):
        return self.client.get_node(f"ns={self.ns};s=InspectionCell.{path}")

    async def read(self, path: str):
        return await self.node(path).read_value()

    async def write_bool(self, path: str, value: bool) -> None:
        await self.node(path).write_value(ua.DataValue(ua.Variant(value, ua.VariantType.Boolean)))

    async def call(self, method: str, *args):
        return await self.node("Handshake").call_method(self.node(f"Handshake.{method}").nodeid, *args)

    async def until(self, path: str, expected, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while True:
            value = await self.read(path)
            if value == expected:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} stayed {value!r}, expected {expected!r} within {timeout:g} s")
            await asyncio.sleep(0.01)

    async def inspect_one(self, use_methods: bool = False) -> dict:
        """One handshake cycle; returns the result as the PLC read it before acknowledging."""
        await self.until("State", "Ready")
        before = await self.read("Result.Sequence")
        if use_methods:
            await self.call("Start")
        else:
            await self.write_bool("Handshake.PartPresent", True)
        await self.until("Handshake.ResultReady", True)
        result = {name: await self.read(f"Result.{name}") for name in (
            "Sequence", "PartId", "Verdict", "VerdictCode", "Score", "Threshold", "DefectCount", "DefectX_mm",
            "Reason", "StartedAt", "FinishedAt", "Json")}
        result["State"] = await self.read("State")
        result["PartPresent"] = await self.read("Handshake.PartPresent")
        assert result["Sequence"] == before + 1
        if use_methods:
            await self.call("Acknowledge")
        else:
            await self.write_bool("Handshake.ResultAcknowledged", True)
        await self.until("Handshake.ResultReady", False)
        assert await self.read("Handshake.ResultAcknowledged") is False
        return result


def test_a_plc_drives_the_line_through_the_whole_handshake(tmp_path):
    notes: list[str] = []
    sink = opcua_sink(notes)
    with LineSignals([sink]) as signals:
        run = LineRun(tmp_path, signals, parts=3, threshold=-1.0, part_feed="opcua",
                      line_feed=sink.wait_for_part).start()

        async def plc():
            p = await PLC.connect(sink.config.endpoint)
            try:
                assert await p.read("Job.Campaign") == "line" and await p.read("Job.Threshold") == -1.0
                seen = [await p.inspect_one(), await p.inspect_one(use_methods=True), await p.inspect_one()]
                await p.until("State", "Ready")
                counters = [await p.read(f"Counters.{c}") for c in ("OK", "NOK", "Error")]
                return seen, counters
            finally:
                await p.client.disconnect()

        seen, counters = asyncio.run(plc())
        summary = run.join()
    assert [s["PartId"] for s in seen] == [r.part_id for r in summary.results] == [r.part_id for r in run.records]
    for s, part in zip(seen, summary.results):
        assert s["Verdict"] == "NOK" and s["VerdictCode"] == 2 and s["State"] == "Busy"
        assert s["Score"] == pytest.approx(part.max_score) and s["Threshold"] == -1.0
        assert s["DefectCount"] == 0 and s["DefectX_mm"] == [] and s["PartPresent"] is False
        assert s["StartedAt"] <= s["FinishedAt"] and s["Reason"] == part.reason
        message = json.loads(s["Json"])
        assert message["schema"] == RESULT_SCHEMA and message["part_id"] == part.part_id
    assert counters == [0, 3, 0]
    assert summary.stopped_early is None and sink.health.sent == 3 and sink.health.rejected == 0


def test_malformed_requests_are_refused_and_the_line_is_unaffected(tmp_path):
    notes: list[str] = []
    sink = opcua_sink(notes)
    with LineSignals([sink]) as signals:
        run = LineRun(tmp_path, signals, parts=1, part_feed="opcua", line_feed=sink.wait_for_part).start()

        async def plc():
            p = await PLC.connect(sink.config.endpoint)
            try:
                await p.until("State", "Ready")
                codes = []
                for request in (
                    lambda: p.node("Handshake.PartPresent").write_value("yes"),  # wrong type
                    lambda: p.node("Result.Verdict").write_value("OK"),  # read-only: a PLC cannot fake a verdict
                    lambda: p.node("Counters.NOK").write_value(ua.Variant(0, ua.VariantType.UInt32)),
                    lambda: p.call("Start", ua.Variant(1, ua.VariantType.Int32)),  # Start takes no argument
                    lambda: p.call("Acknowledge"),  # nothing to acknowledge
                ):
                    with pytest.raises(ua.UaStatusCodeError) as err:
                        await request()
                    codes.append(type(err.value).__name__)
                await p.write_bool("Handshake.ResultAcknowledged", True)  # nothing to acknowledge: reset
                await p.until("Handshake.ResultAcknowledged", False)
                assert await p.read("State") == "Ready" and await p.read("Result.Sequence") == 0
                assert await p.read("Result.Verdict") == ""
                return codes, await p.inspect_one()
            finally:
                await p.client.disconnect()

        codes, result = asyncio.run(plc())
        summary = run.join()
    assert codes == ["BadTypeMismatch", "BadUserAccessDenied", "BadUserAccessDenied", "BadTooManyArguments",
                     "BadInvalidState"]
    assert result["Verdict"] == "OK" and [r.verdict for r in summary.results] == ["OK"]
    assert sink.health.rejected == 6 and sink.health.failed == 0
    assert any("Result.Verdict" in n and "BadUserAccessDenied" in n for n in notes)


@pytest.mark.parametrize("on_plc_lost", ["wait", "stop"])
def test_a_plc_that_disconnects_mid_handshake(tmp_path, on_plc_lost):
    notes: list[str] = []
    sink = opcua_sink(notes, on_plc_lost=on_plc_lost)
    with LineSignals([sink]) as signals:
        run = LineRun(tmp_path, signals, parts=2, part_feed="opcua", line_feed=sink.wait_for_part).start()

        async def plc_gone_mid_part():
            p = await PLC.connect(sink.config.endpoint)
            await p.until("State", "Ready")
            await p.write_bool("Handshake.PartPresent", True)
            await p.until("State", "Busy")
            await p.client.disconnect()  # the PLC goes away while the part is inspected

        asyncio.run(plc_gone_mid_part())
        if on_plc_lost == "stop":
            summary = run.join()
        else:
            wait_for(lambda: any("waits for it to reconnect" in n for n in notes), what="the line to wait")
            assert run.alive() and sink.awaits_acknowledgement()
            assert signals.status().counts == {"OK": 1, "NOK": 0, "error": 0}  # it did not take the next part

        async def plc_back():
            p = await PLC.connect(sink.config.endpoint)
            try:
                first = {k: await p.read(k) for k in ("Result.PartId", "Result.Sequence", "Handshake.ResultReady",
                                                       "State", "LastError")}
                if on_plc_lost == "wait":
                    await p.write_bool("Handshake.ResultAcknowledged", True)
                    await p.until("Handshake.ResultReady", False)
                    second = await p.inspect_one()
                    return first, second
                return first, None
            finally:
                await p.client.disconnect()

        first, second = asyncio.run(plc_back())
        summary = run.join()
    assert first["Result.PartId"] == summary.results[0].part_id and first["Result.Sequence"] == 1
    assert first["Handshake.ResultReady"] is True  # the result stayed available, unacknowledged
    assert any("the last OPC UA client disconnected" in n for n in notes)
    if on_plc_lost == "stop":
        assert len(summary.results) == 1
        assert "PLC disconnected" in summary.stopped_early and "on_plc_lost: stop" in summary.stopped_early
        assert first["State"] == "Error" and "PLC disconnected" in first["LastError"]
    else:
        assert summary.stopped_early is None and len(summary.results) == 2
        assert second["PartId"] == summary.results[1].part_id


def test_an_unacknowledged_result_stops_the_line_after_ack_timeout(tmp_path):
    sink = opcua_sink([], ack_timeout_s=0.5)
    with LineSignals([sink]) as signals:
        summary = LineRun(tmp_path, signals, parts=3).start().join()  # the sim feeds parts; nobody acknowledges
    assert len(summary.results) == 1
    assert "not acknowledged within 0.5 s (opcua.ack_timeout_s)" in summary.stopped_early


def test_without_require_ack_the_line_does_not_wait(tmp_path):
    sink = opcua_sink([], require_ack=False)
    with LineSignals([sink]) as signals:
        summary = LineRun(tmp_path, signals, parts=2).start().join()

        async def read():
            p = await PLC.connect(sink.config.endpoint)
            try:
                return [await p.read(k) for k in ("Result.Sequence", "Handshake.ResultReady", "State",
                                                  "Result.PartId")]
            finally:
                await p.client.disconnect()

        sequence, ready, state, part = asyncio.run(read())
    assert len(summary.results) == 2 and (sequence, ready, state) == (2, False, "Ready")
    assert part == summary.results[1].part_id


def test_a_non_local_endpoint_needs_permission_and_security(tmp_path):
    with pytest.raises(LocalServerError, match="--allow-remote"):
        OpcUaSink(OpcUaConfig(endpoint="opc.tcp://0.0.0.0:4840"))
    with pytest.raises(ConfigFileError, match="certificate and private_key"):
        OpcUaSink(OpcUaConfig(endpoint="opc.tcp://0.0.0.0:4840"), allow_remote=True)
    cert, key = tmp_path / "c.der", tmp_path / "k.pem"
    cert.write_bytes(b"x")
    key.write_bytes(b"x")
    with pytest.raises(ConfigFileError, match="anonymous clients are admitted on localhost only"):
        OpcUaSink(OpcUaConfig(endpoint="opc.tcp://0.0.0.0:4840",
                              security={"certificate": cert, "private_key": key}), allow_remote=True, environ={})
    with pytest.raises(ConfigFileError, match="no password"):
        OpcUaSink(OpcUaConfig(security={"username": "plc"}), environ={})
    with pytest.raises(ConfigFileError, match="opcua.security.certificate"):
        OpcUaSink(OpcUaConfig(security={"certificate": tmp_path / "none.der", "private_key": key}))
    with pytest.raises(ConfigFileError, match="opcua.endpoint"):
        from cell.cell_factory import load_cell_config

        (tmp_path / "cell.yaml").write_text("opcua:\n  endpoint: http://127.0.0.1:4840\n")
        load_cell_config(tmp_path / "cell.yaml")


def test_a_remote_endpoint_admits_the_user_and_refuses_anonymous_clients(tmp_path):
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    port = free_port()
    server_cert, server_key = tmp_path / "server.der", tmp_path / "server.pem"
    client_cert, client_key = tmp_path / "client.der", tmp_path / "client.pem"

    async def make_certs():
        await setup_self_signed_certificate(server_key, server_cert, "urn:inspection-cell:test", "localhost",
                                            [ExtendedKeyUsageOID.SERVER_AUTH], {"commonName": "cell"})
        await setup_self_signed_certificate(client_key, client_cert, "urn:test:plc", "localhost",
                                            [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "plc"})

    asyncio.run(make_certs())
    config = OpcUaConfig(endpoint=f"opc.tcp://0.0.0.0:{port}",
                         security={"certificate": server_cert, "private_key": server_key})
    sink = OpcUaSink(config, allow_remote=True, environ={"CELL_OPCUA_USERNAME": "plc", "CELL_OPCUA_PASSWORD": "pw"})
    security = f"Basic256Sha256,SignAndEncrypt,{client_cert},{client_key}"
    with LineSignals([sink]):
        async def attempts():
            outcomes = {}
            for label, user in (("anonymous", None), ("wrong password", ("plc", "nope")), ("user", ("plc", "pw"))):
                client = Client(f"opc.tcp://127.0.0.1:{port}", timeout=10)
                await client.set_security_string(security)
                if user:
                    client.set_user(user[0])
                    client.set_password(user[1])
                try:
                    await client.connect()
                except Exception as exc:  # noqa: BLE001 - the refusal is the point
                    outcomes[label] = type(exc).__name__
                    continue
                try:
                    outcomes[label] = await client.get_node(
                        f"ns={await client.get_namespace_index(NAMESPACE)};s=InspectionCell.State").read_value()
                finally:
                    await client.disconnect()
            plain = Client(f"opc.tcp://127.0.0.1:{port}", timeout=10)  # no encryption at all
            try:
                await plain.connect()
                outcomes["unencrypted"] = "connected"
                await plain.disconnect()
            except Exception as exc:  # noqa: BLE001
                outcomes["unencrypted"] = type(exc).__name__
            return outcomes

        outcomes = asyncio.run(attempts())
    assert outcomes == {"anonymous": "BadIdentityTokenRejected", "wrong password": "BadUserAccessDenied",
                        "user": "Initializing", "unencrypted": "UaError"}


def test_a_remote_endpoint_admits_clients_with_a_trusted_certificate(tmp_path):
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    port = free_port()
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    files = {name: (tmp_path / f"{name}.der", tmp_path / f"{name}.pem") for name in ("server", "plc", "stranger")}

    async def make_certs():
        for name, (cert, key) in files.items():
            usage = ExtendedKeyUsageOID.SERVER_AUTH if name == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
            await setup_self_signed_certificate(key, cert, f"urn:test:{name}", "localhost", [usage],
                                                {"commonName": name})

    asyncio.run(make_certs())
    (trusted / "plc.der").write_bytes(files["plc"][0].read_bytes())
    config = OpcUaConfig(endpoint=f"opc.tcp://0.0.0.0:{port}", security={
        "certificate": files["server"][0], "private_key": files["server"][1], "trusted_clients": trusted})
    sink = OpcUaSink(config, allow_remote=True, environ={})
    with LineSignals([sink]):
        async def attempt(name):
            client = Client(f"opc.tcp://127.0.0.1:{port}", timeout=10)
            await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{files[name][0]},{files[name][1]}")
            try:
                await client.connect()
            except Exception as exc:  # noqa: BLE001 - the refusal is the point
                return type(exc).__name__
            try:
                return await client.get_node(
                    f"ns={await client.get_namespace_index(NAMESPACE)};s=InspectionCell.State").read_value()
            finally:
                await client.disconnect()

        outcomes = {name: asyncio.run(attempt(name)) for name in ("plc", "stranger")}
    assert outcomes == {"plc": "Initializing", "stranger": "BadUserAccessDenied"}


def test_a_port_in_use_is_one_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        sink = OpcUaSink(OpcUaConfig(endpoint=f"opc.tcp://127.0.0.1:{port}"))
        with pytest.raises(CellError, match=rf"cannot listen on opc.tcp://127.0.0.1:{port}") as err:
            sink.start()
        assert "\n" not in str(err.value)
        sink.close()
