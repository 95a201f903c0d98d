"""A video job's life: queued, running (with progress), done with an MP4 on disk, failed or
cancelled; and the retention that deletes kept results by age and by the disk they take.

A video job never holds its film in memory: the upload is a spool file, the result another, and
while it runs `colorize_video` holds one window of frames (service/video/runner.py). What a job
keeps after it ends is its result file, until retention deletes it (or a client's DELETE).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from service.jobs.spool import remove
from service.outcomes import Failure, Outcome
from service.video import VideoInfo, VideoMemoryPlan, VideoProgress, VideoResult
from service.worker.jobs import JobState
from service.worker.options import VideoOptions
from service.worker.stats import PipelineStats

CONTENT_TYPE = "video/mp4"
"""A video job's result, whatever it was sent as."""


@dataclass
class ResultFile:
    """A finished video's result, open for one reader: the file stays until `release`."""

    path: Path
    size: int
    release: Callable[[], None]


@dataclass(eq=False)
class VideoJob:
    """One video colorization, from its spooled upload to its result file."""

    model: str
    options: VideoOptions
    source: Path
    """The upload on disk (the spool's, deleted when the job ends; or the batch command's
    input, which `owns_source=False` leaves alone)."""
    info: VideoInfo
    plan: VideoMemoryPlan
    target: Path
    """Where the result is written (through a temporary name beside it)."""
    reference: bytes | None = None
    """The exemplar's reference photo as uploaded (decoded once when the job starts)."""
    owns_source: bool = True
    id: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    state: JobState = JobState.QUEUED
    created: float = field(default_factory=time.monotonic)
    created_wall: float = field(default_factory=time.time)
    started: float | None = None
    finished_at: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    progress: VideoProgress | None = None
    failure: Failure | None = None
    result: VideoResult | None = None
    result_dropped: str | None = None
    """Why the result file is gone (retention, DELETE), once it is."""
    told: Failure | None = None
    """Why the job was asked to stop (a client's DELETE, the service shutting down)."""
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set to stop the job: colorize_video and colorize_frames look at it."""
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _on_finish: list[Callable[[VideoJob], None]] = field(default_factory=list, repr=False)
    _on_progress: list[Callable[[VideoJob, VideoProgress], None]] = field(
        default_factory=list, repr=False
    )
    _readers: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    kind = "video"

    # -- following it ------------------------------------------------------------------------

    def on_finish(self, callback: Callable[[VideoJob], None]) -> None:
        """Call `callback(job)` once the job ends (at once if it has)."""
        with self._lock:
            if not self._done.is_set():
                self._on_finish.append(callback)
                return
        callback(self)

    def on_progress(self, callback: Callable[[VideoJob, VideoProgress], None]) -> None:
        """Call `callback(job, progress)` after every batch of frames (from the job's thread)."""
        with self._lock:
            self._on_progress.append(callback)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def outcome(self) -> Outcome | None:
        if not self._done.is_set():
            return None
        if self.state is JobState.DONE:
            return Outcome.DONE
        return self.failure.outcome if self.failure is not None else Outcome.CANCELLED

    # -- its life (the executor's side) ------------------------------------------------------

    def start(self) -> bool:
        """Queued -> running; False if it ended while it waited."""
        with self._lock:
            if self._done.is_set():
                return False
            now = time.monotonic()
            self.state, self.started = JobState.RUNNING, now
            self.timings["queue"] = now - self.created
            return True

    def report(self, progress: VideoProgress) -> None:
        with self._lock:
            self.progress = progress
            listeners = list(self._on_progress)
        for listener in listeners:
            listener(self, progress)

    def finish(
        self,
        state: JobState,
        *,
        result: VideoResult | None = None,
        failure: Failure | None = None,
    ) -> bool:
        """End the job exactly once; False if it had already ended. The upload is deleted (if
        the job owns it); so is the result unless the job is done."""
        with self._lock:
            if self._done.is_set():
                return False
            now = time.monotonic()
            self.state, self.result, self.failure, self.finished_at = state, result, failure, now
            if self.started is not None:
                self.timings["run"] = now - self.started
            callbacks, self._on_finish = self._on_finish, []
            self._on_progress = []
            self._done.set()
        if self.owns_source:
            remove(self.source)
        if state is not JobState.DONE:
            remove(self.target)
        for callback in callbacks:
            callback(self)
        return True

    def fail(self, outcome: Outcome, detail: str, retry_after: int | None = None) -> bool:
        state = JobState.CANCELLED if outcome is Outcome.CANCELLED else JobState.FAILED
        return self.finish(state, failure=Failure(outcome, detail, retry_after))

    def stop(self, outcome: Outcome, detail: str, retry_after: int | None = None) -> None:
        """Ask a running job to stop (it ends with `outcome` within a forward pass or two)."""
        with self._lock:
            if self.told is None:
                self.told = Failure(outcome, detail, retry_after)
        self.cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self.cancel.is_set() and not self._done.is_set()

    # -- its result --------------------------------------------------------------------------

    @property
    def result_available(self) -> bool:
        with self._lock:
            return (
                self.state is JobState.DONE
                and self.result is not None
                and self.result_dropped is None
            )

    @property
    def kept_bytes(self) -> int:
        """Disk its result file holds now."""
        return self.result.bytes if self.result_available and self.result is not None else 0

    def open_result(self) -> ResultFile | None:
        """The result file for one reader (None if there is none); retention waits for every
        reader to `release` before it deletes the file."""
        with self._lock:
            if self.state is not JobState.DONE or self.result is None or self.result_dropped:
                return None
            self._readers += 1
            result = self.result
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                self._readers -= 1
                delete = self._readers == 0 and self.result_dropped is not None
            if delete:
                remove(result.path)

        return ResultFile(result.path, result.bytes, release)

    def drop_result(self, reason: str) -> None:
        """Forget the result and delete its file (once its last reader is done)."""
        with self._lock:
            if self.result_dropped is not None:
                return
            self.result_dropped = reason
            delete = self._readers == 0
            path = self.result.path if self.result is not None else None
        if delete:
            remove(path)


@dataclass
class VideoMeter:
    """What /metrics counts of video jobs: frames coloured (as they are), each job's end (once,
    by outcome) and the frame rate of the finished ones."""

    stats: PipelineStats
    observe_rate: Callable[[str, float], None] = lambda model, fps: None
    """Records a finished job's frames per second (`colorize_video_frames_per_second`)."""

    def count_frames(self, job: VideoJob) -> None:
        """Count `job`'s frames as its batches are done."""
        done = [0]

        def counted(job: VideoJob, progress: VideoProgress) -> None:
            step, done[0] = progress.frames_done - done[0], progress.frames_done
            if step > 0:
                self.stats.count_frames(job.model, step)

        job.on_progress(counted)

    def count_end(self, job: VideoJob) -> None:
        """Count `job`'s outcome once it ends (call once the job is accepted: a refusal is
        the answer's to count)."""

        def ended(job: VideoJob) -> None:
            outcome = job.outcome or Outcome.ERROR
            self.stats.count_video_job(job.model, outcome.value)
            if job.result is not None and job.result.seconds > 0 and job.result.frames:
                self.observe_rate(job.model, job.result.frames / job.result.seconds)

        job.on_finish(ended)


class VideoRetention:
    """Video jobs submitted through /jobs, kept until their result expires (time, total disk,
    record count), the same rules as photos' (service/worker/jobs.py) with files for bytes."""

    def __init__(self, ttl_s: float, max_bytes: int, max_jobs: int) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, VideoJob] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, job: VideoJob) -> None:
        with self._lock:
            self._jobs[job.id] = job
        job.on_finish(lambda _: self.prune())

    def get(self, job_id: str) -> VideoJob | None:
        self.prune()
        with self._lock:
            return self._jobs.get(job_id)

    def remove(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is not None and job.finished:
            job.drop_result("the job was deleted")

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def jobs(self) -> list[VideoJob]:
        with self._lock:
            return list(self._jobs.values())

    def result_bytes(self) -> int:
        """Disk the kept result files hold."""
        with self._lock:
            return sum(job.kept_bytes for job in self._jobs.values())

    def prune(self, now: float | None = None) -> None:
        """Delete results past their time, then the oldest past the disk budget, then old
        records (a record outlives its result by one retention time, so a client can still
        learn what happened)."""
        now = time.monotonic() if now is None else now
        dropped: list[tuple[VideoJob, str]] = []
        with self._lock:
            finished = sorted(
                (j for j in self._jobs.values() if j.finished and j.finished_at is not None),
                key=lambda j: j.finished_at or 0.0,
            )
            total = 0
            for job in finished:
                age = now - (job.finished_at or now)
                if job.kept_bytes and age > self.ttl_s:
                    reason = f"result expired after the {self.ttl_s:g} s retention"
                    dropped.append((job, reason))
                else:
                    total += job.kept_bytes
            for job in finished:
                if total <= self.max_bytes:
                    break
                if job.kept_bytes and all(job is not d for d, _ in dropped):
                    total -= job.kept_bytes
                    reason = (
                        f"result deleted: kept video results exceeded {self.max_bytes} bytes "
                        "(COLORIZE_VIDEO_RESULT_MAX_BYTES)"
                    )
                    dropped.append((job, reason))
            for job in finished:
                if now - (job.finished_at or now) > 2 * self.ttl_s:
                    dropped.append((job, "the job record expired"))
                    self._jobs.pop(job.id, None)
            while len(self._jobs) > self.max_jobs:
                oldest = next(iter(self._jobs.values()))
                if not oldest.finished:
                    break
                dropped.append((oldest, "the job record was evicted"))
                self._jobs.popitem(last=False)
        for job, reason in dropped:
            job.drop_result(reason)  # deletes files: outside the lock
