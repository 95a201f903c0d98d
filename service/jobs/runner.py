"""This replica's share of the shared queue: pull a job only when this replica's budgets admit it
(no prefetch beyond the look-ahead), run it through the local pipeline, store its result and
complete it once; hand back what it cannot finish, so that another replica runs it.

A busy replica leaves the work to the others: `_can_admit` refuses the head of the queue while
the local queue already holds the look-ahead's worth of jobs, or while the host budget cannot
hold the job's upload and its decoded pixels now.

A video is pulled only while one of this replica's video threads is free and the host budget
holds its plan now; its upload is downloaded to a spool file (never whole in memory), it runs in
the video executor like a local one, its progress goes to the record (at most once a second),
and its result is stored from its file. However long it runs, a live replica keeps it: the
heartbeat, not the job's age, tells the others when to claim it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from service.engines.base import Engine
from service.imaging.encode import CONTENT_TYPES
from service.jobs.options import options_from_json, video_options_from_json
from service.jobs.spool import Spool, remove
from service.jobs.video import CONTENT_TYPE as VIDEO_TYPE
from service.jobs.video import VideoJob, VideoMeter
from service.jobs.video_executor import VideoExecutor
from service.memory import MemoryRefused, NeverFits, Reservation
from service.outcomes import Failure, Outcome
from service.settings import Settings
from service.store import (
    Delivery,
    JobKind,
    ObjectNotFound,
    Progress,
    SharedStore,
    StoreError,
    Ticket,
)
from service.video import VideoProgress
from service.worker.admission import Budgets, Upload, VideoUpload, admit, check_video
from service.worker.jobs import Job, JobState
from service.worker.queue import WorkerUnavailable
from service.worker.stats import PipelineStats
from service.worker.worker import Worker

log = logging.getLogger(__name__)

HAND_BACK = frozenset({Outcome.SHUTDOWN, Outcome.WORKER_DEAD, Outcome.MEMORY_BUSY})
"""Outcomes of this replica, not of the job: another replica (or this one later) runs it."""
COMPLETE_RETRY_S = 300.0
"""How long a finished result is kept trying to reach a store that is down, before the job is
handed back to run again (at least once, never lost)."""
PROGRESS_INTERVAL_S = 1.0
"""A running video's progress is written to its record at most this often."""
VIDEO_STOP_S = 10.0
"""After the shutdown grace, how long interrupted videos get to end (and be handed back)."""


class SharedRunner:
    """Pulls the shared queue into this replica's pipeline."""

    def __init__(
        self,
        store: SharedStore,
        worker: Worker,
        engines: Mapping[str, Engine],
        budgets: Budgets,
        settings: Settings,
        stats: PipelineStats,
        on_job: Callable[[Job], None] | None = None,
        videos: VideoExecutor | None = None,
        spool: Spool | None = None,
        meter: VideoMeter | None = None,
    ) -> None:
        self.store = store
        self.consumer = store.consumer
        self.worker = worker
        self.engines = engines
        self.budgets = budgets
        self.settings = settings
        self.stats = stats
        self.on_job = on_job
        """Called with each local job as it ends (the latency histograms)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._starting = 0
        """Deliveries being downloaded or admitted (not in the local queue yet)."""
        self.videos = videos
        self.spool = spool
        self.meter = meter or VideoMeter(stats)
        self._videos_starting = 0
        """Video deliveries being downloaded and probed (not in the executor yet)."""

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._pull_loop(), name="shared-runner")

    def stop_pulling(self) -> None:
        """SIGTERM: take nothing more; what runs finishes, what is queued here is handed back."""
        self.consumer.stop_pulling()
        self._changed.set()

    async def stop(self, grace_s: float) -> None:
        """Stop pulling, let the jobs in flight end (up to `grace_s`), hand back the rest."""
        self.stop_pulling()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        if self._tasks and self.videos is not None:
            # Films still running: stop them (they end SHUTDOWN and are handed back whole).
            self.videos.interrupt("this replica is shutting down")
            await asyncio.wait(set(self._tasks), timeout=VIDEO_STOP_S)
        for task in list(self._tasks):
            task.cancel()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    # -- pulling ------------------------------------------------------------------------------

    async def _pull_loop(self) -> None:
        wait_s = self.store.config.heartbeat_s
        while self.consumer.pulling:
            self._changed.clear()
            try:
                delivery = await self.consumer.pull(self._can_admit, timeout_s=wait_s)
            except StoreError:
                delivery = None  # health says why; pull again once it answers
                await asyncio.sleep(1.0)
            if delivery is None:
                # Refused (no room here now) or nothing queued: look again when a local job
                # ends or after a heartbeat, whichever comes first.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), wait_s)
                continue
            task = asyncio.create_task(self._run(delivery), name=f"shared-job-{delivery.job_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _can_admit(self, ticket: Ticket) -> bool:
        worker = self.worker
        if worker.draining or not worker.alive:
            return False
        engine = self.engines.get(ticket.model)
        if engine is None or not engine.ready:
            return False  # a replica that has the engine takes it
        if ticket.kind is JobKind.VIDEO:
            return self._can_admit_video(ticket)
        if worker.queue_depth + self._starting >= worker.lookahead:
            return False
        need = ticket.upload_bytes + ticket.host_bytes
        return self.budgets.host.available_bytes() >= need

    def _can_admit_video(self, ticket: Ticket) -> bool:
        """A free video thread, and room in the host budget for the job's plan now (on a CPU,
        and its frames' forward pass: the device's budget is the host's)."""
        if self.videos is None or self.spool is None:
            return False
        if self.videos.free_slots - self._videos_starting <= 0:
            return False
        need = ticket.host_bytes
        if self.budgets.device is self.budgets.host:
            need += ticket.estimate_bytes
        return self.budgets.host.available_bytes() >= need

    # -- running one job ----------------------------------------------------------------------

    async def _run(self, delivery: Delivery) -> None:
        if delivery.record.kind is JobKind.VIDEO:
            await self._run_video(delivery)
            return
        self._starting += 1
        job: Job | Failure | None = None
        try:
            job = await self._admitted(delivery)
        except StoreError:
            job = None
        finally:
            self._starting -= 1
        if job is None:
            await self._release(delivery)
            return
        if isinstance(job, Failure):
            await self._end(delivery, job)
            self.stats.count_job(delivery.record.model, job.outcome.value)
            return
        await self._follow(delivery, job)

    async def _admitted(self, delivery: Delivery) -> Job | Failure | None:
        """The delivery as a local job admitted here; a Failure to end it with; None to hand it
        back (no memory now, or a store that stopped answering)."""
        record = delivery.record
        settings = self.settings
        try:
            held: Reservation = await run_in_threadpool(
                self.budgets.host.reserve, record.upload_bytes, settings.admission_wait_s, "upload"
            )
        except NeverFits as exc:
            return Failure(Outcome.TOO_LARGE, f"the upload does not fit this replica: {exc}")
        except MemoryRefused:
            return None
        try:
            image, reference = await self.consumer.inputs(delivery)
        except ObjectNotFound:
            held.release()
            return Failure(Outcome.INVALID_REQUEST, "the job's upload is gone from the store")
        except BaseException:
            held.release()
            raise
        options = options_from_json(record.model, record.options)
        upload = Upload(image=image, options=options, reference=reference)
        job = admit(upload, self.engines, self.budgets, settings, held=held)
        if isinstance(job, Failure):
            return None if job.outcome in HAND_BACK else job
        job.id = record.id
        return job

    async def _follow(self, delivery: Delivery, job: Job) -> None:
        loop = asyncio.get_running_loop()
        ended = loop.create_future()

        def wake(_: Job) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(_settle, ended)
                loop.call_soon_threadsafe(self._changed.set)

        job.on_finish(wake)
        if self.on_job is not None:
            job.on_finish(self.on_job)
        try:
            self.worker.submit(job)
        except WorkerUnavailable:
            await self._release(delivery)
            return
        cancelled = asyncio.ensure_future(delivery.cancelled.wait())
        await asyncio.wait({ended, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        if not ended.done():
            # A client cancelled it (or another attempt took it over): stop it here.
            if not self.worker.cancel(job):
                job.abandon(Outcome.CANCELLED)
            await ended
        cancelled.cancel()
        await self._ended(delivery, job)

    async def _ended(self, delivery: Delivery, job: Job) -> None:
        outcome = job.outcome or Outcome.ERROR
        if job.state is JobState.DONE and job.result is not None:
            result, content_type = job.result, CONTENT_TYPES[job.output_format]
            job.drop_result("stored in the shared object store")
            if await self._complete(delivery, result, content_type, job.timings):
                self.stats.count_job(job.model, Outcome.DONE.value)
            return
        if outcome in HAND_BACK:
            await self._release(delivery)
            return
        failure = job.failure or Failure(Outcome.CANCELLED, "the job was cancelled")
        await self._end(delivery, failure, job.timings)
        self.stats.count_job(job.model, failure.outcome.value)

    # -- running one video ---------------------------------------------------------------------

    async def _run_video(self, delivery: Delivery) -> None:
        self._videos_starting += 1
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
            self._videos_starting -= 1
        if job is None:
            await self._release(delivery)
            return
        if isinstance(job, Failure):
            await self._end(delivery, job)
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
        reporter = _ProgressReporter(self, delivery)

        def wake(_: VideoJob) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(_settle, ended)
                loop.call_soon_threadsafe(self._changed.set)

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
            await self._release(delivery)
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
                if await self._complete(delivery, result.path, VIDEO_TYPE, job.timings):
                    self.stats.count_video_job(job.model, Outcome.DONE.value)
                    if result.seconds > 0:
                        self.meter.observe_rate(job.model, result.frames / result.seconds)
                return
            if outcome in HAND_BACK:
                await self._release(delivery)
                return
            failure = job.failure or Failure(Outcome.CANCELLED, "the job was cancelled")
            await self._end(delivery, failure, job.timings)
            self.stats.count_video_job(job.model, failure.outcome.value)
        finally:
            remove(job.target)

    async def _complete(
        self,
        delivery: Delivery,
        result: bytes | Path,
        content_type: str,
        timings: dict[str, float],
    ) -> bool:
        """Store the result and complete the job, retrying while the stores are down."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMPLETE_RETRY_S
        delay = 0.5
        while True:
            try:
                return await self.consumer.complete(delivery, result, content_type, timings)
            except StoreError as exc:
                if loop.time() > deadline:
                    log.error(
                        "could not complete job %s: %s; handing it back", delivery.job_id, exc
                    )
                    await self._release(delivery)
                    return False
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def _end(
        self, delivery: Delivery, failure: Failure, timings: dict[str, float] | None = None
    ) -> None:
        with contextlib.suppress(StoreError):  # unacknowledged, it is delivered again later
            await self.consumer.fail(delivery, failure.outcome, failure.detail, timings)

    async def _release(self, delivery: Delivery) -> None:
        with contextlib.suppress(StoreError):
            await self.consumer.release(delivery)


class _ProgressReporter:
    """Writes a running video's progress to its record, the latest at most once a second (a
    write that says the job should stop sets the delivery's `cancelled`)."""

    def __init__(self, runner: SharedRunner, delivery: Delivery) -> None:
        self.consumer = runner.consumer
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


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
