"""Helpers for the shared store's tests: devkit's records and admission policy, plus pulling and
waiting that fail the test when nothing comes in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from devkit.store_jobs import admit_all, image_record, object_keys
from service.store import Delivery, SharedStore, StoreConfig

__all__ = [
    "BUCKET",
    "JOBS_BUCKET",
    "ConfigFactory",
    "SharedEnv",
    "StoreFactory",
    "admit_all",
    "eventually",
    "image_record",
    "object_keys",
    "pull",
]

BUCKET = "colorize-tests"
"""The store tests' bucket (tests/store)."""
JOBS_BUCKET = "colorize-jobs"
"""The bucket of the service processes in tests/jobs."""
ConfigFactory = Callable[..., StoreConfig]
StoreFactory = Callable[..., Awaitable[SharedStore]]
SharedEnv = Callable[..., dict[str, str]]
"""Makes a service process's environment for the shared store (COLORIZE_* overrides)."""


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
