"""The staged pipeline: prepare (CPU pool) -> device (one thread) -> finish (CPU pool).

The queue holds uploads, not pixels. The prepare threads decode only the first `lookahead`
waiting jobs, inside host reservations; the device thread takes prepared jobs in order, batches
them, reserves the device and runs the forward pass; the finish threads join colour on CPU
devices and encode. Each stage is bounded, so what the service holds is bounded by the budget.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import torch

from service.engines.base import Engine
from service.memory import MemoryManager, MemoryRefused, NeverFits
from service.outcomes import Failure, Outcome
from service.settings import Settings
from service.worker import compute, stages
from service.worker.jobs import Job, JobState
from service.worker.stages import EncodeFn, EngineContractError, is_out_of_memory

log = logging.getLogger(__name__)

__all__ = ["EngineContractError", "Worker", "WorkerUnavailable", "batch_limit", "is_out_of_memory"]

STAGES = ("prepare", "device", "finish")


class WorkerUnavailable(Exception):
    """The worker cannot take a job now: queue full, draining, or dead."""

    outcome = Outcome.QUEUE_FULL

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class QueueFull(WorkerUnavailable):
    outcome = Outcome.QUEUE_FULL


class Draining(WorkerUnavailable):
    outcome = Outcome.SHUTDOWN


class WorkerDead(WorkerUnavailable):
    outcome = Outcome.WORKER_DEAD


def device_lanes(setting: int | Literal["auto"], device: torch.device) -> int:
    """COLORIZE_DEVICE_WORKERS for `device`: `auto` is 1 on a GPU or MPS, 2 on a CPU.

    On a CPU the cores are the device, and one forward pass at a time leaves them idle in its
    serial stretches (measured: 0.75-0.88x the naive server with one lane; docs/performance.md);
    a second lane fills them, each lane's batch admitted against the same budget.
    """
    if setting == "auto":
        return min(2, os.cpu_count() or 1) if device.type == "cpu" else 1
    return setting


def batch_limit(setting: int | Literal["auto"], device: torch.device) -> int:
    """COLORIZE_BATCH_MAX_SIZE for `device`: `auto` is 8 on CUDA, 1 elsewhere.

    On a CPU a shared forward pass gains nothing and every job in the batch waits for the last
    one (docs/performance.md); GPUs are where batching pays.
    """
    if setting == "auto":
        return 8 if device.type == "cuda" else 1
    return setting


@dataclass
class WorkerStats:
    """Counters for /metrics, read at scrape time."""

    jobs: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(model, outcome) -> jobs finished."""
    oom_events: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    """outcome -> submissions refused before queueing."""
    busy_seconds: dict[str, float] = field(default_factory=dict)
    """stage -> seconds its threads spent working."""
    completed: int = 0


class Worker:
    """Runs queued jobs through prepare, device and finish, each inside memory reservations."""

    def __init__(
        self,
        engines: Mapping[str, Engine],
        manager: MemoryManager,
        settings: Settings,
        encode: EncodeFn,
        host: MemoryManager | None = None,
    ) -> None:
        self.engines = engines
        self.manager = manager
        self.host = host if host is not None else manager
        """Host memory: the device's manager itself on a CPU (one pool, never counted twice)."""
        self.settings = settings
        self.encode = encode
        self.batch_max_size = batch_limit(settings.batch_max_size, manager.device)
        """Jobs per forward pass of a batchable engine: COLORIZE_BATCH_MAX_SIZE, `auto` resolved."""
        self.lookahead = (
            self.batch_max_size + settings.prepare_workers
            if settings.lookahead == "auto"
            else settings.lookahead
        )
        """Waiting jobs decoded ahead of the device: enough to fill the next batch."""
        self.limits = stages.DecodeLimits(
            settings.allowed_formats, settings.max_pixels, settings.admission_wait_s
        )
        self.stats = WorkerStats()
        self.batch_observers: list[Callable[[str, int], None]] = []
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running: list[Job] = []
        self._finishing = 0
        self._stopping = False
        self._draining: str | None = None
        self._death: BaseException | None = None
        self.lanes = device_lanes(settings.device_workers, manager.device)
        """Device threads (COLORIZE_DEVICE_WORKERS): one on a GPU, two on a CPU."""
        self._threads = [
            threading.Thread(target=self._loop, name=f"colorize-device-{i}", daemon=True)
            for i in range(self.lanes)
        ]
        self._preparers = [
            threading.Thread(target=self._prepare_loop, name=f"colorize-prepare-{i}", daemon=True)
            for i in range(settings.prepare_workers)
        ]
        self._finisher = ThreadPoolExecutor(
            max_workers=settings.finish_workers, thread_name_prefix="colorize-finish"
        )
        # Outputs waiting for a finish thread hold memory too: the device waits past this many.
        self._finish_slots = threading.BoundedSemaphore(2 * settings.finish_workers)

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        for thread in self._preparers:
            thread.start()

    @property
    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads) and self._death is None

    @property
    def draining(self) -> str | None:
        return self._draining

    @property
    def death(self) -> BaseException | None:
        return self._death

    @property
    def queue_depth(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def jobs_running(self) -> int:
        with self._cond:
            return len(self._running)

    def stage_depths(self) -> dict[str, int]:
        """Jobs in each stage now: waiting or decoding, ready or on the device, finishing."""
        with self._cond:
            ready = sum(1 for j in self._queue if j.prepare_state == "ready")
            return {
                "prepare": len(self._queue) - ready,
                "device": ready + len(self._running),
                "finish": self._finishing,
            }

    def position(self, job: Job) -> int | None:
        """1-based place of a queued job (None if not queued)."""
        with self._cond:
            for i, queued in enumerate(self._queue):
                if queued is job:
                    return i + 1
        return None

    def submit(self, job: Job) -> None:
        """Queue `job` or raise WorkerUnavailable (queue full, draining, dead); a refused job
        ends at once with that outcome, giving back what it held."""
        refusal: WorkerUnavailable | None = None
        with self._cond:
            if self._death is not None or any(t.ident and not t.is_alive() for t in self._threads):
                refusal = WorkerDead("the worker thread has stopped; the service is not ready", 5)
            elif self._draining is not None:
                refusal = Draining(self._draining, 5)
            elif len(self._queue) >= self.settings.queue_size:
                refusal = QueueFull(
                    f"the queue is full ({self.settings.queue_size} jobs waiting)",
                    self._retry_after(),
                )
            else:
                job.on_finish(self._count)
                self._queue.append(job)
                self._cond.notify_all()
                return
            self.stats.refused[refusal.outcome.value] += 1
        job.fail(refusal.outcome, refusal.detail, refusal.retry_after)
        raise refusal

    def cancel(self, job: Job, outcome: Outcome = Outcome.CANCELLED, detail: str = "") -> bool:
        """End a queued job with `outcome`; False if it already reached the device or finished."""
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return False
            self._cond.notify_all()
        if outcome is Outcome.CANCELLED:
            return job.finish(JobState.CANCELLED)
        return job.fail(outcome, detail or outcome.value)

    def drain(self, reason: str = "the service is shutting down") -> None:
        """Stop admitting; fail queued jobs with `reason`; let the running batch finish."""
        with self._cond:
            self._draining = reason
            queued, self._queue = list(self._queue), deque()
            self._cond.notify_all()
        for job in queued:
            job.fail(Outcome.SHUTDOWN, f"{reason}; the job was not started", 5)

    def stop(self, timeout: float | None = None) -> bool:
        """Drain, let the running batch finish (up to `timeout` s), end the threads."""
        self.drain()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout)
        for thread in self._preparers:
            if thread.ident is not None:
                thread.join(timeout)
        self._finisher.shutdown(wait=True, cancel_futures=False)
        return not any(t.is_alive() for t in self._threads)

    # -- the prepare stage --------------------------------------------------------------------

    def _prepare_loop(self) -> None:
        while True:
            with self._cond:
                job = self._next_to_prepare()
                while job is None:
                    if self._stopping:
                        return
                    self._cond.wait()
                    job = self._next_to_prepare()
                job.prepare_state = "preparing"
            started = time.monotonic()
            engine = self.engines.get(job.model)
            if started - job.created > self.settings.job_timeout_s:
                # Past its time already: decoding it would only spend memory on a 504.
                failure: Failure | None = Failure(
                    Outcome.TIMEOUT, "the job waited longer than the job time limit"
                )
            elif engine is None:
                failure = Failure(Outcome.INVALID_REQUEST, f"no model {job.model}")
            else:
                failure = stages.prepare(job, engine, self.host, self.limits)
            with self._cond:
                self._busy("prepare", started)
                if failure is None:
                    job.prepare_state = "ready"
                elif job in self._queue:
                    self._queue.remove(job)
                self._cond.notify_all()
            if failure is not None:
                job.fail(failure.outcome, failure.detail, failure.retry_after)

    def _next_to_prepare(self) -> Job | None:
        # Only the first `lookahead` jobs: a long queue costs its uploads' bytes, not pixels.
        for i, job in enumerate(self._queue):
            if i >= self.lookahead:
                return None
            if job.prepare_state == "waiting":
                return job
        return None

    # -- the device thread ------------------------------------------------------------------

    def _loop(self) -> None:
        batch: list[Job] | None = None
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._run_batch(batch)
                batch = None
        except BaseException as exc:
            # Only something outside any job's handling gets here (a bug, or the thread being
            # torn down): every waiter must learn it at once instead of hanging.
            log.critical("worker thread died: %r", exc, exc_info=True)
            self._death = exc
        finally:
            with self._cond:
                stranded = (batch or []) + list(self._queue)
                self._queue.clear()
                for job in batch or []:
                    if job in self._running:
                        self._running.remove(job)
                self._stopping = True
                self._cond.notify_all()
            for job in stranded:
                detail = "the worker thread stopped before the job finished"
                job.fail(Outcome.WORKER_DEAD, detail, 5)

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not (self._queue and self._queue[0].prepare_state == "ready"):
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch = [first]
            engine = self.engines.get(first.model)
            limit = self.batch_max_size if engine and engine.batchable else 1
            deadline = time.monotonic() + self.settings.batch_max_wait_ms / 1000.0
            while len(batch) < limit:
                self._take_same_model(batch, limit)
                remaining = deadline - time.monotonic()
                if len(batch) >= limit or remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
            self._running.extend(batch)
            # The look-ahead window slid: the preparers may start on the jobs now inside it.
            self._cond.notify_all()
        return batch

    def _take_same_model(self, batch: list[Job], limit: int) -> None:
        budget = self.manager.job_budget()
        total = sum(j.estimate for j in batch)
        engine = self.engines.get(batch[0].model)
        key = _batch_key(engine, batch[0])
        for job in list(self._queue):
            if len(batch) >= limit:
                return
            if (
                job.prepare_state == "ready"
                and job.model == batch[0].model
                and _batch_key(engine, job) == key
                and total + job.estimate <= budget
            ):
                self._queue.remove(job)
                batch.append(job)
                total += job.estimate

    def _run_batch(self, batch: list[Job]) -> None:
        now = time.monotonic()
        live: list[Job] = []
        for job in batch:
            job.timings["queue"] = now - job.created
            if now - job.created > self.settings.job_timeout_s:
                job.fail(Outcome.TIMEOUT, "the job waited longer than the job time limit")
                continue
            if job.state.finished:  # cancelled or timed out while it was being prepared
                continue
            job.state, job.started, job.batch_size = JobState.RUNNING, now, len(batch)
            live.append(job)
        started = time.monotonic()
        try:
            if live:
                self._admit_and_compute(live)
        finally:
            with self._cond:
                for job in batch:
                    if job in self._running:
                        self._running.remove(job)
            self._after_job()
            self._busy("device", started)

    def _admit_and_compute(self, jobs: list[Job]) -> None:
        model = jobs[0].model
        engine = self.engines[model]
        if not engine.ready:
            self._fail_all(jobs, Failure(Outcome.NOT_READY, engine.not_ready_reason or "", 30))
            return
        requests = [j.request for j in jobs]
        if any(r is None for r in requests):
            self._fail_all(jobs, Failure(Outcome.ERROR, "the job reached the device undecoded"))
            return
        total = sum(engine.device_estimate(r, len(jobs)) // len(jobs) for r in requests if r)
        try:
            reservation = self.manager.reserve(
                total, timeout=self.settings.admission_wait_s, purpose="compute"
            )
        except NeverFits as exc:
            if len(jobs) > 1:  # the budget shrank since batching: run them one by one
                for job in jobs:
                    self._admit_and_compute([job])
                return
            self._fail_all(jobs, Failure(Outcome.TOO_LARGE, str(exc)))
            return
        except MemoryRefused as exc:
            detail = f"device memory could not be reserved in time: {exc}"
            self._fail_all(jobs, Failure(Outcome.MEMORY_BUSY, detail, 2))
            return
        for observe in self.batch_observers:
            observe(model, len(jobs))
        with reservation:
            started = time.monotonic()
            # With two lanes the process-wide peak would mix both batches: a lane measures only
            # while the other is not measuring, and such a batch is left out of the record.
            with self.manager.measure(blocking=self.lanes == 1) as peak:
                outputs = compute.forward(
                    engine,
                    [j.request for j in jobs if j.request is not None],
                    [j.prepared for j in jobs],
                    self.manager,
                    self.stats.oom_events,
                )
            elapsed = time.monotonic() - started
        if isinstance(outputs, Failure):
            self._fail_all(jobs, outputs)
            return
        if peak.measured:
            self.manager.record_estimate(model, total, peak.peak_bytes)
        for job, output in zip(jobs, outputs, strict=True):
            job.timings["compute"] = elapsed
            # Bounded hand-over: past 2 x finish threads, the device waits for the CPU stage.
            self._finish_slots.acquire()
            with self._cond:
                self._finishing += 1
            self._finisher.submit(self._finish, job, engine, output)

    def _after_job(self) -> None:
        policy = self.settings.clear_cache
        if policy == "always" or (
            policy == "threshold"
            and self.manager.check_memory_usage() > self.manager.memory_threshold
        ):
            self.manager.clear_cache()
        self.manager.trigger_gc_if_needed()
        self.manager.refresh_idle()

    # -- the finish stage ---------------------------------------------------------------------

    def _finish(self, job: Job, engine: Engine, output: object) -> None:
        started = time.monotonic()
        try:
            outcome = stages.finish(
                job,
                engine,
                output,
                self.host,
                self.encode,
                self.settings.admission_wait_s,
                compute.working_chunk(engine),
            )
            del output
            if isinstance(outcome, bytes):
                job.finish(JobState.DONE, result=outcome)
            else:
                job.fail(outcome.outcome, outcome.detail, outcome.retry_after)
        finally:
            with self._cond:
                self._finishing -= 1
                self._busy("finish", started)
            self._finish_slots.release()

    # -- bookkeeping --------------------------------------------------------------------------

    def _fail_all(self, jobs: Sequence[Job], failure: Failure) -> None:
        for job in jobs:
            job.fail(failure.outcome, failure.detail, failure.retry_after)

    def _count(self, job: Job) -> None:
        outcome = job.told or job.outcome or Outcome.ERROR
        with self._cond:
            self.stats.jobs[(job.model, outcome.value)] += 1
            if outcome is Outcome.DONE:
                self.stats.completed += 1

    def _busy(self, stage: str, since: float) -> None:
        # Called with the condition's lock held, or alone (the device thread is the only writer).
        busy = self.stats.busy_seconds
        busy[stage] = busy.get(stage, 0.0) + time.monotonic() - since

    def _retry_after(self) -> int:
        # A rough drain time of the queue: depth x recent per-job time, at least one second.
        return max(1, min(60, len(self._queue) // self.batch_max_size))


def _batch_key(engine: Engine | None, job: Job) -> object:
    if engine is None or job.request is None:
        return None
    return engine.batch_key(job.request)
