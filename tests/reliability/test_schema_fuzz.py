"""Schema fuzzing: schemathesis generates requests from our own /openapi.json and sends them to a
real uvicorn on the loopback interface. Nothing it sends may get a 5xx, and every response must
match what the schema documents (status code, content type, body schema, headers).

Bounded and repeatable: at most MAX_EXAMPLES generated cases per operation (plus schemathesis's
explicit examples and coverage cases), derandomised so CI sees the same cases on every run.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.app import create_app
from service.settings import Settings
from tests.support.apps import scripted_engines
from tests.support.servers import serve_in_thread

MAX_EXAMPLES = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def fuzz_settings() -> Settings:
    # A small queue and short waits: generated requests must never wait for anything long.
    return Settings(queue_size=4, job_timeout_s=10.0, admission_wait_s=1.0, max_pixels=4_000_000)


def build_app():  # type: ignore[no-untyped-def]
    return create_app(fuzz_settings(), engines=scripted_engines(torch.device("cpu")))


# The schema is the app's own; building the app is cheap (the lifespan does the heavy work).
SCHEMA = schemathesis.openapi.from_dict(build_app().openapi())


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_in_thread(build_app()) as url:
        yield url


def test_the_fuzzed_schema_is_the_one_the_server_publishes(base_url: str) -> None:
    published = httpx.get(f"{base_url}/openapi.json")
    assert published.status_code == 200
    assert published.json() == build_app().openapi()


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(
    case: schemathesis.Case, base_url: str
) -> None:
    case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)
