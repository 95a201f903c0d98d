"""/jobs kept in this process: the worker runs photos and the video executor runs films; results
are kept until retention drops them (photos in memory, videos as files in the spool). Nothing
else is needed, and nothing survives the process."""

from __future__ import annotations

from service.imaging.encode import CONTENT_TYPES
from service.jobs.backend import (
    JobFailed,
    JobProgress,
    JobRefused,
    JobView,
    NotFinished,
    ResultBody,
    ResultGone,
    UnknownJob,
)
from service.jobs.spool import Spool
from service.jobs.video import CONTENT_TYPE, VideoJob, VideoMeter, VideoRetention
from service.jobs.video_executor import VideoExecutor
from service.memory import Reservation
from service.outcomes import Failure, Outcome
from service.worker.admission import AdmittedVideo, Upload, VideoUpload
from service.worker.jobs import Job, JobState
from service.worker.jobs import JobStore as Retention
from service.worker.queue import WorkerUnavailable
from service.worker.stats import PipelineStats
from service.worker.worker import Worker


class LocalJobs:
    """The in-process job store."""

    def __init__(
        self,
        worker: Worker,
        retention: Retention,
        stats: PipelineStats,
        videos: VideoExecutor | None = None,
        video_retention: VideoRetention | None = None,
        spool: Spool | None = None,
        meter: VideoMeter | None = None,
    ) -> None:
        self.worker = worker
        self.retention = retention
        self.stats = stats
        self.videos = videos
        self.video_retention = video_retention
        self.spool = spool
        self.meter = meter or VideoMeter(stats)

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

    async def submit_video(
        self, upload: VideoUpload, video: AdmittedVideo, held: Reservation | None
    ) -> JobView:
        if self.videos is None or self.video_retention is None or self.spool is None:
            raise JobRefused(Failure(Outcome.NOT_READY, "this service takes no videos"))
        job = VideoJob(
            model=upload.options.model,
            options=upload.options,
            source=upload.path,
            info=video.info,
            plan=video.plan,
            target=self.spool.path("result", ".mp4"),
            reference=upload.reference,
        )
        if held is not None:
            # While the job waits, the reference photo's bytes are all it keeps in memory.
            if upload.reference is not None and held.shrink(len(upload.reference)):
                job.on_finish(lambda _: held.release())
            else:
                held.release()
        self.meter.count_frames(job)
        try:
            self.videos.submit(job)
        except WorkerUnavailable as exc:
            raise JobRefused(Failure(exc.outcome, exc.detail, exc.retry_after)) from None
        self.meter.count_end(job)
        self.video_retention.add(job)
        return self._video_view(job)

    async def view(self, job_id: str) -> JobView:
        video = self._video(job_id)
        if video is not None:
            return self._video_view(video)
        return self._view(self._job(job_id))

    async def result(self, job_id: str) -> ResultBody:
        video = self._video(job_id)
        if video is not None:
            return _video_result(video)
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
        video = self._video(job_id)
        if video is not None:
            assert self.videos is not None and self.video_retention is not None
            if video.finished:
                self.video_retention.remove(video.id)  # forgets it and deletes its result
            else:
                self.videos.cancel(video, Outcome.CANCELLED, "cancelled by the client")
            return self._video_view(video)
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

    def _video(self, job_id: str) -> VideoJob | None:
        if self.video_retention is None:
            return None
        return self.video_retention.get(job_id)

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

    def _video_view(self, job: VideoJob) -> JobView:
        assert self.videos is not None
        return JobView(
            id=job.id,
            state=job.state.value,
            model=job.model,
            created=job.created_wall,
            kind="video",
            position=self.videos.position(job) if job.state is JobState.QUEUED else None,
            timings={k: round(v, 6) for k, v in job.timings.items()},
            failure=job.failure,
            result_available=job.result_available,
            result_note=job.result_dropped,
            progress=video_progress(job),
            cancel_requested=job.cancel_requested,
        )


def video_progress(job: VideoJob) -> JobProgress:
    """Frames done of total, frames per second, seconds left (total from the probe until the
    first batch is done)."""
    p = job.progress
    if p is None:
        done = job.info.frames if job.state is JobState.DONE else 0
        return JobProgress(done, job.info.frames)
    if job.state is JobState.DONE and job.result is not None:
        return JobProgress(job.result.frames, job.result.frames, round(p.frames_per_second, 3), 0)
    left = None if p.seconds_left is None else round(p.seconds_left, 1)
    return JobProgress(p.frames_done, p.frames_total, round(p.frames_per_second, 3), left)


def _video_result(job: VideoJob) -> ResultBody:
    if not job.finished:
        raise NotFinished(job.state.value)
    if job.state is not JobState.DONE:
        raise JobFailed(job.failure or Failure(Outcome.CANCELLED, "the job was cancelled"))
    opened = job.open_result()
    if opened is None:
        raise ResultGone(job.result_dropped or "the result is gone")
    return ResultBody(CONTENT_TYPE, opened.size, path=opened.path, release=opened.release)
