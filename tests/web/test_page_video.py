"""The page's video flow in real Chromium: choose a video, send it to /jobs, follow its progress,
cancel it, play the result beside the original, and the refusals in plain words.

The service is real (its page, engine list and status, with generated weights); the video side
of /jobs is tests/web/video_jobs.py's stand-in, which answers with the shapes of issue 21, so
that the page is tested on its own. tests/web/test_page_video_api.py runs the same flow against
the real video jobs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from playwright.sync_api import Page, expect

from devkit.checkpoints import save_random_checkpoint
from devkit.clips import make_clip, with_spec
from devkit.ddcolor_checkpoints import save_random_checkpoint as save_ddcolor_checkpoint
from service.api.app import create_app
from service.engines.weights import OFFICIAL
from service.settings import Settings
from tests.support.servers import serve_in_thread
from tests.support.tools import needs
from tests.web.browser import (
    CHROMIUM,
    choose_file,
    choose_photo,
    choose_video,
    drop_file,
    video_frame,
    wait_for_error,
    wait_for_video_result,
)
from tests.web.video_jobs import FakeVideoJobs, Refusal, VideoScript, posted_text

pytestmark = [needs(str(CHROMIUM), "chromium"), pytest.mark.slow]

CLIP = with_spec(frames=24, cut_at=16, audio=True)
"""One second of 160x96 at 24 fps: a pan, a cut, a pan; AAC sound."""


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The grayscale clip the page sends, and the same in colour (what the stand-in returns)."""
    directory = tmp_path_factory.mktemp("clips")
    gray = make_clip(directory / "gray.mp4", CLIP)
    colour = make_clip(directory / "colour.mp4", replace(CLIP, gray=False))
    return {"gray": gray.read_bytes(), "colour": colour.read_bytes()}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> FakeVideoJobs:
    """The real service (eccv16, siggraph17, DDColor-T with generated weights; the exemplar),
    behind the video-jobs stand-in."""
    directory = tmp_path_factory.mktemp("weights")
    for model in ("eccv16", "siggraph17"):
        save_random_checkpoint(model, directory)
    save_ddcolor_checkpoint(directory / OFFICIAL["ddcolor-tiny"].filename, "tiny", seed=0)
    settings = Settings(
        weights_dir=directory, device="cpu", ddcolor_render_size=64, max_render_size=256
    )
    return FakeVideoJobs(create_app(settings))


@pytest.fixture(scope="module")
def base(service: FakeVideoJobs) -> Iterator[str]:
    with serve_in_thread(service) as url:
        yield url


@pytest.fixture
def script(service: FakeVideoJobs, clips: dict[str, bytes]) -> VideoScript:
    service.script = VideoScript(result=clips["colour"])
    service.posts.clear()
    service.deleted.clear()
    return service.script


def open_page(page: Page, base: str, model: str) -> None:
    page.goto(base)
    expect(page.locator(f"#model option[value='{model}']")).to_be_enabled()
    page.select_option("#model", model)


def test_a_video_is_sent_followed_and_played_beside_the_original(
    page: Page, base: str, service: FakeVideoJobs, script: VideoScript, clips: dict[str, bytes]
) -> None:
    open_page(page, base, "siggraph17")
    choose_video(page, clips["gray"])
    expect(page.locator("#photo-caption")).to_have_text("Your video")
    expect(page.locator("#preview-video")).to_be_visible()
    expect(page.locator("#stage")).to_be_hidden()
    expect(page.locator("#preview-note")).to_have_text("160 × 96 pixels, 1 s")
    expect(page.locator("#hints")).to_be_hidden()  # hints are for photos
    expect(page.locator("#stabilize")).to_be_checked()
    page.select_option("#model", "eccv16")

    page.click("#submit")
    expect(page.locator("#job-status")).to_have_text("Queued: number 1 in line.")
    expect(page.locator("#cancel")).to_be_visible()
    expect(page.locator("#progress-text")).to_have_text(
        "Frame 12 of 48 · 24.0 frames/s · about 2 s left"
    )
    expect(page.locator("#progress")).to_have_attribute("max", "48")
    expect(page.locator("#job-status")).to_have_text("Colorizing the video…")
    wait_for_video_result(page)

    expect(page.locator("#job-status")).to_have_text(
        "Done. Play the colour video beside the original, or download it."
    )
    expect(page.locator("#progress-box")).to_be_hidden()
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#photo-figure")).to_be_hidden()
    [fields] = service.posts
    assert fields["video"] == clips["gray"]
    assert posted_text(fields) == {"model": "eccv16", "stabilize": "true"}
    result, original = video_frame(page, "#result-video"), video_frame(page, "#original-video")
    assert (result["width"], result["height"]) == (160, 96)
    assert result["spread"] > 4, "the colour video is shown"
    assert (original["width"], original["height"]) == (160, 96)
    assert original["spread"] < 1, "the original beside it is the gray one"
    download = page.locator("#video-download")
    assert (download.get_attribute("href") or "").startswith("blob:")
    assert download.get_attribute("download") == "pan-colorized.mp4"

    # The original follows the colour video: started together, paused together.
    page.click("#play-both")
    page.wait_for_function("() => document.getElementById('result-video').currentTime > 0.3")
    page.evaluate("() => document.getElementById('result-video').pause()")
    page.wait_for_function("() => document.getElementById('original-video').paused")
    times = page.evaluate(
        "() => ['result-video', 'original-video'].map((id) => document.getElementById(id)"
        ".currentTime)"
    )
    assert abs(times[0] - times[1]) < 0.25


OPTIONS = {
    "ddcolor: render size, steady colours off": ("ddcolor-tiny", True),
    "exemplar: the reference": ("exemplar", False),
}


@pytest.mark.parametrize(("model", "ddcolor"), OPTIONS.values(), ids=OPTIONS.keys())
def test_the_engines_options_go_with_the_video(
    page: Page,
    base: str,
    service: FakeVideoJobs,
    script: VideoScript,
    clips: dict[str, bytes],
    colour_png: bytes,
    model: str,
    ddcolor: bool,
) -> None:
    open_page(page, base, model)
    choose_video(page, clips["gray"], "film.webm", "video/webm")
    if ddcolor:
        page.fill("#render-size", "96")
        page.uncheck("#stabilize")
    else:
        choose_file(page, "#reference", colour_png, "coffee.png")
    page.click("#submit")
    wait_for_video_result(page)

    [fields] = service.posts
    assert fields["video"] == clips["gray"]
    if ddcolor:
        expected = {"model": model, "stabilize": "false", "render_size": "96"}
    else:
        expected = {"model": model, "stabilize": "true"}
        assert fields["reference"] == colour_png
    assert posted_text(fields) == expected
    assert page.locator("#video-download").get_attribute("download") == "film-colorized.mp4"


def test_a_running_video_job_can_be_cancelled(
    page: Page, base: str, service: FakeVideoJobs, script: VideoScript, clips: dict[str, bytes]
) -> None:
    script.hold_at = 24
    open_page(page, base, "eccv16")
    choose_video(page, clips["gray"])
    page.click("#submit")
    expect(page.locator("#progress-text")).to_have_text(
        "Frame 24 of 48 · 24.0 frames/s · about 1 s left"
    )
    page.click("#cancel")

    expect(page.locator("#job-status")).to_have_text("The job was cancelled.")
    assert len(service.deleted) == 1
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#progress-box")).to_be_hidden()
    expect(page.locator("#video-figure")).to_be_hidden()
    expect(page.locator("#submit")).to_be_enabled()


REFUSALS = {
    "too large": (
        Refusal(
            413,
            "video_too_large",
            "the video is 16000x16000; the limit is 3840x2160 in either orientation "
            "(COLORIZE_VIDEO_MAX_LONG_SIDE, COLORIZE_VIDEO_MAX_SHORT_SIDE)",
        ),
        "The video is too large:",
    ),
    "not a video": (
        Refusal(415, "unsupported_format", "HTML is not a video"),
        "That file is not in a format the service accepts:",
    ),
    "undecodable": (
        Refusal(422, "invalid_video", "no complete moov box: the upload was cut short"),
        "The service could not read that video:",
    ),
    "busy": (
        Refusal(503, "queue_full", "the video queue is full", retry_after=7),
        "The service is busy, try again in 7 s.",
    ),
}


@pytest.mark.parametrize(("refusal", "words"), REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refused_video_is_explained_in_plain_words(
    page: Page,
    base: str,
    script: VideoScript,
    clips: dict[str, bytes],
    refusal: Refusal,
    words: str,
) -> None:
    script.refuse = refusal
    open_page(page, base, "eccv16")
    choose_video(page, clips["gray"])
    page.click("#submit")
    text = wait_for_error(page)

    assert text.startswith(words)
    assert refusal.detail in text
    expect(page.locator("#video-figure")).to_be_hidden()
    expect(page.locator("#progress-box")).to_be_hidden()
    expect(page.locator("#submit")).to_be_enabled()


def test_a_video_that_fails_while_decoding_is_explained_in_plain_words(
    page: Page, base: str, script: VideoScript, clips: dict[str, bytes]
) -> None:
    script.fail = Refusal(422, "invalid_video", "corrupt or truncated video after 12 frames")
    open_page(page, base, "eccv16")
    choose_video(page, clips["gray"])
    page.click("#submit")

    assert wait_for_error(page) == (
        "The service could not read that video: corrupt or truncated video after 12 frames."
    )


def test_a_dropped_mov_is_a_video_even_without_a_type_and_a_photo_is_a_photo(
    page: Page, base: str, script: VideoScript, clips: dict[str, bytes], gray_png: bytes
) -> None:
    open_page(page, base, "siggraph17")
    drop_file(page, "#image-drop", clips["gray"], "holiday.mov", "")
    expect(page.locator("#photo-caption")).to_have_text("Your video")
    expect(page.locator("#stabilize-field")).to_be_visible()
    expect(page.locator("#hints")).to_be_hidden()

    choose_photo(page, gray_png)
    expect(page.locator("#photo-caption")).to_have_text("Your photo")
    expect(page.locator("#stabilize-field")).to_be_hidden()
    expect(page.locator("#preview-video")).to_be_hidden()
    expect(page.locator("#preview")).to_be_visible()
    expect(page.locator("#hints")).to_be_visible()
