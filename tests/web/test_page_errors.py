"""What the page tells a person when the service says no: in real Chromium, scripted engines."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import torch
from playwright.sync_api import Page, expect

from service.api.app import create_app
from service.settings import Settings
from tests.support.apps import scripted_engines
from tests.support.engines import ScriptedEngine
from tests.support.servers import serve_in_thread
from tests.support.tools import needs
from tests.web.browser import (
    CHROMIUM,
    choose_photo,
    wait_for_error,
    wait_for_result,
)

pytestmark = [needs(str(CHROMIUM), "chromium"), pytest.mark.slow]

SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
    b'<rect width="8" height="8"/></svg>'
)


@dataclass
class Service:
    base: str
    engines: dict[str, ScriptedEngine]
    auth: dict[str, str] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.base}/v1/status", headers=self.auth).json()
        return body


@contextmanager
def scripted_service(**settings: Any) -> Iterator[Service]:
    engines = scripted_engines(torch.device("cpu"))
    app = create_app(Settings(**{"queue_size": 8, **settings}), engines=engines)
    key = settings.get("api_key")
    with serve_in_thread(app) as base:
        try:
            yield Service(base, engines, {"Authorization": f"Bearer {key}"} if key else {})
        finally:
            # Open before the server stops: a job held at the gate would hold up the shutdown.
            for engine in engines.values():
                engine.gate.set()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def fill_the_queue(service: Service, png: bytes) -> None:
    """Hold the only worker on one job and queue another: the queue (size 1) is full."""
    service.engines["eccv16"].gate.clear()
    first = httpx.post(f"{service.base}/jobs", files={"image": ("a.png", png)})
    assert first.status_code == 202
    wait_until(lambda: service.status()["jobs_running"] == 1)
    second = httpx.post(f"{service.base}/jobs", files={"image": ("b.png", png)})
    assert second.status_code == 202


@dataclass(frozen=True)
class Refusal:
    settings: dict[str, Any]
    upload: Callable[[bytes], bytes]
    status: int
    words: str
    """What the page says before the service's own detail."""
    busy: bool = False
    found_when_decoded: bool = False
    """The header passes at upload: /jobs accepts the job (202) and it fails when the prepare
    stage decodes it, with `status` in its error."""


REFUSALS = {
    "body over the byte limit": Refusal(
        {"max_upload_bytes": 4096}, lambda png: png, 413, "The photo is too large:"
    ),
    "image over the pixel limit": Refusal(
        {"max_pixels": 10_000}, lambda png: png, 413, "The photo is too large:"
    ),
    "svg named .png": Refusal(
        {}, lambda _: SVG, 415, "That file is not in a format the service accepts:"
    ),
    "truncated png": Refusal(
        {},
        lambda png: png[:300],
        422,
        "The service could not read that image:",
        found_when_decoded=True,
    ),
    "queue full": Refusal(
        {"queue_size": 1, "batch_max_size": 1},
        lambda png: png,
        503,
        "The service is busy, try again in",
        busy=True,
    ),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refusal_is_shown_in_plain_words_with_the_services_detail(
    page: Page, gray_png: bytes, case: Refusal
) -> None:
    upload = case.upload(gray_png)
    with scripted_service(**case.settings) as service:
        if case.busy:
            fill_the_queue(service, gray_png)
        # The same request straight to the service gives the detail the page must show.
        direct = httpx.post(f"{service.base}/jobs", files={"image": ("photo.png", upload)})
        if case.found_when_decoded:
            assert direct.status_code == 202
            job_url = f"{service.base}{direct.headers['location']}"
            wait_until(lambda: httpx.get(job_url).json()["state"] == "failed")
            error = httpx.get(job_url).json()["error"]
            assert error["status"] == case.status
            detail = error["detail"].rstrip(".")
        else:
            assert direct.status_code == case.status
            detail = direct.json()["detail"].rstrip(".")

        page.goto(service.base)
        choose_photo(page, upload, "photo.png")
        page.click("#submit")
        text = wait_for_error(page)

        assert text.startswith(case.words)
        assert detail in text
        if case.busy:
            assert f"try again in {direct.headers['retry-after']} s" in text
        expect(page.locator("#result-figure")).to_be_hidden()
        expect(page.locator("#submit")).to_be_enabled()


def test_an_engine_that_is_not_ready_cannot_be_chosen_and_says_why(page: Page) -> None:
    with scripted_service() as service:
        service.engines["siggraph17"].loaded = False
        page.goto(service.base)

        option = page.locator("#model option[value='siggraph17']")
        expect(option).to_be_disabled()
        expect(option).to_have_text("siggraph17 (not ready)")
        expect(page.locator("#model-reasons")).to_have_text("siggraph17 is not ready: not loaded")
        expect(page.locator("#model")).to_have_value("eccv16")


def test_a_queued_job_shows_its_place_and_can_be_cancelled(page: Page, gray_png: bytes) -> None:
    with scripted_service(batch_max_size=1) as service:
        service.engines["eccv16"].gate.clear()
        ahead = httpx.post(f"{service.base}/jobs", files={"image": ("a.png", gray_png)})
        assert ahead.status_code == 202
        wait_until(lambda: service.status()["jobs_running"] == 1)

        page.goto(service.base)
        choose_photo(page, gray_png)
        page.click("#submit")
        expect(page.locator("#job-status")).to_have_text("Queued: number 1 in line.")
        page.click("#cancel")

        expect(page.locator("#job-status")).to_have_text("The job was cancelled.")
        expect(page.locator("#cancel")).to_be_hidden()
        assert service.status()["queue_depth"] == 0


def test_with_an_api_key_the_page_asks_for_it_and_keeps_it_only_in_the_tab(
    page: Page, gray_png: bytes
) -> None:
    with scripted_service(api_key="k") as service:
        page.goto(service.base)
        expect(page.locator("#key-section")).to_be_visible()
        expect(page.locator("#api-key")).to_be_focused()

        page.fill("#api-key", "wrong")
        page.press("#api-key", "Enter")
        expect(page.locator("#key-message")).to_have_text(
            "That key was not accepted. Check it and enter it again."
        )

        page.fill("#api-key", "k")
        page.press("#api-key", "Enter")
        expect(page.locator("#key-section")).to_be_hidden()
        expect(page.locator("#model")).to_have_value("eccv16")
        expect(page.locator("#device")).to_have_text("cpu")
        choose_photo(page, gray_png)
        with page.expect_request("**/jobs") as sent:
            page.click("#submit")
        wait_for_result(page)

        assert sent.value.headers["authorization"] == "Bearer k"
        stored = page.evaluate(
            "() => [localStorage.length, sessionStorage.length, document.cookie]"
        )
        assert stored == [0, 0, ""]
        # A reload forgets the key: it was only ever in the tab's memory.
        page.reload()
        expect(page.locator("#key-section")).to_be_visible()
