"""Prometheus metrics: live memory gauges read at scrape time, counters, latency histograms."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from service.engines.base import Engine
from service.memory import MemoryManager
from service.worker.jobs import Job, JobState

if TYPE_CHECKING:
    from service.jobs.video_executor import VideoExecutor
    from service.worker.worker import Worker

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)
HELD_PURPOSES = ("body", "upload", "pixels", "finish", "compute", "result")
FPS_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 24.0, 30.0, 60.0, 120.0, 240.0)


class _LiveCollector(Collector):
    """Reads the MemoryManager, the worker and the engines each time Prometheus scrapes."""

    def __init__(
        self,
        manager: MemoryManager,
        worker: Worker,
        engines: Mapping[str, Engine],
        host: MemoryManager | None = None,
        videos: VideoExecutor | None = None,
    ):
        self.manager = manager
        self.worker = worker
        self.engines = engines
        self.host = host if host is not None else manager
        self.videos = videos

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snap = self.manager.snapshot()
        dev = [snap.device]

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            g = GaugeMetricFamily(f"colorize_{name}", doc, labels=["device"])
            if value is not None:
                g.add_metric(dev, float(value))
            return g

        yield gauge(
            "memory_usage_ratio", "Device memory in use / capacity (0..1).", snap.usage_ratio
        )
        yield gauge(
            "memory_threshold_ratio",
            "Usage above which GC runs after a job.",
            self.manager.memory_threshold,
        )
        yield gauge("device_memory_used_bytes", "Device memory in use, all processes.", snap.used)
        yield gauge("device_memory_total_bytes", "Device memory capacity.", snap.total)
        yield gauge(
            "allocator_allocated_bytes", "PyTorch allocator: bytes of live tensors.", snap.allocated
        )
        yield gauge(
            "allocator_reserved_bytes",
            "PyTorch allocator: bytes held (live + cached).",
            snap.reserved,
        )
        yield gauge(
            "allocator_peak_bytes",
            "PyTorch allocator: peak live bytes since the last job.",
            snap.peak_allocated,
        )
        yield gauge("admission_limit_bytes", "threshold x capacity.", snap.limit)
        yield gauge(
            "admission_budget_bytes", "Largest job that could ever be admitted.", snap.job_budget
        )
        yield gauge("admission_available_bytes", "What a job could reserve now.", snap.available)
        yield gauge(
            "admission_reserved_bytes",
            "Bytes held by running jobs' reservations.",
            snap.reserved_for_jobs,
        )

        yield from self._host()
        yield from self._stages()
        yield from self._videos()

        plain = [
            ("queue_depth", "Jobs waiting for the worker.", self.worker.queue_depth),
            ("queue_capacity", "Queue size limit.", self.worker.settings.queue_size),
            ("jobs_running", "Jobs on the device now.", self.worker.jobs_running),
            ("worker_alive", "1 while the worker thread runs.", int(self.worker.alive)),
            ("draining", "1 while the service is shutting down.", int(bool(self.worker.draining))),
        ]
        for name, doc, value in plain:
            g = GaugeMetricFamily(f"colorize_{name}", doc)
            g.add_metric([], float(value))
            yield g

        ready = GaugeMetricFamily(
            "colorize_engine_ready", "1 when the engine can serve.", labels=["model"]
        )
        for name, engine in self.engines.items():
            ready.add_metric([name], float(engine.ready))
        yield ready

        stats, wstats = self.manager.stats, self.worker.stats
        jobs = CounterMetricFamily(
            "colorize_jobs", "Jobs finished, by model and outcome.", labels=["model", "outcome"]
        )
        for (model, outcome), count in sorted(wstats.jobs.items()):
            jobs.add_metric([model, outcome], count)
        yield jobs
        oom = CounterMetricFamily(
            "colorize_oom_events", "Out-of-memory errors caught during jobs.", labels=["model"]
        )
        for model in self.engines:
            oom.add_metric([model], wstats.oom_events.get(model, 0))
        yield oom
        refused = CounterMetricFamily(
            "colorize_admissions_refused", "Jobs refused, by reason.", labels=["reason"]
        )
        reasons = {
            "never_fits": stats.refused_never_fits,
            "memory_timeout": stats.refused_timeout,
            "queue_full": wstats.refused.get("queue_full", 0),
            "shutting_down": wstats.refused.get("shutdown", 0),
            "worker_dead": wstats.refused.get("worker_dead", 0),
        }
        for reason, count in reasons.items():
            refused.add_metric([reason], count)
        yield refused
        for name, doc, value in (
            ("admissions", "Memory reservations granted.", stats.admissions),
            (
                "admissions_waited",
                "Reservations that had to wait for memory.",
                stats.admissions_waited,
            ),
            ("cache_clears", "Allocator cache clears.", stats.cache_clears),
            ("gc_runs", "Garbage collections triggered above the threshold.", stats.gc_runs),
            ("memory_freed_bytes", "Bytes freed by cache clears and GC.", stats.bytes_freed),
        ):
            c = CounterMetricFamily(f"colorize_{name}", doc)
            c.add_metric([], value)
            yield c

    def _host(self) -> Iterator[GaugeMetricFamily]:
        snap = self.host.snapshot()
        for name, doc, value in (
            ("host_memory_limit_bytes", "Host: threshold x capacity.", snap.limit),
            ("host_memory_capacity_bytes", "Host: the configured, cgroup or RAM size.", snap.total),
            ("host_memory_used_bytes", "Host: the service's resident set.", snap.used),
            ("host_memory_budget_bytes", "Host: largest single reservation.", snap.job_budget),
            ("host_memory_available_bytes", "Host: free for reservations now.", snap.available),
            ("host_memory_reserved_bytes", "Host: held by reservations.", snap.reserved_for_jobs),
        ):
            g = GaugeMetricFamily(f"colorize_{name}", doc)
            g.add_metric([], float(value))
            yield g
        held = GaugeMetricFamily(
            "colorize_host_memory_held_bytes",
            "Host bytes reserved now, by what they hold (body, upload, pixels, finish, compute, "
            "result, and a video job's buffers).",
            labels=["purpose"],
        )
        by_purpose = self.host.held_by_purpose()
        # The usual purposes always (a series that appears and vanishes confuses rate()), any
        # other that holds bytes now, and a video job's buffers as one series below.
        others = {p for p in by_purpose if not p.startswith("video_")}
        for purpose in sorted(set(HELD_PURPOSES) | others):
            held.add_metric([purpose], float(by_purpose.get(purpose, 0)))
        # A video job's buffers (video_decoder, video_window, ... video_index) as one series.
        video = sum(n for p, n in by_purpose.items() if p.startswith("video_"))
        held.add_metric(["video"], float(video))
        yield held
        queued = GaugeMetricFamily(
            "colorize_queued_upload_bytes", "Compressed bytes of the uploads waiting in the queue."
        )
        queued.add_metric([], float(by_purpose.get("upload", 0)))
        yield queued

    def _videos(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self.worker.stats
        jobs = CounterMetricFamily(
            "colorize_video_jobs",
            "Video uploads answered and video jobs ended, by model and outcome.",
            labels=["model", "outcome"],
        )
        for (model, outcome), count in sorted(stats.video_jobs.items()):
            jobs.add_metric([model, outcome], count)
        yield jobs
        frames = CounterMetricFamily(
            "colorize_video_frames", "Frames of videos coloured, by model.", labels=["model"]
        )
        counted = stats.video_frames
        for model in sorted(set(self.engines) | set(counted)):
            frames.add_metric([model], counted.get(model, 0))
        yield frames
        videos = self.videos
        for name, doc, value in (
            ("video_jobs_running", "Video jobs running now.", videos.running if videos else 0),
            (
                "video_queue_depth",
                "Video jobs waiting for a video worker.",
                videos.waiting if videos else 0,
            ),
            (
                "video_queue_capacity",
                "Video workers plus the video queue's size.",
                videos.workers + videos.queue_size if videos else 0,
            ),
        ):
            g = GaugeMetricFamily(f"colorize_{name}", doc)
            g.add_metric([], float(value))
            yield g

    def _stages(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        depth = GaugeMetricFamily(
            "colorize_stage_depth", "Jobs in each stage now.", labels=["stage"]
        )
        for stage, count in self.worker.stage_depths().items():
            depth.add_metric([stage], float(count))
        yield depth
        busy = CounterMetricFamily(
            "colorize_stage_busy_seconds",
            "Seconds each stage's threads spent working (device near 1/s: it is the bottleneck).",
            labels=["stage"],
        )
        for stage in ("prepare", "device", "finish"):
            busy.add_metric([stage], self.worker.stats.busy_seconds.get(stage, 0.0))
        yield busy


class Metrics:
    """The service's own registry (not the global one, so tests and apps don't collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = self._histogram(
            "colorize_request_duration_seconds",
            "Request time, upload to response.",
            LATENCY_BUCKETS,
        )
        self.queue_seconds = self._histogram(
            "colorize_queue_wait_seconds", "Time a job waited for the worker.", LATENCY_BUCKETS
        )
        self.compute_seconds = self._histogram(
            "colorize_compute_duration_seconds",
            "Device time of the batch a job ran in.",
            LATENCY_BUCKETS,
        )
        self.peak_to_estimate = self._histogram(
            "colorize_memory_peak_to_estimate_ratio",
            "Measured peak memory / estimate, per batch.",
            RATIO_BUCKETS,
        )
        self.batch_size = self._histogram(
            "colorize_batch_size", "Jobs per forward pass.", BATCH_BUCKETS
        )
        self.video_rate = self._histogram(
            "colorize_video_frames_per_second",
            "Frames per second of finished video jobs (frames over the job's running time).",
            FPS_BUCKETS,
        )

    def _histogram(self, name: str, documentation: str, buckets: Sequence[float]) -> Histogram:
        """A histogram by model in this registry."""
        return Histogram(name, documentation, ["model"], buckets=buckets, registry=self.registry)

    def attach(
        self,
        manager: MemoryManager,
        worker: Worker,
        engines: Mapping[str, Engine],
        host: MemoryManager | None = None,
        videos: VideoExecutor | None = None,
    ) -> None:
        """Start reading live values from these objects."""
        self.registry.register(_LiveCollector(manager, worker, engines, host, videos))
        manager.observers.append(self._observe_estimate)
        worker.batch_observers.append(lambda model, n: self.batch_size.labels(model).observe(n))

    def _observe_estimate(self, model: str, estimate: int, measured: int) -> None:
        if estimate > 0:
            self.peak_to_estimate.labels(model).observe(measured / estimate)

    def observe_job(self, job: Job) -> None:
        """Record a finished job's phase times."""
        if job.state is not JobState.DONE:
            return
        if "queue" in job.timings:
            self.queue_seconds.labels(job.model).observe(job.timings["queue"])
        if "compute" in job.timings:
            self.compute_seconds.labels(job.model).observe(job.timings["compute"])

    def observe_video_rate(self, model: str, frames_per_second: float) -> None:
        """A finished video job's frame rate."""
        self.video_rate.labels(model).observe(frames_per_second)

    def render(self) -> bytes:
        return generate_latest(self.registry)
