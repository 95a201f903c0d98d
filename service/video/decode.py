"""Streaming decode: upright RGB frames one at a time, counted and bounded as they are decoded.

`container.demux` is a generator and so is this module: nothing holds more than the frame being
converted. The decoder's threads are bounded (each frame thread holds a frame) and it may not
allocate a frame over the resolution limit (FFmpeg's `max_pixels`), whatever the stream says.
Frames are counted as decoded and refused past the frame and duration limits, because a
container's declared count and duration are only claims. Every PyAV/FFmpeg error becomes
InvalidVideo; a truncated file ends with that error or with a clean end, never a hang (the read
timeout ends a demuxer that stops making progress).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import av.container
import av.error
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.stream import Disposition

from service.video.errors import InvalidVideo, VideoCancelled, VideoTooLarge
from service.video.info import UPRIGHT, Orientation, VideoInfo
from service.video.limits import VideoLimits
from service.video.sniff import Container

log = logging.getLogger(__name__)

# What FFmpeg raises on bad data, plus what PyAV raises around it (a stream it cannot wrap).
DECODE_ERRORS = (av.error.FFmpegError, OSError, EOFError, ValueError, RuntimeError)

# How much the decoded timeline may pass the duration limit before it counts as over it: a
# frame's own length, and containers that start at a small positive offset.
_DURATION_SLACK_S = 1.0


def describe(exc: BaseException) -> str:
    """An FFmpeg error in words, without the file name PyAV puts into its message."""
    if isinstance(exc, av.error.FFmpegError):
        return str(exc.strerror or type(exc).__name__)
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


def open_input(
    path: Path, container: Container, limits: VideoLimits
) -> av.container.InputContainer:
    """Open `path` with the demuxer its signature chose and every option that bounds FFmpeg."""
    codec_options = {
        "threads": str(limits.decoder_threads),
        # The decoder refuses to allocate a frame over the limit, even when the stream's own
        # parameter sets disagree with the container headers we checked.
        "max_pixels": str(limits.max_frame_pixels),
    }
    try:
        return av.open(
            str(path),
            format=container.demuxer,
            options=codec_options,
            container_options={
                # Only this file: no references to other files or URLs (MOV `dref`, playlists).
                "protocol_whitelist": "file",
                "enable_drefs": "0",
            },
            timeout=(limits.open_timeout_s, limits.read_timeout_s),
        )
    except DECODE_ERRORS as exc:
        raise InvalidVideo(f"cannot read the {container.label} file: {describe(exc)}") from exc


def orientation_of(frame: av.VideoFrame) -> Orientation:
    """The display matrix a decoded frame carries (FFmpeg copies the stream's to each frame)."""
    # PyAV's stubs type `side_data` as a TypedDict; at run time it is a mapping by Type.
    side_data: Any = frame.side_data
    side = side_data.get(SideDataType.DISPLAYMATRIX)
    if side is None:
        return UPRIGHT
    raw = np.frombuffer(bytes(side)[:36], dtype="<i4")
    signs = tuple(int(np.sign(v)) for v in (raw[0], raw[1], raw[3], raw[4]))
    rotation = round(frame.rotation / 90.0) % 4 * 90
    if rotation * 1.0 != frame.rotation % 360:
        log.warning(
            "display rotation %s is not a quarter turn: shown at %s", frame.rotation, rotation
        )
    return Orientation(rotation, (signs[0], signs[1], signs[2], signs[3]))


def upright(rgb: np.ndarray, orientation: Orientation) -> np.ndarray:
    """Turn a stored picture upright, as FFmpeg's own autorotation does (fftools' transposes)."""
    if orientation.identity:
        return rgb
    a, _, c, d = orientation.matrix
    # FFmpeg's angle is counter-clockwise; fftools calls the opposite angle theta.
    theta = (-orientation.rotation) % 360
    if theta == 90:
        turned = rgb.transpose(1, 0, 2) if c > 0 else np.rot90(rgb, -1)  # cclock_flip, clock
    elif theta == 270:
        turned = rgb[::-1, ::-1].transpose(1, 0, 2) if c < 0 else np.rot90(rgb, 1)  # clock_flip
    elif theta == 180:
        turned = rgb[:, ::-1] if a < 0 else rgb
        turned = turned[::-1] if d < 0 else turned
    else:
        turned = rgb[::-1] if d < 0 else rgb
    return np.ascontiguousarray(turned)


def film_streams(source: av.container.InputContainer) -> list[av.VideoStream]:
    """The video streams that are moving pictures: a cover picture (an MP4's or MKV's attached
    picture) is a one-frame "video" stream, not the film, and is neither counted nor coloured."""
    return [s for s in source.streams.video if not s.disposition & Disposition.attached_pic]


@dataclass(frozen=True)
class DecodedFrame:
    """One upright RGB uint8 frame with its presentation time."""

    index: int
    image: np.ndarray
    pts: int | None
    """In the stream's time base (VideoInfo.time_base); None where the stream gave none."""
    duration: int
    """How long it is shown, in the time base (0 where the stream does not say)."""

    def seconds(self, time_base: Fraction) -> float:
        return 0.0 if self.pts is None else float(self.pts * time_base)


class VideoSource:
    """An open video: its frames decoded upright, its audio packets handed on untouched."""

    def __init__(
        self,
        path: Path,
        info: VideoInfo,
        limits: VideoLimits,
        cancel: threading.Event | None = None,
    ) -> None:
        self.info = info
        self.limits = limits
        self.cancel = cancel
        self.decoded = 0
        """Frames decoded so far (the count the limits are checked against)."""
        self._input = open_input(path, info.container, limits)
        try:
            self.video = film_streams(self._input)[0]
            self.audio = list(self._input.streams.audio)
            self.video.codec_context.thread_count = limits.decoder_threads
            self.video.codec_context.options = {"max_pixels": str(limits.max_frame_pixels)}
        except (IndexError, *DECODE_ERRORS) as exc:
            self._input.close()
            raise InvalidVideo(f"no decodable video stream: {describe(exc)}") from exc

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._input.close()

    def frames(
        self, on_audio: Callable[[av.Packet[Any]], None] | None = None
    ) -> Iterator[DecodedFrame]:
        """Decode to the end, yielding upright frames; each audio packet goes to `on_audio` as it
        is read (None: audio is not even demuxed). Raises InvalidVideo, VideoTooLarge (past a
        limit as counted), VideoCancelled (checked every packet)."""
        streams = [self.video, *self.audio] if on_audio is not None else [self.video]
        start = self.video.start_time or 0
        try:
            for packet in self._input.demux(streams):
                self._check_cancel()
                if packet.stream.type == "audio":
                    # The demuxer ends each stream with an empty packet: nothing to copy.
                    if on_audio is not None and packet.size and packet.dts is not None:
                        on_audio(packet)
                    continue
                for frame in self.video.decode(packet):
                    yield self._convert(frame, start)
        except DECODE_ERRORS as exc:
            raise InvalidVideo(
                f"corrupt or truncated video after {self.decoded} frames: {describe(exc)}"
            ) from exc

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise VideoCancelled(f"cancelled after {self.decoded} frames")

    def _convert(self, frame: av.VideoFrame, start: int) -> DecodedFrame:
        index = self.decoded
        self.decoded += 1
        limits, info = self.limits, self.info
        if self.decoded > limits.max_frames:
            raise VideoTooLarge(
                f"the video has more than {limits.max_frames} frames as decoded "
                f"({limits.name('max_frames')})",
                "max_frames",
            )
        if frame.pts is not None:
            seconds = float((frame.pts - start) * info.time_base)
            if seconds > limits.max_duration_s + _DURATION_SLACK_S:
                raise VideoTooLarge(
                    f"the video runs past {limits.max_duration_s:g} s as decoded "
                    f"({limits.name('max_duration_s')})",
                    "max_duration_s",
                )
        # Scaled to the probed size: a stream that changes resolution mid-way keeps the size
        # every buffer was reserved for (the decoder itself is capped by max_pixels).
        rgb = frame.to_ndarray(
            format="rgb24",
            width=info.stored_width,
            height=info.stored_height,
            # PyAV assumes limited range unless told: a full-range stream (phones) would lose
            # its blacks and whites.
            src_color_range=frame.color_range,
        )
        image = upright(rgb, info.orientation)
        return DecodedFrame(index, image, frame.pts, int(frame.duration or 0))
