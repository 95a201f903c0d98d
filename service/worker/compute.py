"""The device stage's one forward pass, with the out-of-memory recovery every caller shares."""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence

from service.engines.base import ColorizeRequest, Engine, InvalidRequest
from service.memory import MemoryManager
from service.outcomes import Failure, Outcome
from service.worker.stages import EngineContractError, is_out_of_memory
from service.worker.stats import PipelineStats

log = logging.getLogger(__name__)


def working_chunk(engine: Engine) -> int | None:
    """The working chunk the estimate already covers: the exemplar's matching chunk (fixed
    bytes), or for the networks the forward pass's bytes, which colour bands reuse."""
    model = engine.memory_model
    return model.fixed_bytes or model.per_item_bytes or None


def forward(
    engine: Engine,
    requests: Sequence[ColorizeRequest],
    prepared: Sequence[object | None],
    manager: MemoryManager,
    stats: PipelineStats,
) -> list[object] | Failure:
    """One output per request, or why there is none.

    Out of memory: free, clear the cache and retry once, one image at a time with a quarter of
    the working chunk; out of memory again is the OOM outcome. Anything else the engine raises
    fails the whole batch (InvalidRequest: the client's; the rest: ours).
    """
    chunk = working_chunk(engine)
    try:
        return _counted(engine, len(requests), engine.forward(requests, prepared, chunk))
    except InvalidRequest as exc:
        return Failure(Outcome.INVALID_REQUEST, str(exc))
    except Exception as exc:
        if not is_out_of_memory(exc):
            log.exception("engine %s failed", engine.name)
            return Failure(Outcome.ERROR, f"the engine failed: {exc}")
        first_error = exc
    _recover(engine.name, first_error, manager, stats)
    smaller = None if chunk is None else max(1 << 20, chunk // 4)
    try:
        return [
            _counted(engine, 1, engine.forward([r], [p], smaller))[0]
            for r, p in zip(requests, prepared, strict=True)
        ]
    except Exception as exc:
        if not is_out_of_memory(exc):
            log.exception("engine %s failed on retry", engine.name)
            return Failure(Outcome.ERROR, f"the engine failed: {exc}")
        _recover(engine.name, exc, manager, stats)
        detail = f"out of device memory after a retry with a smaller batch/chunk: {exc}"
        return Failure(Outcome.OOM, detail)


def _recover(model: str, exc: BaseException, manager: MemoryManager, stats: PipelineStats) -> None:
    stats.count_oom(model)
    log.warning("out of memory in %s (%s): freeing and retrying smaller", model, exc)
    exc.__traceback__ = None  # frames of the failed forward pass hold its tensors
    gc.collect()
    manager.clear_cache()


def _counted(engine: Engine, expected: int, outputs: list[object]) -> list[object]:
    if len(outputs) != expected:
        raise EngineContractError(
            f"{engine.name} returned {len(outputs)} images for {expected} requests"
        )
    return outputs
