"""One error shape for every failure: `{"error": code, "detail": message}` with the right status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.api.outcomes import answer
from service.engines.base import EngineNotReady, InvalidRequest
from service.imaging.errors import ImageError
from service.outcomes import Outcome
from service.worker.worker import WorkerUnavailable

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    503: "unavailable",
    504: "timeout",
    507: "out_of_memory",
}


class ApiError(Exception):
    """An error answered to the client as JSON."""

    def __init__(
        self, status: int, error: str, detail: str, retry_after: int | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.retry_after = retry_after


class OutcomeError(Exception):
    """A domain outcome to answer now (before a job exists); its status comes from the table."""

    def __init__(self, outcome: Outcome, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.retry_after = retry_after


def outcome_response(outcome: Outcome, detail: str, retry_after: int | None = None) -> JSONResponse:
    """The answer for `outcome` (service/api/outcomes.py), with `detail`."""
    chosen = answer(outcome)
    wait = retry_after if retry_after is not None else chosen.retry_after
    return error_response(chosen.status, chosen.error, detail, wait)


ERROR_BODY = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}


def error_response(
    status: int, error: str, detail: str, retry_after: int | None = None
) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Map every domain error to its status (see ../shared/GUIDE.md section 2)."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.detail, exc.retry_after)

    @app.exception_handler(OutcomeError)
    async def _outcome(_: Request, exc: OutcomeError) -> JSONResponse:
        return outcome_response(exc.outcome, exc.detail, exc.retry_after)

    @app.exception_handler(ImageError)
    async def _image(_: Request, exc: ImageError) -> JSONResponse:
        return outcome_response(exc.outcome, str(exc))

    @app.exception_handler(InvalidRequest)
    async def _invalid(_: Request, exc: InvalidRequest) -> JSONResponse:
        return outcome_response(Outcome.INVALID_REQUEST, str(exc))

    @app.exception_handler(EngineNotReady)
    async def _not_ready(_: Request, exc: EngineNotReady) -> JSONResponse:
        return outcome_response(Outcome.NOT_READY, str(exc))

    @app.exception_handler(WorkerUnavailable)
    async def _unavailable(_: Request, exc: WorkerUnavailable) -> JSONResponse:
        return outcome_response(exc.outcome, exc.detail, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        missing = False
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            missing = missing or err.get("type") == "missing"
            problems.append(f"{where}: {err.get('msg')}")
        # A missing required field is 422; a present but malformed field is 400.
        status = 422 if missing else 400
        error = "missing_field" if missing else "bad_field"
        return error_response(status, error, "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "error", None) or _CODES.get(exc.status_code, "error")
        wait = (exc.headers or {}).get("Retry-After")
        return error_response(
            exc.status_code, code, str(exc.detail), int(wait) if wait is not None else None
        )

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        # The client hung up mid-body: nobody reads this answer and nothing went wrong here.
        log.debug("client disconnected during %s %s", request.method, request.url.path)
        return error_response(400, "client_disconnected", "the client closed the connection")

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # A bug: log it with its traceback, tell the client nothing about our internals. This
        # answer is sent by Starlette's outermost middleware, outside Guard: add its headers here.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        response = error_response(
            500, "internal_error", "an internal error occurred; it was logged"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
