"""The shared job store: accepted jobs survive any replica.

Upload and result bytes live in an S3-compatible object store (objects.py); job records live
in Redis with a TTL (records.py); dispatch goes through one Redis stream and one consumer group
(queue.py submits, consumer.py pulls under admission, housekeeping.py claims a dead replica's
work). Every multi-key step is one Lua script (scripts.py, lua/). shared.py builds it all from
the settings; metrics.py exports it to Prometheus; tracking.py turns outages into typed errors
and health.
"""

from service.store.config import StoreConfig
from service.store.consumer import Admit, Consumer, Delivery
from service.store.errors import (
    JobNotFound,
    ObjectNotFound,
    QueueFull,
    StoreError,
    StoreUnavailable,
)
from service.store.keys import Keys
from service.store.metrics import QueueStats, StoreMetrics
from service.store.objects import ObjectReader, ObjectStore, Payload
from service.store.presence import new_replica_id
from service.store.queue import CancelOutcome, JobQueue, NoResult
from service.store.records import (
    JobError,
    JobKind,
    JobRecord,
    Progress,
    RecordState,
    Ticket,
    new_job_id,
)
from service.store.shared import SharedStore
from service.store.tracking import Health, Tracker

__all__ = [
    "Admit",
    "CancelOutcome",
    "Consumer",
    "Delivery",
    "Health",
    "JobError",
    "JobKind",
    "JobNotFound",
    "JobQueue",
    "JobRecord",
    "Keys",
    "NoResult",
    "ObjectNotFound",
    "ObjectReader",
    "ObjectStore",
    "Payload",
    "Progress",
    "QueueFull",
    "QueueStats",
    "RecordState",
    "SharedStore",
    "StoreConfig",
    "StoreError",
    "StoreMetrics",
    "StoreUnavailable",
    "Ticket",
    "Tracker",
    "new_job_id",
    "new_replica_id",
]
