"""The one table that turns an outcome into what the client is told: status, error code, wait."""

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
    """Default Retry-After seconds where the cause is passing (a failure may name its own)."""


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
        Outcome.TOO_LARGE: Answer(413, "too_large_for_memory"),
        Outcome.MEMORY_BUSY: Answer(503, "memory_busy", 2),
        Outcome.NOT_READY: Answer(503, "model_not_ready", 30),
        Outcome.QUEUE_FULL: Answer(503, "queue_full", 1),
        Outcome.SHUTDOWN: Answer(503, "shutting_down", 5),
        Outcome.WORKER_DEAD: Answer(503, "worker_dead", 5),
    }
)
"""Every outcome's answer (a test checks that none is missing)."""


def answer(outcome: Outcome) -> Answer:
    return ANSWERS[outcome]
