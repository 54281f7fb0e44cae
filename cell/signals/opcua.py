"""``--signal opcua``: an OPC UA server (asyncua) a PLC reads results from and drives the line with.

The server runs in its own thread with its own asyncio loop; the inspection loop only hands it results and
status snapshots (:meth:`OpcUaSink.publish`, :meth:`OpcUaSink.update_status` return at once) and waits on it
where the handshake says it must. The address space is :mod:`cell.signals.opcua_nodes`.

The PLC handshake (every step a node a PLC reads or writes):

1. ``State`` = Ready. The PLC writes ``Handshake.PartPresent`` := true (or calls ``Handshake.Start()``).
   With ``part_feed: opcua`` the line waits for this before each part; the cell then clears PartPresent.
2. ``State`` = Busy while the part is inspected.
3. The result is written to ``Result/*`` (``Result.Sequence`` last), then ``Handshake.ResultReady`` := true.
4. The PLC acknowledges: ``Handshake.ResultAcknowledged`` := true (or ``Handshake.Acknowledge()``); the cell
   clears ResultReady and ResultAcknowledged, and ``State`` = Ready. With ``require_ack`` (the default) the
   line does not take the next part before this, at most ``ack_timeout_s``.

When the last client disconnects while the line waits for the PLC, the line waits for it to come back or
stops, as ``on_plc_lost`` says; the unacknowledged result stays in ``Result/*`` for the PLC to read when it
reconnects. Malformed requests are refused and counted (``rejected``), never reaching the line: a value of
the wrong type (BadTypeMismatch), a write to a read-only node (BadUserAccessDenied), ``Start()`` while a part
is already requested or the line is in Error, ``Acknowledge()`` with no result waiting (BadInvalidState), a
method called with arguments (BadTooManyArguments). A ``ResultAcknowledged`` := true with no result waiting
is reset to false and counted as rejected.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Mapping, Optional

from asyncua import Server, ua
from asyncua.common.callback import CallbackType, ServerItemCallback
from asyncua.crypto import uacrypto
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

from cell.errors import CellError, ConfigFileError, LineStopped
from cell.line_result import LineResult
from cell.local_http import check_bind_host, is_loopback_host
from cell.signals import opcua_nodes as N
from cell.signals.base import LineSink, LineStatus, Reporter, no_report
from cell.signals.config import OpcUaConfig, resolve_credentials, resolve_path

WHAT = "the OPC UA server"
#: How often a waiting line re-checks the PLC's connection, s.
POLL_S = 0.1
START_TIMEOUT_S = 60.0


class _LineUsers(UserManager):
    """Who may open a session: anonymous clients (loopback endpoints only), the configured user, or a client
    whose application certificate is in ``trusted_clients``. Nobody is an administrator, so every client is
    bound by the nodes' access levels (read-only except the handshake inputs)."""

    def __init__(self, anonymous: bool, username: Optional[str], password: Optional[str],
                 trusted: set[bytes]) -> None:
        self.anonymous, self.username, self.password, self.trusted = anonymous, username, password, trusted

    def get_user(self, iserver: Any, username: Optional[str] = None, password: Optional[str] = None,
                 certificate: Any = None) -> Optional[User]:
        if username is not None:
            if (self.username is not None and self.password is not None
                    and hmac.compare_digest(str(username).encode(), self.username.encode())
                    and hmac.compare_digest(str(password or "").encode(), self.password.encode())):
                return User(role=UserRole.User, name=username)
            return None
        if certificate is not None and bytes(certificate) in self.trusted:
            return User(role=UserRole.User, name="trusted certificate")
        if self.anonymous:
            return User(role=UserRole.User, name="anonymous")
        return None


def _load_trusted(folder: Optional[Path]) -> set[bytes]:
    """DER bytes of every certificate (.der, .pem, .crt) in ``folder``; unreadable ones -> one-line error."""
    if folder is None:
        return set()
    if not folder.is_dir():
        raise ConfigFileError(f"opcua.security.trusted_clients = {str(folder)!r}: not a folder")
    trusted: set[bytes] = set()
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".der", ".pem", ".crt"):
            continue
        try:
            data = path.read_bytes()
            cert = uacrypto.x509_from_der(data) if path.suffix.lower() == ".der" else None
            if cert is None:
                from cryptography import x509

                cert = x509.load_pem_x509_certificate(data)
            trusted.add(uacrypto.der_from_x509(cert))
        except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault
            raise ConfigFileError(f"opcua.security.trusted_clients: {path}: not a certificate ({exc})") from None
    if not trusted:
        raise ConfigFileError(f"opcua.security.trusted_clients = {str(folder)!r}: holds no .der/.pem/.crt certificate")
    return trusted


class OpcUaSink(LineSink):
    """The line's OPC UA server (see the module docstring for the handshake)."""

    name = "opcua"

    def __init__(self, config: OpcUaConfig, *, allow_remote: bool = False, base_dir: Optional[Path] = None,
                 part_timeout_s: Optional[float] = None, report: Reporter = no_report,
                 environ: Mapping[str, str] = os.environ) -> None:
        super().__init__(report)
        self.config = config
        check_bind_host(config.host, allow_remote, WHAT)
        self.remote = not is_loopback_host(config.host)
        sec = config.security
        self._username, self._password = resolve_credentials("opcua", sec.username, sec.password, environ)
        if self._username is not None and self._password is None:
            raise ConfigFileError("opcua: a username is set but no password (set opcua.security.password or "
                                  "CELL_OPCUA_PASSWORD)")
        self._certificate = resolve_path(sec.certificate, base_dir, "opcua.security.certificate")
        self._private_key = resolve_path(sec.private_key, base_dir, "opcua.security.private_key")
        if (self._certificate is None) != (self._private_key is None):
            raise ConfigFileError("opcua.security: certificate and private_key go together (give both or neither)")
        self._trusted = _load_trusted(resolve_path(sec.trusted_clients, base_dir, "opcua.security.trusted_clients"))
        if self.remote:
            if self._certificate is None:
                raise ConfigFileError(
                    f"opcua.endpoint {config.endpoint}: a non-local endpoint needs opcua.security.certificate and "
                    "private_key (messages are signed and encrypted; passwords never travel in clear)")
            if self._username is None and not self._trusted:
                raise ConfigFileError(
                    f"opcua.endpoint {config.endpoint}: anonymous clients are admitted on localhost only; set "
                    "opcua.security.username/password or trusted_clients")
        self.part_timeout_s = part_timeout_s
        logging.getLogger("asyncua").setLevel(logging.ERROR)  # its warnings are about requests we count ourselves
        # Handshake state: changed only in the server's loop, under _cv; the inspection thread waits on _cv.
        self._cv = threading.Condition()
        self._part_requested = False
        self._pending: Optional[str] = None  # part id of the result the PLC has not acknowledged yet
        self._pending_visible = False  # its ResultReady has been written
        self._clients = 0
        self._ever_connected = False
        self._lost_noted = False
        self._error_state = False
        self._closing = False
        self._sequence = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._ops: Optional[asyncio.Queue] = None
        self._started = threading.Event()
        self._start_error: Optional[BaseException] = None
        self.server: Optional[Server] = None
        self.nodes: Optional[N.LineNodes] = None

    # ------------------------------------------------------------------ lifecycle (inspection thread)
    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="opcua-server", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S):
            raise CellError(f"{WHAT} at {self.config.endpoint} did not start within {START_TIMEOUT_S:g} s")
        if self._start_error is not None:
            exc = self._start_error
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            raise CellError(f"{WHAT}: cannot listen on {self.config.endpoint}: {reason}")

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._loop is not None and self._ops is not None and self._thread is not None and self._thread.is_alive():
            try:
                self._loop.call_soon_threadsafe(self._ops.put_nowait, None)  # the last op: stop the server
            except RuntimeError:
                return  # the loop has already ended
            self._thread.join(timeout=15)

    @property
    def namespace_index(self) -> int:
        assert self.nodes is not None, "start() first"
        return self.nodes.namespace_index

    # ------------------------------------------------------------------ sink interface (inspection thread)
    def update_status(self, status: LineStatus) -> None:
        with self._cv:
            self._error_state = status.state == "Error"
        self._submit(("status", status))

    def publish(self, result: LineResult) -> None:
        with self._cv:
            self._sequence += 1
            sequence = self._sequence
            if self.config.require_ack:
                self._pending, self._pending_visible = result.part_id, False
        self._submit(("result", (result, sequence)))

    def awaits_acknowledgement(self) -> bool:
        with self._cv:
            return self._pending is not None

    def before_part(self, part_id: str) -> None:
        """Wait for the PLC's acknowledgement of the previous result (``require_ack``)."""
        if not self.config.require_ack:
            return
        timeout = self.config.ack_timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._pending is not None:
                pending = self._pending
                self._check_waiting(f"the result of part {pending} was not acknowledged", deadline,
                                    f"within {timeout:g} s (opcua.ack_timeout_s)" if timeout else "",
                                    f"acknowledge the result of part {pending}")
                self._cv.wait(POLL_S)

    def wait_for_part(self, part_id: str) -> None:
        """``part_feed: opcua``: wait until the PLC says a part is present (PartPresent or Start()), then take
        it (PartPresent is cleared). At most ``part_timeout_s``; raises :class:`LineStopped`."""
        timeout = self.part_timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cv:
                while not self._part_requested:
                    self._check_waiting(f"no part arrived for {part_id}", deadline,
                                        f"within {timeout:g} s (part_feed.timeout_s)" if timeout else "",
                                        f"set PartPresent for part {part_id}")
                    self._cv.wait(POLL_S)
            try:
                taken = self._call(self._take_part())
            except Exception as exc:  # noqa: BLE001 - the server's loop is gone or stuck: the line cannot go on
                raise LineStopped(f"no part taken for {part_id}: the OPC UA server did not answer "
                                  f"({type(exc).__name__}: {exc})") from None
            if taken:
                return

    def _check_waiting(self, what: str, deadline: Optional[float], timeout_text: str, waiting_for: str) -> None:
        """Raise LineStopped when the line must give up waiting for the PLC (called under _cv); note once
        per outage that the line waits for a PLC that went away."""
        if self._closing:
            raise LineStopped(f"{what}: the OPC UA server is closing")
        lost = self._ever_connected and self._clients == 0
        if lost and self.config.on_plc_lost == "stop":
            raise LineStopped(f"{what}: the PLC disconnected (opcua.on_plc_lost: stop)")
        if lost and not self._lost_noted:
            self._lost_noted = True
            self.health.note(f"the PLC is disconnected: the line waits for it to reconnect and {waiting_for}")
        if deadline is not None and time.monotonic() > deadline:
            raise LineStopped(f"{what} {timeout_text}".strip())

    def clients(self) -> int:
        """OPC UA client connections now."""
        with self._cv:
            return self._clients

    # ------------------------------------------------------------------ the server's loop
    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    def _submit(self, op: tuple[str, Any]) -> None:
        loop = self._loop
        if loop is None or self._ops is None or loop.is_closed():
            self.health.count_failure(f"{op[0]} not written: the server is not running", report=op[0] == "result")
            return
        try:
            loop.call_soon_threadsafe(self._ops.put_nowait, op)
        except RuntimeError:  # the loop closed meanwhile
            self.health.count_failure(f"{op[0]} not written: the server has stopped", report=op[0] == "result")

    def _call(self, coro: Any) -> Any:
        """Run ``coro`` on the server's loop and wait for its value (used only where the line waits anyway)."""
        assert self._loop is not None
        future: Future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    async def _serve(self) -> None:
        try:
            server = await self._make_server()
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._start_error = exc
            self._started.set()
            return
        self.server = server
        self._ops = asyncio.Queue()
        watcher = asyncio.ensure_future(self._watch_clients())
        self._started.set()
        try:
            while True:
                op = await self._ops.get()
                if op is None:
                    break
                await self._apply(op)
        finally:
            watcher.cancel()
            try:
                await server.stop()
            except Exception:  # noqa: BLE001 - the process is shutting the server down anyway
                pass

    async def _make_server(self) -> Server:
        anonymous = not self.remote or bool(self._trusted)
        server = Server(user_manager=_LineUsers(not self.remote, self._username, self._password, self._trusted))
        await server.init()
        server.set_endpoint(self.config.endpoint)
        server.set_server_name("Inspection cell")
        await server.set_application_uri(f"urn:inspection-cell:{socket.gethostname()}")
        policies = [] if self.remote else [ua.SecurityPolicyType.NoSecurity]
        if self._certificate is not None:
            await server.load_certificate(str(self._certificate))
            await server.load_private_key(str(self._private_key))
            policies.append(ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt)
            if not self.remote:
                policies.append(ua.SecurityPolicyType.Basic256Sha256_Sign)
        server.set_security_policy(policies)
        tokens: list[type] = []
        if anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if self._username is not None:
            tokens.append(ua.UserNameIdentityToken)
        if self._trusted:
            tokens.append(ua.X509IdentityToken)
        server.set_identity_tokens(tokens)
        index = await server.register_namespace(self.config.namespace)
        self.nodes = await N.build_nodes(server, index, self._method_start, self._method_acknowledge)
        server.subscribe_server_callback(CallbackType.PostWrite, self._after_client_write)
        await server.start()
        return server

    async def _apply(self, op: tuple[str, Any]) -> None:
        kind, payload = op
        try:
            if kind == "status":
                await self._write(N.status_values(payload))
            elif kind == "result":
                result, sequence = payload
                await self._write(N.result_values(result, sequence))
                if self.config.require_ack:
                    await self._write([(("Handshake", "ResultReady"), ua.Variant(True, ua.VariantType.Boolean))])
                    with self._cv:
                        if self._pending == result.part_id:
                            self._pending_visible = True
                self.health.count_sent()
        except Exception as exc:  # noqa: BLE001 - counted; the line goes on
            what = f"result of part {payload[0].part_id}" if kind == "result" else "status"
            self.health.count_failure(f"{what} not written: {type(exc).__name__}: {exc}")

    async def _write(self, values: list[tuple[tuple[str, str], ua.Variant]]) -> None:
        assert self.server is not None and self.nodes is not None
        for key, variant in values:
            status = await self.server.write_attribute_value(self.nodes.nodeid(*key), N.data_value(variant))
            if status is not None and not status.is_good():
                raise CellError(f"{N.node_name(*key)}: {status.name}")

    async def _watch_clients(self) -> None:
        """Track the client connections (a PLC lost mid-handshake is noticed here)."""
        while True:
            bserver = self.server.bserver if self.server is not None else None
            count = len(bserver.clients) if bserver is not None else 0
            if count != self._clients:
                with self._cv:
                    previous, self._clients = self._clients, count
                    reconnected = self._ever_connected and previous == 0 and count > 0
                    self._ever_connected = self._ever_connected or count > 0
                    self._lost_noted = self._lost_noted and count == 0
                    pending = self._pending
                    self._cv.notify_all()
                if count == 0 and previous > 0:
                    self.health.note("the last OPC UA client disconnected"
                                     + (f" (result of part {pending} not acknowledged)" if pending else ""))
                elif reconnected:
                    self.health.note(f"an OPC UA client connected again ({count} now)")
            await asyncio.sleep(POLL_S / 2)

    # ------------------------------------------------------------------ PLC requests (server's loop)
    async def _take_part(self) -> bool:
        with self._cv:
            if not self._part_requested:
                return False
            self._part_requested = False
        await self._write([(("Handshake", "PartPresent"), ua.Variant(False, ua.VariantType.Boolean))])
        return True

    async def _request_part(self) -> None:
        with self._cv:
            self._part_requested = True
            self._cv.notify_all()

    async def _acknowledge(self) -> bool:
        with self._cv:
            if self._pending is None or not self._pending_visible:
                return False
            self._pending, self._pending_visible = None, False
            self._cv.notify_all()
        await self._write([(("Handshake", "ResultReady"), ua.Variant(False, ua.VariantType.Boolean)),
                           (("Handshake", "ResultAcknowledged"), ua.Variant(False, ua.VariantType.Boolean))])
        return True

    async def _after_client_write(self, event: ServerItemCallback, dispatcher: Any) -> None:
        if not event.is_external or self.nodes is None:
            return
        try:
            await self._handle_client_writes(event)
        except Exception as exc:  # noqa: BLE001 - a bug here must not fail the client's write or the line
            self.health.count_failure(f"handling a client write failed: {type(exc).__name__}: {exc}")

    async def _handle_client_writes(self, event: ServerItemCallback) -> None:
        assert self.nodes is not None
        part_present = self.nodes.nodeid("Handshake", "PartPresent")
        acknowledged = self.nodes.nodeid("Handshake", "ResultAcknowledged")
        for write, status in zip(event.request_params.NodesToWrite, event.response_params or []):
            name = write.NodeId.to_string()
            if not status.is_good():
                self.health.count_rejected(f"refused a client write to {name}: {status.name}")
                continue
            value = write.Value.Value.Value if write.Value is not None and write.Value.Value is not None else None
            if write.NodeId == part_present:
                if value is True:
                    await self._request_part()
                else:
                    with self._cv:
                        self._part_requested = False  # the PLC withdrew the part before the line took it
            elif write.NodeId == acknowledged and value is True:
                if not await self._acknowledge():
                    self.health.count_rejected("ResultAcknowledged := true with no result waiting: reset to false")
                    await self._write([(("Handshake", "ResultAcknowledged"), ua.Variant(False, ua.VariantType.Boolean))])

    async def _method_start(self, parent: ua.NodeId, *args: Any) -> Any:
        if args:
            self.health.count_rejected(f"Start() called with {len(args)} argument(s): it takes none")
            return ua.StatusCode(ua.StatusCodes.BadTooManyArguments)
        with self._cv:
            refused = ("the line is in Error" if self._error_state else
                       "a part is already requested" if self._part_requested else "")
        if refused:
            self.health.count_rejected(f"Start() refused: {refused}")
            return ua.StatusCode(ua.StatusCodes.BadInvalidState)
        await self._request_part()
        await self._write([(("Handshake", "PartPresent"), ua.Variant(True, ua.VariantType.Boolean))])
        return []

    async def _method_acknowledge(self, parent: ua.NodeId, *args: Any) -> Any:
        if args:
            self.health.count_rejected(f"Acknowledge() called with {len(args)} argument(s): it takes none")
            return ua.StatusCode(ua.StatusCodes.BadTooManyArguments)
        if not await self._acknowledge():
            self.health.count_rejected("Acknowledge() refused: no result is waiting")
            return ua.StatusCode(ua.StatusCodes.BadInvalidState)
        return []
