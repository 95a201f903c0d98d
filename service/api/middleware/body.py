"""The request body: under the byte limit, held in host memory only as it arrives, and ended
when it stalls or trickles.

A body is reserved from the host budget as its bytes arrive, never for the length it declares:
sixty idle uploads that declare 25 MiB and send 4 bytes hold 240 bytes, not 1.5 GB. Bodies in
flight may hold at most COLORIZE_BODY_MEMORY_SHARE of the host budget, one client at most
COLORIZE_CLIENT_BODY_SHARE, so the rest stays for the jobs. A body with no bytes for
COLORIZE_BODY_IDLE_TIMEOUT_S, or slower than COLORIZE_BODY_MIN_RATE_BYTES_S after its grace
period, is answered 408 and its memory returned.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.lease import RequestLease, lease_of
from service.api.middleware.base import HttpMiddleware
from service.api.middleware.refuse import refuse
from service.api.outcomes import answer
from service.memory import MemoryManager, MemoryRefused, NeverFits
from service.outcomes import Outcome
from service.settings import Settings


class BodyRefused(HTTPException):
    """Raised from `receive` mid-body (FastAPI re-raises it); answered from the outcome table."""

    def __init__(self, outcome: Outcome, detail: str, retry_after: int | None = None) -> None:
        chosen = answer(outcome)
        wait = retry_after if retry_after is not None else chosen.retry_after
        super().__init__(chosen.status, detail, {"Retry-After": str(wait)} if wait else None)
        self.outcome = outcome


class BodyLimit(HttpMiddleware):
    """Byte limit, memory as bytes arrive, and time limits for request bodies."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(app)
        self.settings = settings
        self._by_client: Counter[str] = Counter()
        self._in_flight = 0
        self._lock = threading.Lock()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_upload_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            detail = f"the request body exceeds the {limit}-byte upload limit"
            await refuse(scope, send, Outcome.BODY_TOO_LARGE, detail)
            return
        host = _host_manager(scope)
        lease = lease_of(scope)
        if host is None or lease is None or length == 0:
            await self.app(scope, _Body(self, receive, scope, None, None).receive, send)
            return
        refusal = self._refusal(host, lease, length)
        if refusal is not None:
            await refuse(scope, send, *refusal)
            return
        body = _Body(self, receive, scope, host, lease)
        try:
            await self.app(scope, body.receive, send)
        finally:
            body.settle()

    def _refusal(
        self, host: MemoryManager, lease: RequestLease, length: int | None
    ) -> tuple[Outcome, str] | None:
        """Why a body that declares `length` cannot start now (checked before reading it)."""
        if length is None:
            return None
        budget = host.job_budget()
        if length > budget:
            detail = f"the {length}-byte body does not fit the host memory budget ({budget})"
            return Outcome.TOO_LARGE, detail
        room = self.room(lease.client, budget)
        if length > room:
            return Outcome.MEMORY_BUSY, (
                f"request bodies in flight hold the share of host memory they may use; "
                f"{room} bytes are free for this body of {length}"
            )
        return None

    def room(self, client: str, budget: int) -> int:
        """Bytes a body from `client` may still take: the smaller of the bodies' share and the
        client's share of the host budget."""
        with self._lock:
            total = int(self.settings.body_memory_share * budget) - self._in_flight
            mine = int(self.settings.client_body_share * budget) - self._by_client[client]
        return max(0, min(total, mine))

    def account(self, client: str, nbytes: int) -> None:
        with self._lock:
            self._in_flight += nbytes
            self._by_client[client] += nbytes
            if self._by_client[client] <= 0:
                del self._by_client[client]


class _Body:
    """One request's `receive`: counts bytes, grows the reservation, enforces the times."""

    def __init__(
        self,
        limits: BodyLimit,
        receive: Receive,
        scope: Scope,
        host: MemoryManager | None,
        lease: RequestLease | None,
    ) -> None:
        self.limits = limits
        self.settings = limits.settings
        self._receive = receive
        self.host = host
        self.lease = lease
        self.client = lease.client if lease is not None else ""
        self.seen = 0
        self.accounted = 0
        self.started = time.monotonic()
        self.complete = False
        self.multipart = _MultipartEnd(scope)

    async def receive(self) -> Message:
        if self.complete:
            # The body is in: what comes now is the disconnect, whenever the client leaves.
            return await self._receive()
        try:
            message = await asyncio.wait_for(
                self._receive(), timeout=self.settings.body_idle_timeout_s
            )
        except asyncio.TimeoutError:
            self.settle()
            raise BodyRefused(
                Outcome.BODY_TIMEOUT,
                f"no bytes of the request body arrived for {self.settings.body_idle_timeout_s:g} s",
            ) from None
        if message["type"] != "http.request":
            return message
        chunk = message.get("body", b"")
        self.seen += len(chunk)
        if self.seen > self.settings.max_upload_bytes:
            self.settle()
            raise BodyRefused(
                Outcome.BODY_TOO_LARGE,
                f"the request body exceeds the {self.settings.max_upload_bytes}-byte upload limit",
            )
        self._check_rate()
        self._hold()
        more = bool(message.get("more_body", False))
        self.multipart.feed(chunk, more)
        if not more:
            self.complete = True
            if self.lease is not None:
                self.lease.body_complete = True
            self.settle()
        return message

    def _check_rate(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.settings.body_min_rate_bytes_s
        if elapsed > self.settings.body_rate_grace_s and self.seen < rate * elapsed:
            self.settle()
            raise BodyRefused(
                Outcome.BODY_TIMEOUT,
                f"the request body arrives at {self.seen / elapsed:.0f} bytes/s, under the "
                f"minimum of {rate} bytes/s",
            )

    def _hold(self) -> None:
        """Reserve host memory for the bytes that arrived."""
        if self.host is None or self.lease is None:
            return
        held = self.lease.body
        have = 0 if held is None else held.nbytes
        step = self.seen - have
        if step <= 0:
            return
        budget = self.host.job_budget()
        if step > self.limits.room(self.client, budget):
            self.settle()
            raise BodyRefused(
                Outcome.MEMORY_BUSY,
                "request bodies in flight hold the share of host memory they may use",
            )
        try:
            if held is None:
                self.lease.body = self.host.reserve(step, 0.0, purpose="body")
            else:
                held.grow(step)
        except (MemoryRefused, NeverFits) as exc:
            self.settle()
            raise BodyRefused(
                Outcome.MEMORY_BUSY, f"host memory is busy: the body cannot be held ({exc})"
            ) from None
        self.limits.account(self.client, step)
        self.accounted += step

    def settle(self) -> None:
        """The body stopped arriving: it no longer counts against the bodies' shares (its
        memory stays reserved until the request or its job lets go)."""
        if self.accounted:
            self.limits.account(self.client, -self.accounted)
            self.accounted = 0


class _MultipartEnd:
    """Watches a multipart body for its closing delimiter: the parser accepts a body cut off
    before it and reports the unfinished part as missing, so such a body is a 400 here."""

    def __init__(self, scope: Scope) -> None:
        boundary = _multipart_boundary(scope)
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


def _host_manager(scope: Scope) -> MemoryManager | None:
    # The lifespan makes the manager after the middleware stack is built: look it up per call.
    svc = getattr(getattr(scope.get("app"), "state", None), "svc", None)
    host: MemoryManager | None = getattr(svc, "host", None)
    return host


def _multipart_boundary(scope: Scope) -> bytes | None:
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


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
