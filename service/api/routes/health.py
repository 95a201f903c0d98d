"""Health and status: /livez, /readyz, /v1/status for the page, /metrics for Prometheus."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.api.routes.docs import ErrorBody, errors
from service.api.state import StateDep

router = APIRouter()


class Health(BaseModel):
    ready: bool
    worker_alive: bool
    draining: str | None
    engines: dict[str, str]
    """Each engine's state: 'ready' or why not."""
    reasons: list[str]
    job_store: list[str] = []
    """Why the shared job store cannot take jobs now (empty: it can, or there is none)."""


@router.get("/livez", summary="Process alive", responses={503: {"model": ErrorBody}})
async def livez(state: StateDep) -> JSONResponse:
    """200 while the process can serve; 503 once the worker thread has died (restart me)."""
    worker = state.worker
    if worker.death is not None and not worker.draining:
        # Readiness only takes the pod out of the Service; a dead worker never comes back, so
        # liveness must fail for the orchestrator to restart the process.
        detail = f"the worker thread died: {worker.death!r}"
        return JSONResponse({"error": "worker_dead", "detail": detail}, status_code=503)
    return JSONResponse({"status": "alive"})


@router.get(
    "/readyz",
    response_model=Health,
    # A malformed scope is a bad field (400), as on every route; nothing here is required.
    responses={503: {"model": Health}, **errors(400)},
)
async def readyz(
    state: StateDep,
    scope: Annotated[
        Literal["all", "colorize"],
        Query(
            description="`all`: every part, the shared job store included. `colorize`: what "
            "/colorize needs, for a load balancer that should keep sending photos to a replica "
            "while the shared store is down (its /jobs answer 503 meanwhile)."
        ),
    ] = "all",
) -> JSONResponse:
    """200 when the worker runs, the default model is ready, the service is not draining and
    (scope `all`) the shared job store answers."""
    reasons = []
    worker = state.worker
    if not worker.alive:
        reasons.append(f"the worker thread is not running ({worker.death!r})")
    if worker.draining:
        reasons.append(worker.draining)
    engines = {
        n: "ready" if e.ready else (e.not_ready_reason or "not ready")
        for n, e in state.engines.items()
    }
    if not any(e.ready for e in state.engines.values()):
        reasons.append("no engine is ready")
    # The shared job store: /jobs cannot take work while Redis or the object store is down.
    shared = state.jobs.health()
    if scope == "all":
        reasons += shared
    default = state.settings.default_model
    engine = state.engines.get(default)
    if engine is not None and not engine.ready:
        # Every request that names no model would be refused: this replica cannot serve.
        reasons.append(
            f"the default model {default!r} (COLORIZE_DEFAULT_MODEL) is not ready: "
            f"{engine.not_ready_reason or 'not loaded'}"
        )
    body = Health(
        ready=not reasons,
        worker_alive=worker.alive,
        draining=worker.draining,
        engines=engines,
        reasons=reasons,
        job_store=shared,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


class Status(BaseModel):
    device: str
    usage_ratio: float
    threshold: float
    used_bytes: int
    total_bytes: int
    queue_depth: int
    queue_capacity: int
    jobs_running: int
    jobs_done: int
    ready: bool
    models: dict[str, bool]


@router.get("/v1/status", response_model=Status, responses=errors(401))
async def status(state: StateDep) -> Status:
    """A small JSON summary for the web page's live panel."""
    snap = state.manager.snapshot()
    return Status(
        device=snap.device,
        usage_ratio=round(snap.usage_ratio, 4),
        threshold=state.manager.memory_threshold,
        used_bytes=snap.used,
        total_bytes=snap.total,
        queue_depth=state.worker.queue_depth,
        queue_capacity=state.settings.queue_size,
        jobs_running=state.worker.jobs_running,
        jobs_done=state.worker.stats.completed,
        ready=state.worker.alive and not state.worker.draining,
        models={n: e.ready for n, e in state.engines.items()},
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus exposition."}},
)
async def metrics(state: StateDep) -> Response:
    """Prometheus text format; memory gauges are read live at scrape time."""
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
