"""The `colorize-service` entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service import __version__
from service.cli.main import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"colorize-service {__version__}"


def test_help_lists_the_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "service", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("serve", "colorize", "fetch-weights"):
        assert command in out


def test_bad_setting_exits_2_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLORIZE_QUEUE_SIZE", "-4")
    out = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 2
    assert "COLORIZE_QUEUE_SIZE" in out.stderr and "Traceback" not in out.stderr
