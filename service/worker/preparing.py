"""The prepare stage: threads that decode the jobs inside the look-ahead window, shortly before
the device needs them, each inside its own host reservation (service/worker/stages.py).

They never run a forward pass, and their torch operators run on their own thread only
(service/worker/intraop.py). The reverse hand-over is skipped for a lone job: while the first
device lane is free it decodes the head job itself (`JobQueue.next_batch`), on its whole thread
pool, and the preparers decode the jobs behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from service.engines.base import Engine
from service.memory import MemoryManager
from service.outcomes import Failure, Outcome
from service.settings import Settings
from service.worker import intraop, stages
from service.worker.jobs import Job
from service.worker.queue import JobQueue
from service.worker.stats import PipelineStats


class PreparePool:
    """Decodes and prepares the waiting jobs that the first device lane does not take itself."""

    def __init__(
        self,
        engines: Mapping[str, Engine],
        host: MemoryManager,
        settings: Settings,
        queue: JobQueue,
        stats: PipelineStats,
    ) -> None:
        self.engines = engines
        self.host = host
        self.settings = settings
        self.queue = queue
        self.stats = stats
        self.limits = stages.DecodeLimits(
            settings.allowed_formats, settings.max_pixels, settings.admission_wait_s
        )
        self._threads = [
            threading.Thread(target=self._loop, name=f"colorize-prepare-{i}", daemon=True)
            for i in range(settings.prepare_workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float | None) -> None:
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout)

    def prepare_one(self, job: Job) -> bool:
        """Decode `job` (claimed as "preparing") in this thread; whether it is ready."""
        started = time.monotonic()
        failure = self._prepare(job, started)
        self.stats.add_busy("prepare", started)
        self.queue.prepared(job, failure is None)
        if failure is not None:
            job.fail(failure.outcome, failure.detail, failure.retry_after)
        return failure is None

    def _loop(self) -> None:
        intraop.run_serially()
        while True:
            job = self.queue.next_to_prepare()
            if job is None:
                return
            self.prepare_one(job)

    def _prepare(self, job: Job, started: float) -> Failure | None:
        engine = self.engines.get(job.model)
        if job.told is not None:
            return Failure(job.told, "nobody waits for the result any more")
        if started - job.created > self.settings.job_timeout_s:
            # Past its time already: decoding it would only spend memory on a 504.
            return Failure(Outcome.TIMEOUT, "the job waited longer than the job time limit")
        if engine is None:
            return Failure(Outcome.INVALID_REQUEST, f"no model {job.model}")
        return stages.prepare(job, engine, self.host, self.limits)
