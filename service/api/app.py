"""The FastAPI application; its lifespan owns settings, MemoryManager, engines, worker, metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service import __version__
from service.api import access_log
from service.api.errors import install_handlers
from service.api.http11 import AcceptErrors
from service.api.metrics import Metrics
from service.api.middleware.auth import ApiKey
from service.api.middleware.body import BodyLimit
from service.api.middleware.head import HeadAsGet
from service.api.middleware.headers import SecurityHeaders
from service.api.middleware.leases import RequestLeases
from service.api.routes import router
from service.api.routes.docs import HTTP_LAYER_ERRORS
from service.api.state import ServiceState
from service.device import resolve_device
from service.engines.base import Engine, EngineNotReady
from service.engines.bootstrap import fetch_missing
from service.engines.catalog import ENGINE_NAMES
from service.engines.fast import FastPath
from service.engines.registry import create_engine, render_limits
from service.imaging.encode import encode_image
from service.jobs.local import LocalJobs
from service.jobs.runner import SharedRunner
from service.jobs.shared import SharedJobs
from service.jobs.spool import Spool
from service.jobs.video import VideoMeter, VideoRetention
from service.jobs.video_executor import VideoExecutor
from service.memory import MemoryManager
from service.memory.host import device_manager, host_manager
from service.settings import Settings, load_settings
from service.store import SharedStore
from service.web import mount_web
from service.worker import intraop
from service.worker.jobs import JobStore
from service.worker.worker import Worker

log = logging.getLogger(__name__)


def load_engines(settings: Settings, manager: MemoryManager) -> dict[str, Engine]:
    """Build every engine; those without weights stay unready and say how to fetch them."""
    # A threadpool thread, which outlives the load: a torch thread pool of its own would slow
    # the device lane's (service/worker/intraop.py).
    intraop.run_serially()
    fetch_missing(settings, [settings.default_model])  # first run: logs the fix if offline
    engines: dict[str, Engine] = {}
    fast = FastPath(precision=settings.precision, channels_last=settings.channels_last)
    render = render_limits(settings)
    for name in ENGINE_NAMES:
        engine = create_engine(name, manager.device, settings.weights_dir, fast, render)
        try:
            engine.load()
        except EngineNotReady as exc:
            log.warning("%s", exc)
        engines[name] = engine
    return engines


async def open_shared(svc: ServiceState) -> None:
    """Join the shared job store (COLORIZE_REDIS_URL): /jobs goes there, and a runner pulls
    from it into this replica's pipeline. Redis or the store may be down: it starts anyway,
    /readyz names the cause, and it reconnects by itself."""
    shared = SharedStore.from_settings(svc.settings)
    await shared.open()
    svc.metrics.registry.register(shared.metrics)
    svc.shared = shared
    svc.jobs = SharedJobs(shared)
    svc.runner = SharedRunner(
        shared,
        svc.worker,
        svc.engines,
        svc.budgets,
        svc.settings,
        svc.stats,
        on_job=svc.metrics.observe_job,
        videos=svc.videos,
        spool=svc.spool,
        meter=VideoMeter(svc.stats, svc.metrics.observe_video_rate),
    )


async def close_shared(svc: ServiceState) -> None:
    """Stop pulling, let the jobs in flight store their results (within the grace), hand back
    what is left and leave the group, so the other replicas take it at once."""
    if svc.runner is not None:
        svc.drain("the service is shutting down")
        await svc.runner.stop(svc.settings.shutdown_grace_s)
    if svc.shared is not None:
        await svc.shared.close()


def create_app(
    settings: Settings | None = None,
    *,
    engines: Mapping[str, Engine] | None = None,
    manager: MemoryManager | None = None,
    host: MemoryManager | None = None,
) -> FastAPI:
    """The service. Tests may pass their own engines (fault injection), manager (fake device)
    or host manager."""
    settings = settings or load_settings()
    access_log.install()  # wherever the app is served, its access log keeps no secrets

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mm = manager or device_manager(
            resolve_device(settings.device), settings.memory_threshold, settings.host_memory_bytes
        )
        hm = host or host_manager(mm, settings.memory_threshold, settings.host_memory_bytes)
        loaded = (
            engines if engines is not None else await run_in_threadpool(load_engines, settings, mm)
        )
        mm.refresh_idle()  # the weights are resident now: the job budget excludes them
        if engines is None:
            # What start-up made (modules, networks, the app) lives as long as the process:
            # frozen, no collection walks it again (a full one took 140 ms on 2 cores, in
            # whichever request it fell). Garbage goes first, or it would stay forever.
            gc.collect()
            gc.freeze()
        hm.refresh_idle()
        hm.body_floor_share = settings.body_memory_floor
        worker = Worker(loaded, mm, settings, encode_image, host=hm)
        videos = VideoExecutor(worker, hm, settings)
        metrics = Metrics()
        metrics.attach(mm, worker, loaded, hm, videos)
        retention = JobStore(
            settings.result_ttl_s, settings.result_max_bytes, settings.max_jobs_kept
        )
        spool = Spool(settings.video_spool_dir)
        local = LocalJobs(
            worker,
            retention,
            worker.stats,
            videos=videos,
            video_retention=VideoRetention(
                settings.result_ttl_s, settings.video_result_max_bytes, settings.max_jobs_kept
            ),
            spool=spool,
            meter=VideoMeter(worker.stats, metrics.observe_video_rate),
        )
        svc = ServiceState(
            settings, mm, loaded, worker, retention, metrics, hm, local, spool, videos
        )
        if settings.redis_url is not None:
            await open_shared(svc)
        app.state.svc = svc
        worker.start()
        videos.start()
        if svc.runner is not None:
            svc.runner.start()
        # At the descriptor limit every failed accept logs a traceback: report it, rate-limited.
        asyncio.get_running_loop().set_exception_handler(AcceptErrors())
        snap = mm.snapshot()
        log.info(
            "device %s; engines %s; memory %d/%d bytes used, limit %d (threshold %.2f), "
            "job budget %d bytes",
            snap.device,
            ", ".join(
                f"{n}={'ready' if e.ready else 'NOT READY'} ({e.precision})"
                for n, e in loaded.items()
            ),
            snap.used,
            snap.total,
            snap.limit,
            mm.memory_threshold,
            snap.job_budget,
        )
        try:
            yield
        finally:
            await close_shared(svc)
            # Videos before the worker: their frames need its lanes to the end.
            grace = settings.shutdown_grace_s
            if not await run_in_threadpool(videos.stop, grace):
                log.warning("running videos did not finish within %.0f s: stopped", grace)
            if not worker.stop(timeout=grace):
                log.error("the running job did not finish within %.0f s", grace)
            spool.close()

    app = FastAPI(
        title="colorize-service",
        version=__version__,
        summary="Grayscale photos in, colour photos out, admitted by device memory budget.",
        lifespan=lifespan,
        responses=HTTP_LAYER_ERRORS,
    )
    install_handlers(app)
    app.include_router(router)
    mount_web(app)
    # Added innermost first: requests meet them in the reverse order.
    app.add_middleware(BodyLimit, settings=settings)
    app.add_middleware(
        ApiKey,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        protect_metrics=settings.protect_metrics,
    )
    app.add_middleware(RequestLeases)
    app.add_middleware(HeadAsGet)
    app.add_middleware(SecurityHeaders)
    return app
