"""Why an uploaded image was refused; each error names its outcome (the API picks the status)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from service.outcomes import Outcome


class ImageError(Exception):
    """An upload the client must fix; `message` is the detail the client reads."""

    outcome: ClassVar[Outcome] = Outcome.INVALID_IMAGE
    title: ClassVar[str] = "invalid image"
    """Short, fixed summary for the response's `error` field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedFormat(ImageError):
    """Not one of the allowed image formats (a disallowed one, markup, text or unknown bytes)."""

    outcome = Outcome.UNSUPPORTED_FORMAT
    title = "unsupported image format"

    def __init__(self, allowed: Iterable[str], detected: str | None = None) -> None:
        self.allowed = tuple(allowed)
        self.detected = detected
        found = f"{detected} is not accepted" if detected else "unrecognised file content"
        super().__init__(f"{found}; allowed formats: {', '.join(self.allowed)}")


class ImageTooLarge(ImageError):
    """Width x height is over the pixel limit (judged from the header, before decoding)."""

    outcome = Outcome.IMAGE_TOO_LARGE
    title = "image too large"

    def __init__(self, width: int, height: int, max_pixels: int, pixels: int | None = None) -> None:
        self.width = width
        self.height = height
        self.max_pixels = max_pixels
        if pixels is None:
            size, pixels = f"{width}x{height}", width * height
        else:  # only the decoder's count is known (a canvas that outgrows its header)
            size = "as decoded"
        self.pixels = pixels
        super().__init__(f"image is {size} = {pixels} pixels; the limit is {max_pixels} pixels")


class UndecodableImage(ImageError):
    """An allowed format that cannot be decoded: empty, truncated, corrupt."""

    outcome = Outcome.INVALID_IMAGE
    title = "undecodable image"
