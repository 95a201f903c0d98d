"""The queue of admitted jobs: FIFO order, each job's prepare state, the look-ahead window and
which device lanes are busy, all under one condition that every stage waits on.

It holds uploads, not pixels: only the first `lookahead` jobs are decoded (service/worker/
preparing.py), so a long queue costs its compressed bytes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from service.engines.base import Engine
from service.outcomes import Outcome
from service.worker.jobs import Job


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


class JobQueue:
    """Waiting jobs and what the stages are doing with them; `cond` guards all of it."""

    def __init__(self, capacity: int, lookahead: int) -> None:
        self.capacity = capacity
        self.lookahead = lookahead
        self.cond = threading.Condition()
        self.stopping = False
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._busy_lanes: set[int] = set()
        self._finishing = 0
        self.first_lane_prepares = False
        """Whether the first device lane, while it waits for work, decodes the head job itself
        (set by the device stage when it passes `next_batch` a preparer)."""
        self._first_lane_waiting = False

    # -- reading (takes the lock) ------------------------------------------------------------

    def depth(self) -> int:
        """Jobs waiting (a video's frames are not jobs of the queue's: its window bounds them)."""
        with self.cond:
            return self.waiting_locked()

    def frames_waiting(self) -> int:
        """Frames of videos waiting for the device."""
        with self.cond:
            return sum(1 for job in self._waiting if job.of_video)

    def running(self) -> int:
        with self.cond:
            return len(self._running)

    def idle(self) -> bool:
        """Nothing waits and nothing is on the device."""
        with self.cond:
            return not self._waiting and not self._running

    def alone(self, lane: int, waiting: int = 0) -> bool:
        """Whether `lane`'s work is all there is: no other lane busy and no more than `waiting`
        jobs waiting (the head it is about to prepare, say)."""
        with self.cond:
            others = self._busy_lanes - {lane}
            return not others and len(self._waiting) <= waiting

    def position(self, job: Job) -> int | None:
        """1-based place of a waiting job (None if it is not waiting)."""
        with self.cond:
            for i, waiting in enumerate(self._waiting):
                if waiting is job:
                    return i + 1
        return None

    def stage_depths(self) -> dict[str, int]:
        """Jobs in each stage: waiting or decoding, ready or on the device, finishing."""
        with self.cond:
            ready = sum(1 for j in self._waiting if j.prepare_state == "ready")
            return {
                "prepare": len(self._waiting) - ready,
                "device": ready + len(self._running),
                "finish": self._finishing,
            }

    # -- changing (takes the lock) -----------------------------------------------------------

    def put_locked(self, job: Job) -> None:
        """Append `job`; the caller holds `cond` and has checked that the worker may take it."""
        self._waiting.append(job)
        self.cond.notify_all()

    def is_full_locked(self) -> bool:
        return self.waiting_locked() >= self.capacity

    def waiting_locked(self) -> int:
        return sum(1 for job in self._waiting if not job.of_video)

    def remove(self, job: Job) -> bool:
        """Take a waiting job out; False if it is no longer waiting."""
        with self.cond:
            try:
                self._waiting.remove(job)
            except ValueError:
                return False
            self.cond.notify_all()
            return True

    def take_all(self, spare: Callable[[Job], bool] | None = None) -> list[Job]:
        """Empty the queue (draining, or the device lanes died) and return what waited; jobs
        for which `spare(job)` is true stay in it, in their order."""
        with self.cond:
            taken = [job for job in self._waiting if spare is None or not spare(job)]
            kept = [job for job in self._waiting if spare is not None and spare(job)]
            self._waiting = deque(kept)
            self.cond.notify_all()
            return taken

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    # -- the prepare stage -------------------------------------------------------------------

    def next_to_prepare(self) -> Job | None:
        """Wait for a job inside the look-ahead window that nobody prepares; None once stopping.

        The head job is left to the first lane while that lane is free (see `next_batch`).
        """
        with self.cond:
            while True:
                for i, job in enumerate(self._waiting):
                    if i >= self.lookahead:
                        break
                    if i == 0 and self._first_lane_takes_head():
                        continue
                    if job.prepare_state == "waiting":
                        job.prepare_state = "preparing"
                        return job
                if self.stopping:
                    return None
                self.cond.wait()

    def prepared(self, job: Job, ok: bool) -> None:
        """The prepare stage is done with `job`: ready for the device, or out of the queue."""
        with self.cond:
            if ok:
                job.prepare_state = "ready"
            elif job in self._waiting:
                self._waiting.remove(job)
            self.cond.notify_all()

    # -- the device stage --------------------------------------------------------------------

    def next_batch(
        self,
        lane: int,
        engines: Mapping[str, Engine],
        max_size: int,
        max_wait_s: float,
        budget: Callable[[], int],
        prepare: Callable[[Job], object] | None = None,
    ) -> list[Job] | None:
        """Wait for the head job to be ready and for `lane`'s turn; take it with up to
        `max_size - 1` ready jobs of the same engine and batch key whose estimates fit `budget`
        together (waiting up to `max_wait_s` for them). None once stopping.

        Lane k takes a batch only while lanes 0 to k-1 are busy: work goes to the lowest free
        lane, so a lone client's jobs always run on lane 0's thread. Given `prepare`, lane 0
        decodes a head job that nobody has started on in its own thread, with the lock
        released, instead of waiting for a preparer to hand it over (service/worker/intraop.py:
        only this thread has torch's whole thread pool).
        """
        with self.cond:
            if lane == 0:
                self._first_lane_waiting = True
            while not self._head_ready() or any(i not in self._busy_lanes for i in range(lane)):
                if self.stopping:
                    return None
                if lane == 0 and prepare is not None and self._head_unclaimed():
                    head = self._waiting[0]
                    head.prepare_state = "preparing"
                    self.cond.release()
                    try:
                        prepare(head)
                    finally:
                        self.cond.acquire()
                    continue
                self.cond.wait()
            if lane == 0:
                # Gathering a batch now: the jobs behind the head are the preparers' again.
                self._first_lane_waiting = False
            first = self._waiting.popleft()
            batch = [first]
            engine = engines.get(first.model)
            limit = max_size if engine is not None and engine.batchable else 1
            deadline = time.monotonic() + max_wait_s
            while len(batch) < limit:
                self._take_same_key(batch, engine, limit, budget())
                remaining = deadline - time.monotonic()
                if len(batch) >= limit or remaining <= 0 or self.stopping:
                    break
                self.cond.wait(remaining)
            self._busy_lanes.add(lane)
            self._running.extend(batch)
            # The look-ahead window slid: the preparers may start on the jobs now inside it.
            self.cond.notify_all()
            return batch

    def ready_waiting(self) -> bool:
        """Whether a prepared job waits for the device (finishing inline would delay it)."""
        with self.cond:
            return self._head_ready()

    def off_device(self, batch: list[Job], lane: int) -> None:
        """`lane`'s batch left the device (its outputs went to the finish stage, or it failed)."""
        with self.cond:
            for job in batch:
                if job in self._running:
                    self._running.remove(job)
            self._busy_lanes.discard(lane)
            self.cond.notify_all()

    # -- the finish stage --------------------------------------------------------------------

    def finishing(self, delta: int) -> None:
        with self.cond:
            self._finishing += delta

    # -- internals (lock held) -----------------------------------------------------------------

    def _head_ready(self) -> bool:
        return bool(self._waiting) and self._waiting[0].prepare_state == "ready"

    def _head_unclaimed(self) -> bool:
        return bool(self._waiting) and self._waiting[0].prepare_state == "waiting"

    def _first_lane_takes_head(self) -> bool:
        return self.first_lane_prepares and self._first_lane_waiting

    def _take_same_key(
        self, batch: list[Job], engine: Engine | None, limit: int, budget: int
    ) -> None:
        total = sum(j.estimate for j in batch)
        key = _batch_key(engine, batch[0])
        for job in list(self._waiting):
            if len(batch) >= limit:
                return
            if (
                job.prepare_state == "ready"
                and job.model == batch[0].model
                and _batch_key(engine, job) == key
                and total + job.estimate <= budget
            ):
                self._waiting.remove(job)
                batch.append(job)
                total += job.estimate


def _batch_key(engine: Engine | None, job: Job) -> object:
    if engine is None or job.request is None:
        return None
    return engine.batch_key(job.request)
