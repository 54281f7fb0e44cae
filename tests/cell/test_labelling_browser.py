"""The labelling app in a real headless Chromium (Debian's ``chromium`` driven by Playwright): draw a
stroke, erase part of it, use the superpixel brush, undo, switch pose, carry a mask over, paint two
regions with two defect types, and check the stored mask pixels and types with numpy (what is drawn is
what is stored)."""
from __future__ import annotations

import numpy as np
import pytest

from cell.labelling import masks as M
from tests.cell.browser_fixture import browser_tests, chromium_page

pytestmark = browser_tests


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    from cell.commands.label import build_app
    from cell.labelling.server import LabellingHTTPServer
    from cell.labelling.simdata import make_sim_dataset

    root = make_sim_dataset(tmp_path_factory.mktemp("browser") / "ds", max_poses=3, width=320, height=256, seed=7)
    app = build_app(root, superpixel_size=16)
    server = LabellingHTTPServer(app, "127.0.0.1", 0).start_background()
    yield app, server
    server.stop()
    app.store.close()


@pytest.fixture(scope="module")
def page(app_server):
    _, server = app_server
    with chromium_page(server.url) as page:
        wait_idle(page)
        yield page


def wait_idle(page, extra: str = "true") -> None:
    page.wait_for_function(f"window.labelling && window.labelling.idle() && ({extra})", timeout=15000)


def screen(page, x: float, y: float) -> tuple[float, float]:
    """Screen position of image pixel centre (x, y)."""
    rect = page.evaluate("(() => { const r = document.getElementById('stage').getBoundingClientRect();"
                         " return [r.left, r.top, window.labelling.state.scale]; })()")
    return rect[0] + (x + 0.5) * rect[2], rect[1] + (y + 0.5) * rect[2]


def drag(page, points) -> None:
    page.mouse.move(*screen(page, *points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*screen(page, *p), steps=4)
    page.mouse.up()


def client_mask(page) -> np.ndarray:
    st = page.evaluate("(() => { const s = window.labelling.state; return [s.W, s.H, Array.from(s.mask)]; })()")
    return np.asarray(st[2], dtype=bool).reshape(st[1], st[0])


def stored(app, capture_id) -> np.ndarray:
    mask, _, _ = app.store.get_mask(capture_id)
    rec = app.store.get_capture(capture_id)
    return np.zeros((rec.height, rec.width), bool) if mask is None else mask


def current(page) -> int:
    return int(page.evaluate("window.labelling.state.current"))


def last_edit(page) -> dict:
    return page.evaluate("window.labelling.state.lastEdit")


def test_label_session_in_chromium(app_server, page):
    app, _ = app_server
    records = app.store.captures()
    first, second = records[0].id, records[1].id
    assert current(page) == first
    start = stored(app, first)
    rev0 = app.store.get_mask(first)[2]

    # 1. zoom in, then a brush stroke in a clean corner: the points land where the mouse was, and the
    #    stored mask is exactly the stroke rule's footprint, as shown
    scale0 = page.evaluate("window.labelling.state.scale")
    page.mouse.move(*screen(page, 60, 200))
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"window.labelling.state.scale > {scale0} * 1.3")
    page.keyboard.press("b")
    drag(page, [(20, 200), (60, 210), (90, 230)])
    wait_idle(page, f"window.labelling.state.revision === {rev0 + 1}")
    edit = last_edit(page)
    assert edit["op"] == "brush" and edit["radius"] == 7.5
    assert np.allclose(edit["points"][0], [20, 200], atol=0.5) and np.allclose(edit["points"][-1], [90, 230], atol=0.5)
    stroke = M.stroke_footprint(start.shape, edit["points"], edit["radius"])
    after_brush = start | stroke
    assert stroke.sum() > 300
    assert np.array_equal(stored(app, first), after_brush)
    assert np.array_equal(client_mask(page), after_brush)

    # 2. erase the middle of the stroke
    page.keyboard.press("e")
    drag(page, [(55, 195), (62, 225)])
    wait_idle(page, f"window.labelling.state.revision === {rev0 + 2}")
    edit = last_edit(page)
    assert edit["op"] == "erase"
    after_erase = after_brush & ~M.stroke_footprint(start.shape, edit["points"], edit["radius"])
    assert after_erase.sum() < after_brush.sum()
    assert np.array_equal(stored(app, first), after_erase)
    assert np.array_equal(client_mask(page), after_erase)

    # 3. superpixel brush (zoomed back to fit, 0): a click adds the whole superpixel under it
    page.keyboard.press("0")
    page.keyboard.press("s")
    wait_idle(page, "window.labelling.state.spReady")
    labels = app.superpixels(app.store.get_capture(first))
    x, y = 250, 60
    target = labels[y, x]
    assert target > 0
    page.mouse.click(*screen(page, x, y))
    wait_idle(page, f"window.labelling.state.revision === {rev0 + 3}")
    edit = last_edit(page)
    region = M.superpixel_edit(after_erase, labels, edit["points"], edit["value"])
    assert np.array_equal(stored(app, first), region)
    assert (region & (labels == target)).sum() == (labels == target).sum()
    assert np.array_equal(client_mask(page), region)

    # 4. undo brings back the mask before the superpixel
    page.keyboard.press("Control+z")
    wait_idle(page, f"window.labelling.state.revision === {rev0 + 4}")
    assert np.array_equal(stored(app, first), after_erase)
    assert np.array_equal(client_mask(page), after_erase)

    # 5. carry the mask to the other poses, switch pose, accept the proposal
    page.keyboard.press("c")
    page.wait_for_function("document.getElementById('message').textContent.includes('carried')", timeout=15000)
    page.keyboard.press("ArrowDown")
    wait_idle(page, f"window.labelling.state.current === {second} && window.labelling.state.proposal !== null")
    before_second = stored(app, second)
    rev_second = app.store.get_mask(second)[2]
    page.keyboard.press("a")
    wait_idle(page, f"window.labelling.state.revision === {rev_second + 1}")
    from cell.labelling.carry import carry_mask

    rec_first, rec_second = app.store.get_capture(first), app.store.get_capture(second)
    carried = carry_mask(after_erase, app.geometry(rec_first), rec_first.actual_pose, rec_second.actual_pose)
    assert np.array_equal(stored(app, second), before_second | carried)
    assert np.array_equal(client_mask(page), before_second | carried)
    # the defect drawn by the simulation was carried onto the simulation's own mask of this pose
    assert M.iou(carry_mask(start, app.geometry(rec_first), rec_first.actual_pose, rec_second.actual_pose),
                 before_second) >= 0.9

    # 6. navigation: back to the first pose shows its stored mask
    page.keyboard.press("ArrowUp")
    wait_idle(page, f"window.labelling.state.current === {first}")
    assert np.array_equal(client_mask(page), stored(app, first))

    # 7. another tab saves this mask meanwhile: this tab's next edit is refused, the user is told, and
    #    the tab shows the stored version (nothing is silently overwritten)
    rev = app.store.get_mask(first)[2]
    app.edit(first, {"op": "brush", "base_revision": rev, "points": [[300, 20]], "radius": 6})
    other_tab = stored(app, first)
    page.keyboard.press("b")
    drag(page, [(150, 120), (170, 125)])
    page.wait_for_function("document.getElementById('message').textContent.includes('changed elsewhere')", timeout=15000)
    wait_idle(page)
    assert np.array_equal(stored(app, first), other_tab)
    assert np.array_equal(client_mask(page), other_tab)


def test_two_strokes_with_two_defect_types(app_server, page):
    app, _ = app_server
    cid = app.store.captures()[2].id
    page.evaluate(f"window.labelling.open({cid})")
    wait_idle(page, f"window.labelling.state.current === {cid}")
    labels0, types0, rev0 = app.store.mask_labels(cid)
    start = np.array([""] + types0, dtype=object)[labels0]
    for name in ("scratch", "crack"):  # the dataset's list grows through the add-type flow
        page.fill("#new-type", name)
        page.click("#add-type")
        page.wait_for_function(f"window.labelling.state.index.defect_types.includes('{name}')")
    page.keyboard.press("b")

    page.select_option("#defect-type", "scratch")  # type 1 from the list
    drag(page, [(30, 40), (90, 50)])
    wait_idle(page, f"window.labelling.state.revision === {rev0 + 1}")
    first = last_edit(page)
    page.click('#legend .legend-item[data-type="crack"]')  # type 2, from the legend
    drag(page, [(200, 180), (260, 150)])
    wait_idle(page, f"window.labelling.state.revision === {rev0 + 2}")
    second = last_edit(page)
    assert (first["defect_type"], second["defect_type"]) == ("scratch", "crack")

    stroke1 = M.stroke_footprint(start.shape, first["points"], first["radius"])
    stroke2 = M.stroke_footprint(start.shape, second["points"], second["radius"])
    expected = start.copy()
    expected[stroke1] = "scratch"
    expected[stroke2] = "crack"
    labels, types, rev = app.store.mask_labels(cid)
    assert rev == rev0 + 2 and labels.dtype == np.uint8 and {"scratch", "crack"} <= set(types)
    assert np.array_equal(np.array([""] + types, dtype=object)[labels], expected)
    mask, row_type, _ = app.store.get_mask(cid)
    assert row_type == "combined" and np.array_equal(mask, expected != "")
    # the tab shows exactly the stored types, each in its own colour, listed in the legend
    st = page.evaluate("(() => { const s = window.labelling.state; return [s.palette, Array.from(s.mask)]; })()")
    shown = np.array([""] + st[0], dtype=object)[np.asarray(st[1]).reshape(start.shape)]
    assert np.array_equal(shown, expected)
    colours = page.evaluate("""([p, q]) => { const c = document.getElementById('mask-layer').getContext('2d');
        return [Array.from(c.getImageData(p[0], p[1], 1, 1).data), Array.from(c.getImageData(q[0], q[1], 1, 1).data)]; }""",
                            [[60, 45], [230, 165]])
    assert colours[0][3] == 255 and colours[1][3] == 255 and colours[0][:3] != colours[1][:3]
    present = page.eval_on_selector_all("#legend .legend-item.present", "els => els.map((e) => e.dataset.type)")
    assert {"scratch", "crack"} <= set(present)


class BrightScores:
    """Review provider for the test: the anomaly map is the grey level in [0, 1]; bright = defect."""

    name = "bright"
    threshold = 0.75

    def anomaly_map(self, image: np.ndarray) -> np.ndarray:
        grey = image if image.ndim == 2 else image.mean(axis=2)
        return (np.asarray(grey, np.float32) / 255.0).astype(np.float32)


def test_review_mode_jumps_to_the_largest_disagreement(app_server, page):
    app, _ = app_server
    app.score_provider = BrightScores()
    page.reload()
    wait_idle(page)
    page.keyboard.press("r")
    n = len(app.store.captures())
    page.wait_for_function(f"window.labelling.state.ranking.length === {n}", timeout=20000)
    ranking = app.review_status()["ranking"]
    assert [d["total_px"] for d in ranking] == sorted((d["total_px"] for d in ranking), reverse=True)
    page.keyboard.press("j")
    wait_idle(page, f"window.labelling.state.current === {ranking[0]['capture_id']}")
    # the heatmap is drawn once its PNG has loaded (after the capture itself): wait for it
    page.wait_for_function("(() => { const c = document.getElementById('heat-layer');"
                           " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                           " for (let i = 3; i < d.length; i += 4) if (d[i]) return true; return false; })()",
                           timeout=15000)
