"""The staged pipeline behind one facade: a queue of uploads, a prepare pool that decodes ahead,
device lanes that run forward passes, a finish pool that joins colour and encodes.

    submit -> JobQueue -> PreparePool -> DeviceStage (lanes) -> FinishPool -> job.finish

Each stage reserves its memory before it allocates and is bounded, so what the service holds is
bounded by its budgets. The parts live in their own modules; this one starts, stops and reports
on them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

from service.engines.base import Engine
from service.memory import MemoryManager
from service.outcomes import Outcome
from service.settings import Settings
from service.worker.finishing import FinishPool
from service.worker.jobs import Job, JobState
from service.worker.lanes import DeviceStage, batch_limit, device_lanes
from service.worker.preparing import PreparePool
from service.worker.queue import (
    Draining,
    JobQueue,
    QueueFull,
    WorkerDead,
    WorkerUnavailable,
)
from service.worker.stages import EncodeFn
from service.worker.stats import PipelineStats

log = logging.getLogger(__name__)

__all__ = ["Worker", "WorkerUnavailable", "batch_limit", "device_lanes"]


class Worker:
    """Runs queued jobs through prepare, device and finish, each inside memory reservations."""

    def __init__(
        self,
        engines: Mapping[str, Engine],
        manager: MemoryManager,
        settings: Settings,
        encode: EncodeFn,
        host: MemoryManager | None = None,
        stats: PipelineStats | None = None,
    ) -> None:
        self.engines = engines
        self.manager = manager
        self.host = host if host is not None else manager
        """Host memory: the device's manager itself on a CPU (one pool, never counted twice)."""
        self.settings = settings
        self.stats = stats if stats is not None else PipelineStats()
        self.batch_max_size = batch_limit(settings.batch_max_size, manager.device)
        """Jobs per forward pass of a batchable engine: COLORIZE_BATCH_MAX_SIZE, `auto` resolved."""
        self.lookahead = (
            self.batch_max_size + settings.prepare_workers
            if settings.lookahead == "auto"
            else settings.lookahead
        )
        """Waiting jobs decoded ahead of the device: enough to fill the next batch."""
        self.lanes = device_lanes(settings.device_workers, manager.device)
        """Device lanes (COLORIZE_DEVICE_WORKERS): one on a GPU, two on a CPU."""
        self.queue = JobQueue(settings.queue_size, self.lookahead)
        self.finisher = FinishPool(settings, self.host, encode, self.queue, self.stats)
        self.preparer = PreparePool(engines, self.host, settings, self.queue, self.stats)
        self.device = DeviceStage(
            engines,
            manager,
            settings,
            self.queue,
            self.stats,
            self.finisher.submit,
            self.preparer.prepare_one,
        )
        self.device.on_death = self._strand
        self._draining: str | None = None

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        self.device.start()
        self.preparer.start()

    def submit(self, job: Job, on_finish: Callable[[Job], None] | None = None) -> None:
        """Queue `job` or raise WorkerUnavailable (queue full, draining, dead); a refused job
        ends at once with that outcome, giving back what it held. `on_finish` is called when
        an accepted job ends (the /jobs counter: /colorize counts its own answers)."""
        queue = self.queue
        with queue.cond:
            refusal = self._refusal_locked()
            if refusal is None:
                if on_finish is not None:
                    job.on_finish(on_finish)
                queue.put_locked(job)
                return
        self.stats.count_refusal(refusal.outcome.value)
        job.fail(refusal.outcome, refusal.detail, refusal.retry_after)
        raise refusal

    def submit_prepared(self, jobs: list[Job]) -> None:
        """Queue jobs whose input is prepared already (a video's frames: its window bounds them,
        so the queue's capacity does not); WorkerUnavailable if dead or stopping. While draining
        they are still taken: a running video may finish within the shutdown grace, as the
        running photos do (its video job stops it when the grace is over)."""
        queue = self.queue
        with queue.cond:
            refusal = self._refusal_locked(capacity=False, draining=False)
            if refusal is None and queue.stopping:
                refusal = Draining(self._draining or "the worker has stopped", 5)
            if refusal is None:
                for job in jobs:
                    job.prepare_state = "ready"
                    queue.put_locked(job)
                return
        for job in jobs:
            job.fail(refusal.outcome, refusal.detail, refusal.retry_after)
        raise refusal

    def cancel(self, job: Job, outcome: Outcome = Outcome.CANCELLED, detail: str = "") -> bool:
        """End a waiting job with `outcome`; False if it already reached the device or ended."""
        if not self.queue.remove(job):
            return False
        if outcome is Outcome.CANCELLED:
            return job.finish(JobState.CANCELLED)
        return job.fail(outcome, detail or outcome.value)

    def drain(self, reason: str = "the service is shutting down") -> None:
        """Stop admitting; fail waiting jobs with `reason`; let the running batch finish."""
        with self.queue.cond:
            self._draining = reason
        for job in self.queue.take_all(spare=lambda job: job.of_video):
            job.fail(Outcome.SHUTDOWN, f"{reason}; the job was not started", 5)

    def stop(self, timeout: float | None = None) -> bool:
        """Drain, let the running batch finish (up to `timeout` s), end the threads."""
        self.drain()
        self.queue.stop()
        finished = self.device.join(timeout)
        self.preparer.join(timeout)
        self.finisher.shutdown()
        # Frames of a video spared by the drain: with the lanes gone nothing would run them.
        for job in self.queue.take_all():
            job.fail(Outcome.SHUTDOWN, "the service stopped before the frame was coloured", 5)
        return finished

    # -- state ------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.device.alive

    @property
    def draining(self) -> str | None:
        return self._draining

    @property
    def death(self) -> BaseException | None:
        return self.device.death

    @property
    def queue_depth(self) -> int:
        return self.queue.depth()

    @property
    def jobs_running(self) -> int:
        return self.queue.running()

    @property
    def batch_observers(self) -> list[Callable[[str, int], None]]:
        return self.device.batch_observers

    def stage_depths(self) -> dict[str, int]:
        return self.queue.stage_depths()

    def position(self, job: Job) -> int | None:
        """1-based place of a queued job (None if not queued)."""
        return self.queue.position(job)

    # -- internals ----------------------------------------------------------------------------

    def _refusal_locked(
        self, capacity: bool = True, draining: bool = True
    ) -> WorkerUnavailable | None:
        if self.device.started_and_dead():
            return WorkerDead("the worker thread has stopped; the service is not ready", 5)
        if draining and self._draining is not None:
            return Draining(self._draining, 5)
        if capacity and self.queue.is_full_locked():
            return QueueFull(
                f"the queue is full ({self.settings.queue_size} jobs waiting)",
                self._retry_after_locked(),
            )
        return None

    def _retry_after_locked(self) -> int:
        # When the queue should have room again: the batches ahead, run `lanes` at a time, each
        # taking what recent batches took on the device; 1 to 60 s.
        batches = math.ceil(self.queue.waiting_locked() / max(1, self.batch_max_size))
        seconds = batches * self.device.batch_seconds / max(1, self.lanes)
        return max(1, min(60, math.ceil(seconds)))

    def _strand(self) -> None:
        # The device stage died: nothing will ever take the waiting jobs.
        self.queue.stop()
        for job in self.queue.take_all():
            job.fail(Outcome.WORKER_DEAD, "the worker thread stopped before the job finished", 5)
