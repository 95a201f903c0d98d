"""The one thread that owns the device: a bounded FIFO, batching, memory admission, OOM recovery."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from service.engines.base import ColorizeRequest, Engine, InvalidRequest
from service.memory import MemoryManager, MemoryRefused, NeverFits
from service.settings import Settings
from service.worker.jobs import Job, JobState

log = logging.getLogger(__name__)

EncodeFn = Callable[[np.ndarray, str, "int | None"], bytes]


class WorkerUnavailable(Exception):
    """The worker cannot take a job now: queue full, draining, or dead (all 503)."""

    reason = "unavailable"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class QueueFull(WorkerUnavailable):
    reason = "queue_full"


class Draining(WorkerUnavailable):
    reason = "shutting_down"


class WorkerDead(WorkerUnavailable):
    reason = "worker_dead"


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, MPS/CPU allocator failures and Python's MemoryError."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


class EngineContractError(RuntimeError):
    """An engine answered something other than one RGB image per request, each of its size."""


def _checked(
    engine: Engine, requests: Sequence[ColorizeRequest], outputs: list[np.ndarray]
) -> list[np.ndarray]:
    if len(outputs) != len(requests):
        raise EngineContractError(
            f"{engine.name} returned {len(outputs)} images for {len(requests)} requests"
        )
    for request, out in zip(requests, outputs, strict=True):
        w, h = request.size
        if out.shape != (h, w, 3) or out.dtype != np.uint8:
            raise EngineContractError(
                f"{engine.name} returned {out.dtype} {out.shape} for a {w}x{h} image"
            )
    return outputs


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
    """reason -> submissions refused before queueing."""
    completed: int = 0


class Worker:
    """Runs queued jobs one batch at a time on the device, inside memory reservations."""

    def __init__(
        self,
        engines: Mapping[str, Engine],
        manager: MemoryManager,
        settings: Settings,
        encode: EncodeFn,
    ) -> None:
        self.engines = engines
        self.manager = manager
        self.settings = settings
        self.encode = encode
        self.batch_max_size = batch_limit(settings.batch_max_size, manager.device)
        """Jobs per forward pass of a batchable engine: COLORIZE_BATCH_MAX_SIZE, `auto` resolved."""
        self.stats = WorkerStats()
        self.batch_observers: list[Callable[[str, int], None]] = []
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running: list[Job] = []
        self._stopping = False
        self._draining: str | None = None
        self._death: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="colorize-worker", daemon=True)
        # Encoding runs beside the device thread so the next batch starts while Pillow works.
        self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="colorize-encode")

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._death is None

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

    def position(self, job: Job) -> int | None:
        """1-based place of a queued job (None if not queued)."""
        with self._cond:
            for i, queued in enumerate(self._queue):
                if queued is job:
                    return i + 1
        return None

    def submit(self, job: Job) -> None:
        """Queue `job` or raise WorkerUnavailable (queue full, draining, dead)."""
        with self._cond:
            if self._death is not None or (self._thread.ident and not self._thread.is_alive()):
                self.stats.refused["worker_dead"] += 1
                raise WorkerDead("the worker thread has stopped; the service is not ready", 5)
            if self._draining is not None:
                self.stats.refused["shutting_down"] += 1
                raise Draining(self._draining, 5)
            if len(self._queue) >= self.settings.queue_size:
                self.stats.refused["queue_full"] += 1
                raise QueueFull(
                    f"the queue is full ({self.settings.queue_size} jobs waiting)",
                    self._retry_after(),
                )
            self._queue.append(job)
            self._cond.notify_all()

    def cancel(self, job: Job) -> bool:
        """Take a queued job out of the queue; False if it already started or finished."""
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return False
        job.finish(JobState.CANCELLED)
        self._count(job, "cancelled")
        return True

    def drain(self, reason: str = "the service is shutting down") -> None:
        """Stop admitting; fail queued jobs with `reason`; let the running batch finish."""
        with self._cond:
            self._draining = reason
            queued, self._queue = list(self._queue), deque()
        for job in queued:
            if job.fail(503, "shutting_down", f"{reason}; the job was not started", 5):
                self._count(job, "shutdown")

    def stop(self, timeout: float | None = None) -> bool:
        """Drain, let the running batch finish (up to `timeout` s), end the thread."""
        self.drain()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        self._encoder.shutdown(wait=True, cancel_futures=False)
        return not self._thread.is_alive()

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
                self._running = []
            for job in stranded:
                detail = "the worker thread stopped before the job finished"
                if job.fail(503, "worker_dead", detail, 5):
                    self._count(job, "worker_dead")

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._queue:
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
            self._running = batch
        return batch

    def _take_same_model(self, batch: list[Job], limit: int) -> None:
        budget = self.manager.job_budget()
        total = sum(j.estimate for j in batch)
        for job in list(self._queue):
            if len(batch) >= limit:
                return
            if job.model == batch[0].model and total + job.estimate <= budget:
                self._queue.remove(job)
                batch.append(job)
                total += job.estimate

    def _run_batch(self, batch: list[Job]) -> None:
        now = time.monotonic()
        live: list[Job] = []
        for job in batch:
            job.timings["queue"] = now - job.created  # created after decoding
            if now - job.created > self.settings.job_timeout_s:
                if job.fail(504, "timeout", "the job waited longer than the job time limit"):
                    self._count(job, "timeout")
                continue
            job.state, job.started, job.batch_size = JobState.RUNNING, now, len(batch)
            live.append(job)
        try:
            if live:
                self._admit_and_compute(live)
        finally:
            with self._cond:
                self._running = []
            self._after_job()

    def _admit_and_compute(self, jobs: list[Job]) -> None:
        model = jobs[0].model
        engine = self.engines[model]
        if not engine.ready:
            self._fail_all(jobs, 503, "model_not_ready", engine.not_ready_reason or "", "not_ready")
            return
        total = sum(j.estimate for j in jobs)
        try:
            reservation = self.manager.reserve(total, timeout=self.settings.admission_wait_s)
        except NeverFits as exc:
            if len(jobs) > 1:  # the budget shrank since batching: run them one by one
                for job in jobs:
                    self._admit_and_compute([job])
                return
            self._fail_all(jobs, 413, "too_large", str(exc), "too_large")
            return
        except MemoryRefused as exc:
            detail = f"device memory could not be reserved in time: {exc}"
            self._fail_all(jobs, 503, "memory_busy", detail, "memory_busy", retry_after=2)
            return
        for observe in self.batch_observers:
            observe(model, len(jobs))
        with reservation:
            started = time.monotonic()
            with self.manager.measure() as peak:
                outputs = self._compute(engine, jobs, total)
            elapsed = time.monotonic() - started
        if outputs is None:
            return
        self.manager.record_estimate(model, total, peak.peak_bytes)
        for job, rgb in zip(jobs, outputs, strict=True):
            job.timings["compute"] = elapsed
            self._encoder.submit(self._encode, job, rgb)

    def _compute(self, engine: Engine, jobs: list[Job], reserved: int) -> list[np.ndarray] | None:
        requests = [j.request for j in jobs]
        # The working chunk the estimate already covers: the exemplar's matching chunk
        # (fixed_bytes), or for the networks the forward pass's bytes, which its colour
        # conversion bands reuse. The OOM retry runs with a quarter of it.
        model = engine.memory_model
        chunk = model.fixed_bytes or model.per_item_bytes or None
        try:
            return _checked(engine, requests, engine.run(requests, chunk_bytes=chunk))
        except InvalidRequest as exc:
            self._fail_all(jobs, 422, "invalid_request", str(exc), "invalid")
            return None
        except Exception as exc:
            if not is_out_of_memory(exc):
                log.exception("engine %s failed", engine.name)
                self._fail_all(jobs, 500, "engine_error", f"the engine failed: {exc}", "error")
                return None
            first_error = exc
        self._recover_from_oom(engine.name, first_error)
        try:
            # One retry, smaller: one image at a time, and a quarter of the working chunk.
            smaller = None if chunk is None else max(1 << 20, chunk // 4)
            return [
                _checked(engine, [r], engine.run([r], chunk_bytes=smaller))[0] for r in requests
            ]
        except Exception as exc:
            if not is_out_of_memory(exc):
                log.exception("engine %s failed on retry", engine.name)
                self._fail_all(jobs, 500, "engine_error", f"the engine failed: {exc}", "error")
                return None
            self._recover_from_oom(engine.name, exc)
            detail = f"out of device memory after a retry with a smaller batch/chunk: {exc}"
            self._fail_all(jobs, 507, "out_of_memory", detail, "oom")
            return None

    def _recover_from_oom(self, model: str, exc: BaseException) -> None:
        self.stats.oom_events[model] += 1
        log.warning("out of memory in %s (%s): freeing and retrying smaller", model, exc)
        exc.__traceback__ = None  # frames of the failed forward pass hold its tensors
        gc.collect()
        self.manager.clear_cache()

    def _encode(self, job: Job, rgb: np.ndarray) -> None:
        started = time.monotonic()
        try:
            data = self.encode(rgb, job.output_format, job.quality)
        except Exception as exc:
            outcome = "oom" if is_out_of_memory(exc) else "error"
            log.exception("encoding job %s failed", job.id)
            what = "out of memory while encoding" if outcome == "oom" else "encoding failed"
            # A bare MemoryError() has no message: say what happened ourselves.
            detail = str(exc) or f"{what} ({type(exc).__name__})"
            if job.fail(507 if outcome == "oom" else 500, "encode_failed", detail):
                self._count(job, outcome)
            return
        job.timings["encode"] = time.monotonic() - started
        if job.finish(JobState.DONE, result=data):
            self._count(job, "done")

    def _after_job(self) -> None:
        policy = self.settings.clear_cache
        if policy == "always" or (
            policy == "threshold"
            and self.manager.check_memory_usage() > self.manager.memory_threshold
        ):
            self.manager.clear_cache()
        self.manager.trigger_gc_if_needed()
        self.manager.refresh_idle()

    def _fail_all(
        self,
        jobs: Sequence[Job],
        status: int,
        error: str,
        detail: str,
        outcome: str,
        retry_after: int | None = None,
    ) -> None:
        for job in jobs:
            if job.fail(status, error, detail, retry_after):
                self._count(job, outcome)

    def _count(self, job: Job, outcome: str) -> None:
        with self._cond:
            self.stats.jobs[(job.model, outcome)] += 1
            if outcome == "done":
                self.stats.completed += 1

    def _retry_after(self) -> int:
        # A rough drain time of the queue: depth x recent per-job time, at least one second.
        return max(1, min(60, len(self._queue) // self.batch_max_size))
