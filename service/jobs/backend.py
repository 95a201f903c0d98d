"""What /jobs needs of a job store, whichever keeps the jobs: submit, look, fetch, cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from service.memory import Reservation
from service.outcomes import Failure
from service.worker.admission import AdmittedVideo, Upload, VideoUpload
from service.worker.jobs import Job


@dataclass(frozen=True)
class JobProgress:
    """How far a video job is."""

    done: int
    total: int | None = None
    fps: float | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class JobView:
    """A job as a client sees it, from any store."""

    id: str
    state: str
    """queued, running, done, failed or cancelled (service.worker.jobs.JobState's values)."""
    model: str
    created: float
    kind: str = "image"
    position: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    failure: Failure | None = None
    result_available: bool = False
    result_note: str | None = None
    progress: JobProgress | None = None
    cancel_requested: bool = False


@dataclass(frozen=True)
class ResultBody:
    """A finished job's result: its bytes whole (a photo in this process), a file (a video in
    this process: kept until `release`) or chunks (from a store)."""

    content_type: str
    size: int
    data: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None
    path: Path | None = None
    release: Callable[[], None] | None = None
    """Called once the file has been sent (or the client left): retention may delete it."""


class UnknownJob(Exception):
    """No such job: never submitted, expired, or forgotten."""


class NotFinished(Exception):
    """The job has no result yet (queued or running)."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


class JobFailed(Exception):
    """The job ended without a result; `failure` says why."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


class ResultGone(Exception):
    """The job succeeded but its result is no longer kept; the message says why."""


class JobStore(Protocol):
    """The /jobs of one service: local (this process) or shared (every replica)."""

    async def submit(self, job: Job, upload: Upload) -> JobView:
        """Accept `job` (checked by admission; `upload` is its bytes) and answer only once
        it is stored; raises JobRefused."""

    async def submit_video(
        self, upload: VideoUpload, video: AdmittedVideo, held: Reservation | None
    ) -> JobView:
        """Accept a video checked by admission (`upload.path` is its spool file, which the
        store now owns; `held` covers the reference photo's bytes, if any) and answer only once
        it is stored; raises JobRefused."""

    async def view(self, job_id: str) -> JobView:
        """The job now; UnknownJob."""

    async def result(self, job_id: str) -> ResultBody:
        """The finished job's result; UnknownJob, NotFinished, JobFailed or ResultGone."""

    async def cancel(self, job_id: str) -> JobView:
        """DELETE: cancel a queued job, stop a running one (it ends cancelled shortly), forget a
        finished one; UnknownJob."""

    def health(self) -> list[str]:
        """Why this store cannot take jobs now (empty: it can)."""


class JobRefused(Exception):
    """The store did not accept the job; `failure` says why (queue full, store unreachable)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure
