"""The HTTP/1.1 layer under the app: uvicorn's h11 protocol, made strict and bounded.

- **Refusals the client reads.** uvicorn answers a request it cannot parse with a plain-text 400
  and closes the socket at once; the client is usually still sending, and closing with its bytes
  unread makes the kernel send a reset that destroys the answer. Here every refusal is JSON, says
  which limit was hit, and closes the way RFC 9112 §9.6 asks: our side shuts its write half, the
  client's remaining bytes are read and dropped for a bounded time and amount, then it closes.
- **Strict framing** (RFC 9112): a request with both Content-Length and Transfer-Encoding is
  refused and the connection closed (§6.1: behind a proxy that frames by Content-Length, the
  rest of the body would be served as a smuggled request); obsolete line folding (§5.2) and
  bare-LF line ends (§2.2) are refused; a version other than 1.0 or 1.1 is 505.
- **Bounded heads and connections.** The request line and headers must arrive within
  COLORIZE_HEADER_TIMEOUT_S (uvicorn times out only idle keep-alive connections, so a head sent
  a byte at a time held its socket for ever); past COLORIZE_MAX_CONNECTIONS a new connection
  evicts the oldest one still waiting for its head, or is refused with 503 at once, so the
  process never runs out of descriptors; a connection serves at most
  COLORIZE_MAX_REQUESTS_PER_CONNECTION requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings

log = logging.getLogger(__name__)

LINGER_S = 2.0
"""Longest a refused connection stays open to drain what the client is still sending."""
LINGER_BYTES = 4 * 1024 * 1024
"""Most bytes drained from a refused connection before it is closed regardless."""
HEAD_SCAN_BYTES = 64 * 1024
"""Bytes of a head kept for the strict checks; past h11's own 16 KiB limit it answers 431."""
_HEAD_END = re.compile(rb"\r?\n\r?\n")
REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
    505: b"HTTP Version Not Supported",
}


class RefusingH11Protocol(H11Protocol):
    """uvicorn's h11 protocol: strict, time-bounded, capped, refusing in JSON."""

    header_timeout_s: ClassVar[float] = Settings.model_fields["header_timeout_s"].default
    max_connections: ClassVar[int] = Settings.model_fields["max_connections"].default
    max_requests: ClassVar[int] = Settings.model_fields["max_requests_per_connection"].default

    _draining = False
    _drained = 0
    _linger_timer: asyncio.TimerHandle | None = None
    _head_timer: asyncio.TimerHandle | None = None
    _awaiting_head = True
    _head_since = 0.0
    _served = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = bytearray()

    # -- connections --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._evict_one():
            self._refuse(
                503,
                "too_many_connections",
                f"the server holds its limit of {self.max_connections} connections; try again",
                retry_after=1,
            )
            return
        self._await_head()

    def _evict_one(self) -> bool:
        """Make room: cut short a connection that was already refused and lingers to drain its
        client, else close the one that has waited longest for its request head (a slow or idle
        client); False if every other connection has a request in progress."""
        others = [
            c for c in self.connections if isinstance(c, RefusingH11Protocol) and c is not self
        ]
        for c in others:
            # Many heads time out at once under a slow-client flood; while they linger they
            # would otherwise fill the cap with answered connections and refuse everyone.
            if c._draining and not c.transport.is_closing():
                c.transport.close()
                return True
        waiting = [c for c in others if c._awaiting_head and not c._draining]
        if not waiting:
            return False
        min(waiting, key=lambda c: c._head_since)._head_timed_out()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._linger_timer, self._head_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    # -- request heads ------------------------------------------------------------------------

    def _await_head(self) -> None:
        self._awaiting_head = True
        self._head.clear()
        self._head_since = time.monotonic()
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        if not self._awaiting_head or self._draining or self.transport.is_closing():
            return
        if not self._head and not self.conn.trailing_data[0]:
            self.transport.close()  # nothing of a request yet (an idle connection): just close
            return
        self._refuse(
            408,
            "request_head_timeout",
            f"the request line and headers did not arrive within {self.header_timeout_s:g} s",
        )

    def data_received(self, data: bytes) -> None:
        if self._draining:
            self._drained += len(data)
            if self._drained > LINGER_BYTES:
                self.transport.close()
            return
        if self._awaiting_head and not self._checked_head(data):
            return
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # a request head was complete: its request is under way
            self._head_started()

    def _head_started(self) -> None:
        self._awaiting_head = False
        self._head.clear()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._served += 1
        if self._served >= self.max_requests:
            # uvicorn adds `Connection: close` to the answer when the request carries it: the
            # client must learn before it reuses the socket, or its next request meets a reset.
            self.headers.append((b"connection", b"close"))  # the list the scope holds
            self.cycle.keep_alive = False

    def _checked_head(self, data: bytes) -> bool:
        """Add `data` to the head being received; refuse (and return False) a head that breaks
        the strict rules once it is complete."""
        if len(self._head) < HEAD_SCAN_BYTES:
            self._head += data[: HEAD_SCAN_BYTES - len(self._head)]
        problem = head_problem(bytes(self._head))
        if problem is None:
            return True
        self._refuse(*problem)
        return False

    def on_response_complete(self) -> None:
        # A pipelined next request may already sit in h11's buffer: it gets the same checks.
        pending = self.conn.trailing_data[0]
        problem = head_problem(pending) if pending else None
        if problem is not None:
            self._refuse(*problem)
            return
        cycle = self.cycle
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.cycle is not cycle:
            self._head_started()
        else:
            self._await_head()
            self._head += pending[:HEAD_SCAN_BYTES]

    # -- refusing -----------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        # h11 could not parse the request: a head over its size limit, or broken framing.
        limit = self.conn._max_incomplete_event_size  # what this connection was built with
        if len(self.conn.trailing_data[0]) > limit:
            detail = (
                f"the request line and headers exceed {limit} bytes; send long values (such as "
                "hints) as form fields in the body"
            )
            self._refuse(431, "request_head_too_large", detail)
        else:
            detail = "the request is not valid HTTP/1.1 (request line, headers or framing)"
            self._refuse(400, "malformed_http", detail)

    def _refuse(self, status: int, error: str, detail: str, retry_after: int | None = None) -> None:
        """Answer JSON outside h11 (its state may be anywhere) and close with a linger."""
        if self._draining or self.transport.is_closing():
            return
        body = json.dumps({"error": error, "detail": detail}).encode()
        head = [
            b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error")),
            b"content-type: application/json",
            b"content-length: %d" % len(body),
            b"connection: close",
            b"x-content-type-options: nosniff",
        ]
        if retry_after is not None:
            head.append(b"retry-after: %d" % retry_after)
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's answer, if any comes, goes nowhere
            self.cycle.message_event.set()
        self._awaiting_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._linger()

    def _linger(self) -> None:
        self._draining = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)


def head_problem(head: bytes) -> tuple[int, str, str] | None:
    """What breaks the strict rules in a complete request head (None: fine, or not complete)."""
    head = head.lstrip(b"\r\n")  # empty lines before a request line are allowed (§2.2)
    end = _HEAD_END.search(head)
    if end is None:
        return None
    text = head[: end.start()]
    if end.group() != b"\r\n\r\n" or any(not ln.endswith(b"\r") for ln in text.split(b"\n")[:-1]):
        return 400, "malformed_http", "line ends must be CRLF; a bare LF is refused"
    lines = text.split(b"\r\n")
    version = lines[0].rsplit(b" ", 1)[-1]
    if version.startswith(b"HTTP/") and version not in (b"HTTP/1.1", b"HTTP/1.0"):
        return (
            505,
            "http_version_not_supported",
            f"this server speaks HTTP/1.1, not {version[5:12].decode('ascii', 'replace')}",
        )
    if any(line[:1] in (b" ", b"\t") for line in lines[1:]):
        return (
            400,
            "malformed_http",
            "obsolete line folding (a header line that starts with a space)",
        )
    names = {line.split(b":", 1)[0].strip().lower() for line in lines[1:]}
    if b"content-length" in names and b"transfer-encoding" in names:
        return (
            400,
            "malformed_http",
            "a request may not carry both Content-Length and Transfer-Encoding (RFC 9112 §6.1)",
        )
    return None


def protocol_for(settings: Settings) -> type[RefusingH11Protocol]:
    """The protocol class with this service's limits."""
    return type(
        "ServiceH11Protocol",
        (RefusingH11Protocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            "max_connections": settings.max_connections,
            "max_requests": settings.max_requests_per_connection,
        },
    )


class AcceptErrors:
    """The event loop's exception handler, with 'out of system resource' accept errors logged
    at most once per `every_s` (each failed accept logs one, thousands a second at the limit)."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last = 0.0
        self._quiet = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != self.MESSAGE:
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self._last < self.every_s:
            self._quiet += 1
            return
        log.error(
            "cannot accept connections: %s (%d more since the last report); lower "
            "COLORIZE_MAX_CONNECTIONS or raise the file-descriptor limit",
            context.get("exception"),
            self._quiet,
        )
        self._last, self._quiet = now, 0
