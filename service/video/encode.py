"""Streaming encode: H.264 yuv420p MP4 with the source's timestamps, upright, audio copied.

- **Timestamps**: every frame keeps its source presentation time, in the source stream's time
  base, so variable frame rate survives; each frame's duration is the gap to the next (the last
  keeps its own), which fixes the result's duration. B-frames are off (`bf=0`): with them the
  MP4's decode times run ahead of the presentation times and the container's duration no longer
  equals the last frame's end (FFmpeg's `mdhd` then counts decode time); without them it does,
  for about 10% more bytes at the same quality.
- **Orientation**: frames arrive upright (decode.py applied the display matrix), so the result
  carries no rotation flag: every player shows it the same way.
- **Odd sizes**: yuv420p stores colour per 2x2 block and H.264 cannot crop by one pixel in 4:2:0,
  so an odd width or height is padded by repeating the last column or row (no picture is lost;
  the result is one pixel wider or taller).
- **Audio**: each source audio stream is added from its template and its packets are copied as
  the demuxer reads them, interleaved with the video in one pass (no second file, no re-encode).
  FFmpeg's interleaver holds audio until video catches up, at most `max_interleave_delta` (10 s):
  AUDIO_QUEUE_BYTES per stream covers that.
- **Memory**: libx264 holds `held_frames` frames (rc-lookahead + its threads; measured: exactly
  lookahead + 1 with B-frames and sync-lookahead off) plus per-pixel state; `encoder_bytes` is the
  bound the caller reserves (docs/video.md has the measurements).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import av.container
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

from service.settings import Settings
from service.video.decode import DECODE_ERRORS, describe
from service.video.errors import VideoEncodeFailed
from service.video.info import VideoInfo
from service.video.limits import VideoLimits

MiB = 1024 * 1024

# libx264's memory, measured with peak RSS on CPU (bench/video_memory.py; veryfast, bf=0):
# 34-49 B/px with look-ahead 0 (reference and look-ahead planes, macroblock tables, our
# conversion) and 3.1-3.3 B/px per further frame it holds, at 640x360 and 1920x1080. The
# constants round both up: the estimate is 1.4-2.1x the measured peak.
ENCODER_FIXED_BYTES = 8 * MiB
ENCODER_BYTES_PER_PIXEL = 48
ENCODER_BYTES_PER_HELD_PIXEL = 4
AUDIO_QUEUE_BYTES = 4 * MiB
"""Per audio stream: 10 s of interleaving delay at 3.2 Mb/s (beyond 24-bit 96 kHz stereo FLAC)."""


@dataclass(frozen=True)
class EncodeOptions:
    """How the result is compressed (memory does not depend on these; limits.py bounds that)."""

    crf: int = 18
    """Constant rate factor (COLORIZE_VIDEO_CRF)."""
    preset: str = "veryfast"
    """libx264 preset (COLORIZE_VIDEO_PRESET)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> EncodeOptions:
        return cls(crf=settings.video_crf, preset=settings.video_preset)


def held_frames(limits: VideoLimits) -> int:
    """Frames libx264 may hold before it returns a packet: rc-lookahead plus one per thread
    (measured lookahead + 1; a frame thread could add one each), plus the one frame this module
    keeps back to learn its duration."""
    return limits.encoder_lookahead + limits.encoder_threads + 1


def encoded_size(width: int, height: int) -> tuple[int, int]:
    """The result's frame size: odd sides padded by one pixel for yuv420p."""
    return width + width % 2, height + height % 2


def encoder_bytes(width: int, height: int, limits: VideoLimits, audio_streams: int = 0) -> int:
    """Upper bound of the encoder's memory for frames of width x height: libx264's state, the
    frames it holds (each also as a yuv420p copy made here) and the audio interleaving queue."""
    w, h = encoded_size(width, height)
    pixels = w * h
    held = held_frames(limits)
    # Converting one frame: the padded RGB copy (3 B/px) and its yuv420p frame (1.5 B/px).
    conversion = pixels * 3 + pixels * 3 // 2
    return (
        ENCODER_FIXED_BYTES
        + pixels * (ENCODER_BYTES_PER_PIXEL + ENCODER_BYTES_PER_HELD_PIXEL * held)
        + conversion
        + AUDIO_QUEUE_BYTES * audio_streams
    )


class VideoEncoder:
    """Writes upright RGB frames and copied audio packets to an MP4 at `target`."""

    def __init__(
        self,
        target: Path,
        info: VideoInfo,
        audio: Sequence[av.AudioStream],
        limits: VideoLimits,
        options: EncodeOptions = EncodeOptions(),
    ) -> None:
        self.info = info
        self.target = target
        self.width, self.height = encoded_size(info.width, info.height)
        self.frames_in = 0
        self.packets_out = 0
        self.max_held = 0
        """Most frames libx264 held at once (checked against `held_frames` by the tests)."""
        self._pending: tuple[np.ndarray, int] | None = None
        self._closed = False
        self._durations: dict[int, int] = {}
        """Each queued frame's duration by pts: libx264 returns packets without one, and the
        MP4's last sample takes its length from its packet."""
        self._last_pts: int | None = None
        self._last_gap = max(1, round(1 / (info.frame_rate * info.time_base)))
        try:
            # faststart: the index goes to the front when the file is finished, so the page
            # can play the result while it downloads (FFmpeg moves the data in place).
            self._out = av.open(
                str(target), "w", format="mp4", container_options={"movflags": "+faststart"}
            )
        except DECODE_ERRORS as exc:
            raise VideoEncodeFailed(f"cannot create the result: {describe(exc)}") from exc
        try:
            self._video = self._out.add_stream(
                "libx264",
                rate=frame_rate_of(info.frame_rate),
                options={
                    "preset": options.preset,
                    "crf": str(options.crf),
                    "rc-lookahead": str(limits.encoder_lookahead),
                    "bf": "0",
                    # A threaded look-ahead keeps its own buffer of frames: off, so that
                    # held_frames bounds what the encoder holds.
                    "x264-params": "sync-lookahead=0",
                },
            )
            ctx = self._video.codec_context
            ctx.width, ctx.height = self.width, self.height
            ctx.pix_fmt = "yuv420p"
            ctx.time_base = info.time_base
            ctx.thread_count = limits.encoder_threads
            ctx.colorspace = Colorspace.ITU709
            ctx.color_primaries = 1  # BT.709
            ctx.color_trc = 1  # BT.709
            ctx.color_range = ColorRange.MPEG
            self._audio = {a.index: self._out.add_stream_from_template(a) for a in audio}
        except DECODE_ERRORS as exc:
            self.abort()
            raise VideoEncodeFailed(f"cannot start the encoder: {describe(exc)}") from exc

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def bytes_written(self) -> int:
        """Size of the result so far (FFmpeg buffers up to 32 KiB more)."""
        try:
            return self.target.stat().st_size
        except FileNotFoundError:
            return 0

    def write(self, image: np.ndarray, pts: int | None) -> None:
        """Queue one upright RGB uint8 frame at `pts` (source time base; None: the next slot).

        The frame is encoded when the next one arrives, which gives its duration."""
        if image.shape[:2] != (self.info.height, self.info.width):
            raise ValueError(f"frame is {image.shape[1]}x{image.shape[0]}, not the video's size")
        if pts is None:
            pts = 0 if self._last_pts is None else self._last_pts + self._last_gap
        if self._last_pts is not None and pts <= self._last_pts:
            # Broken streams repeat or reorder timestamps; the muxer refuses that outright.
            pts = self._last_pts + 1
        if self._pending is not None:
            previous, previous_pts = self._pending
            self._last_gap = pts - previous_pts
            self._encode(previous, previous_pts, self._last_gap)
        self._pending = (image, pts)
        self._last_pts = pts

    def copy_audio(self, packet: av.Packet[Any]) -> None:
        """Copy one source audio packet into the result, unchanged."""
        stream = self._audio.get(packet.stream.index)
        if stream is None:
            return
        packet.stream = stream
        try:
            self._out.mux(packet)
        except DECODE_ERRORS as exc:
            raise VideoEncodeFailed(f"cannot copy the audio: {describe(exc)}") from exc

    def close(self, last_duration: int | None = None) -> None:
        """Encode the last frame, flush libx264 and finish the file (index to the front);
        idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._pending is not None:
                image, pts = self._pending
                self._pending = None
                self._encode(image, pts, last_duration or self._last_gap)
            self._mux(self._video.encode(None))
            self._out.close()
        except DECODE_ERRORS as exc:
            self.abort()
            raise VideoEncodeFailed(f"cannot finish the result: {describe(exc)}") from exc

    def abort(self) -> None:
        """Stop without finishing the file (the caller removes it)."""
        self._closed = True
        # A half-written file is removed by the caller; its closing errors say nothing new.
        with contextlib.suppress(*DECODE_ERRORS):
            self._out.close()

    def _encode(self, image: np.ndarray, pts: int, duration: int) -> None:
        padded = _pad_even(image)
        frame = av.VideoFrame.from_ndarray(padded, format="rgb24")
        frame = frame.reformat(
            format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
        )
        frame.pts = pts
        frame.time_base = self.info.time_base
        self._durations[pts] = duration
        try:
            packets = self._video.encode(frame)
        except DECODE_ERRORS as exc:
            raise VideoEncodeFailed(f"the encoder failed: {describe(exc)}") from exc
        self.frames_in += 1
        self.max_held = max(self.max_held, self.frames_in - self.packets_out - len(packets))
        self._mux(packets)

    def _mux(self, packets: list[av.Packet[Any]]) -> None:
        for packet in packets:
            self.packets_out += 1
            if packet.pts is not None:
                packet.duration = self._durations.pop(packet.pts, 0)
        try:
            self._out.mux(packets)
        except DECODE_ERRORS as exc:
            raise VideoEncodeFailed(f"cannot write the result: {describe(exc)}") from exc


def _pad_even(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    if width % 2 == 0 and height % 2 == 0:
        return np.ascontiguousarray(image)
    return np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def frame_rate_of(rate: Fraction) -> Fraction:
    """A rate libx264 takes (it refuses denominators over 2^31)."""
    return rate.limit_denominator(1 << 16)
