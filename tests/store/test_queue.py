"""Submitting, bounding, cancelling and deleting jobs in the shared queue."""

from __future__ import annotations

import asyncio

import pytest

from service.outcomes import Outcome
from service.store import CancelOutcome, QueueFull, RecordState
from tests.support.store import (
    ConfigFactory,
    StoreFactory,
    admit_all,
    image_record,
    object_keys,
    pull,
)

pytestmark = pytest.mark.anyio

BOUNDS = [
    # (bound, config, uploads accepted before the refusal, size of each upload)
    ("jobs", {"max_jobs": 3}, 3, 100),
    ("bytes", {"max_bytes": 2500}, 2, 1000),
]


@pytest.mark.parametrize(
    ("bound", "limits", "accepted", "size"), BOUNDS, ids=[b[0] for b in BOUNDS]
)
async def test_past_a_bound_submission_is_refused_and_leaves_nothing(
    open_store: StoreFactory,
    make_config: ConfigFactory,
    bound: str,
    limits: dict[str, int],
    accepted: int,
    size: int,
) -> None:
    store = await open_store(make_config(**limits), consume=False)
    for _ in range(accepted):
        await store.queue.submit(image_record(), b"x" * size)
    refused = image_record()
    with pytest.raises(QueueFull) as info:
        await store.queue.submit(refused, b"x" * size)
    assert info.value.bound == bound
    assert f"COLORIZE_SHARED_QUEUE_{bound.upper()}" in str(info.value)
    assert await store.queue.get(refused.id) is None
    assert await object_keys(store, refused.id) == []
    stats = await store.queue.stats()
    assert (stats.jobs, stats.bytes) == (accepted, accepted * size)


async def test_finished_jobs_leave_the_bounds(
    open_store: StoreFactory, make_config: ConfigFactory
) -> None:
    store = await open_store(make_config(max_jobs=2))
    for _ in range(2):
        await store.queue.submit(image_record(), b"x")
    delivery = await pull(store)
    await store.consumer.complete(delivery, b"result", "image/png")
    await store.queue.submit(image_record(), b"x")  # room again
    with pytest.raises(QueueFull):
        await store.queue.submit(image_record(), b"x")


async def test_a_queued_job_cancelled_ends_at_once_and_is_skipped(
    open_store: StoreFactory,
) -> None:
    api = await open_store(consume=False)
    worker = await open_store()
    cancelled = await api.queue.submit(image_record(), b"first")
    kept = await api.queue.submit(image_record(), b"second")
    assert await api.queue.request_cancel(cancelled.id) is CancelOutcome.CANCELLED
    record = await api.queue.get(cancelled.id)
    assert record is not None and record.state is RecordState.CANCELLED and record.error
    assert record.error.detail == "cancelled before it started"
    assert await object_keys(api, cancelled.id) == []
    assert (await api.queue.stats()).jobs == 1
    delivery = await pull(worker)
    assert delivery.job_id == kept.id
    assert await api.queue.request_cancel(cancelled.id) is CancelOutcome.FINISHED


async def test_a_running_job_cancelled_is_signalled_to_its_replica(
    open_store: StoreFactory,
) -> None:
    api = await open_store(consume=False)
    worker = await open_store()
    stored = await api.queue.submit(image_record(), b"x")
    delivery = await pull(worker)
    assert await api.queue.request_cancel(stored.id) is CancelOutcome.SIGNALLED
    # Pub/sub brings the signal; the heartbeat's record check would within a heartbeat anyway.
    await asyncio.wait_for(delivery.cancelled.wait(), 2.0)
    assert not await worker.consumer.progress(delivery, None)
    assert await worker.consumer.fail(delivery, Outcome.CANCELLED, "cancelled while running")
    record = await api.queue.get(stored.id)
    assert record is not None and record.state is RecordState.CANCELLED
    assert record.cancel_requested


async def test_delete_removes_the_record_and_objects_and_refuses_a_late_result(
    open_store: StoreFactory,
) -> None:
    api = await open_store(consume=False)
    worker = await open_store()
    stored = await api.queue.submit(image_record(), b"x", reference=b"ref")
    delivery = await pull(worker)
    assert await api.queue.delete(stored.id)
    assert await api.queue.get(stored.id) is None
    assert delivery.cancelled.is_set() or await worker.consumer.progress(delivery, None) is False
    # The replica finishes anyway: its result is refused and removed again.
    assert not await worker.consumer.complete(delivery, b"late", "image/png")
    assert await object_keys(api, stored.id) == []
    stats = await api.queue.stats()
    assert (stats.jobs, stats.pending, stats.stream_length) == (0, 0, 0)


async def test_two_prefixes_on_one_redis_do_not_see_each_other(
    open_store: StoreFactory, make_config: ConfigFactory
) -> None:
    one = await open_store(make_config(prefix="deployment-one"))
    two = await open_store(make_config(prefix="deployment-two"))
    stored = await one.queue.submit(image_record(), b"x")
    assert await two.queue.get(stored.id) is None
    assert await two.consumer.pull(admit_all, timeout_s=0.3) is None
    assert (await two.queue.stats()).jobs == 0
    delivery = await pull(one)
    assert delivery.job_id == stored.id
    await one.consumer.complete(delivery, b"r", "image/png")
