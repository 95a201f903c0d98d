"""A replica in a process of its own, for the tests that SIGKILL one: it joins the shared store
from COLORIZE_* and AWS_* variables (as the service will), takes one job, says so on stdout and
holds it until killed.

    python -m tests.support.store_worker
"""

from __future__ import annotations

import asyncio
import sys

from service.settings import load_settings
from service.store import SharedStore, Ticket


def admit_all(ticket: Ticket) -> bool:
    return True


async def hold_one_job() -> None:
    async with SharedStore.from_settings(load_settings()) as store:
        delivery = await store.consumer.pull(admit_all, timeout_s=30.0)
        if delivery is None:
            sys.stdout.write("nothing\n")
            return
        sys.stdout.write(f"holding {delivery.job_id} as {store.consumer.replica_id}\n")
        sys.stdout.flush()
        await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(hold_one_job())
