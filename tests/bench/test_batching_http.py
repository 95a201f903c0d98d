"""Through HTTP, batching changes no pixel: jobs that share a forward pass get what they get alone.

Two real servers (`colorize-service serve`) on loopback, identical but for batching: one takes up
to three eccv16 jobs per forward pass and waits long enough for all three to arrive, the other
runs every job alone. The three photos differ in size and content, so a batch that mixed up its
items, or padded one with another's pixels, would show.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.servers import free_port, make_weights, service_command
from tests.support.servers import server_process

PHOTOS = {"astronaut": (96, 96), "coffee": (150, 100), "chelsea": (45, 30)}
"""Name -> (width, height) of the grayscale upload made from the bundled photo."""


@pytest.fixture(scope="module")
def uploads() -> dict[str, bytes]:
    from bench.inputs import data_dir

    files = {}
    for name, size in PHOTOS.items():
        with Image.open(data_dir() / f"{name}.png") as im:
            gray = im.convert("L").resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        gray.save(buffer, "PNG")
        files[name] = buffer.getvalue()
    return files


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights"), ["eccv16"])


def _server(weights_dir: Path, batch: int, wait_ms: int) -> Iterator[str]:
    port = free_port()
    command = service_command(port)
    env = {
        "COLORIZE_WEIGHTS_DIR": str(weights_dir),
        "COLORIZE_DEVICE": "cpu",
        "COLORIZE_LOG_LEVEL": "warning",
        "COLORIZE_BATCH_MAX_SIZE": str(batch),
        "COLORIZE_BATCH_MAX_WAIT_MS": str(wait_ms),
        # One device lane: with two, a second lane could take the third job on its own.
        "COLORIZE_DEVICE_WORKERS": "1",
    }
    # server_process runs `python <args>`: `-m service serve ...` is the same entry point.
    with server_process(env, args=["-m", "service", *command[-3:]], port=port) as server:
        yield server.url


@pytest.fixture(scope="module")
def batching(weights_dir: Path) -> Iterator[str]:
    # The window closes as soon as three jobs are in: a long wait costs nothing here, and it
    # keeps the three concurrent uploads in one batch on a slow, busy machine.
    yield from _server(weights_dir, batch=3, wait_ms=20_000)


@pytest.fixture(scope="module")
def alone(weights_dir: Path) -> Iterator[str]:
    yield from _server(weights_dir, batch=1, wait_ms=0)


def _colorize(base: str, png: bytes) -> httpx.Response:
    files = {"image": ("photo.png", png)}
    return httpx.post(f"{base}/colorize", files=files, data={"model": "eccv16"}, timeout=300)


def _batches(base: str) -> tuple[float, float]:
    """(forward passes, jobs in them) of eccv16 so far, from /metrics."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    values = {}
    for line in text.splitlines():
        for name in ("colorize_batch_size_count", "colorize_batch_size_sum"):
            if line.startswith(f'{name}{{model="eccv16"}}'):
                values[name] = float(line.split()[-1])
    return values.get("colorize_batch_size_count", 0.0), values.get("colorize_batch_size_sum", 0.0)


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def test_jobs_batched_together_get_the_pixels_they_get_alone(
    batching: str, alone: str, uploads: dict[str, bytes]
) -> None:
    answers: dict[str, httpx.Response] = {}

    def send(name: str) -> None:
        answers[name] = _colorize(batching, uploads[name])

    threads = [threading.Thread(target=send, args=(name,)) for name in uploads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert _batches(batching) == (1.0, 3.0), "the three jobs did not share one forward pass"

    for name, png in uploads.items():
        single = _colorize(alone, png)
        assert answers[name].status_code == 200, answers[name].text
        assert single.status_code == 200, single.text
        batched_rgb, alone_rgb = _decode(answers[name].content), _decode(single.content)
        width, height = PHOTOS[name]
        assert batched_rgb.shape == alone_rgb.shape == (height, width, 3)
        differing = int(np.count_nonzero(batched_rgb != alone_rgb))
        assert differing == 0, f"{name}: {differing} channel values differ from running alone"
    assert _batches(alone) == (3.0, 3.0)
