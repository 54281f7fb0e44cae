"""The labelling page on a dataset open read-only, in headless Chromium: it says so once, shows the stored
mask, and a brush stroke is refused ("edit not saved") with nothing stored."""
from __future__ import annotations

import numpy as np

from tests.cell.browser_fixture import browser_tests, chromium_page
from tests.cell.test_labelling_browser import drag, wait_idle

pytestmark = browser_tests


def test_a_read_only_dataset_in_the_browser(tmp_path):
    from acquisition.store import CaptureStore
    from cell.commands.label import build_app
    from cell.labelling.server import LabellingHTTPServer
    from tests.cell.test_labelling_server import _frame, _pose

    root = tmp_path / "ds"
    with CaptureStore(root, create=True) as store:
        store.start_campaign("c1", {})
        store.add_capture("c1", "p1", "a", _frame(1), _pose(0), _pose(0), [0.0] * 6, {})
        store.add_capture("c1", "p1", "b", _frame(2), _pose(0.01), _pose(0.01), [0.0] * 6, {})
    app = build_app(root, superpixel_size=16, read_only=True)
    server = LabellingHTTPServer(app, "127.0.0.1", 0).start_background()
    try:
        with chromium_page(server.url) as page:
            wait_idle(page)
            assert "read-only" in page.inner_text("#message")
            page.keyboard.press("b")
            drag(page, [(10, 10), (30, 20), (50, 30)])
            page.wait_for_function("document.getElementById('message').textContent.includes('edit not saved')",
                                   timeout=15000)
            assert "read-only" in page.inner_text("#message")
            assert int(page.evaluate("window.labelling.state.revision")) == 0
        assert all(app.store.mask_info(rec.id) is None for rec in app.store.captures())
        assert server.bugs == []
    finally:
        server.stop()
        app.store.close()
    assert not np.any([p.name.startswith("masks") for p in root.iterdir()])
