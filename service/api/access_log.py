"""The access log without secrets: an API key sent in the query string and job ids (the only
protection of a result when no key is set) never reach the log verbatim."""

from __future__ import annotations

import logging
import re

SECRET_PARAMS = re.compile(
    r"((?:^|[?&])(?:api[_-]?key|key|token|access[_-]?token|auth|password)=)[^&#]*", re.I
)
JOB_ID = re.compile(r"(/jobs/)([A-Za-z0-9_-]{4})[A-Za-z0-9_-]*")


def redact(path: str) -> str:
    """`path` (with its query) with secret query values and all but 4 characters of a job id
    replaced."""
    return JOB_ID.sub(r"\1\2…", SECRET_PARAMS.sub(r"\1[redacted]", path))


class RedactingFilter(logging.Filter):
    """Rewrites uvicorn's access-log records: (client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact(args[2]), *args[3:])
        return True


def install() -> None:
    """Redact uvicorn's access log (idempotent)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
