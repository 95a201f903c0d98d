"""Fixtures for the job stores' acceptance tests: a real Redis (AOF on) and a real S3 server
for the module, and the environment that points a service process at them."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.services import ACCESS_KEY, SECRET_KEY, RedisServer, SeaweedServer
from tests.support.store import JOBS_BUCKET as BUCKET
from tests.support.store import SharedEnv


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    directory = tmp_path_factory.mktemp("redis")
    server = RedisServer(directory, appendonly=True, appendfsync="always").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    try:
        server.wait_writable(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def shared_env(redis: RedisServer, seaweed: SeaweedServer) -> SharedEnv:
    """COLORIZE_* for a replica of a deployment of the test's own (its own key prefix), with
    a heartbeat of 0.5 s and a silent replica's work claimed after 2 s."""
    prefix = f"t{secrets.token_hex(3)}"

    def env(**extra: str) -> dict[str, str]:
        return {
            "COLORIZE_REDIS_URL": redis.url,
            "COLORIZE_OBJECT_STORE_URL": seaweed.endpoint,
            "COLORIZE_OBJECT_STORE_BUCKET": BUCKET,
            "COLORIZE_SHARED_PREFIX": prefix,
            "COLORIZE_SHARED_HEARTBEAT_S": "0.5",
            "COLORIZE_SHARED_CLAIM_AFTER_S": "2",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "COLORIZE_SHUTDOWN_GRACE_S": "5",
            **extra,
        }

    env.prefix = prefix  # type: ignore[attr-defined]
    return env
