"""The CPU capacity is the cgroup limit when one binds, else physical RAM."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from service.memory import CpuBackend, MemoryManager
from service.memory.capacity import cgroup_limit_bytes, host_capacity_bytes

GiB = 1024**3
RAM = psutil.virtual_memory().total


def make_tree(tmp_path: Path, proc_line: str, files: dict[str, str]) -> tuple[Path, Path]:
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(proc_line + "\n")
    root = tmp_path / "cgroup"
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content + "\n")
    return proc, root


CASES = [
    ("v2-root-limit", "0::/", {"memory.max": str(2 * GiB)}, 2 * GiB),
    ("v2-unlimited", "0::/", {"memory.max": "max"}, None),
    ("v2-nested-own-limit", "0::/kubepods/pod1", {"kubepods/pod1/memory.max": str(GiB)}, GiB),
    (
        "v2-parent-limit-binds",
        "0::/kubepods/pod1/ctr",
        {"kubepods/memory.max": str(3 * GiB), "kubepods/pod1/ctr/memory.max": "max"},
        3 * GiB,
    ),
    (
        "v2-tightest-wins",
        "0::/a/b",
        {"a/memory.max": str(GiB), "a/b/memory.max": str(4 * GiB)},
        GiB,
    ),
    (
        "v1-limit",
        "4:memory:/docker/abc",
        {"memory/docker/abc/memory.limit_in_bytes": str(2 * GiB)},
        2 * GiB,
    ),
    (
        "v1-unlimited",
        "4:memory:/",
        {"memory/memory.limit_in_bytes": str(9223372036854771712)},
        None,
    ),
    ("no-memory-controller", "3:cpu,cpuacct:/", {}, None),
]


@pytest.mark.parametrize(
    ("line", "files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_cgroup_limit(
    tmp_path: Path, line: str, files: dict[str, str], expected: int | None
) -> None:
    proc, root = make_tree(tmp_path, line, files)
    assert cgroup_limit_bytes(proc / "cgroup", root) == expected


def test_missing_proc_file_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_limit_bytes(tmp_path / "nope", tmp_path) is None
    assert host_capacity_bytes(tmp_path / "nope", tmp_path) == RAM


def test_limit_above_ram_is_capped_at_ram(tmp_path: Path) -> None:
    proc, root = make_tree(tmp_path, "0::/", {"memory.max": str(RAM * 4)})
    assert host_capacity_bytes(proc / "cgroup", root) == RAM


def test_container_with_2gib_limit_reports_against_2gib(tmp_path: Path) -> None:
    proc, root = make_tree(tmp_path, "0::/", {"memory.max": str(2 * GiB)})
    # The backend reads our real RSS from psutil, but capacity from the given cgroup tree.
    backend = CpuBackend(proc_self=proc, cgroup_root=root)
    manager = MemoryManager(__import__("torch").device("cpu"), 0.8, backend=backend)
    snap = manager.snapshot()
    assert snap.total == 2 * GiB
    assert snap.limit == int(0.8 * 2 * GiB)
    # Clamped to 1: late in the suite the runner itself may hold more than 2 GiB (the session's
    # generated DDColor checkpoints).
    assert snap.usage_ratio == pytest.approx(min(1.0, snap.used / (2 * GiB)))
