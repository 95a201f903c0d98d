"""The shared store's Prometheus metrics: one Collector the lead registers on the app's registry.

Queue figures (depth, lag, pending) come from a snapshot that a replica's housekeeping refreshes
every heartbeat: a scrape never waits on Redis (and so never hangs while Redis is down). Every
replica exports the same snapshot; aggregate them with max(), not sum(). Counters are this
replica's own (claims it made, jobs it dead-lettered); sum() them across replicas.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.store.errors import Bound, StoreName

STORE_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
STORES: tuple[StoreName, ...] = ("redis", "object_store")


@dataclass(frozen=True)
class QueueStats:
    """The shared queue as Redis saw it at one moment."""

    jobs: int
    """Jobs queued or running (what the job bound counts)."""
    bytes: int
    """Their upload bytes (what the byte bound counts)."""
    stream_length: int
    lag: int | None
    """Entries not yet delivered to the group (XINFO GROUPS `lag`; None when Redis cannot tell)."""
    pending: int
    """Entries delivered and not yet acknowledged (running, or held by a dead replica)."""
    consumers: int
    max_jobs: int
    max_bytes: int


class StoreMetrics(Collector):
    """Queue depth, lag, pending entries, claims, dead letters, store latency and errors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency = Histogram(
            "colorize_store_operation_duration_seconds",
            "Time of one call to Redis or the object store, by store and operation.",
            ["store", "op"],
            buckets=STORE_LATENCY_BUCKETS,
            registry=None,
        )
        self._errors: dict[tuple[StoreName, str], int] = {}
        self._claims = 0
        self._dead_letters = 0
        self._refused: dict[Bound, int] = {"jobs": 0, "bytes": 0}
        self._up: dict[StoreName, bool] = {}
        self._stats: QueueStats | None = None

    def observe_call(self, store: StoreName, op: str, seconds: float, ok: bool) -> None:
        """One call to a store: its latency and, if it failed for lack of the store, an error."""
        self._latency.labels(store, op).observe(seconds)
        with self._lock:
            if not ok:
                self._errors[(store, op)] = self._errors.get((store, op), 0) + 1
            self._up[store] = ok

    def observe_claim(self) -> None:
        with self._lock:
            self._claims += 1

    def observe_dead_letter(self) -> None:
        with self._lock:
            self._dead_letters += 1

    def observe_refusal(self, bound: Bound) -> None:
        with self._lock:
            self._refused[bound] += 1

    def observe_queue(self, stats: QueueStats) -> None:
        with self._lock:
            self._stats = stats

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            stats = self._stats
            errors = dict(self._errors)
            up = dict(self._up)
            claims, dead, refused = self._claims, self._dead_letters, dict(self._refused)
        yield from self._latency.collect()
        failures = CounterMetricFamily(
            "colorize_store_errors",
            "Calls to Redis or the object store that failed for lack of the store.",
            labels=["store", "op"],
        )
        for (store, op), count in sorted(errors.items()):
            failures.add_metric([store, op], count)
        yield failures
        reachable = GaugeMetricFamily(
            "colorize_store_up", "1 if the last call to the store succeeded.", labels=["store"]
        )
        for store in STORES:
            if store in up:
                reachable.add_metric([store], 1.0 if up[store] else 0.0)
        yield reachable
        yield CounterMetricFamily(
            "colorize_shared_claims",
            "Entries of a dead replica that this replica claimed.",
            value=claims,
        )
        yield CounterMetricFamily(
            "colorize_shared_dead_letters",
            "Jobs this replica ended failed after too many deliveries.",
            value=dead,
        )
        full = CounterMetricFamily(
            "colorize_shared_queue_full",
            "Submissions refused because the shared queue was at a bound.",
            labels=["bound"],
        )
        for bound, count in sorted(refused.items()):
            full.add_metric([bound], count)
        yield full
        yield from _queue_gauges(stats)


def _queue_gauges(stats: QueueStats | None) -> Iterator[Metric]:
    def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
        family = GaugeMetricFamily(f"colorize_shared_{name}", doc)
        if value is not None:
            family.add_metric([], float(value))
        return family

    def value(name: str) -> float | None:
        found = getattr(stats, name, None) if stats is not None else None
        return float(found) if found is not None else None

    yield gauge("queue_jobs", "Jobs queued or running in the shared queue.", value("jobs"))
    yield gauge("queue_bytes", "Upload bytes of the jobs queued or running.", value("bytes"))
    yield gauge("queue_limit_jobs", "The shared queue's bound in jobs.", value("max_jobs"))
    yield gauge(
        "queue_limit_bytes", "The shared queue's bound in upload bytes.", value("max_bytes")
    )
    yield gauge("stream_entries", "Entries in the job stream (XLEN).", value("stream_length"))
    yield gauge("group_lag", "Entries not yet delivered to any replica.", value("lag"))
    yield gauge("pending_entries", "Entries delivered and not yet acknowledged.", value("pending"))
    yield gauge("consumers", "Consumers known to the group.", value("consumers"))
