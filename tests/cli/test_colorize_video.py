"""`colorize-service colorize film.mp4 -o out/`: videos the /jobs way (probe, colorize_video with
the frames through the pipeline), a progress bar in frames, `out/film.mp4`; mixed with photos.
The exemplar engine colours them: these tests are about files (tests/video runs the networks on
video)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from tests.cli.test_colorize import Colorize, colorize, exemplar_args  # noqa: F401 - a fixture
from tests.support.images import is_colour
from tests.support.photos import Photos
from tests.support.videos import make_clip, truncated, with_spec

pytestmark = pytest.mark.usefixtures("default_settings")

SPEC = with_spec(frames=12, width=64, height=48, cut_at=8, audio=True)


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("film") / "film.mp4", SPEC)


def decoded(path: Path) -> tuple[list[np.ndarray], list[str], float]:
    with av.open(str(path)) as container:
        audio = [s.codec_context.name for s in container.streams.audio]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        return frames, audio, float(container.duration or 0) / av.time_base


def test_a_video_becomes_an_mp4_in_colour_with_its_frames_and_audio(
    colorize: Colorize,  # noqa: F811 - the fixture imported above
    film: Path,
    photos: Photos,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    # exemplar: one reference for the whole film, and the fastest engine (no network).
    result = colorize(film, "-o", out, *exemplar_args(photos))
    assert result.code == 0, result.err
    assert result.counts == (1, 0, 0)
    assert "1 videos, 12 frames" in result.out
    frames, audio, duration = decoded(out / "film.mp4")
    source_frames, source_audio, source_duration = decoded(film)
    assert len(frames) == len(source_frames) == 12
    assert audio == source_audio == ["aac"]
    assert duration == pytest.approx(source_duration, abs=0.05)
    assert all(is_colour(f) for f in frames)
    assert [p.name for p in out.iterdir()] == ["film.mp4"], "no partial file is left"


def test_photos_and_videos_mix_in_one_run_and_a_folder(
    colorize: Colorize,  # noqa: F811
    film: Path,
    photos: Photos,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "in"
    (folder / "reel").mkdir(parents=True)
    shutil.copy(film, folder / "reel" / "film.mov")  # the name lies: the bytes say MP4
    shutil.copy(photos.astronaut, folder / "astronaut.png")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    result = colorize(folder, "-o", tmp_path / "out", *exemplar_args(photos), "--no-stabilize")
    assert result.code == 0, result.err
    assert result.counts == (2, 0, 0)
    assert (tmp_path / "out" / "astronaut.png").is_file()
    assert len(decoded(tmp_path / "out" / "reel" / "film.mp4")[0]) == 12
    assert "12/12" in result.err, "the progress bar counts frames"


def test_a_broken_video_fails_alone_and_an_existing_result_is_skipped(
    colorize: Colorize,  # noqa: F811
    film: Path,
    photos: Photos,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(truncated(film.read_bytes()))
    out = tmp_path / "out"
    out.mkdir()
    (out / "film.mp4").write_bytes(b"kept")
    result = colorize(broken, film, "-o", out, *exemplar_args(photos))
    assert result.code == 1
    assert result.counts == (0, 1, 1)
    assert "broken.mp4: no complete moov box" in caplog.text
    assert (out / "film.mp4").read_bytes() == b"kept"
    assert not (out / "broken.mp4").exists()
