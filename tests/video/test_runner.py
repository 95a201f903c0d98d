"""colorize_video end to end: the result keeps frames, rate, duration, orientation and audio and
is in colour; every buffer is reserved before it exists; cancel, failure and the disk limit
leave no file; stabilised output flickers less than frame by frame."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from service.engines.base import Engine
from service.imaging.decode import GRAYSCALE_CHROMA, chroma_level
from service.memory import MemoryManager, MemoryRefused
from service.video import (
    StabilizerSettings,
    VideoCancelled,
    VideoLimits,
    VideoMemoryPlan,
    VideoProgress,
    VideoTooLarge,
    cdc,
    colorize_video,
    probe,
    static_delta_ab,
)
from tests.support.engines import JitterEngine
from tests.support.videos import (
    CLIPS,
    Clip,
    claim_duration,
    colorize_with,
    expected_frames,
    make_clip,
    million_frames,
    with_spec,
)
from tests.video.test_stabilize import QUANTISATION, ab_distance, stabilised

COMPRESSION = 6.0
"""ab units H.264 (CRF 18, yuv420p) may add between two results' frames at one pixel (99.9th
percentile): each is compressed on its own."""

Events = list[tuple[str, object]]


class Recorder:
    """A `reserve` that records what is reserved, and when, beside the colorize calls."""

    def __init__(self) -> None:
        self.events: Events = []

    @contextmanager
    def reserve(self, nbytes: int, purpose: str) -> Iterator[None]:
        self.events.append(("reserve", (purpose, nbytes)))
        try:
            yield
        finally:
            self.events.append(("release", purpose))

    def colorize(
        self, inner: Callable[[list[np.ndarray]], list[np.ndarray]]
    ) -> Callable[..., list[np.ndarray]]:
        def call(images: list[np.ndarray]) -> list[np.ndarray]:
            self.events.append(("colorize", len(images)))
            return inner(images)

        return call


def run(
    clip: Clip,
    name: str,
    target: Path,
    engine: JitterEngine,
    limits: VideoLimits,
    batch: int = 8,
    stabilize: bool = True,
    **kwargs: object,
) -> tuple[Recorder, object]:
    recorder = Recorder()
    info = probe(clip(name), limits)
    result = colorize_video(
        clip(name),
        target,
        info,
        recorder.colorize(colorize_with(engine)),
        batch=batch,
        stabilize=stabilize,
        reserve=recorder.reserve,
        limits=limits,
        **kwargs,  # type: ignore[arg-type]
    )
    return recorder, result


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as video:
        return [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]


@pytest.mark.parametrize("name", ["mp4", "mov", "webm", "vfr", "rotated"])
def test_the_result_keeps_the_film_and_is_in_colour(
    clip: Clip, tmp_path: Path, jitter: JitterEngine, limits: VideoLimits, name: str
) -> None:
    target = tmp_path / "result.mp4"
    run(clip, name, target, jitter, limits)
    before, after = probe(clip(name), limits), probe(target, limits)
    assert after.frames == 24 and (after.width, after.height) == (before.width, before.height)
    assert after.rotation == 0
    assert float(after.frame_rate) == pytest.approx(float(before.frame_rate), rel=0.01)
    assert after.duration_s == pytest.approx(before.duration_s, abs=0.01)
    assert after.audio_codecs == before.audio_codecs
    result = frames_of(target)
    assert all(chroma_level(f) > GRAYSCALE_CHROMA for f in result)
    expected = expected_frames(CLIPS[name])
    for got, want in zip(result, expected, strict=True):  # same picture, upright
        luma = np.array([0.299, 0.587, 0.114])
        assert np.abs(got @ luma - want @ luma).mean() < 8
    assert not list(tmp_path.glob(".*partial")), "no temporary file left"


def test_every_buffer_is_reserved_before_the_first_frame_and_held_to_the_end(
    clip: Clip, tmp_path: Path, jitter: JitterEngine, limits: VideoLimits
) -> None:
    recorder, _ = run(clip, "mp4", tmp_path / "r.mp4", jitter, limits, batch=5)
    kinds = [kind for kind, _ in recorder.events]
    first_colorize, last_colorize = (
        kinds.index("colorize"),
        len(kinds) - kinds[::-1].index("colorize"),
    )
    reserved = dict(value for kind, value in recorder.events if kind == "reserve")  # type: ignore[misc]
    plan = VideoMemoryPlan.for_video(probe(clip("mp4"), limits), 5, True, limits)
    assert reserved == plan.reservations
    assert set(reserved) == {
        "video_decoder",
        "video_window",
        "video_colored",
        "video_stabilizer",
        "video_encoder",
        "video_index",
    }
    assert reserved["video_window"] == 5 * 160 * 96 * 3
    assert reserved["video_stabilizer"] == (4 + 2 + 104) * 160 * 96
    assert all(k == "reserve" for k in kinds[:first_colorize])
    assert all(k == "release" for k in kinds[last_colorize:]) and kinds.count("release") == 6
    assert [n for k, n in recorder.events if k == "colorize"] == [5, 5, 5, 5, 4]


def test_without_stabilising_nothing_is_reserved_for_it(
    clip: Clip, tmp_path: Path, jitter: JitterEngine, limits: VideoLimits
) -> None:
    recorder, _ = run(clip, "silent", tmp_path / "r.mp4", jitter, limits, stabilize=False)
    assert "video_stabilizer" not in {v[0] for k, v in recorder.events if k == "reserve"}  # type: ignore[index]


def test_the_reservations_are_held_in_the_memory_manager_while_frames_are_coloured(
    clip: Clip, tmp_path: Path, jitter: JitterEngine, limits: VideoLimits
) -> None:
    manager = MemoryManager(torch.device("cpu"))
    seen: list[dict[str, int]] = []

    def colorize(images: list[np.ndarray]) -> list[np.ndarray]:
        seen.append(manager.held_by_purpose())
        return colorize_with(jitter)(images)

    info = probe(clip("silent"), limits)
    colorize_video(
        clip("silent"), tmp_path / "r.mp4", info, colorize, batch=8, stabilize=True,
        reserve=lambda n, purpose: manager.reserve(n, 0.0, purpose), limits=limits,
    )  # fmt: skip
    plan = VideoMemoryPlan.for_video(info, 8, True, limits)
    assert seen and all(held == plan.reservations for held in seen)
    assert manager.held_by_purpose() == {}


def test_a_refused_reservation_decodes_nothing_and_leaves_no_file(
    clip: Clip, tmp_path: Path, limits: VideoLimits
) -> None:
    def refuse(nbytes: int, purpose: str) -> MemoryManager:
        raise MemoryRefused(f"no room for {purpose}", requested=nbytes, budget=0)

    def colorize(images: list[np.ndarray]) -> list[np.ndarray]:
        raise AssertionError("nothing may be decoded or coloured")

    target = tmp_path / "r.mp4"
    with pytest.raises(MemoryRefused):
        colorize_video(
            clip("mp4"), target, probe(clip("mp4"), limits), colorize, batch=4,
            stabilize=True, reserve=refuse, limits=limits,  # type: ignore[arg-type]
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_progress_reports_frames_rate_and_time_left(
    clip: Clip, tmp_path: Path, jitter: JitterEngine, limits: VideoLimits
) -> None:
    reports: list[VideoProgress] = []
    run(clip, "mp4", tmp_path / "r.mp4", jitter, limits, batch=10, progress=reports.append)
    assert [r.frames_done for r in reports] == [10, 20, 24]
    assert all(r.frames_total == 24 and r.frames_per_second > 0 for r in reports)
    assert reports[-1].seconds_left == 0
    assert reports[0].seconds_left is not None and reports[0].seconds_left > 0


def test_cancel_stops_within_a_batch_and_removes_the_result(
    clip: Clip, tmp_path: Path, jitter: JitterEngine, limits: VideoLimits
) -> None:
    cancel = threading.Event()
    calls = 0

    def colorize(images: list[np.ndarray]) -> list[np.ndarray]:
        nonlocal calls
        calls += 1
        if calls == 2:
            cancel.set()
        return colorize_with(jitter)(images)

    target = tmp_path / "r.mp4"
    started = time.monotonic()
    with pytest.raises(VideoCancelled) as info:
        colorize_video(
            clip("mp4"), target, probe(clip("mp4"), limits), colorize, batch=4,
            stabilize=True, reserve=Recorder().reserve, cancel=cancel, limits=limits,
        )  # fmt: skip
    assert time.monotonic() - started < 5
    assert calls == 2 and "cancelled after 4 frames" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_a_failing_engine_leaves_no_file(clip: Clip, tmp_path: Path, limits: VideoLimits) -> None:
    def colorize(images: list[np.ndarray]) -> list[np.ndarray]:
        raise RuntimeError("the engine broke")

    with pytest.raises(RuntimeError, match="the engine broke"):
        colorize_video(
            clip("mp4"), tmp_path / "r.mp4", probe(clip("mp4"), limits), colorize, batch=4,
            stabilize=False, reserve=Recorder().reserve, limits=limits,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_a_container_that_understates_its_length_cannot_outgrow_the_reservation(
    tmp_path: Path,
) -> None:
    """1,500 frames in a Matroska file whose Segment says 0.1 s (100 frames at 1000 fps): the
    sample index was reserved for about that many, so decoding stops past the allowance."""
    honest = million_frames(tmp_path / "honest.mkv", frames=1500, container="mkv")
    liar = tmp_path / "liar.mkv"
    liar.write_bytes(claim_duration(honest.read_bytes(), 0.1))
    limits = VideoLimits()
    info = probe(liar, limits)
    plan = VideoMemoryPlan.for_video(info, 50, False, limits)
    assert info.frames == 100 and plan.max_frames == 1125
    assert plan.index == 128 * (plan.max_frames + plan.max_audio_packets)
    with pytest.raises(VideoTooLarge) as error:
        colorize_video(
            liar, tmp_path / "r.mp4", info, lambda images: images, batch=50, stabilize=False,
            reserve=Recorder().reserve, limits=limits,
        )  # fmt: skip
    assert error.value.limit == "frames_declared"
    assert "more than 1125 frames as decoded" in error.value.message
    assert not (tmp_path / "r.mp4").exists()


def test_the_per_job_disk_limit_stops_a_growing_result(
    clip: Clip, tmp_path: Path, jitter: JitterEngine
) -> None:
    size = clip("silent").stat().st_size
    limits = VideoLimits(max_job_disk_bytes=size + 500)
    with pytest.raises(VideoTooLarge) as info:
        run(clip, "silent", tmp_path / "r.mp4", jitter, limits, batch=4)
    assert info.value.limit == "max_job_disk_bytes"
    assert list(tmp_path.iterdir()) == []


class Cached:
    """Colours each distinct frame once: both runs below see the very same engine output."""

    def __init__(self, colorize: Callable[[list[np.ndarray]], list[np.ndarray]]) -> None:
        self.colorize = colorize
        self.kept: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        """frame bytes -> (frame, its colourised version), in the order first seen."""

    def __call__(self, images: list[np.ndarray]) -> list[np.ndarray]:
        missing = [i for i in images if i.tobytes() not in self.kept]
        for image, out in zip(missing, self.colorize(missing) if missing else [], strict=True):
            self.kept[image.tobytes()] = (image, out)
        return [self.kept[i.tobytes()][1].copy() for i in images]


def flicker_of(
    source: Path, directory: Path, colorize: Callable[..., list[np.ndarray]], batch: int
) -> dict[str, dict[str, float]]:
    """CDC and static |delta ab| of the decoded results, frame by frame and stabilised, and the
    largest ab distance between the two results' frames."""
    limits = VideoLimits()
    info = probe(source, limits)
    results = {}
    for stabilize in (False, True):
        target = directory / f"{'stabilised' if stabilize else 'frame-by-frame'}.mp4"
        colorize_video(
            source, target, info, colorize, batch=batch, stabilize=stabilize,
            reserve=Recorder().reserve, limits=limits,
        )  # fmt: skip
        results[target.stem] = frames_of(target)
    plain, steady = results["frame-by-frame"], results["stabilised"]
    distance = max(
        float(np.percentile(ab_distance(a, b), 99.9)) for a, b in zip(plain, steady, strict=True)
    )
    return {
        "frame-by-frame": {"cdc": cdc(plain), "static": static_delta_ab(plain)},
        "stabilised": {"cdc": cdc(steady), "static": static_delta_ab(steady), "distance": distance},
    }


def test_stabilised_results_flicker_less_within_the_bound_jitter_engine(
    tmp_path: Path, jitter: JitterEngine
) -> None:
    """The bench's clip (48 frames, a cut at 32): a one-second clip is mostly its cut, which
    no stabiliser changes (measured here: CDC x0.53, static x0.41, distance 15.0)."""
    source = make_clip(tmp_path / "pan.mp4", with_spec(frames=48, cut_at=32))
    figures = flicker_of(source, tmp_path, Cached(colorize_with(jitter)), batch=8)
    plain, steady = figures["frame-by-frame"], figures["stabilised"]
    assert steady["cdc"] < 0.65 * plain["cdc"]
    assert steady["static"] < 0.55 * plain["static"]
    # The bound (12) plus what H.264 at CRF 18 does to two different chroma planes.
    assert steady["distance"] <= StabilizerSettings().bound + COMPRESSION


def test_stabilised_results_flicker_less_ddcolor_tiny_generated_weights(
    tmp_path: Path, ddcolor_tiny: Engine
) -> None:
    """DDColor-tiny with generated weights tints whole frames differently from one frame to
    the next, as DDColor's users report of the real one (measured: CDC x0.62, static x0.78)."""
    spec = with_spec(frames=8, cut_at=None, width=128, height=80)
    network = Cached(colorize_with(ddcolor_tiny))
    figures = flicker_of(make_clip(tmp_path / "pan.mp4", spec), tmp_path, network, batch=4)
    plain, steady = figures["frame-by-frame"], figures["stabilised"]
    assert steady["cdc"] < 0.75 * plain["cdc"]
    assert steady["static"] < 0.9 * plain["static"]
    assert_within_the_bound(network)


def test_stabilised_results_keep_eccv16s_colour_distribution_generated_weights(
    tmp_path: Path, eccv16: Engine
) -> None:
    """eccv16 with generated weights paints per-pixel colour noise: a new sample at every pixel
    of every frame, about 35 ab units from the last, three times the bound. Its histograms are
    as steady as noise gets and the stabiliser leaves that texture alone, so CDC holds (x0.99;
    the per-pixel average this replaced narrowed the noise: x1.06) while the regional colour
    calms down a little (static x0.94)."""
    spec = with_spec(frames=8, cut_at=None, width=128, height=80)
    network = Cached(colorize_with(eccv16))
    figures = flicker_of(make_clip(tmp_path / "pan.mp4", spec), tmp_path, network, batch=4)
    plain, steady = figures["frame-by-frame"], figures["stabilised"]
    assert steady["cdc"] < 1.03 * plain["cdc"]
    assert steady["static"] < plain["static"]
    assert_within_the_bound(network)


def assert_within_the_bound(network: Cached) -> None:
    """The bound, before compression (4:2:0 averages a noisy engine's chroma over 2x2 pixels,
    so the decoded results cannot be compared pixel by pixel)."""
    sources, outputs = zip(*network.kept.values(), strict=True)
    steadied = stabilised(list(outputs), list(sources), batch=4)
    worst = max(float(ab_distance(a, b).max()) for a, b in zip(outputs, steadied, strict=True))
    assert worst <= StabilizerSettings().bound + QUANTISATION
