"""Streaming decode: upright frames with their times, counted against the limits as decoded
(containers lie), audio handed on, and a broken file ending in InvalidVideo, never a hang."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from service.outcomes import Outcome
from service.video import InvalidVideo, VideoCancelled, VideoLimits, VideoTooLarge, probe
from service.video.decode import DecodedFrame, VideoSource, upright
from service.video.info import Orientation
from tests.support.videos import (
    CLIPS,
    Clip,
    claim_duration,
    expected_frames,
    make_clip,
    with_spec,
)


def decode_all(path: Path, limits: VideoLimits, **kwargs: object) -> list[DecodedFrame]:
    info = probe(path, limits)
    with VideoSource(path, info, limits) as source:
        return list(source.frames(**kwargs))  # type: ignore[arg-type]


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("name", ["mp4", "mov", "webm", "mkv", "vfr", "rotated", "odd"])
def test_frames_come_out_upright_and_as_made(clip: Clip, limits: VideoLimits, name: str) -> None:
    frames = decode_all(clip(name), limits)
    expected = expected_frames(CLIPS[name])
    assert [f.index for f in frames] == list(range(len(expected)))
    for got, want in zip(frames, expected, strict=True):
        assert got.image.shape == want.shape and got.image.dtype == np.uint8
        # Lossy codecs: the same picture within a few levels on average, not a rotated one.
        assert np.abs(luma(got.image) - luma(want)).mean() < 6


def test_a_rotated_picture_would_not_match(clip: Clip, limits: VideoLimits) -> None:
    """The check above can tell orientations apart: the stored (unturned) picture fails it."""
    info = probe(clip("rotated"), limits)
    stored = replace(info, orientation=Orientation(), width=160, height=96)
    with VideoSource(clip("rotated"), stored, limits) as source:
        first = next(iter(source.frames())).image
    want = expected_frames(CLIPS["rotated"])[0]
    assert first.shape != want.shape
    assert np.abs(luma(np.rot90(first, 1)) - luma(want)).mean() < 6


@pytest.mark.parametrize(
    ("rotation", "matrix", "expected"),
    [
        (0, (1, 0, 0, 1), [[0, 1, 2], [3, 4, 5]]),
        (90, (0, -1, 1, 0), [[2, 5], [1, 4], [0, 3]]),
        (270, (0, 1, -1, 0), [[3, 0], [4, 1], [5, 2]]),
        (180, (-1, 0, 0, -1), [[5, 4, 3], [2, 1, 0]]),
        (180, (-1, 0, 0, 1), [[2, 1, 0], [5, 4, 3]]),  # mirrored left to right
        (0, (1, 0, 0, -1), [[3, 4, 5], [0, 1, 2]]),  # mirrored top to bottom
    ],
    ids=["none", "90 ccw", "90 cw", "180", "hflip", "vflip"],
)
def test_display_matrices_are_applied_like_ffmpeg(
    rotation: int, matrix: tuple[int, int, int, int], expected: list[list[int]]
) -> None:
    stored = np.arange(6).reshape(2, 3)[:, :, None].repeat(3, axis=2)
    turned = upright(stored, Orientation(rotation, matrix))
    assert turned[:, :, 0].tolist() == expected
    assert turned.flags.c_contiguous


def test_timestamps_are_the_streams_own(clip: Clip, limits: VideoLimits) -> None:
    info = probe(clip("vfr"), limits)
    frames = decode_all(clip("vfr"), limits)
    seconds = [f.seconds(info.time_base) for f in frames]
    wanted = [ms / 1000 for ms in CLIPS["vfr"].timestamps_ms()]
    assert seconds == pytest.approx(wanted, abs=1e-3)


def test_audio_packets_are_handed_on_untouched(clip: Clip, limits: VideoLimits) -> None:
    packets: list[int] = []
    frames = decode_all(clip("mkv"), limits, on_audio=lambda p: packets.append(p.stream.index))
    with av.open(str(clip("mkv"))) as source:
        expected = sum(1 for p in source.demux(*source.streams.audio) if p.size)
    assert len(frames) == 24 and len(packets) == expected and set(packets) == {1, 2}


def test_decoder_threads_are_bounded(clip: Clip) -> None:
    limits = VideoLimits(decoder_threads=1)
    with VideoSource(clip("mp4"), probe(clip("mp4"), limits), limits) as source:
        assert source.video.codec_context.thread_count == 1


def test_a_container_that_lies_about_its_length_is_counted_as_decoded(tmp_path: Path) -> None:
    """A WebM whose Segment claims 0.2 s: 5 frames by its own account, 40 as decoded."""
    spec = with_spec(container="webm", frames=40, cut_at=None)
    path = tmp_path / "liar.webm"
    path.write_bytes(claim_duration(make_clip(tmp_path / "honest.webm", spec).read_bytes(), 0.2))
    limits = VideoLimits(max_frames=20)
    info = probe(path, limits)
    assert info.frames <= 5 and info.duration_s == pytest.approx(0.2)
    with pytest.raises(VideoTooLarge) as error:
        decode_all(path, limits)
    assert error.value.limit == "max_frames" and "as decoded" in error.value.message
    with pytest.raises(VideoTooLarge) as error:
        decode_all(path, VideoLimits(max_duration_s=0.3))
    assert error.value.limit == "max_duration_s" and "as decoded" in error.value.message


def test_a_million_frames_stop_at_the_limit_as_decoded(million: Path) -> None:
    path = million
    info = probe(path, VideoLimits(max_frames=2_000_000))
    assert info.frames == 1_000_000
    started = time.monotonic()
    with VideoSource(path, info, VideoLimits(max_frames=100)) as source:
        count = 0
        with pytest.raises(VideoTooLarge, match="more than 100 frames as decoded"):
            for _ in source.frames():
                count += 1
    assert count == 100 and time.monotonic() - started < 5


def _cut_mid_stream(data: bytes) -> bytes:
    return data[: int(len(data) * 0.6)]


def _corrupt_mid_stream(data: bytes) -> bytes:
    out = bytearray(data)
    start = out.find(b"mdat") + 200
    out[start : start + len(out) // 3] = np.random.default_rng(0).bytes(len(out) // 3)
    return bytes(out[: len(data)])


@pytest.mark.parametrize("damage", [_cut_mid_stream, _corrupt_mid_stream], ids=["cut", "corrupt"])
def test_a_damaged_stream_ends_cleanly_or_as_invalid_video_never_hangs(
    tmp_path: Path, limits: VideoLimits, damage: object
) -> None:
    assert callable(damage)
    spec = with_spec(faststart=True, audio=True)
    path = tmp_path / "damaged.mp4"
    path.write_bytes(damage(make_clip(tmp_path / "good.mp4", spec).read_bytes()))
    started = time.monotonic()
    try:
        frames = decode_all(path, limits, on_audio=lambda p: None)
        assert len(frames) <= 24
    except InvalidVideo as error:
        assert error.outcome is Outcome.INVALID_VIDEO
        assert str(tmp_path) not in error.message
    assert time.monotonic() - started < 10


def test_cancel_stops_decoding_at_the_next_packet(clip: Clip, limits: VideoLimits) -> None:
    cancel = threading.Event()
    info = probe(clip("mp4"), limits)
    seen = 0
    with VideoSource(clip("mp4"), info, limits, cancel) as source, pytest.raises(VideoCancelled):
        for _ in source.frames():
            seen += 1
            if seen == 3:
                cancel.set()
    assert seen <= 4 + limits.decoder_threads


def test_the_decoder_cannot_allocate_a_frame_over_the_limit(clip: Clip) -> None:
    """Defence in depth behind the probe: FFmpeg's max_pixels refuses a frame larger than the
    resolution limit (a stream that grows mid-way), whatever was checked before."""
    info = probe(clip("mp4"), VideoLimits())
    with (
        VideoSource(clip("mp4"), info, VideoLimits(max_long_side=64, max_short_side=64)) as source,
        pytest.raises(InvalidVideo),
    ):
        next(iter(source.frames()))
