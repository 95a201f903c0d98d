"""A replica's presence in the group: its heartbeat key, its pub/sub listener, and the periodic
chores, each a background task that outlives Redis outages and reconnects by itself.

The heartbeat key (`{prefix}:replica:{id}`) expires after the claim time; other replicas treat
the entries of a consumer without one as orphans. The listener hears cancel requests (a job id
on `{prefix}:cancel`) and wake-ups (an entry was added, on `{prefix}:wakeup`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from service.store.errors import StoreError
from service.store.queue import JobQueue

log = logging.getLogger(__name__)


def new_replica_id() -> str:
    """host-pid-random: the pod's name in Kubernetes, unique across restarts."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:48] or "replica"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


async def cancel_all(tasks: list[asyncio.Task[None]], limit_s: float = 5.0) -> None:
    """Cancel `tasks` and wait for them to end.

    A cancel that lands while redis-py is inside a command can be swallowed (measured with
    redis-py 8.2 on Python 3.11; redis/redis-py#2028, #2551): the task then carries on as if
    nothing happened. So cancel again until each task has ended, for at most `limit_s`."""
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
        if pending and loop.time() > deadline:
            log.warning("tasks would not stop: %s", ", ".join(t.get_name() for t in pending))
            return
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.warning("task %s had failed: %r", task.get_name(), task.exception())


class Presence:
    """Heartbeat, listener and chores of one replica (started and stopped together)."""

    def __init__(
        self,
        queue: JobQueue,
        replica_id: str,
        *,
        on_beat: Callable[[], Awaitable[None]],
        on_cancel: Callable[[str], None],
        on_wakeup: Callable[[], None],
        chores: Callable[[], Awaitable[None]],
    ) -> None:
        self.queue = queue
        self.replica_id = replica_id
        self._on_beat = on_beat
        self._on_cancel = on_cancel
        self._on_wakeup = on_wakeup
        self._chores = chores
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        with contextlib.suppress(StoreError):
            await self.beat()  # at once: a replica is alive before it first pulls
        self._tasks = [
            asyncio.create_task(self._every(self.beat, "heartbeat"), name="store-heartbeat"),
            asyncio.create_task(self._listen(), name="store-listener"),
            asyncio.create_task(self._every(self._chores, "housekeeping"), name="store-chores"),
        ]

    async def stop(self, *, drop_heartbeat: bool = True) -> None:
        self._stopped = True  # also ends a loop whose cancel redis-py swallowed
        await cancel_all(self._tasks)
        self._tasks = []
        if drop_heartbeat:
            try:
                async with self.queue.tracker.call("redis", "heartbeat"):
                    await self.queue.redis.delete(self.queue.keys.replica(self.replica_id))
            except StoreError as exc:
                log.warning("could not drop the heartbeat of %s: %s", self.replica_id, exc)

    async def beat(self) -> None:
        """Refresh the heartbeat key (it lives for the claim time), then the caller's part."""
        async with self.queue.tracker.call("redis", "heartbeat"):
            await self.queue.redis.set(
                self.queue.keys.replica(self.replica_id),
                f"{time.time():.3f}",
                px=int(self.queue.config.claim_after_s * 1000),
            )
        await self._on_beat()

    async def _every(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        while not self._stopped:
            try:
                await step()
            except StoreError:
                pass  # the tracker logged it and health shows it; try again next time
            except Exception:
                log.exception("shared store %s failed", what)
            await asyncio.sleep(self.queue.config.heartbeat_s)

    async def _listen(self) -> None:
        keys, tracker = self.queue.keys, self.queue.tracker
        while not self._stopped:
            pubsub = self.queue.redis.pubsub(ignore_subscribe_messages=True)
            try:
                async with tracker.call("redis", "subscribe"):
                    await pubsub.subscribe(keys.cancel_channel, keys.wakeup_channel)
                self._on_wakeup()  # entries may have arrived while this was not listening
                while not self._stopped:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["channel"] == keys.wakeup_channel:
                        self._on_wakeup()
                    else:
                        self._on_cancel(str(message["data"]))
            except (StoreError, RedisError, OSError) as exc:
                if not isinstance(exc, StoreError):
                    tracker.failed("redis", tracker.unavailable("redis", "listen", exc))
                await asyncio.sleep(min(1.0, self.queue.config.heartbeat_s))
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
