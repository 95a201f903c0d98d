"""Faults injected at every stage of a job. For each: the stated outcome happens, the service
recovers (or says it is not ready), no accepted job is silently lost (every /jobs entry ends done,
failed with a reason, or cancelled) and nothing leaks (no reservation held, nothing queued).

SIGTERM under load runs the service in its own process: see test_shutdown.py.
"""

from __future__ import annotations

import pickle
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import service.api.app as app_module
from devkit.checkpoints import save_random_checkpoint
from service.engines.base import ColorizeRequest, EngineNotReady, InvalidRequest
from service.engines.eccv16 import Eccv16Engine
from service.engines.weights import weights_path
from service.settings import Settings
from tests.support.apps import running_app
from tests.support.engines import KillWorker, ScriptedEngine
from tests.support.held import wait_until_idle
from tests.support.images import decode

FINAL = {"done", "failed", "cancelled"}


def submit(client: TestClient, png: bytes, n: int, **data: str) -> list[str]:
    ids = []
    for _ in range(n):
        r = client.post("/jobs", files={"image": ("a.png", png)}, data=data)
        assert r.status_code == 202, r.text[:200]
        ids.append(r.json()["id"])
    return ids


def final_states(client: TestClient, ids: Sequence[str], timeout: float = 15.0) -> list[dict]:  # type: ignore[type-arg]
    """Every job's status once all have finished; fails if one never does (a lost job)."""
    deadline = time.monotonic() + timeout
    while True:
        bodies = [client.get(f"/jobs/{i}").json() for i in ids]
        if all(b["state"] in FINAL for b in bodies):
            break
        assert time.monotonic() < deadline, [b["state"] for b in bodies]
        time.sleep(0.02)
    for body in bodies:
        if body["state"] == "failed":
            assert body["error"]["error"] and body["error"]["detail"], body
        if body["state"] == "done":
            assert client.get(f"/jobs/{body['id']}/result").status_code == 200
    return bodies


def settled(client: TestClient) -> None:
    """Nothing queued, running or reserved."""
    svc = client.app.state.svc  # type: ignore[attr-defined]
    wait_until_idle(svc)


def wait_queue(client: TestClient, depth: int) -> None:
    deadline = time.monotonic() + 5
    while client.get("/v1/status").json()["queue_depth"] < depth:
        assert time.monotonic() < deadline, "the jobs never queued up"
        time.sleep(0.01)


def works(client: TestClient, png: bytes) -> None:
    r = client.post("/colorize", files={"image": ("a.png", png)})
    assert r.status_code == 200, r.text[:200]
    assert client.get("/readyz").status_code == 200


# --- out of memory, at each stage ---------------------------------------------------------------

OOM_ERRORS = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    MemoryError("Unable to allocate 1.5 GiB for an array"),
    RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
]
OOM_IDS = ["cuda", "python-memoryerror", "mps", "cpu-allocator"]


@pytest.mark.parametrize("error", OOM_ERRORS, ids=OOM_IDS)
def test_oom_in_the_forward_pass_once_is_retried_for_the_whole_batch(
    gray_png: bytes, error: BaseException
) -> None:
    with running_app(batch_max_size=4, batch_max_wait_ms=200) as (client, engines):
        engine: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        engine.failures.append(error)
        ids = submit(client, gray_png, 4)
        states = final_states(client, ids)
        assert [s["state"] for s in states] == ["done"] * 4
        assert engine.batches[0] == 4 and engine.batches[1:] == [1, 1, 1, 1]  # retried one by one
        metrics = client.get("/metrics").text
        assert 'colorize_oom_events_total{model="eccv16"} 1.0' in metrics
        settled(client)
        works(client, gray_png)


def test_oom_in_the_forward_pass_twice_fails_the_batch_with_507_and_recovers(
    gray_png: bytes,
) -> None:
    with running_app(batch_max_size=4, batch_max_wait_ms=200) as (client, engines):
        engine: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        engine.failures += [OOM_ERRORS[0], OOM_ERRORS[0]]
        ids = submit(client, gray_png, 3)
        states = final_states(client, ids)
        assert {s["state"] for s in states} == {"failed"}
        for s in states:
            assert s["error"]["error"] == "out_of_memory"
            assert "after a retry with a smaller batch/chunk" in s["error"]["detail"]
            assert client.get(f"/jobs/{s['id']}/result").status_code == 409
        settled(client)
        works(client, gray_png)


class FailsMidway(ScriptedEngine):
    """Converts the first image's colours, keeps the half-done work, then runs out of memory."""

    def __init__(self, *args: object, errors: Sequence[BaseException] = (), **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.errors = list(errors)
        self.partials: list[weakref.ref[torch.Tensor]] = []

    def forward(
        self,
        requests: Sequence[ColorizeRequest],
        prepared: Sequence[object | None],
        chunk_bytes: int | None = None,
    ) -> list[object]:
        if self.errors:
            # Part of the colour conversion is done: these tensors are alive when it fails.
            done = super().forward(requests[:1], prepared[:1], chunk_bytes)
            work = torch.ones(4 << 20)  # 16 MiB of working memory
            self.partials.append(weakref.ref(work))
            assert done
            raise self.errors.pop(0)
        return super().forward(requests, prepared, chunk_bytes)


@pytest.mark.parametrize("error", OOM_ERRORS, ids=OOM_IDS)
def test_oom_during_colour_conversion_frees_the_half_done_work_and_retries(
    gray_png: bytes, error: BaseException
) -> None:
    engine = FailsMidway(torch.device("cpu"), errors=[error])
    with running_app(engines={"eccv16": engine}) as (client, _):
        states = final_states(client, submit(client, gray_png, 1))
        assert states[0]["state"] == "done"
        # The failed attempt's tensors were freed, not kept alive by the exception's frames.
        assert engine.partials and all(ref() is None for ref in engine.partials)
        settled(client)
        works(client, gray_png)


def test_oom_during_colour_conversion_twice_is_507_and_frees_both_attempts(
    gray_png: bytes,
) -> None:
    engine = FailsMidway(torch.device("cpu"), errors=[OOM_ERRORS[0], OOM_ERRORS[3]])
    with running_app(engines={"eccv16": engine}) as (client, _):
        r = client.post("/colorize", files={"image": ("a.png", gray_png)})
        assert r.status_code == 507 and r.json()["error"] == "out_of_memory"
        assert "can't allocate memory" in r.json()["detail"]
        assert len(engine.partials) == 2 and all(ref() is None for ref in engine.partials)
        settled(client)
        works(client, gray_png)


class EncodeFault:
    """Stands in for encode_image: raises `error` on the first `times` calls, then encodes."""

    def __init__(self, error: BaseException, times: int = 1) -> None:
        self.error = error
        self.times = times
        self.calls = 0
        self.real = app_module.encode_image

    def __call__(self, rgb: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return self.real(rgb, fmt, quality)


@pytest.mark.parametrize(
    ("error", "status", "code", "outcome"),
    [
        (MemoryError("cannot allocate 96 MiB for the output buffer"), 507, "out_of_memory", "oom"),
        (
            OSError("encoder error -2 when writing image file"),
            500,
            "encode_failed",
            "encode_failed",
        ),
    ],
    ids=["out-of-memory", "encoder-error"],
)
def test_a_fault_while_encoding_fails_only_that_job(
    gray_png: bytes,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    status: int,
    code: str,
    outcome: str,
) -> None:
    fault = EncodeFault(error)
    monkeypatch.setattr(app_module, "encode_image", fault)
    with running_app() as (client, _):
        r = client.post("/colorize", files={"image": ("a.png", gray_png)})
        assert r.status_code == status
        assert r.json() == {"error": code, "detail": str(error)}
        states = final_states(client, submit(client, gray_png, 2))
        assert [s["state"] for s in states] == ["done", "done"]
        assert fault.calls == 3
        assert (
            f'colorize_jobs_total{{model="eccv16",outcome="{outcome}"}} 1.0'
            in client.get("/metrics").text
        )
        settled(client)
        works(client, gray_png)


def test_a_bare_memory_error_while_encoding_still_says_what_happened(
    gray_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "encode_image", EncodeFault(MemoryError()))
    with running_app() as (client, _):
        r = client.post("/colorize", files={"image": ("a.png", gray_png)})
        assert r.status_code == 507
        assert "memory" in r.json()["detail"].lower()


# --- engines that misbehave ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "code", "phrase"),
    [
        (
            ValueError("weights exploded"),
            500,
            "engine_error",
            "the engine failed: weights exploded",
        ),
        (InvalidRequest("the image is too thin"), 422, "invalid_request", "the image is too thin"),
        (KeyError("lab"), 500, "engine_error", "the engine failed: 'lab'"),
    ],
    ids=["value-error", "invalid-request", "key-error"],
)
def test_an_engine_that_raises_fails_its_batch_with_a_reason_and_nothing_else(
    gray_png: bytes, error: BaseException, status: int, code: str, phrase: str
) -> None:
    with running_app(batch_max_size=4, batch_max_wait_ms=200) as (client, engines):
        engines["eccv16"].failures.append(error)  # type: ignore[attr-defined]
        ids = submit(client, gray_png, 3)
        other = submit(client, gray_png, 1, model="siggraph17")
        states = final_states(client, ids + other)
        assert [s["state"] for s in states] == ["failed"] * 3 + ["done"]
        for s in states[:3]:
            assert s["error"] == {"error": code, "detail": phrase, "status": status}
        settled(client)
        works(client, gray_png)
        assert client.get("/readyz").json()["worker_alive"] is True


class WrongCount(ScriptedEngine):
    """Returns one image fewer than it was given (a bug in an engine)."""

    def forward(
        self,
        requests: Sequence[ColorizeRequest],
        prepared: Sequence[object | None],
        chunk_bytes: int | None = None,
    ) -> list[object]:
        return super().forward(requests, prepared, chunk_bytes)[:-1]


def test_an_engine_returning_too_few_images_fails_only_its_batch(gray_png: bytes) -> None:
    with running_app(engines={"eccv16": WrongCount(torch.device("cpu"))}) as (client, _):
        r = client.post("/colorize", files={"image": ("a.png", gray_png)})
        assert r.status_code == 500 and r.json()["error"] == "engine_error"
        assert client.get("/readyz").status_code == 200


# --- the worker thread killed -------------------------------------------------------------------


def test_a_killed_worker_fails_every_accepted_job_with_a_reason_and_turns_red(
    gray_png: bytes,
) -> None:
    with running_app(batch_max_size=1, queue_size=8) as (client, engines):
        engine: ScriptedEngine = engines["eccv16"]  # type: ignore[assignment]
        engine.gate.clear()
        engine.failures.append(KillWorker())
        ids = submit(client, gray_png, 4)
        assert engine.started.wait(5)
        wait_queue(client, 3)
        engine.gate.set()
        states = final_states(client, ids)
        assert {(s["state"], s["error"]["error"]) for s in states} == {("failed", "worker_dead")}
        assert all("worker thread stopped" in s["error"]["detail"] for s in states)
        settled(client)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "the worker thread is not running" in ready.text
        assert client.get("/v1/status").json()["ready"] is False
        assert "colorize_worker_alive 0.0" in client.get("/metrics").text
        live = client.get("/livez")  # a dead worker never comes back: restart the process
        assert live.status_code == 503 and live.json()["error"] == "worker_dead"
        for route in ("/colorize", "/jobs"):
            r = client.post(route, files={"image": ("a.png", gray_png)})
            assert r.status_code == 503 and r.json()["error"] == "worker_dead"
            assert r.headers["retry-after"] == "5"


# --- weights corrupted after start-up -----------------------------------------------------------


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("weights")
    save_random_checkpoint("eccv16", directory, seed=0)
    return directory


class Payload:
    """A pickle that would create a file if it were ever unpickled with code allowed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


def corrupt(path: Path, kind: str, marker: Path) -> None:
    data = path.read_bytes()
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "wrong-layout":
        torch.save({"conv.weight": torch.zeros(3)}, path)
    elif kind == "code-in-a-pickle":
        path.write_bytes(pickle.dumps({"model1.0.weight": Payload(marker)}))


CORRUPTIONS = [
    ("garbage", "are unreadable"),
    ("truncated", "are unreadable"),
    ("empty", "are unreadable"),
    ("wrong-layout", "does not fit the network"),
    ("code-in-a-pickle", "are unreadable"),
]


@pytest.mark.slow
def test_weights_corrupted_after_start_up_keep_serving_from_memory(
    weights_dir: Path, tmp_path: Path, gray_png: bytes
) -> None:
    engine = Eccv16Engine(torch.device("cpu"), weights_dir)
    engine.load()
    path = weights_path("eccv16", weights_dir)
    backup = path.read_bytes()
    try:
        with running_app(engines={"eccv16": engine}) as (client, _):
            corrupt(path, "garbage", tmp_path / "never")
            r = client.post("/colorize", files={"image": ("a.png", gray_png)})
            assert r.status_code == 200
            assert decode(r.content).shape == (128, 128, 3)
            assert client.get("/readyz").status_code == 200
            settled(client)
    finally:
        path.write_bytes(backup)


@pytest.mark.parametrize(("kind", "phrase"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_a_restart_on_corrupted_weights_reports_the_model_not_ready(
    weights_dir: Path, tmp_path: Path, gray_png: bytes, kind: str, phrase: str
) -> None:
    path = weights_path("eccv16", weights_dir)
    backup = path.read_bytes()
    marker = tmp_path / "pickle-code-ran"
    try:
        corrupt(path, kind, marker)
        # A restart: the real lifespan loads every engine from the weights directory.
        settings = Settings(weights_dir=weights_dir, device="cpu")
        with TestClient(app_module.create_app(settings)) as client:
            models = {m["name"]: m for m in client.get("/v1/models").json()}
            assert models["eccv16"]["ready"] is False
            assert phrase in models["eccv16"]["reason"]
            r = client.post("/colorize", files={"image": ("a.png", gray_png)})
            assert r.status_code == 503 and r.json()["error"] == "model_not_ready"
            # Waiting does not repair a file: no Retry-After to obey in a loop.
            assert "retry-after" not in r.headers
            ready = client.get("/readyz")
            assert phrase in ready.json()["engines"]["eccv16"]
            # eccv16 is the default model: a replica that cannot serve it is not ready.
            assert ready.status_code == 503 and "COLORIZE_DEFAULT_MODEL" in str(ready.json())
            settled(client)
    finally:
        path.write_bytes(backup)
    assert not marker.exists(), "unpickling a checkpoint ran code"


@pytest.mark.parametrize(
    "kind",
    [pytest.param(kind) for kind, _ in CORRUPTIONS],
)
def test_every_corrupted_weights_reason_names_the_fix(
    weights_dir: Path, tmp_path: Path, kind: str
) -> None:
    path = weights_path("eccv16", weights_dir)
    backup = path.read_bytes()
    try:
        corrupt(path, kind, tmp_path / "pickle-code-ran")
        engine = Eccv16Engine(torch.device("cpu"), weights_dir)
        with pytest.raises(EngineNotReady):
            engine.load()
    finally:
        path.write_bytes(backup)
    assert engine.not_ready_reason is not None
    assert "colorize-service fetch-weights eccv16 --weights-dir" in engine.not_ready_reason


# --- what finished jobs keep -------------------------------------------------------------------


def test_a_finished_job_keeps_no_input_pixels(gray_png: bytes) -> None:
    with running_app() as (client, _):
        ids = submit(client, gray_png, 3)
        final_states(client, ids)
        store = client.app.state.svc.store  # type: ignore[attr-defined]
        for job_id in ids:
            job = store.get(job_id)
            assert (job.input, job.request, job.prepared) == (None, None, None)
            assert [r.purpose for r in job.holds] == ["result"], "only the result stays covered"
            assert sum(r.nbytes for r in job.holds) == len(job.result)


# --- results past the retention budget ----------------------------------------------------------


@pytest.mark.parametrize("budget", [0, 1, 20_000], ids=["zero", "one-byte", "under-one-result"])
def test_a_result_over_the_retention_budget_is_dropped_with_a_clear_status(
    gray_png: bytes, budget: int
) -> None:
    # Results are kept in memory (there is no disk to fill): the byte budget is the limit, and
    # a result past it is dropped at once, the job still reported done, its note saying why.
    with running_app(result_max_bytes=budget) as (client, _):
        ids = submit(client, gray_png, 2)
        deadline = time.monotonic() + 10
        while True:
            bodies = [client.get(f"/jobs/{i}").json() for i in ids]
            if all(b["state"] == "done" for b in bodies):
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        note = f"result dropped: kept results exceeded {budget} bytes"
        for body in bodies:
            assert body["result_url"] is None and body["result_note"] == note
            r = client.get(f"/jobs/{body['id']}/result")
            assert r.status_code == 404
            assert r.json() == {"error": "result_expired", "detail": note}
        assert client.app.state.svc.store.result_bytes() <= budget  # type: ignore[attr-defined]
        # The synchronous path keeps nothing, so the budget does not touch it.
        works(client, gray_png)
        settled(client)
