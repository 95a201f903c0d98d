"""`colorize-service colorize`: files and folders in, coloured files out, failures one by one."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cli.main import main
from service.imaging.decode import GRAYSCALE_CHROMA, chroma_level
from tests.support.photos import SIZE, Photos

pytestmark = pytest.mark.usefixtures("default_settings")

SUMMARY = re.compile(
    r"^(\d+) done, (\d+) skipped, (\d+) failed \(\d+\.\d\d images/s"
    r"(?:; \d+ videos, \d+ frames, \d+\.\d\d frames/s)?\)\n$"
)


@dataclass(frozen=True)
class Outcome:
    """Exit code, stdout and stderr of one `colorize` command."""

    code: int
    out: str
    err: str

    @property
    def counts(self) -> tuple[int, int, int]:
        """(done, skipped, failed) from the summary, which must be all of stdout."""
        found = SUMMARY.match(self.out)
        assert found, f"no summary line in {self.out!r}"
        done, skipped, failed = (int(g) for g in found.groups())
        return done, skipped, failed


Colorize = Callable[..., Outcome]
"""`colorize(*args, weights=None)`: run the command, return its Outcome."""


@pytest.fixture
def colorize(capsys: pytest.CaptureFixture[str], weights_dir: Path) -> Colorize:
    """Run `colorize-service colorize --device cpu --weights-dir GENERATED ARGS`."""

    def run(*args: str | Path, weights: Path | None = None) -> Outcome:
        # Defaults first: a test's own --device or --weights-dir comes later and wins.
        argv = ["colorize", "--device", "cpu", "--weights-dir", str(weights or weights_dir)]
        argv += [str(a) for a in args]
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refusing the arguments
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


def exemplar_args(photos: Photos) -> list[str | Path]:
    """The fastest engine (no weights to load), for tests about files rather than colours."""
    return ["--model", "exemplar", "--reference", photos.reference]


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# --- colouring -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_args",
    [
        pytest.param(["--model", "eccv16"], id="eccv16"),
        pytest.param(["--model", "siggraph17"], id="siggraph17"),
        pytest.param(["--model", "exemplar", "--reference", "REFERENCE"], id="exemplar"),
    ],
)
def test_each_model_turns_a_grayscale_photo_into_colour(
    colorize: Colorize, photos: Photos, tmp_path: Path, model_args: list[str]
) -> None:
    args = [photos.reference if a == "REFERENCE" else a for a in model_args]
    result = colorize(photos.astronaut, "--output-dir", tmp_path, *args)
    assert result.code == 0, result.err
    assert result.counts == (1, 0, 0)
    written = tmp_path / "astronaut.png"
    with Image.open(written) as im:
        assert (im.format, im.size) == ("PNG", SIZE)
    assert chroma_level(read_rgb(photos.astronaut)) < GRAYSCALE_CHROMA
    assert chroma_level(read_rgb(written)) > 2 * GRAYSCALE_CHROMA


@pytest.mark.parametrize(
    ("fmt", "name", "pillow_format"),
    [
        pytest.param("png", "astronaut.png", "PNG", id="png"),
        pytest.param("jpeg", "astronaut.jpg", "JPEG", id="jpeg"),
        pytest.param("webp", "astronaut.webp", "WEBP", id="webp"),
    ],
)
def test_format_picks_the_encoding_and_the_extension(
    colorize: Colorize, photos: Photos, tmp_path: Path, fmt: str, name: str, pillow_format: str
) -> None:
    result = colorize(photos.astronaut, "-o", tmp_path, "--format", fmt, *exemplar_args(photos))
    assert result.code == 0, result.err
    assert [p.name for p in tmp_path.iterdir()] == [name]
    with Image.open(tmp_path / name) as im:
        assert (im.format, im.size) == (pillow_format, SIZE)


def test_progress_is_drawn_on_a_terminal_and_only_the_summary_goes_to_stdout(
    colorize: Colorize, photos: Photos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    result = colorize(photos.astronaut, photos.coffee, "-o", tmp_path, *exemplar_args(photos))
    assert result.counts == (2, 0, 0)
    assert "2/2" in result.err


def test_no_progress_bar_when_stderr_is_not_a_terminal(
    colorize: Colorize, photos: Photos, tmp_path: Path
) -> None:
    result = colorize(photos.astronaut, "-o", tmp_path, *exemplar_args(photos))
    assert result.counts == (1, 0, 0)
    assert result.err == ""


# --- existing outputs ----------------------------------------------------------------------------


def test_existing_outputs_are_skipped(colorize: Colorize, photos: Photos, tmp_path: Path) -> None:
    (tmp_path / "astronaut.png").write_bytes(b"made earlier")
    result = colorize(photos.astronaut, photos.coffee, "-o", tmp_path, *exemplar_args(photos))
    assert result.code == 0
    assert result.counts == (1, 1, 0)
    assert (tmp_path / "astronaut.png").read_bytes() == b"made earlier"
    assert (tmp_path / "coffee.png").is_file()


def test_overwrite_replaces_existing_outputs(
    colorize: Colorize, photos: Photos, tmp_path: Path
) -> None:
    (tmp_path / "astronaut.png").write_bytes(b"made earlier")
    result = colorize(photos.astronaut, "-o", tmp_path, "--overwrite", *exemplar_args(photos))
    assert result.code == 0
    assert result.counts == (1, 0, 0)
    assert read_rgb(tmp_path / "astronaut.png").shape == (SIZE[1], SIZE[0], 3)


def test_a_second_run_skips_everything(colorize: Colorize, photos: Photos, tmp_path: Path) -> None:
    first = colorize(photos.folder, "-o", tmp_path / "out", *exemplar_args(photos))
    again = colorize(photos.folder, "-o", tmp_path / "out", *exemplar_args(photos))
    assert first.counts == (3, 0, 0)  # astronaut, coffee and the reference itself
    assert again.counts == (0, 3, 0)


# --- failures ------------------------------------------------------------------------------------

BROKEN = [
    pytest.param(b"", "the file is empty", id="zero bytes"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(20), "PNG", id="truncated PNG"),
    pytest.param(b"<html><body>hi</body></html>", "HTML is not accepted", id="HTML named .png"),
    pytest.param(
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "unrecognised file content",
        id="random bytes",
    ),
]


@pytest.mark.parametrize(("content", "reason"), BROKEN)
def test_a_broken_file_fails_alone(
    colorize: Colorize,
    photos: Photos,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
    reason: str,
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(content)
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR, logger="service.cli.colorize"):
        result = colorize(
            photos.astronaut, broken, photos.coffee, "-o", out, *exemplar_args(photos)
        )
    assert result.code == 1
    assert result.counts == (2, 0, 1)
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "coffee.png"]
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert str(broken) in record.getMessage() and reason in record.getMessage()


def test_a_missing_input_fails_alone(
    colorize: Colorize, photos: Photos, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "nowhere.png"
    result = colorize(missing, photos.astronaut, "-o", tmp_path, *exemplar_args(photos))
    assert result.code == 1
    assert result.counts == (1, 0, 1)
    assert f"{missing}: no such file or folder" in caplog.text


def test_two_inputs_with_one_output_name_fail_the_second(
    colorize: Colorize, photos: Photos, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    twin = tmp_path / "twin" / "astronaut.jpg"
    twin.parent.mkdir()
    twin.write_bytes(photos.coffee.read_bytes())
    result = colorize(photos.astronaut, twin, "-o", tmp_path / "out", *exemplar_args(photos))
    assert result.code == 1
    assert result.counts == (1, 0, 1)
    assert "already written from" in caplog.text


def test_a_job_over_the_memory_budget_fails_and_the_run_goes_on(
    colorize: Colorize,
    photos: Photos,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A budget of a millionth of the machine is less than the process already holds: every
    # reservation is refused as it would be on a full GPU, and each image fails on its own.
    monkeypatch.setenv("COLORIZE_MEMORY_THRESHOLD", "0.000001")
    result = colorize(photos.astronaut, photos.coffee, "-o", tmp_path, *exemplar_args(photos))
    assert result.code == 1
    assert result.counts == (0, 0, 2)
    assert caplog.text.count("not enough memory on cpu") == 2
    assert list(tmp_path.iterdir()) == []


# --- folders -------------------------------------------------------------------------------------


def test_folders_are_walked_recursively_for_images(
    colorize: Colorize, photos: Photos, tmp_path: Path
) -> None:
    tree = tmp_path / "scans"
    (tree / "1950" / "summer").mkdir(parents=True)
    (tree / "top.png").write_bytes(photos.astronaut.read_bytes())
    (tree / "1950" / "beach.jpg").write_bytes(photos.coffee.read_bytes())
    (tree / "1950" / "summer" / "LAKE.JPEG").write_bytes(photos.coffee.read_bytes())
    (tree / "1950" / "notes.txt").write_text("not an image")
    (tree / "1950" / "summer" / "scan.tiff").write_bytes(b"II*\x00not ours")
    out = tmp_path / "out"
    result = colorize(tree, "-o", out, *exemplar_args(photos))
    assert result.code == 0, result.err
    assert result.counts == (3, 0, 0)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["1950/beach.png", "1950/summer/LAKE.png", "top.png"]


def test_an_output_folder_inside_an_input_folder_is_not_walked(
    colorize: Colorize, photos: Photos, tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(photos.astronaut.read_bytes())
    first = colorize(tmp_path, "-o", tmp_path / "colour", *exemplar_args(photos))
    again = colorize(tmp_path, "-o", tmp_path / "colour", *exemplar_args(photos))
    assert (first.counts, again.counts) == ((1, 0, 0), (0, 1, 0))
    assert not (tmp_path / "colour" / "colour").exists()


# --- nothing attempted: exit 2 -------------------------------------------------------------------


def test_missing_weights_exit_2_with_the_fix(
    colorize: Colorize, photos: Photos, tmp_path: Path
) -> None:
    empty = tmp_path / "no-weights"
    result = colorize(photos.astronaut, "-o", tmp_path / "out", "--model", "eccv16", weights=empty)
    assert result.code == 2
    assert f"colorize-service fetch-weights eccv16 --weights-dir {empty}" in result.err
    assert "Traceback" not in result.err
    assert result.out == ""
    assert not (tmp_path / "out" / "astronaut.png").exists()


USAGE_ERRORS = [
    pytest.param(
        ["--model", "exemplar"], "the exemplar model needs --reference", id="exemplar, no reference"
    ),
    pytest.param(
        ["--model", "eccv16", "--reference", "REFERENCE"],
        "--reference is only used by the exemplar model",
        id="reference for eccv16",
    ),
    pytest.param(
        ["--model", "exemplar", "--reference", "MISSING"],
        "cannot read",
        id="reference missing",
    ),
    pytest.param(
        ["--model", "exemplar", "--reference", "INPUT_FOLDER"],
        "cannot read",
        id="reference is a folder",
    ),
    pytest.param(["--device", "tpu"], "tpu", id="unknown device"),
    pytest.param(["--format", "tiff"], "invalid choice: 'tiff'", id="unknown format"),
]


@pytest.mark.parametrize(("extra", "message"), USAGE_ERRORS)
def test_usage_errors_exit_2_before_any_work(
    colorize: Colorize, photos: Photos, tmp_path: Path, extra: list[str], message: str
) -> None:
    substitutes = {
        "REFERENCE": str(photos.reference),
        "MISSING": str(tmp_path / "missing.png"),
        "INPUT_FOLDER": str(photos.folder),
    }
    args = [substitutes.get(a, a) for a in extra]
    result = colorize(photos.astronaut, "-o", tmp_path / "out", *args)
    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "out").exists()


def test_a_folder_without_images_exits_2(colorize: Colorize, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = colorize(tmp_path / "empty", "-o", tmp_path / "out", "--model", "eccv16")
    assert result.code == 2
    assert "no images or videos found" in result.err


# --- DDColor and --render-size -----------------------------------------------------------------


def test_ddcolor_tiny_colours_at_the_render_size_asked(
    colorize: Colorize, photos: Photos, tmp_path: Path, ddcolor_weights_dir: Path
) -> None:
    result = colorize(
        photos.astronaut,
        "-o",
        tmp_path,
        "--model",
        "ddcolor-tiny",
        "--render-size",
        "64",
        weights=ddcolor_weights_dir,
    )
    assert result.code == 0, result.err
    assert result.counts == (1, 0, 0)
    with Image.open(tmp_path / "astronaut.png") as im:
        assert im.size == SIZE
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert (rgb.max(axis=2) - rgb.min(axis=2)).mean() > 4


@pytest.mark.parametrize(
    ("model", "size", "message"),
    [
        ("ddcolor-tiny", "100", "--render-size: render_size must be a multiple of 32"),
        ("ddcolor-tiny", "4096", "COLORIZE_MAX_RENDER_SIZE"),
        ("exemplar", "64", "does not take a render size"),
    ],
    ids=["not-multiple", "above-max", "engine-without-one"],
)
def test_a_bad_render_size_exits_2_before_any_work(
    colorize: Colorize,
    photos: Photos,
    tmp_path: Path,
    ddcolor_weights_dir: Path,
    model: str,
    size: str,
    message: str,
) -> None:
    extra = ["--reference", str(photos.reference)] if model == "exemplar" else []
    result = colorize(
        photos.astronaut,
        "-o",
        tmp_path / "out",
        "--model",
        model,
        "--render-size",
        size,
        *extra,
        weights=ddcolor_weights_dir,
    )
    assert result.code == 2
    assert message in result.err
    assert not (tmp_path / "out").exists()
