"""One Chromium for this package, a fresh tab per test that must not break the CSP, real
weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page

from devkit.checkpoints import save_random_checkpoint
from tests.support.tools import require
from tests.web.browser import CHROMIUM, TIMEOUT_MS, chromium


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Package scope, not session: Playwright's sync API keeps its event loop marked as running on
    the main thread while it is open, and later tests calling asyncio.run() would fail."""
    require(str(CHROMIUM), "chromium")
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A new tab (own storage) that fails the test on a CSP violation or an uncaught JS error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            problems.append(f"CSP: {message.text}")

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    yield tab
    context.close()
    assert problems == [], "the page broke its CSP or threw"


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated (random, calibrated) eccv16 and siggraph17 checkpoints, once per session."""
    directory = tmp_path_factory.mktemp("weights")
    for model in ("eccv16", "siggraph17"):
        save_random_checkpoint(model, directory)
    return directory
