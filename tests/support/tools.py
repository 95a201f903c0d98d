"""System tools some suites need (promtool, docker-compose, Chromium from Debian).

Without one, those tests skip with a reason, so the README's test command works on a machine that
has only Python. CI installs them and sets TESTS_REQUIRE_SYSTEM_TOOLS=1 (.ci/run): there a missing
tool fails the tests that need it, so a failed install can never turn into silent skips.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRED = os.environ.get("TESTS_REQUIRE_SYSTEM_TOOLS") == "1"


def locate(tool: str) -> str | None:
    """`tool` as an absolute path (if it exists) or a name on PATH; None if absent."""
    if os.sep in tool:
        return tool if Path(tool).exists() else None
    return shutil.which(tool)


def _reason(tool: str, package: str) -> str:
    return f"{tool} is not installed (Debian package {package!r}; .ci/run installs it)"


def needs(tool: str, package: str) -> pytest.MarkDecorator:
    """Skip the marked tests when `tool` is absent, unless CI requires it."""
    return pytest.mark.skipif(locate(tool) is None and not REQUIRED, reason=_reason(tool, package))


def require(tool: str, package: str) -> str:
    """The path of `tool`; skips the test when absent (fails it when CI requires the tool)."""
    path = locate(tool)
    if path is None:
        if REQUIRED:
            pytest.fail(_reason(tool, package) + ", and TESTS_REQUIRE_SYSTEM_TOOLS=1")
        pytest.skip(_reason(tool, package))
    return path
