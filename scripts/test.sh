#!/usr/bin/env bash
# The whole test suite: lint, types, tests. Creates .venv on first use.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
ruff check service tests bench
ruff format --check service tests bench
mypy
"$root/scripts/audit.sh"
python -m pytest "$@"
