"""Where video uploads and results live on disk: one directory per process, removed when it stops.

Files are named by random tokens, never by anything a client sent. A process that is killed
leaves its directory behind; the next start removes the directories of processes that no longer
exist (their names carry the process id).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "colorize-video-"
_OWNED = re.compile(rf"{re.escape(PREFIX)}(\d+)-[A-Za-z0-9_]+")


class Spool:
    """This process's spool directory."""

    def __init__(self, parent: Path | None = None) -> None:
        parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(parent)
        self.directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r})"

    def path(self, kind: str, suffix: str = "") -> Path:
        """A fresh path in the spool (the file is not created): `kind` names what it holds."""
        return self.directory / f"{kind}-{secrets.token_urlsafe(12)}{suffix}"

    def close(self) -> None:
        """Remove the directory and everything in it."""
        shutil.rmtree(self.directory, ignore_errors=True)


def remove(path: Path | None) -> None:
    """Delete `path` if it exists (a spool file that is no longer needed)."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _remove_orphans(parent: Path) -> None:
    """Remove the spool directories of processes that ended without removing theirs."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _OWNED.fullmatch(entry.name)
        if match is None or not entry.is_dir() or _alive(int(match.group(1))):
            continue
        log.info("removing %s, left by a process that has ended", entry)
        shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True
