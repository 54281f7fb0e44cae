"""The labelling server: safety (path traversal, request size, malformed requests, local bind, Host
check), the edit API over a real capture store (autosave, revisions across tabs, undo/redo, part labels,
carry-over proposals) and review mode's disagreement ranking with a fake score provider."""
from __future__ import annotations

import http.client
import json
import time

import numpy as np
import pytest

from acquisition.camera import Frame
from acquisition.store import CaptureStore
from calibration.camera_model import CameraModel
from calibration.transforms import Transform
from cell.labelling import masks as M
from cell.labelling.api import LabellingApp, decode_patch, decode_typed_patch
from cell.labelling.carry import CarryGeometry, carry_labels, carry_mask
from cell.labelling.server import MAX_BODY_BYTES, LabellingHTTPServer, LabellingServerError, check_bind_host

W, H = 64, 48


def _frame(seed: int) -> Frame:
    rng = np.random.default_rng(seed)
    pixels = np.full((H, W), 60, np.uint8)
    pixels[8:40, 10:54] = 170 + rng.integers(0, 10, (32, 44)).astype(np.uint8)
    return Frame(pixels=pixels, frame_id=seed, host_timestamp_s=0.0, device_timestamp_ns=None, exposure_us=1000.0,
                 gain_db=0.0, pixel_format="Mono8", camera_id="test")


def _pose(dx: float) -> list[float]:
    return [0.0 + dx, -0.45, 0.35, np.pi, 0.0, 0.0]  # looking straight down from 0.35 m


GEOMETRY = CarryGeometry(
    camera=CameraModel(W, H, fx=80.0, fy=80.0, cx=(W - 1) / 2, cy=(H - 1) / 2),
    T_flange_cam=Transform.identity(),
    plane_point=np.zeros(3),
    plane_normal=np.array([0.0, 0.0, 1.0]),
    source="test geometry",
)


class FakeScores:
    """Anomaly map = a bright square per capture (known positions), threshold 0.5."""

    name = "fake"
    threshold = 0.5

    def anomaly_map(self, image: np.ndarray) -> np.ndarray:
        amap = np.zeros(image.shape[:2], np.float32)
        key = int(image[0, 0])
        if key == 61:  # the capture whose top-left pixel we marked: a large predicted region
            amap[10:30, 10:40] = 0.9
        return amap


@pytest.fixture()
def served(tmp_path):
    root = tmp_path / "ds"
    with CaptureStore(root, create=True) as store:
        store.start_campaign("c1", {"test": True}, None)
        k = 0
        for part in ("p1", "p2"):
            for i, pose in enumerate(("a", "b", "c")):
                frame = _frame(k)
                if part == "p2" and pose == "b":
                    frame.pixels[0, 0] = 61
                store.add_capture("c1", part, pose, frame, _pose(0.01 * i), _pose(0.01 * i), [0.0] * 6, {})
                k += 1
    store = CaptureStore(root)
    app = LabellingApp(store, geometry=GEOMETRY, score_provider=FakeScores(), superpixel_size_px=8)
    server = LabellingHTTPServer(app, "127.0.0.1", 0).start_background()
    yield server, store
    server.stop()
    store.close()


def request(server, method, path, body=None, headers=None, raw: bytes | None = None):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    hdrs = {"Content-Type": "application/json"} if (body is not None or raw is not None) else {}
    hdrs.update(headers or {})
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    if resp.getheader("Content-Type", "").startswith("application/json"):
        return resp.status, json.loads(payload)
    return resp.status, payload


def ids(store, part):
    return {r.pose_id: r.id for r in store.captures(part_id=part)}


# --- safety -----------------------------------------------------------------------------------------------
def test_index_and_static_files_are_served(served):
    server, _ = served
    status, html = request(server, "GET", "/")
    assert status == 200 and b"app.js" in html
    status, js = request(server, "GET", "/static/app.js")
    assert status == 200 and b"labelling" in js


@pytest.mark.parametrize("path", [
    "/static/../server.py",
    "/static/%2e%2e/server.py",
    "/static/..%2fapi.py",
    "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc/passwd",
    "/static/..\\server.py",
    "/static//etc/passwd",
])
def test_path_traversal_is_refused(served, path):
    server, _ = served
    status, payload = request(server, "GET", path)
    assert status == 403, payload
    assert "leaves the served folder" in payload["error"]


def test_files_outside_the_app_are_never_served(served):
    server, store = served
    for path in ("/manifest.sqlite", "/images/c1/p1/a.png", "/../store.json", "/etc/passwd"):
        status, payload = request(server, "GET", path)
        assert status == 404 and isinstance(payload, dict), path


def test_oversized_body_is_413_without_reading_it(served):
    server, store = served
    cid = ids(store, "p1")["a"]
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.putrequest("POST", f"/api/captures/{cid}/edit")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    conn.endheaders()
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert resp.status == 413 and "exceeds the limit" in body["error"]
    assert request(server, "GET", "/api/index")[0] == 200  # still serving


@pytest.mark.parametrize("raw, status, reason", [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"\xff\xfe", 400, "not UTF-8"),
])
def test_malformed_bodies_get_400_with_a_reason(served, raw, status, reason):
    server, store = served
    cid = ids(store, "p1")["a"]
    got, payload = request(server, "POST", f"/api/captures/{cid}/edit", raw=raw)
    assert got == status and reason in payload["error"]


def test_wrong_content_type_missing_length_and_methods(served):
    server, store = served
    cid = ids(store, "p1")["a"]
    got, payload = request(server, "POST", f"/api/captures/{cid}/edit", raw=b"{}", headers={"Content-Type": "text/plain"})
    assert got == 415
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    conn.putrequest("POST", f"/api/captures/{cid}/edit")
    conn.putheader("Content-Type", "application/json")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 411 and "Content-Length" in json.loads(resp.read())["error"]
    conn.close()
    assert request(server, "GET", f"/api/captures/{cid}/edit")[0] == 405
    assert request(server, "DELETE", "/api/index")[0] == 405
    assert request(server, "GET", "/api/nothing")[0] == 404


def test_bad_edit_parameters_are_400_with_reason(served):
    server, store = served
    cid = ids(store, "p1")["a"]
    cases = [
        ({"op": "brush", "base_revision": 0, "points": [[1, 1]], "radius": -2}, "radius"),
        ({"op": "brush", "base_revision": 0, "points": "x", "radius": 2}, "points"),
        ({"op": "brush", "base_revision": 0, "points": [[1, "a"]], "radius": 2}, "points"),
        ({"op": "explode", "base_revision": 0}, "unknown edit op"),
        ({"op": "brush", "points": [[1, 1]], "radius": 2}, "base_revision"),
        ({"op": "flood", "base_revision": 0, "seed": [500, 1], "tolerance": 3}, "outside"),
        ({"op": "polygon", "base_revision": 0, "points": [[1, 1], [2, 2]]}, "3 vertices"),
        ({"op": "brush", "base_revision": 0, "points": [[1, 1]], "radius": 2, "defect_type": "../x"}, "defect type"),
    ]
    for body, reason in cases:
        status, payload = request(server, "POST", f"/api/captures/{cid}/edit", body)
        assert status == 400 and reason in payload["error"], (body, payload)
    assert request(server, "GET", "/api/captures/9999/mask")[0] == 404
    assert store.get_mask(cid)[2] == 0  # nothing stored by refused edits


def test_non_local_bind_is_refused_unless_allowed():
    with pytest.raises(LabellingServerError, match="--allow-remote"):
        check_bind_host("0.0.0.0", allow_remote=False)
    with pytest.raises(LabellingServerError):
        check_bind_host("8.8.8.8", allow_remote=False)
    check_bind_host("127.0.0.1", allow_remote=False)
    check_bind_host("localhost", allow_remote=False)
    check_bind_host("::1", allow_remote=False)
    check_bind_host("0.0.0.0", allow_remote=True)


def test_cli_refuses_non_local_bind(tmp_path, capsys):
    from cell.cli import cli, main
    from cell.commands import label

    if "label" not in cli.commands:
        cli.add_command(label.command)
    code = main(["label", str(tmp_path), "--host", "0.0.0.0", "--no-browser"])
    assert code == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_foreign_host_header_is_refused(served):
    server, _ = served
    status, payload = request(server, "GET", "/api/index", headers={"Host": "evil.example:80"})
    assert status == 403 and "not a local name" in payload["error"]
    status, _ = request(server, "POST", "/api/defect_types", {"name": "x"}, headers={"Origin": "http://evil.example"})
    assert status == 403


# --- editing through the API --------------------------------------------------------------------------------
def test_brush_erase_undo_redo_are_stored_exactly(served):
    server, store = served
    cid = ids(store, "p1")["a"]
    stroke = {"op": "brush", "base_revision": 0, "points": [[10, 10], [40, 20]], "radius": 3, "defect_type": "hole"}
    status, res = request(server, "POST", f"/api/captures/{cid}/edit", stroke)
    assert status == 200 and res["revision"] == 1 and res["can_undo"]
    expected = M.stroke_footprint((H, W), [[10, 10], [40, 20]], 3)
    mask, dtype, rev = store.get_mask(cid)
    assert rev == 1 and dtype == "hole" and np.array_equal(mask, expected)
    # the reply's patch brings a client's copy to exactly the stored mask
    assert np.array_equal(decode_patch(res["patch"], (H, W)), expected)
    assert store.part_label("p1") == "defective"  # a drawn mask marks the part defective

    status, res = request(server, "POST", f"/api/captures/{cid}/edit",
                          {"op": "erase", "base_revision": 1, "points": [[25, 15]], "radius": 4})
    after_erase = expected & ~M.stroke_footprint((H, W), [[25, 15]], 4)
    assert status == 200 and np.array_equal(store.get_mask(cid)[0], after_erase)

    status, res = request(server, "POST", f"/api/captures/{cid}/edit", {"op": "undo", "base_revision": 2})
    assert status == 200 and res["can_redo"] and np.array_equal(store.get_mask(cid)[0], expected)
    status, res = request(server, "POST", f"/api/captures/{cid}/edit", {"op": "redo", "base_revision": 3})
    assert status == 200 and np.array_equal(store.get_mask(cid)[0], after_erase)
    state = request(server, "GET", f"/api/captures/{cid}/mask")[1]
    assert state["revision"] == 4 and np.array_equal(decode_patch(state["mask"], (H, W)), after_erase)


def test_stale_revision_from_another_tab_is_409_and_changes_nothing(served):
    server, store = served
    cid = ids(store, "p1")["b"]
    tab1 = {"op": "brush", "base_revision": 0, "points": [[20, 20]], "radius": 5}
    assert request(server, "POST", f"/api/captures/{cid}/edit", tab1)[0] == 200
    stored = store.get_mask(cid)[0].copy()
    tab2 = {"op": "brush", "base_revision": 0, "points": [[40, 30]], "radius": 5}  # based on the old revision
    status, payload = request(server, "POST", f"/api/captures/{cid}/edit", tab2)
    assert status == 409 and "changed elsewhere" in payload["error"]
    assert np.array_equal(store.get_mask(cid)[0], stored) and store.get_mask(cid)[2] == 1


def test_superpixel_polygon_and_flood_edits(served):
    server, store = served
    cid = ids(store, "p1")["c"]
    status, png = request(server, "GET", f"/api/captures/{cid}/superpixels.png")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    import cv2

    labels = M.decode_labels_rgb(cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    status, res = request(server, "POST", f"/api/captures/{cid}/edit",
                          {"op": "superpixel", "base_revision": 0, "points": [[30, 20]], "value": "toggle"})
    assert status == 200
    assert np.array_equal(store.get_mask(cid)[0], labels == labels[20, 30]) and labels[20, 30] > 0
    status, res = request(server, "POST", f"/api/captures/{cid}/edit",
                          {"op": "polygon", "base_revision": 1, "points": [[0, 0], [5, 0], [5, 5], [0, 5]], "value": True})
    assert status == 200 and store.get_mask(cid)[0][0:6, 0:6].all()
    status, res = request(server, "POST", f"/api/captures/{cid}/edit",
                          {"op": "flood", "base_revision": 2, "seed": [2, 44], "tolerance": 3, "value": True})
    mask = store.get_mask(cid)[0]
    assert status == 200 and mask[40:48, :].all() and not mask[20, 12]


def test_part_labels_good_needs_clearing_masks(served):
    server, store = served
    cid = ids(store, "p2")["a"]
    request(server, "POST", f"/api/captures/{cid}/edit", {"op": "brush", "base_revision": 0, "points": [[5, 5]], "radius": 2})
    status, payload = request(server, "POST", "/api/parts/p2/label", {"label": "good"})
    assert status == 409 and "masked pose" in payload["error"]
    status, part = request(server, "POST", "/api/parts/p2/label", {"label": "good", "clear_masks": True})
    assert status == 200 and part["label"] == "good" and part["labelled"] and part["n_masked_poses"] == 0
    assert store.get_mask(cid)[0] is None
    assert request(server, "POST", "/api/parts/p2/label", {"label": "fine"})[0] == 400
    assert request(server, "POST", "/api/parts/nope/label", {"label": "good"})[0] == 404
    status, part = request(server, "POST", "/api/parts/p2/label", {"label": "defective"})
    assert status == 200 and not part["labelled"]  # defective needs a masked pose


def test_carry_over_proposals_are_accepted_into_the_store(served):
    server, store = served
    poses = ids(store, "p1")
    src = poses["a"]
    request(server, "POST", f"/api/captures/{src}/edit",
            {"op": "polygon", "base_revision": 0, "points": [[20, 15], [40, 15], [40, 30], [20, 30]]})
    status, res = request(server, "POST", f"/api/captures/{src}/carry", {})
    assert status == 200 and {p["capture_id"] for p in res["proposals"]} == {poses["b"], poses["c"]}
    records = {r.id: r for r in store.captures(part_id="p1")}
    src_mask = store.get_mask(src)[0]
    expected = carry_mask(src_mask, GEOMETRY, records[src].actual_pose, records[poses["c"]].actual_pose)
    # the camera moved 2 cm in x at 0.35 m: the mask moves by fx * 0.02 / 0.35 = 4.6 px
    assert expected.any() and not np.array_equal(expected, src_mask)
    state = request(server, "GET", f"/api/captures/{poses['c']}/mask")[1]
    assert np.array_equal(decode_patch(state["proposal"]["mask"], (H, W)), expected)
    assert store.get_mask(poses["c"])[0] is None  # a proposal is not stored until accepted
    status, res = request(server, "POST", f"/api/captures/{poses['c']}/edit", {"op": "accept_proposal", "base_revision": 0})
    assert status == 200 and np.array_equal(store.get_mask(poses["c"])[0], expected)
    assert request(server, "POST", f"/api/captures/{poses['c']}/edit", {"op": "accept_proposal", "base_revision": 1})[0] == 409


# --- defect types per region -----------------------------------------------------------------------------------
def _edit(server, cid, body):
    status, res = request(server, "POST", f"/api/captures/{cid}/edit", body)
    assert status == 200, res
    return res


def _stored_names(store, cid) -> np.ndarray:
    """The stored type label map read back with numpy, as an (H, W) array of type names ('' = no defect)."""
    labels, types, _ = store.mask_labels(cid)
    assert labels.dtype == np.uint8 and labels.shape == (H, W)
    return np.array([""] + types, dtype=object)[labels]


def test_two_region_types_are_stored_exactly_and_undo_restores_them(served):
    server, store = served
    cid = ids(store, "p1")["a"]
    a_pts, b_pts = [[12, 12], [24, 12]], [[40, 30], [48, 34]]
    region_a = M.stroke_footprint((H, W), a_pts, 3)
    region_b = M.stroke_footprint((H, W), b_pts, 3)
    res = _edit(server, cid, {"op": "brush", "base_revision": 0, "points": a_pts, "radius": 3, "defect_type": "scratch"})
    assert res["types"] == ["scratch"] and res["defect_type"] == "scratch"
    res = _edit(server, cid, {"op": "brush", "base_revision": 1, "points": b_pts, "radius": 3, "defect_type": "crack"})
    assert res["revision"] == 2 and res["types"] == ["scratch", "crack"] and res["defect_type"] == "combined"
    labels, types, rev = store.mask_labels(cid)
    expected = np.zeros((H, W), np.uint8)
    expected[region_a] = 1
    expected[region_b] = 2
    assert (rev, types) == (2, ["scratch", "crack"]) and np.array_equal(labels, expected)
    mask, row_type, _ = store.get_mask(cid)
    assert row_type == "combined" and np.array_equal(mask, region_a | region_b)  # the binary mask is labels > 0
    # the reply's patch holds the changed pixels with their types
    patch = decode_typed_patch(res["patch"], (H, W))
    x, y, w, h = (res["patch"][k] for k in ("x", "y", "w", "h"))
    assert np.array_equal(_stored_names(store, cid)[y:y + h, x:x + w],
                          np.array(("",) + patch.types, dtype=object)[patch.labels][y:y + h, x:x + w])
    before_retype = _stored_names(store, cid)

    # crack painted over the end of the scratch re-types those pixels
    over = M.stroke_footprint((H, W), [[24, 12]], 3)
    _edit(server, cid, {"op": "brush", "base_revision": 2, "points": [[24, 12]], "radius": 3, "defect_type": "crack"})
    names = _stored_names(store, cid)
    assert (names[over] == "crack").all() and (names[region_a & ~over] == "scratch").all()
    assert (names[region_b] == "crack").all() and (names[~(region_a | region_b)] == "").all()
    after_retype = names

    # the eraser clears crack pixels although scratch is selected
    erased = M.stroke_footprint((H, W), [[44, 32]], 6)
    _edit(server, cid, {"op": "erase", "base_revision": 3, "points": [[44, 32]], "radius": 6, "defect_type": "scratch"})
    names = _stored_names(store, cid)
    assert (names[erased] == "").all() and (names[region_b & ~erased] == "crack").all()
    assert np.array_equal(store.get_mask(cid)[0], names != "")

    # undo restores pixels and types, step by step; redo re-applies
    _edit(server, cid, {"op": "undo", "base_revision": 4})
    assert np.array_equal(_stored_names(store, cid), after_retype)
    res = _edit(server, cid, {"op": "undo", "base_revision": 5})
    assert np.array_equal(_stored_names(store, cid), before_retype) and res["types"] == ["scratch", "crack"]
    _edit(server, cid, {"op": "redo", "base_revision": 6})
    assert np.array_equal(_stored_names(store, cid), after_retype)

    # removing every scratch pixel leaves one type: the row type is that type again, no type map file
    res = _edit(server, cid, {"op": "polygon", "base_revision": 7, "points": [[0, 0], [23, 0], [23, 47], [0, 47]],
                              "value": False, "defect_type": "crack"})
    assert res["types"] == ["crack"] and store.get_mask(cid)[1] == "crack"
    assert store.mask_info(cid).types_relpath is None and (_stored_names(store, cid)[:, :24] == "").all()
    state = request(server, "GET", f"/api/captures/{cid}/mask")[1]
    shown = decode_typed_patch(state["mask"], (H, W))
    assert state["types"] == ["crack"]
    assert np.array_equal(np.array(("",) + shown.types, dtype=object)[shown.labels], _stored_names(store, cid))
    # and undo brings the scratch back (the type list had been renumbered meanwhile)
    res = _edit(server, cid, {"op": "undo", "base_revision": 8})
    assert np.array_equal(_stored_names(store, cid), after_retype) and store.get_mask(cid)[1] == "combined"
    assert store.verify().ok


def test_every_paint_tool_uses_the_selected_type(served):
    server, store = served
    cid = ids(store, "p1")["c"]
    square = [[12, 10], [17, 10], [17, 15], [12, 15]]  # on the sheet (rows 8-39, columns 10-53)
    _edit(server, cid, {"op": "polygon", "base_revision": 0, "points": square, "value": True, "defect_type": "hole"})
    _edit(server, cid, {"op": "flood", "base_revision": 1, "seed": [2, 44], "tolerance": 3, "value": True,
                        "defect_type": "stain"})
    status, png = request(server, "GET", f"/api/captures/{cid}/superpixels.png")
    import cv2

    sp = M.decode_labels_rgb(cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    _edit(server, cid, {"op": "superpixel", "base_revision": 2, "points": [[30, 20]], "value": "toggle",
                        "defect_type": "fold"})
    names = _stored_names(store, cid)
    assert (names[10:16, 12:18] == "hole").all() and (names[40:48, :] == "stain").all()  # flood: the dark table
    assert (names[sp == sp[20, 30]] == "fold").all()
    assert store.mask_labels(cid)[1] == ["hole", "stain", "fold"] and store.get_mask(cid)[1] == "combined"
    # a toggle click on a superpixel of another type re-types it; a second click removes it
    _edit(server, cid, {"op": "superpixel", "base_revision": 3, "points": [[30, 20]], "value": "toggle",
                        "defect_type": "hole"})
    assert (_stored_names(store, cid)[sp == sp[20, 30]] == "hole").all()
    _edit(server, cid, {"op": "superpixel", "base_revision": 4, "points": [[30, 20]], "value": "toggle",
                        "defect_type": "hole"})
    assert (_stored_names(store, cid)[sp == sp[20, 30]] == "").all()
    # set_type gives every region one type; reserved names are refused and store nothing
    _edit(server, cid, {"op": "set_type", "base_revision": 5, "defect_type": "dent"})
    assert store.mask_labels(cid)[1] == ["dent"] and store.get_mask(cid)[1] == "dent"
    for name in ("combined", "good"):
        status, payload = request(server, "POST", f"/api/captures/{cid}/edit",
                                  {"op": "brush", "base_revision": 6, "points": [[9, 9]], "radius": 2, "defect_type": name})
        assert status == 400 and "reserved" in payload["error"]
        assert request(server, "POST", "/api/defect_types", {"name": name})[0] == 400
    assert store.get_mask(cid)[2] == 6


def test_carried_mask_keeps_its_region_types(served):
    server, store = served
    poses = ids(store, "p2")
    src, dst = poses["a"], poses["c"]
    _edit(server, src, {"op": "polygon", "base_revision": 0, "points": [[20, 15], [30, 15], [30, 30], [20, 30]],
                        "defect_type": "scratch"})
    _edit(server, src, {"op": "polygon", "base_revision": 1, "points": [[31, 15], [40, 15], [40, 30], [31, 30]],
                        "defect_type": "crack"})
    _edit(server, dst, {"op": "brush", "base_revision": 0, "points": [[5, 40]], "radius": 2, "defect_type": "stain"})
    assert request(server, "POST", f"/api/captures/{src}/carry", {})[0] == 200
    records = {r.id: r for r in store.captures(part_id="p2")}
    labels, types, _ = store.mask_labels(src)
    warped = carry_labels(labels, GEOMETRY, records[src].actual_pose, records[dst].actual_pose)
    assert set(np.unique(warped)) == {0, 1, 2}
    state = request(server, "GET", f"/api/captures/{dst}/mask")[1]
    proposal = decode_typed_patch(state["proposal"]["mask"], (H, W))
    carried_names = np.array([""] + types, dtype=object)[warped]
    assert np.array_equal(np.array(("",) + proposal.types, dtype=object)[proposal.labels], carried_names)
    before = _stored_names(store, dst)
    _edit(server, dst, {"op": "accept_proposal", "base_revision": 1, "defect_type": "stain"})
    names = _stored_names(store, dst)
    assert np.array_equal(names, np.where(warped > 0, carried_names, before))
    assert store.mask_labels(dst)[1] == ["stain", "scratch", "crack"] and store.get_mask(dst)[1] == "combined"


def test_defect_types_are_kept_per_dataset(served):
    server, store = served
    status, res = request(server, "POST", "/api/defect_types", {"name": "scratch"})
    assert status == 200 and "scratch" in res["defect_types"]
    assert request(server, "POST", "/api/defect_types", {"name": "a/b"})[0] == 400
    assert "scratch" in request(server, "GET", "/api/index")[1]["defect_types"]
    assert (store.root / "labelling" / "settings.json").is_file()
    assert store.verify().ok


def test_review_ranks_the_largest_disagreement_first(served):
    import time

    server, store = served
    marked = ids(store, "p2")["b"]
    other = ids(store, "p1")["a"]
    request(server, "POST", f"/api/captures/{other}/edit", {"op": "brush", "base_revision": 0, "points": [[5, 40]], "radius": 3})
    assert request(server, "POST", "/api/review/start", {})[0] == 200
    deadline = time.monotonic() + 60  # the scoring thread shares 2 busy cores with the rest of the suite
    while True:
        status, review = request(server, "GET", "/api/review")
        if (not review["running"] and review["done"] == review["total"]) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    ranking = review["ranking"]
    # (its rare failures under load were the poll race of test_review_poll_never_reports_finished_...)
    assert not review["running"], f"scoring still running after 60 s: {review}"
    assert review["error"] is None and len(ranking) == 6, review
    assert ranking[0]["capture_id"] == marked and ranking[0]["false_positive_px"] == 20 * 30, review
    assert ranking[1]["capture_id"] == other and ranking[1]["false_negative_px"] == 29, review
    assert ranking[-1]["total_px"] == 0
    status, pred = request(server, "GET", f"/api/captures/{marked}/prediction")
    assert decode_patch(pred["mask"], (H, W)).sum() == 600
    status, png = request(server, "GET", f"/api/captures/{marked}/heatmap.png")
    assert status == 200 and png[:4] == b"\x89PNG"


def _statements(store, fn):
    """``(fn(), SQL statements it ran on the store's connection)``."""
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        return fn(), statements
    finally:
        store._conn.set_trace_callback(None)


def _add_part(store, part: str, seed: int) -> None:
    for i, pose in enumerate(("a", "b", "c")):
        store.add_capture("c1", part, pose, _frame(seed + i), _pose(0.01 * i), _pose(0.01 * i), [0.0] * 6, {})


def _finish_review(app):
    import time

    app.start_review()
    deadline = time.monotonic() + 60  # the scoring thread shares 2 busy cores with the rest of the suite
    while app._review_thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    return app.review_status()


def test_index_and_review_poll_read_the_masks_in_one_query_whatever_the_number_of_captures(served):
    """No query per capture (N+1): twice the captures, the same statements; and the index still gives
    each capture's mask row as ``store.mask_info`` does."""
    _, store = served
    app = LabellingApp(store, score_provider=FakeScores())
    p1 = ids(store, "p1")
    labels = np.zeros((H, W), np.uint8)
    labels[2:9, 5:20], labels[2:9, 30:40] = 1, 2
    store.set_mask_labels(p1["a"], labels, ["hole", "crack"], revision=0)
    store.set_mask(p1["b"], np.zeros((H, W), bool), "good", "human", revision=0)
    index, index_sql = _statements(store, app.index)
    for entry in index["captures"]:
        info = store.mask_info(entry["id"])
        assert (entry["revision"], entry["area_px"], entry["defect_type"], entry["types"]) == (
            (info.revision, info.area_px, info.defect_type, list(info.types)) if info else (0, 0, None, []))
    assert [c["types"] for c in index["captures"][:3]] == [["hole", "crack"], [], []]
    ranking = _finish_review(app)["ranking"]
    _, poll_sql = _statements(store, app.review_status)

    _add_part(store, "p3", 10)
    _add_part(store, "p4", 20)
    store.set_mask(ids(store, "p3")["a"], np.ones((H, W), bool), "hole", "human", revision=0)
    bigger, bigger_index_sql = _statements(store, app.index)
    assert len(bigger["captures"]) == 12 and len(bigger_index_sql) == len(index_sql)
    assert len(_finish_review(app)["ranking"]) == 12 == len(ranking) * 2
    _, bigger_poll_sql = _statements(store, app.review_status)
    assert len(bigger_poll_sql) == len(poll_sql)
    app.close()


@pytest.mark.slow
def test_review_with_a_model_trained_by_cell_train(tmp_path):
    """Review mode's provider on a real model directory: maps at the capture's size, threshold.json's value."""
    import json as _json

    from cell.cli import main
    from cell.labelling.review import DetectorScoreProvider
    from detectors.simplenet.detector import SimpleNet
    from tests.cell.mvtec_fixture import make_mvtec_folder, write_detector_config

    data = make_mvtec_folder(tmp_path / "mvtec", n_train=6, n_test_good=1, n_test_defect=1)
    config = write_detector_config(tmp_path / "simplenet.yaml", "simplenet", SimpleNet.smoke_config,
                                   threshold={"policy": "auto", "holdout_fraction": 0.3})
    model = tmp_path / "model"
    assert main(["train", "--detector", str(config), "--data", str(data), "--out", str(model)]) == 0
    provider = DetectorScoreProvider(model)
    assert provider.threshold == _json.loads((model / "threshold.json").read_text())["value"]
    amap = provider.anomaly_map(_frame(3).pixels)
    assert amap.shape == (H, W) and amap.dtype == np.float32 and np.isfinite(amap).all()


def test_review_poll_never_reports_finished_with_a_partial_ranking(served):
    """The scoring thread ends while a poll builds its ranking: the poll must not say "not running, all
    done" with fewer items than it counts (the UI stops polling on "not running")."""
    import threading

    _, store = served
    release = threading.Event()

    class HeldScores(FakeScores):
        calls = 0

        def anomaly_map(self, image):
            HeldScores.calls += 1
            if HeldScores.calls == 2:  # the second capture waits until the poll below is under way
                release.wait(30)
            return super().anomaly_map(image)

    app = LabellingApp(store, score_provider=HeldScores())
    app.start_review()
    deadline = time.monotonic() + 30
    while len(app._review) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    original = app._mask_entry_of

    def finish_scoring_first(record, info):  # the thread ends in the middle of the poll
        if threading.current_thread() is not app._review_thread:
            release.set()
            app._review_thread.join(30)
        return original(record, info)

    app._mask_entry_of = finish_scoring_first
    status = app.review_status()
    assert status["done"] == len(status["ranking"]), status
    if not status["running"]:
        assert status["done"] == status["total"], status
    app._mask_entry_of = original
    final = app.review_status()
    assert not final["running"] and final["done"] == final["total"] == len(final["ranking"]) == 6
