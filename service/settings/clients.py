"""What a client may hold: request bodies, request heads and connections (issue: clients that
hold, leave or lie cannot take the memory budget or the process hostage)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class ClientSettings(BaseSettings):
    """Bounds on what one request, one client and all connections together may hold."""

    body_idle_timeout_s: float = Field(default=10.0, gt=0.0)
    """A request body with no bytes for this long is answered 408 and its memory returned."""
    body_min_rate_bytes_s: int = Field(default=16 * 1024, ge=0)
    """Slowest average rate a body may arrive at, once its grace period is over (408 below)."""
    body_rate_grace_s: float = Field(default=5.0, ge=0.0)
    """How long a body may arrive slower than the minimum rate (a slow start, a short stall)."""
    body_memory_share: float = Field(default=0.5, gt=0.0, le=1.0)
    """Share of the host budget that request bodies in flight may hold together; the rest
    stays for the jobs whatever clients send."""
    body_memory_floor: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Share of the host budget that jobs leave free for request bodies, so an upload finds
    room however busy the jobs are (a /jobs upload during a flood of large /colorize jobs)."""
    client_body_share: float = Field(default=0.25, gt=0.0, le=1.0)
    """Share of the host budget that the bodies in flight of one client address may hold."""
    header_timeout_s: float = Field(default=10.0, gt=0.0)
    """The request line and headers must arrive within this long (408 and close, otherwise)."""
    keepalive_timeout_s: float = Field(default=5.0, gt=0.0)
    """An idle keep-alive connection is closed after this long."""
    max_connections: int = Field(default=1000, ge=16)
    """Open connections at most; past it, a new one evicts the oldest connection still
    waiting for its request head, or is refused with 503 at once. Must stay under the
    process's file-descriptor limit (checked at start)."""
    max_requests_per_connection: int = Field(default=1000, ge=1)
    """Requests served on one keep-alive connection before it is closed."""
