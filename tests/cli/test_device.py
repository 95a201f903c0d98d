"""A device that does not exist is a setting that is wrong: one line naming the variable and
exit 2, never a traceback (COLORIZE_DEVICE=cuda on a machine without CUDA once printed 20)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.support.servers import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", [["serve"], ["colorize", "x.png", "-o", "out"]])
def test_cuda_on_a_machine_without_it_is_one_line_and_exit_2(command: list[str]) -> None:
    env = {**os.environ, "COLORIZE_DEVICE": "cuda", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "service", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "CUDA" in lines[0]
