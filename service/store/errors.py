"""What can go wrong in the shared job store, as typed errors whose text is safe to show.

Every message names the store (Redis at host:port, the bucket at its endpoint) and never a
credential: the API puts these details in 503 bodies and the logs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

StoreName = Literal["redis", "object_store"]
Bound = Literal["jobs", "bytes"]


class StoreError(Exception):
    """Base of the shared store's errors."""


class StoreUnavailable(StoreError):
    """Redis or the object store cannot be reached or refused the call (an outage, not a bug)."""

    def __init__(self, store: StoreName, detail: str, code: str | None = None) -> None:
        super().__init__(detail)
        self.store: StoreName = store
        self.detail = detail
        self.code = code
        """The store's own error code where it gave one (an S3 code such as AccessDenied)."""


class ObjectNotFound(StoreError):
    """The object store has no object under that key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object {key!r} in the object store")
        self.key = key


class JobNotFound(StoreError):
    """No record for that job id (never submitted, deleted, or expired)."""

    def __init__(self, job_id: str, detail: str | None = None) -> None:
        super().__init__(detail or f"no job {job_id!r}")
        self.job_id = job_id


class QueueFull(StoreError):
    """The shared queue is at its bound in jobs or in upload bytes: try again later."""

    def __init__(self, bound: Bound, limit: int, current: int) -> None:
        unit = "jobs" if bound == "jobs" else "upload bytes"
        super().__init__(
            f"the shared queue is full: {current} {unit} queued or running, the limit is {limit} "
            f"(COLORIZE_SHARED_QUEUE_{bound.upper()})"
        )
        self.bound: Bound = bound
        self.limit = limit
        self.current = current


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every non-empty secret replaced, for details from third-party errors."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text
