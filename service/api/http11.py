"""The HTTP/1.1 layer under the app: uvicorn's h11 protocol, refusing what it cannot parse with a
JSON answer the client gets to read.

uvicorn answers a request it cannot parse (a request line or headers over h11's 16 KiB, broken
framing) with a plain-text 400 and closes the socket at once. The client is usually still sending:
closing with its bytes unread makes the kernel send a reset, which destroys the answer before the
client reads it ("connection reset by peer" for a long URL). Here the answer is JSON, says which
limit was hit (431 for an oversized head, as h11 itself suggests), and the connection closes the
way RFC 9112 section 9.6 asks: our side shuts its write half, the client's remaining bytes are
read and dropped for a bounded time and amount, then the socket closes.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

LINGER_S = 2.0
"""Longest a refused connection stays open to drain what the client is still sending."""
LINGER_BYTES = 4 * 1024 * 1024
"""Most bytes drained from a refused connection before it is closed regardless."""


class RefusingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with JSON refusals and a lingering close."""

    _draining = False
    _drained = 0
    _linger_timer: asyncio.TimerHandle | None = None

    def send_400_response(self, msg: str) -> None:
        status, body = self._refusal()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (b"x-content-type-options", b"nosniff"),
        ]
        for event in (h11.Response(status_code=status, headers=headers), h11.Data(data=body)):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        self._linger()

    def _refusal(self) -> tuple[int, bytes]:
        limit = self.conn._max_incomplete_event_size  # what this connection was built with
        if len(self.conn.trailing_data[0]) > limit:
            status, error = 431, "request_head_too_large"
            detail = (
                f"the request line and headers exceed {limit} bytes; send long values (such as "
                "hints) as form fields in the body"
            )
        else:
            status, error = 400, "malformed_http"
            detail = "the request is not valid HTTP/1.1 (request line, headers or framing)"
        return status, json.dumps({"error": error, "detail": detail}).encode()

    def _linger(self) -> None:
        self._draining = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if not self._draining:
            super().data_received(data)
            return
        self._drained += len(data)
        if self._drained > LINGER_BYTES:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)
