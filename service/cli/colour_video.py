"""One video file through `colorize-service colorize`: probed and coloured the /jobs way, with a
progress bar in frames."""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from service.cli.inputs import Tally, Target
from service.engines.base import Engine
from service.jobs.video import VideoJob
from service.jobs.video_executor import run_video_job
from service.outcomes import Failure, Outcome
from service.settings import Settings
from service.video import VideoProgress
from service.worker.admission import Budgets, VideoUpload, check_video
from service.worker.jobs import JobState
from service.worker.options import VideoOptions
from service.worker.worker import Worker

log = logging.getLogger(__name__)

MEMORY_OUTCOMES = (Outcome.TOO_LARGE, Outcome.MEMORY_BUSY, Outcome.OOM)
"""Failures the user fixes with memory (a smaller input, another device), said so in the log."""


def why_not_done(failure: Failure | None) -> str:
    """The log's reason for a file that was not coloured."""
    if failure is None:
        return "cancelled"
    if failure.outcome in MEMORY_OUTCOMES:
        return f"not enough memory: {failure.detail}"
    return failure.detail


def colour_video(
    target: Target,
    engine: Engine,
    worker: Worker,
    reference: bytes | None,
    args: argparse.Namespace,
    settings: Settings,
    tally: Tally,
) -> None:
    """Probe and colour one video (the /jobs way), with a progress bar in frames."""
    options = VideoOptions(engine.name, render_size=args.render_size, stabilize=args.stabilize)
    upload = VideoUpload(target.source, options, reference)
    budgets = Budgets(device=worker.manager, host=worker.host)
    video = check_video(upload, {engine.name: engine}, budgets, settings)
    if isinstance(video, Failure):
        why = video.detail
        if video.outcome in MEMORY_OUTCOMES:
            why = f"not enough memory on {worker.manager.device}: {why}"
        log.error("%s: %s", target.source, why)
        tally.failed.append(target.source)
        return
    try:
        target.output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.error("%s: cannot create %s: %s", target.source, target.output.parent, exc)
        tally.failed.append(target.source)
        return
    job = VideoJob(
        model=engine.name,
        options=options,
        source=target.source,
        info=video.info,
        plan=video.plan,
        target=target.output,
        reference=reference,
        owns_source=False,
    )
    with (
        logging_redirect_tqdm(),
        tqdm(
            total=video.info.frames,
            desc=target.source.name,
            unit="frame",
            file=sys.stderr,
            disable=None,
        ) as bar,
    ):

        def advance(_: VideoJob, progress: VideoProgress) -> None:
            bar.total = progress.frames_total
            bar.update(progress.frames_done - bar.n)

        job.on_progress(advance)
        run_video_job(job, worker, worker.host, settings)
    if job.state is not JobState.DONE or job.result is None:
        log.error("%s: %s", target.source, why_not_done(job.failure))
        tally.failed.append(target.source)
        return
    tally.done += 1
    tally.videos += 1
    tally.frames += job.result.frames
    tally.video_seconds += job.result.seconds
