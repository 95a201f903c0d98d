"""The page in real Chromium against a real uvicorn with the real engines (generated weights)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from service.api.app import create_app
from service.settings import Settings
from tests.support.servers import serve_in_thread
from tests.support.tools import needs
from tests.web.browser import (
    CHROMIUM,
    Recorder,
    choose_photo,
    drop_file,
    form_fields,
    hints_sent,
    pixels,
    wait_for_result,
)
from tests.web.screenshot import capture

pytestmark = [needs(str(CHROMIUM), "chromium"), pytest.mark.slow]

QUEUE_SIZE = 8


@pytest.fixture(scope="module")
def recorder(weights_dir: Path) -> Recorder:
    """The service with all three real engines on the CPU, keeping what /jobs received."""
    settings = Settings(weights_dir=weights_dir, device="cpu", queue_size=QUEUE_SIZE)
    return Recorder(create_app(settings))


@pytest.fixture(scope="module")
def base(recorder: Recorder) -> Iterator[str]:
    with serve_in_thread(recorder) as url:
        yield url


def open_page(page: Page, base: str, model: str) -> None:
    page.goto(base)
    expect(page.locator(f"#model option[value='{model}']")).to_be_enabled()
    page.select_option("#model", model)


def test_a_gray_photo_comes_back_in_colour_at_its_own_size(
    page: Page, base: str, gray_png: bytes
) -> None:
    open_page(page, base, "eccv16")
    choose_photo(page, gray_png)
    page.click("#submit")
    wait_for_result(page)

    expect(page.locator("#job-status")).to_contain_text("Done")
    before, after = pixels(page, "#before-img"), pixels(page, "#result-img")
    assert (before["width"], before["height"]) == (128, 128)
    assert before["spread"] < 1, "the uploaded photo is gray, so the check below can tell"
    assert (after["width"], after["height"]) == (128, 128)
    assert after["spread"] > 4, "the result is still gray"
    download = page.locator("#download")
    assert (download.get_attribute("href") or "").startswith("blob:")
    assert download.get_attribute("download") == "astronaut-colorized.png"


def test_the_split_slider_moves_the_boundary_between_before_and_after(
    page: Page, base: str, gray_png: bytes
) -> None:
    open_page(page, base, "eccv16")
    choose_photo(page, gray_png)
    page.click("#submit")
    wait_for_result(page)

    slider = page.locator("#split")
    slider.focus()
    page.keyboard.press("Home")
    assert slider.get_attribute("aria-valuetext") == "0% original, 100% colour"
    clip = "getComputedStyle(document.getElementById('before-img')).clipPath"
    assert page.evaluate(clip) == "inset(0px 100% 0px 0px)"
    for _ in range(30):
        page.keyboard.press("ArrowRight")
    assert slider.get_attribute("aria-valuetext") == "30% original, 70% colour"
    assert page.evaluate(clip) == "inset(0px 70% 0px 0px)"


def test_a_dropped_photo_takes_its_colours_from_a_dropped_reference(
    page: Page, base: str, recorder: Recorder, gray_png: bytes, colour_png: bytes
) -> None:
    open_page(page, base, "exemplar")
    expect(page.locator("#reference")).to_be_visible()
    expect(page.locator("#hints")).to_be_hidden()
    drop_file(page, "#image-drop", gray_png, "dropped.png", "image/png")
    drop_file(page, "#reference-drop", colour_png, "coffee.png", "image/png")
    recorder.posts.clear()
    page.click("#submit")
    wait_for_result(page)

    [(content_type, body)] = recorder.posts
    fields = form_fields(content_type, body)
    assert fields["model"] == b"exemplar"
    assert fields["image"] == gray_png
    assert fields["reference"] == colour_png
    assert "hints" not in fields
    after = pixels(page, "#result-img")
    assert (after["width"], after["height"]) == (128, 128)
    assert after["spread"] > 4


def test_hints_are_sent_in_the_photos_own_pixels(
    page: Page, base: str, recorder: Recorder, gray_png: bytes
) -> None:
    open_page(page, base, "siggraph17")
    choose_photo(page, gray_png)
    expect(page.locator("#preview-note")).to_have_text("128 × 128 pixels")
    box = page.locator("#preview").bounding_box()
    assert box is not None and box["width"] > 128 * 2, "shown scaled, so the mapping matters"
    scale = box["width"] / 128

    def click_pixel(x: int, y: int) -> None:
        page.click("#preview", position={"x": (x + 0.5) * scale, "y": (y + 0.5) * scale})

    click_pixel(32, 96)
    page.fill("#hint-color", "#00c040")
    click_pixel(127, 0)
    # The keyboard way: a hint at the centre, then its position typed in.
    page.click("#add-hint")
    third = page.locator("#hint-list li").nth(2)
    third.get_by_label("x").fill("5")
    third.get_by_label("x").press("Tab")
    expect(page.locator("#markers .marker")).to_have_count(3)

    recorder.posts.clear()
    page.click("#submit")
    wait_for_result(page)

    [(content_type, body)] = recorder.posts
    assert hints_sent(content_type, body) == [
        {"x": 32, "y": 96, "color": "#d04020"},
        {"x": 127, "y": 0, "color": "#00c040"},
        {"x": 5, "y": 64, "color": "#00c040"},
    ]
    assert pixels(page, "#result-img")["spread"] > 4


def test_the_live_panel_shows_the_services_numbers(page: Page, base: str, gray_png: bytes) -> None:
    page.goto(base)
    expect(page.locator("#device")).to_have_text("cpu")
    status = httpx.get(f"{base}/v1/status").json()
    expect(page.locator("#jobs-done")).to_have_text(str(status["jobs_done"]))
    expect(page.locator("#queue")).to_have_text(f"0 / {QUEUE_SIZE}")
    expect(page.locator("#mem-text")).to_contain_text("threshold 80%")
    assert page.locator("#mem-threshold").evaluate("node => node.style.left") == "80%"
    used = float(page.locator("#mem-bar").get_attribute("aria-valuenow") or "nan")
    assert 0 < used <= 100
    assert abs(used - 100 * status["usage_ratio"]) < 10
    expect(page.locator("#ready")).to_have_text("accepting jobs")

    # A job done elsewhere shows up at the next poll (every 2 s), without reloading.
    reply = httpx.post(
        f"{base}/colorize", files={"image": ("a.png", gray_png)}, data={"model": "eccv16"}
    )
    assert reply.status_code == 200
    expect(page.locator("#jobs-done")).to_have_text(str(status["jobs_done"] + 1), timeout=5_000)


def test_the_screenshot_script_captures_a_page_with_a_result(
    page: Page, base: str, tmp_path: Path
) -> None:
    path = tmp_path / "screenshot.png"
    capture(page, base, path)
    expect(page.locator("#result-figure")).to_be_visible()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
