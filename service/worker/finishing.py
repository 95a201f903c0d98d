"""The finish stage: a pool of threads that join colour on CPU devices and encode each result.

The device hands over one output at a time; past twice the pool's size of outputs waiting, it
waits for a place, since each output holds memory. A lane may finish a lone job itself instead
(service/worker/lanes.py): the hand-over would only add a thread's wake-up to its latency.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.engines.base import Engine
from service.memory import MemoryManager
from service.settings import Settings
from service.worker import compute, intraop, stages
from service.worker.jobs import Job, JobState
from service.worker.queue import JobQueue
from service.worker.stages import EncodeFn
from service.worker.stats import PipelineStats


class FinishPool:
    """Finishes jobs after the device, in its threads or in the caller's."""

    def __init__(
        self,
        settings: Settings,
        host: MemoryManager,
        encode: EncodeFn,
        queue: JobQueue,
        stats: PipelineStats,
    ) -> None:
        self.settings = settings
        self.host = host
        self.encode = encode
        self.queue = queue
        self.stats = stats
        self._pool = ThreadPoolExecutor(
            max_workers=settings.finish_workers,
            thread_name_prefix="colorize-finish",
            initializer=intraop.run_serially,
        )
        self._slots = threading.BoundedSemaphore(2 * settings.finish_workers)

    def submit(self, job: Job, engine: Engine, output: object, inline: bool = False) -> None:
        """Finish `job` from the device's `output`, here if `inline`, else in a pool thread."""
        self.queue.finishing(+1)
        if inline:
            self._finish(job, engine, output, slot=False)
            return
        self._slots.acquire()
        self._pool.submit(self._finish, job, engine, output, True)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

    def _finish(self, job: Job, engine: Engine, output: object, slot: bool) -> None:
        started = time.monotonic()
        try:
            if job.told is not None:
                # Nobody can receive the result (the client left, or was told it timed out):
                # encoding it would only spend CPU and memory.
                job.fail(job.told, "nobody waits for the result any more")
                return
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
            elif isinstance(outcome, np.ndarray):
                job.finish(JobState.DONE, frame=outcome)
            else:
                job.fail(outcome.outcome, outcome.detail, outcome.retry_after)
        finally:
            self.queue.finishing(-1)
            self.stats.add_busy("finish", started)
            if slot:
                self._slots.release()
