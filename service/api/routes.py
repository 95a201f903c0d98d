"""The HTTP endpoints: colorize, jobs, models, health, status and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.api.errors import ApiError, OutcomeError
from service.api.guard import AFTER_SEND
from service.api.inputs import Upload, build_job, read_upload
from service.api.outcomes import answer
from service.api.state import ServiceState, StateDep
from service.engines.base import Engine
from service.engines.fast import Precision
from service.imaging.encode import CONTENT_TYPES
from service.outcomes import Outcome
from service.worker.jobs import Job, JobState

router = APIRouter()
UploadDep = Annotated[Upload, Depends(read_upload)]


class ErrorBody(BaseModel):
    error: str
    detail: str


_DESCRIPTIONS = {
    400: "Malformed multipart or a bad field (e.g. hints not valid JSON).",
    401: "API key required and missing or wrong.",
    404: "Unknown job or model.",
    409: "The job is not in a state that allows this.",
    413: "Body over the byte limit, image over the pixel limit, or a job that can never fit "
    "the device's memory budget (the detail names the limit).",
    415: "Not an allowed image format (the detail lists the allowed ones).",
    422: "Undecodable, truncated or empty image; missing field; reference missing or grayscale; "
    "hint outside the image.",
    503: "Busy (queue full, memory not admitted in time), weights not installed, shutting down "
    "or worker dead. See Retry-After.",
    504: "The job exceeded its time limit.",
    507: "Out of device memory during the job, after a retry with a smaller batch or chunk.",
    431: "Request line and headers still unfinished after 16 KiB (a very long URL): refused by "
    "the HTTP layer before the app sees the request. Send long values as form fields.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"model": ErrorBody, "description": _DESCRIPTIONS[c]} for c in codes}


UPLOAD_ERRORS = errors(400, 401, 413, 415, 422, 503)
HTTP_LAYER_ERRORS = errors(431)
"""What any operation can answer before the app sees the request (service/api/http11.py)."""
IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The colour image, same size as the input.",
        "content": {
            t: {"schema": {"type": "string", "format": "binary"}} for t in CONTENT_TYPES.values()
        },
    }
}
RAW_BODY = {
    "requestBody": {
        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
    }
}


async def _wait(state: ServiceState, job: Job, request: Request | None) -> None:
    """Wait for `job` without blocking the loop; a client that leaves takes a queued job away."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def _resolve() -> None:
        if not finished.done():
            finished.set_result(None)

    def _wake(_: Job) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(_resolve)

    job.on_finish(_wake)
    deadline = loop.time() + state.settings.job_timeout_s
    while not finished.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            detail = f"the job exceeded {state.settings.job_timeout_s:g} s"
            # Still queued: it ends as a timeout now. Already on the device or finishing: it
            # runs to its end, but the client was told 504, so that is what it counts as.
            if not state.worker.cancel(job, Outcome.TIMEOUT, detail):
                job.told = Outcome.TIMEOUT
            raise OutcomeError(Outcome.TIMEOUT, detail)
        await asyncio.wait({finished}, timeout=min(0.25, remaining))
        if not finished.done() and request is not None and await request.is_disconnected():
            state.worker.cancel(job)
            return


def _submit(state: ServiceState, job: Job) -> None:
    job.on_finish(state.metrics.observe_job)
    state.worker.submit(job)


def _server_timing(job: Job) -> str:
    return ", ".join(f"{k};dur={1000 * v:.1f}" for k, v in job.timings.items())


def _failure(job: Job) -> OutcomeError:
    if job.state is JobState.CANCELLED or job.failure is None:
        return OutcomeError(Outcome.CANCELLED, "the job was cancelled")
    f = job.failure
    return OutcomeError(f.outcome, f.detail, f.retry_after)


@router.post(
    "/colorize",
    summary="Colorize one photo and answer the image",
    response_class=Response,
    responses={**IMAGE_RESPONSE, **UPLOAD_ERRORS, **errors(504, 507)},
    openapi_extra=RAW_BODY,
)
async def colorize(request: Request, state: StateDep, upload: UploadDep) -> Response:
    """Multipart (`image`, `model`, `reference`, `hints`, `format`, `quality`) or a raw `image/*`
    body with the options as query parameters. Headers: `X-Request-Id`, `Server-Timing`."""
    started = time.monotonic()
    job = await build_job(state, upload, request)
    _submit(state, job)
    await _wait(state, job, request)
    if job.state is not JobState.DONE or job.result is None:
        raise _failure(job)
    state.metrics.request_seconds.labels(job.model).observe(time.monotonic() - started)
    response = Response(
        job.result,
        media_type=CONTENT_TYPES[job.output_format],
        headers={
            "X-Request-Id": job.id,
            "Server-Timing": _server_timing(job),
            "Cache-Control": "no-store",
        },
    )
    # The result's host memory stays reserved until its bytes are handed to the server.
    after_send = getattr(request.state, AFTER_SEND, None)
    if isinstance(after_send, list):
        after_send.append(lambda: job.drop_result("sent to the client"))
    else:
        job.drop_result("no way to learn when it is sent")
    return response


class JobError(BaseModel):
    error: str
    detail: str
    status: int
    """The HTTP status /colorize would have answered for this failure."""


class JobStatus(BaseModel):
    id: str
    state: JobState
    model: str
    position: int | None = None
    """1-based place in the queue while queued."""
    timings: dict[str, float]
    error: JobError | None = None
    result_url: str | None = None
    result_note: str | None = None
    """Why the result is no longer available (retention), when it is not."""
    created: float


def _status(state: ServiceState, job: Job) -> JobStatus:
    error = None
    if job.failure is not None:
        f = job.failure
        told = answer(f.outcome)
        error = JobError(error=told.error, detail=f.detail, status=told.status)
    available = job.state is JobState.DONE and job.result is not None
    return JobStatus(
        id=job.id,
        state=job.state,
        model=job.model,
        position=state.worker.position(job) if job.state is JobState.QUEUED else None,
        timings={k: round(v, 6) for k, v in job.timings.items()},
        error=error,
        result_url=f"/jobs/{job.id}/result" if available else None,
        result_note=job.result_dropped,
        created=job.created_wall,
    )


def _job(state: ServiceState, job_id: str) -> Job:
    job = state.store.get(job_id)
    if job is None:
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (unknown, or expired)")
    return job


@router.post(
    "/jobs",
    status_code=202,
    summary="Queue a colorization and answer at once",
    response_model=JobStatus,
    responses={**UPLOAD_ERRORS},
    openapi_extra=RAW_BODY,
)
async def create_job(
    request: Request, state: StateDep, upload: UploadDep, response: Response
) -> JobStatus:
    """Same inputs as /colorize; answers 202 with `Location: /jobs/{id}`."""
    job = await build_job(state, upload, request)
    _submit(state, job)
    state.store.add(job)
    response.headers["Location"] = f"/jobs/{job.id}"
    return _status(state, job)


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=errors(401, 404))
async def get_job(job_id: str, state: StateDep) -> JobStatus:
    """State (queued, running, done, failed, cancelled), timings, error, result link."""
    return _status(state, _job(state, job_id))


@router.get(
    "/jobs/{job_id}/result",
    response_class=Response,
    responses={**IMAGE_RESPONSE, **errors(401, 404, 409)},
)
async def get_result(job_id: str, state: StateDep) -> Response:
    """The finished image; 409 while queued or running, or if the job failed."""
    job = _job(state, job_id)
    if not job.state.finished:
        raise ApiError(409, "not_finished", f"the job is {job.state.value}")
    if job.state is not JobState.DONE:
        err = _failure(job)
        told = answer(err.outcome)
        raise ApiError(409, told.error, f"the job did not succeed: {err.detail}")
    if job.result is None:
        raise ApiError(404, "result_expired", job.result_dropped or "the result is gone")
    return Response(
        job.result,
        media_type=CONTENT_TYPES[job.output_format],
        headers={"X-Request-Id": job.id, "Server-Timing": _server_timing(job)},
    )


@router.delete("/jobs/{job_id}", response_model=JobStatus, responses=errors(401, 404, 409))
async def delete_job(job_id: str, state: StateDep) -> JobStatus:
    """Cancel a queued job, or forget a finished one; a running job cannot be stopped (409)."""
    job = _job(state, job_id)
    if job.state is JobState.RUNNING:
        raise ApiError(409, "running", "the job is running and cannot be cancelled")
    if job.state is JobState.QUEUED and not state.worker.cancel(job):
        raise ApiError(409, "running", "the job has just started and cannot be cancelled")
    if job.state.finished and job.state is not JobState.CANCELLED:
        state.store.remove(job.id)
    return _status(state, job)


class MemoryModelInfo(BaseModel):
    per_item_bytes: int
    per_pixel_bytes: int
    fixed_bytes: int
    reference_pixel_bytes: int
    largest_square_px: int
    """Side of the largest square image this engine accepts: within the job budget and within
    COLORIZE_MAX_PIXELS, whichever is smaller."""
    largest_square_limited_by: Literal["memory", "pixels"]
    """Which of the two limits sets largest_square_px."""


class RenderSizeInfo(BaseModel):
    default: int
    """Used when a request names none (COLORIZE_DDCOLOR_RENDER_SIZE)."""
    minimum: int
    maximum: int
    """The largest a request may ask for (COLORIZE_MAX_RENDER_SIZE)."""
    multiple: int
    """Render sizes are multiples of this."""
    largest_fitting: int | None
    """The largest render size whose forward pass fits the job budget now (the photo's own
    colour join comes on top; None: not even the smallest fits)."""


class ModelInfo(BaseModel):
    name: str
    ready: bool
    reason: str | None
    batchable: bool
    needs_weights: bool
    precision: Precision
    """What the network runs in (fp32, bf16, fp16): COLORIZE_PRECISION where it is faster and
    accurate enough on this device, else fp32."""
    precision_reason: str
    """Why: requested, refused (unsupported, not faster than fp32, or beyond the tolerance)."""
    memory_model: MemoryModelInfo
    """For engines with a render size: at the default render size."""
    render_size: RenderSizeInfo | None = None
    """The render sizes a request may choose (`render_size`); null for fixed-size engines."""


def _model_info(state: ServiceState, name: str, engine: Engine) -> ModelInfo:
    mm = engine.memory_model
    by_memory = mm.largest_square(state.manager.job_budget())
    by_pixels = math.isqrt(state.settings.max_pixels)
    return ModelInfo(
        name=name,
        ready=engine.ready,
        reason=engine.not_ready_reason,
        batchable=engine.batchable,
        needs_weights=engine.needs_weights,
        precision=engine.precision,
        precision_reason=engine.precision_reason,
        memory_model=MemoryModelInfo(
            per_item_bytes=mm.per_item_bytes,
            per_pixel_bytes=mm.per_pixel_bytes,
            fixed_bytes=mm.fixed_bytes,
            reference_pixel_bytes=mm.reference_pixel_bytes,
            largest_square_px=min(by_memory, by_pixels),
            largest_square_limited_by="memory" if by_memory < by_pixels else "pixels",
        ),
        render_size=_render_size_info(state, engine),
    )


def _render_size_info(state: ServiceState, engine: Engine) -> RenderSizeInfo | None:
    limits = engine.render_limits
    if limits is None:
        return None
    return RenderSizeInfo(
        default=limits.default,
        minimum=limits.minimum,
        maximum=limits.maximum,
        multiple=limits.multiple,
        largest_fitting=engine.largest_render_size(state.manager.job_budget()),
    )


@router.get("/v1/models", response_model=list[ModelInfo], responses=errors(401))
async def list_models(state: StateDep) -> list[ModelInfo]:
    """Each engine: ready or why not, and its memory model."""
    return [_model_info(state, n, e) for n, e in state.engines.items()]


@router.get("/v1/models/{name}", response_model=ModelInfo, responses=errors(401, 404))
async def get_model(name: str, state: StateDep) -> ModelInfo:
    engine = state.engines.get(name)
    if engine is None:
        raise ApiError(404, "unknown_model", f"no model {name!r}; see /v1/models")
    return _model_info(state, name, engine)


class Health(BaseModel):
    ready: bool
    worker_alive: bool
    draining: str | None
    engines: dict[str, str]
    """Each engine's state: 'ready' or why not."""
    reasons: list[str]


@router.get("/livez", summary="Process alive", responses={503: {"model": ErrorBody}})
async def livez(state: StateDep) -> JSONResponse:
    """200 while the process can serve; 503 once the worker thread has died (restart me)."""
    worker = state.worker
    if worker.death is not None and not worker.draining:
        # Readiness only takes the pod out of the Service; a dead worker never comes back, so
        # liveness must fail for the orchestrator to restart the process.
        detail = f"the worker thread died: {worker.death!r}"
        return JSONResponse({"error": "worker_dead", "detail": detail}, status_code=503)
    return JSONResponse({"status": "alive"})


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(state: StateDep) -> JSONResponse:
    """200 when the worker runs, an engine is ready and the service is not draining."""
    reasons = []
    worker = state.worker
    if not worker.alive:
        reasons.append(f"the worker thread is not running ({worker.death!r})")
    if worker.draining:
        reasons.append(worker.draining)
    engines = {
        n: "ready" if e.ready else (e.not_ready_reason or "not ready")
        for n, e in state.engines.items()
    }
    if not any(e.ready for e in state.engines.values()):
        reasons.append("no engine is ready")
    body = Health(
        ready=not reasons,
        worker_alive=worker.alive,
        draining=worker.draining,
        engines=engines,
        reasons=reasons,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


class Status(BaseModel):
    device: str
    usage_ratio: float
    threshold: float
    used_bytes: int
    total_bytes: int
    queue_depth: int
    queue_capacity: int
    jobs_running: int
    jobs_done: int
    ready: bool
    models: dict[str, bool]


@router.get("/v1/status", response_model=Status, responses=errors(401))
async def status(state: StateDep) -> Status:
    """A small JSON summary for the web page's live panel."""
    snap = state.manager.snapshot()
    return Status(
        device=snap.device,
        usage_ratio=round(snap.usage_ratio, 4),
        threshold=state.manager.memory_threshold,
        used_bytes=snap.used,
        total_bytes=snap.total,
        queue_depth=state.worker.queue_depth,
        queue_capacity=state.settings.queue_size,
        jobs_running=state.worker.jobs_running,
        jobs_done=state.worker.stats.completed,
        ready=state.worker.alive and not state.worker.draining,
        models={n: e.ready for n, e in state.engines.items()},
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus exposition."}},
)
async def metrics(state: StateDep) -> Response:
    """Prometheus text format; memory gauges are read live at scrape time."""
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
