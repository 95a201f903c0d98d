"""One table maps outcomes to answers, and what a client is told is what the job counter says.

Each scenario below makes a real request end a known way; the test reads which
`colorize_jobs_total{outcome}` moved and checks that the outcome table answers that label with
the status the client got. A scenario where the two disagree (a 504 counted as `cancelled`, as
it once was) fails here.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from fastapi.testclient import TestClient

from service.api.outcomes import ANSWERS
from service.memory import CudaBackend, MemoryManager
from service.outcomes import Outcome
from tests.support.apps import running_app
from tests.support.engines import ScriptedEngine
from tests.support.fake_devices import FakeCuda, GiB
from tests.support.waiting import wait_for

JOBS = re.compile(r'^colorize_jobs_total\{model="(\w+)",outcome="(\w+)"\} (\S+)$', re.M)


def test_every_outcome_has_one_answer() -> None:
    assert set(ANSWERS) == set(Outcome)
    for outcome, answer in ANSWERS.items():
        assert 200 <= answer.status < 600 and answer.error, outcome
        if answer.status == 503 and outcome is not Outcome.NOT_READY:
            assert answer.retry_after, f"{outcome} must say when to come back"
    # Weights do not appear by waiting: a client that obeys Retry-After must not loop forever.
    assert ANSWERS[Outcome.NOT_READY].retry_after is None


def counted(client: TestClient) -> dict[str, float]:
    return {
        outcome: float(value)
        for _, outcome, value in JOBS.findall(client.get("/metrics").text)
        if float(value) > 0
    }


@dataclass
class Scenario:
    settings: dict[str, object]
    act: Callable[[TestClient, dict[str, ScriptedEngine], bytes], int]
    """Makes one request end a known way; returns the status the client got."""
    outcome: Outcome
    manager: Callable[[], MemoryManager] | None = None


def post(client: TestClient, png: bytes) -> int:
    return client.post("/colorize", files={"image": ("a.png", png)}).status_code


def engine_fails(error: BaseException, times: int = 1) -> Callable[..., int]:
    def act(client: TestClient, engines: dict[str, ScriptedEngine], png: bytes) -> int:
        engines["eccv16"].failures.extend([error] * times)
        return post(client, png)

    return act


def stalls_past_the_limit(
    client: TestClient, engines: dict[str, ScriptedEngine], png: bytes
) -> int:
    engines["eccv16"].gate.clear()
    threading.Timer(1.5, engines["eccv16"].gate.set).start()
    return post(client, png)


def broken_pixels(client: TestClient, engines: dict[str, ScriptedEngine], png: bytes) -> int:
    # A sound header with truncated pixel data: found by the prepare stage's decode.
    return post(client, png[: len(png) // 2])


def busy_device() -> MemoryManager:
    fake = FakeCuda(total=10 * GiB, others=7 * GiB)
    return MemoryManager(torch.device("cuda", 0), 0.8, backend=CudaBackend(0, cuda=fake))


def post_with(**data: str) -> Callable[..., int]:
    def act(client: TestClient, engines: dict[str, ScriptedEngine], png: bytes) -> int:
        return client.post("/colorize", files={"image": ("a.png", png)}, data=data).status_code

    return act


def post_raw(content: bytes, content_type: str) -> Callable[..., int]:
    def act(client: TestClient, engines: dict[str, ScriptedEngine], png: bytes) -> int:
        headers = {"content-type": content_type}
        return client.post("/colorize", content=content, headers=headers).status_code

    return act


def not_loaded(client: TestClient, engines: dict[str, ScriptedEngine], png: bytes) -> int:
    engines["eccv16"].loaded = False
    return post(client, png)


def no_image(client: TestClient, engines: dict[str, ScriptedEngine], png: bytes) -> int:
    return client.post("/colorize", files={"reference": ("r.png", png)}).status_code


def grey_reference(client: TestClient, engines: dict[str, ScriptedEngine], png: bytes) -> int:
    files = {"image": ("a.png", png), "reference": ("r.png", png)}
    return client.post("/colorize", files=files, data={"model": "exemplar"}).status_code


def broken_multipart(client: TestClient, engines: dict[str, ScriptedEngine], png: bytes) -> int:
    body = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\nxx'
    headers = {"content-type": "multipart/form-data; boundary=b"}
    return client.post("/colorize", content=body, headers=headers).status_code


# Every answer a client can get from an upload, each counted once under its outcome: the jobs
# that ran, and the refusals before a job existed (auth, body limit, fields, model, headers).
SCENARIOS = {
    "done": Scenario({}, lambda c, e, png: post(c, png), Outcome.DONE),
    "unauthorized": Scenario(
        {"api_key": "k"}, lambda c, e, png: post(c, png), Outcome.UNAUTHORIZED
    ),
    "body-too-large": Scenario(
        {"max_upload_bytes": 1024}, lambda c, e, png: post(c, png), Outcome.BODY_TOO_LARGE
    ),
    "unknown-model": Scenario({}, post_with(model="nope"), Outcome.UNKNOWN_MODEL),
    "not-ready": Scenario({}, not_loaded, Outcome.NOT_READY),
    "missing-field": Scenario({}, no_image, Outcome.MISSING_FIELD),
    "bad-field": Scenario({}, post_with(quality="0"), Outcome.BAD_FIELD),
    "bad-hints": Scenario({}, post_with(model="siggraph17", hints="["), Outcome.BAD_HINTS),
    "invalid-request": Scenario(
        {}, post_with(hints='[{"x":1,"y":1,"color":"#ff0000"}]'), Outcome.INVALID_REQUEST
    ),
    "media-type": Scenario({}, post_raw(b"hello", "text/plain"), Outcome.UNSUPPORTED_MEDIA_TYPE),
    "unsupported-format": Scenario(
        {}, post_raw(b"<html><body>x</body></html>", "image/png"), Outcome.UNSUPPORTED_FORMAT
    ),
    "image-too-large": Scenario(
        {"max_pixels": 100}, lambda c, e, png: post(c, png), Outcome.IMAGE_TOO_LARGE
    ),
    "broken-multipart": Scenario({}, broken_multipart, Outcome.BAD_REQUEST),
    "grayscale-reference": Scenario({}, grey_reference, Outcome.GRAYSCALE_REFERENCE),
    "timeout": Scenario({"job_timeout_s": 0.5}, stalls_past_the_limit, Outcome.TIMEOUT),
    "oom": Scenario({}, engine_fails(torch.OutOfMemoryError("CUDA out of memory"), 2), Outcome.OOM),
    "engine-error": Scenario({}, engine_fails(ValueError("weights exploded")), Outcome.ERROR),
    "undecodable": Scenario({}, broken_pixels, Outcome.INVALID_IMAGE),
    "memory-busy": Scenario(
        {"admission_wait_s": 0.2}, lambda c, e, png: post(c, png), Outcome.MEMORY_BUSY, busy_device
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_the_client_status_and_the_counted_outcome_agree(
    gray_png: bytes, scenario: Scenario
) -> None:
    engines = None
    manager = scenario.manager() if scenario.manager else None
    if manager is not None:
        engines = {"eccv16": ScriptedEngine(torch.device("cpu"), per_item_bytes=2 * GiB)}
    with running_app(engines=engines, manager=manager, batch_max_size=1, **scenario.settings) as (
        client,
        used,
    ):
        before = counted(client)
        status = scenario.act(client, used, gray_png)  # type: ignore[arg-type]
        # A job that ran past its limit is counted when the device lets go of it.
        wait_for(lambda: counted(client) != before, timeout=10)
        after = counted(client)
    moved = {o for o, v in after.items() if v > before.get(o, 0.0)}
    assert moved == {scenario.outcome.value}, (status, before, after)
    assert ANSWERS[scenario.outcome].status == status
    assert sum(after.values()) == sum(before.values()) + 1, "counted exactly once"
