"""The shared job store as the lifespan owns it: one Redis client, one object store, the queue
(any replica's `/jobs`) and this replica's consumer (its worker), built from the settings.

Start-up does not fail when Redis or the store is down: `/colorize` needs neither, so the
service starts, health names what is missing, and everything reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from types import TracebackType
from urllib.parse import urlsplit

import boto3
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.settings import Settings
from service.store.config import StoreConfig
from service.store.consumer import Consumer
from service.store.errors import StoreError
from service.store.metrics import StoreMetrics
from service.store.objects import ObjectStore, describe
from service.store.presence import cancel_all
from service.store.queue import JobQueue
from service.store.scripts import Scripts
from service.store.tracking import Health, Tracker

log = logging.getLogger(__name__)

OBJECT_CHECK_HEARTBEATS = 4
"""The object store is asked whether it answers every this many heartbeats."""


def connect_redis(config: StoreConfig, client_name: str) -> Redis:
    """A Redis client whose calls fail within about two timeouts when Redis is gone."""
    return Redis.from_url(
        config.redis_url.get_secret_value(),
        decode_responses=True,
        socket_timeout=config.timeout_s,
        socket_connect_timeout=min(config.timeout_s, 2.0),
        # One quick retry on a fresh connection: after a Redis restart every pooled connection
        # is dead, and the first command on each should not fail because of it.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        client_name=client_name,
    )


class SharedStore:
    """Everything of the shared job store one replica needs, opened and closed together."""

    def __init__(
        self,
        config: StoreConfig,
        *,
        session: boto3.Session | None = None,
        replica_id: str | None = None,
        metrics: StoreMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else StoreMetrics()
        url = urlsplit(config.redis_url.get_secret_value())
        # Secrets to mask in messages: the Redis password, and the AWS secret key where it is at
        # hand without a lookup (a session's own credentials may be fetched over the network,
        # from STS or the instance metadata, so the default session's are not resolved here).
        credentials = session.get_credentials() if session is not None else None
        session = session or boto3.Session()
        self.tracker = Tracker(
            {
                "redis": f"redis at {url.hostname}:{url.port or 6379}",
                "object_store": describe(config.object_store_url, config.bucket),
            },
            self.metrics,
            secrets=(
                url.password,
                credentials.secret_key if credentials is not None else None,
                os.environ.get("AWS_SECRET_ACCESS_KEY"),
            ),
        )
        self.objects = ObjectStore(
            config.object_store_url,
            config.bucket,
            tracker=self.tracker,
            session=session,
            region=config.region,
            timeout_s=config.timeout_s,
            create_bucket=config.create_bucket,
            multipart_bytes=config.multipart_bytes,
            chunk_bytes=config.chunk_bytes,
        )
        self.redis = connect_redis(config, f"colorize-{config.prefix}")
        self.queue = JobQueue(
            self.redis,
            self.objects,
            config,
            self.tracker,
            Scripts.register(self.redis),
            self.metrics,
        )
        self.consumer = Consumer(self.queue, replica_id)
        self._ready = False
        self._closed = False
        self._preparing: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        replica_id: str | None = None,
        metrics: StoreMetrics | None = None,
    ) -> SharedStore:
        """The shared store the settings select (AWS credentials from the environment)."""
        return cls(StoreConfig.from_settings(settings), replica_id=replica_id, metrics=metrics)

    def __repr__(self) -> str:
        return f"SharedStore({self.tracker.describe['redis']}, {self.objects!r})"

    async def open(self, *, consume: bool = True) -> None:
        """Make the bucket and the consumer group (retrying in the background while a store is
        down) and, with `consume`, join the group as this replica's consumer."""
        if not await self._prepare():
            self._preparing = asyncio.create_task(self._prepare_until_ready())
        self._watching = asyncio.create_task(self._watch_objects(), name="store-watch")
        if consume:
            await self.consumer.start()

    async def _prepare(self) -> bool:
        try:
            await self.objects.ensure_bucket()
            await self.queue.ensure_group()
        except StoreError:
            return False
        self._ready = True
        return True

    async def _prepare_until_ready(self) -> None:
        while not await self._prepare():
            await asyncio.sleep(self.config.heartbeat_s)

    async def _watch_objects(self) -> None:
        # Redis is called every heartbeat; the object store only when a job moves. An idle
        # replica asks it now and then, so /readyz names an outage before a job meets it.
        while True:
            await asyncio.sleep(OBJECT_CHECK_HEARTBEATS * self.config.heartbeat_s)
            with contextlib.suppress(StoreError):
                await self.objects.check()

    async def close(self, *, drop_heartbeat: bool = True) -> None:
        """Leave the group (see Consumer.stop) and close the connections (once)."""
        if self._closed:
            return
        self._closed = True
        await cancel_all([t for t in (self._preparing, self._watching) if t is not None])
        await self.consumer.stop(drop_heartbeat=drop_heartbeat)
        await self.redis.aclose()
        self.objects.close()

    async def __aenter__(self) -> SharedStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def health(self) -> Health:
        """What the last calls said (no I/O): ok, or why each store is down."""
        reasons = self.tracker.health().reasons
        if not self._ready and not reasons:
            reasons = ("shared store: bucket and consumer group not prepared yet",)
        return Health(reasons)

    async def check(self) -> Health:
        """Ask both stores now (one PING, one HEAD on the bucket); the health that results."""
        with contextlib.suppress(StoreError):
            async with self.tracker.call("redis", "ping"):
                await self.redis.ping()
        with contextlib.suppress(StoreError):
            await self.objects.check()
        if not self._ready:
            await self._prepare()
        return self.health()
