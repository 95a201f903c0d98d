"""A job's life (queued, running, done, failed, cancelled) and the store that keeps results.

A queued job holds what was uploaded (compressed bytes and the header's size), never decoded
pixels: the prepare stage decodes it shortly before the device needs it. Every byte a job keeps
on the host is covered by a host-memory reservation that the job releases when it lets go.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.engines.base import ColorizeRequest, Hint
from service.memory import Reservation
from service.outcomes import Failure, JobState, Outcome

__all__ = ["Job", "JobInput", "JobState", "JobStore"]


@dataclass(frozen=True)
class JobInput:
    """An upload as received: compressed bytes and what their headers say, nothing decoded."""

    image: bytes
    width: int
    """Width as stored in the header (EXIF may turn it upright later)."""
    height: int
    reference: bytes | None = None
    reference_pixels: int = 0
    hints: tuple[Hint, ...] = ()
    render_size: int | None = None
    decode_bytes: int = 0
    """Host bytes decoding the image and the reference may take at their peak (by pixel mode)."""

    @property
    def nbytes(self) -> int:
        """Compressed bytes held while the job waits."""
        return len(self.image) + (len(self.reference) if self.reference is not None else 0)

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(eq=False)
class Job:
    """One colorization request travelling from the API to the worker and back.

    Compared by identity (eq=False): the queue finds and removes a job as that object, never by
    comparing its fields (pixels among them).
    """

    model: str
    input: JobInput | None
    """The upload, until the prepare stage has decoded it (then None: the bytes are freed)."""
    estimate: int
    """Bytes the compute stage reserves, from the header's size."""
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
    request: ColorizeRequest | None = None
    """Decoded pixels: set by the prepare stage, dropped when the job finishes."""
    prepared: object | None = None
    """Engine-specific input made by the prepare stage (a resized, normalised tensor...)."""
    failure: Failure | None = None
    result: bytes | None = None
    frame: np.ndarray | None = field(default=None, repr=False)
    """A video frame's colour RGB (output format "raw"); its memory is the video's window's."""
    of_video: bool = False
    """A frame of a running video job: draining spares it, so that the video may finish within
    the shutdown grace like a running photo (the video job itself stops it past the grace)."""
    result_dropped: str | None = None
    """Why a finished result is no longer kept (retention), if it was dropped."""
    batch_size: int = 1
    told: Outcome | None = None
    """Set when nobody can receive the result any more (the client left: cancelled; it was
    told 504: timeout). The stages stop at their next look, and a result is dropped at once."""
    prepare_state: str = "waiting"
    """Where a queued job is in the prepare stage: waiting, preparing or ready."""
    holds: list[Reservation] = field(default_factory=list, repr=False)
    """Host memory the job holds (upload, pixels, result), released as it lets go of each."""
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
        failure: Failure | None = None,
        frame: np.ndarray | None = None,
    ) -> bool:
        """Move to a final state exactly once; False if it had already finished."""
        with self._lock:
            if self._done.is_set():
                return False
            self.state = state
            self.result = result
            self.frame = frame
            self.failure = failure
            self.finished_at = time.monotonic()
            # The input is not needed any more: free its bytes and pixels before the result is
            # collected, and give back the host memory they held (all but the result's).
            self.input = None
            self.request = None
            self.prepared = None
            if self.told is not None and result is not None:
                self.result, self.result_dropped = None, "nobody waited for the result any more"
            self._release_holds(keep=len(self.result) if self.result is not None else 0)
            callbacks, self._callbacks = self._callbacks, []
            self._done.set()
        for callback in callbacks:
            callback(self)
        return True

    def fail(self, outcome: Outcome, detail: str, retry_after: int | None = None) -> bool:
        """Finish as failed with `outcome` (as cancelled, for CANCELLED); False if the job had
        already finished."""
        state = JobState.CANCELLED if outcome is Outcome.CANCELLED else JobState.FAILED
        return self.finish(state, failure=Failure(outcome, detail, retry_after))

    @property
    def outcome(self) -> Outcome | None:
        """How the job ended (None while it has not)."""
        if not self._done.is_set():
            return None
        if self.state is JobState.DONE:
            return Outcome.DONE
        if self.failure is not None:
            return self.failure.outcome
        return Outcome.CANCELLED

    def hold(self, reservation: Reservation) -> None:
        """Keep `reservation` until the job lets go of what it covers."""
        with self._lock:
            if not self._done.is_set():
                self.holds.append(reservation)
                return
        reservation.release()

    def release_hold(self, purpose: str) -> None:
        """Give back the reservations held for `purpose` (the upload once it is decoded...)."""
        with self._lock:
            kept = []
            for reservation in self.holds:
                if reservation.purpose == purpose:
                    reservation.release()
                else:
                    kept.append(reservation)
            self.holds = kept

    def abandon(self, outcome: Outcome) -> None:
        """Whoever would receive the result is gone (`outcome`: cancelled or timeout).

        A finished job drops its result now; an unfinished one is marked, so that the stage
        holding it stops and nothing keeps memory for a result nobody will read. Taking a
        waiting job out of the queue is the worker's (Worker.cancel).
        """
        with self._lock:
            if not self._done.is_set():
                self.told = outcome
                return
        self.drop_result("nobody waited for the result any more")

    def drop_result(self, reason: str) -> None:
        """Forget the encoded result (retention) and give back the memory it held."""
        with self._lock:
            self.result = None
            self.result_dropped = reason
            self._release_holds(keep=0)

    def _release_holds(self, keep: int) -> None:
        # Called with the lock held. The result's bytes stay covered while the job keeps them:
        # the largest hold shrinks to them and the rest go back.
        holds, self.holds = self.holds, []
        holds.sort(key=lambda r: r.nbytes, reverse=True)
        for reservation in holds:
            if keep > 0 and reservation.shrink(keep):
                reservation.purpose = "result"
                self.holds.append(reservation)
                keep = 0
            else:
                reservation.release()


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
            job = self._jobs.pop(job_id, None)
        if job is not None and job.state.finished:
            job.drop_result("the job was deleted")

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
                    job.drop_result(f"result expired after the {self.ttl_s:g} s retention")
            total = sum(len(j.result) for j in finished if j.result is not None)
            for job in sorted(finished, key=lambda j: j.finished_at or 0.0):
                if total <= self.max_bytes:
                    break
                if job.result is not None:
                    total -= len(job.result)
                    job.drop_result(f"result dropped: kept results exceeded {self.max_bytes} bytes")
            # Records of finished jobs stay for twice the retention so a client can still learn
            # what happened; the table is also capped in count.
            for job in finished:
                assert job.finished_at is not None
                if now - job.finished_at > 2 * self.ttl_s:
                    job.drop_result("the job record expired")
                    self._jobs.pop(job.id, None)
            while len(self._jobs) > self.max_jobs:
                oldest = next(iter(self._jobs.values()))
                if not oldest.state.finished:
                    break
                oldest.drop_result("the job record was evicted")
                self._jobs.popitem(last=False)
