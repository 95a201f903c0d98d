"""The device stage: lanes that take batches from the queue, reserve the device's memory, run
the forward pass while measuring its peak, and hand each output to the finish stage (or, when
nothing waits for the device, finish it themselves).

On a GPU there is one lane: one thread owns the device. On a CPU the cores are the device and
one forward pass leaves them idle in its serial stretches, so two lanes run (each batch admitted
against the same budget); the second takes work only while the first is busy. A lone job runs
on the first lane from decode to encode, with torch's whole thread pool; under load each lane
runs torch on its own thread (service/worker/intraop.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch

from service.engines.base import Engine
from service.memory import MemoryManager, MemoryRefused, NeverFits
from service.memory.idle_clear import IdleClear
from service.outcomes import Failure, Outcome
from service.settings import Settings
from service.worker import compute, intraop
from service.worker.jobs import Job, JobState
from service.worker.queue import JobQueue
from service.worker.stats import PipelineStats

log = logging.getLogger(__name__)

FinishFn = Callable[[Job, Engine, object, bool], None]
"""Hand one output to the finish stage; the flag allows finishing in the calling thread."""
PrepareFn = Callable[[Job], object]
"""Decode one job in the calling thread (the prepare stage's work, done by the first lane)."""


def device_lanes(setting: int | Literal["auto"], device: torch.device) -> int:
    """COLORIZE_DEVICE_WORKERS for `device`: `auto` is 1 on a GPU or MPS, 2 on a CPU.

    On a CPU one forward pass at a time leaves the cores idle in its serial stretches (measured:
    0.75-0.88x the naive server with one lane; docs/performance.md); a second lane fills them.
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


class DeviceStage:
    """Runs batches on the device: admission, forward pass, measurement, hand-over, hygiene."""

    def __init__(
        self,
        engines: Mapping[str, Engine],
        manager: MemoryManager,
        settings: Settings,
        queue: JobQueue,
        stats: PipelineStats,
        finish: FinishFn,
        prepare: PrepareFn | None = None,
    ) -> None:
        self.engines = engines
        self.manager = manager
        self.settings = settings
        self.queue = queue
        self.stats = stats
        self.finish = finish
        self.prepare = prepare
        queue.first_lane_prepares = prepare is not None
        self.lanes = device_lanes(settings.device_workers, manager.device)
        self.batch_max_size = batch_limit(settings.batch_max_size, manager.device)
        self.batch_observers: list[Callable[[str, int], None]] = []
        self.death: BaseException | None = None
        self.batch_seconds = 0.0
        """A moving average of a batch's time on the device (what Retry-After is made of)."""
        self.on_death: Callable[[], None] = lambda: None
        self.idle_clear = (
            IdleClear(self._clear_idle, lambda: not queue.idle(), settings.clear_cache_idle_s)
            if manager.backend.kind == "cpu" and settings.clear_cache_idle_s > 0
            else None
        )
        """On a CPU, the cache cleared once idle rather than after a lone job (see idle_clear)."""
        self._threads = [
            threading.Thread(target=self._lane, args=(i,), name=f"colorize-device-{i}", daemon=True)
            for i in range(self.lanes)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @property
    def alive(self) -> bool:
        return self.death is None and all(t.is_alive() for t in self._threads)

    def started_and_dead(self) -> bool:
        """A lane thread that was started has ended (a bug, or the thread was torn down)."""
        return self.death is not None or any(t.ident and not t.is_alive() for t in self._threads)

    def join(self, timeout: float | None) -> bool:
        """Wait for the lanes to end; whether they all did."""
        if self.idle_clear is not None:
            self.idle_clear.close()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    def _lane(self, lane: int) -> None:
        # The first lane, where a lone job runs, keeps torch's whole thread pool for lone jobs
        # (service/worker/intraop.py).
        pool = torch.get_num_threads()
        if lane > 0:
            intraop.run_serially()

        def prepare_head(job: Job) -> object:
            assert self.prepare is not None
            intraop.use_threads(pool if self.queue.alone(lane, waiting=1) else 1)
            return self.prepare(job)

        try:
            while True:
                batch = self.queue.next_batch(
                    lane,
                    self.engines,
                    self.batch_max_size,
                    self.settings.batch_max_wait_ms / 1000.0,
                    self.manager.job_budget,
                    prepare_head if self.prepare is not None else None,
                )
                if batch is None:
                    return
                if lane == 0:
                    intraop.use_threads(pool if self.queue.alone(lane) else 1)
                self.run(batch, lane)
        except BaseException:
            return  # `run` logged it and failed every waiting job; the lane ends

    def run(self, batch: list[Job], lane: int) -> None:
        """Run `lane`'s batch; a BaseException here kills the device stage."""
        started = time.monotonic()
        try:
            live = self._start(batch)
            if live:
                self._admit_and_compute(live)
        except BaseException as exc:
            # Only something outside any job's handling gets here (a bug, or the thread being
            # torn down): every waiter must learn it at once instead of hanging.
            log.critical("the device stage died: %r", exc, exc_info=True)
            self.death = exc
            detail = "the worker thread stopped before the job finished"
            for job in batch:
                job.fail(Outcome.WORKER_DEAD, detail, 5)
            self.on_death()
            raise
        finally:
            self.queue.off_device(batch, lane)
            self._after_batch()
            elapsed = self.stats.add_busy("device", started)
            # A plain float store: a lost update between two lanes only skews an estimate.
            self.batch_seconds = (
                0.8 * self.batch_seconds + 0.2 * elapsed if self.batch_seconds else elapsed
            )

    def _start(self, batch: list[Job]) -> list[Job]:
        now = time.monotonic()
        live: list[Job] = []
        for job in batch:
            job.timings["queue"] = now - job.created
            if now - job.created > self.settings.job_timeout_s:
                job.fail(Outcome.TIMEOUT, "the job waited longer than the job time limit")
                continue
            if job.state.finished:  # cancelled or timed out while it was being prepared
                continue
            if job.told is not None:  # its client left while it was being prepared
                job.fail(job.told, "nobody waits for the result any more")
                continue
            job.state, job.started, job.batch_size = JobState.RUNNING, now, len(batch)
            live.append(job)
        return live

    def _admit_and_compute(self, jobs: list[Job]) -> None:
        model = jobs[0].model
        engine = self.engines[model]
        if not engine.ready:
            _fail_all(jobs, Failure(Outcome.NOT_READY, engine.not_ready_reason or "not loaded"))
            return
        requests = [j.request for j in jobs if j.request is not None]
        if len(requests) != len(jobs):
            _fail_all(jobs, Failure(Outcome.ERROR, "the job reached the device undecoded"))
            return
        total = sum(engine.device_estimate(r, len(jobs)) // len(jobs) for r in requests)
        try:
            reservation = self.manager.reserve(
                total, timeout=self.settings.admission_wait_s, purpose="compute"
            )
        except NeverFits as exc:
            if len(jobs) > 1:  # the budget shrank since batching: run them one by one
                for job in jobs:
                    self._admit_and_compute([job])
                return
            _fail_all(jobs, Failure(Outcome.TOO_LARGE, str(exc)))
            return
        except MemoryRefused as exc:
            detail = f"device memory could not be reserved in time: {exc}"
            _fail_all(jobs, Failure(Outcome.MEMORY_BUSY, detail, 2))
            return
        for observe in self.batch_observers:
            observe(model, len(jobs))
        with reservation:
            started = time.monotonic()
            # With two lanes the process-wide peak would mix both batches: a batch measures
            # only while no other is measuring, and one that could not is left out of the record.
            with self.manager.measure(blocking=self.lanes == 1) as peak:
                outputs = compute.forward(
                    engine, requests, [j.prepared for j in jobs], self.manager, self.stats
                )
            elapsed = time.monotonic() - started
        if isinstance(outputs, Failure):
            _fail_all(jobs, outputs)
            return
        if peak.measured:
            self.manager.record_estimate(model, total, peak.peak_bytes)
        # Finishing here costs nothing when no prepared job waits for the device (a lone job):
        # the hand-over to a finish thread would only add its wake-up to the latency, and the
        # colour join's torch ops stay on this thread's intra-op pool (see preparing.py).
        inline = len(jobs) == 1 and not self.queue.ready_waiting()
        for job, output in zip(jobs, outputs, strict=True):
            job.timings["compute"] = elapsed
            self.finish(job, engine, output, inline)

    def _after_batch(self) -> None:
        policy = self.settings.clear_cache
        if policy == "always" and self.idle_clear is not None and self.queue.idle():
            self.idle_clear.arm()
        elif policy == "always" or (
            policy == "threshold"
            and self.manager.check_memory_usage() > self.manager.memory_threshold
        ):
            self.manager.clear_cache()
            if self.idle_clear is not None:
                self.idle_clear.cancel()
        self.manager.trigger_gc_if_needed()
        # The heap kept for the next job is not the idle process's: the job budget is counted
        # from the resident memory after a clear.
        if self.idle_clear is None or not self.idle_clear.pending:
            self.manager.refresh_idle()

    def _clear_idle(self) -> None:
        self.manager.clear_cache()
        self.manager.refresh_idle()


def _fail_all(jobs: Sequence[Job], failure: Failure) -> None:
    for job in jobs:
        job.fail(failure.outcome, failure.detail, failure.retry_after)
