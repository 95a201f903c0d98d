"""Checkpoints load only when they fit, errors name the fix, and fetching is verified and whole."""

from __future__ import annotations

import argparse
import errno
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from devkit.checkpoints import save_random_checkpoint
from service.cli import fetch as fetch_cli
from service.cli.main import main
from service.engines import filelock, weights
from service.engines.networks import ECCV16Net
from service.engines.weights import (
    DownloadError,
    IntegrityError,
    StorageError,
    UnknownModel,
    WeightsCorrupt,
    WeightsMismatch,
    WeightsNotFound,
    download,
)
from tests.support.weights_server import (
    WeightsServer,
    serve_weights,
    unused_port,
    with_entry,
    write_random_weights,
)

MODELS = ["eccv16", "siggraph17"]


# --- loading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_generated_checkpoint_loads_with_every_key(model: str, weights_dir: Path) -> None:
    state = weights.load_state_dict(model, weights_dir)
    assert len(state) == {"eccv16": 82, "siggraph17": 107}[model]
    assert weights.locate(model, weights_dir).name == weights.OFFICIAL[model].filename


@pytest.mark.parametrize("model", MODELS)
def test_missing_file_names_file_directory_and_fix(model: str, tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound) as caught:
        weights.load_state_dict(model, tmp_path)
    message = str(caught.value)
    assert weights.OFFICIAL[model].filename in message
    assert str(tmp_path) in message
    assert f"colorize-service fetch-weights {model} --weights-dir {tmp_path}" in message


class NotATensor:
    """A pickled object that weights_only loading must refuse to build."""


def truncated_checkpoint(path: Path, source: Path) -> None:
    with open(source, "rb") as f:
        path.write_bytes(f.read(1 << 20))


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (lambda p, _src: p.write_bytes(b""), "unreadable"),
        (lambda p, _src: p.write_bytes(os.urandom(4096)), "unreadable"),
        (truncated_checkpoint, "unreadable"),
        (lambda p, _src: torch.save({"model1.0.weight": NotATensor()}, p), "unreadable"),
        (lambda p, _src: torch.save([torch.zeros(1)], p), "not a state dict of tensors"),
        (lambda p, _src: torch.save({"model1.0.weight": 3}, p), "not a state dict of tensors"),
    ],
    ids=["empty", "random-bytes", "truncated", "pickled-object", "list", "non-tensor-value"],
)
def test_corrupt_file_is_reported_with_the_fix(
    write: Callable[[Path, Path], None], reason: str, tmp_path: Path, weights_dir: Path
) -> None:
    entry = weights.OFFICIAL["eccv16"]
    write(tmp_path / entry.filename, weights_dir / entry.filename)
    with pytest.raises(WeightsCorrupt) as caught:
        weights.load_state_dict("eccv16", tmp_path)
    message = str(caught.value)
    assert reason in message
    assert entry.filename in message and str(tmp_path) in message
    assert "colorize-service fetch-weights eccv16" in message


def test_wrong_keys_are_named(tmp_path: Path) -> None:
    state = ECCV16Net().state_dict()
    del state["model1.0.bias"]
    state["model9.0.weight"] = torch.zeros(1)
    state["model_out.weight"] = torch.zeros(2, 529, 1, 1)
    torch.save(state, tmp_path / weights.OFFICIAL["eccv16"].filename)
    with pytest.raises(WeightsMismatch) as caught:
        weights.load_state_dict("eccv16", tmp_path)
    message = str(caught.value)
    assert "missing keys: model1.0.bias;" in message
    assert "unexpected keys: model9.0.weight;" in message
    assert (
        "mis-shaped keys: model_out.weight (file (2, 529, 1, 1), network (2, 313, 1, 1))" in message
    )


def test_other_models_file_lists_a_bounded_number_of_keys(
    tmp_path: Path, weights_dir: Path
) -> None:
    shutil.copy(
        weights_dir / weights.OFFICIAL["siggraph17"].filename,
        tmp_path / weights.OFFICIAL["eccv16"].filename,
    )
    with pytest.raises(WeightsMismatch) as caught:
        weights.load_state_dict("eccv16", tmp_path)
    message = str(caught.value)
    # 9 eccv16 keys are missing and 34 siggraph17 keys unexpected; 8 of each are named.
    assert "missing keys: model8.0.weight, model8.0.bias," in message
    assert "model8.6.bias (and 1 more); unexpected keys: model8up.0.weight," in message
    assert "(and 26 more); mis-shaped keys: model1.0.weight (file (64, 4, 3, 3)" in message


def test_unknown_model_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(
        UnknownModel,
        match=r"no weights for model 'exemplar'; "
        r"known: eccv16, siggraph17, ddcolor, ddcolor-artistic, ddcolor-tiny$",
    ):
        weights.locate("exemplar", tmp_path)


@pytest.mark.parametrize("model", ["ddcolor", "ddcolor-artistic", "ddcolor-tiny"])
def test_ddcolor_names_are_located_but_not_loaded_here(model: str, tmp_path: Path) -> None:
    entry = weights.OFFICIAL[model]
    assert (
        entry.url()
        == f"https://huggingface.co/piddnad/DDColor-models/resolve/main/{entry.filename}"
    )
    with pytest.raises(WeightsNotFound, match=f"colorize-service fetch-weights {model} "):
        weights.locate(model, tmp_path)
    (tmp_path / entry.filename).write_bytes(b"a DDColor checkpoint")
    assert weights.locate(model, tmp_path) == tmp_path / entry.filename
    # Its own package reads it: this module's loader and generator name what they cover.
    for call in (weights.load_state_dict, save_random_checkpoint):
        with pytest.raises(
            UnknownModel,
            match=f"no network for model '{model}' here; .* eccv16, siggraph17 checkpoints only",
        ):
            call(model, tmp_path)


# --- fetching ------------------------------------------------------------------------------------


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_fetch_downloads_and_verifies_both(weights_server: WeightsServer, tmp_path: Path) -> None:
    dest = tmp_path / "new" / "dir"
    paths = weights.fetch(MODELS, weights_server.base_url, dest, weights_server.manifest, False)
    assert paths == [dest / weights.OFFICIAL[m].filename for m in MODELS]
    assert leftovers(dest) == sorted(p.name for p in paths)
    for model, path in zip(MODELS, paths, strict=True):
        assert weights.file_sha256(path) == weights_server.manifest[model].sha256
        assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by the service's user


def test_fetch_skips_a_file_already_correct(weights_server: WeightsServer, tmp_path: Path) -> None:
    weights.fetch(["eccv16"], weights_server.base_url, tmp_path, weights_server.manifest, False)
    asked = len(weights_server.requested)
    weights.fetch(["eccv16"], weights_server.base_url, tmp_path, weights_server.manifest, False)
    assert len(weights_server.requested) == asked


def test_fetch_replaces_a_wrong_file(weights_server: WeightsServer, tmp_path: Path) -> None:
    entry = weights_server.manifest["eccv16"]
    (tmp_path / entry.filename).write_bytes(b"stale")
    weights.fetch(["eccv16"], weights_server.base_url, tmp_path, weights_server.manifest, False)
    assert weights.file_sha256(tmp_path / entry.filename) == entry.sha256


def refuse_after(first_bytes: int, error: BaseException) -> Callable[[int, bytes], int]:
    """An os.write that accepts `first_bytes` and then fails, as a filling disk does."""
    real_write = os.write
    written = 0

    def write(fd: int, data: bytes) -> int:
        nonlocal written
        if written >= first_bytes:
            raise error
        n = real_write(fd, bytes(data[: first_bytes - written]))
        written += n
        return n

    return write


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"sha256": "0" * 64}, IntegrityError, "has SHA-256 .* expected 0000"),
        ({"size": 1000}, IntegrityError, "is \\d+ bytes, expected 1000; not downloaded"),
        ({"filename": "missing.pth"}, DownloadError, "missing.pth answered HTTP 404"),
    ],
    ids=["wrong-hash", "wrong-size", "not-found"],
)
def test_fetch_failure_leaves_nothing(
    change: dict[str, object],
    error: type[Exception],
    message: str,
    weights_server: WeightsServer,
    tmp_path: Path,
) -> None:
    manifest = with_entry(weights_server.manifest, "eccv16", **change)
    with pytest.raises(error, match=message):
        weights.fetch(["eccv16"], weights_server.base_url, tmp_path, manifest, False)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("http://127.0.0.1:{port}", "cannot reach http://127.0.0.1:\\d+/.*refused"),
        ("no-scheme/w", "no-scheme/w/colorization_release_v2-9b330a0b.pth is not a URL"),
    ],
    ids=["unreachable-port", "not-a-url"],
)
def test_fetch_from_a_bad_base_url_says_so(base_url: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=message):
        weights.fetch(["eccv16"], base_url.format(port=unused_port()), tmp_path, progress=False)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("error", "raised", "message", "kept"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), StorageError, "no space left", False),
        (OSError(errno.EIO, "Input/output error"), StorageError, "Input/output error", False),
        # Ctrl-C keeps what arrived, so the next run resumes instead of starting over.
        (KeyboardInterrupt(), KeyboardInterrupt, None, True),
    ],
    ids=["disk-full", "io-error", "ctrl-c"],
)
def test_fetch_interrupted_mid_write_leaves_no_final_file(
    error: BaseException,
    raised: type[BaseException],
    message: str | None,
    kept: bool,
    weights_server: WeightsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fakes the operating system (the write call), not our code: 3 MB land, then it fails.
    monkeypatch.setattr(os, "write", refuse_after(3 << 20, error))
    with pytest.raises(raised, match=message):
        weights.fetch(["eccv16"], weights_server.base_url, tmp_path, weights_server.manifest, False)
    monkeypatch.undo()
    part = weights.part_path(weights_server.manifest["eccv16"], tmp_path)
    assert leftovers(tmp_path) == ([part.name] if kept else [])
    if kept:
        assert part.stat().st_size == 3 << 20
        weights.fetch(["eccv16"], weights_server.base_url, tmp_path, weights_server.manifest, False)
        assert weights_server.log[-1].range == f"bytes={3 << 20}-"
        assert leftovers(tmp_path) == [weights.OFFICIAL["eccv16"].filename]


def test_progress_bar_stays_off_when_stderr_is_not_a_terminal(
    weights_server: WeightsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights.fetch(["eccv16"], weights_server.base_url, tmp_path, weights_server.manifest, True)
    assert capsys.readouterr().err == ""


# --- the fetch-weights command -------------------------------------------------------------------


def command(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="colorize-service")
    fetch_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["fetch-weights", *argv])


def test_command_fetches_into_the_given_directory(
    weights_server: WeightsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = command(["--weights-dir", str(tmp_path), "--base-url", weights_server.base_url])
    assert args.handler is fetch_cli.fetch_weights_command
    assert fetch_cli.fetch_weights_command(args, weights_server.manifest) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{m}: {tmp_path / weights.OFFICIAL[m].filename}" for m in MODELS]
    assert err == ""


def test_command_defaults_come_from_settings(
    weights_server: WeightsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COLORIZE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("COLORIZE_WEIGHTS_BASE_URL", weights_server.base_url)
    args = command(["siggraph17", "--no-progress"])
    assert fetch_cli.fetch_weights_command(args, weights_server.manifest) == 0
    assert leftovers(tmp_path) == [weights.OFFICIAL["siggraph17"].filename]
    assert capsys.readouterr().out == f"siggraph17: {tmp_path / 'siggraph17-df00044c.pth'}\n"


@pytest.mark.parametrize(
    ("argv", "manifest", "code", "message"),
    [
        (["exemplar"], "served", 2, "no downloadable weights for 'exemplar'; choose from eccv16"),
        (["eccv16", "vgg"], "served", 2, "no downloadable weights for 'vgg'"),
        (["eccv16"], "wrong-hash", 1, "has SHA-256 [0-9a-f]{64}, expected 0000000000"),
        # The server holds generated files under the official names, not the published bytes.
        (["eccv16"], "official", 1, "is \\d+ bytes, expected 128976165; not downloaded"),
        (["--base-url", "http://127.0.0.1:{port}"], "official", 1, "cannot reach http://127"),
        (
            ["--base-url", "{server}/nowhere"],
            "served",
            1,
            "nowhere/colorization_release_v2-9b330a0b.pth answered HTTP 404",
        ),
    ],
    ids=["exemplar-has-none", "unknown-model", "wrong-hash", "wrong-size", "unreachable", "404"],
)
def test_command_failures_exit_nonzero_with_one_line(
    argv: list[str],
    manifest: str,
    code: int,
    message: str,
    weights_server: WeightsServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifests = {
        "official": weights.OFFICIAL,
        "served": weights_server.manifest,
        "wrong-hash": with_entry(weights_server.manifest, "eccv16", sha256="0" * 64),
    }
    argv = [a.format(port=unused_port(), server=weights_server.base_url) for a in argv]
    if "--base-url" not in argv:
        argv += ["--base-url", weights_server.base_url]
    args = command([*argv, "--weights-dir", str(tmp_path)])
    assert fetch_cli.fetch_weights_command(args, manifests[manifest]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("colorize-service fetch-weights: error: ")
    assert re.search(message, err)
    assert leftovers(tmp_path) == []


def test_command_fetches_ddcolor_tiny_from_a_mirror(
    ddcolor_server: WeightsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ddcolor-tiny", "--base-url", ddcolor_server.base_url, "--weights-dir", str(tmp_path)]
    assert fetch_cli.fetch_weights_command(command(argv), ddcolor_server.manifest) == 0
    assert capsys.readouterr().out == f"ddcolor-tiny: {tmp_path / 'ddcolor_paper_tiny.pth'}\n"
    assert ddcolor_server.requested == ["/ddcolor_paper_tiny.pth"]
    # The real command line, with the published manifest: the mirror is asked for the official
    # name, and the generated file is refused for its size before a byte is kept.
    code = main(["fetch-weights", *argv[:-1], str(tmp_path / "official")])
    assert code == 1
    assert "is 4194304 bytes, expected 220393145; not downloaded" in capsys.readouterr().err
    assert ddcolor_server.requested[-1] == "/ddcolor_paper_tiny.pth"
    assert leftovers(tmp_path / "official") == []


@pytest.mark.parametrize(
    ("argv", "fetched"),
    [
        ([], ["eccv16", "siggraph17", "ddcolor-tiny"]),
        (["--all"], ["eccv16", "siggraph17", "ddcolor", "ddcolor-artistic", "ddcolor-tiny"]),
    ],
    ids=["default-set", "all"],
)
def test_command_without_names_fetches_the_default_set(
    argv: list[str], fetched: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    served = tmp_path / "served"
    for i, model in enumerate(weights.OFFICIAL):
        write_random_weights(served, model, 1000 + i, seed=i)
    with serve_weights(served) as server:
        args = command([*argv, "--base-url", server.base_url, "--weights-dir", str(tmp_path / "w")])
        assert fetch_cli.fetch_weights_command(args, server.manifest) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()] == fetched


def test_command_refuses_names_with_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch_cli.fetch_weights_command(command(["eccv16", "--all"])) == 2
    assert "name models or use --all, not both" in capsys.readouterr().err


def test_command_reports_a_full_disk(
    weights_server: WeightsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = command(
        ["eccv16", "--weights-dir", str(tmp_path), "--base-url", weights_server.base_url]
    )
    monkeypatch.setattr(os, "write", refuse_after(1 << 20, OSError(errno.ENOSPC, "No space")))
    code = fetch_cli.fetch_weights_command(args, weights_server.manifest)
    monkeypatch.undo()
    assert code == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(
        f"colorize-service fetch-weights: error: no space left on the device of {tmp_path} "
        f"(writing .{weights.OFFICIAL['eccv16'].filename}."
    )
    assert leftovers(tmp_path) == []


# --- resuming, sources and concurrent fetchers ---------------------------------------------------

FILE_BYTES = 4 << 20
"""A generated download: large enough for several reads, small enough to be instant."""


@pytest.fixture
def ddcolor_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeightsServer]:
    """A fresh server holding random bytes under ddcolor-tiny's official name."""
    served = tmp_path_factory.mktemp("served")
    write_random_weights(served, "ddcolor-tiny", FILE_BYTES)
    with serve_weights(served) as server:
        yield server


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "RETRY_BACKOFF_S", 0.0)


def fetch_tiny(server: WeightsServer, dest: Path, base_url: str | None = None) -> list[Path]:
    return weights.fetch(["ddcolor-tiny"], base_url, dest, server.manifest, progress=False)


@pytest.mark.usefixtures("no_backoff")
def test_a_cut_download_resumes_with_a_range_request(
    ddcolor_server: WeightsServer, tmp_path: Path
) -> None:
    entry = ddcolor_server.manifest["ddcolor-tiny"]
    half = FILE_BYTES // 2
    ddcolor_server.cut_after[entry.filename] = half
    [path] = fetch_tiny(ddcolor_server, tmp_path / "dest")
    assert weights.file_sha256(path) == entry.sha256
    assert [(s.range, s.status, s.sent) for s in ddcolor_server.log] == [
        (None, 200, half),
        (f"bytes={half}-", 206, FILE_BYTES - half),
    ]
    assert ddcolor_server.sent(entry.filename) == FILE_BYTES  # not 1.5x: nothing twice
    assert leftovers(tmp_path / "dest") == [entry.filename]


def test_a_second_run_resumes_what_the_first_left(
    ddcolor_server: WeightsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = ddcolor_server.manifest["ddcolor-tiny"]
    monkeypatch.setattr(download, "MAX_ATTEMPTS", 1)
    ddcolor_server.cut_after[entry.filename] = 1_000_000
    with pytest.raises(DownloadError, match=r"broke off after 1000000 of .* kept in .*resumes"):
        fetch_tiny(ddcolor_server, tmp_path)
    part = weights.part_path(entry, tmp_path)
    assert leftovers(tmp_path) == [part.name] and part.stat().st_size == 1_000_000
    fetch_tiny(ddcolor_server, tmp_path)
    assert ddcolor_server.log[-1].range == "bytes=1000000-"
    assert ddcolor_server.sent(entry.filename) == FILE_BYTES
    assert leftovers(tmp_path) == [entry.filename]


@pytest.mark.usefixtures("no_backoff")
def test_a_server_that_ignores_range_still_gives_a_verified_file(
    ddcolor_server: WeightsServer, tmp_path: Path
) -> None:
    entry = ddcolor_server.manifest["ddcolor-tiny"]
    ddcolor_server.honour_range = False
    ddcolor_server.cut_after[entry.filename] = FILE_BYTES // 2
    [path] = fetch_tiny(ddcolor_server, tmp_path)
    assert weights.file_sha256(path) == entry.sha256
    assert [(s.range, s.status) for s in ddcolor_server.log] == [
        (None, 200),
        (f"bytes={FILE_BYTES // 2}-", 200),  # asked to resume, got everything: started over
    ]
    assert leftovers(tmp_path) == [entry.filename]


@pytest.mark.parametrize(
    ("part_bytes", "requests"),
    [
        (lambda served: served[:-1] + b"?", [(None, 200)]),  # complete length, wrong content
        (lambda served: served + b"extra", [(None, 200)]),  # longer than the file
        (lambda served: b"x" * 1000, [("bytes=1000-", 206)]),  # a wrong prefix
    ],
    ids=["complete-but-wrong", "too-long", "wrong-prefix"],
)
def test_a_bad_part_never_becomes_the_file(
    part_bytes: Callable[[bytes], bytes],
    requests: list[tuple[str | None, int]],
    ddcolor_server: WeightsServer,
    tmp_path: Path,
) -> None:
    entry = ddcolor_server.manifest["ddcolor-tiny"]
    served = (ddcolor_server.directory / entry.filename).read_bytes()
    part = weights.part_path(entry, tmp_path)
    part.write_bytes(part_bytes(served))
    if requests[0][0] is None:
        # Discarded before asking: the download starts over and succeeds.
        fetch_tiny(ddcolor_server, tmp_path)
        assert leftovers(tmp_path) == [entry.filename]
    else:
        # A prefix cannot be checked until the end: the whole is wrong, and nothing is kept.
        with pytest.raises(IntegrityError, match=r"has SHA-256 .* the file was discarded"):
            fetch_tiny(ddcolor_server, tmp_path)
        assert leftovers(tmp_path) == []
    assert [(s.range, s.status) for s in ddcolor_server.log] == requests


def test_a_complete_part_is_installed_without_downloading(
    ddcolor_server: WeightsServer, tmp_path: Path
) -> None:
    entry = ddcolor_server.manifest["ddcolor-tiny"]
    shutil.copy(ddcolor_server.directory / entry.filename, weights.part_path(entry, tmp_path))
    [path] = fetch_tiny(ddcolor_server, tmp_path)
    assert weights.file_sha256(path) == entry.sha256
    assert ddcolor_server.requested == []
    assert leftovers(tmp_path) == [entry.filename]


@pytest.mark.usefixtures("no_backoff")
def test_a_part_longer_than_the_servers_file_is_dropped_on_416(
    ddcolor_server: WeightsServer, tmp_path: Path
) -> None:
    # The manifest expects more bytes than the server holds: the part cannot be resumed.
    entry = ddcolor_server.manifest["ddcolor-tiny"]
    manifest = with_entry(ddcolor_server.manifest, "ddcolor-tiny", size=FILE_BYTES + 10)
    weights.part_path(entry, tmp_path).write_bytes(b"x" * (FILE_BYTES + 5))
    with pytest.raises(IntegrityError, match=f"is {FILE_BYTES} bytes, expected {FILE_BYTES + 10}"):
        weights.fetch(["ddcolor-tiny"], None, tmp_path, manifest, progress=False)
    assert [(s.range, s.status) for s in ddcolor_server.log] == [
        (f"bytes={FILE_BYTES + 5}-", 416),
        (None, 200),
    ]
    assert leftovers(tmp_path) == []


def test_each_file_comes_from_its_own_source_unless_a_mirror_is_named(tmp_path: Path) -> None:
    write_random_weights(tmp_path / "bucket", "eccv16", 3000, seed=1)
    write_random_weights(tmp_path / "hub", "ddcolor-tiny", 5000, seed=2)
    with serve_weights(tmp_path / "bucket") as bucket, serve_weights(tmp_path / "hub") as hub:
        manifest = {**bucket.manifest, **hub.manifest}
        assert manifest["ddcolor-tiny"].url() == f"{hub.base_url}/ddcolor_paper_tiny.pth"
        weights.fetch(["eccv16", "ddcolor-tiny"], None, tmp_path / "a", manifest, progress=False)
        assert bucket.requested == ["/colorization_release_v2-9b330a0b.pth"]
        assert hub.requested == ["/ddcolor_paper_tiny.pth"]
        # A mirror holding both replaces both sources.
        shutil.copy(tmp_path / "hub" / "ddcolor_paper_tiny.pth", tmp_path / "bucket")
        weights.fetch(
            ["eccv16", "ddcolor-tiny"], bucket.base_url, tmp_path / "b", manifest, progress=False
        )
        assert hub.requested == ["/ddcolor_paper_tiny.pth"]
        assert bucket.requested[1:] == [
            "/colorization_release_v2-9b330a0b.pth",
            "/ddcolor_paper_tiny.pth",
        ]
    assert leftovers(tmp_path / "b") == leftovers(tmp_path / "a")


def test_concurrent_fetchers_of_one_file_download_it_once(
    ddcolor_server: WeightsServer, tmp_path: Path
) -> None:
    entry = ddcolor_server.manifest["ddcolor-tiny"]
    lock = tmp_path / f".{entry.filename}.lock"
    results: list[list[Path] | BaseException] = []

    def fetcher() -> None:
        try:
            results.append(fetch_tiny(ddcolor_server, tmp_path))
        except BaseException as exc:
            results.append(exc)

    # Holding the lock as a third fetcher would: both threads queue behind it.
    with filelock.exclusive(lock, None, "testing"):
        threads = [threading.Thread(target=fetcher) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        assert ddcolor_server.requested == []
    for t in threads:
        t.join(timeout=30)
    assert results == [[tmp_path / entry.filename]] * 2
    assert ddcolor_server.requested == [f"/{entry.filename}"]  # the second found it verified
    assert leftovers(tmp_path) == [entry.filename]


def test_a_fetcher_with_a_deadline_gives_up_waiting_for_the_lock(
    ddcolor_server: WeightsServer, tmp_path: Path
) -> None:
    entry = ddcolor_server.manifest["ddcolor-tiny"]
    with filelock.exclusive(tmp_path / f".{entry.filename}.lock", None, "testing"):
        started = time.monotonic()
        with pytest.raises(DownloadError, match="gave up waiting: another process is still"):
            weights.fetch(
                ["ddcolor-tiny"],
                None,
                tmp_path,
                ddcolor_server.manifest,
                progress=False,
                deadline=time.monotonic() + 0.3,
            )
        assert time.monotonic() - started < 2
    assert ddcolor_server.requested == []
    assert leftovers(tmp_path) == []


def test_the_fix_named_for_missing_weights_runs_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `./scripts/serve.sh` does not activate .venv: a bare `colorize-service` was not on PATH.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(weights.WeightsNotFound) as caught:
        weights.locate("eccv16", tmp_path)
    message = str(caught.value)
    command = message.split("`")[1]
    program = command.split(" fetch-weights")[0]
    assert program.startswith("/") or " -m service" in program, command
    # ...and the routes that need no internet are named too.
    assert "COLORIZE_WEIGHTS_BASE_URL" in message and "colorization_release_v2" in message
