"""A minimal PLC for trying and benchmarking the OPC UA handshake: ``python -m cell.signals.plc_sim``.

For each part it writes ``Handshake.PartPresent := true``, waits for ``Handshake.ResultReady`` (a subscription,
publishing interval ``publishing_interval_ms``; 0 = as soon as it changes), reads the result, prints it and
acknowledges (``ResultAcknowledged := true``), as a line PLC would (``part_feed: opcua`` makes the cell wait for
the PartPresent; otherwise it feeds itself and the PLC only acknowledges). It stops after ``--parts`` parts,
or when the server goes away (the end of ``cell inspect``).

    python -m cell.signals.plc_sim [--endpoint opc.tcp://127.0.0.1:4840] [--parts N] [--user NAME]
    (the password from CELL_OPCUA_PASSWORD)
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any, Callable, Optional

from asyncua import Client, ua

from cell.signals.config import OpcUaConfig

FIELDS = ("PartId", "Verdict", "Score", "Threshold", "DefectCount", "Reason", "Sequence")


class PlcSimulator:
    """The handshake loop of one client. ``on_result(values)`` gets the Result fields of each part;
    ``on_sequence(sequence, t)`` each change of ``Result.Sequence`` with its ``time.perf_counter()`` receipt
    time (taken in the subscription callback)."""

    def __init__(self, endpoint: str, parts: Optional[int] = None, *,
                 namespace: str = OpcUaConfig.model_fields["namespace"].default,
                 publishing_interval_ms: float = 0.0, username: Optional[str] = None,
                 password: Optional[str] = None, on_result: Optional[Callable[[dict], None]] = None,
                 on_sequence: Optional[Callable[[int, float], None]] = None, timeout_s: float = 600.0) -> None:
        self.endpoint, self.parts, self.namespace = endpoint, parts, namespace
        self.interval_ms, self.username, self.password = publishing_interval_ms, username, password
        self.on_result, self.on_sequence, self.timeout_s = on_result, on_sequence, timeout_s
        self.done = 0
        self._ready = False
        self._changed: Optional[asyncio.Event] = None
        self._sequence_node: Any = None

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        """asyncua's subscription callback (the client's loop)."""
        now = time.perf_counter()
        if node == self._sequence_node:
            if self.on_sequence is not None and value:
                self.on_sequence(int(value), now)
        else:
            self._ready = bool(value)
        if self._changed is not None:
            self._changed.set()

    async def _until(self, ready: bool) -> None:
        assert self._changed is not None
        while self._ready != ready:
            self._changed.clear()
            await asyncio.wait_for(self._changed.wait(), self.timeout_s)

    async def run(self, connected: Optional[Callable[[], None]] = None) -> int:
        """Drive parts until ``parts`` are done (returns the count); raises when the server goes away."""
        self._changed = asyncio.Event()
        client = Client(self.endpoint, timeout=30)
        if self.username:
            client.set_user(self.username)
            client.set_password(self.password or "")
        async with client:
            ns = await client.get_namespace_index(self.namespace)

            def node(path: str) -> Any:
                return client.get_node(f"ns={ns};s=InspectionCell.{path}")

            self._sequence_node = node("Result.Sequence")
            subscription = await client.create_subscription(self.interval_ms, self)
            await subscription.subscribe_data_change([self._sequence_node, node("Handshake.ResultReady")])
            if connected is not None:
                connected()
            true = ua.DataValue(ua.Variant(True, ua.VariantType.Boolean))
            while self.parts is None or self.done < self.parts:
                await node("Handshake.PartPresent").write_value(true)
                await self._until(True)
                if self.on_result is not None:
                    self.on_result({name: await node(f"Result.{name}").read_value() for name in FIELDS})
                await node("Handshake.ResultAcknowledged").write_value(true)
                await self._until(False)
                self.done += 1
        return self.done


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cell.signals.plc_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default=OpcUaConfig().endpoint)
    parser.add_argument("--parts", type=int, default=None, help="stop after this many parts (default: until the "
                                                                   "server goes away)")
    parser.add_argument("--namespace", default=OpcUaConfig().namespace)
    parser.add_argument("--user", default=os.environ.get("CELL_OPCUA_USERNAME"),
                        help="user name (password from CELL_OPCUA_PASSWORD)")
    args = parser.parse_args(argv)

    def show(values: dict) -> None:
        score = values["Score"]
        print(f"{values['PartId']}  {values['Verdict']:<5}  score {score:.4g}  {values['Reason']}", flush=True)

    plc = PlcSimulator(args.endpoint, args.parts, namespace=args.namespace, username=args.user,
                       password=os.environ.get("CELL_OPCUA_PASSWORD"), on_result=show)
    try:
        asyncio.run(plc.run(lambda: print(f"connected to {args.endpoint}", flush=True)))
    except KeyboardInterrupt:
        return 130
    except (OSError, asyncio.TimeoutError, ua.UaError, ConnectionError) as exc:
        if plc.done and args.parts is None:
            print(f"the server went away after {plc.done} part(s)")
            return 0
        print(f"error: {args.endpoint}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
