"""A video's frames go through the image pipeline as jobs of their own (service/worker/frames.py):
batched with each other, admitted like photos, finished as arrays, failing as one."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from service.imaging.encode import encode_image
from service.memory.host import device_manager
from service.outcomes import Outcome
from service.settings import Settings
from service.worker.frames import FramesFailed, colorize_frames
from service.worker.worker import Worker
from tests.support.apps import scripted_engines
from tests.support.images import is_colour


@pytest.fixture
def worker():  # type: ignore[no-untyped-def]
    settings = Settings(batch_max_size=4, batch_max_wait_ms=50)
    manager = device_manager(torch.device("cpu"), 0.8)
    worker = Worker(scripted_engines(torch.device("cpu")), manager, settings, encode_image)
    worker.start()
    yield worker
    worker.stop(timeout=5)


def test_frames_come_back_in_order_in_colour_and_batched(worker, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    frames = [np.ascontiguousarray(astronaut[i : i + 64, i : i + 96]) for i in range(8)]
    outputs = colorize_frames(worker, "eccv16", frames)
    assert [o.shape for o in outputs] == [f.shape for f in frames]
    assert all(is_colour(o) for o in outputs)
    engine = worker.engines["eccv16"]
    assert max(engine.batches) > 1, "frames share forward passes"
    assert worker.host.snapshot().reserved_for_jobs == 0


def test_a_frame_that_fails_fails_the_call(worker, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    engine = worker.engines["eccv16"]
    engine.failures.extend([torch.OutOfMemoryError("CUDA out of memory")] * 8)
    with pytest.raises(FramesFailed) as caught:
        colorize_frames(worker, "eccv16", [astronaut[:32, :32].copy()] * 3)
    assert caught.value.failure.outcome is Outcome.OOM
    assert worker.queue_depth == 0


def _in_thread(call):  # type: ignore[no-untyped-def]
    """Run `call()` in a thread; returns (thread, outcome list: the value or the exception)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_cancel_takes_the_waiting_frames_out_at_once(worker, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    # A DELETE stops a video within one forward pass, not one batch of frames.
    engine = worker.engines["eccv16"]
    engine.gate.clear()
    cancel = threading.Event()
    frames = [astronaut[:32, :32].copy() for _ in range(8)]
    thread, outcome = _in_thread(lambda: colorize_frames(worker, "eccv16", frames, cancel=cancel))
    assert engine.started.wait(5)
    started = time.monotonic()
    cancel.set()
    thread.join(2)
    assert time.monotonic() - started < 0.5
    assert isinstance(outcome[0], FramesFailed)
    assert outcome[0].failure.outcome is Outcome.CANCELLED
    assert worker.queue.frames_waiting() == 0
    engine.gate.set()


def test_draining_spares_a_running_videos_frames(
    worker, astronaut: np.ndarray, gray_png: bytes
) -> None:  # type: ignore[no-untyped-def]
    # SIGTERM: queued photos fail, but a running video may finish within the grace like the
    # running photos (its video job stops it once the grace is over).
    engine = worker.engines["eccv16"]
    engine.gate.clear()
    frames = [astronaut[:32, :32].copy() for _ in range(8)]
    thread, outcome = _in_thread(lambda: colorize_frames(worker, "eccv16", frames))
    assert engine.started.wait(5)
    worker.drain("shutting down")
    assert worker.queue.frames_waiting() > 0
    engine.gate.set()
    thread.join(10)
    assert isinstance(outcome[0], list) and len(outcome[0]) == 8
    assert worker.queue_depth == 0
