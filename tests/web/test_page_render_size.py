"""The page's render-size control for DDColor, in real Chromium against DDColor-T."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from devkit.ddcolor_checkpoints import save_random_checkpoint
from service.api.app import create_app
from service.engines.weights import OFFICIAL
from service.settings import Settings
from tests.support.servers import serve_in_thread
from tests.support.tools import needs
from tests.web.browser import CHROMIUM, Recorder, choose_photo, form_fields, wait_for_result

pytestmark = [needs(str(CHROMIUM), "chromium"), pytest.mark.slow]


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Recorder:
    """The service with a generated DDColor-T (render sizes 64 to 256) and the exemplar."""
    directory = tmp_path_factory.mktemp("ddcolor-tiny")
    save_random_checkpoint(directory / OFFICIAL["ddcolor-tiny"].filename, "tiny", seed=0)
    settings = Settings(
        weights_dir=directory, device="cpu", ddcolor_render_size=64, max_render_size=256
    )
    return Recorder(create_app(settings))


@pytest.fixture(scope="module")
def base(recorder: Recorder) -> Iterator[str]:
    with serve_in_thread(recorder) as url:
        yield url


def test_render_size_control_shows_for_ddcolor_and_is_sent(
    page: Page, base: str, recorder: Recorder, gray_png: bytes
) -> None:
    page.goto(base)
    expect(page.locator("#model option[value='ddcolor-tiny']")).to_be_enabled()
    page.select_option("#model", "exemplar")
    expect(page.locator("#render-field")).to_be_hidden()
    page.select_option("#model", "ddcolor-tiny")
    field = page.locator("#render-size")
    expect(field).to_be_visible()
    expect(field).to_have_value("64")
    expect(field).to_have_attribute("max", "256")
    expect(field).to_have_attribute("step", "32")
    field.fill("96")
    choose_photo(page, gray_png)
    recorder.posts.clear()
    page.click("#submit")
    wait_for_result(page)
    [(content_type, body)] = recorder.posts
    fields = form_fields(content_type, body)
    assert fields["model"] == b"ddcolor-tiny"
    assert fields["render_size"] == b"96"
