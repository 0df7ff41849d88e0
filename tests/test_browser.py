"""End to end in a real browser: the page served by `lookalike serve`, driven in headless Chromium.

Uses Debian's Chromium (`apt-get install chromium`) through Playwright for Python's driver; the
browser Playwright would download is never used. Skipped, with the reason, when either is missing.
Checks the page's three states (before any search, after a file that is not an image, with results)
and leaves their screenshots in test-artifacts/: page-empty.png, page-error.png, page-results.png,
and browse.png (the catalogue tab).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Mapping
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
# the images on show that failed to load, or have nothing to load (a broken-image icon): ids or sources
SHOWN_IMAGES_BROKEN = """[...document.images]
  .filter((img) => img.checkVisibility() && img.complete && img.naturalWidth === 0)
  .map((img) => img.id || img.getAttribute('src') || '(no src)')"""


SYSTEM_CHROMIUM = "/usr/bin/chromium"
NO_CHROMIUM = "no Chromium found (apt-get install chromium, or set LOOKALIKE_CHROMIUM=/path/to/chromium)"


def chromium_path(env: Mapping[str, str] = os.environ, system: str = SYSTEM_CHROMIUM) -> str | None:
    """$LOOKALIKE_CHROMIUM, else Debian's /usr/bin/chromium, else `chromium` on the PATH."""
    candidates = [env.get("LOOKALIKE_CHROMIUM"), system, shutil.which("chromium", path=env.get("PATH"))]
    return next((c for c in candidates if c and Path(c).is_file()), None)


def skip_reason(env: Mapping[str, str] = os.environ, system: str = SYSTEM_CHROMIUM) -> str | None:
    """Why the browser test cannot run here (None: it can): what is missing, and how to get it."""
    for module, reason in (
        ("playwright.sync_api", "Playwright for Python is not installed: pip install playwright"),
        ("uvicorn", "the server extra is not installed: pip install 'lookalike[server]'"),
    ):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return reason
    return None if chromium_path(env, system) else NO_CHROMIUM


def test_the_skip_says_what_is_missing(tmp_path: Path) -> None:
    nowhere = {"PATH": str(tmp_path)}
    assert skip_reason(nowhere, system=str(tmp_path / "none")) == NO_CHROMIUM
    browser = tmp_path / "chromium"
    browser.write_text("#!/bin/sh\n")
    assert chromium_path({**nowhere, "LOOKALIKE_CHROMIUM": str(browser)}, system=str(tmp_path / "none")) == str(browser)
    assert chromium_path(nowhere, system=str(browser)) == str(browser)


@pytest.fixture(scope="module")
def browser_path() -> str:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    return str(chromium_path())


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

            # before any search: the drop zone only; no query photo, no empty Timings or Results headings
            for hidden in ("#query-panel", "#query-photo", "#timings", "#results-header", "#error"):
                assert page.locator(hidden).is_hidden(), f"{hidden} shows before any search"
            assert (
                not page.get_by_text("Timings", exact=True).is_visible() and page.locator(".result-card").count() == 0
            )
            assert page.evaluate(SHOWN_IMAGES_BROKEN) == [], "broken images on the empty page"
            assert page.locator("#drop-zone").is_visible()
            page.screenshot(path=str(ARTIFACTS / "page-empty.png"), full_page=True)

            # a file that is not an image: one clear message, no query panel, no broken image
            expected_failure = len(problems)
            notes = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"these are not pixels"}
            page.set_input_files("#photo", files=[notes])
            page.wait_for_selector("#error", state="visible", timeout=60_000)
            assert "not an image" in page.locator("#error").text_content()
            assert page.locator("#query-panel").is_hidden() and page.locator("#results-header").is_hidden()
            assert page.evaluate(SHOWN_IMAGES_BROKEN) == [], "broken images after a failed search"
            page.screenshot(path=str(ARTIFACTS / "page-error.png"), full_page=True)
            # the browser logs the refused request (422) as a console error: expected here, and only that
            logged = problems[expected_failure:]
            assert all("422" in line for line in logged), logged
            del problems[expected_failure:]

            page.set_input_files("#photo", str(samples / "queries" / QUERY))
            page.wait_for_selector(".result-card", timeout=60_000)
            assert page.locator("#error").is_hidden()  # the last failure's message is gone
            names = page.locator(".result-card .name").all_text_contents()
            assert product_of(QUERY) in [product_of(name) for name in names[:3]], names
            assert page.locator("#query-cutout").is_visible() and page.locator("#query-mask").is_visible()
            page.wait_for_function("[...document.querySelectorAll('.result-card img')].every(i => i.complete)")
            assert page.locator(".result-card img.overlay").count() == len(names)
            assert "iou" in page.locator(".result-card .breakdown").first.text_content()
            assert page.locator("#timings tr").count() >= 4
            assert page.locator("#predicted-category").text_content() == "Juice"
            page.wait_for_function("[...document.images].filter((i) => i.checkVisibility()).every((i) => i.complete)")
            assert page.locator("#query-photo").is_visible() and page.evaluate(SHOWN_IMAGES_BROKEN) == []
            page.screenshot(path=str(ARTIFACTS / "page-results.png"), full_page=True)

            # a failure after results: the old results go, never shown beside the new (broken) photo
            expected_failure = len(problems)
            page.set_input_files("#photo", files=[notes])
            page.wait_for_selector("#error", state="visible", timeout=60_000)
            assert page.locator("#query-panel").is_hidden() and page.locator(".result-card").count() == 0
            assert all("422" in line for line in problems[expected_failure:]), problems[expected_failure:]
            del problems[expected_failure:]

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
