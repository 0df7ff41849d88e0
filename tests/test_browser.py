"""End to end in a real browser: the page served by `lookalike serve`, driven in headless Chromium.

Uses Debian's Chromium (`apt-get install chromium`) through Playwright for Python's driver; the
browser Playwright would download is never used. Skipped, with the reason, when either is missing.
Leaves screenshots in test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike import Engine, Settings

from .conftest import product_of

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUERY = "Bravo-Apple-Juice_012.jpg"


def chromium_path() -> str | None:
    """$LOOKALIKE_CHROMIUM, else Debian's /usr/bin/chromium, else `chromium` on the PATH."""
    candidates = [os.environ.get("LOOKALIKE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")]
    return next((c for c in candidates if c and Path(c).is_file()), None)


@pytest.fixture(scope="module")
def browser_path() -> str:
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed: pip install playwright")
    pytest.importorskip("uvicorn", reason="the server extra is not installed: pip install 'lookalike[server]'")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set LOOKALIKE_CHROMIUM=/path/to/chromium)")
    return path


@pytest.fixture(scope="module")
def server_url(browser_path: str, tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[str]:
    """The server on a free loopback port, in a thread, over a small localised index with a classifier."""
    import uvicorn

    from lookalike.server import create_app

    settings = Settings().replace(**{"localize.enabled": True, "rerank.chain": ["mask_iou"]})
    path = tmp_path_factory.mktemp("browser") / "loc.index"
    with Engine.create(path, settings) as engine:
        categories = ["Juice", "Milk", "Banana"]
        engine.add([samples / "catalog" / name for name in categories], categories=categories)
        engine.train_classifier("logreg")
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until(lambda: server.started, seconds=120, what="the server to start")
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
        thread.join(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: object, *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {seconds} s for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_search_by_dropping_in_a_photo(browser_path: str, server_url: str, samples: Path) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        # Playwright gives each launch a new, empty profile folder (Chromium's --user-data-dir)
        browser = playwright.chromium.launch(executable_path=browser_path, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.goto(server_url)
            page.wait_for_function("document.getElementById('index-status').textContent.includes('30 images')")

            page.set_input_files("#photo", str(samples / "queries" / QUERY))
            page.wait_for_selector(".result-card", timeout=60_000)
            names = page.locator(".result-card .name").all_text_contents()
            assert product_of(QUERY) in [product_of(name) for name in names[:3]], names
            assert page.locator("#query-cutout").is_visible() and page.locator("#query-mask").is_visible()
            page.wait_for_function("[...document.querySelectorAll('.result-card img')].every(i => i.complete)")
            assert page.locator(".result-card img.overlay").count() == len(names)
            assert "iou" in page.locator(".result-card .breakdown").first.text_content()
            assert page.locator("#timings tr").count() >= 4
            assert page.locator("#predicted-category").text_content() == "Juice"
            page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)

            page.click("button[data-tab=browse]")
            page.wait_for_selector("#catalog .card")
            assert page.locator("#catalog .card").count() == 24  # one page
            # the server does not allow writes: no add form, no remove buttons, a note saying how
            assert page.locator("#add-form").is_hidden() and page.locator("#catalog button.danger").count() == 0
            assert "--allow-writes" in page.locator("#writes-note").text_content()
            loaded = "[...document.querySelectorAll('#catalog img')].slice(0, 14).every(i => i.naturalWidth > 0)"
            page.wait_for_function(loaded, timeout=60_000)  # thumbnails are made on first request
            page.screenshot(path=str(ARTIFACTS / "browse.png"))
        finally:
            browser.close()
    assert not problems, problems
