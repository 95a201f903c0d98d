"""The long-lived objects the lifespan owns, reachable from every request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.api.metrics import Metrics
from service.engines.base import Engine
from service.jobs.backend import JobStore
from service.jobs.runner import SharedRunner
from service.jobs.spool import Spool
from service.jobs.video_executor import VideoExecutor
from service.memory import MemoryManager
from service.settings import Settings
from service.store import SharedStore
from service.worker.admission import Budgets
from service.worker.jobs import JobStore as Retention
from service.worker.stats import PipelineStats
from service.worker.worker import Worker


@dataclass
class ServiceState:
    settings: Settings
    manager: MemoryManager
    engines: Mapping[str, Engine]
    worker: Worker
    store: Retention
    """Finished /jobs results kept in this process (the local job store's retention)."""
    metrics: Metrics
    host: MemoryManager
    """Host memory (the device's manager itself on a CPU device)."""
    jobs: JobStore
    """/jobs: LocalJobs, or SharedJobs when COLORIZE_REDIS_URL selects the shared store."""
    spool: Spool
    """Video uploads and results on disk (this process's directory)."""
    videos: VideoExecutor
    """The threads that run video jobs (this process's, local or pulled from the shared store)."""
    shared: SharedStore | None = None
    runner: SharedRunner | None = None

    def drain(self, reason: str) -> None:
        """Stop taking work (SIGTERM): queued local jobs end, shared ones go back to the queue;
        running photos and videos go on within the shutdown grace."""
        if self.runner is not None:
            self.runner.stop_pulling()
        self.worker.drain(reason)
        self.videos.drain(reason)

    @property
    def stats(self) -> PipelineStats:
        return self.worker.stats

    @property
    def budgets(self) -> Budgets:
        return Budgets(device=self.manager, host=self.host)


async def get_state(request: Request) -> ServiceState:
    # async: FastAPI runs a plain `def` dependency on a worker thread, a thread hop per request.
    state: ServiceState = request.app.state.svc
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]
