"""Each image error names its outcome (the API table gives GUIDE.md section 2's status) and a
message naming the fix."""

from __future__ import annotations

import pytest

from service.api.outcomes import answer
from service.imaging.errors import ImageError, ImageTooLarge, UndecodableImage, UnsupportedFormat


@pytest.mark.parametrize(
    ("error", "status", "title", "message"),
    [
        (
            UnsupportedFormat(["JPEG", "PNG"], "TIFF"),
            415,
            "unsupported image format",
            "TIFF is not accepted; allowed formats: JPEG, PNG",
        ),
        (
            UnsupportedFormat(("WEBP",)),
            415,
            "unsupported image format",
            "unrecognised file content; allowed formats: WEBP",
        ),
        (
            ImageTooLarge(8000, 6000, 40_000_000),
            413,
            "image too large",
            "image is 8000x6000 = 48000000 pixels; the limit is 40000000 pixels",
        ),
        (
            UndecodableImage("the file is empty"),
            422,
            "undecodable image",
            "the file is empty",
        ),
    ],
    ids=["415-known", "415-unknown", "413", "422"],
)
def test_status_title_and_message(error: ImageError, status: int, title: str, message: str) -> None:
    assert isinstance(error, ImageError)
    assert (answer(error.outcome).status, error.title, error.message, str(error)) == (
        status,
        title,
        message,
        message,
    )
