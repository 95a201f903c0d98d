"""Debian's Chromium driven by Playwright, and what the page shows (served by
tests.support.servers.serve_in_thread)."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, FilePayload, Page, sync_playwright
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CHROMIUM = Path("/usr/bin/chromium")
# The sandbox needs user namespaces that containers often lack; the page under test is our own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 60_000
"""Long enough for a real network on two busy CPU cores."""


class Recorder:
    """ASGI wrapper keeping each body posted to `path` as the service read it, with its type.

    Chromium does not tell Playwright what a request with file parts carried, so the tests
    look at what the server received instead.
    """

    def __init__(self, app: ASGIApp, path: str = "/jobs") -> None:
        self.app = app
        self.path = path
        self.posts: list[tuple[str, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        chunks: list[bytes] = []

        async def recording() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self.posts.append((content_type, b"".join(chunks)))
            return message

        await self.app(scope, recording, send)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless Chromium from the system (never a downloaded one)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def choose_file(page: Page, selector: str, png: bytes, name: str) -> None:
    """Pick `png` in a file input, as a person would with the file dialog."""
    page.set_input_files(selector, files=FilePayload(name=name, mimeType="image/png", buffer=png))


def choose_photo(page: Page, png: bytes, name: str = "astronaut.png") -> None:
    choose_file(page, "#image", png, name)


def choose_video(page: Page, data: bytes, name: str = "pan.mp4", mime: str = "video/mp4") -> None:
    """Pick a video in the photo-or-video input, as a person would with the file dialog."""
    page.set_input_files("#image", files=FilePayload(name=name, mimeType=mime, buffer=data))


def wait_for_video_result(page: Page) -> None:
    page.wait_for_selector("#video-figure:not([hidden])", timeout=TIMEOUT_MS)


def drop_file(page: Page, selector: str, data: bytes, name: str, mime: str) -> None:
    """Drop a file onto the element at `selector` with a real DataTransfer."""
    transfer = page.evaluate_handle(
        """([bytes, name, mime]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, { type: mime }));
            return transfer;
        }""",
        [list(data), name, mime],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def wait_for_result(page: Page) -> None:
    page.wait_for_selector("#result-figure:not([hidden])", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => document.getElementById('result-img').complete"
        " && document.getElementById('result-img').naturalWidth > 0",
        timeout=TIMEOUT_MS,
    )


def wait_for_error(page: Page) -> str:
    page.wait_for_function(
        "() => document.getElementById('error').textContent !== ''", timeout=TIMEOUT_MS
    )
    return page.inner_text("#error")


def pixels(page: Page, selector: str) -> dict[str, Any]:
    """Natural size and mean channel spread (max - min of r, g, b) of a shown image."""
    result: dict[str, Any] = page.evaluate(
        """(selector) => {
            const img = document.querySelector(selector);
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth;
            canvas.height = img.naturalHeight;
            const context = canvas.getContext("2d");
            context.drawImage(img, 0, 0);
            const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let spread = 0;
            for (let i = 0; i < data.length; i += 4) {
                const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
                spread += Math.max(r, g, b) - Math.min(r, g, b);
            }
            return {
                width: img.naturalWidth,
                height: img.naturalHeight,
                spread: spread / (data.length / 4),
            };
        }""",
        selector,
    )
    return result


def video_frame(page: Page, selector: str, at: float = 0.5) -> dict[str, Any]:
    """Size, duration and mean channel spread of a <video>'s frame at `at` seconds (it is
    seeked there and drawn on a canvas)."""
    result: dict[str, Any] = page.evaluate(
        """async ([selector, at]) => {
            const video = document.querySelector(selector);
            if (video.readyState < 1) {
                await new Promise((resolve, reject) => {
                    video.addEventListener("loadedmetadata", resolve, { once: true });
                    video.addEventListener("error", reject, { once: true });
                });
            }
            await new Promise((resolve) => {
                video.addEventListener("seeked", resolve, { once: true });
                video.currentTime = Math.min(at, video.duration / 2);
            });
            const canvas = document.createElement("canvas");
            canvas.width = video.videoWidth;
            canvas.height = video.videoHeight;
            const context = canvas.getContext("2d");
            context.drawImage(video, 0, 0);
            const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let spread = 0;
            for (let i = 0; i < data.length; i += 4) {
                const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
                spread += Math.max(r, g, b) - Math.min(r, g, b);
            }
            return {
                width: video.videoWidth,
                height: video.videoHeight,
                duration: video.duration,
                spread: spread / (data.length / 4),
            };
        }""",
        [selector, at],
    )
    return result


def form_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """The parts of a multipart body, by field name."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.message_from_bytes(head + body, policy=email.policy.HTTP)
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        fields[str(name)] = payload
    return fields


def hints_sent(content_type: str, body: bytes) -> list[dict[str, Any]]:
    hints: list[dict[str, Any]] = json.loads(form_fields(content_type, body)["hints"])
    return hints
