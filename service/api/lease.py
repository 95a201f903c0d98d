"""What one request owns, as an object: the host memory its body holds, the result it is sending,
and the outcome it answers. Released on every path when the request ends (RequestLeases, in
service/api/middleware/leases.py), so nothing a client holds can outlive its request."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection
from starlette.types import Scope

from service.memory import Reservation
from service.outcomes import Outcome
from service.worker.jobs import Job
from service.worker.stats import NO_MODEL

UPLOAD_PATHS = ("/colorize", "/jobs")
"""POST to these is an upload: every answer to one is counted in `colorize_jobs_total`."""

_SCOPE_KEY = "colorize.lease"


@dataclass
class RequestLease:
    """A request's holdings and its answer; one per HTTP request."""

    upload: bool
    """An upload: its outcome is counted (once) when the request ends."""
    client: str
    """The peer address (the per-client share of body memory is kept by it)."""
    count: Callable[[str, Outcome], None] = lambda model, outcome: None
    """Counts the upload's answer: `colorize_jobs_total{model, outcome}`."""
    count_video: Callable[[str, Outcome], None] = lambda model, outcome: None
    """Counts a video upload's answer: `colorize_video_jobs_total{model, outcome}`."""
    video: bool = False
    """The upload is a video (a video/* body, or a multipart `video` part was seen)."""
    model: str = NO_MODEL
    """The engine named, once it is known to exist (client text never becomes a label)."""
    body: Reservation | None = None
    """Host memory holding the body's bytes as they arrived, until a job takes it over."""
    body_complete: bool = False
    outcome: Outcome | None = None
    """What the client is being told; None while undecided."""
    handed_over: bool = False
    """The answer is a 202: the job counts its own outcome when it ends."""
    job: Job | None = None
    """The /colorize job whose result this request waits for or sends."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take_body(self) -> Reservation | None:
        """The body's reservation, now the caller's to keep (None if there is none)."""
        with self._lock:
            held, self.body = self.body, None
            return held

    def release_body(self) -> None:
        held = self.take_body()
        if held is not None:
            held.release()

    def end(self, sent: bool) -> None:
        """The request is over (`sent`: its answer's last byte was handed to the server).

        Gives back the body's memory and the result's, and counts the answer once: a client
        that left before its answer was complete counts as cancelled, whatever stage its job
        was in (a 504 it was already told stays a timeout).
        """
        self.release_body()
        job = self.job
        outcome = self.outcome
        if not sent and outcome is not Outcome.TIMEOUT:
            outcome = Outcome.CANCELLED
        if job is not None:
            # A job still running stops at its next stage; a finished one drops its result.
            told = Outcome.TIMEOUT if outcome is Outcome.TIMEOUT else Outcome.CANCELLED
            job.abandon(told)
        if self.upload and not self.handed_over:
            count = self.count_video if self.video else self.count
            count(self.model, outcome or Outcome.CANCELLED)


def lease_of(connection: HTTPConnection | Scope) -> RequestLease | None:
    """The lease of this request (None outside the middleware, e.g. in unit tests)."""
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    lease: RequestLease | None = scope.get(_SCOPE_KEY)
    return lease


def attach(scope: Scope, lease: RequestLease) -> None:
    scope[_SCOPE_KEY] = lease
