#!/usr/bin/env bash
# The whole test suite: lint, types, tests. Creates .venv on first use.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
# One BLAS thread per process: the suite runs servers beside the runner, and on a two-core
# machine their thread pools otherwise spin against each other (suites ran 3-10x slower).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ruff check service tests bench devkit
ruff format --check service tests bench devkit
mypy
"$root/scripts/audit.sh"
# Two test processes, a module's tests together in one (its module-scoped servers start once):
# most tests wait on servers they started, so two overlap well even on two cores.
# TEST_WORKERS=0 runs everything in this process.
python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
