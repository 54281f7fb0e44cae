"""Property-based tests (hypothesis) of the labelling API's JSON endpoints (issue 17's property suite).

Generated bad bodies and bad values go to every JSON endpoint of :mod:`cell.labelling.server` over real
HTTP: raw bytes that are not a JSON object, and bodies whose required fields hold wrong types, out-of-range
numbers, NaN/Infinity, malformed point lists, unsafe or reserved names, unknown ids. Every answer must be a
4xx with a one-line JSON ``error`` (never a 500, never a server-side traceback), and nothing in the dataset
may change (every file compared byte for byte after each case). Endpoints that ignore their body
(proposal/discard, review/start) only have to answer below 500 without writing.

``GENERATED`` counts the requests the generated examples sent (the deep-body test sends each example to all
seven endpoints); run with ``-s`` to see the count printed at the end, ``--hypothesis-show-statistics`` for
the examples per test.
"""
from __future__ import annotations

import http.client
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from acquisition.store import CaptureStore
from cell.labelling.api import LabellingApp
from cell.labelling.server import LabellingHTTPServer
from tests.cell.test_labelling_server import GEOMETRY, H, W, _frame, _pose

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
OPS = ("brush", "erase", "superpixel", "polygon", "flood", "clear", "set_type", "accept_proposal", "undo", "redo")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
GENERATED = {"cases": 0}


# --- the dataset and the server, shared by every case (nothing may change it) ---------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("props") / "ds"
    with CaptureStore(root, create=True) as store:
        store.start_campaign("c1", {})
        mask = np.zeros((H, W), bool)
        mask[12:24, 14:30] = True
        masked = store.add_capture("c1", "p1", "a", _frame(1), _pose(0), _pose(0), [0.0] * 6, {}, mask=mask,
                                   defect_type="scratch", mask_source="human").id
        blank = store.add_capture("c1", "p1", "b", _frame(2), _pose(0.01), _pose(0.01), [0.0] * 6, {}).id
        store.add_capture("c1", "p2", "a", _frame(3), _pose(0.02), _pose(0.02), [0.0] * 6, {})
    store = CaptureStore(root)
    app = LabellingApp(store, geometry=GEOMETRY, superpixel_size_px=8)
    server = LabellingHTTPServer(app, "127.0.0.1", 0).start_background()
    snapshot = _tree(root)
    yield {"server": server, "root": root, "masked": masked, "blank": blank, "snapshot": snapshot}
    server.stop()
    store.close()
    print(f"\nlabelling API property suite: {GENERATED['cases']} requests from generated examples")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and not p.stat().st_size)}


def _post(api, path: str, raw: bytes) -> tuple[int, dict]:
    server = api["server"]
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    try:
        conn.request("POST", path, body=raw, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
    finally:
        conn.close()
    assert resp.getheader("Content-Type") == "application/json", payload[:200]
    return resp.status, json.loads(payload)


def check(api, path: str, raw: bytes, *, must_refuse: bool = True) -> None:
    """POST ``raw`` to ``path``: a 4xx with a one-line error (or, when not ``must_refuse``, anything below
    500), no bug reported by the server, and every file of the dataset unchanged."""
    GENERATED["cases"] += 1
    status, payload = _post(api, path, raw)
    assert status < 500, (path, raw[:300], payload)
    if must_refuse or status >= 400:
        assert 400 <= status < 500, (path, raw[:300], status, payload)
        assert isinstance(payload.get("error"), str) and payload["error"] and "\n" not in payload["error"]
    assert api["server"].bugs == [], api["server"].bugs
    assert _tree(api["root"]) == api["snapshot"], f"{path} {raw[:300]!r} changed the dataset"


def body_bytes(body: dict) -> bytes:
    return json.dumps(body, allow_nan=True).encode()  # NaN / Infinity tokens: Python's parser accepts them


# --- generated values ------------------------------------------------------------------------------------
leaf = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=12))
anything = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=4), max_leaves=10)
not_a_list = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12) \
    | st.dictionaries(st.text(max_size=4), leaf, max_size=3)
not_an_int = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.booleans() \
    | st.lists(leaf, max_size=3) | st.dictionaries(st.text(max_size=4), leaf, max_size=3)
not_a_number = st.none() | st.text(max_size=12) | st.booleans() | st.lists(leaf, max_size=3) \
    | st.dictionaries(st.text(max_size=4), leaf, max_size=3)
not_a_bool = anything.filter(lambda v: not isinstance(v, bool))
bad_number_item = (st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not math.isfinite(v))
                   | st.text(alphabet="abcxyz!?", min_size=1, max_size=5) | st.none() | st.lists(leaf, max_size=2)
                   | st.dictionaries(st.text(max_size=3), leaf, max_size=2))
good_number = st.integers(-50, 100) | st.floats(-50, 100)
bad_points = st.one_of(
    not_a_list,
    st.just([]),
    st.lists(st.lists(good_number, max_size=5).filter(lambda p: len(p) != 2), min_size=1, max_size=4),
    st.lists(st.tuples(good_number | bad_number_item, bad_number_item).map(list), min_size=1, max_size=4),
    st.just([[1, 1]] * 20001),
)


def bad_range(lo: float, hi: float):
    """Numbers outside [lo, hi] (NaN and infinities included) and values that are no number at all."""
    return (st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not (lo <= v <= hi))
            | st.integers().filter(lambda v: not (lo <= v <= hi)) | not_a_number)


bad_name = st.one_of(
    st.sampled_from(["good", "combined", "", "   ", "..", "a..b", ".hidden", "-x", "a/b", "../x", "a b", "x" * 129]),
    st.text(min_size=1, max_size=20).filter(lambda s: not NAME_RE.fullmatch(s.strip()) or ".." in s),
    st.integers(), st.booleans(), st.floats(allow_nan=True), st.lists(leaf, max_size=3),
    st.dictionaries(st.text(max_size=4), leaf, max_size=2),
)


# --- raw bodies that are not a JSON object, at every JSON endpoint ---------------------------------------
def _endpoints(api) -> list[str]:
    m = api["masked"]
    return [f"/api/captures/{m}/edit", f"/api/captures/{m}/carry", f"/api/captures/{m}/proposal/discard",
            "/api/parts/p1/label", "/api/defect_types", "/api/prefetch", "/api/review/start"]


@SETTINGS
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode) | anything.map(body_bytes), which=st.integers(0, 6))
def test_bodies_that_are_not_a_json_object_are_400_everywhere(api, raw, which):
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        parsed = None
    assume(not isinstance(parsed, dict) and raw.strip() != b"")  # an empty body is "{}", a valid no-field body
    check(api, _endpoints(api)[which], raw)


@SETTINGS
@given(depth=st.integers(33, 5000), opener=st.sampled_from(["[", '{"a":']))
def test_too_deep_bodies_are_400_everywhere(api, depth, opener):
    closer = "]" if opener == "[" else "}"
    inner = opener * depth + "0" + closer * depth if opener != "[" else "[" * depth + "]" * depth
    for path in _endpoints(api):
        check(api, path, f'{{"k": {inner}}}'.encode())


# --- the edit endpoint ------------------------------------------------------------------------------------
@settings(SETTINGS, max_examples=150)  # nine kinds of broken field: about 16 cases each
@given(data=st.data())
def test_bad_edit_bodies_are_refused(api, data):
    blank = api["blank"]  # revision 0: a valid base revision reaches the op's own checks
    body: dict = {"base_revision": 0}
    kind = data.draw(st.sampled_from(["op", "base_revision", "radius", "points", "value", "seed", "tolerance",
                                      "defect_type", "set_type"]), label="broken field")
    if kind == "op":
        body["op"] = data.draw(st.text(max_size=12).filter(lambda s: s not in OPS) | not_an_int.filter(
            lambda v: not isinstance(v, str)))
    elif kind == "base_revision":
        body.update(op=data.draw(st.sampled_from(OPS)),
                    base_revision=data.draw(not_an_int | st.integers().filter(lambda v: v != 0)))
    elif kind == "radius":
        body.update(op=data.draw(st.sampled_from(["brush", "erase"])), points=[[10, 10]],
                    radius=data.draw(bad_range(0.5, 2048)))
    elif kind == "points":
        body.update(op=data.draw(st.sampled_from(["brush", "erase", "superpixel", "polygon"])), radius=3,
                    value=True, points=data.draw(bad_points))
    elif kind == "value":
        op = data.draw(st.sampled_from(["superpixel", "polygon", "flood"]))
        body.update(op=op, points=[[10, 10], [30, 10], [30, 30]], seed=[20, 20], tolerance=5,
                    value=data.draw(not_a_bool.filter(lambda v: v != "toggle") if op == "superpixel" else not_a_bool))
    elif kind == "seed":
        body.update(op="flood", tolerance=5, value=True, seed=data.draw(
            not_a_list | st.lists(good_number, max_size=4).filter(lambda p: len(p) != 2)
            | st.tuples(st.integers(W, 10**6) | st.integers(-(10**6), -1), st.integers(0, H - 1)).map(list)
            | st.tuples(bad_number_item, good_number).map(list)))
    elif kind == "tolerance":
        body.update(op="flood", seed=[20, 20], value=True, tolerance=data.draw(bad_range(0, 65535)))
    elif kind == "defect_type":
        body.update(op=data.draw(st.sampled_from(["brush", "superpixel", "polygon", "flood"])),
                    points=[[10, 10], [30, 10], [30, 30]], radius=3, seed=[20, 20], tolerance=5, value=True,
                    defect_type=data.draw(bad_name.filter(lambda v: v is not None)))
    else:
        body.update(op="set_type", defect_type=data.draw(bad_name.filter(lambda v: v is not None)))
    extra = data.draw(st.dictionaries(st.text(max_size=5).filter(lambda k: k not in body and k not in (
        "op", "base_revision", "points", "radius", "value", "seed", "tolerance", "defect_type")), anything,
        max_size=2), label="ignored extra keys")
    body.update(extra)
    check(api, f"/api/captures/{blank}/edit", body_bytes(body))


@SETTINGS
@given(cid=st.integers(min_value=4) | st.integers(max_value=0), op=st.sampled_from(OPS))
def test_edits_of_unknown_captures_are_404(api, cid, op):
    check(api, f"/api/captures/{abs(cid)}/edit", body_bytes({"op": op, "base_revision": 0, "points": [[1, 1]],
                                                             "radius": 2}))


# --- part labels, defect types, prefetch, carry -----------------------------------------------------------
@SETTINGS
@given(label=anything.filter(lambda v: v not in ("good", "defective", "unlabelled")), clear=anything,
       bad_clear=not_a_bool, valid_label=st.sampled_from(["good", "defective", "unlabelled"]),
       part=st.sampled_from(["p1", "p2", "nope", "x" * 128]), which=st.booleans())
def test_bad_part_label_bodies_are_refused(api, label, clear, bad_clear, valid_label, part, which):
    body = {"label": label, "clear_masks": clear} if which else {"label": valid_label, "clear_masks": bad_clear}
    if part in ("nope", "x" * 128) and which is False:
        body["label"] = label  # an unknown part is refused whatever the body; keep the body bad as well
    check(api, f"/api/parts/{part}/label", body_bytes(body))


@SETTINGS
@given(name=bad_name | st.none(), extra=st.dictionaries(st.text(max_size=4).filter(lambda k: k != "name"), anything,
                                                        max_size=2))
def test_bad_defect_type_names_are_refused(api, name, extra):
    check(api, "/api/defect_types", body_bytes({**extra, "name": name}))


@SETTINGS
@given(ids=st.one_of(
    not_a_list,
    st.lists(st.integers(1, 3), min_size=9, max_size=20),
    st.lists(st.integers(1, 3) | not_an_int, min_size=1, max_size=6).filter(
        lambda xs: any(not isinstance(x, int) or isinstance(x, bool) for x in xs)),
    st.lists(st.integers(1, 3), max_size=4).flatmap(
        lambda known: st.lists(st.integers().filter(lambda v: not 1 <= v <= 3), min_size=1, max_size=3).map(
            lambda unknown: known + unknown)),
))
def test_bad_prefetch_ids_are_refused(api, ids):
    check(api, "/api/prefetch", body_bytes({"ids": ids}))


@SETTINGS
@given(targets=not_a_list.filter(lambda v: v is not None) | st.lists(
    st.integers(1, 3) | not_an_int, min_size=1, max_size=5).filter(
        lambda xs: any(not isinstance(x, int) or isinstance(x, bool) for x in xs)))
def test_bad_carry_targets_are_refused(api, targets):
    check(api, f"/api/captures/{api['masked']}/carry", body_bytes({"targets": targets}))


@SETTINGS
@given(body=st.dictionaries(st.text(max_size=6), anything, max_size=4), which=st.sampled_from(["discard", "review"]))
def test_endpoints_that_ignore_their_body_never_fail_or_write(api, body, which):
    path = f"/api/captures/{api['blank']}/proposal/discard" if which == "discard" else "/api/review/start"
    check(api, path, body_bytes(body), must_refuse=which == "review")  # review: no model -> 409
