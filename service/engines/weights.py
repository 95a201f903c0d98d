"""The official checkpoint files: where they live, how they are loaded, fetched and verified.

Loading checks key names and shapes strictly but not the hash, so a generated checkpoint
(`save_random_checkpoint`) works for tests and demos; fetching checks size and SHA-256.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import shlex
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn
from tqdm import tqdm

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


@dataclass(frozen=True)
class WeightsFile:
    """One published checkpoint: its model, official file name, size and SHA-256."""

    model: str
    filename: str
    size: int
    sha256: str


OFFICIAL: Mapping[str, WeightsFile] = MappingProxyType(
    {
        "eccv16": WeightsFile(
            "eccv16",
            "colorization_release_v2-9b330a0b.pth",
            128_976_165,
            "9b330a0bae53f4ded77b1e23defbf78beaa09c10ebc4c4999e8e4f4a160b93f9",
        ),
        "siggraph17": WeightsFile(
            "siggraph17",
            "siggraph17-df00044c.pth",
            136_787_426,
            "df00044c0a4d7c3edcecf6f75437ce346a66e7a42612d9b968e1a7e17dbc6f66",
        ),
    }
)
"""The files richzhang/colorization publishes, by model name."""

NETWORKS: Mapping[str, type[nn.Module]] = MappingProxyType(
    {"eccv16": ECCV16Net, "siggraph17": SIGGRAPH17Net}
)


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
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} (file {tuple(state[k].shape)}, network {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{label}: {_listing(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
        )
        if keys
    ]
    if problems:
        raise WeightsMismatch(f"{source} does not fit the network: " + "; ".join(problems))


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return f"{shown} (and {more} more)" if more > 0 else shown


def load_state_dict(
    model: str,
    weights_dir: Path,
    manifest: Mapping[str, WeightsFile] = OFFICIAL,
) -> dict[str, torch.Tensor]:
    """Read `model`'s checkpoint on the CPU and check it fits the network's keys and shapes."""
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
    if model in NETWORKS:
        # Built on the meta device: shapes only, no memory, no time spent on random init.
        with torch.device("meta"):
            expected = NETWORKS[model]().state_dict()
        try:
            check_state_dict(state, expected, f"{model} weights {path}")
        except WeightsMismatch as exc:
            raise WeightsMismatch(f"{exc}; {fix}") from None
    return state


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
    base_url: str,
    dest_dir: Path,
    manifest: Mapping[str, WeightsFile] = OFFICIAL,
    progress: bool = True,
) -> list[Path]:
    """Download each model's checkpoint into `dest_dir`, verified; skip files already correct."""
    entries = [entry_for(m, manifest) for m in models]
    dest_dir = Path(dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create weights directory {dest_dir}: {exc.strerror}") from exc
    return [_fetch_one(e, base_url, dest_dir, progress) for e in entries]


def _fetch_one(entry: WeightsFile, base_url: str, dest_dir: Path, progress: bool) -> Path:
    final = dest_dir / entry.filename
    if _is_verified(final, entry):
        logger.info("%s: %s already present and verified", entry.model, final)
        return final
    if final.exists():
        logger.warning("%s: %s differs from the published file; replacing it", entry.model, final)
    url = f"{base_url.rstrip('/')}/{entry.filename}"
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{entry.filename}.", suffix=".part")
    except OSError as exc:
        raise StorageError(f"cannot write to {dest_dir}: {exc.strerror}") from exc
    tmp = Path(tmp_name)
    # Any failure, Ctrl-C included, removes the temporary file; the final name only ever
    # appears through the atomic rename of a verified download.
    try:
        try:
            # mkstemp makes the file private (0600); a service running as another user must be
            # able to read the checkpoint.
            os.fchmod(fd, 0o644)
            digest = _download(entry, url, fd, tmp, progress)
        finally:
            os.close(fd)
        if digest != entry.sha256:
            raise IntegrityError(
                f"{entry.model}: {url} has SHA-256 {digest}, expected {entry.sha256}; "
                "the file was discarded (is the base URL a faithful mirror?)"
            )
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _storage_error(exc, tmp) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("%s: saved %s", entry.model, final)
    return final


def _is_verified(path: Path, entry: WeightsFile) -> bool:
    try:
        return (
            path.is_file()
            and path.stat().st_size == entry.size
            and file_sha256(path) == entry.sha256
        )
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _download(entry: WeightsFile, url: str, fd: int, tmp: Path, progress: bool) -> str:
    """Stream `url` into `fd`, checking the size as it goes; return the hex SHA-256."""
    try:
        response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DownloadError(f"{entry.model}: {url} answered HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"{entry.model}: cannot reach {url}: {exc.reason}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"{entry.model}: cannot reach {url}: {exc}") from exc
    except ValueError as exc:  # urllib's "unknown url type"
        raise DownloadError(f"{entry.model}: {url} is not a URL we can fetch: {exc}") from exc
    digest = hashlib.sha256()
    received = 0
    with (
        response,
        tqdm(
            total=entry.size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=entry.filename,
            file=sys.stderr,
            disable=not (progress and sys.stderr.isatty()),
            leave=False,
        ) as bar,
    ):
        announced = response.headers.get("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) != entry.size:
            raise IntegrityError(
                f"{entry.model}: {url} is {announced} bytes, expected {entry.size}; not downloaded"
            )
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"{entry.model}: download of {url} broke off after {received} bytes: {exc}"
                ) from exc
            if not chunk:
                break
            received += len(chunk)
            if received > entry.size:
                # Stop early rather than fill the disk with a file that cannot be the right one.
                raise IntegrityError(
                    f"{entry.model}: {url} sent more than the expected {entry.size} bytes"
                )
            digest.update(chunk)
            _write_all(fd, chunk, tmp)
            bar.update(len(chunk))
    if received != entry.size:
        raise IntegrityError(f"{entry.model}: {url} sent {received} bytes, expected {entry.size}")
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _storage_error(exc, tmp) from exc
    return digest.hexdigest()


def _write_all(fd: int, data: bytes, tmp: Path) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as exc:
            raise _storage_error(exc, tmp) from exc
        view = view[written:]


def _storage_error(exc: OSError, tmp: Path) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"no space left on the device of {tmp.parent} (writing {tmp.name})")
    return StorageError(f"cannot write {tmp}: {exc.strerror or exc}")


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
    if model not in NETWORKS:
        raise UnknownModel(f"no network for model {model!r}; known: {', '.join(NETWORKS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = NETWORKS[model]()
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
