"""From the worker's threads back to the event loop: one awaitable per job, woken once by the
thread that finishes it (no polling), raced against the job's deadline and the client leaving."""

from __future__ import annotations

import asyncio
import contextlib
from enum import Enum

from starlette.types import Receive

from service.worker.jobs import Job


class Ending(str, Enum):
    """How waiting for a job ended."""

    FINISHED = "finished"
    TIMEOUT = "timeout"
    GONE = "gone"
    """The client disconnected."""


def job_finished(job: Job) -> asyncio.Future[None]:
    """A future of this loop that resolves when `job` finishes (at once if it has)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not future.done():
            future.set_result(None)

    def wake(_: Job) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(resolve)

    job.on_finish(wake)
    return future


async def disconnected(receive: Receive) -> None:
    """Return once the client has gone (the body is read: the next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def wait_for(job: Job, timeout_s: float, receive: Receive) -> Ending:
    """Wait until `job` finishes, `timeout_s` passes or the client leaves, whichever is first."""
    finished = job_finished(job)
    gone = asyncio.ensure_future(disconnected(receive))
    try:
        done, _ = await asyncio.wait(
            {finished, gone}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        gone.cancel()
        finished.cancel()
    if finished in done:
        return Ending.FINISHED
    return Ending.GONE if gone in done else Ending.TIMEOUT
