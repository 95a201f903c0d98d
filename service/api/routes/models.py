"""/v1/models: each engine, whether it is ready (or why not), its precision and memory model."""

from __future__ import annotations

import math
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from service.api.errors import ApiError
from service.api.routes.docs import errors
from service.api.state import ServiceState, StateDep
from service.engines.base import Engine
from service.engines.fast import Precision

router = APIRouter()


class MemoryModelInfo(BaseModel):
    per_item_bytes: int
    per_pixel_bytes: int
    fixed_bytes: int
    reference_pixel_bytes: int
    largest_square_px: int
    """Side of the largest square image this engine accepts: within the job budget and within
    COLORIZE_MAX_PIXELS, whichever is smaller."""
    largest_square_limited_by: Literal["memory", "pixels"]
    """Which of the two limits sets largest_square_px."""


class RenderSizeInfo(BaseModel):
    default: int
    """Used when a request names none (COLORIZE_DDCOLOR_RENDER_SIZE)."""
    minimum: int
    maximum: int
    """The largest a request may ask for (COLORIZE_MAX_RENDER_SIZE)."""
    multiple: int
    """Render sizes are multiples of this."""
    largest_fitting: int | None
    """The largest render size whose forward pass fits the job budget now (the photo's own
    colour join comes on top; None: not even the smallest fits)."""


class ModelInfo(BaseModel):
    name: str
    ready: bool
    reason: str | None
    batchable: bool
    needs_weights: bool
    precision: Precision
    """What the network runs in (fp32, bf16, fp16): COLORIZE_PRECISION where it is faster and
    accurate enough on this device, else fp32."""
    precision_reason: str
    """Why: requested, refused (unsupported, not faster than fp32, or beyond the tolerance)."""
    memory_model: MemoryModelInfo
    """For engines with a render size: at the default render size."""
    render_size: RenderSizeInfo | None = None
    """The render sizes a request may choose (`render_size`); null for fixed-size engines."""


def _model_info(state: ServiceState, name: str, engine: Engine) -> ModelInfo:
    mm = engine.memory_model
    by_memory = mm.largest_square(state.manager.job_budget())
    by_pixels = math.isqrt(state.settings.max_pixels)
    return ModelInfo(
        name=name,
        ready=engine.ready,
        reason=engine.not_ready_reason,
        batchable=engine.batchable,
        needs_weights=engine.needs_weights,
        precision=engine.precision,
        precision_reason=engine.precision_reason,
        memory_model=MemoryModelInfo(
            per_item_bytes=mm.per_item_bytes,
            per_pixel_bytes=mm.per_pixel_bytes,
            fixed_bytes=mm.fixed_bytes,
            reference_pixel_bytes=mm.reference_pixel_bytes,
            largest_square_px=min(by_memory, by_pixels),
            largest_square_limited_by="memory" if by_memory < by_pixels else "pixels",
        ),
        render_size=_render_size_info(state, engine),
    )


def _render_size_info(state: ServiceState, engine: Engine) -> RenderSizeInfo | None:
    limits = engine.render_limits
    if limits is None:
        return None
    return RenderSizeInfo(
        default=limits.default,
        minimum=limits.minimum,
        maximum=limits.maximum,
        multiple=limits.multiple,
        largest_fitting=engine.largest_render_size(state.manager.job_budget()),
    )


@router.get("/v1/models", response_model=list[ModelInfo], responses=errors(401))
async def list_models(state: StateDep) -> list[ModelInfo]:
    """Each engine: ready or why not, and its memory model."""
    return [_model_info(state, n, e) for n, e in state.engines.items()]


@router.get("/v1/models/{name}", response_model=ModelInfo, responses=errors(401, 404))
async def get_model(name: str, state: StateDep) -> ModelInfo:
    engine = state.engines.get(name)
    if engine is None:
        raise ApiError(404, "unknown_model", f"no model {name!r}; see /v1/models")
    return _model_info(state, name, engine)
