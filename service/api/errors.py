"""One error shape for every failure: `{"error": code, "detail": message}`, its status and code
from the outcome table (service/api/outcomes.py), recorded on the request's lease so that the
answer is counted with the outcome it states."""

from __future__ import annotations

import errno
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.api.lease import RequestLease, lease_of
from service.api.outcomes import HTTP_ERRORS, answer
from service.engines.base import EngineNotReady, InvalidRequest
from service.imaging.errors import ImageError
from service.outcomes import Outcome
from service.worker.queue import WorkerUnavailable

log = logging.getLogger(__name__)

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A full disk (or a quota reached): answered disk_full, not 500."""

ERROR_BODY = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}


class ApiError(Exception):
    """An answer about a resource rather than an upload (an unknown job, a job not finished):
    its status and code are the route's."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail


class OutcomeError(Exception):
    """An outcome to answer now (before a job exists, or as a job ended)."""

    def __init__(self, outcome: Outcome, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.retry_after = retry_after


def error_response(
    status: int, error: str, detail: str, retry_after: int | None = None
) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def outcome_response(
    request: Request, outcome: Outcome, detail: str, retry_after: int | None = None
) -> JSONResponse:
    """The answer for `outcome` (the one table), recorded on the request's lease."""
    chosen = answer(outcome)
    wait = retry_after if retry_after is not None else chosen.retry_after
    response = error_response(chosen.status, chosen.error, detail, wait)
    lease = record(request, outcome)
    if lease is not None and lease.upload and not lease.body_complete:
        # The body was not read to its end: its rest would be parsed as the next request.
        response.headers["Connection"] = "close"
    return response


def record(request: Request, outcome: Outcome) -> RequestLease | None:
    """Note on the request's lease what its answer states (the counted outcome)."""
    lease = lease_of(request)
    if lease is not None:
        lease.outcome = outcome
    return lease


def install_handlers(app: FastAPI) -> None:
    """Map every error to its answer (see ../shared/GUIDE.md section 2)."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.detail)

    @app.exception_handler(OutcomeError)
    async def _outcome(request: Request, exc: OutcomeError) -> JSONResponse:
        return outcome_response(request, exc.outcome, exc.detail, exc.retry_after)

    @app.exception_handler(ImageError)
    async def _image(request: Request, exc: ImageError) -> JSONResponse:
        return outcome_response(request, exc.outcome, str(exc))

    @app.exception_handler(InvalidRequest)
    async def _invalid(request: Request, exc: InvalidRequest) -> JSONResponse:
        return outcome_response(request, Outcome.INVALID_REQUEST, str(exc))

    @app.exception_handler(EngineNotReady)
    async def _not_ready(request: Request, exc: EngineNotReady) -> JSONResponse:
        return outcome_response(request, Outcome.NOT_READY, str(exc))

    @app.exception_handler(WorkerUnavailable)
    async def _unavailable(request: Request, exc: WorkerUnavailable) -> JSONResponse:
        return outcome_response(request, exc.outcome, exc.detail, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        missing = False
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            missing = missing or err.get("type") == "missing"
            problems.append(f"{where}: {err.get('msg')}")
        # A missing required field is 422; a present but malformed field is 400.
        outcome = Outcome.MISSING_FIELD if missing else Outcome.BAD_FIELD
        return outcome_response(request, outcome, "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        outcome = getattr(exc, "outcome", None)
        wait = (exc.headers or {}).get("Retry-After")
        retry = int(wait) if wait is not None else None
        if isinstance(outcome, Outcome):  # refused while the body streamed in
            return outcome_response(request, outcome, str(exc.detail), retry)
        lease = lease_of(request)
        if exc.status_code == 400 and lease is not None and lease.upload:
            # The body could not be parsed (broken multipart, a part over its size).
            return outcome_response(request, Outcome.BAD_REQUEST, str(exc.detail))
        code = HTTP_ERRORS.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), retry)

    @app.exception_handler(OSError)
    async def _disk(request: Request, exc: OSError) -> JSONResponse:
        # A video upload spooled to a full disk (ours, or Starlette's multipart spool): a
        # passing condition of this server, not the client's fault and not a bug.
        if exc.errno in NO_SPACE:
            log.warning("no space left to spool an upload: %s", exc.strerror)
            return outcome_response(
                request, Outcome.DISK_FULL, "no disk space is left for this upload; try later"
            )
        return await _bug(request, exc)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        # The client hung up mid-body: nobody reads this answer and nothing went wrong here.
        log.debug("client disconnected during %s %s", request.method, request.url.path)
        record(request, Outcome.CANCELLED)
        return error_response(400, "client_disconnected", "the client closed the connection")

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # A bug: log it with its traceback, tell the client nothing about our internals. This
        # answer is sent by Starlette's outermost middleware, outside ours: add their headers.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        record(request, Outcome.ERROR)
        response = error_response(
            500, "internal_error", "an internal error occurred; it was logged"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
