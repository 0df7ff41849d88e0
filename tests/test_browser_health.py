"""The "Catalogue health" tab in a real browser (headless Chromium, as in test_browser.py): duplicate
groups and suspects with thumbnails, a fix refused without the API key, then done with it."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike import Engine, Settings

from .test_browser import (
    ARTIFACTS,
    CHROMIUM_FLAGS,
    SHOWN_IMAGES_BROKEN,
    chromium_path,
    free_port,
    skip_reason,
    wait_until,
)

KEY = "browser-health-key"


@pytest.fixture(scope="module")
def health_server(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[tuple[str, str, int, int]]:
    """A writable server (with an API key) over Juice, Milk and Banana, an exact copy and a banana filed under Milk."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    import uvicorn

    from lookalike.server import ServerSettings, create_app

    folder = tmp_path_factory.mktemp("browser-health")
    copy = folder / "copy-of-banana.jpg"
    shutil.copy(samples / "catalog" / "Banana" / "Banana_001.jpg", copy)
    with Engine.create(folder / "health.index", Settings()) as engine:
        categories = ["Juice", "Milk", "Banana"]
        engine.add([samples / "catalog" / name for name in categories], categories=categories)
        (copied,) = engine.add([copy], "Banana").added
        (wrong,) = engine.add([samples / "queries" / "Banana_023.jpg"], "Milk").added
        settings = ServerSettings(warm_up=False, allow_writes=True, api_key=KEY)
        port = free_port()
        config = uvicorn.Config(create_app(engine, settings), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until(lambda: server.started, seconds=120, what="the server to start")
        yield f"http://127.0.0.1:{port}", str(chromium_path()), copied, wrong
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.slow
def test_the_health_tab_lists_groups_and_suspects_and_fixes_them(health_server: tuple[str, str, int, int]) -> None:
    from playwright.sync_api import sync_playwright

    url, browser_path, copied, wrong = health_server
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(url)
            page.wait_for_function("document.getElementById('index-status').textContent.includes('32 images')")
            page.click("button[data-tab=health]")
            page.wait_for_selector("#duplicate-groups .health-group", timeout=60_000)
            assert "expected precision" in page.locator("#duplicates-note").text_content()
            exact = page.locator(".health-group", has=page.locator(f"li[data-id='{copied}']"))
            assert "copy of" in exact.locator(f"li[data-id='{copied}']").text_content()
            assert "keep" in exact.text_content()
            suspect = page.locator(f"#suspects li[data-id='{wrong}']")
            assert "Milk → Banana" in suspect.text_content()
            page.wait_for_function("[...document.querySelectorAll('#tab-health img')].every(i => i.complete)")
            assert page.evaluate(SHOWN_IMAGES_BROKEN) == []
            page.screenshot(path=str(ARTIFACTS / "health.png"), full_page=True)

            # a fix without the key: refused with a message saying what to do
            suspect.get_by_role("button", name="move to Banana").click()
            page.wait_for_selector("#error", state="visible")
            assert "API key" in page.locator("#error").text_content()
            assert page.locator("#key-form").is_visible()

            page.fill("#api-key", KEY)
            page.click("#key-form button[type=submit]")
            suspect.get_by_role("button", name="move to Banana").click()
            page.wait_for_selector(f"#suspects li[data-id='{wrong}']", state="detached", timeout=60_000)
            exact.locator(f"li[data-id='{copied}']").get_by_role("button", name="remove").click()
            page.wait_for_selector(f"li[data-id='{copied}']", state="detached", timeout=60_000)
            assert "31 images" in page.locator("#index-status").text_content()
        finally:
            browser.close()
    assert not problems, problems
