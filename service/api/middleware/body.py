"""The request body: under the byte limit, held in host memory only as it arrives, and ended
when it stalls or trickles.

A body is reserved from the host budget as its bytes arrive, never for the length it declares:
sixty idle uploads that declare 25 MiB and send 4 bytes hold 240 bytes, not 1.5 GB. Bodies in
flight may hold at most COLORIZE_BODY_MEMORY_SHARE of the host budget, one client at most
COLORIZE_CLIENT_BODY_SHARE, so the rest stays for the jobs. A body with no bytes for
COLORIZE_BODY_IDLE_TIMEOUT_S, or slower than COLORIZE_BODY_MIN_RATE_BYTES_S after its grace
period, is answered 408 and its memory returned.

Only what can sit in RAM is reserved. A photo, a reference and form fields are held in memory
(COLORIZE_MAX_UPLOAD_BYTES bounds them together); a video is on disk as it arrives: a raw
video/* body is written to a spool file in pieces, and a multipart `video` file part is spooled
by Starlette past its first MiB. So a video body's reservation stops growing at those pieces
while its bytes are bounded by COLORIZE_VIDEO_MAX_UPLOAD_BYTES. Multipart bodies are followed
part by part with the parser Starlette itself uses (python-multipart), so the bytes of each
part are counted where they will be; on /colorize a `video` part is refused as soon as its
headers arrive (415 `video_goes_to_jobs`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.lease import UPLOAD_PATHS, RequestLease, lease_of
from service.api.middleware.base import HttpMiddleware
from service.api.middleware.multipart import (
    SPOOL_BYTES,
    MultipartEnd,
    Parts,
    content_type,
    multipart_boundary,
)
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


VIDEO_PATH = "/jobs"
RAW_VIDEO_RAM_BYTES = 2 * 1024 * 1024
"""What a raw video/* body holds in memory while it is written to its spool file (a piece being
gathered, and the chunk that arrived; service/api/uploads.py)."""


@dataclass(frozen=True)
class _Plan:
    """What a request body may be: how many bytes, and how much of it can sit in RAM."""

    max_bytes: int
    """Bytes of the whole body."""
    too_large: str
    """The 413's detail."""
    raw_video: bool = False
    """A video/* body: it goes to disk as it arrives."""
    parts: bool = False
    """A multipart upload: followed part by part (a `video` part goes to disk)."""
    takes_video: bool = False
    """The route takes a `video` part (POST /jobs); elsewhere one is refused at once."""
    ram_bytes: int | None = None
    """The most of it that can ever be in RAM (None: all of it)."""

    def surely_in_ram(self, length: int | None) -> int | None:
        """What a body that declares `length` bytes will hold in RAM for certain (judged before
        it is read): a multipart upload to /jobs may be a video on disk, so only its first part
        is certain; the rest is judged as it arrives."""
        if length is None or self.ram_bytes is None:
            return length
        if self.parts:
            return min(length, SPOOL_BYTES)
        return min(length, self.ram_bytes)


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
        plan = self.plan(scope)
        length = _content_length(scope)
        if length is not None and length > plan.max_bytes:
            await refuse(scope, send, Outcome.BODY_TOO_LARGE, plan.too_large)
            return
        host = _host_manager(scope)
        lease = lease_of(scope)
        if host is None or lease is None or length == 0:
            await self.app(scope, _Body(self, receive, scope, None, None, plan).receive, send)
            return
        refusal = self._refusal(host, lease, plan.surely_in_ram(length))
        if refusal is not None:
            await refuse(scope, send, *refusal)
            return
        body = _Body(self, receive, scope, host, lease, plan)
        try:
            await self.app(scope, body.receive, send)
        finally:
            body.settle()

    def plan(self, scope: Scope) -> _Plan:
        """The limits of this request's body, from its route and content type."""
        settings = self.settings
        photo = settings.max_upload_bytes
        video = settings.video_max_upload_bytes
        kind = content_type(scope)
        takes_video = scope["path"] == VIDEO_PATH
        photo_detail = f"the request body exceeds the {photo}-byte upload limit"
        video_detail = (
            f"the video exceeds the {video}-byte video upload limit "
            "(COLORIZE_VIDEO_MAX_UPLOAD_BYTES)"
        )
        if kind.startswith(b"video/"):
            # /colorize refuses it before reading a byte (415, pointing to /jobs).
            return _Plan(video, video_detail, raw_video=True, ram_bytes=RAW_VIDEO_RAM_BYTES)
        if kind == b"multipart/form-data" and scope["path"] in UPLOAD_PATHS:
            if not takes_video:
                return _Plan(photo, photo_detail, parts=True)
            return _Plan(
                photo + video,
                f"the request body exceeds {photo} bytes of photos and fields "
                f"(COLORIZE_MAX_UPLOAD_BYTES) plus a {video}-byte video "
                "(COLORIZE_VIDEO_MAX_UPLOAD_BYTES)",
                parts=True,
                takes_video=True,
                # A photo, a reference and the fields, and each video part's first MiB.
                ram_bytes=photo + SPOOL_BYTES,
            )
        return _Plan(photo, photo_detail)

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
        plan: _Plan,
    ) -> None:
        self.limits = limits
        self.settings = limits.settings
        self._receive = receive
        self.host = host
        self.lease = lease
        self.plan = plan
        self.client = lease.client if lease is not None else ""
        self.seen = 0
        self.accounted = 0
        self.started = time.monotonic()
        self.complete = False
        self.multipart = MultipartEnd(scope)
        boundary = multipart_boundary(scope) if plan.parts else None
        self.parts = Parts(boundary, lease) if boundary else None

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
        if self.parts is not None:
            self.parts.feed(chunk)
            if self.parts.video and not self.plan.takes_video:
                self.settle()
                raise BodyRefused(
                    Outcome.VIDEO_ON_IMAGE_PATH,
                    "a 'video' field: videos are coloured as asynchronous jobs; POST it to /jobs "
                    "as the multipart field 'video' (or as a raw video/* body), then follow "
                    "GET /jobs/{id}",
                )
        self._check_size()
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

    def _check_size(self) -> None:
        plan, settings = self.plan, self.settings
        detail = None
        if self.seen > plan.max_bytes:
            detail = plan.too_large
        elif self.parts is not None and plan.takes_video:
            if self.seen - self.parts.video_bytes > settings.max_upload_bytes:
                detail = (
                    f"the photos and fields of the request body exceed the "
                    f"{settings.max_upload_bytes}-byte upload limit (COLORIZE_MAX_UPLOAD_BYTES)"
                )
            elif self.parts.video_bytes > settings.video_max_upload_bytes:
                detail = (
                    f"the video exceeds the {settings.video_max_upload_bytes}-byte video upload "
                    "limit (COLORIZE_VIDEO_MAX_UPLOAD_BYTES)"
                )
        if detail is not None:
            self.settle()
            raise BodyRefused(Outcome.BODY_TOO_LARGE, detail)

    @property
    def in_ram(self) -> int:
        """Bytes of the body that are in memory now (or will be, once the route reads them)."""
        if self.plan.raw_video:
            return min(self.seen, RAW_VIDEO_RAM_BYTES)
        if self.parts is not None:
            return self.seen - self.parts.on_disk
        return self.seen

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
        step = self.in_ram - have
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


def _host_manager(scope: Scope) -> MemoryManager | None:
    # The lifespan makes the manager after the middleware stack is built: look it up per call.
    svc = getattr(getattr(scope.get("app"), "state", None), "svc", None)
    host: MemoryManager | None = getattr(svc, "host", None)
    return host


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
