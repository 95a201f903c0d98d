"""Bad videos through the API (issue 21, item 6), each with its exact answer and the service
serving the next request; and a video body's memory: on disk as it arrives, not in the host
budget, while a photo body of the same size is held in it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from service.memory import DeviceReading, MemoryManager
from tests.support.apps import running_app
from tests.support.videos import (
    HTML,
    ClipSpec,
    animated_gif,
    apng,
    claim_size,
    make_clip,
    million_frames,
    still_jpeg,
    still_png,
    truncated,
    with_spec,
)

MiB = 1024 * 1024


@dataclass(frozen=True)
class Sent:
    """One upload and what the API answers."""

    id: str
    make: Callable[[Path], bytes]
    status: int
    error: str
    phrase: str
    """Part of the detail (413s name their COLORIZE_VIDEO_* variable)."""


def clip(spec: ClipSpec, change: Callable[[bytes], bytes] = lambda d: d) -> Callable[[Path], bytes]:
    def make(directory: Path) -> bytes:
        path = make_clip(directory / f"clip.{spec.container}", spec)
        return change(path.read_bytes())

    return make


def million(directory: Path) -> bytes:
    return million_frames(directory / "million.mp4").read_bytes()


SHORT = with_spec(frames=8, cut_at=None, audio=True)

BAD = [
    Sent("zero-byte file", lambda d: b"", 422, "undecodable_video", "the file is empty"),
    Sent(
        "moov missing",
        clip(SHORT, truncated),
        422,
        "undecodable_video",
        "no complete moov box: the upload was cut short",
    ),
    Sent(
        "header claims 16000x16000",
        clip(SHORT, lambda d: claim_size(d, 16000, 16000)),
        413,
        "video_too_large",
        "the video is 16000x16000; the limit is 3840x2160 in either orientation "
        "(COLORIZE_VIDEO_MAX_LONG_SIDE, COLORIZE_VIDEO_MAX_SHORT_SIDE)",
    ),
    Sent(
        "a million tiny frames",
        million,
        413,
        "video_too_large",
        "the container declares 1000000 frames; the limit is 648000 (COLORIZE_VIDEO_MAX_FRAMES)",
    ),
    Sent("still PNG", lambda d: still_png(), 422, "undecodable_video", "still image (PNG)"),
    Sent("still JPEG", lambda d: still_jpeg(), 422, "undecodable_video", "still image (JPEG)"),
    Sent(
        "animated GIF", lambda d: animated_gif(), 422, "undecodable_video", "GIF (animated or not)"
    ),
    Sent("APNG", lambda d: apng(), 422, "undecodable_video", "animated PNG (APNG) is an image"),
    Sent(
        "MKV with 20 audio streams",
        clip(with_spec(container="mkv", audio=True, audio_streams=20, frames=4, cut_at=None)),
        413,
        "video_too_large",
        "20 audio streams declared; the limit is 4 (COLORIZE_VIDEO_MAX_AUDIO_STREAMS)",
    ),
    Sent("HTML named .mp4", lambda d: HTML, 415, "unsupported_format", "HTML is not a video"),
    Sent(
        "random bytes",
        lambda d: os.urandom(4096),
        415,
        "unsupported_format",
        "unrecognised file content",
    ),
]

GOOD = [
    Sent("variable frame rate", clip(with_spec(vfr=True, frames=10, cut_at=None)), 202, "", ""),
    Sent(
        "phone video with a rotation matrix",
        clip(with_spec(width=48, height=80, rotate=90, frames=6, cut_at=None)),
        202,
        "",
        "",
    ),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    spool = tmp_path_factory.mktemp("spool")
    with running_app(video_spool_dir=spool) as (c, _):
        yield c


def spool_is_empty(client: TestClient) -> bool:
    directory: Path = client.app.state.svc.spool.directory  # type: ignore[attr-defined]
    return not [p for p in directory.iterdir() if not p.name.startswith("result-")]


def serves_the_next_request(client: TestClient, gray_png: bytes) -> None:
    assert client.post("/colorize", files={"image": ("a.png", gray_png)}).status_code == 200


@pytest.mark.parametrize("sent", BAD + GOOD, ids=[s.id for s in BAD + GOOD])
def test_every_bad_video_gets_its_exact_answer(
    client: TestClient, gray_png: bytes, tmp_path: Path, sent: Sent
) -> None:
    data = sent.make(tmp_path)
    started = time.monotonic()
    r = client.post("/jobs", files={"video": ("upload.mp4", data, "video/mp4")})
    assert time.monotonic() - started < 10, "refusing a video must not decode it"
    assert r.status_code == sent.status, r.text
    if sent.status == 202:
        job_id = r.json()["id"]
        deadline = time.monotonic() + 30
        while (state := client.get(f"/jobs/{job_id}").json()["state"]) not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert state == "done"
    else:
        assert r.json()["error"] == sent.error
        assert sent.phrase in r.json()["detail"]
        assert str(tmp_path) not in r.text
    assert spool_is_empty(client), "nothing refused stays on disk"
    serves_the_next_request(client, gray_png)


# -- a video body's memory -----------------------------------------------------------------------


class FixedHost:
    """A CPU whose only memory in use is what the MemoryManager reserves: budgets exactly as
    configured, whatever this test process's own RSS is."""

    kind = "cpu"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity

    def read(self) -> DeviceReading:
        return DeviceReading(
            used=0, total=self.capacity, allocated=None, reserved=None, peak_allocated=None
        )

    def empty_cache(self) -> None:
        pass

    def reset_peak(self) -> int:
        return 0

    def peak(self) -> int:
        return 0

    def resident(self) -> int:
        return 0


@pytest.fixture
def small_host(tmp_path: Path) -> Iterator[TestClient]:
    # 128 MiB x 0.8: one client's bodies may hold a quarter, about 27 MB.
    manager = MemoryManager(torch.device("cpu"), 0.8, backend=FixedHost(128 * MiB))
    with running_app(manager=manager, video_spool_dir=tmp_path, max_upload_bytes=64 * MiB) as (
        c,
        _,
    ):
        yield c


BIG = 40 * MiB
"""Over one client's share of bodies in memory, under every byte limit."""


@pytest.mark.parametrize("how", ["raw", "multipart"])
def test_a_video_body_is_not_held_in_memory(small_host: TestClient, how: str) -> None:
    body = bytes(BIG)  # not a video: it is spooled, then refused by the probe (415)
    if how == "raw":
        r = small_host.post("/jobs", content=body, headers={"content-type": "video/mp4"})
    else:
        r = small_host.post("/jobs", files={"video": ("a.mp4", body)})
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "unsupported_format"
    assert small_host.app.state.svc.host.snapshot().reserved_for_jobs == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["raw", "multipart"])
def test_a_photo_body_of_the_same_size_is(small_host: TestClient, how: str) -> None:
    body = b"\x89PNG\r\n\x1a\n" + bytes(BIG)
    if how == "raw":
        r = small_host.post("/jobs", content=body, headers={"content-type": "image/png"})
    else:
        r = small_host.post("/jobs", files={"image": ("a.png", body)})
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "memory_busy"
