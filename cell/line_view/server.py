"""``cell inspect --serve``: the live line page's local HTTP server, on :mod:`cell.local_http`'s safety rules
(local bind unless ``--allow-remote``, files only from its static folder, Host checks), shared with the
labelling app. Read-only: it answers GETs only.

Routes: ``/`` and ``/static/*`` (the page: no external assets, no build step), ``/api/line`` (the
:meth:`~cell.line_view.state.LineViewSink.snapshot` JSON, polled by the page) and ``/api/last/picture.png``
(the last part's picture from the store).
"""
from __future__ import annotations

from pathlib import Path

from cell.line_view.state import LineViewSink
from cell.local_http import ApiError, LocalHTTPServer, LocalRequestHandler, Route

STATIC_DIR = Path(__file__).resolve().parent / "static"
WHAT = "the live line page"


def _picture(view: LineViewSink) -> tuple[str, bytes]:
    path = view.picture_path()
    if path is None:
        raise ApiError(404, "the last part has no picture")
    return "image/png", path.read_bytes()


class _Handler(LocalRequestHandler):
    server: "LineViewServer"
    server_version = "cell-line/1"
    static_dir = STATIC_DIR

    def dispatch(self, method: str, path: str) -> None:
        if method != "GET":
            self.send_error_json(405, f"method {method} not allowed: the live line page is read-only", close=True)
        elif path.startswith("/api/"):
            self.answer_api(self.server.routes, method, path)
        else:
            self.serve_static(path)


class LineViewServer(LocalHTTPServer):
    """The live page of one :class:`LineViewSink`; ``url`` is where the browser goes."""

    def __init__(self, view: LineViewSink, host: str = "127.0.0.1", port: int = 0, *, allow_remote: bool = False,
                 verbose: bool = False) -> None:
        self.view = view
        self.routes = [
            Route("GET", r"/api/line", lambda body: view.snapshot()),
            Route("GET", r"/api/last/picture\.png", lambda body: _picture(view)),
        ]
        super().__init__(_Handler, host, port, allow_remote=allow_remote, verbose=verbose, what=WHAT)

    def start_background(self, name: str = "line-view-http") -> "LineViewServer":
        super().start_background(name)
        return self
