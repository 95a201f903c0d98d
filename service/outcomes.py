"""What happened to a job or an upload, in the service's own words; only the API turns these
into statuses (service/api/outcomes.py), and the same words label `colorize_jobs_total`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(str, Enum):
    """How a job (or a submission) ended; the value labels `colorize_jobs_total{outcome}`."""

    DONE = "done"
    CANCELLED = "cancelled"
    """The client left (at any stage, sending included), or deleted the queued job."""
    TIMEOUT = "timeout"
    """Queue wait plus compute passed COLORIZE_JOB_TIMEOUT_S."""
    OOM = "oom"
    """Out of memory after the recovery attempt (or while encoding)."""
    ERROR = "error"
    """The engine failed for a reason of ours (a bug)."""
    ENCODE_FAILED = "encode_failed"
    """The encoder failed (not for lack of memory)."""
    INVALID_REQUEST = "invalid_request"
    """The request is wrong for the engine (missing reference, hint outside the image...)."""
    GRAYSCALE_REFERENCE = "grayscale_reference"
    INVALID_IMAGE = "invalid_image"
    """An allowed format that cannot be decoded: empty, truncated, corrupt."""
    UNSUPPORTED_FORMAT = "unsupported_format"
    IMAGE_TOO_LARGE = "image_too_large"
    """Over COLORIZE_MAX_PIXELS."""
    INVALID_VIDEO = "invalid_video"
    """An accepted video container that cannot be decoded (empty, truncated, corrupt, no video
    stream), or a still or animated image sent as a video."""
    VIDEO_TOO_LARGE = "video_too_large"
    """Over a COLORIZE_VIDEO_* limit: resolution, duration, frame count, pixel rate, streams or
    the per-job disk space; the detail names the limit."""
    VIDEO_ON_IMAGE_PATH = "video_on_image_path"
    """A video sent where a photo is expected (/colorize, or the `image` field): videos are
    asynchronous jobs, posted to /jobs as the `video` field or a raw video/* body."""
    TOO_LARGE = "too_large"
    """Can never fit the memory budget, however long it waits."""
    MEMORY_BUSY = "memory_busy"
    """Memory could not be reserved in time: try again later."""
    NOT_READY = "not_ready"
    """The engine's weights are not loaded."""
    QUEUE_FULL = "queue_full"
    SHUTDOWN = "shutdown"
    WORKER_DEAD = "worker_dead"
    UNKNOWN_MODEL = "unknown_model"
    """The request names an engine that does not exist."""
    BAD_REQUEST = "bad_request"
    """The body cannot be parsed (broken multipart, a truncated form)."""
    BAD_FIELD = "bad_field"
    """A field or parameter is present but malformed (quality out of range, given twice...)."""
    BAD_HINTS = "bad_hints"
    MISSING_FIELD = "missing_field"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    """Neither a form nor a raw image body."""
    UNAUTHORIZED = "unauthorized"
    BODY_TOO_LARGE = "body_too_large"
    """The request body is over COLORIZE_MAX_UPLOAD_BYTES."""
    BODY_TIMEOUT = "body_timeout"
    """The body stalled, or arrived slower than COLORIZE_BODY_MIN_RATE_BYTES_S."""
    DISK_FULL = "disk_full"
    """The disk a video is spooled to (or its result written to) is full: retention frees it."""
    STORE_UNAVAILABLE = "store_unavailable"
    """The shared job store (Redis or the object store) cannot be reached: nothing was stored."""


class JobState(str, Enum):
    """Where a job is in its life (in this process or in the shared store's records)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Failure:
    """Why a job did not produce an image: the outcome and a detail for the client."""

    outcome: Outcome
    detail: str
    retry_after: int | None = None
    """Seconds after which trying again may succeed, where the cause is passing."""
