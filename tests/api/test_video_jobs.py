"""Video jobs through /jobs in this process (issue 21): the upload paths, the result kept (frames,
rate, duration, audio, colour, upright), progress while it runs, DELETE within two seconds, the
bounded video queue, retention of result files, /colorize refusing videos, and the counters."""

from __future__ import annotations

import errno
import io
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.engines.base import Engine
from service.settings import Settings
from tests.support.apps import scripted_engines
from tests.support.held import wait_until_idle
from tests.support.images import is_colour
from tests.support.scripted_server import SlowEngine
from tests.support.videos import make_clip, with_spec

CLIPS = {
    "mp4": with_spec(audio=True),
    "mov": with_spec(container="mov", audio=True, frames=12, cut_at=None),
    "webm": with_spec(container="webm", frames=12, cut_at=None),
    "rotated": with_spec(width=64, height=96, rotate=90, frames=12, cut_at=None),
    "vfr": with_spec(vfr=True, frames=12, cut_at=None),
    "long": with_spec(frames=48, width=96, height=64, audio=True),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("clips")
    return {
        name: make_clip(directory / f"{name}.{spec.container}", spec)
        for name, spec in CLIPS.items()
    }


@contextmanager
def video_app(
    engines: dict[str, Engine] | None = None, **overrides: object
) -> Iterator[tuple[TestClient, dict[str, Engine]]]:
    settings = Settings(**{"queue_size": 8, "admission_wait_s": 1.0, **overrides})  # type: ignore[arg-type]
    engines = engines if engines is not None else dict(scripted_engines(torch.device("cpu")))
    with TestClient(create_app(settings, engines=engines)) as client:
        yield client, engines


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with video_app(video_spool_dir=tmp_path) as (c, _):
        yield c


def post_video(client: TestClient, path: Path, **data: str) -> dict:  # type: ignore[type-arg]
    r = client.post("/jobs", files={"video": (path.name, path.read_bytes())}, data=data)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/jobs/{r.json()['id']}"
    return r.json()  # type: ignore[no-any-return]


def wait_job(client: TestClient, job_id: str, states: set[str], timeout: float = 30.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/jobs/{job_id}").json()
        if body["state"] in states:
            return body  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never reached {states}: {body}")


def result_of(client: TestClient, job_id: str) -> bytes:
    r = client.get(f"/jobs/{job_id}/result")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    return r.content


@dataclass(frozen=True)
class Decoded:
    """What a test reads back from an MP4."""

    frames: list[np.ndarray]
    rate: Fraction | None
    codec: str
    pix_fmt: str | None
    audio: list[str]
    duration: float
    rotation: int


def read_video(data: bytes) -> Decoded:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return Decoded(
            frames=[f.to_ndarray(format="rgb24") for f in frames],
            rate=stream.average_rate,
            codec=stream.codec_context.name,
            pix_fmt=stream.codec_context.pix_fmt,
            audio=[s.codec_context.name for s in container.streams.audio],
            duration=float(container.duration or 0) / av.time_base,
            rotation=frames[0].rotation if frames else 0,
        )


def spool_files(client: TestClient) -> list[str]:
    return sorted(p.name for p in client.app.state.svc.spool.directory.iterdir())  # type: ignore[attr-defined]


# -- uploads -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "how"),
    [
        ("mp4", "multipart"),
        ("mp4", "raw"),
        ("mov", "multipart"),
        ("webm", "raw"),
    ],
    ids=["mp4-multipart", "mp4-raw-video/mp4", "mov-multipart", "webm-raw-video/webm"],
)
def test_a_video_is_accepted_by_its_bytes_on_both_upload_paths(
    client: TestClient, clips: dict[str, Path], name: str, how: str
) -> None:
    path = clips[name]
    if how == "multipart":
        # The name and declared type lie: the bytes decide.
        r = client.post("/jobs", files={"video": ("holiday.txt", path.read_bytes(), "text/plain")})
    else:
        headers = {"content-type": f"video/{path.suffix[1:]}"}
        r = client.post("/jobs?stabilize=false", content=path.read_bytes(), headers=headers)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "video" and job["state"] in ("queued", "running")
    assert job["progress"]["frames_total"] == CLIPS[name].frames
    done = wait_job(client, job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert len(read_video(result_of(client, job["id"])).frames) == CLIPS[name].frames


def test_the_result_keeps_frames_rate_duration_and_audio_and_is_colour(
    client: TestClient, clips: dict[str, Path]
) -> None:
    source = clips["mp4"]
    job = post_video(client, source)
    done = wait_job(client, job["id"], {"done", "failed"})
    assert done["state"] == "done", done
    assert done["progress"] == {
        "frames_done": 24,
        "frames_total": 24,
        "fps": done["progress"]["fps"],
        "seconds_left": 0.0,
    }
    assert done["progress"]["fps"] > 0 and set(done["timings"]) == {"queue", "run"}
    result = read_video(result_of(client, job["id"]))
    original = read_video(source.read_bytes())
    assert len(result.frames) == 24
    assert result.rate == Fraction(24) == original.rate
    assert result.duration == pytest.approx(original.duration, abs=0.05)
    assert result.audio == original.audio == ["aac"]
    assert (result.codec, result.pix_fmt) == ("h264", "yuv420p")
    assert all(is_colour(f) for f in result.frames)
    assert not any(is_colour(f) for f in original.frames)


def test_a_phone_video_comes_back_upright_and_a_variable_rate_keeps_its_times(
    client: TestClient, clips: dict[str, Path]
) -> None:
    rotated = post_video(client, clips["rotated"])
    vfr = post_video(client, clips["vfr"])
    for job in (rotated, vfr):
        assert wait_job(client, job["id"], {"done", "failed"})["state"] == "done"
    result = read_video(result_of(client, rotated["id"]))
    assert result.frames[0].shape == (96, 64, 3), "upright: portrait, as shown on the phone"
    assert result.rotation == 0, "and no rotation flag"
    with av.open(io.BytesIO(result_of(client, vfr["id"]))) as container:
        times = [round(float(f.time) * 1000) for f in container.decode(video=0)]
    expected = CLIPS["vfr"].timestamps_ms()
    assert max(abs(a - b) for a, b in zip(times, expected, strict=True)) <= 1


def test_a_video_larger_than_the_photo_limit_is_spooled_not_refused(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    # COLORIZE_MAX_UPLOAD_BYTES bounds photos; a video has its own limit and goes to disk.
    size = clips["mp4"].stat().st_size
    assert size > 2048
    with video_app(video_spool_dir=tmp_path, max_upload_bytes=2048) as (c, _):
        job = post_video(c, clips["mp4"])
        assert wait_job(c, job["id"], {"done", "failed"})["state"] == "done"
        raw = c.post(
            "/jobs", content=clips["mp4"].read_bytes(), headers={"content-type": "video/mp4"}
        )
        assert raw.status_code == 202, raw.text
        # ... and photos are still held to theirs.
        r = c.post("/jobs", files={"image": ("a.png", bytes(4096))})
        assert r.status_code == 413 and "COLORIZE_MAX_UPLOAD_BYTES" in r.json()["detail"]


@pytest.mark.parametrize("how", ["multipart", "raw", "raw-declared"])
def test_a_video_over_the_video_upload_limit_is_413_naming_it(
    tmp_path: Path, clips: dict[str, Path], how: str
) -> None:
    data = clips["mp4"].read_bytes()
    with video_app(video_spool_dir=tmp_path, video_max_upload_bytes=len(data) - 1) as (c, _):
        if how == "multipart":
            r = c.post("/jobs", files={"video": ("a.mp4", data)})
        elif how == "raw":
            r = c.post("/jobs", content=iter([data]), headers={"content-type": "video/mp4"})
        else:
            r = c.post("/jobs", content=data, headers={"content-type": "video/mp4"})
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "body_too_large"
        assert "COLORIZE_VIDEO_MAX_UPLOAD_BYTES" in r.json()["detail"]
        assert spool_files(c) == [], "a refused upload leaves nothing on disk"
        assert c.post("/colorize", files={"image": ("a.png", _png())}).status_code == 200


def _png() -> bytes:
    from tests.support.images import photo, png_bytes

    return png_bytes(photo("astronaut.png")[::8, ::8])


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        ({"hints": '[{"x": 1, "y": 1, "color": "#ff0000"}]'}, "hints cannot be used with a video"),
        ({"format": "png"}, "format cannot be used with a video"),
        ({"model": "nope"}, "unknown model"),
        ({"model": "exemplar"}, "needs a reference image"),
        ({"quality": "80"}, "quality cannot be used with a video"),
    ],
    ids=["hints", "format", "unknown-model", "exemplar-without-reference", "quality"],
)
def test_options_a_video_cannot_take_are_refused(
    client: TestClient, clips: dict[str, Path], fields: dict[str, str], phrase: str
) -> None:
    r = client.post("/jobs", files={"video": ("a.mp4", clips["webm"].read_bytes())}, data=fields)
    assert r.status_code == 422, r.text
    assert phrase in r.json()["detail"]
    assert spool_files(client) == []


def test_stabilize_is_refused_for_a_photo(client: TestClient, gray_png: bytes) -> None:
    r = client.post("/jobs?stabilize=false", files={"image": ("a.png", gray_png)})
    assert r.status_code == 422 and "videos only" in r.json()["detail"]


def test_exemplar_colours_a_whole_film_from_one_reference(
    client: TestClient, clips: dict[str, Path], colour_png: bytes
) -> None:
    files = {"video": ("a.webm", clips["webm"].read_bytes()), "reference": ("r.png", colour_png)}
    r = client.post("/jobs", files=files, data={"model": "exemplar"})
    assert r.status_code == 202, r.text
    assert wait_job(client, r.json()["id"], {"done", "failed"})["state"] == "done"
    grey = client.post(
        "/jobs",
        files={"video": ("a.webm", clips["webm"].read_bytes()), "reference": ("r.png", _png())},
        data={"model": "exemplar"},
    )
    ended = wait_job(client, grey.json()["id"], {"done", "failed"})
    assert ended["error"]["error"] == "grayscale_reference" and ended["error"]["status"] == 422


# -- /colorize refuses videos, whatever the field or type ------------------------------------


@pytest.mark.parametrize(
    "send",
    ["video-field", "image-field", "raw-video-type", "raw-image-type"],
)
def test_colorize_refuses_a_video_and_points_to_jobs(
    client: TestClient, clips: dict[str, Path], gray_png: bytes, send: str
) -> None:
    data = clips["mp4"].read_bytes()
    if send == "video-field":
        r = client.post("/colorize", files={"video": ("a.mp4", data)})
    elif send == "image-field":
        r = client.post("/colorize", files={"image": ("a.png", data, "image/png")})
    elif send == "raw-video-type":
        r = client.post("/colorize", content=data, headers={"content-type": "video/mp4"})
    else:
        r = client.post("/colorize", content=data, headers={"content-type": "image/jpeg"})
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "video_goes_to_jobs"
    assert "/jobs" in r.json()["detail"] and "'video'" in r.json()["detail"]
    assert spool_files(client) == []
    assert client.post("/colorize", files={"image": ("a.png", gray_png)}).status_code == 200


def test_a_video_in_the_image_field_of_jobs_is_told_to_use_the_video_field(
    client: TestClient, clips: dict[str, Path]
) -> None:
    r = client.post("/jobs", files={"image": ("a.png", clips["mp4"].read_bytes())})
    assert r.status_code == 415 and r.json()["error"] == "video_goes_to_jobs"
    assert "multipart field 'video'" in r.json()["detail"]


# -- progress, DELETE, the queue ----------------------------------------------------------------


def slow_engines(delay_s: float) -> dict[str, Engine]:
    return {"eccv16": SlowEngine(torch.device("cpu"), "eccv16", delay_s=delay_s)}


def test_progress_shows_frames_rate_and_time_left_while_it_runs(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with video_app(slow_engines(0.05), video_spool_dir=tmp_path, video_batch_frames=4) as (c, _):
        job = post_video(c, clips["long"])
        deadline = time.monotonic() + 30
        while True:
            body = c.get(f"/jobs/{job['id']}").json()
            progress = body["progress"]
            if body["state"] == "running" and 0 < progress["frames_done"] < 48:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.01)
        assert progress["frames_total"] == 48
        assert progress["fps"] > 0 and progress["seconds_left"] > 0
        assert c.get(f"/jobs/{job['id']}/result").status_code == 409
        assert wait_job(c, job["id"], {"done", "failed"})["state"] == "done"


def test_deleting_a_running_video_stops_it_within_two_seconds(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with video_app(slow_engines(0.3), video_spool_dir=tmp_path) as (c, _):
        job = post_video(c, clips["long"])
        wait_job(c, job["id"], {"running"})
        started = time.monotonic()
        r = c.delete(f"/jobs/{job['id']}")
        assert r.status_code == 200 and r.json()["cancel_requested"] is True
        ended = wait_job(c, job["id"], {"cancelled", "done", "failed"}, timeout=5)
        assert ended["state"] == "cancelled"
        assert time.monotonic() - started < 2.0
        assert ended["result_url"] is None
        assert spool_files(c) == [], "its upload and partial result are deleted"
        wait_until_idle(c.app.state.svc)  # type: ignore[attr-defined]


def test_the_video_queue_is_bounded_and_a_queued_video_can_be_cancelled(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with video_app(video_spool_dir=tmp_path, video_workers=1, video_queue_size=1) as (
        c,
        engines,
    ):
        eccv16 = engines["eccv16"]
        eccv16.gate.clear()  # type: ignore[attr-defined]
        running = post_video(c, clips["webm"])
        wait_job(c, running["id"], {"running"})
        queued = post_video(c, clips["webm"])
        assert c.get(f"/jobs/{queued['id']}").json()["position"] == 1
        full = c.post("/jobs", files={"video": ("a.webm", clips["webm"].read_bytes())})
        assert full.status_code == 503 and full.json()["error"] == "queue_full"
        assert int(full.headers["retry-after"]) >= 1
        assert "COLORIZE_VIDEO_QUEUE_SIZE" in full.json()["detail"]
        cancelled = c.delete(f"/jobs/{queued['id']}").json()
        assert cancelled["state"] == "cancelled"
        eccv16.gate.set()  # type: ignore[attr-defined]
        assert wait_job(c, running["id"], {"done", "failed"})["state"] == "done"
        assert sorted(n.split("-")[0] for n in spool_files(c)) == ["result"]


def test_photos_still_run_while_a_video_colours(tmp_path: Path, clips: dict[str, Path]) -> None:
    with video_app(slow_engines(0.05), video_spool_dir=tmp_path, video_batch_frames=4) as (c, _):
        job = post_video(c, clips["long"])
        wait_job(c, job["id"], {"running"})
        r = c.post("/colorize", files={"image": ("a.png", _png())})
        assert r.status_code == 200
        assert c.get(f"/jobs/{job['id']}").json()["state"] == "running"
        assert c.get("/v1/status").json()["queue_depth"] == 0, "frames are not queued photos"
        wait_job(c, job["id"], {"done"})


# -- retention, counting -------------------------------------------------------------------------


def test_a_result_file_is_deleted_by_retention_and_by_delete(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with video_app(video_spool_dir=tmp_path, result_ttl_s=0.5) as (c, _):
        first = post_video(c, clips["webm"])
        wait_job(c, first["id"], {"done"})
        assert [n.split("-")[0] for n in spool_files(c)] == ["result"]
        time.sleep(0.6)
        body = c.get(f"/jobs/{first['id']}").json()
        assert body["result_url"] is None and "retention" in body["result_note"]
        assert spool_files(c) == []
        r = c.get(f"/jobs/{first['id']}/result")
        assert r.status_code == 404 and r.json()["error"] == "result_expired"
        second = post_video(c, clips["webm"])
        wait_job(c, second["id"], {"done"})
        assert c.delete(f"/jobs/{second['id']}").status_code == 200
        assert spool_files(c) == []
        assert c.get(f"/jobs/{second['id']}").status_code == 404


def test_kept_video_results_are_bounded_on_disk(tmp_path: Path, clips: dict[str, Path]) -> None:
    with video_app(video_spool_dir=tmp_path, video_result_max_bytes=1) as (c, _):
        first = post_video(c, clips["webm"])
        wait_job(c, first["id"], {"done"})
        second = post_video(c, clips["webm"])
        wait_job(c, second["id"], {"done"})
        note = c.get(f"/jobs/{first['id']}").json()["result_note"]
        assert "COLORIZE_VIDEO_RESULT_MAX_BYTES" in note
        assert len(spool_files(c)) <= 1


def test_a_result_is_served_with_ranges_for_players(
    client: TestClient, clips: dict[str, Path]
) -> None:
    job = post_video(client, clips["webm"])
    wait_job(client, job["id"], {"done"})
    whole = result_of(client, job["id"])
    part = client.get(f"/jobs/{job['id']}/result", headers={"range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole[:100]


SAMPLE = re.compile(r"^(colorize_video_\w+)\{([^}]*)\} (\S+)$", re.M)


def video_samples(client: TestClient) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").text
    return {(name, labels): float(value) for name, labels, value in SAMPLE.findall(text)}


def test_video_jobs_frames_and_rate_are_counted_once(
    client: TestClient, clips: dict[str, Path]
) -> None:
    job = post_video(client, clips["mp4"])
    wait_job(client, job["id"], {"done"})
    client.post("/jobs", files={"video": ("a.mp4", b"")})  # refused: 422
    client.post("/colorize", files={"video": ("a.mp4", clips["mp4"].read_bytes())})  # 415
    samples = video_samples(client)
    jobs = {k: v for k, v in samples.items() if k[0] == "colorize_video_jobs_total"}
    assert jobs == {
        ("colorize_video_jobs_total", 'model="eccv16",outcome="done"'): 1.0,
        ("colorize_video_jobs_total", 'model="eccv16",outcome="invalid_video"'): 1.0,
        ("colorize_video_jobs_total", 'model="none",outcome="video_on_image_path"'): 1.0,
    }
    assert samples[("colorize_video_frames_total", 'model="eccv16"')] == 24
    assert samples[("colorize_video_frames_per_second_count", 'model="eccv16"')] == 1
    photos = client.get("/metrics").text
    assert "colorize_jobs_total{" not in photos, "video answers are not counted as photos'"


@pytest.mark.parametrize("how", ["multipart", "raw"])
def test_a_full_spool_disk_is_503_disk_full_not_500(
    client: TestClient,
    clips: dict[str, Path],
    gray_png: bytes,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    from service.api import uploads

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def full_async(request: object, path: Path) -> None:
        path.write_bytes(b"partial")
        full()

    monkeypatch.setattr(uploads, "_copy", full)
    monkeypatch.setattr(uploads, "_spool_stream", full_async)
    data = clips["webm"].read_bytes()
    if how == "multipart":
        r = client.post("/jobs", files={"video": ("a.webm", data)})
    else:
        r = client.post("/jobs", content=data, headers={"content-type": "video/webm"})
    assert r.status_code == 503 and r.json()["error"] == "disk_full", r.text
    assert r.headers["retry-after"] == "30"
    assert spool_files(client) == []
    assert client.post("/colorize", files={"image": ("a.png", gray_png)}).status_code == 200
