"""An exclusive lock between processes, held on a file next to what it protects."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

POLL_S = 0.1
"""How often a waiter with a time limit tries the lock again."""


@contextmanager
def exclusive(path: Path, timeout_s: float | None, what: str) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if needed); TimeoutError past `timeout_s`.

    `what` names the protected work in the message logged while waiting. The file is removed
    on release, so no lock files accumulate.
    """
    fd = _acquire(path, timeout_s, what)
    try:
        yield
    finally:
        # Unlinked while still held: a process that opened the old file and waits on it sees,
        # once it gets the lock, that the name now points elsewhere and starts again (_acquire).
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _acquire(path: Path, timeout_s: float | None, what: str) -> int:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    announced = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not announced:
                    logger.warning("waiting for another process %s (it holds %s)", what, path)
                    announced = True
                _wait(fd, deadline, path, what)
            if _still_named(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _wait(fd: int, deadline: float | None, path: Path, what: str) -> None:
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"another process is still {what} (it holds {path})") from None
            time.sleep(min(POLL_S, remaining))


def _still_named(fd: int, path: Path) -> bool:
    """Whether `path` still names the file `fd` locked (the last holder did not remove it)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)
