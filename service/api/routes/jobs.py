"""/jobs: queue a colorization, follow it, fetch its result, cancel or forget it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from service.api.errors import ApiError
from service.api.lease import lease_of
from service.api.outcomes import answer
from service.api.routes.colorize import admitted, failure_of, server_timing
from service.api.routes.docs import IMAGE_RESPONSE, RAW_BODY, UPLOAD_ERRORS, errors
from service.api.state import ServiceState, StateDep
from service.api.uploads import UploadDep
from service.imaging.encode import CONTENT_TYPES
from service.outcomes import Outcome
from service.worker.jobs import Job, JobState

router = APIRouter()


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


def job_status(state: ServiceState, job: Job) -> JobStatus:
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
        raise ApiError(404, "unknown_job", "no such job (unknown, or expired)")
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
    job = admitted(state, upload, request)
    stats = state.stats
    state.worker.submit(
        job, on_finish=lambda ended: stats.count_job(ended.model, _outcome(ended).value)
    )
    lease = lease_of(request)
    if lease is not None:
        lease.handed_over = True  # the job counts its own outcome when it ends
    state.store.add(job)
    response.headers["Location"] = f"/jobs/{job.id}"
    return job_status(state, job)


def _outcome(job: Job) -> Outcome:
    return job.outcome or Outcome.ERROR


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=errors(401, 404))
async def get_job(job_id: str, state: StateDep) -> JobStatus:
    """State (queued, running, done, failed, cancelled), timings, error, result link."""
    return job_status(state, _job(state, job_id))


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
        err = failure_of(job)
        told = answer(err.outcome)
        raise ApiError(409, told.error, f"the job did not succeed: {err.detail}")
    result = job.result
    if result is None:
        raise ApiError(404, "result_expired", job.result_dropped or "the result is gone")
    return Response(
        result,
        media_type=CONTENT_TYPES[job.output_format],
        headers={"X-Request-Id": job.id, "Server-Timing": server_timing(job)},
    )


@router.delete("/jobs/{job_id}", response_model=JobStatus, responses=errors(401, 404, 409))
async def delete_job(job_id: str, state: StateDep) -> JobStatus:
    """Cancel a queued job, or forget a finished one (done, failed or cancelled); a running job
    cannot be stopped (409)."""
    job = _job(state, job_id)
    if job.state.finished:
        state.store.remove(job.id)
        return job_status(state, job)
    if job.state is JobState.RUNNING or not state.worker.cancel(job):
        raise ApiError(409, "running", "the job is running and cannot be cancelled")
    return job_status(state, job)  # cancelled now; its record says so until it expires
