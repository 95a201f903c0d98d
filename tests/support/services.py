"""The real Redis and S3 servers of devkit/services.py under the tests' policy for missing tools.

devkit raises ToolMissing when redis-server, weed or openssl is absent; here that skips the test
with the reason, except under TESTS_REQUIRE_SYSTEM_TOOLS=1 (CI), where it fails it
(tests/support/tools.py). Everything else is devkit's, re-exported for the tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit import services
from devkit.services import (
    ACCESS_KEY,
    REDIS_PASSWORD,
    SECRET_KEY,
    ToolMissing,
    aws_environment,
    aws_session,
)
from tests.support.tools import REQUIRED

__all__ = [
    "ACCESS_KEY",
    "REDIS_PASSWORD",
    "SECRET_KEY",
    "RedisServer",
    "SeaweedServer",
    "aws_environment",
    "aws_session",
    "self_signed_certificate",
    "tools_or_skip",
]


@contextlib.contextmanager
def tools_or_skip() -> Iterator[None]:
    """Turn a missing server binary into a skip (a failure when CI requires the tools)."""
    try:
        yield
    except ToolMissing as missing:
        if REQUIRED:
            pytest.fail(f"{missing}, and TESTS_REQUIRE_SYSTEM_TOOLS=1")
        pytest.skip(str(missing))


class RedisServer(services.RedisServer):
    """devkit's RedisServer; a missing redis-server (or openssl, for TLS) skips the test."""

    def start(self) -> RedisServer:
        with tools_or_skip():
            super().start()
        return self


class SeaweedServer(services.SeaweedServer):
    """devkit's SeaweedServer; a missing weed skips the test."""

    def start(self) -> SeaweedServer:
        with tools_or_skip():
            super().start()
        return self


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    with tools_or_skip():
        return services.self_signed_certificate(directory)
