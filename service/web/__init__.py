"""The page for people: the index at `/`, its script and styles under `/static`."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
INDEX = STATIC_DIR / "index.html"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        # blob: shows the chosen photo and the fetched result; data: is the empty favicon.
        "img-src 'self' blob: data:",
        # blob: plays the chosen video and the fetched result beside it.
        "media-src 'self' blob:",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
"""The page is served by the service it drives, so nothing but its own files may run or load."""

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    # No version in the file names: revalidate so a new release is picked up at once.
    "Cache-Control": "no-cache",
}


class PageFiles(StaticFiles):
    """StaticFiles that send the page's security and caching headers with every file."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(PAGE_HEADERS)
        return response


async def index() -> FileResponse:
    """The single page."""
    return FileResponse(INDEX, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def mount_web(app: FastAPI) -> None:
    """Serve the page at `/` and its files under `/static` (both open: see Guard)."""
    app.add_api_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/static", PageFiles(directory=STATIC_DIR), name="static")
