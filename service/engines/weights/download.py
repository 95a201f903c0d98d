"""Fetching checkpoints: resumable, one fetcher per file, retried, verified before installed."""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from tqdm import tqdm

from service.engines import filelock
from service.engines.weights.errors import DownloadError, IntegrityError, StorageError
from service.engines.weights.manifest import OFFICIAL, WeightsFile, entry_for

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_S = 30.0
"""Per socket operation (connect, each read), not for the whole download."""
MAX_ATTEMPTS = 4
"""Tries per file when the connection breaks mid-download; each resumes where the last stopped."""
RETRY_BACKOFF_S = 1.0
"""Wait before the second try, doubled before each further one."""


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
