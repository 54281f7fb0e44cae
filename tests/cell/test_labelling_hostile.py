"""The labelling server against a hostile pass (issue 17, items 2, 4 and 15): a dataset whose manifest points
out of it, a read-only dataset, absurd capture ids, a 200k-deep JSON body, prefetching unknown ids, a brush
stroke entirely outside the image, and a remote bind. Each answer is a 4xx (or a documented 200 "unchanged"),
never a traceback, and nothing outside the dataset is read, written or deleted."""
from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from acquisition.store import CaptureStore
from cell.labelling.api import LabellingApp
from cell.labelling.server import LabellingHTTPServer
from cell.local_http import MAX_JSON_DEPTH, remote_bind_warning
from tests.cell.test_labelling_server import GEOMETRY, FakeScores, ids, request, served  # noqa: F401 - fixture

HUGE_ID = "99999999999999999999"


def _tree(root: Path) -> dict[str, bytes]:
    """Every file of the dataset with its content, but SQLite's shared-memory index and an empty write-ahead
    log (a reader in a writable folder may create both; neither holds data)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and not p.stat().st_size)}


# --- item 15 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, path", [
    ("GET", "/api/captures/{id}/image.png"), ("GET", "/api/captures/{id}/superpixels.png"),
    ("GET", "/api/captures/{id}/mask"), ("GET", "/api/captures/{id}/heatmap.png"),
    ("GET", "/api/captures/{id}/prediction"), ("POST", "/api/captures/{id}/edit"),
    ("POST", "/api/captures/{id}/carry"), ("POST", "/api/captures/{id}/proposal/discard"),
])
def test_a_capture_id_beyond_64_bits_is_404_not_500(served, method, path):
    server, _ = served
    body = {"op": "brush", "base_revision": 0, "points": [[1, 1]], "radius": 2} if method == "POST" else None
    status, payload = request(server, method, path.format(id=HUGE_ID), body)
    assert status == 404 and f"unknown capture {HUGE_ID}" in payload["error"], payload
    assert server.bugs == []


@pytest.mark.parametrize("depth", [200_000, MAX_JSON_DEPTH + 1])
def test_a_deeply_nested_json_body_is_400_and_the_server_keeps_serving(served, depth):
    server, store = served
    cid = ids(store, "p1")["a"]
    raw = ('{"op": ' + "[" * depth + "]" * depth + "}").encode()
    status, payload = request(server, "POST", f"/api/captures/{cid}/edit", raw=raw)
    assert status == 400, payload
    assert "deeper than" in payload["error"] or "RecursionError" in payload["error"]
    assert server.bugs == []
    assert request(server, "GET", "/api/index")[0] == 200


def test_a_body_at_the_depth_limit_is_parsed(served):
    server, store = served
    cid = ids(store, "p1")["a"]
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    status, payload = request(server, "POST", f"/api/captures/{cid}/edit", raw=f'{{"op": {nested}}}'.encode())
    assert status == 400 and "'op' string" in payload["error"]  # reached the app: the depth was allowed


def test_prefetch_of_unknown_ids_is_404_naming_the_id(served):
    server, store = served
    known = ids(store, "p1")["a"]
    for bad in (12345, int(HUGE_ID), 0, -1):
        status, payload = request(server, "POST", "/api/prefetch", {"ids": [known, bad]})
        assert status == 404 and f"unknown capture {bad}" in payload["error"], payload
    status, payload = request(server, "POST", "/api/prefetch", {"ids": [known]})
    assert status == 200 and payload == {"queued": 1}
    assert server.bugs == []


def _brush(server, cid, base, points, radius=4, op="brush"):
    return request(server, "POST", f"/api/captures/{cid}/edit",
                   {"op": op, "base_revision": base, "points": points, "radius": radius})


def test_an_edit_that_changes_nothing_stores_no_revision(served):
    server, store = served
    cid = ids(store, "p1")["a"]
    root = Path(store.root)
    before = _tree(root)
    outside = [[-100, -100], [-40, -90], [-60, -20], [500, -50]]  # the stroke never comes within 4 px
    status, reply = _brush(server, cid, 0, outside)
    assert status == 200 and reply["changed"] is False and reply["revision"] == 0 and reply["patch"] is None
    status, reply = _brush(server, cid, 0, [[10, 10]], op="erase")  # erasing nothing
    assert status == 200 and reply["changed"] is False and reply["revision"] == 0
    assert store.mask_info(cid) is None and _tree(root) == before
    status, reply = _brush(server, cid, 0, [[20, 20]])
    assert status == 200 and reply["changed"] is True and reply["revision"] == 1
    after_first = _tree(root)
    status, reply = _brush(server, cid, 1, outside)
    assert status == 200 and reply["changed"] is False and reply["revision"] == 1 and reply["area_px"] > 0
    status, reply = _brush(server, cid, 1, [[20, 20]])  # painting pixels that already have that type
    assert status == 200 and reply["changed"] is False and reply["revision"] == 1
    assert store.mask_info(cid).revision == 1 and _tree(root) == after_first
    # "clear" on a pose without a mask still records an empty mask: "looked at, no defect here"
    other = ids(store, "p1")["b"]
    status, reply = request(server, "POST", f"/api/captures/{other}/edit", {"op": "clear", "base_revision": 0})
    assert status == 200 and reply["revision"] == 1 and store.mask_info(other).area_px == 0


# --- item 2 through the server -----------------------------------------------------------------------------
def _tamper(root: Path, sql: str, params: tuple) -> None:
    conn = sqlite3.connect(root / "manifest.sqlite")
    with conn:
        conn.execute(sql, params)
    conn.close()


@pytest.fixture()
def hostile(tmp_path):
    """A dataset of two captures, the first with a mask; files outside it that must stay untouched."""
    root = tmp_path / "ds"
    with CaptureStore(root, create=True) as store:
        store.start_campaign("c1", {})
        from tests.cell.test_labelling_server import _frame, _pose

        mask = np.zeros((48, 64), bool)
        mask[10:20, 10:20] = True
        first = store.add_capture("c1", "p1", "a", _frame(1), _pose(0), _pose(0), [0.0] * 6, {}, mask=mask,
                                  defect_type="scratch", mask_source="human")
        store.add_capture("c1", "p1", "b", _frame(2), _pose(0.01), _pose(0.01), [0.0] * 6, {})
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "outside.png"
    shutil.copy(root / "images" / "c1" / "p1" / "b.png", secret)
    secret.write_bytes(secret.read_bytes() + b"SECRET")  # still decodes as a PNG, recognisable in a reply
    victim = outside / "victim_mask.png"
    shutil.copy(root / first.image_relpath.replace("images", "masks").replace("a.png", "a.r1.png"), victim)

    def serve(read_only: bool = False):
        store = CaptureStore(root, read_only=read_only)
        app = LabellingApp(store, geometry=GEOMETRY, superpixel_size_px=8)
        return LabellingHTTPServer(app, "127.0.0.1", 0).start_background(), store

    return root, first.id, outside, secret, victim, serve


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_the_server_never_serves_an_image_from_outside_the_dataset(hostile, how):
    root, cid, outside, secret, _, serve = hostile
    if how == "dotdot":
        _tamper(root, "UPDATE captures SET image_relpath = ? WHERE id = ?", (os.path.relpath(secret, root), cid))
    elif how == "absolute":
        _tamper(root, "UPDATE captures SET image_relpath = ? WHERE id = ?", (str(secret), cid))
    else:
        image = root / "images" / "c1" / "p1" / "a.png"
        image.unlink()
        image.symlink_to(secret)
    server, store = serve()
    try:
        for path in (f"/api/captures/{cid}/image.png", f"/api/captures/{cid}/superpixels.png"):
            status, payload = request(server, "GET", path)
            assert status == 500 and isinstance(payload, dict) and "leaves the store" in payload["error"], path
        status, payload = request(server, "POST", f"/api/captures/{cid}/edit",
                                  {"op": "flood", "base_revision": 1, "seed": [5, 5], "tolerance": 3})
        assert status == 500 and "leaves the store" in payload["error"]
        assert server.bugs == []  # a refused file is an answered error, not a crash
    finally:
        server.stop()
        store.close()


def test_a_brush_edit_never_deletes_a_mask_file_outside_the_dataset(hostile):
    root, cid, outside, _, victim, serve = hostile
    content = victim.read_bytes()
    _tamper(root, "UPDATE masks SET relpath = ? WHERE capture_id = ?", (os.path.relpath(victim, root), cid))
    server, store = serve()
    try:
        status, payload = request(server, "GET", f"/api/captures/{cid}/mask")
        assert status == 500 and "leaves the store" in payload["error"]
        status, payload = _brush(server, cid, 1, [[30, 30]])
        assert status == 500 and "leaves the store" in payload["error"]
        status, payload = request(server, "POST", "/api/parts/p1/label", {"label": "good", "clear_masks": True})
        assert status == 409 and "leaves the store" in payload["error"]
        assert store.mask_info(cid).revision == 1 and server.bugs == []
    finally:
        server.stop()
        store.close()
    assert victim.read_bytes() == content


def test_settings_of_the_app_never_follow_a_symlink_out(hostile):
    root, _, outside, _, _, serve = hostile
    (root / "labelling").symlink_to(outside, target_is_directory=True)
    server, store = serve()
    try:
        status, payload = request(server, "POST", "/api/defect_types", {"name": "crack"})
        assert status == 500 and "leaves the store" in payload["error"]
        assert request(server, "GET", "/api/index")[0] == 200
    finally:
        server.stop()
        store.close()
    assert sorted(p.name for p in outside.iterdir()) == ["outside.png", "victim_mask.png"]


# --- item 4 through the server -----------------------------------------------------------------------------
def test_a_read_only_dataset_is_browsed_and_every_change_is_403(hostile):
    root, cid, _, _, _, serve = hostile
    before = _tree(root)
    server, store = serve(read_only=True)
    try:
        status, index = request(server, "GET", "/api/index")
        assert status == 200 and index["read_only"] is True and len(index["captures"]) == 2
        assert request(server, "GET", f"/api/captures/{cid}/image.png")[0] == 200
        status, mask = request(server, "GET", f"/api/captures/{cid}/mask")
        assert status == 200 and mask["revision"] == 1 and mask["area_px"] == 100
        for path, body in ((f"/api/captures/{cid}/edit", {"op": "brush", "base_revision": 1, "points": [[30, 30]],
                                                         "radius": 3}),
                           ("/api/parts/p1/label", {"label": "good", "clear_masks": True}),
                           ("/api/defect_types", {"name": "crack"})):
            status, payload = request(server, "POST", path, body)
            assert status == 403 and "read-only" in payload["error"], path
        assert server.bugs == []
    finally:
        server.stop()
        store.close()
    assert _tree(root) == before


def test_cell_label_read_only_flag_opens_the_store_read_only(hostile, monkeypatch, capsys):
    from cell.cli import cli, main
    from cell.commands import label

    root = hostile[0]
    if "label" not in cli.commands:
        cli.add_command(label.command)
    opened = {}

    def fake_serve(self, *args, **kwargs):
        opened["read_only"] = self.app.store.read_only
        raise KeyboardInterrupt

    monkeypatch.setattr(LabellingHTTPServer, "serve_forever", fake_serve)
    assert main(["label", str(root), "--port", "0", "--no-browser", "--read-only"]) == 0
    assert opened == {"read_only": True}


# --- the remote bind warning ------------------------------------------------------------------------------
def test_allow_remote_on_every_interface_prints_a_warning(hostile, monkeypatch, capsys):
    from cell.cli import cli, main
    from cell.commands import label

    root = hostile[0]
    if "label" not in cli.commands:
        cli.add_command(label.command)
    monkeypatch.setattr(LabellingHTTPServer, "serve_forever", lambda self, *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["label", str(root), "--host", "0.0.0.0", "--allow-remote", "--port", "0", "--no-browser"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "every network interface" in lines[0] and "without authentication" in lines[0]
    assert main(["label", str(root), "--port", "0", "--no-browser"]) == 0
    assert "warning:" not in capsys.readouterr().err  # a local bind says nothing


def test_remote_bind_warning_names_the_address():
    assert remote_bind_warning("127.0.0.1", False) is None and remote_bind_warning("localhost", True) is None
    assert "every network interface" in remote_bind_warning("::", True, "the labelling app")
    assert "on 192.0.2.7" in remote_bind_warning("192.0.2.7", True, "the labelling app")


def test_cell_label_on_a_read_only_mount_opens_it_read_only_by_itself(hostile):
    import sys
    import textwrap

    from tests.acquisition.test_store_hostile import read_only_mount_runner

    root = hostile[0]
    with CaptureStore(root):
        pass  # a clean close: no -wal/-shm left, as on a copied share
    runner = read_only_mount_runner(root)
    if isinstance(runner, str):
        pytest.skip(runner)
    code = textwrap.dedent(f"""
        import sys
        from cell.cli import main
        from cell.labelling.server import LabellingHTTPServer

        def serve(self, *args, **kwargs):
            print("read_only", self.app.store.read_only, len(self.app.index()["captures"]))
            raise KeyboardInterrupt

        LabellingHTTPServer.serve_forever = serve
        sys.exit(main(["label", {str(root)!r}, "--port", "0", "--no-browser"]))
    """)
    result = runner([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert "read_only True 2" in result.stdout
    assert "not writable: opened read-only" in result.stderr


def test_a_malformed_manifest_row_is_a_one_line_500_not_a_server_bug(hostile):
    root, cid, _, _, _, serve = hostile
    _tamper(root, "UPDATE captures SET actual_pose = 'not json' WHERE id = ?", (cid,))
    server, store = serve()
    try:
        for method, path in (("GET", "/api/index"), ("GET", f"/api/captures/{cid}/mask")):
            status, payload = request(server, method, path)
            assert status == 500 and "is damaged" in payload["error"] and "\n" not in payload["error"], path
        assert server.bugs == []
    finally:
        server.stop()
        store.close()
