"""A multipart body as it streams: which of its bytes will sit on disk (a `video` file part past
Starlette's in-memory spool) and whether it ends with its closing boundary."""

from __future__ import annotations

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.formparsers import MultiPartException
from starlette.formparsers import MultiPartParser as StarletteParser
from starlette.types import Scope

from service.api.lease import RequestLease

VIDEO_FIELD = b"video"
SPOOL_BYTES = StarletteParser.spool_max_size
"""A multipart file part stays in memory up to this many bytes, then Starlette moves it to disk."""


class Parts:
    """Follows a multipart body part by part, with the parser Starlette uses, to tell which of
    its bytes go to disk: a `video` file part past Starlette's in-memory spool."""

    def __init__(self, boundary: bytes, lease: RequestLease | None) -> None:
        self.lease = lease
        self.video = False
        """A `video` file part has begun."""
        self.video_bytes = 0
        """Bytes of `video` file parts."""
        self.on_disk = 0
        """Bytes of them past each part's in-memory spool."""
        self._header = b""
        self._value = b""
        self._disposition = b""
        self._in_video = False
        self._part_bytes = 0
        self._broken = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
            },
        )

    def feed(self, chunk: bytes) -> None:
        if self._broken or not chunk:
            return
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            # Malformed: Starlette's own parse refuses it (400); from here on, count as RAM.
            self._broken = True

    def _begin(self) -> None:
        self._disposition, self._in_video, self._part_bytes = b"", False, 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        # Starlette spools a part to a file when it has a filename, whatever its name.
        self._in_video = options.get(b"name") == VIDEO_FIELD and b"filename" in options
        if self._in_video:
            self.video = True
            if self.lease is not None:
                self.lease.video = True

    def _data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_video:
            return
        size = end - start
        before = self._part_bytes
        self._part_bytes += size
        self.video_bytes += size
        self.on_disk += max(0, self._part_bytes - SPOOL_BYTES) - max(0, before - SPOOL_BYTES)


class MultipartEnd:
    """Watches a multipart body for its closing delimiter: the parser accepts a body cut off
    before it and reports the unfinished part as missing, so such a body is a 400 here."""

    def __init__(self, scope: Scope) -> None:
        boundary = multipart_boundary(scope)
        self.opening = b"--" + boundary if boundary else b""
        self.closing = self.opening + b"--" if boundary else b""
        self.tail = b""
        self.opened = False
        self.closed = not self.closing

    def feed(self, chunk: bytes, more: bool) -> None:
        if self.closed:
            return
        window = self.tail + chunk
        self.opened = self.opened or self.opening in window
        self.closed = self.closing in window
        self.tail = window[-(len(self.closing) - 1) :]
        # A body that never used its boundary is malformed: the parser says so.
        if self.opened and not self.closed and not more:
            raise MultiPartException(
                "the multipart body ends before its closing boundary (truncated upload)"
            )


def multipart_boundary(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind, _, params = value.partition(b";")
            if kind.strip().lower() != b"multipart/form-data":
                return None
            for param in params.split(b";"):
                key, _, raw = param.strip().partition(b"=")
                boundary: bytes = raw.strip().strip(b'"')
                if key.strip().lower() == b"boundary" and boundary:
                    return boundary
    return None


def content_type(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind: bytes = value.partition(b";")[0].strip().lower()
            return kind
    return b""
