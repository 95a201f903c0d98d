"""How a delivery of the shared queue ends: completed once (retrying while the stores are down),
failed, or handed back for another replica, whichever kind of job it was."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from service.outcomes import Failure, Outcome
from service.store import Consumer, Delivery, StoreError

log = logging.getLogger(__name__)

HAND_BACK = frozenset({Outcome.SHUTDOWN, Outcome.WORKER_DEAD, Outcome.MEMORY_BUSY})
"""Outcomes of this replica, not of the job: another replica (or this one later) runs it."""
COMPLETE_RETRY_S = 300.0
"""How long a finished result is kept trying to reach a store that is down, before the job is
handed back to run again (at least once, never lost)."""


class Endings:
    """Completes, fails and hands back this replica's deliveries."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    async def complete(
        self,
        delivery: Delivery,
        result: bytes | Path,
        content_type: str,
        timings: dict[str, float],
    ) -> bool:
        """Store the result and complete the job, retrying while the stores are down."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COMPLETE_RETRY_S
        delay = 0.5
        while True:
            try:
                return await self.consumer.complete(delivery, result, content_type, timings)
            except StoreError as exc:
                if loop.time() > deadline:
                    log.error(
                        "could not complete job %s: %s; handing it back", delivery.job_id, exc
                    )
                    await self.release(delivery)
                    return False
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def end(
        self, delivery: Delivery, failure: Failure, timings: dict[str, float] | None = None
    ) -> None:
        with contextlib.suppress(StoreError):  # unacknowledged, it is delivered again later
            await self.consumer.fail(delivery, failure.outcome, failure.detail, timings)

    async def unstarted(self, delivery: Delivery, refused: Failure | None) -> None:
        """A delivery that did not become a job here: ended with `refused`, or (None) handed
        back for another replica or a later look."""
        if refused is None:
            await self.release(delivery)
        else:
            await self.end(delivery, refused)

    async def release(self, delivery: Delivery) -> None:
        with contextlib.suppress(StoreError):
            await self.consumer.release(delivery)


def settle(future: asyncio.Future[None]) -> None:
    """Resolve `future` unless it is done (a job's end, woken from a worker thread)."""
    if not future.done():
        future.set_result(None)
