# Sourced by serve.sh and test.sh: make (or reuse) .venv with torch pinned first, then the package.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${COLORIZE_VENV:-$root/.venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
# One build at a time: two scripts started together on a fresh clone would both run pip into
# the same .venv (pip fails on the other's temporary files). The second waits, then reuses it.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv.lock"
    flock 9
fi
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.installed-$(cat "$root/pyproject.toml" | cksum | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    # A floating torch requirement pulls several GB of CUDA wheels: pin the CPU build first.
    "$venv/bin/python" -m pip install -q "torch==${COLORIZE_TORCH_VERSION:-2.13.0}"
    "$venv/bin/python" -m pip install -q -e "$root[dev]"
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
if command -v flock >/dev/null 2>&1; then
    flock -u 9
    exec 9>&-
fi
export PATH="$venv/bin:$PATH"
cd "$root"
