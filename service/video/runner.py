"""One video job: decode, colour in batches, stabilise, encode; in a memory bounded by the frame
size and the batch, never by the film's length.

    info = probe(upload, limits)
    result = colorize_video(upload, result_path, info, colorize, batch=8, stabilize=True,
                            reserve=lambda n, purpose: manager.reserve(n, 10.0, purpose),
                            progress=report, cancel=job.cancelled, limits=limits)

Every buffer the job allocates is reserved through `reserve(nbytes, purpose)` first, for the
whole job, with sizes from plan.py; a refusal (the MemoryManager's MemoryRefused or NeverFits)
propagates before a frame is decoded. The result is written beside `target` under a temporary
name and renamed when complete; on any failure or cancellation it is removed. The upload and the
result stay on disk: at most one window of frames is ever in memory.

`cancel` is checked for every packet the demuxer reads and before every frame is stabilised and
encoded; the one call it cannot interrupt is `colorize` on a batch, so a job stops within one
batch's colour time (choose the batch so that this is about a second; a `colorize` that looks
at `cancel` itself, as the service's does, stops sooner).

With `pipeline=True` a window is coloured (by `colorize`, in a thread of the job's own) while
the previous one is stabilised and encoded here, so the device never waits for this thread's
share of the work; it costs one more window and its colours (`video_pipeline` in the plan).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from service.video.decode import DecodedFrame, VideoSource
from service.video.encode import EncodeOptions, VideoEncoder
from service.video.errors import VideoCancelled, VideoTooLarge
from service.video.info import VideoInfo
from service.video.limits import VideoLimits
from service.video.plan import VideoMemoryPlan
from service.video.stabilize import ChromaStabilizer, StabilizerSettings

Colorize = Callable[[list[np.ndarray]], list[np.ndarray]]
"""Colours a batch of upright RGB uint8 frames; returns RGB uint8 frames of the same sizes."""
Reserve = Callable[[int, str], AbstractContextManager[object]]
"""Holds `nbytes` of a memory budget for `purpose` until the context exits."""


@dataclass(frozen=True)
class VideoProgress:
    """Where a job stands, after each batch."""

    frames_done: int
    frames_total: int
    """The probed count (declared, or duration x rate), raised if decoding finds more."""
    frames_per_second: float
    """Frames finished per second of wall time since the job started."""
    seconds_left: float | None
    """None until the rate is known."""


@dataclass(frozen=True)
class VideoResult:
    """A finished video job."""

    path: Path
    frames: int
    width: int
    """The result's size (the upright size, padded to even sides)."""
    height: int
    audio_streams: int
    shots: int
    """Scene cuts plus one (0 when not stabilised)."""
    stabilized: bool
    bytes: int
    seconds: float
    reserved: dict[str, int] = field(default_factory=dict)
    """purpose -> bytes reserved for the job's buffers."""
    encoder_frames_held: int = 0
    """Most frames the encoder held at once (at most plan.encoder_frames)."""


def colorize_video(
    source: Path,
    target: Path,
    info: VideoInfo,
    colorize: Colorize,
    *,
    batch: int,
    stabilize: bool,
    reserve: Reserve,
    progress: Callable[[VideoProgress], None] | None = None,
    cancel: threading.Event | None = None,
    limits: VideoLimits = VideoLimits(),
    encode: EncodeOptions = EncodeOptions(),
    stabilizer: StabilizerSettings = StabilizerSettings(),
    pipeline: bool = False,
) -> VideoResult:
    """Colour the video at `source` (probed as `info`) into an MP4 at `target`.

    Raises VideoCancelled, InvalidVideo (corrupt past the probe), VideoTooLarge (a limit passed
    as decoded, or the per-job disk), VideoEncodeFailed, and whatever `reserve` or `colorize`
    raise; `target` then does not exist.
    """
    plan = VideoMemoryPlan.for_video(info, batch, stabilize, limits, pipeline)
    partial = target.with_name(f".{target.name}.partial")
    started = time.monotonic()
    with ExitStack() as held:
        for purpose, nbytes in plan.reservations.items():
            held.enter_context(reserve(nbytes, purpose))
        try:
            job = _Job(info, plan, colorize, batch, limits, cancel, progress, started)
            if pipeline:
                job.colourer = ThreadPoolExecutor(1, thread_name_prefix="colorize-video-colour")
                held.callback(job.stop_colouring)
            if stabilize:
                job.stabilizer = ChromaStabilizer(stabilizer)
            with VideoSource(source, info, limits, cancel) as video:
                encoder = VideoEncoder(partial, info, video.audio, limits, encode)
                job.encoder = encoder
                try:
                    for frame in video.frames(on_audio=job.copy_audio):
                        job.add(frame)
                    job.flush()
                    job.finish_pending()
                    encoder.close(job.last_duration or None)
                    job.check_disk()  # the index and the last frames are written on close
                except BaseException:
                    job.stop_colouring()
                    encoder.abort()
                    raise
            job.check_cancel()
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
    return VideoResult(
        path=target,
        frames=job.done,
        width=encoder.width,
        height=encoder.height,
        audio_streams=info.audio_streams,
        shots=job.stabilizer.shots if job.stabilizer else 0,
        stabilized=stabilize,
        bytes=target.stat().st_size,
        seconds=time.monotonic() - started,
        reserved=plan.reservations,
        encoder_frames_held=encoder.max_held,
    )


class _Job:
    """The loop's state: the window being filled, the stabiliser, the counts."""

    def __init__(
        self,
        info: VideoInfo,
        plan: VideoMemoryPlan,
        colorize: Colorize,
        batch: int,
        limits: VideoLimits,
        cancel: threading.Event | None,
        progress: Callable[[VideoProgress], None] | None,
        started: float,
    ) -> None:
        self.info = info
        self.colorize = colorize
        self.batch = batch
        self.limits = limits
        self.cancel = cancel
        self.progress = progress
        self.started = started
        self.window: list[DecodedFrame] = []
        self.stabilizer: ChromaStabilizer | None = None
        self.encoder: VideoEncoder | None = None
        self.plan = plan
        self.done = 0
        self.decoded = 0
        self.audio_packets = 0
        self.last_duration = 0
        self.colourer: ThreadPoolExecutor | None = None
        """With `pipeline`: the thread that colours the next window."""
        self.pending: tuple[list[DecodedFrame], Future[list[np.ndarray]]] | None = None
        """With `pipeline`: the window being coloured, and its colours to come."""

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise VideoCancelled(f"cancelled after {self.done} frames")

    def add(self, frame: DecodedFrame) -> None:
        self.decoded += 1
        if self.decoded > self.plan.max_frames:
            raise VideoTooLarge(
                f"the video has more than {self.plan.max_frames} frames as decoded; the container "
                f"said about {self.info.frames}, and the job's memory was reserved for that",
                "frames_declared",
            )
        self.window.append(frame)
        if len(self.window) >= self.batch:
            self.flush()

    def copy_audio(self, packet: av.Packet[Any]) -> None:
        assert self.encoder is not None
        self.audio_packets += 1
        if self.audio_packets > self.plan.max_audio_packets:
            raise VideoTooLarge(
                f"the audio has more than {self.plan.max_audio_packets} packets as copied; the "
                f"container said about {self.info.audio_packets}, and the job's memory was "
                "reserved for that",
                "audio_packets_declared",
            )
        self.encoder.copy_audio(packet)

    def flush(self) -> None:
        if not self.window:
            return
        assert self.encoder is not None
        self.check_cancel()
        frames, self.window = self.window, []
        if self.colourer is None:
            self._write(frames, self._colour(frames))
            return
        # Pipelined: this window goes to the colour thread, then the previous one is finished
        # here while it colours.
        coming = self.colourer.submit(self._colour, frames)
        self.finish_pending()
        self.pending = (frames, coming)

    def finish_pending(self) -> None:
        """Stabilise and encode the window the colour thread has (pipeline only)."""
        if self.pending is None:
            return
        frames, coming = self.pending
        self.pending = None
        self._write(frames, coming.result())

    def stop_colouring(self) -> None:
        """The job is over (or failed): wait for the colour thread to let go of its window."""
        if self.pending is not None:
            _, coming = self.pending
            self.pending = None
            coming.cancel()
            with contextlib.suppress(BaseException):
                coming.result()
        if self.colourer is not None:
            self.colourer.shutdown(wait=True)

    def _colour(self, frames: list[DecodedFrame]) -> list[np.ndarray]:
        colored = list(self.colorize([f.image for f in frames]))
        if len(colored) != len(frames):
            raise RuntimeError(f"colorize returned {len(colored)} images for {len(frames)} frames")
        for image in colored:
            if image.shape != (self.info.height, self.info.width, 3) or image.dtype != np.uint8:
                raise RuntimeError(f"colorize returned {image.dtype} {image.shape} for a frame")
        return colored

    def _write(self, frames: list[DecodedFrame], colored: list[np.ndarray]) -> None:
        assert self.encoder is not None
        if self.stabilizer is not None:
            self.check_cancel()
            self.stabilizer.stabilize(colored, [f.image for f in frames])
        for frame, image in zip(frames, colored, strict=True):
            self.check_cancel()
            self.encoder.write(image, frame.pts)
            self.last_duration = frame.duration
            self.done += 1
        self.check_disk()
        if self.progress is not None:
            self.progress(self._progress())

    def check_disk(self) -> None:
        assert self.encoder is not None
        used = self.info.file_bytes + self.encoder.bytes_written
        if used > self.limits.max_job_disk_bytes:
            raise VideoTooLarge(
                f"the result passed the per-job disk limit of {self.limits.max_job_disk_bytes} "
                f"bytes with the upload ({self.limits.name('max_job_disk_bytes')})",
                "max_job_disk_bytes",
            )

    def _progress(self) -> VideoProgress:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        total = max(self.info.frames, self.done)
        left = (total - self.done) / rate if rate > 0 else None
        return VideoProgress(self.done, total, rate, left)
