"""Regenerate docs/screenshot.png: `python -m tests.web.screenshot [PATH]`, or with `--video`
docs/screenshot-video.png (a film through /jobs; needs the video API). Needs Chromium."""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import Page

from devkit.checkpoints import save_random_checkpoint
from devkit.clips import ClipSpec, make_clip
from service.api.app import create_app
from service.settings import Settings
from tests.support.images import DATA_DIR
from tests.support.servers import serve_in_thread
from tests.web.browser import (
    CHROMIUM,
    TIMEOUT_MS,
    choose_file,
    choose_photo,
    choose_video,
    chromium,
    video_frame,
    wait_for_result,
    wait_for_video_result,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = ROOT / "docs" / "screenshot.png"
VIDEO_PATH = ROOT / "docs" / "screenshot-video.png"
DEMO_CLIP = ClipSpec(frames=24, width=320, height=192, cut_at=None, audio=True)
"""A second's pan across the astronaut, grayscale, with sound."""


def demo_photos() -> tuple[bytes, bytes]:
    """The astronaut at 256 x 256 made grayscale, and its colour original mirrored (reference).

    The exemplar engine needs no weights, so its result looks like a real one; eccv16 and
    siggraph17 run on generated random weights here and would paint noise.
    """
    with Image.open(DATA_DIR / "astronaut.png") as im:
        colour = im.convert("RGB").resize((256, 256), Image.Resampling.LANCZOS)
    gray = colour.convert("L")
    mirrored = colour.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _png(gray), _png(mirrored)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def capture(page: Page, base: str, path: Path) -> None:
    """Colorize the demo photo with the exemplar engine and save the whole page as `path`."""
    photo, reference = demo_photos()
    page.set_viewport_size({"width": 1280, "height": 860})
    page.goto(base)
    page.wait_for_selector("#model option[value='exemplar']:not([disabled])", state="attached")
    page.select_option("#model", "exemplar")
    choose_photo(page, photo, "astronaut-gray.png")
    choose_file(page, "#reference", reference, "astronaut-colour.png")
    page.click("#submit")
    wait_for_result(page)
    page.fill("#split", "45")
    # The panel polls every 2 s: wait until it has counted the job just done.
    page.wait_for_function(
        "() => Number(document.getElementById('jobs-done').textContent) >= 1", timeout=TIMEOUT_MS
    )
    page.locator("#split").blur()
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def capture_video(page: Page, base: str, path: Path, clip: ClipSpec = DEMO_CLIP) -> None:
    """Colorize the demo clip with the exemplar engine through /jobs and save the whole page,
    the original and the colour video side by side, as `path`."""
    _, reference = demo_photos()
    with tempfile.TemporaryDirectory() as directory:
        film = make_clip(Path(directory) / "astronaut-pan.mp4", clip).read_bytes()
    page.set_viewport_size({"width": 1280, "height": 860})
    page.goto(base)
    page.wait_for_selector("#model option[value='exemplar']:not([disabled])", state="attached")
    page.select_option("#model", "exemplar")
    choose_video(page, film, "astronaut-pan.mp4")
    choose_file(page, "#reference", reference, "astronaut-colour.png")
    page.click("#submit")
    wait_for_video_result(page)
    # Both at the same frame, drawn: a video element shows nothing before its first seek.
    for selector in ("#result-video", "#original-video"):
        video_frame(page, selector, at=0.5)
    # The panel has been filled in (it polls every 2 s).
    page.wait_for_function(
        "() => document.getElementById('device').textContent !== '–'", timeout=TIMEOUT_MS
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def main(argv: list[str]) -> int:
    video = "--video" in argv
    argv = [a for a in argv if a != "--video"]
    path = Path(argv[0]) if argv else VIDEO_PATH if video else DEFAULT_PATH
    if not CHROMIUM.exists():
        sys.stderr.write(f"no Chromium at {CHROMIUM}\n")
        return 1
    with tempfile.TemporaryDirectory() as weights:
        for model in ("eccv16", "siggraph17"):
            save_random_checkpoint(model, Path(weights))
        settings = Settings(weights_dir=Path(weights), device="cpu")
        with serve_in_thread(create_app(settings)) as base, chromium() as browser:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            (capture_video if video else capture)(page, base, path)
    sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
