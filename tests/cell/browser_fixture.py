"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright. Shared by the
labelling app's and the live line page's tests."""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]

#: Mark a browser test module: ``pytestmark = browser_tests``.
browser_tests = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian package 'chromium' is not installed (apt-get install chromium)"),
]


@contextmanager
def chromium_page(url: str, viewport: tuple[int, int] = (1280, 800)) -> Iterator[object]:
    """A page of a fresh headless Chromium at ``url``; on exit, asserts that no script error happened."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            # the apps' CSP forbids eval, which Playwright's evaluate needs
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]}, bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            yield page
            assert not errors, errors
        finally:
            browser.close()
