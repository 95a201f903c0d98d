"""The shared store as the API sees it (service/jobs/shared.py): the replica that runs an image
job answers polls for it from its own copy of the record, without a Redis round trip, and that
copy never hides a cancel; every other replica, and every other state, reads Redis."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from service.jobs.shared import SharedJobs
from service.store import RecordState
from tests.support.services import RedisServer
from tests.support.store import StoreFactory, eventually, image_record, pull

pytestmark = pytest.mark.anyio


async def hgetall_calls(redis_server: RedisServer) -> int:
    """How many HGETALLs the Redis server has answered so far (its own count)."""
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


async def test_the_holder_answers_polls_without_redis(
    open_store: StoreFactory, redis_server: RedisServer
) -> None:
    api, holder = await open_store(consume=False), await open_store()
    stored = await api.queue.submit(image_record(), b"12345")
    other, own = SharedJobs(api), SharedJobs(holder)
    assert (await own.view(stored.id)).state == "queued"  # not held here yet: from Redis
    await pull(holder)

    before = await hgetall_calls(redis_server)
    views = [await own.view(stored.id) for _ in range(20)]
    assert await hgetall_calls(redis_server) == before
    assert {v.state for v in views} == {"running"}
    # The holder's answer is the record Redis holds, field for field.
    assert views[-1] == await other.view(stored.id)
    assert await hgetall_calls(redis_server) == before + 1


async def test_a_cancel_is_never_hidden_by_the_holders_copy(open_store: StoreFactory) -> None:
    api, holder = await open_store(consume=False), await open_store()
    first = await api.queue.submit(image_record(), b"12345")
    second = await api.queue.submit(image_record(), b"12345")
    own = SharedJobs(holder)
    for _ in range(2):
        await pull(holder)

    # Asked on the holder: its next answer says so, before the cancel channel's message arrives.
    assert (await own.cancel(first.id)).cancel_requested is True
    assert (await own.view(first.id)).cancel_requested is True

    # Asked on another replica: the holder hears it on the cancel channel and reads Redis.
    assert (await SharedJobs(api).cancel(second.id)).cancel_requested is True

    async def seen() -> bool:
        return (await own.view(second.id)).cancel_requested

    await eventually(seen, timeout_s=5.0)
    assert holder.consumer.running[second.id].record.state is RecordState.RUNNING
