"""Frames of a video through the image pipeline: each frame a job of its own, prepared by the
caller and finished as an RGB array, so a video's forward passes are batched, admitted and
recovered from out-of-memory exactly like photos, sharing the device lanes fairly with them."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from service.engines.base import ColorizeRequest
from service.outcomes import Failure, Outcome
from service.worker.jobs import Job, JobState
from service.worker.stages import RAW
from service.worker.worker import Worker

CANCEL_POLL_S = 0.05
"""How often a waiting call looks at its `cancel` event."""


class FramesFailed(Exception):
    """A frame's job failed: the video fails with the same outcome."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


def colorize_frames(
    worker: Worker,
    model: str,
    frames: Sequence[np.ndarray],
    *,
    render_size: int | None = None,
    reference: np.ndarray | None = None,
    cancel: threading.Event | None = None,
) -> list[np.ndarray]:
    """The colour versions of `frames` (RGB uint8), in order; FramesFailed if one fails.

    The caller holds the host memory of the frames and their outputs (the video's window): the
    jobs reserve only what the stages add (the device's forward pass, the finish's join). When
    `cancel` is set, the frames still waiting leave the queue at once and the call raises
    FramesFailed(CANCELLED): a video stops within one forward pass, not one batch.
    """
    engine = worker.engines[model]
    jobs = []
    for frame in frames:
        request = ColorizeRequest(frame, render_size=render_size, reference=reference)
        job = Job(model=model, input=None, estimate=engine.estimate(request), output_format=RAW)
        job.request = request
        job.prepared = engine.prepare(request)
        job.of_video = True
        jobs.append(job)
    worker.submit_prepared(jobs)
    outputs = []
    for job in jobs:
        while not job.wait(CANCEL_POLL_S if cancel is not None else None):
            if cancel is not None and cancel.is_set():
                _cancel_all(worker, jobs)
                raise FramesFailed(Failure(Outcome.CANCELLED, "the video was stopped"))
        if job.state is not JobState.DONE or job.frame is None:
            failure = job.failure or Failure(Outcome.CANCELLED, "the frame was cancelled")
            _cancel_all(worker, jobs)
            raise FramesFailed(failure)
        outputs.append(job.frame)
        job.frame = None
    return outputs


def _cancel_all(worker: Worker, jobs: list[Job]) -> None:
    for job in jobs:
        if not worker.cancel(job):
            job.abandon(Outcome.CANCELLED)  # on the device: its result is dropped when it ends
