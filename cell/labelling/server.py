"""The labelling app's local HTTP server: the app's routes on :mod:`cell.local_http`'s safe local server.

The safety rules (local bind unless ``allow_remote``, files only from the app's static folder, bounded JSON
request bodies, the Host and Origin checks) are :mod:`cell.local_http`'s, shared with the live line page.
Besides its static files, the app serves the dataset's captures by capture id, through the store only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from acquisition.errors import StoreError
from cell.labelling.api import LabellingApp
from cell.local_http import (
    MAX_BODY_BYTES,
    ApiError,
    LocalHTTPServer,
    LocalRequestHandler,
    LocalServerError,
    Route,
    check_bind_host,
)

__all__ = ["LabellingHTTPServer", "LabellingServerError", "MAX_BODY_BYTES", "STATIC_DIR", "check_bind_host"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
WHAT = "the labelling app"

#: The labelling server's start-up errors are the shared local-server errors (one class, one message style).
LabellingServerError = LocalServerError


def _store_errors(handler: Callable[..., Any]) -> Callable[..., Any]:
    """A route handler whose StoreError (a damaged or tampered dataset: a bad manifest row, a path leaving the
    store, an unreadable file) is answered as a one-line 500, not reported as a bug of the server."""
    def answer(*args: Any) -> Any:
        try:
            return handler(*args)
        except StoreError as exc:
            raise ApiError(500, str(exc)) from None
    return answer


def _routes(app: LabellingApp) -> list[Route]:
    routes = _app_routes(app)
    for route in routes:
        route.handler = _store_errors(route.handler)
    return routes


def _app_routes(app: LabellingApp) -> list[Route]:
    def png(data: bytes) -> tuple[str, bytes]:
        return "image/png", data

    return [
        Route("GET", r"/api/index", lambda body: app.index()),
        Route("GET", r"/api/captures/(\d+)/image\.png", lambda body, cid: png(app.image_png(cid))),
        Route("GET", r"/api/captures/(\d+)/superpixels\.png", lambda body, cid: png(app.superpixels_png(cid))),
        Route("GET", r"/api/captures/(\d+)/mask", lambda body, cid: app.mask_state(cid)),
        Route("POST", r"/api/captures/(\d+)/edit", lambda body, cid: app.edit(cid, body)),
        Route("POST", r"/api/captures/(\d+)/carry", lambda body, cid: app.carry(cid, body)),
        Route("POST", r"/api/captures/(\d+)/proposal/discard", lambda body, cid: app.discard_proposal(cid)),
        Route("GET", r"/api/captures/(\d+)/heatmap\.png", lambda body, cid: png(app.heatmap_png(cid))),
        Route("GET", r"/api/captures/(\d+)/prediction", lambda body, cid: app.prediction(cid)),
        Route("POST", r"/api/parts/([A-Za-z0-9][A-Za-z0-9_.\-]{0,127})/label",
              lambda body, pid: app.set_part_label(pid, body)),
        Route("POST", r"/api/defect_types", lambda body: app.add_defect_type(body.get("name"))),
        Route("POST", r"/api/prefetch", lambda body: _prefetch(app, body)),
        Route("POST", r"/api/review/start", lambda body: app.start_review()),
        Route("GET", r"/api/review", lambda body: app.review_status()),
    ]


def _prefetch(app: LabellingApp, body: dict[str, Any]) -> dict[str, Any]:
    ids = body.get("ids")
    if not isinstance(ids, list) or len(ids) > 8 or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ApiError(400, "'ids' must be a list of at most 8 capture ids")
    app.prefetch(ids)
    return {"queued": len(ids)}


class _Handler(LocalRequestHandler):
    server: "LabellingHTTPServer"
    server_version = "cell-label/1"
    static_dir = STATIC_DIR

    def dispatch(self, method: str, path: str) -> None:
        if path.startswith("/api/"):
            self.answer_api(self.server.routes, method, path)
        elif method == "GET":
            self.serve_static(path)
        else:
            self.send_error_json(405, f"method {method} not allowed on {path}", close=True)


class LabellingHTTPServer(LocalHTTPServer):
    """The HTTP server of one :class:`LabellingApp`; ``url`` is where the browser should go."""

    def __init__(self, app: LabellingApp, host: str = "127.0.0.1", port: int = 0, *,
                 allow_remote: bool = False, verbose: bool = False) -> None:
        self.app = app
        self.routes = _routes(app)
        super().__init__(_Handler, host, port, allow_remote=allow_remote, verbose=verbose, what=WHAT)

    def start_background(self, name: str = "labelling-http") -> "LabellingHTTPServer":
        """Serve in a daemon thread (tests, benchmarks); stop with :meth:`stop`."""
        super().start_background(name)
        return self

    def stop(self) -> None:
        super().stop()
        self.app.close()
