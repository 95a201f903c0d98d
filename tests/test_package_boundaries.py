"""What may import what: bench and devkit are used by the tests, never the other way round."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.servers import ROOT


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, absolute names (relative imports are within its package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path",
    sorted(p for package in ("bench", "devkit") for p in (ROOT / package).rglob("*.py")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_bench_and_devkit_never_import_tests(path: Path) -> None:
    source = path.read_text()
    offending = {m for m in imported_modules(path) if m == "tests" or m.startswith("tests.")}
    assert not offending, f"{path.relative_to(ROOT)} imports {sorted(offending)}"
    # A module run as a subprocess (`python -m tests....`) is an import too.
    assert '"-m", "tests.' not in source
