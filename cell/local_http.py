"""The safety rules every local web app of the cell shares (the labelling app, the live line page).

Both are served by the standard library's ``http.server`` (one thread per request) and have no
authentication, so (each rule tested):

- they bind to a loopback address unless ``allow_remote`` is given (:func:`check_bind_host`);
- only files inside the app's own static folder are served (:meth:`LocalRequestHandler.serve_static`): a
  path that leaves it is refused (403), unknown paths are 404;
- request bodies must declare their size and stay under :data:`MAX_BODY_BYTES` (411 / 413), be JSON (415
  otherwise; this also forces a CORS preflight, so other web sites cannot post) and parse to an object
  (400 with the parser's reason; a body nested deeper than :data:`MAX_JSON_DEPTH`, or too deep for the
  parser itself, is 400 too) (:meth:`LocalRequestHandler.read_json_body`);
- a bind to a non-loopback address, allowed with ``allow_remote``, gets a warning line to print
  (:func:`remote_bind_warning`): the app has no authentication;
- while bound to loopback, a request whose ``Host`` is not a loopback name is refused (DNS rebinding), and
  a POST from another origin is refused;
- PUT and DELETE are 405; an idle connection is closed after :attr:`LocalRequestHandler.timeout` seconds.

An app subclasses :class:`LocalRequestHandler` (its ``dispatch(method, path)``) and :class:`LocalHTTPServer`.
"""
from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import unquote, urlsplit

from cell.errors import CellError

MAX_BODY_BYTES = 2 * 1024 * 1024
#: Deepest nesting of arrays and objects a JSON request body may have (the apps' bodies need 3).
MAX_JSON_DEPTH = 32
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
                 ".ico": "image/x-icon", ".json": "application/json"}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


class LocalServerError(CellError):
    """A local web app cannot start: non-local bind without permission, port in use, bad host."""


class ApiError(Exception):
    """A request the app refuses: ``status`` (HTTP code) and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message


class Route:
    """One API route: ``method``, a regex ``pattern`` matched against the whole path, and
    ``handler(body, *groups)`` returning a JSON-able object or a ``(content_type, bytes)`` pair."""

    def __init__(self, method: str, pattern: str, handler: Callable[..., Any]) -> None:
        self.method = method
        self.regex = re.compile("^" + pattern + "$")
        self.handler = handler


def is_loopback_host(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address (127.0.0.0/8, ::1)."""
    name = host.strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except socket.gaierror:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_bind_host(host: str, allow_remote: bool, what: str = "this app") -> None:
    """Refuse a non-loopback bind address unless ``allow_remote`` (raises :class:`LocalServerError`).

    ``what`` names the service in the message (``the labelling app``, ``the live line page``, ...)."""
    if not host:
        raise LocalServerError("--host must not be empty (use 127.0.0.1)")
    if not is_loopback_host(host) and not allow_remote:
        raise LocalServerError(
            f"refusing to bind to non-local address {host!r}: {what} has no authentication; "
            "pass --allow-remote to expose it on the network"
        )


def remote_bind_warning(host: str, allow_remote: bool, what: str = "this app") -> Optional[str]:
    """The warning to print when ``host`` is not a loopback address (a bind ``allow_remote`` permitted),
    or None for a local bind. ``0.0.0.0`` / ``::`` are called out as every interface."""
    if is_loopback_host(host):
        return None
    name = host.strip("[]")
    where = "on every network interface" if name in ("0.0.0.0", "::", "") else f"on {host}"
    return (f"warning: {what} is reachable {where} without authentication: anyone who can reach this "
            "machine can read and change the data it serves")


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when the parsed JSON ``value`` nests lists/dicts deeper than ``limit`` (iterative walk, so a
    deep value cannot exhaust the recursion of the code that handles it later)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (list, dict)))
    return False


class LocalRequestHandler(BaseHTTPRequestHandler):
    """Plumbing and safety checks of a local app's requests; subclasses implement :meth:`dispatch`."""

    server: "LocalHTTPServer"
    protocol_version = "HTTP/1.1"
    server_version = "cell-local/1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stalls
    timeout = 60  # seconds: an idle or stalled connection is closed, its thread freed
    #: The app's static folder (resolved); ``/`` serves its ``index.html``, ``/static/<file>`` its files.
    static_dir: Path

    # --- plumbing -----------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def send_bytes(self, status: int, content_type: str, data: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy",
                             "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_json(self, status: int, payload: Any, close: bool = False) -> None:
        self.send_bytes(status, "application/json", json.dumps(payload, allow_nan=False).encode("utf-8"), close=close)

    def send_error_json(self, status: int, message: str, close: bool = False) -> None:
        self.send_json(status, {"error": message, "status": status}, close=close)

    def host_allowed(self) -> bool:
        """False for a ``Host`` that is not a loopback name while bound to loopback (DNS rebinding)."""
        if self.server.allow_remote:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        return name.lower() in _LOOPBACK_NAMES or name.startswith("127.")

    def origin_allowed(self) -> bool:
        """False for a request sent by a page of another origin while bound to loopback."""
        origin = self.headers.get("Origin")
        return (not origin or self.server.allow_remote
                or urlsplit(origin).hostname in ("localhost", "127.0.0.1", "::1"))

    # --- methods ------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._checked_dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._checked_dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._checked_dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self.send_error_json(405, "method PUT not allowed", close=True)

    def do_DELETE(self) -> None:  # noqa: N802
        self.send_error_json(405, "method DELETE not allowed", close=True)

    def _checked_dispatch(self, method: str) -> None:
        if not self.host_allowed():
            self.send_error_json(403, f"Host {self.headers.get('Host')!r} is not a local name", close=True)
            return
        self.dispatch(method, urlsplit(self.path).path)

    def dispatch(self, method: str, path: str) -> None:
        """Answer ``method`` (GET for HEAD too) on ``path`` (no query); the Host check has passed."""
        raise NotImplementedError

    def answer_api(self, routes: list[Route], method: str, path: str) -> None:
        """Run the route matching ``method`` and ``path``: 404 for an unknown path, 405 for a known path with
        another method, the handler's :class:`ApiError` as its status, any other exception as 500 (a bug,
        reported with :meth:`LocalHTTPServer.report_bug`). A POST's body must pass :meth:`read_json_body`
        and come from a local page."""
        body: dict[str, Any] = {}
        if method == "POST":
            if not self.origin_allowed():
                self.send_error_json(403, f"cross-origin request from {self.headers.get('Origin')!r} refused",
                                     close=True)
                return
            parsed = self.read_json_body()
            if parsed is None:
                return
            body = parsed
        matched_path = False
        for route in routes:
            match = route.regex.match(path)
            if not match:
                continue
            matched_path = True
            if route.method != method:
                continue
            try:
                result = route.handler(body, *match.groups())
                if not isinstance(result, tuple):  # serialised here: a NaN in an answer is a bug, reported as 500
                    result = ("application/json", json.dumps(result, allow_nan=False).encode("utf-8"))
            except ApiError as exc:
                self.send_error_json(exc.status, exc.message)
                return
            except Exception as exc:  # noqa: BLE001 - a bug: report it, keep serving
                self.server.report_bug(exc)
                self.send_error_json(500, f"internal error: {type(exc).__name__}: {exc}")
                return
            self.send_bytes(200, result[0], result[1])
            return
        if matched_path:
            self.send_error_json(405, f"method {method} not allowed on {path}")
        else:
            self.send_error_json(404, f"unknown API path {path}")

    # --- static files and bodies --------------------------------------------------------------------
    def serve_static(self, raw_path: str) -> None:
        """``/`` or ``/index.html`` -> the static folder's index.html; ``/static/<rel>`` -> that file."""
        path = unquote(raw_path)
        if path in ("/", "/index.html"):
            rel = "index.html"
        elif path.startswith("/static/"):
            rel = path[len("/static/"):]
        else:
            self.send_error_json(404, f"not found: {raw_path}")
            return
        parts = rel.replace("\\", "/").split("/")
        if "\x00" in rel or any(p in ("..", "") for p in parts) or rel.startswith("/"):
            self.send_error_json(403, f"path {raw_path!r} leaves the served folder")
            return
        target = (self.static_dir / rel).resolve()
        if not target.is_relative_to(self.static_dir):
            self.send_error_json(403, f"path {raw_path!r} leaves the served folder")
            return
        if not target.is_file():
            self.send_error_json(404, f"not found: {raw_path}")
            return
        content_type = CONTENT_TYPES.get(target.suffix.lower(), "application/octet-stream")
        self.send_bytes(200, content_type, target.read_bytes())

    def read_json_body(self) -> Optional[dict[str, Any]]:
        """The request's JSON object, or None after answering the error (411, 400, 413, 415)."""
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.send_error_json(411, "chunked request bodies are not accepted: send Content-Length", close=True)
            return None
        if length_text is None:
            self.send_error_json(411, "a POST needs a Content-Length header", close=True)
            return None
        try:
            length = int(length_text)
        except ValueError:
            self.send_error_json(400, f"Content-Length {length_text!r} is not an integer", close=True)
            return None
        if length < 0:
            self.send_error_json(400, f"Content-Length {length} is negative", close=True)
            return None
        if length > MAX_BODY_BYTES:
            self.send_error_json(
                413, f"request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes", close=True)
            return None
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        raw = self.rfile.read(length) if length else b""
        if content_type != "application/json":
            self.send_error_json(415, f"request body must be application/json, got {content_type or 'no Content-Type'!r}")
            return None
        if not raw:
            return {}
        try:
            text = raw.decode("utf-8")
            body = json.loads(text)  # too deep for the parser: RecursionError, answered below
        except UnicodeDecodeError as exc:
            self.send_error_json(400, f"request body is not UTF-8: {exc.reason} at byte {exc.start}")
            return None
        except json.JSONDecodeError as exc:
            self.send_error_json(400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
            return None
        except (RecursionError, ValueError) as exc:  # e.g. a huge integer literal (int max str digits)
            self.send_error_json(400, f"request body cannot be parsed: {type(exc).__name__}: {str(exc)[:200]}")
            return None
        if not isinstance(body, dict):
            self.send_error_json(400, f"request body must be a JSON object, got {type(body).__name__}")
            return None
        if text.count("[") + text.count("{") > MAX_JSON_DEPTH and json_depth_exceeds(body, MAX_JSON_DEPTH):
            self.send_error_json(400, f"request body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels")
            return None
        return body


class LocalHTTPServer(ThreadingHTTPServer):
    """A local app's HTTP server: refuses a non-local bind without ``allow_remote``; ``url`` is where the
    browser should go. ``what`` names the app in error messages."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type[LocalRequestHandler], host: str = "127.0.0.1", port: int = 0, *,
                 allow_remote: bool = False, verbose: bool = False, what: str = "the app") -> None:
        check_bind_host(host, allow_remote, what)
        self.allow_remote = allow_remote
        self.verbose = verbose
        self.what = what
        self.bugs: list[BaseException] = []
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host.strip("[]"), int(port)), handler)
        except OSError as exc:
            raise LocalServerError(f"{what}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._thread: Optional[threading.Thread] = None
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    # Open connections are tracked so that stop() also ends kept-alive ones (HTTP/1.1): their handler
    # threads would otherwise go on answering after the server was stopped.
    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        with self._connections_lock:
            self._connections.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def report_bug(self, exc: BaseException) -> None:
        self.bugs.append(exc)
        traceback.print_exception(exc)

    def start_background(self, name: str = "local-http") -> "LocalHTTPServer":
        """Serve in a daemon thread; stop with :meth:`stop`."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=name)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (after :meth:`start_background`), close the socket and every open connection."""
        if self._thread is not None:
            self.shutdown()
        self.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its peer
        if self._thread is not None:
            self._thread.join(timeout=5)
