"""Probe an uploaded video: what it is and whether it is within the limits, before decoding it.

Three looks, each cheaper than what it protects:

1. the signature (sniff.py): which container, or why it is not a video (415/422);
2. the container's own headers (headers.py): streams, resolution, declared frames and duration,
   checked against the limits before FFmpeg builds an index or decodes a frame (413);
3. FFmpeg's view, opened with bounded options: the same limits against what FFmpeg found (its
   parameter sets can disagree with the headers), the audio codecs the result can carry, and the
   first frame decoded, which proves the stream decodes and carries the display matrix.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

from service.video.decode import (
    DECODE_ERRORS,
    describe,
    film_streams,
    open_input,
    orientation_of,
)
from service.video.errors import InvalidVideo, UnsupportedVideo, VideoTooLarge
from service.video.headers import DeclaredHeaders, read_headers
from service.video.info import VideoInfo
from service.video.limits import VideoLimits
from service.video.sniff import SNIFF_BYTES, sniff

COPYABLE_AUDIO = frozenset({"aac", "mp3", "opus", "flac", "alac", "ac3", "eac3", "mp2"})
"""Audio codecs an MP4 carries as they are (registered MP4 sample entries): the result copies
their packets unchanged. Anything else is refused up front rather than re-encoded or dropped."""

AUDIO_PACKETS_PER_SECOND = 100
"""Estimate for an audio stream that declares no packet count: AAC at 48 kHz makes 47 a second,
Opus 50 (20 ms frames) or 100 (10 ms), MP3 38, AC-3 31."""

FIRST_FRAME_PACKETS = 256
"""Packets read looking for the first frame before the stream counts as undecodable."""


def probe(path: Path, limits: VideoLimits) -> VideoInfo:
    """What the video at `path` is, or the error that refuses it (InvalidVideo 422,
    UnsupportedVideo 415, VideoTooLarge 413 naming the limit)."""
    size = path.stat().st_size
    if size == 0:
        raise InvalidVideo("the file is empty")
    if size > limits.max_job_disk_bytes:
        raise VideoTooLarge(
            f"the upload is {size} bytes; one video job may use {limits.max_job_disk_bytes} bytes "
            f"of disk ({limits.name('max_job_disk_bytes')})",
            "max_job_disk_bytes",
        )
    with path.open("rb") as file:
        container = sniff(file.read(SNIFF_BYTES), limits.containers)
        declared = read_headers(file, size, container, limits.max_header_boxes)
    _check_declared(declared, limits)
    with open_input(path, container, limits) as source:
        try:
            streams = source.streams
            videos = film_streams(source)
            audio = list(streams.audio)
            _check_streams(len(videos), len(audio), len(streams), limits, "found")
            video = videos[0]
            ctx = video.codec_context
            if ctx is None:
                raise InvalidVideo(f"no decoder for the video codec {video.codec.name!r}")
            codecs = tuple(a.codec_context.name for a in audio)
            for codec in codecs:
                if codec not in COPYABLE_AUDIO:
                    raise UnsupportedVideo(
                        f"audio codec {codec!r} cannot be copied into an MP4 result unchanged; "
                        f"accepted: {', '.join(sorted(COPYABLE_AUDIO))}"
                    )
            time_base = video.time_base or Fraction(1, 90000)
            duration = _duration(video.duration, time_base, source.duration, declared)
            rate = _frame_rate(video.average_rate, video.guessed_rate, video.frames, duration)
            declared_frames = video.frames if video.frames > 0 else None
            audio_packets = sum(
                a.frames if a.frames > 0 else math.ceil(duration * AUDIO_PACKETS_PER_SECOND)
                for a in audio
            )
            frames = declared_frames or max(1, round(duration * rate))
            width, height = ctx.width, ctx.height
            _check_size(width, height, limits)
            _check_timeline(frames, duration, width * height * float(rate), limits)
            ctx.thread_count = limits.decoder_threads
            first = None
            for count, packet in enumerate(source.demux(video)):
                frames_out = video.decode(packet)
                if frames_out:
                    first = frames_out[0]
                    break
                if count >= FIRST_FRAME_PACKETS:
                    break
        except DECODE_ERRORS as exc:
            raise InvalidVideo(f"cannot decode the video: {describe(exc)}") from exc
    if first is None:
        raise InvalidVideo("no video frame could be decoded")
    orientation = orientation_of(first)
    upright_w, upright_h = (height, width) if orientation.quarter_turn else (width, height)
    return VideoInfo(
        container=container,
        codec=ctx.name,
        width=upright_w,
        height=upright_h,
        stored_width=width,
        stored_height=height,
        orientation=orientation,
        frame_rate=rate,
        frames=frames,
        frames_declared=declared_frames is not None,
        duration_s=duration,
        time_base=time_base,
        audio_codecs=codecs,
        file_bytes=size,
        audio_packets=audio_packets,
    )


def _check_declared(declared: DeclaredHeaders, limits: VideoLimits) -> None:
    videos = declared.of_kind("video")
    _check_streams(
        len(videos), len(declared.of_kind("audio")), len(declared.tracks), limits, "declared"
    )
    track = videos[0]
    if track.width and track.height:
        _check_size(track.width, track.height, limits)
    if track.frames is not None and track.frames > limits.max_frames:
        raise VideoTooLarge(
            f"the container declares {track.frames} frames; the limit is {limits.max_frames} "
            f"({limits.name('max_frames')})",
            "max_frames",
        )
    if declared.duration_s is not None and declared.duration_s > limits.max_duration_s:
        raise VideoTooLarge(_duration_detail(declared.duration_s, limits), "max_duration_s")


def _check_streams(videos: int, audio: int, total: int, limits: VideoLimits, how: str) -> None:
    if videos == 0:
        raise InvalidVideo("no video stream: the file holds no pictures to colour")
    if videos > limits.max_video_streams:
        raise VideoTooLarge(
            f"{videos} video streams {how}; at most {limits.max_video_streams} is coloured "
            f"({limits.name('max_video_streams')})",
            "max_video_streams",
        )
    if audio > limits.max_audio_streams:
        raise VideoTooLarge(
            f"{audio} audio streams {how}; the limit is {limits.max_audio_streams} "
            f"({limits.name('max_audio_streams')})",
            "max_audio_streams",
        )
    if total > limits.max_streams:
        raise VideoTooLarge(
            f"{total} streams {how}; the limit is {limits.max_streams} "
            f"({limits.name('max_streams')})",
            "max_streams",
        )


def _check_size(width: int, height: int, limits: VideoLimits) -> None:
    if width <= 0 or height <= 0:
        raise InvalidVideo(f"the video declares an empty picture ({width}x{height})")
    long_side, short_side = max(width, height), min(width, height)
    if long_side > limits.max_long_side or short_side > limits.max_short_side:
        raise VideoTooLarge(
            f"the video is {width}x{height}; the limit is {limits.max_long_side}x"
            f"{limits.max_short_side} in either orientation ({limits.name('max_long_side')}, "
            f"{limits.name('max_short_side')})",
            "max_long_side" if long_side > limits.max_long_side else "max_short_side",
        )


def _check_timeline(frames: int, duration: float, pixel_rate: float, limits: VideoLimits) -> None:
    if frames > limits.max_frames:
        raise VideoTooLarge(
            f"the video has {frames} frames; the limit is {limits.max_frames} "
            f"({limits.name('max_frames')})",
            "max_frames",
        )
    if duration > limits.max_duration_s:
        raise VideoTooLarge(_duration_detail(duration, limits), "max_duration_s")
    if pixel_rate > limits.max_pixel_rate:
        raise VideoTooLarge(
            f"the video needs {pixel_rate:.0f} pixels per second; the limit is "
            f"{limits.max_pixel_rate} ({limits.name('max_pixel_rate')})",
            "max_pixel_rate",
        )


def _duration_detail(seconds: float, limits: VideoLimits) -> str:
    return (
        f"the video lasts {seconds:.1f} s; the limit is {limits.max_duration_s:g} s "
        f"({limits.name('max_duration_s')})"
    )


def _duration(
    stream_duration: int | None,
    time_base: Fraction,
    container_us: int | None,
    declared: DeclaredHeaders,
) -> float:
    if stream_duration:
        return float(stream_duration * time_base)
    if container_us:
        return container_us / 1_000_000
    if declared.duration_s:
        return declared.duration_s
    raise InvalidVideo("the video declares no duration")


def _frame_rate(
    average: Fraction | None, guessed: Fraction | None, frames: int, duration: float
) -> Fraction:
    for rate in (average, guessed):
        if rate is not None and rate > 0:
            return rate
    if frames > 0 and duration > 0:
        return Fraction(frames / duration).limit_denominator(1001)
    raise InvalidVideo("the video declares no frame rate")
