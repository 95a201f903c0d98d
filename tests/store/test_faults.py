"""Outages: Redis restarted or down, the object store down, wrong credentials. Every failure is
a typed error within seconds, health names the cause, and the same process recovers by itself."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from service.store import RecordState, SharedStore, StoreUnavailable
from tests.support.proxy import Proxy
from tests.support.services import REDIS_PASSWORD, SECRET_KEY, RedisServer, SeaweedServer
from tests.support.store import (
    ConfigFactory,
    StoreFactory,
    eventually,
    image_record,
    object_keys,
    pull,
)

pytestmark = pytest.mark.anyio

RESTARTS = [
    # (how Redis stops, AOF fsync policy): a crash loses nothing with `always`; a clean stop
    # (SIGTERM writes everything out) loses nothing with the default `everysec`.
    (signal.SIGKILL, "always"),
    (signal.SIGTERM, "everysec"),
]


@pytest.fixture
def proxy(seaweed: SeaweedServer) -> Iterator[Proxy]:
    front = Proxy(seaweed.ports["s3"]).start()
    yield front
    front.close()


@pytest.mark.parametrize(
    ("sig", "fsync"), RESTARTS, ids=["SIGKILL, appendfsync always", "SIGTERM, everysec"]
)
async def test_accepted_jobs_survive_a_redis_restart(
    open_store: StoreFactory,
    make_config: ConfigFactory,
    own_redis: RedisServer,
    sig: signal.Signals,
    fsync: str,
) -> None:
    own_redis.appendfsync = fsync
    own_redis.restart()
    config = make_config(redis_url=SecretStr(own_redis.url))
    api = await open_store(config, consume=False)
    worker = await open_store(config)
    accepted = [await api.queue.submit(image_record(), f"job {i}".encode()) for i in range(5)]
    running = await pull(worker)

    own_redis.restart(sig)

    records = [await api.queue.get(job.id) for job in accepted]
    assert all(r is not None for r in records)
    states = [r.state for r in records if r is not None]
    assert states == [RecordState.RUNNING] + [RecordState.QUEUED] * 4
    assert await worker.consumer.complete(running, b"result", "image/png")
    for _ in range(4):
        delivery = await pull(worker)
        assert await worker.consumer.complete(delivery, b"result", "image/png")
    done = [await api.queue.get(job.id) for job in accepted]
    assert all(r is not None and r.state is RecordState.DONE for r in done)
    stats = await api.queue.stats()
    assert (stats.jobs, stats.pending, stats.stream_length, stats.lag) == (0, 0, 0, 0)


async def test_redis_down_is_a_typed_error_in_seconds_and_the_process_recovers(
    open_store: StoreFactory, make_config: ConfigFactory, own_redis: RedisServer
) -> None:
    config = make_config(redis_url=SecretStr(own_redis.url), timeout_s=1.0)
    store = await open_store(config)
    own_redis.stop()

    start = time.monotonic()
    refused = image_record()
    with pytest.raises(StoreUnavailable) as info:
        await store.queue.submit(refused, b"x")
    assert time.monotonic() - start < 3.0
    assert info.value.store == "redis" and f"127.0.0.1:{own_redis.port}" in info.value.detail
    with pytest.raises(StoreUnavailable):
        await store.consumer.pull(lambda ticket: True)
    health = await store.check()
    assert not health.ok and health.reasons[0].startswith("redis: redis at 127.0.0.1")
    assert await object_keys(store, refused.id) == []  # nothing uploaded for a refused job

    own_redis.start()
    await eventually(lambda: _healthy(store), timeout_s=5.0)
    stored = await store.queue.submit(image_record(), b"x")
    delivery = await pull(store)  # the heartbeat and the listener came back by themselves
    assert delivery.job_id == stored.id
    assert await store.consumer.complete(delivery, b"result", "image/png")


async def test_the_object_store_down_is_a_typed_error_in_seconds_and_recovers(
    open_store: StoreFactory, make_config: ConfigFactory, proxy: Proxy
) -> None:
    store = await open_store(make_config(object_store_url=proxy.url, timeout_s=1.0))
    proxy.cut()

    start = time.monotonic()
    refused = image_record()
    with pytest.raises(StoreUnavailable) as info:
        await store.queue.submit(refused, b"x")
    assert time.monotonic() - start < 3.0
    assert info.value.store == "object_store" and "colorize-tests" in info.value.detail
    assert await store.queue.get(refused.id) is None  # never a record without its bytes
    assert (await store.queue.stats()).jobs == 0
    health = await store.check()
    assert [r.split(":")[0] for r in health.reasons] == ["object_store"]

    proxy.restore()
    await eventually(lambda: _healthy(store), timeout_s=5.0)
    stored = await store.queue.submit(image_record(), b"bytes")
    delivery = await pull(store)
    assert await store.consumer.inputs(delivery) == (b"bytes", None)
    assert await store.consumer.complete(delivery, b"result", "image/png")
    assert stored.id == delivery.job_id


async def test_rediss_with_auth_carries_a_job(
    open_store: StoreFactory, make_config: ConfigFactory, tmp_path: Path
) -> None:
    tls = RedisServer(tmp_path, tls=True).start()
    try:
        config = make_config(redis_url=SecretStr(tls.url))
        assert tls.url.startswith(f"rediss://:{REDIS_PASSWORD}@")
        store = await open_store(config)
        stored = await store.queue.submit(image_record(), b"x")
        delivery = await pull(store)
        assert delivery.job_id == stored.id
        assert await store.consumer.complete(delivery, b"result", "image/png")
        await store.close()
    finally:
        tls.stop()


async def test_a_wrong_redis_password_is_an_outage_that_names_redis_but_not_the_password(
    open_store: StoreFactory, make_config: ConfigFactory, redis_server: RedisServer
) -> None:
    wrong = redis_server.url.replace(REDIS_PASSWORD, "not-" + REDIS_PASSWORD)
    none = redis_server.url.replace(f":{REDIS_PASSWORD}@", "")
    for url in (wrong, none):
        store = await open_store(make_config(redis_url=SecretStr(url)), consume=False)
        with pytest.raises(StoreUnavailable) as info:
            await store.queue.submit(image_record(), b"x")
        assert f"redis at 127.0.0.1:{redis_server.port}" in info.value.detail
        assert REDIS_PASSWORD not in info.value.detail


async def test_credentials_never_appear_in_messages_logs_reprs_or_metrics(
    open_store: StoreFactory,
    make_config: ConfigFactory,
    redis_server: RedisServer,
    proxy: Proxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="service")
    shown: list[str] = []
    store = await open_store(make_config(object_store_url=proxy.url, timeout_s=0.5))
    stored = await store.queue.submit(image_record(), b"x")
    proxy.cut()
    for call in (store.queue.submit(image_record(), b"x"), store.queue.open_result(stored.id)):
        try:
            await call
        except Exception as exc:
            shown += [str(exc), repr(exc)]
    proxy.restore()
    wrong = redis_server.url.replace(REDIS_PASSWORD, REDIS_PASSWORD[::-1])
    broken = await open_store(make_config(redis_url=SecretStr(wrong)))
    try:
        await broken.queue.get(stored.id)
    except StoreUnavailable as exc:
        shown += [str(exc), repr(exc)]
    assert len(shown) == 6
    for each in (store, broken):
        shown += [repr(each), repr(each.queue), repr(each.consumer), repr(each.objects)]
        shown += [repr(each.config), str(each.health()), _metrics_text(each)]
    shown.append(caplog.text)
    for text in shown:
        for secret in (REDIS_PASSWORD, REDIS_PASSWORD[::-1], SECRET_KEY):
            assert secret not in text, text


async def _healthy(store: SharedStore) -> bool:
    return (await store.check()).ok


def _metrics_text(store: SharedStore) -> str:
    registry = CollectorRegistry()
    registry.register(store.metrics)
    return generate_latest(registry).decode()
