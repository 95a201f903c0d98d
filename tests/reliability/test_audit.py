"""Dependencies: pyproject.toml's floors for the packages that parse uploads are at least the
versions that fix their known CVEs; the installed ones too; scripts/audit.sh fails on a found
vulnerability and only warns when no vulnerability service can be reached.

The CVE table is repeated in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
AUDIT = ROOT / "scripts" / "audit.sh"

FIXES = [
    # (package, advisory, first fixed version, what it is); upload and image parsing only.
    ("pillow", "CVE-2023-4863", "10.0.1", "heap overflow in the bundled libwebp (crafted WebP)"),
    ("pillow", "CVE-2023-50447", "10.2.0", "code execution through ImageMath.eval environment"),
    ("pillow", "CVE-2024-28219", "10.3.0", "buffer overflow in _imagingcms"),
    ("pillow", "CVE-2025-48379", "11.3.0", "heap overflow writing DDS images"),
    ("pillow", "CVE-2026-25990", "12.1.1", "out-of-bounds write opening crafted PSD images"),
    ("starlette", "CVE-2024-47874", "0.40.0", "unbounded multipart text fields (memory DoS)"),
    ("starlette", "CVE-2025-54121", "0.47.2", "event loop blocked rolling large uploads to disk"),
    ("starlette", "CVE-2025-62727", "0.49.1", "quadratic Range header parsing in FileResponse"),
    ("starlette", "CVE-2026-48710", "1.0.1", "unvalidated Host poisons request.url.path"),
    ("starlette", "CVE-2026-54283", "1.3.1", "form limits ignored for urlencoded bodies"),
    ("python-multipart", "CVE-2024-24762", "0.0.7", "ReDoS parsing Content-Type options"),
    ("python-multipart", "CVE-2024-53981", "0.0.18", "CPU DoS on bytes around the boundaries"),
    ("python-multipart", "CVE-2026-24486", "0.0.22", "path traversal with UPLOAD_KEEP_FILENAME"),
    ("python-multipart", "CVE-2026-40347", "0.0.26", "CPU DoS on huge preamble or epilogue"),
    ("python-multipart", "CVE-2026-42561", "0.0.27", "no limit on part header count or size"),
    ("python-multipart", "GHSA-vffw-93wf-4j4q", "0.0.30", "RFC 2231 parameter smuggling"),
]


def declared_floor(package: str) -> Version:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.name.lower() == package:
            floors = [
                Version(s.version) for s in requirement.specifier if s.operator in (">=", "==")
            ]
            assert floors, f"{line!r} declares no minimum version"
            return max(floors)
    raise AssertionError(f"pyproject.toml does not declare {package}")


@pytest.mark.parametrize(
    ("package", "fixed"),
    [
        pytest.param(package, fixed, id=f"{package}-{advisory}")
        for package, advisory, fixed, _ in FIXES
    ],
)
def test_pyproject_floors_are_past_the_known_upload_and_image_cves(
    package: str, fixed: str
) -> None:
    assert declared_floor(package) >= Version(fixed)


@pytest.mark.parametrize(
    ("package", "fixed"),
    [pytest.param(p, f, id=f"{p}-{a}") for p, a, f, _ in FIXES],
)
def test_the_installed_versions_carry_every_fix(package: str, fixed: str) -> None:
    assert Version(version(package)) >= Version(fixed)


# --- scripts/audit.sh ---------------------------------------------------------------------------

STUB = """\
import json, os, sys
service = sys.argv[sys.argv.index("--vulnerability-service") + 1]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
answer = json.loads(os.environ["STUB_" + service.upper()])
sys.stdout.write(answer.get("out", ""))
sys.stderr.write(answer.get("err", ""))
sys.exit(answer.get("rc", 0))
"""


def report(*deps: dict) -> str:  # type: ignore[type-arg]
    return json.dumps({"dependencies": list(deps), "fixes": []})


CLEAN = {"out": report({"name": "pillow", "version": "13.0.0", "vulns": []})}
VULNERABLE = {
    "rc": 1,
    "out": report(
        {"name": "pillow", "version": "13.0.0", "vulns": []},
        {
            "name": "starlette",
            "version": "0.27.0",
            "vulns": [
                {
                    "id": "GHSA-f96h-pmfr-66vw",
                    "aliases": ["CVE-2024-47874"],
                    "fix_versions": ["0.40.0"],
                    "description": "multipart DoS",
                }
            ],
        },
    ),
}
ALL_SKIPPED = {
    "out": report(
        {"name": "pillow", "skip_reason": "Dependency not found on PyPI and could not be audited"}
    )
}
OFFLINE = {
    "rc": 1,
    "err": "Traceback (most recent call last):\n  ...\nrequests.exceptions.ConnectionError: "
    "HTTPSConnectionPool(host='api.osv.dev', port=443): Max retries exceeded with url: /v1/query "
    "(Caused by NameResolutionError(\"Failed to resolve 'api.osv.dev'\"))\n",
}
BROKEN = {"rc": 2, "err": "pip-audit: error: unrecognized arguments: --frobnicate\n"}

SCENARIOS = [
    # (id, answer of the pypi service, answer of osv, exit status, a line the output must have)
    ("clean", CLEAN, OFFLINE, 0, "audit: pypi: no known vulnerabilities in 1 packages"),
    (
        "vulnerable",
        VULNERABLE,
        CLEAN,
        1,
        "starlette 0.27.0: GHSA-f96h-pmfr-66vw (CVE-2024-47874); fixed in 0.40.0",
    ),
    (
        "pypi-knows-nothing-osv-vulnerable",
        ALL_SKIPPED,
        VULNERABLE,
        1,
        "audit: osv: 1 known vulnerabilities:",
    ),
    (
        "pypi-offline-osv-clean",
        OFFLINE,
        CLEAN,
        0,
        "audit: osv: no known vulnerabilities in 1 packages",
    ),
    (
        "both-offline",
        OFFLINE,
        OFFLINE,
        0,
        "WARNING: dependency audit skipped: no vulnerability service could be used "
        "(tried: pypi osv)",
    ),
    (
        "pypi-knows-nothing-osv-offline",
        ALL_SKIPPED,
        OFFLINE,
        0,
        "WARNING: dependency audit skipped",
    ),
    ("pip-audit-broken", BROKEN, CLEAN, 2, ""),
]


@pytest.mark.parametrize(
    ("pypi", "osv", "code", "line"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_audit_script_fails_on_vulnerabilities_and_only_warns_when_offline(
    tmp_path: Path,
    pypi: dict,
    osv: dict,
    code: int,
    line: str,  # type: ignore[type-arg]
) -> None:
    stub = tmp_path / "pip-audit"
    stub.write_text(f"#!{sys.executable}\n{STUB}")
    stub.chmod(0o755)
    log = tmp_path / "calls.log"
    env = {
        **os.environ,
        "PIP_AUDIT": str(stub),
        "STUB_LOG": str(log),
        "STUB_PYPI": json.dumps(pypi),
        "STUB_OSV": json.dumps(osv),
        "AUDIT_IGNORE": "PYSEC-0000-1 GHSA-xxxx-yyyy-zzzz",
    }
    done = subprocess.run(
        ["bash", str(AUDIT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert line in output
    if code == 0 and "WARNING" not in line:
        assert "WARNING" not in output
    first_call = log.read_text().splitlines()[0].split()
    for flag in ("--local", "--skip-editable", "--progress-spinner", "--format"):
        assert flag in first_call
    assert "--ignore-vuln" in first_call and "GHSA-xxxx-yyyy-zzzz" in first_call
