"""Helpers for the shared store's tests: records to submit, admission policies, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from service.store import Delivery, JobKind, JobRecord, SharedStore, Ticket


def image_record(model: str = "eccv16", **fields: object) -> JobRecord:
    """A queued image job as the API would submit it."""
    record = JobRecord(kind=JobKind.IMAGE, model=model, width=64, height=48, estimate_bytes=1 << 20)
    record.options = {"format": "png", "quality": None, "render_size": None, "hints": []}
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def admit_all(ticket: Ticket) -> bool:
    return True


async def pull(store: SharedStore, timeout_s: float = 5.0) -> Delivery:
    """The next delivery for `store`'s consumer (fails the test if none comes in time)."""
    delivery = await store.consumer.pull(admit_all, timeout_s=timeout_s)
    assert delivery is not None, f"no job reached {store.consumer.replica_id} in {timeout_s} s"
    return delivery


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float, interval_s: float = 0.05
) -> float:
    """Seconds until `check()` is true (fails the test past `timeout_s`)."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not true within {timeout_s} s")
        await asyncio.sleep(interval_s)
    return time.monotonic() - start


async def object_keys(store: SharedStore, job_id: str) -> list[str]:
    """The keys of the job's objects that exist in the bucket."""
    client = store.objects._client
    prefix = f"{store.config.prefix}/jobs/{job_id}/"
    response = await asyncio.to_thread(
        client.list_objects_v2, Bucket=store.config.bucket, Prefix=prefix
    )
    return sorted(str(o["Key"]) for o in response.get("Contents", []))
