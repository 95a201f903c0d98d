"""Frames of a video through the image pipeline: each frame a job of its own, prepared by the
caller and finished as an RGB array, so a video's forward passes are batched, admitted and
recovered from out-of-memory exactly like photos, sharing the device lanes fairly with them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.engines.base import ColorizeRequest
from service.outcomes import Failure, Outcome
from service.worker.jobs import Job, JobState
from service.worker.stages import RAW
from service.worker.worker import Worker


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
) -> list[np.ndarray]:
    """The colour versions of `frames` (RGB uint8), in order; FramesFailed if one fails.

    The caller holds the host memory of the frames and their outputs (the video's window): the
    jobs reserve only what the stages add (the device's forward pass, the finish's join).
    """
    engine = worker.engines[model]
    jobs = []
    for frame in frames:
        request = ColorizeRequest(frame, render_size=render_size, reference=reference)
        job = Job(model=model, input=None, estimate=engine.estimate(request), output_format=RAW)
        job.request = request
        job.prepared = engine.prepare(request)
        jobs.append(job)
    worker.submit_prepared(jobs)
    outputs = []
    for job in jobs:
        job.wait()
        if job.state is not JobState.DONE or job.frame is None:
            failure = job.failure or Failure(Outcome.CANCELLED, "the frame was cancelled")
            for other in jobs:
                worker.cancel(other)
            raise FramesFailed(failure)
        outputs.append(job.frame)
        job.frame = None
    return outputs
