"""Replicas in the consumer group: pull under admission, liveness by heartbeat, claims of a dead
replica's work, completion exactly once, dead letters and graceful stops."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from service.outcomes import Outcome
from service.store import RecordState, Ticket
from tests.support.servers import ROOT
from tests.support.services import ACCESS_KEY, SECRET_KEY, RedisServer, SeaweedServer
from tests.support.store import (
    BUCKET,
    ConfigFactory,
    StoreFactory,
    admit_all,
    eventually,
    image_record,
    object_keys,
    pull,
)

pytestmark = pytest.mark.anyio


async def test_a_replica_pulls_only_what_its_budgets_admit(open_store: StoreFactory) -> None:
    api = await open_store(consume=False)
    small, large = await open_store(), await open_store()
    stored = await api.queue.submit(image_record(estimate_bytes=5000), b"12345")
    seen: list[Ticket] = []

    def too_small(ticket: Ticket) -> bool:
        seen.append(ticket)
        return ticket.estimate_bytes <= 1000

    assert await small.consumer.pull(too_small, timeout_s=1.0) is None  # refused at once
    ticket = seen[0]
    assert (ticket.job_id, ticket.upload_bytes, ticket.pixels, ticket.estimate_bytes) == (
        stored.id,
        5,
        64 * 48,
        5000,
    )
    stats = await api.queue.stats()
    assert (stats.pending, stats.lag) == (0, 1)  # left in the stream for a replica with room
    delivery = await large.consumer.pull(admit_all)
    assert delivery is not None and delivery.job_id == stored.id


async def test_an_idle_pull_wakes_when_a_job_arrives(open_store: StoreFactory) -> None:
    api = await open_store(consume=False)
    worker = await open_store()
    waiting = asyncio.create_task(worker.consumer.pull(admit_all, timeout_s=10.0))
    await asyncio.sleep(0.3)
    submitted = time.monotonic()
    stored = await api.queue.submit(image_record(), b"x")
    delivery = await asyncio.wait_for(waiting, 5.0)
    assert delivery is not None and delivery.job_id == stored.id
    assert time.monotonic() - submitted < 0.15  # woken by pub/sub, not by a poll


async def test_nothing_is_pulled_after_stop_pulling(open_store: StoreFactory) -> None:
    worker = await open_store()
    await worker.queue.submit(image_record(), b"x")
    worker.consumer.stop_pulling()
    assert await worker.consumer.pull(admit_all, timeout_s=1.0) is None


async def test_a_dead_replicas_job_is_claimed_and_a_slow_live_ones_never(
    open_store: StoreFactory,
) -> None:
    """Liveness by heartbeat: the silent replica's job moves within the claim time; the one of
    a replica that runs a job for three times the claim time, heartbeat alive, stays put."""
    api = await open_store(consume=False)
    dead, slow, survivor = await open_store(), await open_store(), await open_store()
    first = await api.queue.submit(image_record(), b"dead")
    second = await api.queue.submit(image_record(), b"slow")
    held_by_dead = await pull(dead)
    held_by_slow = await pull(slow)
    assert (held_by_dead.job_id, held_by_slow.job_id) == (first.id, second.id)
    await dead.consumer.stop(drop_heartbeat=False)  # as a SIGKILL: the key expires by itself
    died = time.monotonic()
    claimed = await pull(survivor, timeout_s=5.0)
    latency = time.monotonic() - died
    config = survivor.config
    assert claimed.job_id == first.id and claimed.claimed and claimed.attempt == 2
    assert latency < config.claim_after_s + 2 * config.heartbeat_s + 0.5, latency
    assert await survivor.consumer.pull(admit_all, timeout_s=3 * config.claim_after_s) is None
    record = await api.queue.get(second.id)
    assert record is not None and record.owner == slow.consumer.replica_id
    assert await slow.consumer.complete(held_by_slow, b"slow result", "image/png")


ORDERS = ["claimer first", "zombie first"]


@pytest.mark.parametrize("order", ORDERS)
async def test_a_job_delivered_twice_completes_once(open_store: StoreFactory, order: str) -> None:
    """A replica that only looked dead (its heartbeat lapsed) finishes after its job was claimed:
    one result object, the record done once, by the attempt that held it."""
    api = await open_store(consume=False)
    zombie, claimer = await open_store(), await open_store()
    stored = await api.queue.submit(image_record(), b"x")
    old = await pull(zombie)
    await zombie.consumer.stop(drop_heartbeat=False)
    new = await pull(claimer, timeout_s=5.0)
    assert new.job_id == old.job_id and new.attempt == old.attempt + 1
    if order == "claimer first":
        assert await claimer.consumer.complete(new, b"new result", "image/png")
        finished = (await api.queue.get(stored.id)).finished  # type: ignore[union-attr]
        assert not await zombie.consumer.complete(old, b"old result", "image/png")
    else:
        assert not await zombie.consumer.complete(old, b"old result", "image/png")
        assert await claimer.consumer.complete(new, b"new result", "image/png")
        finished = (await api.queue.get(stored.id)).finished  # type: ignore[union-attr]
    record = await api.queue.get(stored.id)
    assert record is not None and record.state is RecordState.DONE
    assert record.finished == finished and record.deliveries == 2
    assert await object_keys(api, stored.id) == [f"{api.config.prefix}/jobs/{stored.id}/result"]
    reader = await api.queue.open_result(stored.id)
    assert b"".join([c async for c in reader.chunks()]) == b"new result"
    stats = await api.queue.stats()
    assert (stats.jobs, stats.pending, stats.stream_length) == (0, 0, 0)


async def test_concurrent_completions_of_one_job_yield_one_winner(
    open_store: StoreFactory,
) -> None:
    api = await open_store(consume=False)
    zombie, claimer = await open_store(), await open_store()
    stored = await api.queue.submit(image_record(), b"x")
    old = await pull(zombie)
    await zombie.consumer.stop(drop_heartbeat=False)
    new = await pull(claimer, timeout_s=5.0)
    results = await asyncio.gather(
        zombie.consumer.complete(old, b"result", "image/png"),
        claimer.consumer.complete(new, b"result", "image/png"),
    )
    assert results == [False, True]
    assert await object_keys(api, stored.id) == [f"{api.config.prefix}/jobs/{stored.id}/result"]


async def test_a_job_whose_replicas_keep_dying_ends_as_a_dead_letter(
    open_store: StoreFactory, make_config: ConfigFactory
) -> None:
    config = make_config(max_deliveries=2)
    api = await open_store(config, consume=False)
    stored = await api.queue.submit(image_record(), b"poison")
    for attempt in (1, 2):
        victim = await open_store(config)
        delivery = await pull(victim, timeout_s=5.0)
        assert delivery.attempt == attempt
        await victim.consumer.stop(drop_heartbeat=False)
    judge = await open_store(config)

    async def failed() -> bool:
        record = await api.queue.get(stored.id)
        return record is not None and record.state is RecordState.FAILED

    await eventually(failed, timeout_s=config.claim_after_s + 2.0)
    record = await api.queue.get(stored.id)
    assert record is not None and record.error is not None
    assert record.error.outcome is Outcome.WORKER_DEAD
    assert "delivered 2 times" in record.error.detail and "dead letter" in record.error.detail
    assert await judge.consumer.pull(admit_all, timeout_s=0.5) is None  # never delivered again
    stats = await api.queue.stats()
    assert (stats.jobs, stats.pending, stats.stream_length) == (0, 0, 0)
    assert await object_keys(api, stored.id) == []


async def test_a_graceful_stop_hands_back_its_job_at_once_and_it_does_not_count(
    open_store: StoreFactory, make_config: ConfigFactory
) -> None:
    config = make_config(max_deliveries=1, claim_after_s=30.0)
    api = await open_store(config, consume=False)
    leaving, staying = await open_store(config), await open_store(config)
    stored = await api.queue.submit(image_record(), b"x")
    delivery = await pull(leaving)
    leaving.consumer.stop_pulling()
    assert await leaving.consumer.release(delivery)
    record = await api.queue.get(stored.id)
    assert record is not None and record.state is RecordState.QUEUED
    await leaving.close()  # drops the heartbeat: no waiting for the claim time (30 s here)
    start = time.monotonic()
    taken = await pull(staying, timeout_s=5.0)
    assert taken.job_id == stored.id and time.monotonic() - start < 1.0
    # max_deliveries=1 and a second delivery: a hand-back is not a failed delivery.
    assert await staying.consumer.complete(taken, b"r", "image/png")


async def test_a_job_handed_back_by_a_replica_that_keeps_pulling_comes_back_to_it(
    open_store: StoreFactory, make_config: ConfigFactory
) -> None:
    config = make_config(max_deliveries=1)
    worker = await open_store(config)
    stored = await worker.queue.submit(image_record(), b"x")
    first = await pull(worker)
    assert await worker.consumer.release(first)
    again = await pull(worker, timeout_s=3.0)
    assert (again.job_id, again.attempt) == (stored.id, 2)
    assert await worker.consumer.complete(again, b"r", "image/png")


async def test_a_sigkilled_replica_process_has_its_job_claimed(
    open_store: StoreFactory,
    make_config: ConfigFactory,
    redis_server: RedisServer,
    seaweed: SeaweedServer,
) -> None:
    """A real process, configured from the environment as the service is, killed mid-job."""
    config = make_config()
    api = await open_store(config, consume=False)
    stored = await api.queue.submit(image_record(), b"x")
    env = {
        **os.environ,
        "COLORIZE_REDIS_URL": redis_server.url,
        "COLORIZE_OBJECT_STORE_URL": seaweed.endpoint,
        "COLORIZE_OBJECT_STORE_BUCKET": BUCKET,
        "COLORIZE_SHARED_PREFIX": config.prefix,
        "COLORIZE_SHARED_HEARTBEAT_S": str(config.heartbeat_s),
        "COLORIZE_SHARED_CLAIM_AFTER_S": str(config.claim_after_s),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "devkit.store_worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)  # type: ignore[union-attr]
        assert line.startswith(f"holding {stored.id}"), line + child.stderr.read()  # type: ignore[union-attr]
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        killed = time.monotonic()
        survivor = await open_store(config)
        claimed = await pull(survivor, timeout_s=5.0)
        latency = time.monotonic() - killed
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(5)
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()
    assert claimed.job_id == stored.id and claimed.claimed
    assert latency < config.claim_after_s + 2 * config.heartbeat_s + 0.5, latency
    assert await survivor.consumer.complete(claimed, b"r", "image/png")
