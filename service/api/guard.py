"""ASGI middleware in front of the app: API key before the body, byte limit while streaming, and
host memory reserved for the body before it is read."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.outcomes import answer
from service.memory import MemoryManager, MemoryRefused, NeverFits, Reservation
from service.outcomes import Outcome

OPEN_PATHS = ("/livez", "/readyz", "/docs", "/redoc", "/openapi.json", "/favicon.ico")
OPEN_PREFIXES = ("/static/",)
BODY_RESERVATION = "body_reservation"
"""Key in the request's state of the host reservation covering its body (the job takes it)."""
AFTER_SEND = "after_send"
"""Key in the request's state of callables run as the last bytes of the answer are handed to the
server (the route gives back the result's host memory there)."""
STREAM_STEP_BYTES = 1 << 20
"""A body without Content-Length is reserved in steps of this much as it streams."""


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the streamed body passes the limit (FastAPI re-raises it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds the {limit}-byte upload limit")


class HostMemoryBusy(HTTPException):
    """Raised from `receive` when a streamed body outgrows what the host budget can give now."""

    def __init__(self, detail: str) -> None:
        chosen = answer(Outcome.MEMORY_BUSY)
        super().__init__(chosen.status, detail, {"Retry-After": str(chosen.retry_after or 1)})
        self.error = chosen.error


class Guard:
    """Checks the API key and the upload size before any handler reads the body."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        api_key: str | None = None,
        protect_metrics: bool = False,
        open_paths: Iterable[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key.encode() if api_key else None
        self.open_paths = set(open_paths) | {"/"}
        if not protect_metrics:
            self.open_paths.add("/metrics")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_security_headers(send)
        path: str = scope["path"]
        if self.api_key is not None and not self._is_open(path) and not self._authorized(scope):
            await _reject(
                send,
                401,
                "unauthorized",
                "a valid 'Authorization: Bearer <key>' is required",
                {"www-authenticate": "Bearer"},
            )
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await _reject(
                send,
                413,
                "too_large",
                f"the request body exceeds the {self.max_body_bytes}-byte upload limit",
            )
            return
        host = _host_manager(scope)
        if host is None or scope.get("method") not in ("POST", "PUT", "PATCH") or length == 0:
            await self.app(scope, self._counting(receive, _multipart_boundary(scope)), send)
            return
        # The body is reserved before a byte of it is read: a request that cannot be held now
        # is refused at once, and one that could never be held is refused for good.
        try:
            reservation = host.reserve(length or 0, 0.0, purpose="body")
        except NeverFits as exc:
            chosen = answer(Outcome.TOO_LARGE)
            detail = f"the {length}-byte body does not fit the host memory budget ({exc.budget})"
            await _reject(send, chosen.status, chosen.error, detail)
            return
        except MemoryRefused as exc:
            chosen = answer(Outcome.MEMORY_BUSY)
            detail = f"host memory is busy: the {length}-byte body cannot be held now ({exc})"
            retry = {"retry-after": str(chosen.retry_after or 1)}
            await _reject(send, chosen.status, chosen.error, detail, retry)
            return
        state = scope.setdefault("state", {})
        state[BODY_RESERVATION] = reservation
        state[AFTER_SEND] = []
        try:
            await self.app(
                scope,
                self._counting(receive, _multipart_boundary(scope), reservation, length),
                _releasing(send, state),
            )
        finally:
            # Unless the job took it over (service/api/inputs.py), the body's bytes are gone.
            if state.get(BODY_RESERVATION) is reservation:
                reservation.release()

    def _is_open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(OPEN_PREFIXES)

    def _authorized(self, scope: Scope) -> bool:
        assert self.api_key is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                # compare_digest takes the same time wherever the first difference is.
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    token.strip(), self.api_key
                )
        return False

    def _counting(
        self,
        receive: Receive,
        boundary: bytes | None,
        reservation: Reservation | None = None,
        length: int | None = None,
    ) -> Receive:
        seen = 0
        limit = self.max_body_bytes
        # The multipart parser accepts a body cut off before its closing delimiter and reports
        # the unfinished part as missing; watch for the delimiter so such a body is a 400.
        opening = b"--" + boundary if boundary else b""
        closing = opening + b"--" if boundary else b""
        tail = b""
        opened = False
        closed = not closing

        async def counted() -> Message:
            nonlocal seen, tail, opened, closed
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                seen += len(body)
                if seen > limit:
                    raise BodyTooLarge(limit)
                if reservation is not None and length is None and seen > reservation.nbytes:
                    step = max(STREAM_STEP_BYTES, seen - reservation.nbytes)
                    try:
                        reservation.grow(min(step, limit - reservation.nbytes))
                    except (MemoryRefused, NeverFits) as exc:
                        raise HostMemoryBusy(
                            f"host memory is busy: the streamed body cannot be held ({exc})"
                        ) from None
                if not closed:
                    window = tail + body
                    opened = opened or opening in window
                    closed = closing in window
                    tail = window[-(len(closing) - 1) :]
                    # A body that never used its boundary is malformed: the parser says so.
                    if opened and not closed and not message.get("more_body", False):
                        raise MultiPartException(
                            "the multipart body ends before its closing boundary (truncated upload)"
                        )
            return message

        return counted


def _releasing(send: Send, state: dict[str, object]) -> Send:
    """`send` that gives memory back as the answer goes out, before the client can see it: the
    body's (unless a job took it) once the answer starts, the result's with its last bytes."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            body = state.get(BODY_RESERVATION)
            if isinstance(body, Reservation):
                body.release()
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            callbacks = state.get(AFTER_SEND)
            if isinstance(callbacks, list):
                state[AFTER_SEND] = []
                for callback in callbacks:
                    callback()
        await send(message)

    return wrapped


def _host_manager(scope: Scope) -> MemoryManager | None:
    # The lifespan makes the manager after the middleware stack is built: look it up per call.
    app = scope.get("app")
    svc = getattr(getattr(app, "state", None), "svc", None)
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


def _with_security_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            names = {n.lower() for n, _ in headers}
            if b"x-content-type-options" not in names:
                headers.append((b"x-content-type-options", b"nosniff"))
            if b"referrer-policy" not in names:
                headers.append((b"referrer-policy", b"no-referrer"))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def _reject(
    send: Send, status: int, error: str, detail: str, extra: dict[str, str] | None = None
) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    # Close the connection: the unread body would otherwise be parsed as the next request.
    headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
