"""The labelling app's local HTTP server (standard library ``http.server``, one thread per request).

Safety rules (each tested):
- it binds to a loopback address unless ``allow_remote`` is given (:func:`check_bind_host`);
- only the client's own static files and the dataset's captures (by capture id, through the store) are
  served: any path that leaves the static folder is refused (403), unknown paths are 404;
- request bodies must declare their size and stay under :data:`MAX_BODY_BYTES` (411 / 413), be JSON
  (415 otherwise; this also forces a CORS preflight, so other web sites cannot post) and parse to an
  object (400 with the parser's reason);
- while bound to loopback, a request whose ``Host`` is not a loopback name is refused (DNS rebinding).
"""
from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from cell.errors import CellError
from cell.labelling.api import ApiError, LabellingApp

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 2 * 1024 * 1024
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
                  ".ico": "image/x-icon"}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


class LabellingServerError(CellError):
    """The server cannot start: non-local bind without permission, port in use, bad host."""


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


def check_bind_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback bind address unless ``allow_remote`` (raises LabellingServerError)."""
    if not host:
        raise LabellingServerError("--host must not be empty (use 127.0.0.1)")
    if not is_loopback_host(host) and not allow_remote:
        raise LabellingServerError(
            f"refusing to bind to non-local address {host!r}: the labelling app has no authentication; "
            "pass --allow-remote to expose it on the network"
        )


class _Route:
    def __init__(self, method: str, pattern: str, handler: Callable[..., Any]) -> None:
        self.method = method
        self.regex = re.compile("^" + pattern + "$")
        self.handler = handler


def _routes(app: LabellingApp) -> list[_Route]:
    def png(data: bytes) -> tuple[str, bytes]:
        return "image/png", data

    return [
        _Route("GET", r"/api/index", lambda body: app.index()),
        _Route("GET", r"/api/captures/(\d+)/image\.png", lambda body, cid: png(app.image_png(cid))),
        _Route("GET", r"/api/captures/(\d+)/superpixels\.png", lambda body, cid: png(app.superpixels_png(cid))),
        _Route("GET", r"/api/captures/(\d+)/mask", lambda body, cid: app.mask_state(cid)),
        _Route("POST", r"/api/captures/(\d+)/edit", lambda body, cid: app.edit(cid, body)),
        _Route("POST", r"/api/captures/(\d+)/carry", lambda body, cid: app.carry(cid, body)),
        _Route("POST", r"/api/captures/(\d+)/proposal/discard", lambda body, cid: app.discard_proposal(cid)),
        _Route("GET", r"/api/captures/(\d+)/heatmap\.png", lambda body, cid: png(app.heatmap_png(cid))),
        _Route("GET", r"/api/captures/(\d+)/prediction", lambda body, cid: app.prediction(cid)),
        _Route("POST", r"/api/parts/([A-Za-z0-9][A-Za-z0-9_.\-]{0,127})/label",
               lambda body, pid: app.set_part_label(pid, body)),
        _Route("POST", r"/api/defect_types", lambda body: app.add_defect_type(body.get("name"))),
        _Route("POST", r"/api/prefetch", lambda body: _prefetch(app, body)),
        _Route("POST", r"/api/review/start", lambda body: app.start_review()),
        _Route("GET", r"/api/review", lambda body: app.review_status()),
    ]


def _prefetch(app: LabellingApp, body: dict[str, Any]) -> dict[str, Any]:
    ids = body.get("ids")
    if not isinstance(ids, list) or len(ids) > 8 or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ApiError(400, "'ids' must be a list of at most 8 capture ids")
    app.prefetch(ids)
    return {"queued": len(ids)}


class _Handler(BaseHTTPRequestHandler):
    server: "LabellingHTTPServer"
    protocol_version = "HTTP/1.1"
    server_version = "cell-label/1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stalls
    timeout = 60  # seconds: an idle or stalled connection is closed, its thread freed

    # --- plumbing -----------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, content_type: str, data: bytes, close: bool = False) -> None:
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

    def _json(self, status: int, payload: Any, close: bool = False) -> None:
        self._send(status, "application/json", json.dumps(payload).encode("utf-8"), close=close)

    def _error(self, status: int, message: str, close: bool = False) -> None:
        self._json(status, {"error": message, "status": status}, close=close)

    def _host_allowed(self) -> bool:
        if self.server.allow_remote:
            return True
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        return name.lower() in _LOOPBACK_NAMES or name.startswith("127.")

    # --- methods ------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._error(405, "method PUT not allowed", close=True)

    def do_DELETE(self) -> None:  # noqa: N802
        self._error(405, "method DELETE not allowed", close=True)

    def _dispatch(self, method: str) -> None:
        if not self._host_allowed():
            self._error(403, f"Host {self.headers.get('Host')!r} is not a local name", close=True)
            return
        path = urlsplit(self.path).path
        if path.startswith("/api/"):
            self._api(method, path)
        elif method == "GET":
            self._static(path)
        else:
            self._error(405, f"method {method} not allowed on {path}", close=True)

    def _static(self, raw_path: str) -> None:
        path = unquote(raw_path)
        if path in ("/", "/index.html"):
            rel = "index.html"
        elif path.startswith("/static/"):
            rel = path[len("/static/"):]
        else:
            self._error(404, f"not found: {raw_path}")
            return
        parts = rel.replace("\\", "/").split("/")
        if "\x00" in rel or any(p in ("..", "") for p in parts) or rel.startswith("/"):
            self._error(403, f"path {raw_path!r} leaves the served folder")
            return
        target = (STATIC_DIR / rel).resolve()
        if not target.is_relative_to(STATIC_DIR):
            self._error(403, f"path {raw_path!r} leaves the served folder")
            return
        if not target.is_file():
            self._error(404, f"not found: {raw_path}")
            return
        content_type = _CONTENT_TYPES.get(target.suffix.lower(), "application/octet-stream")
        self._send(200, content_type, target.read_bytes())

    def _read_body(self) -> dict[str, Any] | None:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._error(411, "chunked request bodies are not accepted: send Content-Length", close=True)
            return None
        if length_text is None:
            self._error(411, "a POST needs a Content-Length header", close=True)
            return None
        try:
            length = int(length_text)
        except ValueError:
            self._error(400, f"Content-Length {length_text!r} is not an integer", close=True)
            return None
        if length < 0:
            self._error(400, f"Content-Length {length} is negative", close=True)
            return None
        if length > MAX_BODY_BYTES:
            self._error(413, f"request body of {length} bytes exceeds the limit of {MAX_BODY_BYTES} bytes", close=True)
            return None
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        raw = self.rfile.read(length) if length else b""
        if content_type != "application/json":
            self._error(415, f"request body must be application/json, got {content_type or 'no Content-Type'!r}")
            return None
        if not raw:
            return {}
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            self._error(400, f"request body is not UTF-8: {exc.reason} at byte {exc.start}")
            return None
        except json.JSONDecodeError as exc:
            self._error(400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
            return None
        if not isinstance(body, dict):
            self._error(400, f"request body must be a JSON object, got {type(body).__name__}")
            return None
        return body

    def _api(self, method: str, path: str) -> None:
        body: dict[str, Any] = {}
        if method == "POST":
            origin = self.headers.get("Origin")
            if origin and not self.server.allow_remote and urlsplit(origin).hostname not in ("localhost", "127.0.0.1", "::1"):
                self._error(403, f"cross-origin request from {origin!r} refused", close=True)
                return
            parsed = self._read_body()
            if parsed is None:
                return
            body = parsed
        matched_path = False
        for route in self.server.routes:
            match = route.regex.match(path)
            if not match:
                continue
            matched_path = True
            if route.method != method:
                continue
            try:
                result = route.handler(body, *match.groups())
            except ApiError as exc:
                self._error(exc.status, exc.message)
                return
            except Exception as exc:  # noqa: BLE001 - a bug: report it, keep serving
                self.server.report_bug(exc)
                self._error(500, f"internal error: {type(exc).__name__}: {exc}")
                return
            if isinstance(result, tuple):
                self._send(200, result[0], result[1])
            else:
                self._json(200, result)
            return
        if matched_path:
            self._error(405, f"method {method} not allowed on {path}")
        else:
            self._error(404, f"unknown API path {path}")


class LabellingHTTPServer(ThreadingHTTPServer):
    """The HTTP server of one :class:`LabellingApp`; ``url`` is where the browser should go."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, app: LabellingApp, host: str = "127.0.0.1", port: int = 0, *,
                 allow_remote: bool = False, verbose: bool = False) -> None:
        check_bind_host(host, allow_remote)
        self.app = app
        self.allow_remote = allow_remote
        self.verbose = verbose
        self.routes = _routes(app)
        self.bugs: list[BaseException] = []
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        try:
            super().__init__((host.strip("[]"), int(port)), _Handler)
        except OSError as exc:
            raise LabellingServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def report_bug(self, exc: BaseException) -> None:
        import traceback

        self.bugs.append(exc)
        traceback.print_exception(exc)

    def start_background(self) -> "LabellingHTTPServer":
        """Serve in a daemon thread (tests, benchmarks); stop with :meth:`stop`."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="labelling-http")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.app.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
