"""colorize_video(pipeline=True): a window colours in the job's own thread while the previous one
is stabilised and encoded, for one more window of memory, reserved; the same film comes out,
and cancel, failure and the end leave no thread and no file behind."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from service.video import VideoCancelled, VideoLimits, VideoMemoryPlan, colorize_video, probe
from tests.support.engines import JitterEngine
from tests.support.videos import Clip, colorize_with
from tests.video.test_runner import Recorder, frames_of


def colour_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("colorize-video-colour")]


def test_the_pipelined_film_is_the_same_and_its_extra_window_is_reserved(
    clip: Clip, tmp_path: Path, jitter: JitterEngine, limits: VideoLimits
) -> None:
    info = probe(clip("mp4"), limits)
    callers: set[str] = set()

    def colorize(images: list[np.ndarray]) -> list[np.ndarray]:
        callers.add(threading.current_thread().name)
        return colorize_with(jitter)(images)

    results = {}
    for pipeline in (False, True):
        recorder = Recorder()
        target = tmp_path / f"pipeline-{pipeline}.mp4"
        colorize_video(
            clip("mp4"), target, info, recorder.colorize(colorize), batch=5, stabilize=True,
            reserve=recorder.reserve, limits=limits, pipeline=pipeline,
        )  # fmt: skip
        reserved = dict(v for k, v in recorder.events if k == "reserve")  # type: ignore[misc]
        results[pipeline] = (frames_of(target), reserved)
    (plain, reserved_plain), (piped, reserved_piped) = results[False], results[True]
    assert len(piped) == len(plain) == 24
    assert max(np.abs(a.astype(int) - b).mean() for a, b in zip(plain, piped, strict=True)) < 1
    assert reserved_piped == VideoMemoryPlan.for_video(info, 5, True, limits, True).reservations
    assert reserved_piped["video_pipeline"] == 2 * 5 * 160 * 96 * 3
    assert "video_pipeline" not in reserved_plain
    assert any(name.startswith("colorize-video-colour") for name in callers)
    assert colour_threads() == []


def test_cancel_and_failure_stop_the_colour_thread_and_leave_no_file(
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

    with pytest.raises(VideoCancelled):
        colorize_video(
            clip("mp4"), tmp_path / "r.mp4", probe(clip("mp4"), limits), colorize, batch=4,
            stabilize=True, reserve=Recorder().reserve, cancel=cancel, limits=limits,
            pipeline=True,
        )  # fmt: skip

    def broken(images: list[np.ndarray]) -> list[np.ndarray]:
        raise RuntimeError("the engine broke")

    with pytest.raises(RuntimeError, match="the engine broke"):
        colorize_video(
            clip("mp4"), tmp_path / "r.mp4", probe(clip("mp4"), limits), broken, batch=4,
            stabilize=False, reserve=Recorder().reserve, limits=limits, pipeline=True,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []
    assert colour_threads() == []
