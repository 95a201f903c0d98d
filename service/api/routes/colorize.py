"""POST /colorize: one photo in, its colour version out, in the same request."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from service.api.bridge import Ending, wait_for
from service.api.errors import OutcomeError
from service.api.lease import lease_of
from service.api.results import ResultResponse
from service.api.routes.docs import IMAGE_RESPONSE, RAW_BODY, UPLOAD_ERRORS, errors
from service.api.state import ServiceState, StateDep
from service.api.uploads import UploadDep, jobs_pointer
from service.imaging.encode import CONTENT_TYPES
from service.jobs.spool import remove
from service.outcomes import Outcome
from service.worker.admission import Upload, VideoUpload, admit, check
from service.worker.jobs import Job, JobState

router = APIRouter()


def admitted(state: ServiceState, upload: Upload, request: Request) -> Job:
    """The admitted job for `upload` (the body's memory becomes its), or the failure raised."""
    lease = lease_of(request)
    held = lease.take_body() if lease is not None else None
    job = admit(upload, state.engines, state.budgets, state.settings, held=held)
    if not isinstance(job, Job):
        raise OutcomeError(job.outcome, job.detail, job.retry_after)
    job.on_finish(state.metrics.observe_job)
    return job


def checked(state: ServiceState, upload: Upload) -> Job:
    """The job `upload` would be, checked like an admission but holding no memory here (the
    shared store keeps its bytes); the failure raised."""
    job = check(upload, state.engines, state.budgets, state.settings)
    if not isinstance(job, Job):
        raise OutcomeError(job.outcome, job.detail, job.retry_after)
    return job


def server_timing(job: Job) -> str:
    return ", ".join(f"{k};dur={1000 * v:.1f}" for k, v in job.timings.items())


def failure_of(job: Job) -> OutcomeError:
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
    """Multipart (`image`, `model`, `reference`, `hints`, `format`, `quality`, `render_size`) or
    a raw `image/*` body with the options as query parameters. Headers: `X-Request-Id`,
    `Server-Timing`. A video, in any field or body, is refused (415 `video_goes_to_jobs`):
    videos are jobs (POST /jobs)."""
    started = time.monotonic()
    if isinstance(upload, VideoUpload):  # read_upload refuses one here; never accept it
        remove(upload.path)
        raise OutcomeError(Outcome.VIDEO_ON_IMAGE_PATH, jobs_pointer("a video"))
    job = admitted(state, upload, request)
    lease = lease_of(request)
    if lease is not None:
        lease.job = job  # from here the lease gives back the result, whatever happens
    state.worker.submit(job)
    timeout = state.settings.job_timeout_s
    ending = await wait_for(job, timeout, request.receive)
    if ending is not Ending.FINISHED:
        # A waiting job leaves the queue now; one past it stops at its stage's next look.
        told = Outcome.TIMEOUT if ending is Ending.TIMEOUT else Outcome.CANCELLED
        state.worker.cancel(job, told, "nobody waits for the result any more")
        job.abandon(told)
        if ending is Ending.GONE:
            raise OutcomeError(Outcome.CANCELLED, "the client closed the connection")
        raise OutcomeError(Outcome.TIMEOUT, f"the job exceeded {timeout:g} s")
    if job.state is not JobState.DONE or job.result is None:
        raise failure_of(job)
    if lease is not None:
        lease.outcome = Outcome.DONE
    state.metrics.request_seconds.labels(job.model).observe(time.monotonic() - started)
    return ResultResponse(
        job.result,
        media_type=CONTENT_TYPES[job.output_format],
        headers={
            "X-Request-Id": job.id,
            "Server-Timing": server_timing(job),
            "Cache-Control": "no-store",
        },
    )
