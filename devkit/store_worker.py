"""A replica in a process of its own, for whoever SIGKILLs one (tests/store, bench.store_faults):
it joins the shared store from COLORIZE_* and AWS_* variables (as the service does), takes one
job, says so on stdout (`holding <job id> as <replica id>`) and holds it until killed.

    python -m devkit.store_worker
"""

from __future__ import annotations

import asyncio
import sys

from devkit.store_jobs import admit_all
from service.settings import load_settings
from service.store import SharedStore

PULL_TIMEOUT_S = 30.0


async def hold_one_job() -> None:
    async with SharedStore.from_settings(load_settings()) as store:
        delivery = await store.consumer.pull(admit_all, timeout_s=PULL_TIMEOUT_S)
        if delivery is None:
            sys.stdout.write("nothing\n")
            return
        sys.stdout.write(f"holding {delivery.job_id} as {store.consumer.replica_id}\n")
        sys.stdout.flush()
        await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(hold_one_job())
