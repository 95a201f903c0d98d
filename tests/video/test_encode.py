"""Streaming encode: H.264 yuv420p MP4 with the source's frames, times and audio, upright, and
libx264 holding no more frames than `held_frames` says."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from service.settings import load_settings
from service.video import EncodeOptions, VideoLimits, probe
from service.video.decode import VideoSource
from service.video.encode import VideoEncoder, encoded_size, encoder_bytes, held_frames
from tests.support.videos import Clip, make_clip, with_spec


def reencode(source: Path, target: Path, limits: VideoLimits) -> VideoEncoder:
    """Decode `source` and encode it again unchanged (no colour), audio copied."""
    info = probe(source, limits)
    with VideoSource(source, info, limits) as video:
        encoder = VideoEncoder(target, info, video.audio, limits)
        last = 0
        for frame in video.frames(on_audio=encoder.copy_audio):
            encoder.write(frame.image, frame.pts)
            last = frame.duration
        encoder.close(last or None)
    return encoder


def packets(path: Path, kind: str) -> list[av.Packet]:
    with av.open(str(path)) as container:
        streams = container.streams.video if kind == "video" else container.streams.audio
        return [p for p in container.demux(*streams) if p.size]


@pytest.mark.parametrize("name", ["mp4", "mov", "webm", "mkv", "vfr"])
def test_frames_times_duration_and_audio_are_kept(
    clip: Clip, tmp_path: Path, limits: VideoLimits, name: str
) -> None:
    source, target = clip(name), tmp_path / "out.mp4"
    reencode(source, target, limits)
    before, after = probe(source, limits), probe(target, limits)
    assert after.codec == "h264" and after.frames == 24 and after.frames_declared
    with av.open(str(source)) as a, av.open(str(target)) as b:
        times_a = [float(f.time or 0) for f in a.decode(video=0)]
        times_b = [float(f.time or 0) for f in b.decode(video=0)]
        assert b.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert times_b == pytest.approx(times_a, abs=1e-3), "every frame at its own time (VFR kept)"
    iso = name in ("mp4", "mov", "vfr")
    if iso:  # the video stream lasts as long as the source's, to the tick
        assert after.duration_s == before.duration_s
    else:  # Matroska declares no stream duration: the last frame keeps its own length
        assert after.duration_s == pytest.approx(times_a[-1] + 1 / 24, abs=2e-3)
    if name != "vfr":
        assert float(after.frame_rate) == pytest.approx(float(before.frame_rate), rel=0.01)
    assert after.audio_codecs == before.audio_codecs
    audio_a, audio_b = packets(source, "audio"), packets(target, "audio")
    assert len(audio_b) == len(audio_a)
    assert [bytes(p) for p in audio_b] == [bytes(p) for p in audio_a], "copied, not re-encoded"
    if iso:  # (Matroska rounds packet durations to milliseconds; MP4 counts samples)
        seconds_a = sum(float(p.duration * p.time_base) for p in audio_a if p.duration)
        seconds_b = sum(float(p.duration * p.time_base) for p in audio_b if p.duration)
        assert seconds_b == pytest.approx(seconds_a, abs=1e-6)


def test_the_result_is_upright_with_no_rotation_flag(
    clip: Clip, tmp_path: Path, limits: VideoLimits
) -> None:
    target = tmp_path / "out.mp4"
    reencode(clip("rotated"), target, limits)
    info = probe(target, limits)
    assert info.rotation == 0 and (info.stored_width, info.stored_height) == (96, 160)


def test_odd_sides_are_padded_by_repeating_the_edge(
    clip: Clip, tmp_path: Path, limits: VideoLimits
) -> None:
    assert encoded_size(75, 45) == (76, 46)
    target = tmp_path / "out.mp4"
    reencode(clip("odd"), target, limits)
    with av.open(str(target)) as result:
        frame = next(result.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert frame.shape == (46, 76, 3)
    assert np.abs(frame[:, 75] - frame[:, 74]).mean() < 3
    assert np.abs(frame[45] - frame[44]).mean() < 3


@pytest.mark.parametrize(("lookahead", "threads"), [(0, 1), (3, 2), (10, 2)])
def test_libx264_holds_no_more_frames_than_reserved(
    tmp_path: Path, lookahead: int, threads: int
) -> None:
    limits = VideoLimits(encoder_lookahead=lookahead, encoder_threads=threads)
    spec = with_spec(width=320, height=192, frames=30, cut_at=None)
    encoder = reencode(make_clip(tmp_path / "in.mp4", spec), tmp_path / "out.mp4", limits)
    # Measured: lookahead + 1; reserved: lookahead + threads, plus the frame kept back here.
    assert lookahead + 1 <= encoder.max_held <= held_frames(limits) - 1
    assert encoder.frames_in == encoder.packets_out == 30


def test_encoder_memory_grows_with_the_frames_it_holds() -> None:
    small, large = VideoLimits(encoder_lookahead=0), VideoLimits(encoder_lookahead=40)
    assert encoder_bytes(1920, 1080, large) - encoder_bytes(1920, 1080, small) == (
        40 * 4 * 1920 * 1080
    )
    assert encoder_bytes(1920, 1080, small, audio_streams=2) > encoder_bytes(1920, 1080, small)


def test_encode_options_come_from_the_settings() -> None:
    options = EncodeOptions.from_settings(load_settings(video_crf=23, video_preset="fast"))
    assert options == EncodeOptions(crf=23, preset="fast")


def test_a_repeated_timestamp_is_moved_on_not_refused(tmp_path: Path) -> None:
    info = probe(make_clip(tmp_path / "in.mp4", with_spec(frames=3, cut_at=None)), VideoLimits())
    target = tmp_path / "out.mp4"
    with VideoEncoder(target, info, [], VideoLimits()) as encoder:
        frame = np.zeros((96, 160, 3), np.uint8)
        for pts in (0, 512, 512):
            encoder.write(frame, pts)
    with av.open(str(target)) as result:
        stream = result.streams.video[0]
        assert stream.time_base is not None
        times = [f.pts for f in result.decode(video=0)]
    assert len(times) == 3 and times == sorted(set(times))
    assert info.time_base == Fraction(1, 12288)
