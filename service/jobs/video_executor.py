"""Running video jobs: `run_video_job` (the one way a video is coloured: the API's jobs, the
shared runner's and the batch command's) and `VideoExecutor`, a bounded pool of video threads
with a bounded queue in front of it.

A video job's thread decodes, stabilises and encodes (service/video/runner.py); its frames go
through the image pipeline's device lanes as jobs of their own (service/worker/frames.py), so
photos and films share the device fairly. Its buffers are reserved from the host budget before
the first frame is decoded; a budget that is busy makes the job wait, never fail, unless the
caller prefers to hand it to another replica (`memory_patience_s`).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np

from service.imaging.decode import GRAYSCALE_CHROMA, chroma_level, decode_image, probe_header
from service.imaging.errors import ImageError
from service.jobs.video import VideoJob
from service.memory import MemoryManager, MemoryRefused, NeverFits
from service.outcomes import Failure, Outcome
from service.settings import Settings
from service.video import EncodeOptions, VideoCancelled, VideoError, VideoLimits, colorize_video
from service.worker import intraop, stages
from service.worker.frames import FramesFailed, colorize_frames
from service.worker.jobs import JobState
from service.worker.queue import Draining, QueueFull, WorkerUnavailable
from service.worker.worker import Worker

log = logging.getLogger(__name__)

MEMORY_RETRY_S = 1.0
"""How long a job whose memory was refused waits before it asks again (cancel ends the wait)."""


def run_video_job(
    job: VideoJob,
    worker: Worker,
    host: MemoryManager,
    settings: Settings,
    *,
    memory_patience_s: float | None = None,
) -> None:
    """Colour `job` to its end (done, failed or cancelled): never raises for the job's sake.

    `memory_patience_s`: how long to keep asking for the job's host memory when the budget is
    busy (None: until it is granted or the job is stopped; the in-process store, which has no
    other replica to hand it to).
    """
    if not job.start():
        return
    try:
        failure = _run(job, worker, host, settings, memory_patience_s)
    except Exception as exc:  # the thread must end the job whatever happens
        log.exception("video job %s failed", job.id)
        failure = Failure(Outcome.ERROR, f"colouring the video failed: {exc!r}")
    except BaseException:  # Ctrl-C in the batch command: the job ends, the interrupt goes on
        job.fail(Outcome.CANCELLED, "interrupted")
        raise
    if failure is not None:
        job.fail(failure.outcome, failure.detail, failure.retry_after)


def _run(
    job: VideoJob,
    worker: Worker,
    host: MemoryManager,
    settings: Settings,
    memory_patience_s: float | None,
) -> Failure | None:
    limits = VideoLimits.from_settings(settings)
    encode = EncodeOptions.from_settings(settings)
    asked = time.monotonic()
    # Each ask waits briefly, so that a DELETE is seen within a second even while it waits.
    wait_s = min(settings.admission_wait_s, MEMORY_RETRY_S)
    while True:
        with ExitStack() as held:
            try:
                reference = _reference(job, host, settings, held)
                result = colorize_video(
                    job.source,
                    job.target,
                    job.info,
                    _colorizer(job, worker, reference),
                    batch=settings.video_batch_frames,
                    stabilize=job.options.stabilize,
                    reserve=lambda n, purpose: host.reserve(n, wait_s, purpose),
                    progress=job.report,
                    cancel=job.cancel,
                    limits=limits,
                    encode=encode,
                    pipeline=job.plan.pipeline > 0,
                )
            except MemoryRefused as exc:
                # Refused while reserving, before a frame was decoded: nothing is lost by
                # asking again, and a queue of films must not fail because photos were busy.
                waited = time.monotonic() - asked
                if memory_patience_s is not None and waited >= memory_patience_s:
                    return Failure(Outcome.MEMORY_BUSY, f"host memory is busy: {exc}", 5)
            except Exception as exc:
                return _failure(job, exc)
            else:
                job.finish(JobState.DONE, result=result)
                return None
        if job.cancel.wait(MEMORY_RETRY_S):
            return _stopped(job)


def _colorizer(
    job: VideoJob, worker: Worker, reference: np.ndarray | None
) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    def colorize(frames: list[np.ndarray]) -> list[np.ndarray]:
        while True:
            try:
                return colorize_frames(
                    worker,
                    job.model,
                    frames,
                    render_size=job.options.render_size,
                    reference=reference,
                    cancel=job.cancel,
                )
            except FramesFailed as exc:
                # A forward pass whose device memory was not granted in time: the frames are
                # still in hand, so the batch is tried again rather than the film failed.
                if exc.failure.outcome is not Outcome.MEMORY_BUSY or job.cancel.is_set():
                    raise
                time.sleep(MEMORY_RETRY_S / 10)

    return colorize


def _reference(
    job: VideoJob, host: MemoryManager, settings: Settings, held: ExitStack
) -> np.ndarray | None:
    """The exemplar's reference, decoded once for the whole film inside a host reservation
    (kept, as RGB, until the job ends); raises ImageError or _GrayscaleReference."""
    if job.reference is None:
        return None
    formats, max_pixels = settings.allowed_formats, settings.max_pixels
    header = probe_header(job.reference, allowed_formats=formats, max_pixels=max_pixels)
    pixels = header.width * header.height
    reservation = held.enter_context(
        host.reserve(stages.decode_bytes_per_pixel(header) * pixels, MEMORY_RETRY_S, "pixels")
    )
    image = decode_image(job.reference, allowed_formats=formats, max_pixels=max_pixels)
    reservation.shrink(image.nbytes)
    if chroma_level(image) < GRAYSCALE_CHROMA:
        raise _GrayscaleReference("the reference image has no colour to transfer (it is grayscale)")
    return image


class _GrayscaleReference(Exception):
    pass


def _failure(job: VideoJob, exc: Exception) -> Failure:
    """What ended the job, as the API reports it."""
    if isinstance(exc, VideoCancelled) or (
        isinstance(exc, FramesFailed) and exc.failure.outcome is Outcome.CANCELLED
    ):
        return _stopped(job)
    if isinstance(exc, VideoError):
        return Failure(exc.outcome, exc.message)
    if isinstance(exc, FramesFailed):
        return exc.failure
    if isinstance(exc, ImageError):
        return Failure(exc.outcome, f"the reference photo: {exc.message}")
    if isinstance(exc, _GrayscaleReference):
        return Failure(Outcome.GRAYSCALE_REFERENCE, str(exc))
    if isinstance(exc, NeverFits):
        return Failure(Outcome.TOO_LARGE, f"the video's buffers do not fit the host budget: {exc}")
    if isinstance(exc, WorkerUnavailable):
        return Failure(exc.outcome, exc.detail, exc.retry_after)
    if isinstance(exc, MemoryError):
        return Failure(Outcome.OOM, "out of host memory while colouring the video")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Failure(Outcome.DISK_FULL, "no disk space was left for the result", 30)
    log.error("video job %s failed", job.id, exc_info=exc)
    return Failure(Outcome.ERROR, f"colouring the video failed: {exc}")


def _stopped(job: VideoJob) -> Failure:
    return job.told or Failure(Outcome.CANCELLED, "the job was cancelled")


class VideoExecutor:
    """COLORIZE_VIDEO_WORKERS threads running video jobs, COLORIZE_VIDEO_QUEUE_SIZE waiting."""

    def __init__(
        self,
        worker: Worker,
        host: MemoryManager,
        settings: Settings,
        *,
        workers: int | None = None,
        queue_size: int | None = None,
    ) -> None:
        self.worker = worker
        self.host = host
        self.settings = settings
        self.workers = workers if workers is not None else settings.video_workers
        self.queue_size = queue_size if queue_size is not None else settings.video_queue_size
        self._waiting: deque[tuple[VideoJob, float | None]] = deque()
        self._running: list[VideoJob] = []
        self._cond = threading.Condition()
        self._draining: str | None = None
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"colorize-video-{i}", daemon=True)
            for i in range(self.workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    # -- taking jobs ---------------------------------------------------------------------------

    def submit(self, job: VideoJob, memory_patience_s: float | None = None) -> None:
        """Queue `job`, or raise WorkerUnavailable (queue full: 503 with Retry-After, or
        draining); a refused job ends at once with that outcome."""
        with self._cond:
            refusal = self._refusal_locked()
            if refusal is None:
                self._waiting.append((job, memory_patience_s))
                self._cond.notify_all()
                return
        job.fail(refusal.outcome, refusal.detail, refusal.retry_after)
        raise refusal

    def _refusal_locked(self) -> WorkerUnavailable | None:
        if self._draining is not None or self._stopping:
            return Draining(self._draining or "the service is shutting down", 5)
        if len(self._waiting) + len(self._running) >= self.workers + self.queue_size:
            return QueueFull(
                f"the video queue is full ({len(self._running)} running, {len(self._waiting)} "
                f"waiting; COLORIZE_VIDEO_WORKERS={self.workers}, COLORIZE_VIDEO_QUEUE_SIZE="
                f"{self.queue_size})",
                self._retry_after_locked(),
            )
        return None

    def _retry_after_locked(self) -> int:
        # When the first running video should end: its own estimate of the time it has left.
        left = [
            job.progress.seconds_left
            for job in self._running
            if job.progress is not None and job.progress.seconds_left is not None
        ]
        return max(5, min(600, int(min(left)) if left else 30))

    def cancel(self, job: VideoJob, outcome: Outcome = Outcome.CANCELLED, detail: str = "") -> None:
        """End a waiting job now, or ask a running one to stop."""
        detail = detail or "the job was cancelled"
        with self._cond:
            entry = next((e for e in self._waiting if e[0] is job), None)
            if entry is not None:
                self._waiting.remove(entry)
        if entry is not None:
            job.fail(outcome, detail)
        else:
            job.stop(outcome, detail)

    # -- state -------------------------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        """Video threads idle with nothing waiting for them (what the shared runner may pull)."""
        with self._cond:
            return max(0, self.workers - len(self._running) - len(self._waiting))

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def position(self, job: VideoJob) -> int | None:
        with self._cond:
            for i, (waiting, _) in enumerate(self._waiting):
                if waiting is job:
                    return i + 1
        return None

    # -- stopping ----------------------------------------------------------------------------

    def drain(self, reason: str) -> None:
        """Take nothing more; waiting jobs end SHUTDOWN; running ones go on (see `stop`)."""
        with self._cond:
            self._draining = reason
            waiting, self._waiting = list(self._waiting), deque()
            self._cond.notify_all()
        for job, _ in waiting:
            job.fail(Outcome.SHUTDOWN, f"{reason}; the video was not started", 5)

    def interrupt(self, reason: str) -> None:
        """Stop every running job now: they end SHUTDOWN within a forward pass or two."""
        with self._cond:
            running = list(self._running)
        for job in running:
            job.stop(Outcome.SHUTDOWN, f"{reason} before the video was finished", 5)

    def stop(self, grace_s: float) -> bool:
        """Drain, let running jobs finish within `grace_s`, stop the rest, end the threads;
        whether every job finished on its own."""
        self.drain(self._draining or "the service is shutting down")
        deadline = time.monotonic() + grace_s
        with self._cond:
            while self._running and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            finished = not self._running
            self._stopping = True
            self._cond.notify_all()
        if not finished:
            self.interrupt("the service shut down")
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(grace_s + 10)
        return finished

    # -- the threads -------------------------------------------------------------------------

    def _loop(self) -> None:
        intraop.run_serially()  # the stabiliser's torch work (service/worker/intraop.py)
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if not self._waiting:
                    return
                job, patience = self._waiting.popleft()
                self._running.append(job)
            try:
                run_video_job(
                    job, self.worker, self.host, self.settings, memory_patience_s=patience
                )
            finally:
                with self._cond:
                    self._running.remove(job)
                    self._cond.notify_all()
