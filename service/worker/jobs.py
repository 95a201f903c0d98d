"""A job's life (queued, running, done, failed, cancelled) and the store that keeps results."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from service.engines.base import ColorizeRequest

_NO_PIXELS = np.empty((0, 0, 3), dtype=np.uint8)


class JobState(str, Enum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobFailure:
    """Why a job did not produce an image, as the HTTP status and body it maps to."""

    status: int
    error: str
    detail: str
    retry_after: int | None = None


@dataclass
class Job:
    """One colorization request travelling from the API to the worker and back."""

    model: str
    request: ColorizeRequest
    estimate: int
    output_format: str = "png"
    quality: int | None = None
    id: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    state: JobState = JobState.QUEUED
    created: float = field(default_factory=time.monotonic)
    created_wall: float = field(default_factory=time.time)
    started: float | None = None
    finished_at: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent in each phase: decode, queue, compute, encode."""
    failure: JobFailure | None = None
    result: bytes | None = None
    result_dropped: str | None = None
    """Why a finished result is no longer kept (retention), if it was dropped."""
    batch_size: int = 1
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _callbacks: list[Callable[[Job], None]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_finish(self, callback: Callable[[Job], None]) -> None:
        """Call `callback(job)` once the job finishes (at once if it already has)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job finishes; whether it did."""
        return self._done.wait(timeout)

    def finish(
        self,
        state: JobState,
        *,
        result: bytes | None = None,
        failure: JobFailure | None = None,
    ) -> bool:
        """Move to a final state exactly once; False if it had already finished."""
        with self._lock:
            if self._done.is_set():
                return False
            self.state = state
            self.result = result
            self.failure = failure
            self.finished_at = time.monotonic()
            # The input is not needed any more: free its pixels before the result is collected
            # (a fresh empty array: a slice would be a view that keeps the whole image alive).
            self.request = ColorizeRequest(image=_NO_PIXELS)
            callbacks, self._callbacks = self._callbacks, []
            self._done.set()
        for callback in callbacks:
            callback(self)
        return True

    def fail(self, status: int, error: str, detail: str, retry_after: int | None = None) -> bool:
        """Finish as failed with the HTTP mapping of the reason."""
        return self.finish(JobState.FAILED, failure=JobFailure(status, error, detail, retry_after))


class JobStore:
    """Jobs submitted through /jobs, kept until their result expires (time and total size)."""

    def __init__(self, ttl_s: float, max_bytes: int, max_jobs: int) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
        self.prune()

    def get(self, job_id: str) -> Job | None:
        self.prune()
        with self._lock:
            return self._jobs.get(job_id)

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def result_bytes(self) -> int:
        with self._lock:
            return sum(len(j.result) for j in self._jobs.values() if j.result is not None)

    def prune(self, now: float | None = None) -> None:
        """Drop results past their time, then the oldest past the size limit, then old records."""
        now = time.monotonic() if now is None else now
        with self._lock:
            finished = [j for j in self._jobs.values() if j.state.finished and j.finished_at]
            for job in finished:
                assert job.finished_at is not None
                if job.result is not None and now - job.finished_at > self.ttl_s:
                    job.result = None
                    job.result_dropped = f"result expired after the {self.ttl_s:g} s retention"
            total = sum(len(j.result) for j in finished if j.result is not None)
            for job in sorted(finished, key=lambda j: j.finished_at or 0.0):
                if total <= self.max_bytes:
                    break
                if job.result is not None:
                    total -= len(job.result)
                    job.result = None
                    job.result_dropped = (
                        f"result dropped: kept results exceeded {self.max_bytes} bytes"
                    )
            # Records of finished jobs stay for twice the retention so a client can still learn
            # what happened; the table is also capped in count.
            for job in finished:
                assert job.finished_at is not None
                if now - job.finished_at > 2 * self.ttl_s:
                    self._jobs.pop(job.id, None)
            while len(self._jobs) > self.max_jobs:
                oldest = next(iter(self._jobs.values()))
                if not oldest.state.finished:
                    break
                self._jobs.popitem(last=False)
