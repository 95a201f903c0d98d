"""/jobs kept in this process: the worker runs them, JobStore keeps their results until
retention drops them. Nothing else is needed, and nothing survives the process."""

from __future__ import annotations

from service.imaging.encode import CONTENT_TYPES
from service.jobs.backend import (
    JobFailed,
    JobRefused,
    JobView,
    NotFinished,
    ResultBody,
    ResultGone,
    UnknownJob,
)
from service.outcomes import Failure, Outcome
from service.worker.admission import Upload
from service.worker.jobs import Job, JobState
from service.worker.jobs import JobStore as Retention
from service.worker.queue import WorkerUnavailable
from service.worker.stats import PipelineStats
from service.worker.worker import Worker


class LocalJobs:
    """The in-process job store."""

    def __init__(self, worker: Worker, retention: Retention, stats: PipelineStats) -> None:
        self.worker = worker
        self.retention = retention
        self.stats = stats

    async def submit(self, job: Job, upload: Upload) -> JobView:
        stats = self.stats
        try:
            self.worker.submit(
                job,
                on_finish=lambda ended: stats.count_job(
                    ended.model, (ended.outcome or Outcome.ERROR).value
                ),
            )
        except WorkerUnavailable as exc:
            raise JobRefused(Failure(exc.outcome, exc.detail, exc.retry_after)) from None
        self.retention.add(job)
        return self._view(job)

    async def view(self, job_id: str) -> JobView:
        return self._view(self._job(job_id))

    async def result(self, job_id: str) -> ResultBody:
        job = self._job(job_id)
        if not job.state.finished:
            raise NotFinished(job.state.value)
        if job.state is not JobState.DONE:
            raise JobFailed(job.failure or Failure(Outcome.CANCELLED, "the job was cancelled"))
        data = job.result
        if data is None:
            raise ResultGone(job.result_dropped or "the result is gone")
        return ResultBody(CONTENT_TYPES[job.output_format], len(data), data=data)

    async def cancel(self, job_id: str) -> JobView:
        job = self._job(job_id)
        if job.state.finished:
            self.retention.remove(job.id)  # DELETE forgets a finished job, cancelled included
        elif not self.worker.cancel(job):
            # Past the queue: it stops at its stage's next look and ends cancelled.
            job.abandon(Outcome.CANCELLED)
        return self._view(job)

    def health(self) -> list[str]:
        return []

    def _job(self, job_id: str) -> Job:
        job = self.retention.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        return job

    def _view(self, job: Job) -> JobView:
        return JobView(
            id=job.id,
            state=job.state.value,
            model=job.model,
            created=job.created_wall,
            position=self.worker.position(job) if job.state is JobState.QUEUED else None,
            timings={k: round(v, 6) for k, v in job.timings.items()},
            failure=job.failure,
            result_available=job.state is JobState.DONE and job.result is not None,
            result_note=job.result_dropped,
            cancel_requested=job.told is not None and not job.state.finished,
        )
