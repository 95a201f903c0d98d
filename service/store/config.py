"""What the shared job store needs from the settings, in one frozen object the tests can build."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pydantic import SecretStr

from service.settings import Settings


@dataclass(frozen=True)
class StoreConfig:
    """Connection settings, bounds and timings of the shared job store."""

    redis_url: SecretStr = field(repr=False)
    """Redis URL (its password, if any, never leaves this field in clear)."""
    object_store_url: str
    bucket: str
    prefix: str = "colorize"
    create_bucket: bool = True
    region: str | None = None
    """AWS region; None: AWS_REGION, then boto3's own lookup (AWS_DEFAULT_REGION, config)."""
    max_jobs: int = 1000
    max_bytes: int = 4 * 1024**3
    heartbeat_s: float = 5.0
    claim_after_s: float = 20.0
    max_deliveries: int = 3
    record_ttl_s: float = 3600.0
    timeout_s: float = 3.0
    chunk_bytes: int = 1024 * 1024
    """Size of the chunks a result is streamed back in."""
    multipart_bytes: int = 16 * 1024 * 1024
    """Files and byte strings at least this large are uploaded in parts of this size."""

    def __post_init__(self) -> None:
        if self.claim_after_s < 2 * self.heartbeat_s:
            raise ValueError("claim_after_s must be at least twice heartbeat_s")

    @classmethod
    def from_settings(cls, settings: Settings) -> StoreConfig:
        """The shared store's part of `settings` (which must select the shared store)."""
        if (
            settings.redis_url is None
            or settings.object_store_url is None
            or settings.object_store_bucket is None
        ):
            raise ValueError("the settings do not select the shared job store")
        return cls(
            redis_url=settings.redis_url,
            object_store_url=settings.object_store_url,
            bucket=settings.object_store_bucket,
            prefix=settings.shared_prefix,
            create_bucket=settings.object_store_create_bucket,
            region=os.environ.get("AWS_REGION") or None,
            max_jobs=settings.shared_queue_jobs,
            max_bytes=settings.shared_queue_bytes,
            heartbeat_s=settings.shared_heartbeat_s,
            claim_after_s=settings.shared_claim_after_s,
            max_deliveries=settings.shared_max_deliveries,
            record_ttl_s=settings.shared_record_ttl_s,
            timeout_s=settings.shared_timeout_s,
        )
