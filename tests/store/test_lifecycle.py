"""A job's life through the shared store, against a real Redis and a real S3 server."""

from __future__ import annotations

import asyncio

import pytest

from service.outcomes import Outcome
from service.store import JobNotFound, NoResult, Progress, RecordState
from tests.support.store import (
    ConfigFactory,
    StoreFactory,
    eventually,
    image_record,
    object_keys,
    pull,
)

pytestmark = pytest.mark.anyio


async def test_submit_get_and_result_round_trip(open_store: StoreFactory) -> None:
    api = await open_store(consume=False)
    worker = await open_store()
    record = image_record(options={"format": "webp", "quality": 80, "hints": [[1, 2, 3, 4, 5]]})
    stored = await api.queue.submit(record, b"upload-bytes", reference=b"reference")

    got = await api.queue.get(stored.id)
    assert got is not None and got.state is RecordState.QUEUED and got.created is not None
    assert got.options == {"format": "webp", "quality": 80, "hints": [[1, 2, 3, 4, 5]]}
    assert (got.upload_bytes, got.width, got.height) == (len(b"upload-bytes") + 9, 64, 48)

    delivery = await pull(worker)
    assert delivery.job_id == stored.id and delivery.attempt == 1 and not delivery.claimed
    assert await worker.consumer.inputs(delivery) == (b"upload-bytes", b"reference")
    running = await api.queue.get(stored.id)
    assert running is not None and running.state is RecordState.RUNNING
    assert running.owner == worker.consumer.replica_id and running.deliveries == 1

    assert await worker.consumer.progress(delivery, Progress(done=3, total=10, fps=2.5, eta_s=2.8))
    progressed = await api.queue.get(stored.id)
    assert progressed is not None and progressed.progress == Progress(3, 10, 2.5, 2.8)

    assert await worker.consumer.complete(
        delivery, b"\x89PNG result", "image/png", {"compute": 0.5}
    )
    done = await api.queue.get(stored.id)
    assert done is not None and done.state is RecordState.DONE
    assert (done.result_type, done.result_bytes, done.timings) == (
        "image/png",
        11,
        {"compute": 0.5},
    )
    assert done.finished is not None and done.owner is None

    reader = await api.queue.open_result(stored.id)
    assert (reader.size, reader.content_type) == (11, "image/png")
    assert b"".join([chunk async for chunk in reader.chunks()]) == b"\x89PNG result"
    # The uploads are gone once the job is done; only the result is kept.
    assert await object_keys(api, stored.id) == [f"{api.config.prefix}/jobs/{stored.id}/result"]


async def test_a_failed_job_records_its_outcome_and_keeps_no_objects(
    open_store: StoreFactory,
) -> None:
    store = await open_store()
    stored = await store.queue.submit(image_record(), b"not an image")
    delivery = await pull(store)
    assert await store.consumer.fail(delivery, Outcome.INVALID_IMAGE, "cannot identify image")
    failed = await store.queue.get(stored.id)
    assert failed is not None and failed.state is RecordState.FAILED
    assert failed.error is not None
    assert (failed.error.outcome, failed.error.detail) == (
        Outcome.INVALID_IMAGE,
        "cannot identify image",
    )
    assert await object_keys(store, stored.id) == []
    with pytest.raises(NoResult):
        await store.queue.open_result(stored.id)


async def test_unknown_job(open_store: StoreFactory) -> None:
    store = await open_store(consume=False)
    assert await store.queue.get("no-such-job") is None
    with pytest.raises(JobNotFound):
        await store.queue.open_result("no-such-job")
    assert not await store.queue.delete("no-such-job")


async def test_a_finished_job_expires_with_its_objects(
    open_store: StoreFactory, make_config: ConfigFactory
) -> None:
    store = await open_store(make_config(record_ttl_s=1.0))
    stored = await store.queue.submit(image_record(), b"x")
    delivery = await pull(store)
    await store.consumer.complete(delivery, b"result", "image/png")
    assert await object_keys(store, stored.id) != []

    async def gone() -> bool:
        return await store.queue.get(stored.id) is None

    # Due after the TTL; the reaper runs every heartbeat and deletes the objects, then the record.
    await eventually(gone, timeout_s=3.0)
    assert await object_keys(store, stored.id) == []


async def test_a_queued_job_whose_record_expired_is_skipped_and_cleaned_up(
    open_store: StoreFactory, make_config: ConfigFactory
) -> None:
    config = make_config(record_ttl_s=0.5)  # a queued record lives twice that without news
    api = await open_store(config, consume=False)
    stale = await api.queue.submit(image_record(), b"stale")
    await asyncio.sleep(1.3)
    fresh = await api.queue.submit(image_record(), b"fresh")
    worker = await open_store(config)
    delivery = await pull(worker)
    assert delivery.job_id == fresh.id
    assert await object_keys(api, stale.id) == []
    assert (await api.queue.stats()).jobs == 1  # the stale job left the bounds
