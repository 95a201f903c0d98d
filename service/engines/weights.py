"""The official checkpoint files: where they live, how they are loaded, fetched and verified.

Loading checks key names and shapes strictly but not the hash, so a generated checkpoint
(`save_random_checkpoint`) works for tests and demos; fetching checks size and SHA-256.
Loading and generating cover the networks in NETWORKS (eccv16, siggraph17) only: the DDColor
checkpoints are fetched and located here but read by their own package.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn
from tqdm import tqdm

from service.engines import filelock
from service.engines.networks import ECCV16Net, SIGGRAPH17Net

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_S = 30.0
"""Per socket operation (connect, each read), not for the whole download."""
MAX_LISTED_KEYS = 8
"""A mismatch message names at most this many keys per kind, then says how many more."""
ECCV16_LOGIT_STD = 4.0
"""Spread of a generated eccv16's bin logits: the softmax then favours a few bins per pixel."""
SIGGRAPH17_TANH_STD = 0.3
"""Spread of a generated siggraph17's pre-tanh output: ab covers the gamut, rarely saturating."""


RICHZHANG_SOURCE = "https://colorizers.s3.us-east-2.amazonaws.com"
"""richzhang/colorization's bucket: the eccv16 and siggraph17 checkpoints."""
DDCOLOR_SOURCE = "https://huggingface.co/piddnad/DDColor-models/resolve/main"
"""DDColor's Hugging Face repository, piddnad/DDColor-models."""


@dataclass(frozen=True)
class WeightsFile:
    """One published checkpoint: its model, official file name, size, SHA-256 and source."""

    model: str
    filename: str
    size: int
    sha256: str
    source: str
    """The official base URL: the file is `<source>/<filename>` unless a mirror is named."""

    def url(self, base_url: str | None = None) -> str:
        """The download URL: under `base_url` (a mirror of every file) if set, else the source."""
        return f"{(base_url or self.source).rstrip('/')}/{self.filename}"


OFFICIAL: Mapping[str, WeightsFile] = MappingProxyType(
    {
        "eccv16": WeightsFile(
            "eccv16",
            "colorization_release_v2-9b330a0b.pth",
            128_976_165,
            "9b330a0bae53f4ded77b1e23defbf78beaa09c10ebc4c4999e8e4f4a160b93f9",
            RICHZHANG_SOURCE,
        ),
        "siggraph17": WeightsFile(
            "siggraph17",
            "siggraph17-df00044c.pth",
            136_787_426,
            "df00044c0a4d7c3edcecf6f75437ce346a66e7a42612d9b968e1a7e17dbc6f66",
            RICHZHANG_SOURCE,
        ),
        "ddcolor": WeightsFile(
            "ddcolor",
            "ddcolor_modelscope.pth",
            911_950_059,
            "17c460d7e55b32a598370621d77173be59e03c24b0823f06821db23a50c263ce",
            DDCOLOR_SOURCE,
        ),
        "ddcolor-artistic": WeightsFile(
            "ddcolor-artistic",
            "ddcolor_artistic.pth",
            911_950_059,
            "a591ee5beedad36de703d8977e92d0c30c1eedc6453fd1b300f3b460842a23a9",
            DDCOLOR_SOURCE,
        ),
        "ddcolor-tiny": WeightsFile(
            "ddcolor-tiny",
            "ddcolor_paper_tiny.pth",
            220_393_145,
            "81dd643904f4664c3718513e3320ae3db0c567f0d3e18398606659adee7bfc17",
            DDCOLOR_SOURCE,
        ),
    }
)
"""Every published checkpoint, by engine name: richzhang/colorization's and DDColor's."""

DEFAULT_FETCH = ("eccv16", "siggraph17", "ddcolor-tiny")
"""What `fetch-weights` installs when no model is named (486 MB); the two large DDColor files
(912 MB each) come only by name or with --all."""

MAX_ATTEMPTS = 4
"""Tries per file when the connection breaks mid-download; each resumes where the last stopped."""
RETRY_BACKOFF_S = 1.0
"""Wait before the second try, doubled before each further one."""

NETWORKS: Mapping[str, type[nn.Module]] = MappingProxyType(
    {"eccv16": ECCV16Net, "siggraph17": SIGGRAPH17Net}
)
"""The networks this module loads and generates checkpoints for (not DDColor's)."""


class WeightsError(Exception):
    """A checkpoint is missing, unreadable, does not fit its network, or could not be fetched."""


class UnknownModel(WeightsError):
    """The name has no entry in the weights manifest."""


class WeightsNotFound(WeightsError):
    """The checkpoint is not in the weights directory."""


class WeightsCorrupt(WeightsError):
    """The file is not a readable state dict of tensors."""


class WeightsMismatch(WeightsError):
    """The state dict's keys or shapes differ from the network's."""


class DownloadError(WeightsError):
    """The URL could not be reached or answered with an HTTP error."""


class IntegrityError(DownloadError):
    """The downloaded bytes have the wrong size or SHA-256."""


class StorageError(WeightsError):
    """Writing the file failed (disk full, read-only directory, ...)."""


def fix_command(model: str, weights_dir: Path) -> str:
    """The shell command that installs `model`'s checkpoint into `weights_dir`."""
    return f"colorize-service fetch-weights {model} --weights-dir {shlex.quote(str(weights_dir))}"


def entry_for(model: str, manifest: Mapping[str, WeightsFile] = OFFICIAL) -> WeightsFile:
    """The manifest entry of `model`; UnknownModel names the known ones."""
    try:
        return manifest[model]
    except KeyError:
        raise UnknownModel(
            f"no weights for model {model!r}; known: {', '.join(manifest)}"
        ) from None


def weights_path(
    model: str, weights_dir: Path, manifest: Mapping[str, WeightsFile] = OFFICIAL
) -> Path:
    """Where `model`'s checkpoint belongs in `weights_dir` (under its official file name)."""
    return Path(weights_dir) / entry_for(model, manifest).filename


def locate(model: str, weights_dir: Path, manifest: Mapping[str, WeightsFile] = OFFICIAL) -> Path:
    """The checkpoint's path; WeightsNotFound names the file, the directory and the fix."""
    path = weights_path(model, weights_dir, manifest)
    if not path.is_file():
        raise WeightsNotFound(
            f"{model} weights not found: no file {path.name!r} in {path.parent}; "
            f"run `{fix_command(model, path.parent)}`"
        )
    return path


def check_state_dict(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise WeightsMismatch listing missing, unexpected and mis-shaped keys of `state`."""
    problems = layout_problems(state, expected)
    if problems:
        raise WeightsMismatch(f"{source} does not fit the network: " + "; ".join(problems))


def layout_problems(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    may_lack: Collection[str] = (),
    may_add: Collection[str] = (),
) -> list[str]:
    """Missing, unexpected and mis-shaped keys of `state`, each kind listed briefly.

    `may_lack` keys may be absent and `may_add` keys may be extra (a published file's leftovers).
    """
    missing = [k for k in expected if k not in state and k not in may_lack]
    unexpected = [k for k in state if k not in expected and k not in may_add]
    misshaped = [
        f"{k} (file {tuple(state[k].shape)}, network {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    return [
        f"{label}: {_listing(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
        )
        if keys
    ]


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return f"{shown} (and {more} more)" if more > 0 else shown


def load_state_dict(
    model: str,
    weights_dir: Path,
    manifest: Mapping[str, WeightsFile] = OFFICIAL,
) -> dict[str, torch.Tensor]:
    """Read `model`'s checkpoint on the CPU and check it fits the network's keys and shapes.

    eccv16 and siggraph17 only (NETWORKS): a DDColor checkpoint has another layout and is read
    by its own engine package.
    """
    network = _network(model)
    path = locate(model, weights_dir, manifest)
    fix = f"run `{fix_command(model, path.parent)}` to replace it"
    try:
        # weights_only: a checkpoint is data; never let it run code through pickle.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsCorrupt(
            f"{model} weights {path.name!r} in {path.parent} are unreadable "
            f"({type(exc).__name__}: {_first_line(exc)}); {fix}"
        ) from exc
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise WeightsCorrupt(
            f"{model} weights {path.name!r} in {path.parent} are not a state dict of tensors; {fix}"
        )
    state = dict(loaded)
    # Built on the meta device: shapes only, no memory, no time spent on random init.
    with torch.device("meta"):
        expected = network().state_dict()
    try:
        check_state_dict(state, expected, f"{model} weights {path}")
    except WeightsMismatch as exc:
        raise WeightsMismatch(f"{exc}; {fix}") from None
    return state


def _network(model: str) -> type[nn.Module]:
    try:
        return NETWORKS[model]
    except KeyError:
        raise UnknownModel(
            f"no network for model {model!r} here; this module loads and generates "
            f"{', '.join(NETWORKS)} checkpoints only"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    models: Iterable[str],
    base_url: str | None,
    dest_dir: Path,
    manifest: Mapping[str, WeightsFile] = OFFICIAL,
    progress: bool = True,
    *,
    deadline: float | None = None,
) -> list[Path]:
    """Download each model's checkpoint into `dest_dir`, verified; skip files already correct.

    `base_url`, a mirror holding every file, replaces each file's own source when set. A
    download that breaks off resumes from its `.part` file, in this call or the next one.
    `deadline` (a `time.monotonic()` value) bounds the whole call, waiting included.
    """
    entries = [entry_for(m, manifest) for m in models]
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create weights directory {dest_dir}: {exc.strerror}") from exc
    return [_fetch_one(e, e.url(base_url), dest_dir, progress, deadline) for e in entries]


def part_path(entry: WeightsFile, dest_dir: Path) -> Path:
    """Where the download of `entry` accumulates until verified: a stable name, to resume from."""
    return Path(dest_dir) / f".{entry.filename}.part"


class _BrokenOff(DownloadError):
    """The transfer stopped early; what arrived is kept and another try resumes from it."""


def _fetch_one(
    entry: WeightsFile, url: str, dest_dir: Path, progress: bool, deadline: float | None
) -> Path:
    final = dest_dir / entry.filename
    lock = dest_dir / f".{entry.filename}.lock"
    # One fetcher per file: two appending to the same part would interleave their bytes.
    try:
        with filelock.exclusive(lock, _remaining(deadline), f"fetching {entry.filename}"):
            return _fetch_locked(entry, url, final, progress, deadline)
    except TimeoutError as exc:
        raise DownloadError(f"{entry.model}: gave up waiting: {exc}") from None
    except OSError as exc:
        raise _storage_error(exc, lock) from exc


def _fetch_locked(
    entry: WeightsFile, url: str, final: Path, progress: bool, deadline: float | None
) -> Path:
    # Checked under the lock: a fetcher we waited for may just have installed the file.
    if _is_verified(final, entry):
        logger.info("%s: %s already present and verified", entry.model, final)
        return final
    if final.exists():
        logger.warning("%s: %s differs from the published file; replacing it", entry.model, final)
    part = part_path(entry, final.parent)
    try:
        _download(entry, url, part, progress, deadline)
        # The final name only ever appears through the atomic rename of a verified part.
        os.replace(part, final)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise _storage_error(exc, part) from exc
    except (IntegrityError, StorageError):
        # Wrong bytes cannot be resumed from, and a full disk needs its space back.
        part.unlink(missing_ok=True)
        raise
    except BaseException:
        # A broken connection or Ctrl-C keeps what arrived: the next run resumes from it.
        _drop_if_empty(part)
        raise
    logger.info("%s: saved %s", entry.model, final)
    return final


def _drop_if_empty(part: Path) -> None:
    try:
        if part.stat().st_size == 0:
            part.unlink()
    except OSError:
        pass


def _is_verified(path: Path, entry: WeightsFile) -> bool:
    try:
        return (
            path.is_file()
            and path.stat().st_size == entry.size
            and file_sha256(path) == entry.sha256
        )
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _download(
    entry: WeightsFile, url: str, part: Path, progress: bool, deadline: float | None
) -> None:
    """Bring `part` to the whole, verified file, retrying with backoff when the transfer breaks."""
    attempt = 1
    while True:
        try:
            _attempt(entry, url, part, progress, deadline)
            return
        except _BrokenOff as exc:
            kept = part.stat().st_size if part.exists() else 0
            wait = RETRY_BACKOFF_S * 2 ** (attempt - 1)
            left = _remaining(deadline)
            if attempt >= MAX_ATTEMPTS or (left is not None and left <= wait):
                raise DownloadError(
                    f"{exc}; gave up after {attempt} tries; the {kept} bytes received are kept "
                    f"in {part} and the next fetch resumes from them"
                ) from None
            logger.warning("%s; trying again in %.0f s from byte %d", exc, wait, kept)
            time.sleep(wait)
            attempt += 1


def _attempt(
    entry: WeightsFile, url: str, part: Path, progress: bool, deadline: float | None
) -> None:
    """One request: resume `part` from its size (or start over) and verify the whole at the end."""
    offset, digest = _resume_point(entry, part)
    if offset == entry.size:
        logger.info("%s: %s was complete and verified; installing it", entry.model, part)
        return
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = _open(entry, url, headers, deadline)
    except _RangeRefused:
        part.unlink(missing_ok=True)
        raise
    with response:
        if offset and response.status == 206:
            _check_content_range(entry, url, response, offset, part)
        elif offset:
            logger.info("%s: %s ignored the range request; starting over", entry.model, url)
            offset, digest = 0, hashlib.sha256()
        announced = response.headers.get("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) != entry.size - offset:
            raise IntegrityError(
                f"{entry.model}: {url} is {int(announced) + offset} bytes, expected {entry.size}; "
                "not downloaded"
            )
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            # The umask may have narrowed the mode; a service running as another user must be
            # able to read the checkpoint.
            os.fchmod(fd, 0o644)
            if offset == 0:
                os.ftruncate(fd, 0)
            _stream(entry, url, response, fd, part, offset, digest, progress, deadline)
        finally:
            os.close(fd)
    if digest.hexdigest() != entry.sha256:
        raise IntegrityError(
            f"{entry.model}: {url} has SHA-256 {digest.hexdigest()}, expected {entry.sha256}; "
            "the file was discarded (is the base URL a faithful mirror?)"
        )


def _resume_point(entry: WeightsFile, part: Path) -> tuple[int, hashlib._Hash]:
    """The part's size and the hash of its bytes; a part that cannot be a prefix is discarded."""
    digest = hashlib.sha256()
    try:
        size = part.stat().st_size
    except FileNotFoundError:
        return 0, digest
    if size > entry.size:
        logger.warning("%s: %s is larger than the file; discarding it", entry.model, part)
        part.unlink()
        return 0, digest
    with open(part, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    if size == entry.size and digest.hexdigest() != entry.sha256:
        logger.warning("%s: %s is complete but wrong; discarding it", entry.model, part)
        part.unlink()
        return 0, hashlib.sha256()
    if size:
        logger.info("%s: resuming %s from byte %d", entry.model, part, size)
    return size, digest


def _open(
    entry: WeightsFile, url: str, headers: dict[str, str], deadline: float | None
) -> http.client.HTTPResponse:
    left = _remaining(deadline)
    timeout = DOWNLOAD_TIMEOUT_S if left is None else max(0.1, min(DOWNLOAD_TIMEOUT_S, left))
    try:
        request = urllib.request.Request(url, headers=headers)
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and "Range" in headers:
            # Only asked with a part shorter than the file: the server's copy is shorter
            # still, so the part is no prefix of it. Drop it; the next try asks for everything.
            raise _RangeRefused(
                f"{entry.model}: {url} refused the range {headers['Range']}"
            ) from exc
        raise DownloadError(f"{entry.model}: {url} answered HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"{entry.model}: cannot reach {url}: {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{entry.model}: cannot reach {url}: {exc}") from exc
    except ValueError as exc:  # urllib's "unknown url type"
        raise DownloadError(f"{entry.model}: {url} is not a URL we can fetch: {exc}") from exc
    return response


class _RangeRefused(_BrokenOff):
    """HTTP 416: the server holds fewer bytes than the part; drop it and start over."""


def _check_content_range(
    entry: WeightsFile, url: str, response: http.client.HTTPResponse, offset: int, part: Path
) -> None:
    """A 206 must continue exactly at `offset` up to the file's end, or the part is dropped."""
    answered = response.headers.get("Content-Range", "")
    if answered.strip() not in (
        f"bytes {offset}-{entry.size - 1}/{entry.size}",
        f"bytes {offset}-{entry.size - 1}/*",
    ):
        part.unlink(missing_ok=True)
        raise _BrokenOff(
            f"{entry.model}: {url} answered the range bytes={offset}- with {answered!r} "
            f"(expected bytes {offset}-{entry.size - 1}/{entry.size}); starting over"
        )


def _stream(
    entry: WeightsFile,
    url: str,
    response: http.client.HTTPResponse,
    fd: int,
    part: Path,
    offset: int,
    digest: hashlib._Hash,
    progress: bool,
    deadline: float | None,
) -> None:
    """Append the body to `fd` and `digest` from `offset`, checking the size as it goes."""
    received = offset
    with tqdm(
        total=entry.size,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=entry.filename,
        file=sys.stderr,
        disable=not (progress and sys.stderr.isatty()),
        leave=False,
    ) as bar:
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise DownloadError(
                    f"{entry.model}: out of time after {received} of {entry.size} bytes of "
                    f"{url}; they are kept in {part} and the next fetch resumes from them"
                )
            try:
                chunk = response.read(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                raise _BrokenOff(
                    f"{entry.model}: download of {url} broke off after {received} bytes: {exc}"
                ) from exc
            if not chunk:
                break
            if received + len(chunk) > entry.size:
                # Stop early rather than fill the disk with a file that cannot be the right one.
                raise IntegrityError(
                    f"{entry.model}: {url} sent more than the expected {entry.size} bytes"
                )
            _write_all(fd, chunk, part)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if received < entry.size:
        # http.client returns an empty read when the connection closes before Content-Length.
        raise _BrokenOff(
            f"{entry.model}: download of {url} broke off after {received} of {entry.size} bytes"
        )
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _storage_error(exc, part) from exc


def _write_all(fd: int, data: bytes, path: Path) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as exc:
            raise _storage_error(exc, path) from exc
        view = view[written:]


def _storage_error(exc: OSError, path: Path) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"no space left on the device of {path.parent} (writing {path.name})")
    return StorageError(f"cannot write {path}: {exc.strerror or exc}")


def save_random_checkpoint(model: str, directory: Path, seed: int = 0) -> Path:
    """Write a generated checkpoint for `model` under its official name (not the official hash)."""
    network = make_random_network(model, seed)
    path = weights_path(model, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed, so an interrupted run never leaves half a file under the name.
    partial = path.with_name(f".{path.name}.generating")
    try:
        torch.save(network.state_dict(), partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def make_random_network(model: str, seed: int = 0) -> nn.Module:
    """A `model` network with seeded random weights, calibrated to give varied colours."""
    # Calibrated on synthetic images (BatchNorm statistics, output scale): a plain random init
    # gives an almost uniform grey, which would leave tests that compare pipelines blind.
    network_class = _network(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = network_class()
        lightness = _synthetic_lightness(batch=2, size=128)
        _calibrate(network, lightness)
    return network.eval()


def _synthetic_lightness(batch: int, size: int) -> torch.Tensor:
    """Smooth random L images (N,1,size,size) in [0, 100]: blobs at several scales."""
    total = torch.zeros(batch, 1, size, size)
    for cells in (4, 16, size // 4):
        noise = torch.rand(batch, 1, cells, cells)
        total += nn.functional.interpolate(noise, size=(size, size), mode="bicubic")
    total -= total.amin(dim=(2, 3), keepdim=True)
    return 100.0 * total / total.amax(dim=(2, 3), keepdim=True)


@torch.no_grad()
def _calibrate(network: nn.Module, lightness: torch.Tensor) -> None:
    """Set BatchNorm statistics from one batch, then scale the last layer for lively colours."""
    norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    momentum = [m.momentum for m in norms]
    for norm in norms:
        # momentum=None: running stats become this batch's exact mean and variance.
        norm.momentum = None
        norm.reset_running_stats()
    network.train()
    _forward_any(network, lightness)
    network.eval()
    for norm, value in zip(norms, momentum, strict=True):
        norm.momentum = value
    if isinstance(network, ECCV16Net):
        # Bin centres spread over the ab plane (the official ones are the in-gamut bins), and
        # logits sharp enough that the softmax picks distinct bins in different regions.
        network.model_out.weight.uniform_(-0.7, 0.7)
        _scale_output(network, network.model8[-1], lightness, target_std=ECCV16_LOGIT_STD)
    elif isinstance(network, SIGGRAPH17Net):
        # tanh input spread so ab spans much of the gamut without saturating.
        _scale_output(network, network.model_out[0], lightness, target_std=SIGGRAPH17_TANH_STD)


def _scale_output(
    network: nn.Module, layer: nn.Module, lightness: torch.Tensor, target_std: float
) -> None:
    """Rescale `layer`'s weight and bias so its output's standard deviation is `target_std`."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        _forward_any(network, lightness)
    finally:
        handle.remove()
    out = seen[0]
    mean = out.mean(dim=(0, 2, 3))
    factor = target_std / max(float((out - mean.view(1, -1, 1, 1)).std()), 1e-6)
    # Centre each output channel too, so no bin or colour dominates everywhere.
    if not isinstance(layer, nn.Conv2d) or layer.bias is None:
        raise TypeError(f"expected a Conv2d with a bias, got {layer!r}")
    layer.weight.mul_(factor)
    layer.bias.sub_(mean).mul_(factor)


def _forward_any(network: nn.Module, lightness: torch.Tensor) -> torch.Tensor:
    if isinstance(network, SIGGRAPH17Net):
        n, _, h, w = lightness.shape
        out: torch.Tensor = network(lightness, torch.zeros(n, 2, h, w), torch.zeros(n, 1, h, w))
        return out
    out = network(lightness)
    return out
