#!/usr/bin/env bash
# Audit the packages installed in .venv for known vulnerabilities with pip-audit.
#
#   ./scripts/audit.sh            # exit 0: nothing known; 1: vulnerabilities (listed); 2: pip-audit failed
#
# Where the vulnerability services cannot be reached (CI with only package registries reachable),
# it prints one line starting with "WARNING:" and exits 0: the audit did not happen, the build
# goes on. Only network failures are soft; found vulnerabilities always fail the script.
#
# Environment:
#   COLORIZE_VENV       the virtual environment to audit (default: .venv)
#   PIP_AUDIT           the pip-audit command (default: $COLORIZE_VENV/bin/pip-audit)
#   AUDIT_SERVICES      services to try in order until one can audit (default: "pypi osv")
#   AUDIT_IGNORE        vulnerability ids to accept, space-separated (each needs a reason in
#                       docs/reliability.md)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${COLORIZE_VENV:-$root/.venv}"
pip_audit="${PIP_AUDIT:-$venv/bin/pip-audit}"
python="$venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
services="${AUDIT_SERVICES:-pypi osv}"

if [ ! -x "$pip_audit" ] && ! command -v "$pip_audit" >/dev/null 2>&1; then
    echo "audit: pip-audit not found at $pip_audit (install the dev extras: pip install -e '.[dev]')" >&2
    exit 2
fi

ignore=()
for id in ${AUDIT_IGNORE:-}; do
    ignore+=(--ignore-vuln "$id")
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unreachable=()
for service in $services; do
    # --local: only what is installed in the venv itself; --skip-editable: our own package.
    "$pip_audit" --local --skip-editable --progress-spinner off --format json \
        --vulnerability-service "$service" "${ignore[@]}" \
        >"$work/$service.json" 2>"$work/$service.err"
    rc=$?
    "$python" - "$service" "$rc" "$work/$service.json" "$work/$service.err" <<'PY'
"""Classify one pip-audit run: 0 clean, 1 vulnerable, 3 service unusable, 2 other failure."""

import json
import re
import sys

service, rc, out_path, err_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
err = open(err_path, encoding="utf-8", errors="replace").read()
NETWORK = re.compile(
    r"ConnectionError|ConnectTimeout|ReadTimeout|NameResolutionError|Max retries exceeded|"
    r"Temporary failure in name resolution|Name or service not known|Failed to establish a new "
    r"connection|Connection refused|Network is unreachable|ProxyError|SSLError|timed out|"
    r"HTTPError: 5\d\d|Service Unavailable|Bad Gateway|Gateway Time-out"
)
try:
    report = json.load(open(out_path, encoding="utf-8"))
    deps = report["dependencies"]
except (OSError, ValueError, KeyError, TypeError):
    report = None
if report is None:
    if NETWORK.search(err):
        last = [line for line in err.strip().splitlines() if line.strip()][-1:]
        print(f"audit: {service}: cannot reach the vulnerability service: {' '.join(last)[:300]}")
        sys.exit(3)
    print(f"audit: {service}: pip-audit failed (exit {rc}):\n{err.strip()[-2000:]}", file=sys.stderr)
    sys.exit(2)

vulnerable = [d for d in deps if d.get("vulns")]
audited = [d for d in deps if "skip_reason" not in d]
skipped = [d for d in deps if "skip_reason" in d]
if vulnerable:
    print(f"audit: {service}: {sum(len(d['vulns']) for d in vulnerable)} known vulnerabilities:")
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            aliases = ", ".join(vuln.get("aliases") or [])
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            print(f"  {dep['name']} {dep['version']}: {vuln['id']} ({aliases}); fixed in {fixes}")
    sys.exit(1)
if not audited:
    # Every package "not found": the service answered, but knows none of them (a registry
    # mirror without the JSON API, say). Nothing was audited, so nothing can be claimed.
    print(f"audit: {service}: the service could not look up any of the {len(skipped)} packages")
    sys.exit(3)
note = f"; {len(skipped)} not auditable ({', '.join(d['name'] for d in skipped)})" if skipped else ""
print(f"audit: {service}: no known vulnerabilities in {len(audited)} packages{note}")
sys.exit(0)
PY
    verdict=$?
    case $verdict in
        0 | 1 | 2) exit $verdict ;;
        3) unreachable+=("$service") ;;
    esac
done
echo "WARNING: dependency audit skipped: no vulnerability service could be used (tried: ${unreachable[*]})"
exit 0
