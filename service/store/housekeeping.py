"""What every replica does each heartbeat besides beating: find a dead replica's entries (and
dead letters), delete expired jobs, correct the totals, and refresh the queue metrics.

Claims go through admission: housekeeping only lists the entries a dead replica held, and the
replica's next pull claims one when its budgets admit it. Jobs delivered too often are ended
here at once (dead letter), since they will not run again anyway.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from redis.exceptions import ResponseError

from service.store.errors import StoreUnavailable
from service.store.keys import GROUP
from service.store.records import Ticket
from service.store.scripts import pairs

if TYPE_CHECKING:
    from service.store.consumer import Consumer

log = logging.getLogger(__name__)
SCAN_PAGE = 100
"""Pending entries read per XPENDING call."""
SCAN_LIMIT = 1000
"""Pending entries looked at per pass (the rest wait for the next one)."""
REAP_LIMIT = 100
"""Expired jobs deleted per pass."""


@dataclass(frozen=True)
class Orphan:
    """An entry held by a consumer that is gone, or by this one that does not run it (handed
    back, or taken by a call whose reply was lost)."""

    entry_id: str
    holder: str
    deliveries: int
    ticket: Ticket


class Housekeeper:
    """One replica's periodic chores in the shared store."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.queue = consumer.queue

    async def run(self) -> None:
        await self.scan()
        await self.reap()
        if self.queue.metrics is not None:
            self.queue.metrics.observe_queue(await self.queue.stats())

    async def claim(self, orphan: Orphan, mode: Literal["claim", "check"]) -> list[Any]:
        """Run the claim script on `orphan` (see lua/claim.lua for the replies)."""
        q = self.queue
        c = q.config
        keys = [q.keys.stream, q.keys.totals, q.keys.expiry]
        detail = (
            f"delivered {orphan.deliveries} times and the replica running it stopped each time "
            f"(dead letter after COLORIZE_SHARED_MAX_DELIVERIES={c.max_deliveries})"
        )
        args = [c.prefix, GROUP, self.consumer.replica_id, orphan.entry_id, orphan.holder]
        args += [str(c.max_deliveries), str(c.record_ttl_s), detail, mode]
        async with q.tracker.call("redis", "claim"):
            reply: list[Any] = await q.scripts.claim(keys=keys, args=args)
        if reply[0] == "dead":
            log.warning("job %s is a dead letter: %s", reply[1], detail)
            if q.metrics is not None:
                q.metrics.observe_dead_letter()
            await q.forget_objects(str(reply[1]), keep_result=True)
        return reply

    async def _pending(self) -> list[dict[str, Any]]:
        q = self.queue
        entries: list[dict[str, Any]] = []
        start = "-"
        while len(entries) < SCAN_LIMIT:
            missing = False
            async with q.tracker.call("redis", "pending"):
                try:
                    page = await q.redis.xpending_range(q.keys.stream, GROUP, start, "+", SCAN_PAGE)
                except ResponseError as exc:  # NOGROUP: a Redis that lost its data
                    if "NOGROUP" not in str(exc):
                        raise
                    page, missing = [], True
            if missing:
                await q.ensure_group()
            entries += page
            if len(page) < SCAN_PAGE:
                break
            start = "(" + str(page[-1]["message_id"])
        return entries

    async def scan(self) -> None:
        """List the entries this replica may claim; end the dead letters among them."""
        q, me = self.queue, self.consumer.replica_id
        # Under the pull lock, so that an entry a pull has just taken is already tracked when
        # its own replica's pending entries are compared with what it runs.
        async with self.consumer.pull_lock:
            pending = await self._pending()
            tracked = {d.entry_id for d in self.consumer.running.values()}
        holders = sorted({str(p["consumer"]) for p in pending} - {me})
        alive: dict[str, bool] = {}
        if holders:
            async with (
                q.tracker.call("redis", "liveness"),
                q.redis.pipeline(transaction=False) as pipe,
            ):
                for holder in holders:
                    pipe.exists(q.keys.replica(holder))
                alive = {h: bool(n) for h, n in zip(holders, await pipe.execute(), strict=True)}
        candidates = []
        for p in pending:
            entry, holder = str(p["message_id"]), str(p["consumer"])
            if (holder == me and entry not in tracked) or (holder != me and not alive[holder]):
                candidates.append((entry, holder, int(p["times_delivered"])))
        orphans: dict[str, Orphan] = {}
        if candidates:
            async with (
                q.tracker.call("redis", "tickets"),
                q.redis.pipeline(transaction=False) as pipe,
            ):
                for entry, _, _ in candidates:
                    pipe.xrange(q.keys.stream, entry, entry)
                found = await pipe.execute()
            for (entry, holder, count), rows in zip(candidates, found, strict=True):
                fields = pairs(list(_flatten(rows[0][1]))) if rows else {"id": ""}
                orphan = Orphan(entry, holder, count, Ticket.from_entry(entry, fields))
                if not rows or count >= q.config.max_deliveries:
                    # A dead letter, or a vanished entry to clear; a job handed back on a
                    # graceful stop stays claimable (its hand-back did not count).
                    reply = await self.claim(orphan, "check")
                    if reply[0] != "claimable":
                        continue
                orphans[entry] = orphan
        self.consumer.orphans = orphans
        if orphans:
            self.consumer.wake()

    async def reap(self) -> None:
        """Delete the jobs whose expiry is due: objects first, then the record."""
        q = self.queue
        keys = [q.keys.stream, q.keys.totals, q.keys.expiry]
        async with q.tracker.call("redis", "tidy"):
            due: list[str] = await q.scripts.tidy(
                keys=keys, args=[q.config.prefix, GROUP, REAP_LIMIT]
            )
        for job_id in due:
            try:
                await q.objects.delete(q.keys.objects(job_id))
            except StoreUnavailable:
                # Keep the record and try again in a minute: it names what is left to delete.
                async with q.tracker.call("redis", "tidy"):
                    await q.redis.zadd(q.keys.expiry, {job_id: time.time() + 60})
                continue
            async with q.tracker.call("redis", "tidy"):
                await q.redis.delete(q.keys.job(job_id))


def _flatten(fields: Any) -> list[Any]:
    """redis-py gives an entry's fields as a dict; the scripts as a flat list."""
    if isinstance(fields, dict):
        return [part for item in fields.items() for part in item]
    return list(fields)
