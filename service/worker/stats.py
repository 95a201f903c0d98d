"""What the pipeline counts for /metrics: jobs by outcome, refusals, out-of-memory events, busy
time per stage. Every write takes the lock: two device lanes and the finish pool write at once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

STAGES = ("prepare", "device", "finish")
NO_MODEL = "none"
"""The `model` label of an upload refused before its engine was known (or when it named none
that exists): a client-supplied name never becomes a label value."""


@dataclass
class PipelineStats:
    """Counters read at scrape time; writers call the methods, readers take `snapshot`-style
    copies through the properties."""

    _jobs: Counter[tuple[str, str]] = field(default_factory=Counter)
    _oom_events: Counter[str] = field(default_factory=Counter)
    _refused: Counter[str] = field(default_factory=Counter)
    _busy: dict[str, float] = field(default_factory=dict)
    _completed: int = 0
    _video_jobs: Counter[tuple[str, str]] = field(default_factory=Counter)
    _video_frames: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_job(self, model: str, outcome: str) -> None:
        """One answer to an upload: a job that ended, or a refusal before it became one."""
        with self._lock:
            self._jobs[(model, outcome)] += 1
            if outcome == "done":
                self._completed += 1

    def count_video_job(self, model: str, outcome: str) -> None:
        """One answer to a video upload: a video job that ended, or a refusal before it was
        accepted (`colorize_video_jobs_total`)."""
        with self._lock:
            self._video_jobs[(model, getattr(outcome, "value", outcome))] += 1

    def count_frames(self, model: str, frames: int) -> None:
        """Frames of videos coloured (`colorize_video_frames_total`)."""
        with self._lock:
            self._video_frames[model] += frames

    def count_refusal(self, outcome: str) -> None:
        """The queue refused a job (queue full, shutting down, worker dead)."""
        with self._lock:
            self._refused[outcome] += 1

    def count_oom(self, model: str) -> None:
        with self._lock:
            self._oom_events[model] += 1

    def add_busy(self, stage: str, since: float) -> float:
        """Add the time from `since` (time.monotonic()) to now to `stage`; the seconds added."""
        # A read-modify-write around a clock read: without the lock, lanes ending together
        # lost each other's time (half of it with eight writers).
        with self._lock:
            seconds = time.monotonic() - since
            self._busy[stage] = self._busy.get(stage, 0.0) + seconds
        return seconds

    @property
    def jobs(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._jobs)

    @property
    def video_jobs(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._video_jobs)

    @property
    def video_frames(self) -> dict[str, int]:
        with self._lock:
            return dict(self._video_frames)

    @property
    def oom_events(self) -> dict[str, int]:
        with self._lock:
            return dict(self._oom_events)

    @property
    def refused(self) -> dict[str, int]:
        with self._lock:
            return dict(self._refused)

    @property
    def busy_seconds(self) -> dict[str, float]:
        with self._lock:
            return dict(self._busy)

    @property
    def completed(self) -> int:
        with self._lock:
            return self._completed
