"""probe(): what a video is, and every bad input refused before a frame is decoded, with its exact
outcome and a detail naming the limit or the defect (issue 21, item 6)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from service.api.outcomes import ANSWERS
from service.outcomes import Outcome
from service.video import Container, VideoError, VideoLimits, VideoTooLarge, probe
from tests.support.videos import (
    HTML,
    Clip,
    animated_gif,
    apng,
    claim_size,
    make_clip,
    still_jpeg,
    still_png,
    truncated,
    with_spec,
)


@dataclass(frozen=True)
class Inputs:
    """What the cases are made from: the session's clips and its million-frame file."""

    clip: Clip
    million: Path


Make = Callable[[Inputs, Path], Path]


def data(make_bytes: Callable[[], bytes], name: str = "upload.mp4") -> Make:
    def make(inputs: Inputs, directory: Path) -> Path:
        path = directory / name
        path.write_bytes(make_bytes())
        return path

    return make


def from_clip(name: str, change: Callable[[bytes], bytes]) -> Make:
    def make(inputs: Inputs, directory: Path) -> Path:
        path = directory / f"changed-{name}"
        path.write_bytes(change(inputs.clip(name).read_bytes()))
        return path

    return make


def generated(**spec: object) -> Make:
    def make(inputs: Inputs, directory: Path) -> Path:
        s = with_spec(**spec)
        return make_clip(directory / f"generated.{s.container}", s)

    return make


def audio_only(codec: str, fmt: str) -> Make:
    """A file whose only stream is audio (`codec` in `fmt`)."""

    def make(inputs: Inputs, directory: Path) -> Path:
        path = directory / f"audio.{fmt}"
        rate = 48000 if codec == "libopus" else 44100
        with av.open(str(path), "w", format=fmt) as out:
            stream = out.add_stream(codec, rate=rate)
            stream.layout = "mono"
            frame = av.AudioFrame(format=stream.format.name, layout="mono", samples=960)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate, frame.pts = rate, 0
            out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        return path

    return make


def two_videos(inputs: Inputs, directory: Path) -> Path:
    """A Matroska file with two video streams (a second angle, say)."""
    path = directory / "two.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        streams = [out.add_stream("libx264", rate=24) for _ in range(2)]
        for stream in streams:
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
        for stream in streams:
            out.mux(stream.encode(picture))
            out.mux(stream.encode(None))
    return path


def video_with_pcm(inputs: Inputs, directory: Path) -> Path:
    """A MOV with a PCM audio track, which no MP4 can carry unchanged."""
    path = directory / "pcm.mov"
    with (
        av.open(str(inputs.clip("silent")), "r") as source,
        av.open(str(path), "w", format="mov") as out,
    ):
        video = out.add_stream_from_template(source.streams.video[0])
        pcm = out.add_stream("pcm_s16le", rate=44100)
        pcm.layout = "mono"
        for packet in source.demux(source.streams.video[0]):
            if packet.size:
                packet.stream = video
                out.mux(packet)
        frame = av.AudioFrame(format="s16", layout="mono", samples=1024)
        frame.planes[0].update(bytes(2048))
        frame.sample_rate, frame.pts = 44100, 0
        out.mux(pcm.encode(frame))
        out.mux(pcm.encode(None))
    return path


@dataclass(frozen=True)
class Bad:
    id: str
    make: Make
    outcome: Outcome
    detail: str
    """A part of the message the client reads."""
    limits: dict[str, object] | None = None
    limit: str | None = None
    """For 413: the VideoLimits field the error names."""


BAD = [
    Bad("zero-byte file", data(lambda: b""), Outcome.INVALID_VIDEO, "the file is empty"),
    Bad(
        "moov missing (upload cut in half)",
        from_clip("mp4", truncated),
        Outcome.INVALID_VIDEO,
        "no complete moov box: the upload was cut short",
    ),
    Bad(
        "header claims 16000x16000",
        from_clip("mp4", lambda d: claim_size(d, 16000, 16000)),
        Outcome.VIDEO_TOO_LARGE,
        "the video is 16000x16000; the limit is 3840x2160",
        limit="max_long_side",
    ),
    Bad(
        "a million tiny frames",
        lambda inputs, directory: inputs.million,
        Outcome.VIDEO_TOO_LARGE,
        "the container declares 1000000 frames; the limit is 648000 (COLORIZE_VIDEO_MAX_FRAMES)",
        limit="max_frames",
    ),
    Bad("still PNG", data(still_png), Outcome.INVALID_VIDEO, "still image (PNG)"),
    Bad("still JPEG", data(still_jpeg), Outcome.INVALID_VIDEO, "still image (JPEG)"),
    Bad("animated GIF", data(animated_gif), Outcome.INVALID_VIDEO, "GIF (animated or not)"),
    Bad("APNG", data(apng), Outcome.INVALID_VIDEO, "animated PNG (APNG) is an image"),
    Bad(
        "MKV with 20 audio streams",
        generated(container="mkv", audio=True, audio_streams=20, frames=4, cut_at=None),
        Outcome.VIDEO_TOO_LARGE,
        "20 audio streams declared; the limit is 4 (COLORIZE_VIDEO_MAX_AUDIO_STREAMS)",
        limit="max_audio_streams",
    ),
    Bad("HTML named .mp4", data(lambda: HTML), Outcome.UNSUPPORTED_FORMAT, "HTML is not a video"),
    Bad(
        "random bytes named .mov",
        data(lambda: bytes(range(256)) * 8, "clip.mov"),
        Outcome.UNSUPPORTED_FORMAT,
        "unrecognised file content",
    ),
    Bad(
        "audio only (M4A brand)",
        audio_only("aac", "ipod"),
        Outcome.UNSUPPORTED_FORMAT,
        "M4A audio is not a video",
    ),
    Bad(
        "audio only (MP4 brand)",
        audio_only("aac", "mp4"),
        Outcome.INVALID_VIDEO,
        "no video stream",
    ),
    Bad(
        "audio only (WebM)",
        audio_only("libopus", "webm"),
        Outcome.INVALID_VIDEO,
        "no video stream",
    ),
    Bad(
        "two video streams",
        two_videos,
        Outcome.VIDEO_TOO_LARGE,
        "2 video streams declared; at most 1 is coloured (VideoLimits.max_video_streams)",
        limit="max_video_streams",
    ),
    Bad(
        "PCM audio cannot be copied into MP4",
        video_with_pcm,
        Outcome.UNSUPPORTED_FORMAT,
        "audio codec 'pcm_s16le' cannot be copied into an MP4 result unchanged",
    ),
    Bad(
        "over the duration limit",
        from_clip("mp4", lambda d: d),
        Outcome.VIDEO_TOO_LARGE,
        "the video lasts 1.0 s; the limit is 0.5 s (COLORIZE_VIDEO_MAX_DURATION_S)",
        limits={"max_duration_s": 0.5},
        limit="max_duration_s",
    ),
    Bad(
        "over the pixel rate limit",
        from_clip("mp4", lambda d: d),
        Outcome.VIDEO_TOO_LARGE,
        "368640 pixels per second; the limit is 100000 (COLORIZE_VIDEO_MAX_PIXEL_RATE)",
        limits={"max_pixel_rate": 100_000},
        limit="max_pixel_rate",
    ),
    Bad(
        "over the stream limit",
        from_clip("mkv", lambda d: d),
        Outcome.VIDEO_TOO_LARGE,
        "3 streams declared; the limit is 2 (COLORIZE_VIDEO_MAX_STREAMS)",
        limits={"max_streams": 2},
        limit="max_streams",
    ),
    Bad(
        "portrait over the short side",
        from_clip("rotated", lambda d: d),
        Outcome.VIDEO_TOO_LARGE,
        "the limit is 320x90 in either orientation",
        limits={"max_long_side": 320, "max_short_side": 90},
        limit="max_short_side",
    ),
    Bad(
        "upload over the per-job disk limit",
        from_clip("mp4", lambda d: d),
        Outcome.VIDEO_TOO_LARGE,
        "one video job may use 1000 bytes of disk (COLORIZE_VIDEO_MAX_JOB_DISK_BYTES)",
        limits={"max_job_disk_bytes": 1000},
        limit="max_job_disk_bytes",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[b.id for b in BAD])
def test_bad_inputs_are_refused_with_their_outcome(
    case: Bad, clip: Clip, million: Path, tmp_path: Path, limits: VideoLimits
) -> None:
    path = case.make(Inputs(clip, million), tmp_path)
    started = time.monotonic()
    with pytest.raises(VideoError) as info:
        probe(path, replace(limits, **case.limits) if case.limits else limits)
    assert time.monotonic() - started < 5, "refusing must not decode the video"
    assert info.value.outcome is case.outcome
    assert case.detail in info.value.message
    assert str(tmp_path) not in info.value.message, "details never name a path on this machine"
    if case.limit is not None:
        assert isinstance(info.value, VideoTooLarge) and info.value.limit == case.limit


@pytest.mark.parametrize(
    ("outcome", "status", "error"),
    [
        (Outcome.INVALID_VIDEO, 422, "undecodable_video"),
        (Outcome.VIDEO_TOO_LARGE, 413, "video_too_large"),
        (Outcome.UNSUPPORTED_FORMAT, 415, "unsupported_format"),
    ],
)
def test_video_outcomes_answer_as_documented(outcome: Outcome, status: int, error: str) -> None:
    assert (ANSWERS[outcome].status, ANSWERS[outcome].error) == (status, error)


GOOD = [
    ("mp4", Container.MP4, 160, 96, 0, ("aac",)),
    ("mov", Container.MOV, 160, 96, 0, ("aac",)),
    ("webm", Container.WEBM, 160, 96, 0, ("opus",)),
    ("mkv", Container.MATROSKA, 160, 96, 0, ("aac", "aac")),
    ("rotated", Container.MP4, 96, 160, 90, ("aac",)),
    ("vfr", Container.MP4, 160, 96, 0, ("aac",)),
]


@pytest.mark.parametrize(
    ("name", "container", "width", "height", "rotation", "audio"), GOOD, ids=[g[0] for g in GOOD]
)
def test_good_clips_probe_as_made(
    clip: Clip,
    limits: VideoLimits,
    name: str,
    container: Container,
    width: int,
    height: int,
    rotation: int,
    audio: tuple[str, ...],
) -> None:
    info = probe(clip(name), limits)
    assert (info.container, info.width, info.height) == (container, width, height)
    assert info.rotation == rotation
    assert info.audio_codecs == audio
    # Matroska declares no count: duration x rate, and its duration includes the audio's tail.
    assert info.frames == 24 if info.frames_declared else abs(info.frames - 24) <= 1
    assert info.codec in ("h264", "vp8")


def test_a_phone_video_is_upright_after_rotation(clip: Clip, limits: VideoLimits) -> None:
    info = probe(clip("rotated"), limits)
    assert (info.stored_width, info.stored_height) == (160, 96), "stored landscape"
    assert (info.width, info.height) == (96, 160), "shown portrait"


def test_constant_rate_and_duration(clip: Clip, limits: VideoLimits) -> None:
    info = probe(clip("mp4"), limits)
    assert info.frame_rate == Fraction(24)
    assert info.duration_s == pytest.approx(1.0)
    assert info.frames_declared
    assert info.pixel_rate == 160 * 96 * 24


def test_variable_frame_rate_is_accepted(clip: Clip, limits: VideoLimits) -> None:
    info = probe(clip("vfr"), limits)
    # Gaps of 1, 1, 3, 1, 2 frames at 24 fps: 24 frames over 38 frame slots.
    assert info.frames == 24
    assert float(info.frame_rate) == pytest.approx(24 * 24 / 38, rel=0.05)


def test_webm_declares_no_count_so_it_is_estimated(clip: Clip, limits: VideoLimits) -> None:
    info = probe(clip("webm"), limits)
    assert not info.frames_declared
    assert info.frames == 24


def test_limits_come_from_the_settings() -> None:
    from service.settings import load_settings

    settings = load_settings(video_max_frames=100, video_containers="mp4,webm")
    limits = VideoLimits.from_settings(settings)
    assert limits.max_frames == 100 and limits.containers == ("mp4", "webm")
    assert VideoLimits.from_settings(load_settings()) == VideoLimits()
