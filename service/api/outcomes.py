"""The one table that turns an outcome into what the client is told: status, error code, wait.

Every error the API answers goes through it (service/api/errors.py), so a status, its error code
and the outcome counted in `colorize_jobs_total` can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from service.outcomes import Outcome


@dataclass(frozen=True)
class Answer:
    """How the API answers an outcome."""

    status: int
    error: str
    retry_after: int | None = None
    """Default Retry-After seconds where the cause passes by itself (a failure may name its
    own); None where waiting cannot help, so a client that obeys Retry-After never loops."""


ANSWERS: Mapping[Outcome, Answer] = MappingProxyType(
    {
        Outcome.DONE: Answer(200, "done"),
        Outcome.CANCELLED: Answer(409, "cancelled"),
        Outcome.TIMEOUT: Answer(504, "timeout"),
        Outcome.OOM: Answer(507, "out_of_memory"),
        Outcome.ERROR: Answer(500, "engine_error"),
        Outcome.ENCODE_FAILED: Answer(500, "encode_failed"),
        Outcome.INVALID_REQUEST: Answer(422, "invalid_request"),
        Outcome.GRAYSCALE_REFERENCE: Answer(422, "grayscale_reference"),
        Outcome.INVALID_IMAGE: Answer(422, "undecodable_image"),
        Outcome.UNSUPPORTED_FORMAT: Answer(415, "unsupported_format"),
        Outcome.IMAGE_TOO_LARGE: Answer(413, "image_too_large"),
        Outcome.INVALID_VIDEO: Answer(422, "undecodable_video"),
        Outcome.VIDEO_TOO_LARGE: Answer(413, "video_too_large"),
        Outcome.VIDEO_ON_IMAGE_PATH: Answer(415, "video_goes_to_jobs"),
        Outcome.TOO_LARGE: Answer(413, "too_large_for_memory"),
        Outcome.MEMORY_BUSY: Answer(503, "memory_busy", 2),
        # Weights do not appear by waiting: no Retry-After unless a download is under way
        # (the failure then names its own wait).
        Outcome.NOT_READY: Answer(503, "model_not_ready"),
        Outcome.QUEUE_FULL: Answer(503, "queue_full", 1),
        Outcome.SHUTDOWN: Answer(503, "shutting_down", 5),
        Outcome.WORKER_DEAD: Answer(503, "worker_dead", 5),
        Outcome.UNKNOWN_MODEL: Answer(422, "unknown_model"),
        Outcome.BAD_REQUEST: Answer(400, "bad_request"),
        Outcome.BAD_FIELD: Answer(400, "bad_field"),
        Outcome.BAD_HINTS: Answer(400, "bad_hints"),
        Outcome.MISSING_FIELD: Answer(422, "missing_field"),
        Outcome.UNSUPPORTED_MEDIA_TYPE: Answer(415, "unsupported_media_type"),
        Outcome.UNAUTHORIZED: Answer(401, "unauthorized"),
        Outcome.BODY_TOO_LARGE: Answer(413, "body_too_large"),
        Outcome.BODY_TIMEOUT: Answer(408, "body_timeout"),
        Outcome.STORE_UNAVAILABLE: Answer(503, "job_store_unavailable", 5),
        # Kept results expire (COLORIZE_RESULT_TTL_S) and free the spool: waiting helps.
        Outcome.DISK_FULL: Answer(503, "disk_full", 30),
    }
)
"""Every outcome's answer (a test checks that none is missing)."""


def answer(outcome: Outcome) -> Answer:
    return ANSWERS[outcome]


HTTP_ERRORS: Mapping[int, str] = MappingProxyType(
    {
        400: "bad_request",
        401: "unauthorized",
        404: "not_found",
        405: "method_not_allowed",
        409: "conflict",
        413: "too_large",
        415: "unsupported_media_type",
        422: "unprocessable",
        503: "unavailable",
    }
)
"""Codes of the answers no outcome stands behind (a path or method that does not exist)."""
