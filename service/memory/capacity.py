"""How much memory this process may really use on the host: the cgroup limit, else physical RAM."""

from __future__ import annotations

import logging
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

# cgroup v1 reports "no limit" as a huge page-rounded number (2**63 - 4096 on x86-64).
_V1_UNLIMITED = 1 << 60


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text in ("", "max"):
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= _V1_UNLIMITED else value


def cgroup_limit_bytes(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """The tightest memory limit on this process's cgroup and its ancestors, or None.

    Reads cgroup v2 (`memory.max`) and v1 (`memory.limit_in_bytes`); a limit set on a parent
    cgroup binds too, so the whole path up to the root is walked.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[int] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / "memory", "memory.limit_in_bytes"
        else:
            continue
        current = base / rel.lstrip("/")
        while True:
            value = _read_int(current / name)
            if value is not None:
                limits.append(value)
            if current == base or base not in current.parents:
                break
            current = current.parent
    return min(limits) if limits else None


def host_capacity_bytes(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> int:
    """Memory available to this process: min(cgroup limit, physical RAM)."""
    physical = int(psutil.virtual_memory().total)
    limit = cgroup_limit_bytes(proc_cgroup, root)
    return physical if limit is None else min(limit, physical)
