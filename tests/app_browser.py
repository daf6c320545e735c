"""Harness for the browser tests: the Streamlit app in a subprocess, headless Chromium
(Debian's, driven by Playwright from PyPI), and helpers that move through the app as a person
does (the sidebar, clicks, keys). Screenshots go to test-artifacts/app/ (JOSH_TEST_ARTIFACTS)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]  # fmt: skip
ARTIFACTS = Path(os.environ.get("JOSH_TEST_ARTIFACTS", REPO / "test-artifacts")) / "app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_app(db: Path | None, cwd: Path = REPO, app: str = "app.py", env: dict | None = None):
    """The app on a free port; yields its base URL."""
    port = free_port()
    environment = dict(os.environ, **(env or {}))
    if db is not None:
        environment["JOSH_DB"] = str(db)
    log = open(ARTIFACTS.parent / f"streamlit-{port}.log", "w") if ARTIFACTS.parent.exists() else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(cwd / app), "--server.port", str(port),
         "--server.headless", "true"],
        cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("streamlit did not start within 60 s")
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A browser context; yields a function making pages (each page records external requests
    on `page.external` and console errors on `page.errors`)."""
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test.sh does)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)

        def new_page():
            page = context.new_page()
            page.external = []
            page.errors = []
            page.on("request", lambda r: page.external.append(r.url)
                    if not r.url.startswith(("http://localhost", "data:", "blob:")) else None)  # fmt: skip
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            return page

        try:
            yield new_page
        finally:
            browser.close()


def wait_idle(page, timeout: float = 45, quiet_ms: int = 400) -> None:
    """Until the app has finished running the script: no running indicator, no stale
    elements, and the page's text unchanged for `quiet_ms` (a rerun just asked for may not
    have started yet when this is called)."""
    page.wait_for_timeout(150)
    page.wait_for_function(
        """([quiet]) => {
            const busy = document.querySelector('[data-testid="stStatusWidget"]')
              || document.querySelectorAll('[data-stale="true"]').length > 0;
            const main = document.querySelector('[data-testid="stMain"]');
            const text = (main ? main.innerText : "") + document.querySelectorAll('*').length;
            const now = performance.now();
            if (busy || window.__joshIdleText !== text) {
                window.__joshIdleText = text;
                window.__joshIdleSince = now;
                return false;
            }
            return now - window.__joshIdleSince >= quiet;
        }""",
        arg=[quiet_ms],
        timeout=timeout * 1000,
        polling=100,
    )


def no_exception(page) -> None:
    shown = page.locator('[data-testid="stException"]')
    if shown.count():
        pytest.fail("the app shows an exception:\n" + shown.first.inner_text())


def sidebar_to(page, title: str, heading: str) -> None:
    """Click a page in the sidebar navigation and wait for its heading."""
    page.locator(f'[data-testid="stSidebarNav"] a:has(span[label="{title}"])').click()
    page.get_by_role("heading", name=heading).first.wait_for(timeout=45_000)
    wait_idle(page)
    no_exception(page)


def shot(page, name: str, full: bool = True) -> Path:
    """A screenshot in test-artifacts/app/. Streamlit scrolls inside its main area, so for a full
    page the viewport is stretched to that area's height for the shot."""
    path = ARTIFACTS / f"{name}.png"
    size = page.viewport_size
    height = page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                           " return m ? m.scrollHeight : 0; }") if full else 0  # fmt: skip
    if height > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(height + 40, 6000)})
        page.wait_for_timeout(300)
    page.screenshot(path=str(path), full_page=full)
    if height > size["height"]:
        page.set_viewport_size(size)
    return path


def query(page) -> dict[str, str]:
    from urllib.parse import parse_qs, urlparse

    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


VISIBLE_NODES = """(view) => { const v = view.getBoundingClientRect();
  return [...view.querySelectorAll('.jg-node')].filter(g => { const r = g.getBoundingClientRect();
    return r.left >= v.left && r.right <= v.right && r.top >= v.top && r.bottom <= v.bottom; })
    .map(g => g.dataset.path); }"""


def visible_nodes(page) -> list[str]:
    return page.locator(".jg-view").evaluate(VISIBLE_NODES)
