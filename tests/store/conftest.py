"""Fixtures for the shared store's tests: one real Redis and one real S3 server per session, a
fresh key prefix per test (so tests never see each other's jobs), and stores that close
themselves. The servers are devkit/services.py's; tests/support/services.py adds the policy for
a missing binary (skip, or fail in CI)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from service.store import SharedStore, StoreConfig
from tests.support.services import RedisServer, SeaweedServer, aws_session
from tests.support.store import BUCKET, ConfigFactory, StoreFactory


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's Redis, with a password: every test authenticates through its URL."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, with AOF on, for tests that stop or restart it."""
    server = RedisServer(tmp_path / "redis", appendonly=True, appendfsync="always")
    server.directory.mkdir()
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    try:
        server.wait_writable(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_config(redis_server: RedisServer, seaweed: SeaweedServer) -> ConfigFactory:
    """StoreConfig for the session's servers under a prefix of the test's own, with timings
    short enough for tests (heartbeat 0.2 s, a silent replica is dead after 1 s)."""
    prefix = f"t-{secrets.token_hex(4)}"

    def make(**overrides: Any) -> StoreConfig:
        settings: dict[str, Any] = {
            "redis_url": SecretStr(redis_server.url),
            "object_store_url": seaweed.endpoint,
            "bucket": BUCKET,
            "prefix": prefix,
            "heartbeat_s": 0.2,
            "claim_after_s": 1.0,
            "timeout_s": 2.0,
            "record_ttl_s": 60.0,
            **overrides,
        }
        return StoreConfig(**settings)

    return make


@pytest.fixture
async def open_store(make_config: ConfigFactory) -> AsyncIterator[StoreFactory]:
    """Opens SharedStores (one per replica a test plays) and closes them all at the end."""
    opened: list[SharedStore] = []

    async def open_(
        config: StoreConfig | None = None, *, consume: bool = True, replica_id: str | None = None
    ) -> SharedStore:
        store = SharedStore(config or make_config(), session=aws_session(), replica_id=replica_id)
        opened.append(store)
        await store.open(consume=consume)
        return store

    yield open_
    for store in reversed(opened):
        await store.close()
