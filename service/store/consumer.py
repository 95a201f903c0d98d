"""The working side of the shared store: one replica's consumer in the group.

A replica pulls an entry only when its own budgets admit the job (no prefetch), keeps a
heartbeat key alive while it lives, and ends each job from the attempt that holds it. Entries of
a replica whose heartbeat expired are claimed by the others (housekeeping.py): liveness is the
heartbeat, never how long a job has run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import ResponseError

from service.outcomes import Outcome
from service.store.errors import StoreError
from service.store.housekeeping import Housekeeper, Orphan
from service.store.keys import GROUP
from service.store.objects import Payload
from service.store.presence import Presence, new_replica_id
from service.store.queue import JobQueue
from service.store.records import (
    JobRecord,
    Progress,
    RecordState,
    Ticket,
    error_json,
    progress_json,
)
from service.store.scripts import pairs

log = logging.getLogger(__name__)
Admit = Callable[[Ticket], bool]
"""Whether this replica's budgets can take the job described by a ticket, now."""


@dataclass(eq=False)
class Delivery:
    """One attempt at one job, held by this replica until it completes, fails or releases it."""

    record: JobRecord
    entry_id: str
    attempt: int
    """The record's delivery number when this attempt started: it fences every later write."""
    claimed: bool
    """Taken over from a replica that died."""
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the job should stop: a client cancelled it, or another attempt took it over."""

    @property
    def job_id(self) -> str:
        return self.record.id


class Consumer:
    """This replica's membership of the consumer group: heartbeat, pull, claim, finish."""

    def __init__(self, queue: JobQueue, replica_id: str | None = None) -> None:
        self.queue = queue
        self.replica_id = replica_id or new_replica_id()
        self.running: dict[str, Delivery] = {}
        """Deliveries this replica holds, by job id."""
        self.orphans: dict[str, Orphan] = {}
        """Entries of dead replicas that this replica may claim, by entry id (housekeeping)."""
        self.pull_lock = asyncio.Lock()
        self.housekeeper = Housekeeper(self)
        self.presence = Presence(
            queue,
            self.replica_id,
            on_beat=self._beat,
            on_cancel=self._cancelled,
            on_wakeup=self.wake,
            chores=self.housekeeper.run,
        )
        self._wakeup = asyncio.Event()
        self._pulling = True

    def __repr__(self) -> str:
        return f"Consumer({self.replica_id!r}, {self.queue!r})"

    async def start(self) -> None:
        """Join the group: heartbeat, cancel listener and housekeeping start (see Presence).
        Redis may be down: each task retries until it answers, and health says why."""
        with contextlib.suppress(StoreError):
            await self.queue.ensure_group()
        await self.presence.start()

    @property
    def pulling(self) -> bool:
        """False once stop_pulling was called."""
        return self._pulling

    def stop_pulling(self) -> None:
        """Take no new work (SIGTERM): pull answers None from now on."""
        self._pulling = False
        self._wakeup.set()

    async def stop(self, *, drop_heartbeat: bool = True) -> None:
        """Stop pulling and the background tasks, then drop the heartbeat key so that the other
        replicas claim at once whatever this one still holds (its unfinished deliveries stay
        unacknowledged). `drop_heartbeat=False` leaves the key to expire, as a SIGKILL would."""
        self.stop_pulling()
        await self.presence.stop(drop_heartbeat=drop_heartbeat)

    async def _beat(self) -> None:
        # Each heartbeat also refreshes the records of the jobs this replica runs, which tells
        # it of a cancel whose pub/sub message it missed while disconnected.
        for delivery in list(self.running.values()):
            await self.progress(delivery, None)

    def _cancelled(self, job_id: str) -> None:
        delivery = self.running.get(job_id)
        if delivery is not None:
            delivery.cancelled.set()

    def wake(self) -> None:
        """Make a waiting pull look again (an entry arrived, or claimable work was found)."""
        self._wakeup.set()

    async def pull(self, can_admit: Admit, timeout_s: float = 0.0) -> Delivery | None:
        """The next job this replica's budgets admit, or None.

        None at once when `can_admit` refuses the job at the head (leave it to a replica with
        room; call again when budgets change) or when pulling stopped; otherwise waits up to
        `timeout_s` for an entry to arrive. A dead replica's entries come before new ones.
        Raises StoreUnavailable while Redis is down."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._pulling:
            self._wakeup.clear()
            delivery, refused = await self._pull_once(can_admit)
            if delivery is not None or refused:
                return delivery
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._wakeup.wait(), min(remaining, self.queue.config.heartbeat_s)
                )
        return None

    async def _pull_once(self, can_admit: Admit) -> tuple[Delivery | None, bool]:
        async with self.pull_lock:
            for entry_id, orphan in list(self.orphans.items()):
                if not can_admit(orphan.ticket):
                    return None, True
                self.orphans.pop(entry_id, None)
                reply = await self.housekeeper.claim(orphan, "claim")
                if reply[0] == "started":
                    if self.queue.metrics is not None:
                        self.queue.metrics.observe_claim()
                    log.info(
                        "claimed job %s from dead replica %s", orphan.ticket.job_id, orphan.holder
                    )
                    return self._register(reply, claimed=True), False
            admitted = ""
            for _ in range(4):
                reply = await self._pull_script(admitted)
                for job_id in reply[-1]:  # skipped: their records expired while queued
                    await self.queue.forget_objects(str(job_id))
                if reply[0] == "started":
                    return self._register(reply, claimed=False), False
                if reply[0] == "head":
                    ticket = Ticket.from_entry(str(reply[1]), pairs(reply[2]))
                    if not can_admit(ticket):
                        return None, True
                    admitted = ticket.entry_id
                elif reply[0] == "empty":
                    break
            return None, False

    async def _pull_script(self, admitted: str) -> list[Any]:
        q = self.queue
        keys = [q.keys.stream, q.keys.totals]
        args: list[str | float] = [
            q.config.prefix,
            GROUP,
            self.replica_id,
            admitted,
            q.config.record_ttl_s,
        ]
        for _ in range(2):
            reply: list[Any] | None = None
            async with q.tracker.call("redis", "pull"):
                try:
                    reply = await q.scripts.pull(keys=keys, args=args)
                except ResponseError as exc:
                    # The stream or group is gone (a Redis that lost its data): make it again.
                    if "NOGROUP" not in str(exc) and "no such key" not in str(exc):
                        raise
            if reply is not None:
                return reply
            await q.ensure_group()
        return ["empty", []]

    def _register(self, reply: list[Any], claimed: bool) -> Delivery:
        record = JobRecord.from_fields(pairs(reply[3]))
        delivery = Delivery(record, str(reply[1]), int(reply[2]), claimed)
        if record.cancel_requested:
            delivery.cancelled.set()
        self.running[record.id] = delivery
        return delivery

    async def inputs(self, delivery: Delivery) -> tuple[bytes, bytes | None]:
        """The job's upload: image bytes and reference bytes.

        ObjectNotFound: the upload is gone (a submission whose reply was lost and which was
        withdrawn, or objects deleted by hand); fail the job, nothing will bring them back."""
        objects = self.queue.objects
        image = await objects.get_bytes(delivery.record.image_key)
        ref_key = delivery.record.reference_key
        return image, (await objects.get_bytes(ref_key) if ref_key else None)

    async def download(self, delivery: Delivery, path: Path) -> bytes | None:
        """A video job's upload written to `path` (streamed from the object store, never whole
        in memory), and its reference photo's bytes (None without one). ObjectNotFound: as for
        `inputs`."""
        objects = self.queue.objects
        await objects.get_file(delivery.record.image_key, path)
        ref_key = delivery.record.reference_key
        return await objects.get_bytes(ref_key) if ref_key else None

    async def progress(self, delivery: Delivery, progress: Progress | None) -> bool:
        """Record progress (and keep the record alive); False when the job should stop."""
        return await self._touch(delivery, progress) == "ok"

    async def _touch(self, delivery: Delivery, progress: Progress | None) -> str:
        """ok, cancel (a client asked to stop) or lost (this attempt no longer holds the job)."""
        q = self.queue
        text = progress_json(progress) if progress is not None else ""
        args: list[str | float] = [self.replica_id, delivery.attempt, text, q.config.record_ttl_s]
        async with q.tracker.call("redis", "progress"):
            verdict = str(await q.scripts.touch(keys=[q.keys.job(delivery.job_id)], args=args))
        if verdict != "ok":
            delivery.cancelled.set()
        return verdict

    async def complete(
        self,
        delivery: Delivery,
        result: Payload,
        content_type: str,
        timings: Mapping[str, float] | None = None,
    ) -> bool:
        """Store the result, then end the job done; True if this attempt completed it.

        The result's key is a function of the job id, so a second attempt overwrites the first's
        object instead of adding one. False: another attempt holds or ended the job, or it was
        deleted or cancelled (then the result written here is removed again). A job whose
        cancel was requested but not yet acted on still completes. StoreUnavailable: the job is
        not lost; once Redis answers, this replica runs it again (at least once)."""
        q, job_id = self.queue, delivery.job_id
        key = q.keys.result_object(job_id)
        try:
            # Write nothing from an attempt that no longer holds the job (it was claimed while
            # this replica looked dead); the script below is what decides, atomically.
            holds = await self._touch(delivery, None) != "lost"
            size = await q.objects.put(key, result, content_type) if holds else 0
            fields = {
                "result_key": key,
                "result_type": content_type,
                "result_bytes": str(size),
                "timings": json.dumps(dict(timings or {})),
            }
            verdict = await self._finish(delivery, RecordState.DONE, fields)
        finally:
            self.running.pop(job_id, None)
        if verdict == [RecordState.DONE.value]:
            await q.forget_objects(job_id, keep_result=True)
            return True
        if holds and (verdict[0] == "gone" or verdict[-1] in ("cancelled", "failed")):
            await q.forget_objects(job_id)
        return False

    async def fail(
        self,
        delivery: Delivery,
        outcome: Outcome,
        detail: str,
        timings: Mapping[str, float] | None = None,
    ) -> bool:
        """End the job failed (or cancelled, for Outcome.CANCELLED); True if this attempt did."""
        state = RecordState.CANCELLED if outcome is Outcome.CANCELLED else RecordState.FAILED
        fields = {"error": error_json(outcome, detail), "timings": json.dumps(dict(timings or {}))}
        try:
            verdict = await self._finish(delivery, state, fields)
        finally:
            self.running.pop(delivery.job_id, None)
        if verdict == [state.value]:
            await self.queue.forget_objects(delivery.job_id)
            return True
        return False

    async def release(self, delivery: Delivery) -> bool:
        """Hand the job back unfinished, for a graceful stop: the other replicas take it once
        this one's heartbeat is gone (stop()), or this one does if it pulls again. A hand-back
        does not count towards the dead letter; a delivery left unacknowledged by a stop does,
        as after a crash."""
        try:
            verdict = await self._finish(delivery, RecordState.QUEUED, {})
        finally:
            self.running.pop(delivery.job_id, None)
        return verdict == ["released"]

    async def _finish(
        self, delivery: Delivery, target: RecordState, fields: Mapping[str, str]
    ) -> list[str]:
        q = self.queue
        keys = [q.keys.stream, q.keys.totals, q.keys.expiry]
        args: list[str | int | float] = [
            q.config.prefix,
            GROUP,
            self.replica_id,
            delivery.job_id,
            delivery.attempt,
            delivery.entry_id,
            target.value,
            q.config.record_ttl_s,
        ]
        for name, value in fields.items():
            args += [name, value]
        async with q.tracker.call("redis", f"finish_{target.value}"):
            reply: list[Any] = await q.scripts.finish(keys=keys, args=args)
        return [str(part) for part in reply]
