"""Films from the shared queue: a video is pulled only while one of this replica's video threads
is free and the host budget holds its plan now; its upload is downloaded to a spool file (never
whole in memory), it runs in the video executor like a local one, its progress goes to the record
(at most once a second), and its result is stored from its file. However long it runs, a live
replica keeps it: the heartbeat, not the job's age, tells the others when to claim it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from starlette.concurrency import run_in_threadpool

from service.engines.base import Engine
from service.jobs.deliveries import HAND_BACK, Endings, settle
from service.jobs.options import video_options_from_json
from service.jobs.spool import Spool, remove
from service.jobs.video import CONTENT_TYPE as VIDEO_TYPE
from service.jobs.video import VideoJob, VideoMeter
from service.jobs.video_executor import VideoExecutor
from service.outcomes import Failure, Outcome
from service.settings import Settings
from service.store import Consumer, Delivery, ObjectNotFound, Progress, StoreError, Ticket
from service.video import VideoProgress
from service.worker.admission import Budgets, VideoUpload, check_video
from service.worker.jobs import JobState
from service.worker.stats import PipelineStats

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
"""A running video's progress is written to its record at most this often."""


class SharedVideos:
    """Runs the shared queue's video deliveries in this replica's video executor."""

    def __init__(
        self,
        consumer: Consumer,
        endings: Endings,
        videos: VideoExecutor,
        spool: Spool,
        engines: Mapping[str, Engine],
        budgets: Budgets,
        settings: Settings,
        stats: PipelineStats,
        meter: VideoMeter,
        changed: asyncio.Event,
    ) -> None:
        self.consumer = consumer
        self.endings = endings
        self.videos = videos
        self.spool = spool
        self.engines = engines
        self.budgets = budgets
        self.settings = settings
        self.stats = stats
        self.meter = meter
        self.changed = changed
        """Set when a video ends: the runner looks at the queue again."""
        self.starting = 0
        """Video deliveries being downloaded and probed (not in the executor yet)."""

    def can_admit(self, ticket: Ticket) -> bool:
        """A free video thread, and room in the host budget for the job's plan now (on a CPU,
        and its frames' forward pass: the device's budget is the host's)."""
        if self.videos.free_slots - self.starting <= 0:
            return False
        need = ticket.host_bytes
        if self.budgets.device is self.budgets.host:
            need += ticket.estimate_bytes
        return self.budgets.host.available_bytes() >= need

    async def run(self, delivery: Delivery) -> None:
        self.starting += 1
        job: VideoJob | Failure | None = None
        try:
            job = await self._video_job(delivery)
        except StoreError:
            job = None
        except Exception:
            # A full spool disk, say: hand it back (another replica, or this one later).
            log.exception("could not start video job %s here; handing it back", delivery.job_id)
            job = None
        finally:
            self.starting -= 1
        if job is None or isinstance(job, Failure):
            await self.endings.unstarted(delivery, job)
            if job is not None:
                self.stats.count_video_job(delivery.record.model, job.outcome.value)
            return
        await self._follow_video(delivery, job)

    async def _video_job(self, delivery: Delivery) -> VideoJob | Failure | None:
        """The delivery as a video job ready to run here (its upload in a spool file); a
        Failure to end it with; None to hand it back."""
        assert self.spool is not None
        record = delivery.record
        source = self.spool.path("upload")
        try:
            reference = await self.consumer.download(delivery, source)
        except ObjectNotFound:
            remove(source)
            return Failure(Outcome.INVALID_REQUEST, "the job's upload is gone from the store")
        except BaseException:
            remove(source)
            raise
        options = video_options_from_json(record.model, record.options)
        upload = VideoUpload(source, options, reference)
        video = await run_in_threadpool(
            check_video, upload, self.engines, self.budgets, self.settings
        )
        if isinstance(video, Failure):
            remove(source)
            return None if video.outcome in HAND_BACK else video
        return VideoJob(
            model=record.model,
            options=options,
            source=source,
            info=video.info,
            plan=video.plan,
            target=self.spool.path("result", ".mp4"),
            reference=reference,
            id=record.id,
        )

    async def _follow_video(self, delivery: Delivery, job: VideoJob) -> None:
        assert self.videos is not None
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        reporter = ProgressReporter(self.consumer, delivery)

        def wake(_: VideoJob) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(settle, ended)
                loop.call_soon_threadsafe(self.changed.set)

        def report(_: VideoJob, progress: VideoProgress) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(reporter.update, progress)

        job.on_progress(report)
        self.meter.count_frames(job)
        job.on_finish(wake)
        try:
            # A busy host budget hands the film back rather than holding a slot here.
            self.videos.submit(job, memory_patience_s=self.settings.admission_wait_s)
        except Exception:
            await self.endings.release(delivery)
            return
        cancelled = asyncio.ensure_future(delivery.cancelled.wait())
        try:
            await asyncio.wait({ended, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            if not ended.done():
                # A client cancelled it (or another attempt took it over): stop it here.
                self.videos.cancel(job, Outcome.CANCELLED, "cancelled by the client")
                await ended
        finally:
            cancelled.cancel()
            await reporter.close()
        await self._video_ended(delivery, job)

    async def _video_ended(self, delivery: Delivery, job: VideoJob) -> None:
        outcome = job.outcome or Outcome.ERROR
        try:
            if job.state is JobState.DONE and job.result is not None:
                result = job.result
                if await self.endings.complete(delivery, result.path, VIDEO_TYPE, job.timings):
                    self.stats.count_video_job(job.model, Outcome.DONE.value)
                    if result.seconds > 0:
                        self.meter.observe_rate(job.model, result.frames / result.seconds)
                return
            if outcome in HAND_BACK:
                await self.endings.release(delivery)
                return
            failure = job.failure or Failure(Outcome.CANCELLED, "the job was cancelled")
            await self.endings.end(delivery, failure, job.timings)
            self.stats.count_video_job(job.model, failure.outcome.value)
        finally:
            remove(job.target)


class ProgressReporter:
    """Writes a running video's progress to its record, the latest at most once a second (a
    write that says the job should stop sets the delivery's `cancelled`)."""

    def __init__(self, consumer: Consumer, delivery: Delivery) -> None:
        self.consumer = consumer
        self.delivery = delivery
        self.latest: VideoProgress | None = None
        self.task: asyncio.Task[None] | None = None

    def update(self, progress: VideoProgress) -> None:
        self.latest = progress
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while self.latest is not None:
            p, self.latest = self.latest, None
            left = None if p.seconds_left is None else round(p.seconds_left, 1)
            progress = Progress(p.frames_done, p.frames_total, round(p.frames_per_second, 3), left)
            with contextlib.suppress(StoreError):  # the heartbeat keeps the record alive
                await self.consumer.progress(self.delivery, progress)
            await asyncio.sleep(PROGRESS_INTERVAL_S)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
