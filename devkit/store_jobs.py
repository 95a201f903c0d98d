"""Jobs for the shared store as the API would submit them, and what tests and benchmarks ask of a
store besides its own interface (an admission policy that takes everything, the objects a job
left in the bucket)."""

from __future__ import annotations

import asyncio

from service.store import JobKind, JobRecord, SharedStore, Ticket


def image_record(model: str = "eccv16", **fields: object) -> JobRecord:
    """A queued 64x48 image job; `fields` override the record's attributes."""
    record = JobRecord(kind=JobKind.IMAGE, model=model, width=64, height=48, estimate_bytes=1 << 20)
    record.options = {"format": "png", "quality": None, "render_size": None, "hints": []}
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def admit_all(ticket: Ticket) -> bool:
    """An admission policy for a replica with room for anything."""
    return True


async def object_keys(store: SharedStore, job_id: str) -> list[str]:
    """The keys of the job's objects that exist in the bucket."""
    client = store.objects._client
    prefix = f"{store.config.prefix}/jobs/{job_id}/"
    response = await asyncio.to_thread(
        client.list_objects_v2, Bucket=store.config.bucket, Prefix=prefix
    )
    return sorted(str(o["Key"]) for o in response.get("Contents", []))
