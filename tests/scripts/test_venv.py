"""scripts/_venv.sh, which both README commands source: two started at once on a fresh clone
take turns building .venv instead of breaking it (pip once failed on the other's temporary
files)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import ROOT

pytestmark = pytest.mark.skipif(shutil.which("flock") is None, reason="needs util-linux flock")


def ready_venv(tmp_path: Path) -> Path:
    """A virtual environment the script takes as built: a python and the current stamp."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    cksum = subprocess.run(
        ["cksum"], input=(ROOT / "pyproject.toml").read_bytes(), capture_output=True, check=True
    ).stdout.split()[0]
    (venv / f".installed-{cksum.decode()}").touch()
    return venv


def test_a_second_script_waits_for_the_build_and_then_reuses_it(tmp_path: Path) -> None:
    venv = ready_venv(tmp_path)
    env = {**os.environ, "COLORIZE_VENV": str(venv)}
    command = ["bash", "-c", f"source {ROOT}/scripts/_venv.sh && echo ready"]
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another script is building
        waiting = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert waiting.poll() is None, "the second script did not wait for the build"
        fcntl.flock(lock, fcntl.LOCK_UN)
    out, _ = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and out.strip() == "ready"
