"""The page's files as served: headers, content types, nothing from outside, no inline code."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from service.web import CONTENT_SECURITY_POLICY, STATIC_DIR
from tests.support.apps import running_app

FILES = {
    "/static/index.html": "text/html",
    "/static/app.js": "text/javascript",
    "/static/style.css": "text/css",
}


class Markup(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline_code: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open in ("script", "style") and data.strip():
            self.inline_code.append(data)


def parse(html: str) -> Markup:
    markup = Markup()
    markup.feed(html)
    return markup


def test_the_index_is_served_at_the_root_with_a_strict_csp() -> None:
    with running_app() as (client, _):
        reply = client.get("/")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.text == (STATIC_DIR / "index.html").read_text()
    csp = reply.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["img-src"] == "'self' blob: data:"
    assert directives["media-src"] == "'self' blob:"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert reply.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(("path", "media_type"), FILES.items(), ids=FILES.keys())
def test_static_files_have_their_content_type_and_the_csp(path: str, media_type: str) -> None:
    with running_app() as (client, _):
        reply = client.get(path)
    assert reply.status_code == 200
    assert reply.headers["content-type"].split(";")[0] == media_type
    assert reply.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert reply.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("name", ["index.html", "app.js", "style.css"])
def test_nothing_is_loaded_from_outside_the_service(name: str) -> None:
    text = (STATIC_DIR / name).read_text()
    assert re.findall(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE) == []
    assert "@import" not in text
    assert "@font-face" not in text


def test_the_markup_has_no_inline_code_and_links_only_its_own_files() -> None:
    markup = parse((STATIC_DIR / "index.html").read_text())
    assert markup.inline_code == []
    for tag, attrs in markup.tags:
        assert "style" not in attrs, f"<{tag}> has a style attribute (blocked by the CSP)"
        handlers = [a for a in attrs if a.startswith("on")]
        assert handlers == [], f"<{tag}> has inline handlers {handlers}"
        if tag == "script":
            assert attrs.get("src") == "/static/app.js"
    links = [attrs.get("src") or attrs.get("href") for _, attrs in markup.tags]
    for link in filter(None, links):
        assert link.startswith(("/static/", "#", "data:")), link


def test_every_element_the_script_uses_is_in_the_page() -> None:
    script = (STATIC_DIR / "app.js").read_text()
    used = set(re.findall(r'\$\("([a-z-]+)"\)', script))
    ids = {attrs.get("id") for _, attrs in parse((STATIC_DIR / "index.html").read_text()).tags}
    assert len(used) > 20
    assert used - ids == set()


def test_every_form_control_has_a_label() -> None:
    markup = parse((STATIC_DIR / "index.html").read_text())
    labelled = {attrs.get("for") for tag, attrs in markup.tags if tag == "label"}
    controls = [
        attrs
        for tag, attrs in markup.tags
        if tag in ("input", "select", "textarea") and attrs.get("type") != "hidden"
    ]
    assert controls
    for attrs in controls:
        assert attrs.get("id") in labelled or "aria-label" in attrs, attrs


def test_the_page_and_its_files_are_open_when_an_api_key_is_set() -> None:
    with running_app(api_key="k") as (client, _):
        assert client.get("/v1/models").status_code == 401
        for path in ("/", *FILES):
            assert client.get(path).status_code == 200, path
        assert client.head("/").status_code == 200


def test_the_page_is_not_part_of_the_api_schema() -> None:
    with running_app() as (client, _):
        paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not any(p.startswith("/static") for p in paths)


def test_a_missing_static_file_is_a_json_404() -> None:
    with running_app() as (client, _):
        reply = client.get("/static/nope.js")
    assert reply.status_code == 404
    assert reply.json()["error"] == "not_found"
