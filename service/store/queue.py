"""The submitting and reading side of the shared store: what `/jobs` does on any replica.

`submit` stores the upload objects first, then the record and the stream entry in one script,
and returns only when both are stored: a 202 is never answered for a job that is not.
"""

from __future__ import annotations

import asyncio
import logging
from enum import Enum
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service.store.config import StoreConfig
from service.store.errors import JobNotFound, ObjectNotFound, QueueFull, StoreError
from service.store.keys import GROUP, Keys
from service.store.metrics import QueueStats, StoreMetrics
from service.store.objects import ObjectReader, ObjectStore, Payload
from service.store.records import JobRecord, RecordState, Ticket
from service.store.scripts import Scripts
from service.store.tracking import Tracker

log = logging.getLogger(__name__)


class CancelOutcome(str, Enum):
    """What a cancel request did."""

    CANCELLED = "cancelled"
    """The job had not started: it ended cancelled."""
    SIGNALLED = "signalled"
    """The job is running: the replica running it was told to stop."""
    FINISHED = "finished"
    """The job had already ended: nothing to cancel."""
    MISSING = "missing"


class NoResult(StoreError):
    """The job exists but has no result to read (not done, or its result expired)."""

    def __init__(self, job_id: str, state: RecordState) -> None:
        super().__init__(f"job {job_id!r} has no result: it is {state.value}")
        self.job_id = job_id
        self.state = state


def payload_size(data: Payload) -> int:
    return len(data) if isinstance(data, bytes) else data.stat().st_size


class JobQueue:
    """Submit, read, cancel and delete jobs in the shared store."""

    def __init__(
        self,
        redis: Redis,
        objects: ObjectStore,
        config: StoreConfig,
        tracker: Tracker,
        scripts: Scripts,
        metrics: StoreMetrics | None = None,
    ) -> None:
        self.redis = redis
        self.objects = objects
        self.config = config
        self.keys = Keys(config.prefix)
        self.tracker = tracker
        self.scripts = scripts
        self.metrics = metrics

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if missing (from the first entry, so
        entries added before any consumer started are delivered too)."""
        async with self.tracker.call("redis", "create_group"):
            try:
                await self.redis.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def submit(
        self, record: JobRecord, image: Payload, reference: Payload | None = None
    ) -> JobRecord:
        """Store the uploads, then the record and its entry; the record as stored.

        Raises QueueFull past either bound, StoreUnavailable if a store failed; in both cases
        nothing of the job is left behind (as far as the stores can still be reached)."""
        if record.state is not RecordState.QUEUED:
            raise ValueError("only a queued record can be submitted")
        size = payload_size(image) + (payload_size(reference) if reference is not None else 0)
        record.upload_bytes = size
        await self._refuse_if_full(size)  # before uploading bytes that could not be queued
        record.image_key = self.keys.image_object(record.id)
        record.reference_key = self.keys.reference_object(record.id) if reference else None
        try:
            await self.objects.put(record.image_key, image)
            if reference is not None and record.reference_key is not None:
                await self.objects.put(record.reference_key, reference)
            reply = await self._submit_script(record)
        except BaseException:  # a store failed, or the client left mid-upload (cancelled)
            await asyncio.shield(self._withdraw(record.id))
            raise
        if reply[0] == "full":  # the bound was reached while the bytes were uploading
            await asyncio.shield(self._withdraw(record.id))
            full = (
                QueueFull("jobs", self.config.max_jobs, int(reply[2]))
                if reply[1] == "jobs"
                else QueueFull("bytes", self.config.max_bytes, int(reply[2]))
            )
            if self.metrics is not None:
                self.metrics.observe_refusal(full.bound)
            raise full
        record.created = float(reply[2])
        return record

    async def _submit_script(self, record: JobRecord) -> list[Any]:
        fields = record.to_fields()
        args: list[str | int | float] = [
            record.upload_bytes,
            self.config.max_jobs,
            self.config.max_bytes,
            self.config.record_ttl_s,
            self.keys.wakeup_channel,
            len(fields),
        ]
        for name, value in fields.items():
            args += [name, value]
        for name, value in Ticket.entry_fields(record).items():
            args += [name, value]
        keys = [self.keys.stream, self.keys.totals, self.keys.job(record.id)]
        async with self.tracker.call("redis", "submit"):
            reply: list[Any] = await self.scripts.submit(keys=keys, args=args)
        return reply

    async def _refuse_if_full(self, size: int) -> None:
        async with self.tracker.call("redis", "totals"):
            counts = await self.redis.hmget(self.keys.totals, ["jobs", "bytes"])
        jobs, held = (int(count or 0) for count in counts)
        error: QueueFull | None = None
        if jobs + 1 > self.config.max_jobs:
            error = QueueFull("jobs", self.config.max_jobs, jobs)
        elif held + size > self.config.max_bytes:
            error = QueueFull("bytes", self.config.max_bytes, held)
        if error is not None:
            if self.metrics is not None:
                self.metrics.observe_refusal(error.bound)
            raise error

    async def _withdraw(self, job_id: str) -> None:
        """Undo a submission that failed part-way: the record (if the script ran after all and
        only its reply was lost), then the objects. Best effort: the stores may be down."""
        try:
            await self._cancel_script(job_id, "delete", "the submission failed")
        except StoreError as exc:
            log.warning("could not withdraw job %s from Redis: %s", job_id, exc)
        await self.forget_objects(job_id)

    async def forget_objects(self, job_id: str, *, keep_result: bool = False) -> None:
        """Delete a job's objects (best effort: the reaper deletes them at expiry anyway)."""
        image, reference, result = self.keys.objects(job_id)
        try:
            await self.objects.delete(
                [image, reference] if keep_result else [image, reference, result]
            )
        except StoreError as exc:
            log.warning("could not delete the objects of job %s: %s", job_id, exc)

    async def get(self, job_id: str) -> JobRecord | None:
        """The job's record, or None if there is no such job (or it was deleted)."""
        async with self.tracker.call("redis", "get"):
            raw = await self.redis.hgetall(self.keys.job(job_id))
        fields = {str(name): str(value) for name, value in raw.items()}
        if not fields or fields.get("deleted") == "1" or "state" not in fields:
            return None
        return JobRecord.from_fields(fields)

    async def _cancel_script(self, job_id: str, mode: str, detail: str) -> list[Any]:
        keys = [self.keys.totals, self.keys.expiry, self.keys.job(job_id)]
        args: list[str | float] = [
            job_id,
            self.config.record_ttl_s,
            self.keys.cancel_channel,
            detail,
            mode,
        ]
        async with self.tracker.call("redis", mode):
            reply: list[Any] = await self.scripts.cancel(keys=keys, args=args)
        return reply

    async def request_cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a queued job at once, or signal the replica running it."""
        reply = await self._cancel_script(job_id, "cancel", "cancelled before it started")
        if reply[0] == "cancelled":
            await self.forget_objects(job_id)
            return CancelOutcome.CANCELLED
        return CancelOutcome(reply[0])

    async def delete(self, job_id: str) -> bool:
        """Delete the job's record and objects (a running job is stopped); False if none."""
        reply = await self._cancel_script(job_id, "delete", "deleted by the client")
        if reply[0] == "missing":
            return False
        await self.forget_objects(job_id)
        return True

    async def open_result(self, job_id: str) -> ObjectReader:
        """Start reading the job's result: size and content type first, then the chunks.

        Raises JobNotFound or NoResult before any byte is promised to the client."""
        record = await self.get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        if record.state is not RecordState.DONE or record.result_key is None:
            raise NoResult(job_id, record.state)
        try:
            return await self.objects.open(record.result_key)
        except ObjectNotFound:
            raise NoResult(job_id, record.state) from None

    async def stats(self) -> QueueStats:
        """The shared queue's depth, lag and pending entries, as Redis sees them now."""
        async with (
            self.tracker.call("redis", "stats"),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            pipe.hmget(self.keys.totals, ["jobs", "bytes"])
            pipe.xlen(self.keys.stream)
            pipe.xinfo_groups(self.keys.stream)
            (jobs, held), length, groups = await pipe.execute()
        group: dict[str, Any] = next((g for g in groups if g.get("name") == GROUP), {})
        lag = group.get("lag")
        return QueueStats(
            jobs=int(jobs or 0),
            bytes=int(held or 0),
            stream_length=int(length),
            lag=int(lag) if lag is not None else None,
            pending=int(group.get("pending") or 0),
            consumers=int(group.get("consumers") or 0),
            max_jobs=self.config.max_jobs,
            max_bytes=self.config.max_bytes,
        )

    def __repr__(self) -> str:
        return f"JobQueue({self.tracker.describe['redis']}, prefix={self.config.prefix!r})"
