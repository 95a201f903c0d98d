"""/jobs: queue a colorization, follow it, fetch its result, cancel or forget it; the same
routes whether the jobs live in this process or in the shared store (service/jobs/)."""

from __future__ import annotations

from collections.abc import Awaitable

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from service.api.errors import ApiError, OutcomeError
from service.api.lease import lease_of
from service.api.outcomes import answer
from service.api.results import ResultFile
from service.api.routes.colorize import admitted, checked
from service.api.routes.docs import JOB_BODY, UPLOAD_ERRORS, VIDEO_RESPONSE, errors
from service.api.state import ServiceState, StateDep
from service.api.uploads import UploadDep
from service.jobs.backend import (
    JobFailed,
    JobRefused,
    JobView,
    NotFinished,
    ResultGone,
    UnknownJob,
)
from service.jobs.spool import remove
from service.outcomes import Failure
from service.worker.admission import VideoUpload, check_video
from service.worker.jobs import JobState

router = APIRouter()


class JobError(BaseModel):
    error: str
    detail: str
    status: int
    """The HTTP status /colorize would have answered for this failure."""


class JobProgress(BaseModel):
    """How far a video job is."""

    frames_done: int
    frames_total: int | None = None
    """The probed count until the job ends (a container may understate it: it grows then)."""
    fps: float | None = None
    """Frames finished per second of the job's running time."""
    seconds_left: float | None = None
    """At the current rate; null until the first batch is done."""


class JobStatus(BaseModel):
    id: str
    state: JobState
    model: str
    kind: str = "image"
    position: int | None = None
    """1-based place in this replica's queue while queued (null in the shared store)."""
    timings: dict[str, float]
    error: JobError | None = None
    result_url: str | None = None
    result_note: str | None = None
    """Why the result is no longer available (retention), when it is not."""
    progress: JobProgress | None = None
    cancel_requested: bool = False
    """A DELETE asked a running job to stop: it ends cancelled shortly."""
    created: float


def job_status(view: JobView) -> JobStatus:
    error = None
    if view.failure is not None:
        told = answer(view.failure.outcome)
        error = JobError(error=told.error, detail=view.failure.detail, status=told.status)
    progress = None
    if view.progress is not None:
        p = view.progress
        progress = JobProgress(
            frames_done=p.done, frames_total=p.total, fps=p.fps, seconds_left=p.eta_s
        )
    return JobStatus(
        id=view.id,
        state=JobState(view.state),
        model=view.model,
        kind=view.kind,
        position=view.position,
        timings=view.timings,
        error=error,
        result_url=f"/jobs/{view.id}/result" if view.result_available else None,
        result_note=view.result_note,
        progress=progress,
        cancel_requested=view.cancel_requested,
        created=view.created,
    )


@router.post(
    "/jobs",
    status_code=202,
    summary="Queue a colorization (a photo or a video) and answer at once",
    response_model=JobStatus,
    responses={**UPLOAD_ERRORS},
    openapi_extra=JOB_BODY,
)
async def create_job(
    request: Request, state: StateDep, upload: UploadDep, response: Response
) -> JobStatus:
    """The inputs of /colorize, or a video: a multipart `video` field (with `model`,
    `render_size`, `stabilize`, `reference`) or a raw `video/*` body with the options as query
    parameters. Answers 202 with `Location: /jobs/{id}` once the job is stored (in the shared
    store: its bytes and its record); a video's result is an MP4."""
    if isinstance(upload, VideoUpload):
        view = await _submit_video(request, state, upload)
    else:
        # In the shared store a job holds no memory here while it waits: any replica runs it.
        job = (
            checked(state, upload) if state.shared is not None else admitted(state, upload, request)
        )
        try:
            view = await state.jobs.submit(job, upload)
        except JobRefused as exc:
            job.release_hold("upload")
            f = exc.failure
            raise OutcomeError(f.outcome, f.detail, f.retry_after) from None
    lease = lease_of(request)
    if lease is not None:
        lease.handed_over = True  # the job counts its own outcome when it ends
    response.headers["Location"] = f"/jobs/{view.id}"
    return job_status(view)


async def _submit_video(request: Request, state: ServiceState, upload: VideoUpload) -> JobView:
    """Probe the spooled video and queue it; its spool file is the store's from here (and
    deleted here when it is refused)."""
    try:
        video = await run_in_threadpool(
            check_video, upload, state.engines, state.budgets, state.settings
        )
        if isinstance(video, Failure):
            raise OutcomeError(video.outcome, video.detail, video.retry_after)
        lease = lease_of(request)
        held = lease.take_body() if lease is not None else None
        try:
            return await state.jobs.submit_video(upload, video, held)
        except JobRefused as exc:
            f = exc.failure
            raise OutcomeError(f.outcome, f.detail, f.retry_after) from None
    except BaseException:
        remove(upload.path)
        raise


async def _view(state: ServiceState, job_id: str) -> JobView:
    return await _answer(state.jobs.view(job_id))


async def _answer(call: Awaitable[JobView]) -> JobView:
    """What the job store answered, its refusals as the API's errors."""
    try:
        return await call
    except UnknownJob:
        raise ApiError(404, "unknown_job", "no such job (unknown, or expired)") from None
    except JobRefused as exc:
        raise OutcomeError(
            exc.failure.outcome, exc.failure.detail, exc.failure.retry_after
        ) from None


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=errors(401, 404, 503))
async def get_job(job_id: str, state: StateDep) -> JobStatus:
    """State (queued, running, done, failed, cancelled), timings, error, progress, result link."""
    return job_status(await _view(state, job_id))


@router.get(
    "/jobs/{job_id}/result",
    response_class=Response,
    responses={**VIDEO_RESPONSE, **errors(401, 404, 409, 503)},
)
async def get_result(job_id: str, state: StateDep) -> Response:
    """The finished image, or the video (`video/mp4`, streamed; Range requests are answered in
    this process's store); 409 while queued or running, or if the job failed."""
    try:
        body = await state.jobs.result(job_id)
    except UnknownJob:
        raise ApiError(404, "unknown_job", "no such job (unknown, or expired)") from None
    except NotFinished as exc:
        raise ApiError(409, "not_finished", f"the job is {exc.state}") from None
    except JobFailed as exc:
        told = answer(exc.failure.outcome)
        raise ApiError(409, told.error, f"the job did not succeed: {exc.failure.detail}") from None
    except ResultGone as exc:
        raise ApiError(404, "result_expired", str(exc)) from None
    except JobRefused as exc:
        raise OutcomeError(
            exc.failure.outcome, exc.failure.detail, exc.failure.retry_after
        ) from None
    if body.path is not None:
        return ResultFile(
            body.path,
            media_type=body.content_type,
            headers={"X-Request-Id": job_id, "Cache-Control": "no-store"},
            release=body.release,
        )
    headers = {"X-Request-Id": job_id, "Content-Length": str(body.size)}
    if body.data is not None:
        return Response(body.data, media_type=body.content_type, headers=headers)
    assert body.chunks is not None
    # Streamed from the object store, not redirected to it: its endpoint is usually internal
    # to the cluster, and the API key keeps guarding the result.
    return StreamingResponse(body.chunks, media_type=body.content_type, headers=headers)


@router.delete("/jobs/{job_id}", response_model=JobStatus, responses=errors(401, 404, 503))
async def delete_job(job_id: str, state: StateDep) -> JobStatus:
    """Cancel a queued job; stop a running one (it ends `cancelled` at its next step); forget a
    finished one (done, failed or cancelled)."""
    return job_status(await _answer(state.jobs.cancel(job_id)))
