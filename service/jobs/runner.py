"""This replica's share of the shared queue: pull a job only when this replica's budgets admit it
(no prefetch beyond the look-ahead), run it through the local pipeline, store its result and
complete it once; hand back what it cannot finish, so that another replica runs it.

A busy replica leaves the work to the others: `_can_admit` refuses the head of the queue while
the local queue already holds the look-ahead's worth of jobs, or while the host budget cannot
hold the job's upload and its decoded pixels now.

Videos take their own path (service/jobs/shared_video.py); every delivery ends through
service/jobs/deliveries.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from starlette.concurrency import run_in_threadpool

from service.engines.base import Engine
from service.imaging.encode import CONTENT_TYPES
from service.jobs.deliveries import HAND_BACK, Endings, settle
from service.jobs.options import options_from_json
from service.jobs.shared_video import SharedVideos
from service.jobs.spool import Spool
from service.jobs.video import VideoMeter
from service.jobs.video_executor import VideoExecutor
from service.memory import MemoryRefused, NeverFits, Reservation
from service.outcomes import Failure, Outcome
from service.settings import Settings
from service.store import (
    Delivery,
    JobKind,
    ObjectNotFound,
    SharedStore,
    StoreError,
    Ticket,
)
from service.worker.admission import Budgets, Upload, admit
from service.worker.jobs import Job, JobState
from service.worker.queue import WorkerUnavailable
from service.worker.stats import PipelineStats
from service.worker.worker import Worker

log = logging.getLogger(__name__)

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
        self.endings = Endings(self.consumer)
        self.films = (
            SharedVideos(
                self.consumer,
                self.endings,
                videos,
                spool,
                engines,
                budgets,
                settings,
                stats,
                meter or VideoMeter(stats),
                self._changed,
            )
            if videos is not None and spool is not None
            else None
        )

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
            return self.films is not None and self.films.can_admit(ticket)
        if worker.queue_depth + self._starting >= worker.lookahead:
            return False
        need = ticket.upload_bytes + ticket.host_bytes
        return self.budgets.host.available_bytes() >= need

    # -- running one job ----------------------------------------------------------------------

    async def _run(self, delivery: Delivery) -> None:
        if delivery.record.kind is JobKind.VIDEO:
            assert self.films is not None  # only admitted with a video executor
            await self.films.run(delivery)
            return
        self._starting += 1
        job: Job | Failure | None = None
        try:
            job = await self._admitted(delivery)
        except StoreError:
            job = None
        finally:
            self._starting -= 1
        if job is None or isinstance(job, Failure):
            await self.endings.unstarted(delivery, job)
            if job is not None:
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
                loop.call_soon_threadsafe(settle, ended)
                loop.call_soon_threadsafe(self._changed.set)

        job.on_finish(wake)
        if self.on_job is not None:
            job.on_finish(self.on_job)
        try:
            self.worker.submit(job)
        except WorkerUnavailable:
            await self.endings.release(delivery)
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
            if await self.endings.complete(delivery, result, content_type, job.timings):
                self.stats.count_job(job.model, Outcome.DONE.value)
            return
        if outcome in HAND_BACK:
            await self.endings.release(delivery)
            return
        failure = job.failure or Failure(Outcome.CANCELLED, "the job was cancelled")
        await self.endings.end(delivery, failure, job.timings)
        self.stats.count_job(job.model, failure.outcome.value)

    # -- running one video ---------------------------------------------------------------------
