"""The shared job store: Redis for records and dispatch, an S3-compatible store for bytes."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings
from typing_extensions import Self

REDIS_URL_SCHEMES = ("redis", "rediss")
OBJECT_STORE_URL_SCHEMES = ("http", "https")
SHARED_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A key namespace: safe in Redis keys and S3 object keys alike."""
# S3's bucket naming rules (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class SharedStoreSettings(BaseSettings):
    """Selected by COLORIZE_REDIS_URL; unset, /jobs lives in the process."""

    redis_url: SecretStr | None = None
    """Redis of the shared job store (redis:// or rediss://, AUTH in the URL); unset: in-process."""
    object_store_url: str | None = None
    """S3-compatible endpoint (http or https) for uploads and results; needs COLORIZE_REDIS_URL."""
    object_store_bucket: str | None = None
    """Bucket holding uploads and results; required with COLORIZE_REDIS_URL."""
    object_store_create_bucket: bool = True
    """Create the bucket at start-up if it is missing (and the credentials allow it)."""
    shared_prefix: str = "colorize"
    """Namespace of every Redis key and object key (one Redis and bucket, several deployments)."""
    shared_queue_jobs: int = Field(default=1000, ge=1)
    """Jobs queued or running in the shared queue; one more gets 503 with Retry-After."""
    shared_queue_bytes: int = Field(default=4 * 1024**3, ge=1024)
    """Upload bytes of the jobs queued or running in the shared queue; past it, 503."""
    shared_heartbeat_s: float = Field(default=5.0, gt=0.0)
    """How often a replica refreshes its heartbeat key and looks for a dead replica's work."""
    shared_claim_after_s: float = Field(default=20.0, gt=0.0)
    """A replica silent this long is dead: its jobs are claimed (within this plus one heartbeat)."""
    shared_max_deliveries: int = Field(default=3, ge=1)
    """Deliveries of one job before it ends failed (dead letter) instead of being retried."""
    shared_record_ttl_s: float = Field(default=3600.0, gt=0.0)
    """How long a finished job's record and result are kept (and an idle queued one's record)."""
    shared_timeout_s: float = Field(default=3.0, gt=0.0)
    """Network timeout of one Redis or object store call, so an outage answers in seconds."""

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_url_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("object_store_url", "object_store_bucket", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_redis(cls, value: SecretStr | None) -> SecretStr | None:
        # The messages never quote the value: it may carry the password.
        if value is None:
            return None
        url = urlsplit(value.get_secret_value())
        if url.scheme not in REDIS_URL_SCHEMES or not url.hostname:
            raise ValueError("expected redis://[:password@]host[:port][/db] or rediss://...")
        return value

    @field_validator("object_store_url")
    @classmethod
    def _object_store_url_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = urlsplit(value.strip())
        if url.scheme not in OBJECT_STORE_URL_SCHEMES or not url.hostname:
            raise ValueError("expected an http:// or https:// endpoint")
        if url.username is not None or url.password is not None:
            raise ValueError(
                "credentials do not belong in the URL: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            )
        return value.strip().rstrip("/")

    @field_validator("object_store_bucket")
    @classmethod
    def _bucket_is_valid(cls, value: str | None) -> str | None:
        if value is not None and not BUCKET_PATTERN.fullmatch(value.strip()):
            raise ValueError("expected an S3 bucket name: 3-63 lowercase letters, digits, '.', '-'")
        return value.strip() if value is not None else None

    @field_validator("shared_prefix")
    @classmethod
    def _prefix_is_safe(cls, value: str) -> str:
        if not SHARED_PREFIX_PATTERN.fullmatch(value):
            raise ValueError("expected 1-64 letters, digits, '_', '.', '-' (starting alphanumeric)")
        return value

    @model_validator(mode="after")
    def _shared_store_is_complete(self) -> Self:
        # Shared mode needs all three; half a configuration would start a replica whose /jobs
        # silently stays in-process while its peers share theirs.
        given = {
            "COLORIZE_REDIS_URL": self.redis_url is not None,
            "COLORIZE_OBJECT_STORE_URL": self.object_store_url is not None,
            "COLORIZE_OBJECT_STORE_BUCKET": self.object_store_bucket is not None,
        }
        if any(given.values()) and not all(given.values()):
            missing = [name for name, present in given.items() if not present]
            have = [name for name, present in given.items() if present]
            raise ValueError(
                f"{', '.join(have)} set but {', '.join(missing)} missing: the shared job store "
                "needs all of COLORIZE_REDIS_URL, COLORIZE_OBJECT_STORE_URL and "
                "COLORIZE_OBJECT_STORE_BUCKET"
            )
        # A live replica refreshes its heartbeat key every heartbeat; the key must outlive a
        # couple of refreshes, or a busy but healthy replica would have its jobs claimed.
        if self.shared_claim_after_s < 2 * self.shared_heartbeat_s:
            raise ValueError(
                f"COLORIZE_SHARED_CLAIM_AFTER_S ({self.shared_claim_after_s:g}) must be at least "
                f"twice COLORIZE_SHARED_HEARTBEAT_S ({self.shared_heartbeat_s:g})"
            )
        return self

    @property
    def shared_store(self) -> bool:
        """Whether /jobs uses the shared job store (Redis and an object store)."""
        return self.redis_url is not None
