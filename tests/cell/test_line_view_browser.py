"""The live line page in a real headless Chromium while the simulated line runs: the state, the last part's
verdict with its picture and defect table, the counts, the score chart against the threshold and the last
errors update without a reload, and a lost connection to the cell is shown."""
from __future__ import annotations

import threading

from cell.line_view import LineViewServer, LineViewSink
from cell.signals import LineSignals
from tests.cell.browser_fixture import browser_tests, chromium_page
from tests.cell.line_fixtures import LineRun

pytestmark = browser_tests


def text(page, selector: str) -> str:
    return page.inner_text(selector)


def wait_text(page, element_id: str, expected: str) -> None:
    page.wait_for_function(f"document.getElementById({element_id!r}).textContent.includes({expected!r})",
                           timeout=30000)


def test_the_live_page_follows_the_line_without_reloading(tmp_path):
    view = LineViewSink(tmp_path / "store")
    server = LineViewServer(view).start_background()
    gates = [threading.Event() for _ in range(3)]

    def gate(index: int, part_id: str) -> None:  # the test lets each part onto the table
        assert gates[index - 1].wait(60)

    try:
        with chromium_page(server.url) as page, LineSignals([view]) as signals:
            page.evaluate("window.__sameDocument = true")
            wait_text(page, "no-part", "no part inspected yet")
            run = LineRun(tmp_path, signals, parts=3, threshold=-1.0, before_part=gate,
                          arm=lambda cell: cell.robot.inject_fault("protective_stop", on_move=6)).start()
            wait_text(page, "state", "Ready")  # waiting for the first part
            gates[0].set()
            wait_text(page, "part-id", "line-0001")
            assert text(page, "#verdict") == "NOK" and text(page, "#count-NOK") == "1"
            assert "part score" in text(page, "#score-line") and "> threshold -1" in text(page, "#score-line")
            page.wait_for_function("document.getElementById('picture').complete && "
                                   "document.getElementById('picture').naturalWidth > 0", timeout=30000)
            assert text(page, "#picture-caption") == "heatmap of the worst pose"
            assert page.locator("#chart circle.NOK").count() == 1 and page.locator("#chart line.threshold").count() == 1
            assert text(page, "#defect-count") == "(0)" and page.locator("#defects tbody tr").count() == 0
            gates[1].set()  # the 2nd part hits a protective stop: error, no score
            wait_text(page, "part-id", "line-0002")
            assert text(page, "#verdict") == "error" and text(page, "#count-error") == "1"
            assert "no part score" in text(page, "#score-line")
            assert page.locator("#picture").is_hidden()
            wait_text(page, "errors", "ProtectiveStop")
            assert page.locator("#chart rect.error").count() == 1
            gates[2].set()
            wait_text(page, "part-id", "line-0003")
            summary = run.join()
            page.wait_for_function("document.querySelectorAll('#chart circle').length === 2", timeout=30000)
            wait_text(page, "state", "Ready")
            assert [text(page, f"#count-{v}") for v in ("OK", "NOK", "error")] == ["0", "2", "1"]
            assert "campaign line" in text(page, "#job") and "threshold -1" in text(page, "#job")
            assert page.evaluate("window.__sameDocument === true")  # never reloaded
            assert page.evaluate("window.lineView.state.failures") == 0
            assert [r.verdict for r in summary.results] == ["NOK", "error", "NOK"]
            server.stop()
            server = None
            page.wait_for_function("!document.getElementById('link').hidden", timeout=30000)
    finally:
        for g in gates:
            g.set()
        if server is not None:
            server.stop()
