"""The README's client examples, run as written (only the port differs) against a live server
started the README's way (`python -m service serve`), with generated checkpoints: each exits 0
and leaves what it promises. Without weights the exemplar example still works, and the default
model's example fails visibly (curl's exit 22 and the JSON error) instead of saving the error as
an image."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devkit.checkpoints import save_random_checkpoint
from tests.support.images import DATA_DIR, is_colour
from tests.support.servers import ROOT, ServerProcess, free_port, server_process

MARKER = "<!-- README examples:"
README_PORT = "127.0.0.1:8000"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def examples() -> list[str]:
    """The shell commands of the README's example block (continuation lines joined)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(MARKER) :].split("```sh\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def photos(directory: Path) -> Path:
    """The files the examples name: a grey old photo and a colour reference (real photos)."""
    directory.mkdir(parents=True, exist_ok=True)
    with Image.open(DATA_DIR / "astronaut.png") as im:
        im.convert("L").resize((128, 128)).save(directory / "old-photo.jpg", "JPEG")
        im.convert("RGB").resize((96, 96)).save(directory / "colour-reference.jpg", "JPEG")
    return directory


@contextmanager
def served(weights_dir: Path) -> Iterator[ServerProcess]:
    port = free_port()
    env = {"COLORIZE_WEIGHTS_DIR": str(weights_dir), "COLORIZE_PORT": str(port)}
    with server_process(env, args=("-m", "service", "serve"), port=port) as server:
        yield server


def run(command: str, server: ServerProcess, cwd: Path) -> subprocess.CompletedProcess[str]:
    live = command.replace(README_PORT, server.url.removeprefix("http://"))
    return subprocess.run(
        ["bash", "-c", live], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def colour_image(path: Path) -> bool:
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        return is_colour(np.asarray(im.convert("RGB")))


def test_the_block_holds_the_examples_the_readme_promises() -> None:
    commands = examples()
    assert len(commands) == 4 and all(c.startswith("curl --fail-with-body ") for c in commands)
    assert "model=exemplar" in commands[0] and README_PORT in commands[0]


def test_every_example_works_as_written(tmp_path: Path) -> None:
    weights_dir = tmp_path / "weights"
    for model in ("eccv16", "siggraph17"):
        save_random_checkpoint(model, weights_dir)
    cwd = photos(tmp_path / "work")
    with served(weights_dir) as server:
        for command in examples():
            for output in cwd.glob("colour.*"):
                output.unlink()
            done = run(command, server, cwd)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            written = list(cwd.glob("colour.*"))
            if "/jobs" in command:
                assert json.loads(done.stdout)["state"] in ("queued", "running", "done")
            else:
                assert len(written) == 1 and colour_image(written[0]), command


def test_without_weights_the_exemplar_works_and_the_default_fails_visibly(
    tmp_path: Path,
) -> None:
    cwd = photos(tmp_path / "work")
    exemplar, default = examples()[:2]
    with served(tmp_path / "no-weights") as server:
        done = run(exemplar, server, cwd)
        assert done.returncode == 0 and colour_image(cwd / "colour.png"), done.stderr
        (cwd / "colour.png").unlink()
        failed = run(default, server, cwd)
    assert failed.returncode == 22, failed.stderr  # curl: the server answered an error
    body = json.loads((cwd / "colour.png").read_text())
    assert body["error"] == "model_not_ready" and "fetch-weights" in body["detail"]
