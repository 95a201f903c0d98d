"""A job as the shared store keeps it: the record (a Redis hash) and the ticket (a stream entry).

The record holds everything any replica needs to answer `GET /jobs/{id}`; the bytes (upload and
result) live in the object store under keys the record names. The ticket is the small part of a
record that the stream carries, so a replica can decide whether its budgets admit the job
before it takes it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeAlias

from service.outcomes import JobState, Outcome

JSON: TypeAlias = "str | int | float | bool | list[JSON] | dict[str, JSON] | None"


def new_job_id() -> str:
    """An unguessable id (144 random bits), as the in-process store makes them."""
    return secrets.token_urlsafe(18)


class JobKind(str, Enum):
    IMAGE = "image"
    VIDEO = "video"


RecordState = JobState
"""A record's state is a job's state (service/outcomes.py, which imports nothing heavy)."""


@dataclass(frozen=True)
class JobError:
    """Why a job did not produce a result: the outcome (as the API maps it) and a detail."""

    outcome: Outcome
    detail: str


@dataclass(frozen=True)
class Progress:
    """How far a video job is: frames done of total, frames per second, seconds left."""

    done: int
    total: int | None = None
    fps: float | None = None
    eta_s: float | None = None


@dataclass
class JobRecord:
    """One job's record; the Redis hash `{prefix}:job:{id}` holds these fields as strings."""

    kind: JobKind
    model: str
    id: str = field(default_factory=new_job_id)
    state: RecordState = RecordState.QUEUED
    options: dict[str, JSON] = field(default_factory=dict)
    """What the engine needs besides the image: format, quality, render_size, hints, stabilize..."""
    image_key: str = ""
    reference_key: str | None = None
    upload_bytes: int = 0
    """Bytes of the image and the reference as uploaded (counted against the queue's bound)."""
    width: int = 0
    height: int = 0
    estimate_bytes: int = 0
    """Device bytes the compute stage reserves for the job (the admission estimate)."""
    host_bytes: int = 0
    """Host bytes decoding the upload may take at its peak."""
    result_key: str | None = None
    result_type: str | None = None
    """The result's content type (image/png, video/mp4...)."""
    result_bytes: int = 0
    created: float | None = None
    """Wall-clock times from Redis's clock (seconds since the epoch), one clock for all replicas."""
    started: float | None = None
    finished: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    error: JobError | None = None
    deliveries: int = 0
    """How many times a replica started the job (a claim after a replica died adds one)."""
    owner: str | None = None
    """The replica running the job (while it runs)."""
    progress: Progress | None = None
    cancel_requested: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def to_fields(self) -> dict[str, str]:
        """The hash fields a submission writes (the scripts own state, times and ownership)."""
        fields = {
            "id": self.id,
            "kind": self.kind.value,
            "model": self.model,
            "options": json.dumps(self.options, separators=(",", ":")),
            "image_key": self.image_key,
            "upload_bytes": str(self.upload_bytes),
            "width": str(self.width),
            "height": str(self.height),
            "estimate_bytes": str(self.estimate_bytes),
            "host_bytes": str(self.host_bytes),
            "deliveries": "0",
            "cancel_requested": "0",
        }
        if self.reference_key is not None:
            fields["reference_key"] = self.reference_key
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> JobRecord:
        """A record from its hash (fields the scripts keep for themselves are ignored)."""

        def num(name: str) -> float | None:
            value = fields.get(name)
            return float(value) if value else None

        error = json.loads(fields["error"]) if fields.get("error") else None
        progress = json.loads(fields["progress"]) if fields.get("progress") else None
        return cls(
            id=fields["id"],
            kind=JobKind(fields["kind"]),
            model=fields["model"],
            state=RecordState(fields["state"]),
            options=json.loads(fields.get("options") or "{}"),
            image_key=fields.get("image_key", ""),
            reference_key=fields.get("reference_key") or None,
            upload_bytes=int(fields.get("upload_bytes") or 0),
            width=int(fields.get("width") or 0),
            height=int(fields.get("height") or 0),
            estimate_bytes=int(fields.get("estimate_bytes") or 0),
            host_bytes=int(fields.get("host_bytes") or 0),
            result_key=fields.get("result_key") or None,
            result_type=fields.get("result_type") or None,
            result_bytes=int(fields.get("result_bytes") or 0),
            created=num("created"),
            started=num("started"),
            finished=num("finished"),
            timings=json.loads(fields.get("timings") or "{}"),
            error=JobError(Outcome(error["outcome"]), str(error["detail"])) if error else None,
            deliveries=int(fields.get("deliveries") or 0),
            owner=fields.get("owner") or None,
            progress=Progress(**progress) if progress else None,
            cancel_requested=fields.get("cancel_requested") == "1",
        )


def error_json(outcome: Outcome, detail: str) -> str:
    """The `error` field of a record."""
    return json.dumps({"outcome": outcome.value, "detail": detail}, separators=(",", ":"))


def progress_json(progress: Progress) -> str:
    """The `progress` field of a record."""
    return json.dumps(
        {
            "done": progress.done,
            "total": progress.total,
            "fps": progress.fps,
            "eta_s": progress.eta_s,
        },
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class Ticket:
    """What a stream entry says about its job: enough for a replica's admission to decide."""

    entry_id: str
    job_id: str
    kind: JobKind
    model: str
    upload_bytes: int
    pixels: int
    estimate_bytes: int
    host_bytes: int

    @staticmethod
    def entry_fields(record: JobRecord) -> dict[str, str]:
        """The stream entry of `record`."""
        return {
            "id": record.id,
            "kind": record.kind.value,
            "model": record.model,
            "bytes": str(record.upload_bytes),
            "pixels": str(record.pixels),
            "estimate": str(record.estimate_bytes),
            "host": str(record.host_bytes),
        }

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict[str, str]) -> Ticket:
        return cls(
            entry_id=entry_id,
            job_id=fields["id"],
            kind=JobKind(fields.get("kind", "image")),
            model=fields.get("model", ""),
            upload_bytes=int(fields.get("bytes") or 0),
            pixels=int(fields.get("pixels") or 0),
            estimate_bytes=int(fields.get("estimate") or 0),
            host_bytes=int(fields.get("host") or 0),
        )
