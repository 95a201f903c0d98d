"""Where everything lives: the Redis key layout and the object keys, under one prefix.

Redis (prefix `p`):
    p:job:{id}          hash   the job's record (JobRecord), with a TTL
    p:jobs              stream one entry per job (its ticket); consumer group `workers`
    p:replica:{replica} string a replica's heartbeat, expiring after the claim time
    p:totals            hash   jobs and upload bytes queued or running (the queue's bounds)
    p:expiry            zset   finished job ids by the time their record and objects expire
    p:cancel            pub/sub channel: a job id whose running attempt should stop
    p:wakeup            pub/sub channel: an entry was added (idle consumers read at once)

Object store (same prefix): p/jobs/{id}/image, p/jobs/{id}/reference, p/jobs/{id}/result.

The scripts compute job and heartbeat keys from the prefix, so one deployment's keys must live
on one Redis node (a standalone Redis or a primary with replicas, not a cluster).
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "workers"
"""The one consumer group every replica reads the stream through."""


@dataclass(frozen=True)
class Keys:
    """Names of one deployment's Redis keys and objects."""

    prefix: str

    @property
    def stream(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def totals(self) -> str:
        return f"{self.prefix}:totals"

    @property
    def expiry(self) -> str:
        return f"{self.prefix}:expiry"

    @property
    def cancel_channel(self) -> str:
        return f"{self.prefix}:cancel"

    @property
    def wakeup_channel(self) -> str:
        return f"{self.prefix}:wakeup"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def replica(self, replica_id: str) -> str:
        return f"{self.prefix}:replica:{replica_id}"

    def image_object(self, job_id: str) -> str:
        return f"{self.prefix}/jobs/{job_id}/image"

    def reference_object(self, job_id: str) -> str:
        return f"{self.prefix}/jobs/{job_id}/reference"

    def result_object(self, job_id: str) -> str:
        """The result's key is a function of the job id alone: a retried attempt overwrites the
        object instead of adding a second one."""
        return f"{self.prefix}/jobs/{job_id}/result"

    def objects(self, job_id: str) -> tuple[str, str, str]:
        """Every object a job may have."""
        return (
            self.image_object(job_id),
            self.reference_object(job_id),
            self.result_object(job_id),
        )
