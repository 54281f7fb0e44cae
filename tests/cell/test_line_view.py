"""The live line page's server: the JSON the page polls during a real simulated run, the part picture from
the store, and the shared local-server safety rules (read-only, local bind, Host check, no path outside the
static folder or the store)."""
from __future__ import annotations

import http.client
import json

import pytest

from cell.line_result import LineResult, utc_now
from cell.line_view import LineViewServer, LineViewSink
from cell.local_http import LocalServerError
from cell.signals import LineSignals
from tests.cell.line_fixtures import LineRun


def get(server, path: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type"), data


@pytest.fixture()
def served(tmp_path):
    view = LineViewSink(tmp_path / "store")
    server = LineViewServer(view).start_background()
    yield view, server
    server.stop()


def test_the_page_json_follows_a_real_run_and_serves_the_nok_picture(tmp_path, served):
    view, server = served
    with LineSignals([view]) as signals:
        run = LineRun(tmp_path, signals, parts=2, threshold=-1.0,
                      arm=lambda cell: cell.robot.inject_fault("protective_stop", on_move=6)).start()
        summary = run.join()
    status, ctype, data = get(server, "/api/line")
    assert status == 200 and ctype == "application/json"
    snap = json.loads(data)
    assert snap["status"]["state"] == "Ready" and snap["status"]["counts"] == {"OK": 0, "NOK": 1, "error": 1}
    assert [p["verdict"] for p in snap["recent"]] == ["NOK", "error"] and snap["recent"][1]["score"] is None
    assert snap["last"]["part_id"] == summary.results[1].part_id and snap["last"]["verdict"] == "error"
    assert snap["last"]["has_picture"] is False  # an error part has no heatmap
    assert snap["errors"][0]["message"].startswith(f"{summary.results[1].part_id}: ProtectiveStop")
    assert get(server, "/api/last/picture.png")[0] == 404
    # the NOK part's worst-pose heatmap is what the page shows for it
    view.publish(LineResult(part_id="x", campaign="line", verdict="NOK", reason="r", started_at=utc_now(),
                            finished_at=utc_now(), extra={"worst_pose": summary.results[0].worst_pose,
                                                          "heatmaps": summary.results[0].heatmaps}))
    status, ctype, data = get(server, "/api/last/picture.png")
    assert status == 200 and ctype == "image/png" and data[:8] == b"\x89PNG\r\n\x1a\n"
    expected = [h for h in summary.results[0].heatmaps if f"/{summary.results[0].worst_pose}_" in h][0]
    assert data == (tmp_path / "store" / expected).read_bytes()


def test_a_picture_path_outside_the_store_is_never_served(tmp_path, served):
    view, server = served
    (tmp_path / "secret.png").write_bytes(b"\x89PNG secret")
    for part_map in ("../secret.png", str(tmp_path / "secret.png"), "inspections/../../secret.png"):
        view.publish(LineResult(part_id="x", campaign="c", verdict="NOK", reason="", started_at=utc_now(),
                                finished_at=utc_now(), part_map=part_map))
        assert get(server, "/api/last/picture.png")[0] == 404, part_map
        assert json.loads(get(server, "/api/line")[2])["last"]["has_picture"] is False


def test_the_page_is_read_only_local_and_serves_only_its_own_files(served):
    view, server = served
    status, ctype, data = get(server, "/")
    assert status == 200 and ctype.startswith("text/html") and b"/static/line.js" in data
    assert get(server, "/static/line.js")[0] == 200 and get(server, "/static/line.css")[0] == 200
    assert get(server, "/static/..%2f..%2fline_result.py")[0] in (403, 404)
    assert get(server, "/static/../state.py")[0] in (403, 404)
    assert get(server, "/api/nothing")[0] == 404
    assert get(server, "/api/line", method="POST", body=b"{}", headers={"Content-Type": "application/json",
                                                                       "Content-Length": "2"})[0] == 405
    assert get(server, "/api/line", method="DELETE")[0] == 405
    assert get(server, "/api/line", headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding
    with pytest.raises(LocalServerError, match="the live line page has no authentication.*--allow-remote"):
        LineViewServer(view, "0.0.0.0", 0)


def test_stop_also_ends_kept_alive_connections(tmp_path):
    # HTTP/1.1 keeps connections open; a stopped server must not go on answering on them.
    server = LineViewServer(LineViewSink(tmp_path)).start_background()
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/api/line")
    assert conn.getresponse().read() and conn.sock is not None  # kept alive
    server.stop()
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        conn.request("GET", "/api/line")
        conn.getresponse().read()
    conn.close()
