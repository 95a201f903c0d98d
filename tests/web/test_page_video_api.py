"""The page's video flow against the real service: a film goes through /jobs, shows its
progress, can be cancelled, comes back in colour and plays beside the original.

Needs video jobs in /jobs (issue 21: the video-jobs branch); until that API is in this tree the
module skips, saying so. tests/web/test_page_video.py drives the same page against a stand-in
with the same shapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from devkit.clips import make_clip, with_spec
from service.api.app import create_app
from service.settings import Settings
from tests.support.servers import serve_in_thread
from tests.support.tools import needs
from tests.support.videos import HTML
from tests.web.browser import (
    CHROMIUM,
    TIMEOUT_MS,
    Recorder,
    choose_video,
    form_fields,
    video_frame,
    wait_for_error,
    wait_for_video_result,
)
from tests.web.screenshot import capture_video

VIDEO_JOBS = "video_max_upload_bytes" in Settings.model_fields
"""The video-jobs branch's settings: their presence says /jobs takes a `video` part."""

pytestmark = [
    needs(str(CHROMIUM), "chromium"),
    pytest.mark.slow,
    pytest.mark.skipif(not VIDEO_JOBS, reason="needs video jobs through /jobs (issue 21's API)"),
]


@pytest.fixture(scope="module")
def recorder(weights_dir: Path) -> Recorder:
    """The service with eccv16 and siggraph17 (generated weights) and the exemplar, on the
    CPU, keeping what /jobs received."""
    return Recorder(create_app(Settings(weights_dir=weights_dir, device="cpu")))


@pytest.fixture(scope="module")
def base(recorder: Recorder) -> Iterator[str]:
    with serve_in_thread(recorder) as url:
        yield url


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("films")
    specs = {
        "short": with_spec(frames=12, cut_at=8, audio=True),  # half a second: pan, cut, pan
        "long": with_spec(frames=480, cut_at=None, pan=1),  # 20 s: long enough to cancel
    }
    return {
        name: make_clip(directory / f"{name}.mp4", spec).read_bytes()
        for name, spec in specs.items()
    }


def open_page(page: Page, base: str, model: str) -> None:
    page.goto(base)
    expect(page.locator(f"#model option[value='{model}']")).to_be_enabled()
    page.select_option("#model", model)


def test_a_gray_film_comes_back_in_colour_beside_the_original(
    page: Page, base: str, recorder: Recorder, films: dict[str, bytes]
) -> None:
    open_page(page, base, "eccv16")
    choose_video(page, films["short"])
    recorder.posts.clear()
    page.click("#submit")
    wait_for_video_result(page)

    expect(page.locator("#job-status")).to_have_text(
        "Done. Play the colour video beside the original, or download it."
    )
    [(content_type, body)] = recorder.posts
    fields = form_fields(content_type, body)
    assert fields["video"] == films["short"]
    assert (fields["model"], fields["stabilize"]) == (b"eccv16", b"true")
    assert "format" not in fields and "hints" not in fields
    result, original = video_frame(page, "#result-video"), video_frame(page, "#original-video")
    assert (result["width"], result["height"]) == (160, 96)
    assert result["spread"] > 4, "the result is still gray"
    assert original["spread"] < 1
    assert abs(result["duration"] - original["duration"]) < 0.05
    assert page.locator("#video-download").get_attribute("download") == "pan-colorized.mp4"


def test_a_long_film_shows_its_progress_and_stops_when_cancelled(
    page: Page, base: str, films: dict[str, bytes]
) -> None:
    open_page(page, base, "eccv16")
    choose_video(page, films["long"], "long.mp4")
    page.click("#submit")
    progress = page.locator("#progress-text")
    expect(progress).to_contain_text(" of 480 · ", timeout=TIMEOUT_MS)
    expect(progress).to_contain_text(" left", timeout=TIMEOUT_MS)
    page.click("#cancel")

    expect(page.locator("#job-status")).to_have_text("The job was cancelled.", timeout=10_000)
    expect(page.locator("#progress-box")).to_be_hidden()
    expect(page.locator("#video-figure")).to_be_hidden()


def test_html_named_mp4_is_refused_in_plain_words(page: Page, base: str) -> None:
    direct = httpx.post(f"{base}/jobs", files={"video": ("clip.mp4", HTML, "video/mp4")})
    assert direct.status_code == 415
    open_page(page, base, "eccv16")
    choose_video(page, HTML, "clip.mp4")
    page.click("#submit")
    text = wait_for_error(page)

    assert text.startswith("That file is not in a format the service accepts:")
    assert direct.json()["detail"].rstrip(".") in text


def test_the_video_screenshot_script_captures_both_videos(
    page: Page, base: str, tmp_path: Path
) -> None:
    path = tmp_path / "screenshot-video.png"
    capture_video(page, base, path, with_spec(frames=12, cut_at=None))
    expect(page.locator("#video-figure")).to_be_visible()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
